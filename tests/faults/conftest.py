"""The world the fault matrix runs in: a tiny trained run with a finished attack, and material for bad cases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..conftest import make_folder_dataset, train_tiny_run
from .common import bomb_png, invoke


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A trained run with a finished attack inside it, and material for the bad cases."""
    root = tmp_path_factory.mktemp("faults")
    data, run = train_tiny_run(root)
    atk = run / "attack-fgsm"
    r = invoke("attack", "--run", run, "--eps", 0.05, "--batch-size", 4, "--workers", 0, "--out", atk)
    assert r.exit_code == 0, r.output
    w = {"root": root, "data": data, "run": run, "attack": atk}
    # broken copies of the attack folder for the report cases
    for name, damage in {
        "corrupt_json": lambda d: (d / "attack.json").write_text('{"rows": [1, 2'),
        "torn": lambda d: (d / "records.jsonl").write_bytes((d / "records.jsonl").read_bytes()[:-40]),
        "bad_middle": lambda d: (d / "records.jsonl").write_text(
            "\n".join(ln if i != 3 else "{not json" for i, ln in enumerate(
                (d / "records.jsonl").read_text().splitlines())) + "\n"),
        "no_records": lambda d: (d / "records.jsonl").unlink(),
    }.items():
        shutil.copytree(atk, root / name)
        damage(root / name)
    (root / "a_file").write_text("not a folder")
    (root / "not_a_report").mkdir()
    (root / "not_a_report" / "notes.txt").write_text("mine")
    # datasets with one defect each
    for name in ("empty_class", "linked_class", "bomb_train"):
        make_folder_dataset(root / name)
    make_folder_dataset(root / "four", classes=4)
    (root / "empty_class" / "train" / "Zempty").mkdir()
    os.symlink(root / "linked_class" / "train", root / "linked_class" / "train" / "Zloop")
    bomb_png(root / "bomb_train" / "train" / "Make0 Model 2000" / "bomb.png")
    shutil.copytree(data, root / "bomb_test")
    bomb_png(root / "bomb_test" / "test" / "Make1 Model 2001" / "bomb.png")
    shutil.copytree(data, root / "corrupt_test")
    (root / "corrupt_test" / "test" / "Make1 Model 2001" / "zz.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "garbage.pt").write_bytes(b"not a checkpoint at all")
    suites = {
        "steps_float": '[[attack]]\nname = "fgsm"\neps = [0.01]\n[[attack]]\nname = "pgd"\neps = [0.01]\nsteps = 2.5\n',
        "eps_string": '[[attack]]\nname = "fgsm"\neps = [0.01]\n[[attack]]\nname = "pgd"\neps = ["a", 0.01]\n',
        "bad_label": '[[attack]]\nname = "fgsm"\neps = [0.01]\nlabel = "../escape"\n',
        "bad_target": '[[attack]]\nname = "fgsm"\neps = [0.01]\n[[attack]]\nname = "pgd"\neps = [0.01]\ntarget = 999\n',
        "negative_deepfool": '[[attack]]\nname = "deepfool"\neps = [0.1]\nsteps = -5\n',
    }
    for name, body in suites.items():
        (root / f"{name}.toml").write_text(body)
    unwritable = Path("/sys/robustcars-fault-matrix") if os.geteuid() == 0 else root / "readonly" / "sub"
    if os.geteuid() != 0:
        (root / "readonly").mkdir()
        os.chmod(root / "readonly", 0o555)
    w["unwritable"] = unwritable
    _more_material(root, w)
    return w


def wide_png(path: Path, width: int = 100_000, height: int = 1) -> Path:
    """A valid PNG of width x height grey pixels: a few hundred bytes, an aspect ratio no photo has."""
    from PIL import Image

    Image.new("L", (width, height), 128).save(path, optimize=True)
    return path


def _more_material(root: Path, w: dict) -> None:
    """A second run on four classes, a run copy holding another model's attack, a FIFO, odd images, suites."""
    data4, run4 = train_tiny_run(root / "w4", classes=4)
    w["run4"] = run4
    shutil.copytree(w["run"], root / "run_copy", ignore=shutil.ignore_patterns("attack-*"))
    shutil.copytree(w["attack"], root / "run_copy" / "attack-foreign")
    os.mkfifo(root / "fifo.jpg")
    wide_png(root / "wide.png")
    (root / "photos").mkdir()
    suites = {
        "steps_huge": '[[attack]]\nname = "pgd"\neps = [0.01]\nsteps = 1e9\n',
        "seed_negative": '[[attack]]\nname = "pgd"\neps = [0.01]\nseed = -1\n',
        "not_toml": '[[attack]\nname = ',
        "no_entries": 'name = "empty"\n',
        "dup_labels": '[[attack]]\nname = "fgsm"\neps = [0.01]\n[[attack]]\nname = "fgsm"\neps = [0.02]\n',
        "mixed_norms": 'cascade = true\n[[attack]]\nname = "pgd"\neps = [0.01]\n[[attack]]\nname = "pgd_l2"\n'
                       'eps = [0.01]\n',
        "mixed_eps": 'cascade = true\n[[attack]]\nname = "pgd"\neps = [0.01]\n[[attack]]\nname = "bim"\n'
                     'eps = [0.02]\n',
        "zero_images": '[[attack]]\nname = "fgsm"\neps = [0.01]\nmax_images = 0\n',
        "apgd_t_3": '[[attack]]\nname = "apgd_t"\neps = [0.01]\n',
    }
    for name, body in suites.items():
        (root / f"{name}.toml").write_text(body)


def pytest_terminal_summary(terminalreporter):
    """The matrix reports its case count at the end of every run that collected it."""
    from .test_matrix_size import API, CLI, WEB

    terminalreporter.write_line(f"fault matrix: {CLI} CLI cases, {WEB} web cases, {API} Python-API cases")
