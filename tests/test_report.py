"""A report from a tiny real run made in the test: schema, figures, and the page in headless Chromium."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustcars.cli.app import app

from .conftest import make_folder_dataset

PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA = Path(__file__).resolve().parents[1] / "robustcars" / "reporting" / "schemas" / "report.schema.json"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    data = make_folder_dataset(root / "cars")
    runner = CliRunner()
    runs = []
    for arch in ("resnet18", "resnet34"):
        run = root / arch
        r = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), "--arch", arch, "--weights", "none",
                                "--epochs", "1", "--img-size", "32", "--batch-size", "8", "--workers", "0"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["attack", "--run", str(run), "--eps", "0.01", "--eps", "0.1", "--workers", "0",
                                "--examples", "1"])
        assert r.exit_code == 0, r.output
        runs.append(run)
    r = runner.invoke(app, ["attack", "--run", str(runs[0]), "--attack", "pgd", "--steps", "2", "--eps", "0.01",
                            "--eps", "0.1", "--workers", "0", "--examples", "1"])
    assert r.exit_code == 0, r.output
    out = root / "report"
    r = runner.invoke(app, ["report", *map(str, runs), "--out", str(out), "--title", "tiny"])
    assert r.exit_code == 0, r.output
    assert "report written" in r.output and "index.html" in r.output
    return out


def test_report_json_matches_its_schema(report_dir):
    jsonschema = pytest.importorskip("jsonschema")
    report = json.loads((report_dir / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert [len(m["attacks"]) for m in report["models"]] == [2, 1]
    assert {a["label"] for a in report["models"][0]["attacks"]} == {"fgsm", "pgd"}
    assert len(report["comparison"]) == 2 and report["comparison_figure"]
    m = report["models"][0]
    assert m["dataset"]["available"] and m["dataset"]["splits"]["test"]["images"] == 9
    assert len(m["checkpoint_sha256"]) == 64 and m["commands"][0].startswith("robustcars train")


def test_figures_exist_and_are_pngs(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    paths = [report["comparison_figure"]]
    for m in report["models"]:
        paths += list(m["figures"].values())
        for a in m["attacks"]:
            paths += [a["figures"]["entropy_hist"], a["figures"]["rank_hist"], *a["figures"]["panels"]]
    assert len(paths) >= 12
    for p in paths:
        data = (report_dir / p).read_bytes()
        assert data[:8] == PNG and len(data) > 2000, p
    html = (report_dir / "index.html").read_text()
    md = (report_dir / "report.md").read_text()
    for p in paths:
        assert p in html and p in md
    assert "http://" not in html and "https://" not in html  # offline: no CDN


@pytest.mark.parametrize("panels, kept", [("extremes", {"_extremes_"}), ("none", set())])
def test_panels_option_limits_the_copied_panels(report_dir, tmp_path, panels, kept):
    full = json.loads((report_dir / "report.json").read_text())
    runs = [m["checkpoint"].rsplit("/", 1)[0] for m in full["models"]]
    out = tmp_path / panels
    r = CliRunner().invoke(app, ["report", *runs, "--out", str(out), "--panels", panels])
    assert r.exit_code == 0, r.output
    got = [p for m in json.loads((out / "report.json").read_text())["models"] for a in m["attacks"]
           for p in a["figures"]["panels"]]
    assert all(any(k in p for k in kept) for p in got) and bool(got) == bool(kept)
    assert sorted(p.name for p in (out / "figures").glob("*panel_*")) == sorted(Path(p).name for p in got)
    r = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "bad"), "--panels", "some"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_same_attack_in_a_run_and_a_suite_gets_distinct_labels(report_dir, tmp_path):
    run = json.loads((report_dir / "report.json").read_text())["models"][0]["checkpoint"].rsplit("/", 1)[0]
    suite = tmp_path / "s.toml"
    suite.write_text('name = "mini"\n[[attack]]\nname = "fgsm"\neps = [0.02]\n')
    r = CliRunner().invoke(app, ["attack", "--run", run, "--suite", str(suite), "--out", str(tmp_path / "suite-mini"),
                                 "--workers", "0", "--examples", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", f"{run}/attack-fgsm", str(tmp_path / "suite-mini"), "--out", str(out),
                                 "--panels", "none"])
    assert r.exit_code == 0, r.output
    (m,) = json.loads((out / "report.json").read_text())["models"]
    assert [a["label"] for a in m["attacks"]] == ["fgsm", "suite-mini-fgsm"]
    assert m["attacks"][0]["figures"]["rank_hist"] != m["attacks"][1]["figures"]["rank_hist"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_page_loads_in_headless_chromium(report_dir, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = (report_dir / "index.html").resolve().as_uri()
    shot = tmp_path / "page.png"
    r = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000, r.stderr[-2000:]
    console_errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("Error" in ln or "error" in ln)]
    assert not console_errors, console_errors
    # every image the page references loads: the DOM after load has no broken image
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", "--virtual-time-budget=5000",
                          "--run-all-compositor-stages-before-draw", url], capture_output=True, text=True, timeout=120)
    assert "<img" in dom.stdout
    srcs = [s.split("'")[0] for s in dom.stdout.split("src=\"")[1:]]
    srcs += [s.split("'")[0] for s in dom.stdout.split("src='")[1:]]
    for src in srcs:
        src = src.split('"')[0]
        assert (report_dir / src).is_file(), src
    shutil.copy(shot, report_dir / "screenshot.png")
