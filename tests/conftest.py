"""Shared fixtures: tiny generated datasets (no network, no shared data)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 210, 40)]


def make_image(path: Path, color: tuple[int, int, int], rng: np.random.Generator, size=(48, 36)) -> None:
    """A solid-colour image with noise, so each class is easy to tell apart."""
    arr = np.clip(np.array(color)[None, None, :] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def make_folder_dataset(root: Path, classes: int = 3, per_split=(6, 3, 3), with_val: bool = True, seed: int = 0
                        ) -> Path:
    rng = np.random.default_rng(seed)
    splits = ("train", "val", "test") if with_val else ("train", "test")
    counts = dict(zip(("train", "val", "test"), per_split))
    for split in splits:
        for c in range(classes):
            for i in range(counts[split]):
                make_image(root / split / f"Make{c} Model {2000 + c}" / f"{split}_{c}_{i}.jpg", COLORS[c], rng)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "cars")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


def invoke_cli(*args, env=None):
    """Run the CLI in-process (Typer's CliRunner); arguments may be paths or numbers."""
    from typer.testing import CliRunner

    from robustcars.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def train_tiny_run(root: Path, *, epochs: int = 1, extra: tuple = (), classes: int = 3) -> tuple[Path, Path]:
    """A generated dataset (3 classes) under ``root/cars`` and a ResNet-18 trained on it at 32 px in ``root/run``."""
    data = make_folder_dataset(root / "cars", classes=classes)
    run = root / "run"
    r = invoke_cli("train", "--data", data, "--out", run, "--arch", "resnet18", "--weights", "none", "--epochs", epochs,
                   "--img-size", 32, "--batch-size", 8, "--workers", 0, *extra)
    assert r.exit_code == 0, r.output
    return data, run


ROOT = Path(__file__).resolve().parents[1]


def cli_process(*args) -> subprocess.Popen:
    """``python -m robustcars ARGS`` in a process group of its own (so kill -9 reaches its workers too)."""
    return subprocess.Popen([sys.executable, "-m", "robustcars", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_9_after(proc: subprocess.Popen, path: Path, lines: int, timeout: float = 300) -> None:
    """SIGKILL ``proc``'s process group as soon as ``path`` holds ``lines`` complete lines."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.is_file() and path.read_text().count("\n") >= lines):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
