"""Seeding, device and thread selection. No global state is changed except where asked."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from robustcars.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so commands that fail early never wait for it
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:i]`` to a device; ``auto`` is CUDA when available, else CPU.

    Raises:
        ConfigError: unknown name, or ``cuda`` asked for on a machine without a GPU.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch for a run (called once by the CLI); returns a torch generator."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, as plain strings."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("robustcars", "torch", "torchvision", "timm", "foolbox", "pyautoattack", "numpy", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
