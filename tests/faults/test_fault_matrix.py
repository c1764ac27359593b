"""The fault matrix: bad input and faults a new user meets, each run through the real CLI.

Every case asserts: exit status 2 (a user error), exactly one line starting with ``error:``, no traceback, and
no byte of any file of the earlier run and attack changed. Run alone with ``pytest tests/faults -q``; the
count is recorded in the README ("Errors").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .common import ROOT, Case, check_refusal, invoke

A = ["attack", "--run", "{run}", "--workers", "0", "--batch-size", "4"]
CASES = [
    # options
    Case("eps above 1", A + ["--eps", "1.5", "--out", "{root}/n1"], "eps must be a number in [0, 1]", new=["n1"]),
    Case("unknown attack", A + ["--attack", "pgdd", "--out", "{root}/n1"], "'pgdd' is not one of", new=["n1"]),
    Case("unknown option", A + ["--epss", "0.1"], "No such option: --epss"),
    Case("not a number", A + ["--eps", "abc"], "Invalid value for '--eps'"),
    Case("alpha nan", A + ["--attack", "pgd", "--alpha", "nan", "--out", "{root}/n1"], "alpha must be a finite number",
         new=["n1"]),
    Case("deepfool steps -5", A + ["--attack", "deepfool", "--param", "steps=-5", "--out", "{root}/n1"],
         "deepfool: steps must be an integer in [1, 10000], got -5", new=["n1"]),
    Case("steps 2.5", A + ["--attack", "pgd", "--param", "steps=2.5", "--out", "{root}/n1"],
         "pgd: steps must be an integer in [1, 10000], got 2.5", new=["n1"]),
    Case("fgsm with steps", A + ["--steps", "3", "--out", "{root}/n1"], "fgsm: unknown parameter 'steps'", new=["n1"]),
    Case("target outside the classes", A + ["--attack", "pgd", "--target", "999", "--out", "{root}/n1"],
         "--target must be least_likely, runner_up or a class index in [0, 3), got 999", new=["n1"]),
    Case("param without =", A + ["--param", "steps", "--out", "{root}/n1"], "--param takes KEY=VALUE", new=["n1"]),
    # output folders
    Case("out is a file", A + ["--out", "{root}/a_file"], "is a file; choose a folder"),
    Case("out not writable", A + ["--out", "{unwritable}"], "cannot write to"),
    Case("existing attack, no --resume", A + ["--eps", "0.05", "--out", "{attack}"], "already holds attack records"),
    Case("resume with other eps", A + ["--eps", "0.2", "--out", "{attack}", "--resume"],
         "holds records of a different attack configuration"),
    Case("folder busy", A + ["--eps", "0.05", "--out", "{attack}", "--resume"], "is in use by process",
         hold_lock="{attack}"),
    Case("train into a busy folder", ["train", "--data", "{data}", "--out", "{run}", "--resume", "--workers", "0"],
         "is in use by process", hold_lock="{run}"),
    # runs and checkpoints
    Case("missing run", ["attack", "--run", "{root}/nope"], "not found (a run folder or a checkpoint .pt file)"),
    Case("garbage checkpoint", A + ["--run", "{root}/garbage.pt", "--out", "{root}/n1"], "cannot read checkpoint",
         new=["n1"]),
    Case("data of another class count", A + ["--data", "{root}/four", "--out", "{root}/n1"],
         "the model has 3 classes but", new=["n1"]),
    Case("train over an existing run", ["train", "--data", "{data}", "--out", "{run}", "--weights", "none"],
         "already holds a run; pass --resume"),
    Case("resume nothing", ["train", "--out", "{root}/n2", "--resume"], "nothing to resume", new=["n2"]),
    Case("missing data (env default)", ["train", "--out", "{root}/n2"], "data folder not found: /nonexistent/cars",
         env={"ROBUSTCARS_DATA": "/nonexistent/cars"}, new=["n2"]),
    Case("missing weights file", ["train", "--data", "{data}", "--out", "{root}/n2", "--weights", "{root}/w.pt"],
         "--weights must be imagenet, none or an existing file", new=["n2"]),
    Case("lr out of range", ["train", "--data", "{data}", "--out", "{root}/n2", "--lr", "5"], "--lr must be in (0, 1)",
         new=["n2"]),
    # data
    Case("empty class folder", ["train", "--data", "{root}/empty_class", "--out", "{root}/n2", "--weights", "none"],
         "train/Zempty holds no images (empty)", new=["n2"]),
    Case("class folder linked to its parent", ["train", "--data", "{root}/linked_class", "--out", "{root}/n2",
                                               "--weights", "none"], "train/Zloop holds no images (a link", new=["n2"]),
    Case("decompression bomb (train, worker)", ["train", "--data", "{root}/bomb_train", "--out", "{root}/n3",
                                                "--weights", "none", "--arch", "resnet18", "--img-size", "32",
                                                "--epochs", "1", "--workers", "1"], "refusing image"),
    Case("decompression bomb (attack)", A + ["--data", "{root}/bomb_test", "--out", "{root}/n4"], "refusing image"),
    Case("corrupt image (attack, worker)", A + ["--data", "{root}/corrupt_test", "--out", "{root}/n5",
                                                 "--workers", "1"], "cannot read image"),
    # suites: validated whole before anything runs
    Case("suite entry 2 steps 2.5", A + ["--suite", "{root}/steps_float.toml", "--out", "{root}/s1"],
         "attack #2: pgd: steps must be an integer in [1, 10000], got 2.5", new=["s1"]),
    Case("suite entry 2 eps 'a'", A + ["--suite", "{root}/eps_string.toml", "--out", "{root}/s1"],
         "attack #2: eps must be a number in [0, 1] (pixel scale), got 'a'", new=["s1"]),
    Case("suite label escaping its folder", A + ["--suite", "{root}/bad_label.toml", "--out", "{root}/s1"],
         "label must be a folder name", new=["s1"]),
    Case("suite target outside the classes", A + ["--suite", "{root}/bad_target.toml", "--out", "{root}/s1"],
         "suite entry 'pgd': --target must be", new=["s1"]),
    Case("suite deepfool steps -5", A + ["--suite", "{root}/negative_deepfool.toml", "--out", "{root}/s1"],
         "deepfool: steps must be an integer in [1, 10000], got -5", new=["s1"]),
    Case("missing suite file", A + ["--suite", "{root}/none.toml"], "suite file not found"),
    # report
    Case("report: corrupt attack.json", ["report", "{root}/corrupt_json", "--out", "{root}/r1"], "is not valid JSON",
         new=["r1"]),
    Case("report: torn last record", ["report", "{root}/torn", "--out", "{root}/r1"],
         "ends with a torn line after 8 complete records", new=["r1"]),
    Case("report: bad line in the middle", ["report", "{root}/bad_middle", "--out", "{root}/r1"],
         "line 4 is not valid JSON", new=["r1"]),
    Case("report: no records.jsonl", ["report", "{root}/no_records", "--out", "{root}/r1"], "records.jsonl not found",
         new=["r1"]),
    Case("report: out is someone's folder", ["report", "{attack}", "--out", "{root}/not_a_report"],
         "exists and is not a robustcars report folder"),
    Case("report: not a result", ["report", "{data}", "--out", "{root}/r1"], "is not a run folder", new=["r1"]),
]



@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_matrix(world, case: Case):
    check_refusal(world, case)


# --- faults that need a real process: a full disk, Ctrl-C, kill -9, two writers at once --------------------

def robustcars(*args, limit_bytes: int | None = None, ignore_sigint: bool = False, **kw) -> subprocess.Popen:
    def limit():
        os.setpgrp()
        if ignore_sigint:  # what a shell does to a background job ("robustcars ... &")
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if limit_bytes is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "robustcars", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit, **kw)


ATTACK = ["attack", "--eps", "0.05", "--batch-size", "1", "--workers", "0", "--threads", "1"]


@pytest.mark.parametrize("examples, message", [("0", "error: cannot append to"), ("4", "error: cannot write")])
def test_full_disk_during_an_attack(world, tmp_path, examples, message):
    """ulimit -f: no file may grow past 3 KB (a full disk): the records file (no panels) or the kept images
    (panels) fail first; one line, exit 2, the records written so far kept, and --resume completes the run."""
    out = tmp_path / "full"
    p = robustcars(*ATTACK, "--examples", examples, "--run", world["run"], "--out", out, limit_bytes=3000)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 2, stderr
    assert "Traceback" not in stderr and stderr.startswith(message) and "File too large" in stderr, stderr
    assert stderr.strip().count("\n") == 0
    kept = (out / "records.jsonl").read_text()
    assert kept.count("\n") >= 1
    r = invoke(*ATTACK, "--examples", examples, "--run", world["run"], "--out", out, "--resume")  # space again
    assert r.exit_code == 0, r.output
    assert json.loads((out / "attack.json").read_text())["data"]["images"] == 9


@pytest.mark.parametrize("background", [False, True])
def test_ctrl_c_then_resume(world, tmp_path, background):
    out = tmp_path / "int"
    p = robustcars(*ATTACK, "--attack", "pgd", "--steps", "40", "--run", world["run"], "--out", out,
                   ignore_sigint=background)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "records.jsonl").is_file() and (out / "records.jsonl").stat().st_size):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and "--resume" in stderr
    r = invoke(*ATTACK, "--attack", "pgd", "--steps", "40", "--run", world["run"], "--out", out, "--resume")
    assert r.exit_code == 0, r.output


def test_two_writers_into_one_folder(world, tmp_path):
    """The second process is refused with the holder's PID while the first is still writing; the first then
    finishes intact (no duplicate record)."""
    out = tmp_path / "two"
    long = [*ATTACK, "--attack", "pgd", "--steps", "500", "--max-images", "2", "--run", world["run"], "--out", out]
    first = robustcars(*long)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "attack_state.json").is_file():
        time.sleep(0.05)
    second = robustcars(*long, "--resume")
    _, err2 = second.communicate(timeout=300)
    assert first.poll() is None, "the first writer finished before the second started: the test needs more work"
    _, err1 = first.communicate(timeout=600)
    assert second.returncode == 2 and f"is in use by process {first.pid}" in err2, err2
    assert first.returncode == 0, err1
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1]  # no duplicates


def test_an_unexpected_error_is_one_line_with_a_saved_traceback(world, monkeypatch):
    import robustcars.evaluation.runner

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(robustcars.evaluation.runner, "run_attack", boom)
    r = invoke(*[a.format(run=world["run"]) for a in A], "--eps", "0.05", "--out", world["root"] / "n9")
    assert r.exit_code == 1
    line = r.output.strip()
    assert line.startswith("error: unexpected RuntimeError: boom") and line.count("\n") == 0
    path = Path(line.split("traceback saved to ")[1])
    assert "Traceback" in path.read_text() and "boom" in path.read_text()
    path.unlink()
