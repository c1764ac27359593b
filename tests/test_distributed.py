"""torchrun with 2 CPU processes (gloo) on a tiny generated dataset: sharded attack = single process,
distributed training writes once and resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustcars.distributed import Dist, shard

from .conftest import make_folder_dataset

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
pytestmark = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
ROOT = Path(__file__).resolve().parents[1]


def env():
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return e


def robustcars(*args, procs=1, **kw):
    cmd = [sys.executable, "-m", "robustcars", *map(str, args)] if procs == 1 else \
        [TORCHRUN, "--nproc-per-node", str(procs), "--master-port", str(29500 + os.getpid() % 1000),
         "-m", "robustcars", "--", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env(), cwd=ROOT, **kw)


@pytest.mark.parametrize("n, world, block", [(9, 2, 1), (10, 3, 1), (1, 2, 1), (0, 2, 1), (9, 2, 2), (2030, 2, 32),
                                             (5, 4, 2)])
def test_shards_cover_every_index_once_in_whole_blocks(n, world, block):
    parts = [list(shard(n, Dist(r, world), block)) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) < 2 * block  # one block, plus a partial last one
    assert all(p[0] % block == 0 for p in parts if p)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = make_folder_dataset(root / "cars", per_split=(6, 3, 3))
    run = root / "run"
    r = robustcars("train", "--data", data, "--out", run, "--arch", "resnet18", "--weights", "none", "--epochs", 1,
                   "--img-size", 32, "--batch-size", 4, "--workers", 0)
    assert r.returncode == 0, r.stderr
    return root, data, run


def test_sharded_attack_equals_single_process(tiny):
    root, _, run = tiny
    args = ["attack", "--run", run, "--eps", 0.01, "--eps", 0.1, "--batch-size", 2, "--workers", 0]
    one = robustcars(*args, "--out", root / "a1")
    two = robustcars(*args, "--out", root / "a2", procs=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("Robustness of resnet18") == 1  # only rank 0 renders
    a, b = (json.loads((root / d / "attack.json").read_text()) for d in ("a1", "a2"))
    assert b["cost"]["processes"] == 2 and b["data"]["images"] == 9  # 9 images over 2 ranks: 5 + 4
    for key in set(a) | set(b):
        if key in ("cost", "command", "reproduce", "config", "figures"):  # these name the --out
            continue
        assert a[key] == b[key], key
    ra = [json.loads(line) for line in (root / "a1" / "records.jsonl").read_text().splitlines()]
    rb = [json.loads(line) for line in (root / "a2" / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rb] == list(range(9))
    assert ra == rb  # shards are whole batches: bitwise the same computation
    assert not list((root / "a2").glob("records.rank*"))


def test_distributed_training_writes_once_and_resumes(tiny):
    root, data, _ = tiny
    out = root / "ddp"
    cmd = [TORCHRUN, "--nproc-per-node", "2", "--master-port", str(29700 + os.getpid() % 200), "-m", "robustcars",
           "--", "train", "--data", str(data), "--out", str(out), "--arch", "resnet18", "--weights", "none",
           "--epochs", "8", "--img-size", "32", "--batch-size", "4", "--workers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "history.csv").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # interrupt the whole torchrun job after its first epoch
    proc.communicate(timeout=120)
    first = (out / "history.csv").read_text().splitlines()
    assert 2 <= len(first) < 9, "the run should have been interrupted after 1-7 epochs"
    r = robustcars("train", "--out", out, "--resume", procs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done in") == 1 and "resuming at epoch" in r.stdout
    rows = (out / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in rows[1:]] == list(range(1, 9))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 8 and metrics["test_images"] == 9
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .robustcars.lock stays
    assert names == ["best.pt", "config.json", "history.csv", "last.pt", "learning_curves.png", "metrics.json",
                     "val_batches.csv"]
