"""Each defect of the "nothing lost, nothing wrong" issue as a test on tiny data made here."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustcars.cli.app import app
from robustcars.console import PlainProgress
from robustcars.evaluation.checks import suite_checks
from robustcars.reporting.aggregate import extreme_candidates, extreme_images

from .conftest import cli_process, kill_9_after, make_folder_dataset, train_tiny_run

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("rel"), epochs=2)


# --- wrong numbers, silently ---------------------------------------------------------------------------

def _meta(attack, acc, *, target=None, images=9, max_images=None, norm="linf"):
    return {"config": {"attack": attack, "split": "test", "max_images": max_images, "seed": 0},
            "threat_model": {"norm": norm, "params": {} if target is None else {"target": target}},
            "data": {"images": images},
            "rows": [{"attack": "clean", "accuracy": 0.9}]
            + [{"attack": attack, "eps": e, "accuracy": a} for e, a in acc]}


def test_suite_checks_compare_entries_by_label_like_with_like():
    results = {"fgsm": _meta("fgsm", [(0.01, 0.5)]),
               "pgd": _meta("pgd", [(0.01, 0.3)]),                              # untargeted: compared, ok
               "pgd_targeted": _meta("pgd", [(0.01, 0.9)], target="least_likely"),  # targeted: never compared
               "bim_subset": _meta("bim", [(0.01, 0.8)], images=4, max_images=4)}   # other images: not compared
    checks = suite_checks(results)
    assert [(c["name"], c["ok"]) for c in checks] == [("pgd_no_weaker_than_fgsm", True)]
    results["pgd"] = _meta("pgd", [(0.01, 0.6)])  # weaker than FGSM on the same images: flagged
    [check] = suite_checks(results)
    assert not check["ok"] and check["eps"] == [0.01]


def _capture_panels(monkeypatch) -> list[tuple[str, list[dict]]]:
    import robustcars.reporting.figures

    calls = []
    real = robustcars.reporting.figures.attack_panel

    def spy(rows, class_names, title, path, norm="linf"):
        calls.append((Path(path).name, rows))
        return real(rows, class_names, title, path, norm)

    monkeypatch.setattr(robustcars.reporting.figures, "attack_panel", spy)
    return calls


def test_panels_show_the_very_images_that_were_scored(trained, tmp_path, monkeypatch):
    """PGD with a random start: every panel row's adversarial image gives exactly its record's numbers."""
    from robustcars.metrics import entropy
    from robustcars.models.checkpoint import model_from_checkpoint, read_checkpoint

    data, run = trained
    calls = _capture_panels(monkeypatch)
    out = tmp_path / "pgd"
    r = invoke("attack", "--run", run, "--attack", "pgd", "--steps", 3, "--eps", 0.05, "--batch-size", 4,
               "--workers", 0, "--examples", 3, "--out", out)
    assert r.exit_code == 0, r.output
    records = {r["index"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    model = model_from_checkpoint(read_checkpoint(run))
    names = [name for name, _ in calls]
    assert names == ["panel_pgd_eps0.05.png"] + (["panel_pgd_extremes_eps0.05.png"] if len(calls) == 2 else [])
    checked = 0
    for _, rows in calls:
        for row in rows:
            adv = torch.from_numpy(row["adv"])[None]
            img = torch.from_numpy(row["image"])[None]
            [rec] = [r for r in records.values() if r["clean_top3_prob"] == [p for _, p in row["clean_top"]]]
            with torch.no_grad():
                logits = model(adv)
            assert (adv - img).abs().max().item() == pytest.approx(rec["adv"][0]["linf"], abs=1e-6)
            assert entropy(logits).item() == pytest.approx(rec["adv"][0]["entropy"], abs=1e-5)
            checked += 1
    assert checked >= 3


def test_a_resumed_attack_shows_every_example(trained, tmp_path, monkeypatch):
    """An attack stopped by a corrupt image, then resumed after the fix, still draws all its examples."""
    import shutil

    data, run = trained
    copy = tmp_path / "cars"
    shutil.copytree(data, copy)
    bad = copy / "test" / "Make2 Model 2002" / "test_2_1.jpg"
    good = bad.read_bytes()
    bad.write_bytes(b"\xff\xd8 truncated")
    args = ["attack", "--run", run, "--data", copy, "--eps", 0.05, "--batch-size", 2, "--workers", 0,
            "--examples", 9, "--out", tmp_path / "a"]
    r = invoke(*args)
    assert r.exit_code == 2 and "cannot read image" in r.output
    assert (tmp_path / "a" / "records.jsonl").read_text().count("\n") == 6  # three batches before the bad one
    bad.write_bytes(good)
    calls = _capture_panels(monkeypatch)
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.output
    example_panel = next(rows for name, rows in calls if name == "panel_fgsm_eps0.05.png")
    assert len(example_panel) == 9
    assert not list((tmp_path / "a").glob("kept*.pt"))  # removed once the figures are drawn


def test_a_resumed_attack_counts_the_cost_of_every_invocation(trained, tmp_path):
    """Passes per image of an attack stopped after three batches and resumed equal those of one uninterrupted
    run: the cost covers the images of the first invocation too (early stop makes the per-batch cost vary)."""
    import shutil

    data, run = trained
    copy = tmp_path / "cars"
    shutil.copytree(data, copy)
    bad = copy / "test" / "Make2 Model 2002" / "test_2_1.jpg"
    good = bad.read_bytes()
    args = ["attack", "--run", run, "--data", copy, "--attack", "pgd", "--param", "steps=6", "--param",
            "early_stop=true", "--eps", 0.02, "--batch-size", 2, "--workers", 0]
    assert invoke(*args, "--out", tmp_path / "whole").exit_code == 0
    bad.write_bytes(b"\xff\xd8 truncated")
    assert invoke(*args, "--out", tmp_path / "cut").exit_code == 2
    state = json.loads((tmp_path / "cut" / "cost_state.json").read_text())
    assert state["images"] == 6, state
    bad.write_bytes(good)
    assert invoke(*args, "--out", tmp_path / "cut", "--resume").exit_code == 0
    whole, cut = (json.loads((tmp_path / d / "attack.json").read_text())["cost"] for d in ("whole", "cut"))
    assert cut["resumed_images"] == 6 and whole["resumed_images"] == 0
    assert cut["images_costed"] == whole["images_costed"] == 9  # every test image
    assert cut["forward_backward_passes_per_image"] == whole["forward_backward_passes_per_image"] < 6
    assert not list((tmp_path / "cut").glob("cost_state*.json"))  # removed once attack.json holds the cost


def test_extreme_candidates_stream_to_the_same_choice_as_all_records():
    rng = random.Random(0)
    for trial in range(30):
        recs = []
        for i in range(rng.randint(1, 40)):
            label = rng.randint(0, 3)
            clean = label if rng.random() < 0.8 else (label + 1) % 4
            rank = rng.choice([1, 1, 2, 5, 9])
            top = clean if rank == 1 else (clean + 1) % 4
            recs.append({"index": i, "label": label, "clean_pred": clean, "clean_top3": [clean, 9, 8],
                         "clean_top3_prob": [rng.choice([0.5, 0.7]), .1, .1], "clean_entropy": 1.0,
                         "adv": [{"clean_top3_rank": [rank, 2, 3], "entropy": rng.choice([1.0, 2.0]),
                                  "top3": [top, 9, 8], "top3_prob": [rng.choice([0.3, 0.6]), .1, .1]}]})
        kept: dict[int, dict] = {}
        for start in range(0, len(recs), 3):  # batches of 3, as the runner sees them
            pool = {**kept, **{r["index"]: r for r in recs[start:start + 3]}}
            kept = {i: pool[i] for i in extreme_candidates(list(pool.values()), 0, 2)}
        assert extreme_images(list(kept.values()), 0, 2) == extreme_images(recs, 0, 2), trial


# --- data lost or runs stuck ---------------------------------------------------------------------------

def test_suite_is_validated_whole_and_resume_reuses_unchanged_entries(trained, tmp_path):
    _, run = trained
    suite = tmp_path / "s.toml"
    one = '[[attack]]\nname = "fgsm"\neps = [0.05]\n'
    two = '[[attack]]\nname = "pgd"\neps = [0.05]\nsteps = 2\n'
    suite.write_text(one + '[[attack]]\nname = "pgd"\neps = [0.05]\nsteps = 2.5\n')
    args = ["attack", "--run", run, "--suite", suite, "--batch-size", 4, "--workers", 0, "--out", tmp_path / "o"]
    r = invoke(*args)
    assert r.exit_code == 2 and "attack #2: pgd: steps must be an integer in [1, 10000], got 2.5" in r.output
    assert not (tmp_path / "o").exists()  # entry 1 did not run
    suite.write_text(one + two)
    assert invoke(*args).exit_code == 0
    fgsm_files = {p: p.read_bytes() for p in (tmp_path / "o" / "fgsm").rglob("*") if p.is_file()}
    suite.write_text(one + two + '[[attack]]\nname = "bim"\neps = [0.05]\nsteps = 2\n')
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert r.output.count("nothing to do") == 2
    assert {p: p.read_bytes() for p in (tmp_path / "o" / "fgsm").rglob("*") if p.is_file()} == fgsm_files
    summary = json.loads((tmp_path / "o" / "suite.json").read_text())
    assert set(summary["results"]) == {"fgsm", "pgd", "bim"}
    suite.write_text(one + two.replace("steps = 2", "steps = 3"))  # an entry edited after it ran
    r = invoke(*args, "--resume")
    assert r.exit_code == 2 and "suite entry 'pgd'" in r.output and "give the changed entry a new label" in r.output


def test_a_suites_calibration_is_validated_and_stated_in_every_result(trained, tmp_path):
    _, run = trained
    suite = tmp_path / "s.toml"
    body = '[[attack]]\nname = "fgsm"\neps = [0.05]\n[calibration]\nreference = "AutoAttack standard"\nimages = 128\n'
    args = ["attack", "--run", run, "--suite", suite, "--batch-size", 4, "--workers", 0, "--out", tmp_path / "o"]
    suite.write_text(body + "agreement = 1.5\n")
    r = invoke(*args)
    assert r.exit_code == 2 and "[calibration]: agreement must be a number >= 0 (agreement: in [0, 1])" in r.output
    assert not (tmp_path / "o").exists()
    suite.write_text(body.replace("images = 128\n", ""))
    r = invoke(*args)
    assert r.exit_code == 2 and "[calibration] needs agreement, images" in r.output
    suite.write_text(body + 'agreement = 0.992\nrobust_accuracy_gap = 0.004\nmodels = ["a", "b"]\n')
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    said = ("Calibrated against AutoAttack standard: per-image verdict agreement 99.2% on 128 images of a, b; "
            "robust accuracy at most 0.4 points above the reference.")
    assert said in " ".join(r.output.split())
    summary = json.loads((tmp_path / "o" / "suite.json").read_text())
    assert summary["calibration"] == {"reference": "AutoAttack standard", "agreement": 0.992, "images": 128,
                                      "models": ["a", "b"], "robust_accuracy_gap": 0.004}
    assert invoke("report", tmp_path / "o", "--out", tmp_path / "rep").exit_code == 0
    assert said in (tmp_path / "rep" / "report.md").read_text()


def test_a_failed_last_checkpoint_write_gives_consistent_advice(tmp_path, monkeypatch):
    import robustcars.training.loop
    from robustcars.config import TrainConfig
    from robustcars.errors import ConfigError, StorageError
    from robustcars.training.loop import fit

    data = make_folder_dataset(tmp_path / "cars")
    real = robustcars.training.loop.save_checkpoint

    def full_disk(path, payload):
        if Path(path).name == "last.pt":
            raise StorageError(f"cannot write {path}: No space left on device; the previous file is kept")
        return real(path, payload)

    monkeypatch.setattr(robustcars.training.loop, "save_checkpoint", full_disk)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "r"), arch="resnet18", weights="none", epochs=2,
                      img_size=32, batch_size=8, workers=0)
    with pytest.raises(StorageError):
        fit(cfg)
    monkeypatch.setattr(robustcars.training.loop, "save_checkpoint", real)
    for resume in (False, True):  # the same answer either way: no "pass --resume" that then says "nothing"
        with pytest.raises(ConfigError, match="holds best.pt but no resumable state"):
            fit(cfg, resume=resume)


def _history_without_times(run: Path) -> list[str]:
    rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [",".join(c for i, c in enumerate(row) if i != drop) for row in rows]


def test_kill_9_then_resume_is_bit_identical_with_workers(tmp_path):
    """kill -9 after epoch 1 of 4 (DataLoader workers 2, augmentation on), then --resume: the same history,
    metrics and weights as an uninterrupted run."""
    data = make_folder_dataset(tmp_path / "cars", per_split=(24, 3, 3))
    args = ["train", "--data", data, "--arch", "resnet18", "--weights", "none", "--epochs", 4, "--img-size", 48,
            "--batch-size", 8, "--workers", 2, "--threads", 1, "--seed", 3]
    full = cli_process(*args, "--out", tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    history = tmp_path / "cut" / "history.csv"
    kill_9_after(cli_process(*args, "--out", tmp_path / "cut"), history, 2)
    assert history.read_text().count("\n") < 5, "the run finished before it could be killed"
    resumed = cli_process(*args, "--out", tmp_path / "cut", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert _history_without_times(tmp_path / "cut") == _history_without_times(tmp_path / "full")
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "cut"))
    for key in ("train_seconds", "commands"):
        a.pop(key), b.pop(key)
    assert a.pop("reproduce").replace(str(tmp_path / "full"), str(tmp_path / "cut")) == b.pop("reproduce")
    assert a == b
    wa, wb = (torch.load(tmp_path / d / "best.pt", weights_only=True)["state_dict"] for d in ("full", "cut"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- seen by users ---------------------------------------------------------------------------------------

def test_plain_progress_lines_for_logs(capsys):
    t = [0.0]
    p = PlainProgress("attacking", total=100, done=20, interval=30, clock=lambda: t[0])
    for _ in range(8):
        t[0] += 10
        p(10)
    p(0)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln]
    assert lines[0].startswith("attacking: 50/100 img (50%), 1.00 img/s, elapsed 0:00:30, eta 0:00:50")
    assert len(lines) == 3 and lines[-1].startswith("attacking: 100/100 img (100%)")


def test_a_log_gets_progress_lines_and_wide_tables(trained, tmp_path):
    _, run = trained
    r = invoke("attack", "--run", run, "--eps", 0.05, "--batch-size", 4, "--workers", 0, "--out", tmp_path / "a",
               env={"ROBUSTCARS_PROGRESS_SECONDS": "0"})
    assert r.exit_code == 0, r.output
    assert "attacking: 4/9 img (44%)" in r.output and "attacking: 9/9 img (100%)" in r.output
    assert "clean top-1 rank" in r.output and "…" not in r.output  # headers not truncated


def test_help_is_not_cut_and_names_the_data_variable():
    r = invoke("train", "--help")
    assert r.exit_code == 0 and "…" not in r.output
    assert "$ROBUSTCARS_DATA, else data/stanford-cars" in r.output


@pytest.mark.parametrize("argv, message", [
    (["attack", "--run", "x", "--attack", "pgd", "--steps", "-5"],
     "error: pgd: steps must be an integer in [1, 10000], got -5"),
    (["train", "--lr", "5"], "error: --lr must be in (0, 1), got 5.0"),
    (["report", "/nonexistent"], "error: /nonexistent is not a run folder"),
])
def test_options_are_validated_before_torch_is_imported(argv, message):
    code = (f"import sys\nfrom robustcars.cli.app import main\nsys.argv = ['robustcars', *{argv!r}]\ntry:\n"
            "    main()\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert r.stderr.strip().startswith(message), r.stderr
