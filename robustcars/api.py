"""The Python API: evaluate any classifier the way ``robustcars attack`` does.

Example:
    >>> import torchvision, robustcars
    >>> net = torchvision.models.resnet18(num_classes=196)
    >>> net.load_state_dict(torch.load("my_resnet18.pt", weights_only=True))
    >>> result = robustcars.evaluate(net, "data/stanford-cars", attack="pgd", eps=[0.001, 0.002],
    ...                              params={"steps": 10}, out="evals/resnet18-pgd", img_size=224,
    ...                              normalize=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    >>> result["rows"][1]["accuracy"]   # robust accuracy at eps 0.001

It writes the same ``attack.json`` / ``records.jsonl`` / ``figures/`` as the CLI (``suite.json`` for a suite), so
``robustcars report`` works on the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DataError


def evaluate(model: nn.Module, data: str | Path | Any, *, out: str | Path, attack: str = "fgsm",
             eps: Sequence[float] = (0.01,), params: dict[str, Any] | None = None, suite: str | Path | None = None,
             class_names: Sequence[str] | None = None, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
             img_size: int = 224, resize: str = "crop", split: str = "test", batch_size: int = 32,
             max_images: int | None = None, examples: int = 4, cam: int = 0, seed: int = 0, device: str = "auto",
             workers: int = 0, resume: bool = False, reporter: Any = None, name: str | None = None) -> dict[str, Any]:
    """Attack every image of ``data`` and write the results to ``out``; returns attack.json (suite.json).

    Args:
        model: any ``nn.Module`` mapping float32 ``(N, 3, H, W)`` images to logits ``(N, K)``; evaluated in eval
            mode (its mode is restored afterwards), its weights are never changed.
        data: a class-folder dataset root (``ROOT/{train,val,test}/<class>/*.jpg``; ``split`` picks the folder),
            or a map-style ``Dataset`` (or a ``DataLoader`` of one) yielding ``(image, label)`` with images
            float32 ``(3, H, W)`` in [0, 1], all the same size.
        out: the attack (or suite) folder to create; ``resume=True`` continues it.
        attack, eps, params: an attack of :mod:`robustcars.registry` with budgets in [0, 1] pixel scale (its
            norm) and its parameters; or ``suite``, a TOML suite file (then attack/eps/params are not used).
        class_names: required for a Dataset without a ``classes`` attribute; a folder gives its class folders.
        normalize: ``(mean, std)`` the model expects, added as its first layer (None: it takes [0, 1] pixels).
        img_size, resize: how folder images are prepared (``crop``: shorter side, center crop; ``squash``).
    Raises:
        ConfigError, DataError, CheckpointError, StorageError: as the CLI's (one-line messages).
    """
    from .config import AttackConfig
    from .runner import dataset_images, run_attack
    from .source import from_module

    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    folder = isinstance(data, (str, Path))
    if folder:
        from .data import load_cars

        names = list(class_names or load_cars(data).classes)
    else:
        names = list(class_names or getattr(data, "classes", []) or [])
        if not names:
            raise ConfigError("give class_names for a Dataset without a 'classes' attribute")
    source = from_module(model, class_names=names, img_size=img_size, resize=resize, normalize=normalize, name=name)
    base = AttackConfig(run="", model=f"python:{source.arch}", out=str(out), eps=list(eps), attack=attack,
                        params=dict(params or {}), split=split, batch_size=batch_size, device=device,
                        data=str(Path(data).resolve()) if folder else None, max_images=max_images,
                        examples=examples, seed=seed, workers=workers, cam=cam, img_size=img_size, resize=resize)
    images = None if folder else (lambda cfg: dataset_images(data, names, cfg))
    was_training = model.training
    try:
        _check_outputs(source, torch.zeros(1, 3, img_size, img_size) if folder else data[0][0][None])
        if suite is not None:
            from .suite import load_suite, run_suite

            return run_suite(base, load_suite(suite), resume=resume, reporter=reporter, source=source, images=images)
        return run_attack(base, resume=resume, reporter=reporter, source=source, images=images)
    finally:
        model.train(was_training)


def _check_outputs(source, probe: torch.Tensor) -> None:
    """One forward pass on one image: the model must return (1, number of classes) logits."""
    with torch.inference_mode():
        logits = source.make()(probe)
    if logits.dim() != 2 or logits.shape[1] != source.num_classes:
        raise DataError(f"the model returns logits of shape {tuple(logits.shape)} but the data has "
                        f"{source.num_classes} classes")
