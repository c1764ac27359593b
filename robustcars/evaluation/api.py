"""The Python API: evaluate any classifier the way ``robustcars attack`` does.

Example:
    >>> import torchvision, robustcars
    >>> net = torchvision.models.resnet18(num_classes=196)
    >>> net.load_state_dict(torch.load("my_resnet18.pt", weights_only=True))
    >>> result = robustcars.evaluate(net, "data/stanford-cars", attack="pgd", eps=[0.001, 0.002],
    ...                              params={"steps": 10}, out="evals/resnet18-pgd", img_size=224,
    ...                              normalize=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    >>> result.robust_accuracy(0.001), result.clean_accuracy
    >>> result.to_dict()                  # the attack.json content

Every argument is checked before anything is written: a wrong type or value raises :class:`ConfigError` (or
:class:`DataError` for the images), naming the argument and what it accepts.

It writes the same ``attack.json`` / ``records.jsonl`` / ``figures/`` as the CLI (``suite.json`` for a suite), so
``robustcars report`` works on the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcars.config import AttackConfig
from robustcars.errors import ConfigError
from robustcars.evaluation.runner import dataset_images, run_attack
from robustcars.models.source import from_module
from robustcars.registry import check_normalization
from robustcars.reporting.results import AttackSummary, SuiteSummary, read_json_file


def evaluate(model: nn.Module, data: str | Path | Any, *, out: str | Path, attack: str = "fgsm",
             eps: Sequence[float] = (0.01,), params: dict[str, Any] | None = None, suite: str | Path | None = None,
             class_names: Sequence[str] | None = None, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
             img_size: int = 224, resize: str = "crop", split: str = "test", batch_size: int = 32,
             max_images: int | None = None, examples: int = 4, cam: int = 0, seed: int = 0, device: str = "auto",
             workers: int = 0, resume: bool = False, reporter: Any = None, name: str | None = None,
             save_adv: bool = False, save_png: bool = False) -> AttackSummary | SuiteSummary:
    """Attack every image of ``data`` and write the results to ``out``; returns what was measured, typed: an
    :class:`~robustcars.reporting.results.AttackSummary` (a :class:`~robustcars.reporting.results.SuiteSummary`
    for a suite), whose ``to_dict()`` is the attack.json (suite.json) content.

    Args:
        model: any ``nn.Module`` mapping float32 ``(N, 3, H, W)`` images to logits ``(N, K)``; evaluated in eval
            mode (its mode is restored afterwards), its weights are never changed.
        data: a class-folder dataset root (``ROOT/{train,val,test}/<class>/*.jpg``; ``split`` picks the folder),
            or a map-style ``Dataset`` (or a ``DataLoader`` of one) yielding ``(image, label)`` with images
            float32 ``(3, H, W)`` in [0, 1], all the same size.
        out: the attack (or suite) folder to create; ``resume=True`` continues it.
        attack: the name of an attack of :mod:`robustcars.registry` (``robustcars attacks`` lists them).
        eps: budgets in [0, 1] pixel scale, in the attack's norm (L∞ or L2).
        params: the attack's parameters (checked against the registry's allowed values).
        suite: a TOML suite file instead of attack/eps/params.
        class_names: required for a Dataset without a ``classes`` attribute; a folder gives its class folders.
        normalize: ``(mean, std)`` the model expects, added as its first layer (None: it takes [0, 1] pixels).
        img_size: the square input size in pixels of folder images.
        resize: how folder images are resized: ``crop`` (shorter side, then center crop) or ``squash``.
        save_adv: keep every adversarial example (float32 tensors in ``out/adv``, see
            :mod:`robustcars.evaluation.saved`), as ``attack --save-adv``.
        save_png: also save them as 8-bit PNGs (implies ``save_adv``).
    Raises:
        ConfigError: an argument of the wrong type or out of range (the message names it and what it accepts),
            or a model whose output is not finite ``(N, K)`` float logits.
        DataError: a folder that is not a dataset, or a Dataset item that is not a float ``(3, H, W)`` image in
            [0, 1] with a label in [0, K) (all of one size).
        CheckpointError, StorageError: as the CLI's (one-line messages).
    """
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    _check_arguments(model, data, out, eps, params, suite, class_names, normalize, img_size)
    folder = isinstance(data, (str, Path))
    names = _class_names(data, class_names, folder)
    source = from_module(model, class_names=names, img_size=img_size, resize=resize, normalize=normalize, name=name)
    base = AttackConfig(run="", model=f"python:{source.arch}", out=str(out), eps=list(eps), attack=attack,
                        params=dict(params or {}), split=split, batch_size=batch_size, device=device,
                        data=str(Path(data).resolve()) if folder else None, max_images=max_images,
                        examples=examples, seed=seed, workers=workers, cam=cam, img_size=img_size, resize=resize,
                        save_adv=bool(save_adv), save_png=bool(save_png))
    images = None if folder else (lambda cfg: dataset_images(data, names, cfg))
    was_training = model.training
    try:
        if suite is not None:
            from robustcars.evaluation.suite import load_suite, run_suite

            done = run_suite(base, load_suite(suite), resume=resume, reporter=reporter, source=source, images=images)
            return SuiteSummary.from_dict(done, {label: read_json_file(path, "attack result (attack.json)")
                                                 for label, path in done["results"].items()})
        return AttackSummary.from_dict(run_attack(base, resume=resume, reporter=reporter, source=source,
                                                  images=images))
    finally:
        model.train(was_training)


def _class_names(data: Any, class_names: Sequence[str] | None, folder: bool) -> list[str]:
    """The class names in the model's output order: given, else a folder's class folders or a Dataset's
    ``classes``. Raises ConfigError for a Dataset without either."""
    if folder:
        from robustcars.data.cars import load_cars

        return list(class_names or load_cars(data).classes)
    names = list(class_names or getattr(data, "classes", []) or [])
    if not names:
        raise ConfigError("give class_names for a Dataset without a 'classes' attribute")
    return names


def _type(v: Any) -> str:
    return type(v).__name__


def _check_arguments(model: Any, data: Any, out: Any, eps: Any, params: Any, suite: Any, class_names: Any,
                     normalize: Any, img_size: Any) -> None:
    """The types of :func:`evaluate`'s arguments (their values are checked by the runner, before any write).

    Raises:
        ConfigError: naming the argument, the accepted types and what was given.
    """

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (wrap a function in one), got {_type(model)}")
    if not isinstance(data, (str, Path)) and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ConfigError("data must be a dataset folder (str or Path), a map-style torch Dataset or a DataLoader of "
                          f"one, got {_type(data)}")
    if not isinstance(out, (str, Path)) or not str(out):
        raise ConfigError(f"out must be a folder path (str or Path), got {out!r}")
    if isinstance(eps, (str, bytes)) or not isinstance(eps, (list, tuple)):
        raise ConfigError(f"eps must be a list or tuple of numbers in [0, 1] (e.g. [0.01]), got {_type(eps)} {eps!r}")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"params must be a dict of attack parameters, got {_type(params)}")
    if suite is not None and not isinstance(suite, (str, Path)):
        raise ConfigError(f"suite must be the path of a suite TOML file, got {_type(suite)}")
    if class_names is not None and (isinstance(class_names, str) or not isinstance(class_names, (list, tuple))
                                    or not all(isinstance(c, str) for c in class_names)):
        raise ConfigError("class_names must be a list of strings, one per model output")
    if normalize is not None:
        if not isinstance(normalize, (list, tuple)) or len(normalize) != 2:
            raise ConfigError(f"normalize must be (mean, std), two sequences of three numbers, got {normalize!r}")
        check_normalization(*normalize)
    if isinstance(img_size, bool) or not isinstance(img_size, int):
        raise ConfigError(f"img_size must be an integer number of pixels, got {_type(img_size)}")
