"""Checkpoints that carry everything needed to rebuild and preprocess, as plain types.

Layout (a dict; loads with ``torch.load(weights_only=True)``)::

    format="robustcars-checkpoint", format_version=1, arch, num_classes, class_names, img_size, resize,
    mean, std, weights_origin, frozen, config (TrainConfig dict), epoch, metrics, versions, state_dict
    (+ for resumable ones: optimizer, scheduler, history, best_f1, bad_epochs, rng)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcars import storage as rio
from robustcars.errors import CheckpointError
from robustcars.models.zoo import build_model

FORMAT = "robustcars-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus format tags). Raises StorageError on a failed write."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return rio.write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a robustcars checkpoint (``weights_only=True``: it cannot run code).

    ``path`` may be a run folder (its ``best.pt`` is read) or a ``.pt`` file.

    Raises:
        CheckpointError: missing, unreadable, or not a robustcars checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.__class__.__name__}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robustcars checkpoint")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer robustcars (format {ckpt['format_version']})")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], *, num_classes: int | None = None, arch: str | None = None
                          ) -> nn.Sequential:
    """Rebuild the model of ``ckpt`` (eval mode) and load its weights.

    Args:
        num_classes, arch: when given, the checkpoint must match them (e.g. the class count of the data).

    Raises:
        CheckpointError: arch or class count differ, or the weights do not fit the architecture.
    """
    if arch is not None and ckpt["arch"] != arch:
        raise CheckpointError(f"checkpoint {ckpt.get('path', '')} is a {ckpt['arch']} model, not {arch}")
    if num_classes is not None and ckpt["num_classes"] != num_classes:
        raise CheckpointError(
            f"checkpoint {ckpt.get('path', '')} has {ckpt['num_classes']} classes but the data has {num_classes}"
        )
    model = build_model(ckpt["arch"], ckpt["num_classes"], weights="none")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"weights in {ckpt.get('path', '')} do not fit {ckpt['arch']}: {first}") from exc
    return model.eval()
