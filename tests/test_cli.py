"""The CLI end to end on a tiny generated dataset, and its one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from robustcars.cli.app import app

from .conftest import make_folder_dataset

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_folder_dataset(root / "cars")
    run = root / "run"
    r = invoke("train", "--data", data, "--out", run, "--arch", "resnet18", "--weights", "none", "--epochs", 2,
               "--img-size", 32, "--batch-size", 8, "--workers", 0, "--threads", 2)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and "run folder" in r.output
    return data, run


def test_attack_end_to_end(trained_run, tmp_path):
    data, run = trained_run
    out = tmp_path / "atk"
    r = invoke("attack", "--run", run, "--eps", 0.01, "--eps", 0.1, "--eps", 0.0, "--batch-size", 4,
               "--workers", 0, "--out", out, "--examples", 2)
    assert r.exit_code == 0, r.output
    assert "Robustness of resnet18 on 9 test images" in r.output
    result = json.loads((out / "attack.json").read_text())
    assert result["threat_model"]["eps"] == [0.0, 0.01, 0.1]
    rows = result["rows"]
    assert [r["attack"] for r in rows] == ["clean", "fgsm", "fgsm", "fgsm"]
    assert rows[1]["accuracy"] == rows[0]["accuracy"] and rows[1]["top1_rank_mean"] == 1.0  # eps 0 changes nothing
    assert rows[3]["linf_max"] <= 0.1 + 1e-6
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 9 and [r["index"] for r in records] == list(range(9))
    assert all(len(r["adv"]) == 3 and len(r["clean_top3"]) == 3 for r in records)
    for name in ("entropy_hist.png", "panel_fgsm_eps0.01.png", "panel_fgsm_eps0.1.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    if rows[0]["accuracy"] > 0:  # most/least affected clean-correct images at the largest eps
        assert (out / "figures" / "panel_fgsm_extremes_eps0.1.png").stat().st_size > 1000
        assert "figures/panel_fgsm_extremes_eps0.1.png" in result["figures"]
    assert (out / "attack.csv").read_text().startswith("attack,norm,eps")
    # the same command again refuses to overwrite; --resume on a complete run recomputes the same summary
    again = invoke("attack", "--run", run, "--eps", 0.01, "--eps", 0.1, "--eps", 0.0, "--out", out, "--workers", 0)
    assert again.exit_code == 2 and "already holds attack records" in again.output
    resumed = invoke("attack", "--run", run, "--eps", 0.01, "--eps", 0.1, "--eps", 0.0, "--batch-size", 4,
                     "--out", out, "--workers", 0, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "attack.json").read_text())["rows"] == rows


def test_attack_resume_after_a_torn_write(trained_run, tmp_path):
    data, run = trained_run
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ["attack", "--run", run, "--eps", 0.05, "--batch-size", 4, "--workers", 0]
    assert invoke(*args, "--out", full).exit_code == 0
    assert invoke(*args, "--out", cut).exit_code == 0
    lines = (cut / "records.jsonl").read_text().splitlines(keepends=True)
    (cut / "records.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # 4 whole records + a torn one
    r = invoke(*args, "--out", cut, "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming after 4" in r.output
    a, b = json.loads((full / "attack.json").read_text()), json.loads((cut / "attack.json").read_text())
    assert a["rows"] == b["rows"]
    assert (full / "records.jsonl").read_text() == (cut / "records.jsonl").read_text()
    n = a["data"]["images"]
    assert b["cost"]["resumed_images"] == 4 and a["cost"]["resumed_images"] == 0
    assert a["cost"]["forward_backward_passes_per_image"] == 1.0 and a["cost"]["images_per_second"] > 0
    before = {p.name: p.read_bytes() for p in cut.rglob("*") if p.is_file()}
    again = invoke(*args, "--out", cut, "--resume")  # finished: nothing to do, nothing rewritten
    assert again.exit_code == 0 and "nothing to do" in again.output and "results unchanged" in again.output
    assert {p.name: p.read_bytes() for p in cut.rglob("*") if p.is_file()} == before
    assert n == 9


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent/cars", "--out", "{tmp}/r"], "data folder not found: /nonexistent/cars"),
    (["attack", "--run", "{tmp}/missing"], "missing not found (a run folder or a checkpoint .pt file)"),
    (["attack", "--run", "{run}", "--eps", "1.5", "--out", "{tmp}/a"], "eps must be a number in [0, 1]"),
    (["attack", "--run", "{run}", "--attack", "pgdd", "--out", "{tmp}/a"], "'pgdd' is not one of 'apgd'"),
    (["attack", "--run", "{run}", "--data", "{tmp}/four", "--out", "{tmp}/a"], "the model has 3 classes but"),
    (["train", "--data", "{data}", "--out", "{run}", "--weights", "none"], "already holds a run"),
])
def test_bad_input_is_one_line_and_exit_2(trained_run, tmp_path, args, message):
    data, run = trained_run
    make_folder_dataset(tmp_path / "four", classes=4)
    args = [a.format(tmp=tmp_path, run=run, data=data) for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert r.output.startswith("error: ") and r.output.strip().count("\n") == 0


def test_help_explains_every_option():
    for cmd in ("train", "attack"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0
    assert "pixel scale" in invoke("attack", "--help").output
    assert invoke("--version").output.startswith("robustcars ")


def test_help_shows_the_defaults_written_in_it():
    # "[default: …]" inside a help text is rich markup unless escaped; it used to vanish from --help
    r = CliRunner().invoke(app, ["attack", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert "Iterations [default: 10 for bim, pgd, pgd_l2, mifgsm" in r.output  # generated from the registry
    assert "2.5·eps/steps for pgd, pgd_l2]" in r.output
    r = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert "train [default: all]." in r.output


def test_suite_runs_every_entry(trained_run, tmp_path):
    data, run = trained_run
    suite = tmp_path / "s.toml"
    suite.write_text('name = "t"\n[[attack]]\nname = "fgsm"\neps = [0.01, 0.1]\n'
                     '[[attack]]\nname = "pgd"\neps = [0.01, 0.1]\nsteps = 3\n'
                     '[[attack]]\nname = "pgd_l2"\neps = [0.5]\nsteps = 2\nlabel = "l2"\nmax_images = 4\n'
                     '[[attack]]\nname = "deepfool"\neps = [0.05, 1.0]\nsteps = 5\nmax_images = 6\n')
    out = tmp_path / "suite"
    r = invoke("attack", "--run", run, "--suite", suite, "--out", out, "--workers", 0, "--batch-size", 4)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "suite.json").read_text())
    # entries on a subset get their own clean row
    assert [(row.get("label"), row["eps"], row["images"]) for row in result["rows"]
            if row["attack"] != "worst-case"] == [
        (None, 0.0, 9), ("fgsm", 0.01, 9), ("fgsm", 0.1, 9), ("pgd", 0.01, 9), ("pgd", 0.1, 9), ("l2", 0.0, 4),
        ("l2", 0.5, 4), ("deepfool", 0.0, 6), ("deepfool", 0.05, 6), ("deepfool", 1.0, 6)]
    assert result["rows"][6]["l2_max"] <= 0.5 + 1e-5
    from rich.console import Console

    from robustcars.console import attack_table
    wide = Console(width=250, record=True)
    wide.print(attack_table(result))
    table = wide.export_text()
    assert "clean (4 images of l2)" in table and "clean (6 images of deepfool)" in table
    # the minimum-norm attack: norm distribution over clean-correct images, and robust accuracy at any eps
    # that agrees with the model's predictions on the adversarial images at the suite's eps
    mn = result["min_norms"]["deepfool"]
    records = [json.loads(line) for line in (out / "deepfool" / "records.jsonl").read_text().splitlines()]
    correct = [r["clean_pred"] == r["label"] for r in records]
    assert mn["norm"] == "l2" and mn["attacked"] == sum(correct)
    norms = [float("inf") if r["min_norm"] is None else r["min_norm"] for r in records]
    for row in [r for r in result["rows"] if r.get("label") == "deepfool" and r["attack"] != "clean"]:
        assert row["accuracy"] == sum(n > row["eps"] for n in norms) / len(norms)
    assert "deepfool: minimal L2 norm over" in r.output
    assert (out / "deepfool" / "figures" / "min_norm_curve.png").stat().st_size > 1000
    names = {c["name"] for c in result["checks"]}
    assert {"pgd_no_weaker_than_fgsm", "inside_eps_ball", "accuracy_non_increasing_in_eps"} <= names
    for label in ("fgsm", "pgd", "l2"):
        assert (out / label / "attack.json").is_file()


@pytest.mark.parametrize("body, message", [
    ('[[attack]]\nname = "pgdd"\neps = [0.1]\n', "unknown attack 'pgdd'; choose one of: apgd, apgd_ce"),
    ('[[attack]]\nname = "pgd"\neps = [2.0]\n', "eps must be a number in [0, 1]"),
    ('[[attack]]\nname = "pgd"\neps = [0.1]\nstepz = 3\n', "pgd: unknown parameter 'stepz'; its parameters: steps"),
    ('[[attack]\n', "invalid TOML"),
])
def test_bad_suites_fail_before_any_work(trained_run, tmp_path, body, message):
    _, run = trained_run
    suite = tmp_path / "bad.toml"
    suite.write_text(body)
    r = invoke("attack", "--run", run, "--suite", suite, "--out", tmp_path / "o")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_shipped_suites_are_valid():
    from pathlib import Path

    from robustcars.evaluation.suite import load_suite

    files = sorted((Path(__file__).resolve().parents[1] / "attacks").glob("*.toml"))
    assert files
    for f in files:
        assert load_suite(f).entries


def test_corrupt_image_in_a_worker_is_one_line(trained_run, tmp_path):
    import shutil

    data, run = trained_run
    copy = tmp_path / "cars"
    shutil.copytree(data, copy)
    (copy / "test" / "Make1 Model 2001" / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    r = invoke("attack", "--run", run, "--data", copy, "--out", tmp_path / "a", "--workers", 1, "--batch-size", 4)
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]  # the runner mixes the start line (stdout) with stderr
    assert last.startswith("error: cannot read image ") and last.endswith("zz_broken.jpg'")
    assert "Traceback" not in r.output and r.output.count("error:") == 1
    # the records of the batches before the bad image are kept for --resume
    assert (tmp_path / "a" / "records.jsonl").read_text().count("\n") == 4
