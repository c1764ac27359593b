"""The documentation cannot go stale: every ``robustcars`` command in a bash block of README.md and docs/ parses
with today's options, the README's Python example runs (on a tiny dataset made here), and the README keeps
its promises of form (≤ 200 lines, the two set-up commands first, no development history)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from robustcars.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "report" not in p.parts)]
_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(path: Path, lang: str) -> list[str]:
    return [body for kind, body in _BLOCK.findall(path.read_text()) if kind == lang]


def robustcars_commands(path: Path) -> list[list[str]]:
    """Each ``robustcars ...`` invocation of the file's bash blocks, continuation lines joined, comments cut."""
    found = []
    for body in blocks(path, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part)
                if "robustcars" in words:
                    args = words[words.index("robustcars") + 1:]
                    found.append(args[1:] if args[:1] == ["--"] else args)
    return found


CASES = [(p, args) for p in DOCS for args in robustcars_commands(p)]


def test_the_docs_have_commands_to_check():
    assert len(CASES) > 40
    assert {args[0] for _, args in CASES if args} >= {"train", "attack", "report", "corrupt", "predict", "serve"}


@pytest.mark.parametrize(("path", "args"), CASES, ids=[f"{p.name}:{' '.join(a)[:50]}" for p, a in CASES])
def test_every_documented_command_parses_with_todays_options(path, args):
    if args in ([], ["--version"]):
        return
    group = typer.main.get_command(app)
    name, rest = args[0], args[1:]
    assert name in group.commands, f"{path.name}: robustcars {name} is not a command"
    command = group.commands[name]
    rest = [w for w in rest if w != "..."]  # "train ... --adversarial pgd": the rest as in the block above
    try:
        command.make_context(name, rest)
    except Exception as exc:  # typer's click: UsageError / BadParameter name the option
        if type(exc).__name__ == "Exit":  # --help
            return
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{path.relative_to(ROOT)}: robustcars {' '.join(args)}\n  {message}")


PYTHON = [(p, i, code) for p in DOCS for i, code in enumerate(blocks(p, "python"))]


@pytest.fixture(scope="module")
def tiny_cars(tmp_path_factory):
    """3 classes x 2 images per split, 40 x 48 px JPEGs of seeded noise."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("docs") / "cars"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in range(3):
            folder = root / split / f"Make{c} Model {c}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype="uint8")).save(folder / f"{i}.jpg")
    return root


def test_the_docs_have_python_examples():
    assert {p.name for p, _, _ in PYTHON} >= {"README.md", "api.md", "evaluate.md"}


@pytest.mark.parametrize(("path", "i", "code"), PYTHON, ids=[f"{p.name}:{i}" for p, i, _ in PYTHON])
def test_every_python_example_runs_on_a_tiny_dataset(path, i, code, tiny_cars, tmp_path, monkeypatch):
    """The example as written, on 3 classes at 32 px: the data path, class count and size are the only edits."""
    import torch
    import torchvision

    code = code.replace('"../shared/data/stanford-cars-160"', repr(str(tiny_cars)))
    code = code.replace("num_classes=196", "num_classes=3")
    code = re.sub(r"img_size=\d+", "img_size=32", code)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "my_resnet18.pt")
    namespace: dict = {}
    exec(compile(code, f"{path.name} block {i}", "exec"), namespace)  # noqa: S102 (the docs' own example)
    result = namespace["result"]
    assert result.clean.images == 6 and result.eps == [0.001, 0.002]
    assert 0 <= result.robust_accuracy(0.002) <= result.robust_accuracy(0.001) <= result.clean_accuracy
    assert (tmp_path / "evals" / "resnet18-pgd" / "records.jsonl").read_text().count("\n") == 6


def test_readme_is_short_and_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first = blocks(ROOT / "README.md", "bash")[0]
    assert [line.split()[:2] for line in first.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_no_development_history_in_user_documents():
    pattern = re.compile(r"\bissue [0-9]+|\bsession\b|\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b|\bcommit [0-9a-f]{7}")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}" for p in DOCS
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")
SHOWCASE = ROOT / "docs" / "report"


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_the_showcase_report_opens_in_chromium_with_every_figure_loaded():
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
        page.goto((SHOWCASE / "index.html").as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        browser.close()
    assert len(images) >= 10
    assert [src for src, width in images if not width] == [], "figures that did not load"
    assert not problems, problems


def test_the_showcase_holds_both_models_the_worst_case_and_autoattack():
    import json

    report = json.loads((SHOWCASE / "report.json").read_text())
    assert report["reproducibility"]
    models = report["models"]
    assert len(models) >= 2, "the standard and the defended model"
    attacks = {a["attack"] for m in models for a in m["attacks"]}
    assert {"fgsm", "pgd", "autoattack"} <= attacks
    assert any(su["worst_case"] for m in models for su in m["suites"]), "a suite's worst case"
    assert all("confusion" in m["figures"] for m in models)
    assert any("attention_shift" in a for m in models for a in m["attacks"]), "Grad-CAM attention shift"


def test_the_readme_quick_start_runs_end_to_end_on_a_tiny_dataset(tiny_cars, tmp_path):
    """The three quick-start commands as written, with the data, size and epochs made tiny."""
    import os
    import subprocess
    import sys

    quick = next(b for b in blocks(ROOT / "README.md", "bash") if "robustcars train" in b)
    env = {**os.environ, "ROBUSTCARS_DATA": str(tiny_cars), "CI": "true"}
    for line in quick.replace("\\\n", " ").splitlines():
        words = shlex.split(line.split(" #", 1)[0])
        if words[:1] != ["robustcars"]:
            continue
        words = [{"160": "32", "10": "1"}.get(w, w) for w in words]  # --img-size 160, --epochs 10
        r = subprocess.run([sys.executable, "-m", "robustcars", *words[1:], *(["--workers", "0"] if words[1] in
                            ("train", "attack") else [])], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{' '.join(words)}\n{r.stderr[-2000:]}"
    assert (tmp_path / "runs" / "lite0" / "best.pt").is_file()
    assert (tmp_path / "runs" / "lite0" / "attack-fgsm" / "records.jsonl").read_text().count("\n") == 6
    assert (tmp_path / "reports" / "lite0" / "index.html").is_file()


def test_every_link_of_the_readme_resolves():
    targets = re.findall(r"\]\(([^)#\s]+)", (ROOT / "README.md").read_text())
    assert len(targets) > 10
    assert [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()] == []
