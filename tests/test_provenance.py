"""Records that say what ran: the command as typed, the settings as used, and a reproducing command that,
rerun, writes byte-identical records — for an attack, a suite and a resumed training run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from robustcars.config import TrainConfig

from .conftest import invoke_cli, train_tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    data, run = train_tiny_run(root, extra=("--resize", "squash"))
    return root, data, run


def rerun(command: str, out: Path) -> None:
    """Run a recorded ``robustcars …`` command again, into ``out`` instead of its own --out."""
    args = shlex.split(command)
    assert args[0] == "robustcars"
    i = args.index("--out")
    args[i + 1] = str(out)
    r = invoke_cli(*args[1:], "--workers", "0")
    assert r.exit_code == 0, r.output


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_attack_records_what_ran_and_its_command_reproduces_the_records(tiny):
    root, data, run = tiny
    out = root / "pgd"
    typed = ["attack", "--run", str(run), "--attack", "pgd", "--steps", "3", "--eps", "0.03", "--eps",
             "0.00784313725490196", "--batch-size", "4", "--workers", "0", "--out", str(out)]
    r = invoke_cli(*typed)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "attack.json").read_text())
    assert meta["command"] == shlex.join(["robustcars", *typed])  # as typed
    assert (meta["config"]["img_size"], meta["config"]["resize"]) == (32, "squash")  # the run's, not 224 / crop
    assert "--img-size" not in meta["reproduce"] and "--resize" not in meta["reproduce"]
    assert "--param steps=3" in meta["reproduce"] and "--eps 0.00784313725490196" in meta["reproduce"]
    rerun(meta["reproduce"], root / "pgd-again")
    assert sha(root / "pgd-again" / "records.jsonl") == sha(out / "records.jsonl")


def test_resume_accepts_the_same_run_spelled_another_way(tiny, monkeypatch):
    root, data, run = tiny
    out = root / "spelled"
    args = ["attack", "--eps", "0.03", "--batch-size", "4", "--workers", "0", "--out", str(out)]
    assert invoke_cli(*args, "--run", str(run)).exit_code == 0
    (out / "attack_state.json").write_text((out / "attack_state.json").read_text().replace('"finished": true',
                                                                                             '"finished": false'))
    monkeypatch.chdir(run.parent)
    r = invoke_cli(*args, "--run", os.path.relpath(run), "--resume")
    assert r.exit_code == 0, r.output


def test_a_finished_suite_resumed_is_left_byte_for_byte(tiny):
    root, data, run = tiny
    suite = root / "s.toml"
    suite.write_text('cascade = true\n[[attack]]\nname = "fgsm"\neps = [0.01, 0.03]\n'
                     '[[attack]]\nname = "pgd"\neps = [0.01, 0.03]\nsteps = 2\n')
    out = root / "suite"
    args = ["attack", "--run", run, "--suite", suite, "--batch-size", 4, "--workers", 0, "--examples", 0, "--out", out]
    assert invoke_cli(*args).exit_code == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}
    r = invoke_cli(*args, "--resume")
    assert r.exit_code == 0, r.output
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()
             if p.name != ".robustcars.lock"}
    assert after == {p: v for p, v in before.items() if p.name != ".robustcars.lock"}
    meta = json.loads((out / "suite.json").read_text())
    assert meta["reproduce"].startswith("robustcars attack --run ") and f"--suite {suite}" in meta["reproduce"]


def _history(run: Path) -> list[list[str]]:
    rows = list(csv.reader((run / "history.csv").open()))
    drop = rows[0].index("seconds")
    return [[c for i, c in enumerate(row) if i != drop] for row in rows]


def test_a_resumed_run_records_both_commands_and_reproduces_from_scratch(tmp_path, monkeypatch):
    import robustcars.console

    from .conftest import make_folder_dataset

    data = make_folder_dataset(tmp_path / "cars")
    out = tmp_path / "run"
    first = ["train", "--data", str(data), "--out", str(out), "--arch", "resnet18", "--weights", "none",
             "--epochs", "2", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--seed", "5"]
    calls = []

    def stop_after_epoch_1(self, row, improved):
        calls.append(row["epoch"])
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(robustcars.console.RichTrainReporter, "epoch", stop_after_epoch_1)
        r = invoke_cli(*first)
    assert r.exit_code == 130 and calls == [1], r.output
    second = ["train", "--out", str(out), "--resume", "--workers", "0"]
    assert invoke_cli(*second).exit_code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["commands"] == [shlex.join(["robustcars", *first]), shlex.join(["robustcars", *second])]
    reproduce = metrics["reproduce"]
    assert "--epochs 2" in reproduce and "--seed 5" in reproduce and "--img-size 32" in reproduce
    assert reproduce.endswith(f" --threads {torch.get_num_threads()}")  # the thread count changes the weights
    for absent in ("--train-eps", "--temperature", "--alpha", "--trades-beta", "--adversarial", "--distill-from"):
        assert absent not in reproduce  # options of defences this run did not use
    rerun(reproduce, tmp_path / "again")
    assert _history(tmp_path / "again") == _history(out)
    wa, wb = (torch.load(d / "best.pt", weights_only=True)["state_dict"] for d in (out, tmp_path / "again"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_reproducing_train_command_names_only_the_options_that_apply():
    plain = TrainConfig(data="/d", out="o").command()
    assert "--adversarial" not in plain and "--temperature" not in plain and "--defensive" not in plain
    adv = TrainConfig(data="/d", out="o", adversarial="trades", train_eps=0.002).command()
    assert "--adversarial trades" in adv and "--train-eps 0.002" in adv and "--trades-beta 6.0" in adv
    assert "--temperature" not in adv
    fgsm = TrainConfig(data="/d", out="o", adversarial="fgsm-rs").command()
    assert "--train-steps" not in fgsm and "--trades-beta" not in fgsm
    kd = TrainConfig(data="/d", out="o", distill_from="/t", temperature=100.0, alpha=1.0, defensive=True).command()
    assert "--distill-from /t --temperature 100.0 --alpha 1.0" in kd and kd.endswith("--defensive")
    assert "--train-eps" not in kd


def test_the_report_keeps_two_runs_of_one_display_name_apart(tiny):
    root, data, run = tiny
    twin = root / "twin"
    shutil.copytree(run, twin, ignore=shutil.ignore_patterns("attack-*", "suite*", "pgd*", "spelled"))
    for r_ in (run, twin):
        assert invoke_cli("attack", "--run", r_, "--eps", 0.03, "--batch-size", 4, "--workers", 0,
                          "--out", r_ / "attack-fgsm-twin").exit_code == 0
    r = invoke_cli("report", run, twin, "--out", root / "rep", "--panels", "none")
    assert r.exit_code == 0, r.output
    rep = json.loads((root / "rep" / "report.json").read_text())
    names = [m["name"] for m in rep["models"]]
    assert len(names) == 2 and len(set(names)) == 2 and names[1].endswith("[twin]"), names
