"""Where a model under attack comes from: a robustcars run, a ``--model`` spec with a checkpoint, or any
``nn.Module`` handed to :func:`robustcars.evaluate`. The runner sees only a :class:`ModelSource`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError, DataError


@dataclass
class ModelSource:
    """What the runner needs of a model, whatever made it.

    ``make()`` returns the model in eval mode with normalization as its first layer (pixels in [0, 1] in,
    logits out); ``info`` is the ``run`` section of attack.json; ``data_options`` are the arguments of
    :func:`robustcars.data.load_cars` that reproduce the model's split; ``cam_layer`` names the submodule of
    ``make().model`` Grad-CAM reads (None: the last convolution).
    """

    arch: str
    class_names: list[str]
    img_size: int
    resize: str
    info: dict[str, Any]
    make: Callable[[], nn.Module]
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    cam_layer: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def from_run(run: str | Path) -> ModelSource:
    """A robustcars run folder or checkpoint (its best.pt). Raises CheckpointError."""
    from .checkpoint import model_from_checkpoint, read_checkpoint
    from .registry import ARCHITECTURES

    ckpt = read_checkpoint(run)
    tcfg = ckpt["config"]
    info = {"checkpoint": ckpt["path"], "arch": ckpt["arch"], "weights_origin": ckpt["weights_origin"],
            "img_size": ckpt["img_size"], "resize": ckpt.get("resize", "crop"), "mean": ckpt["mean"],
            "std": ckpt["std"], "epoch": ckpt["epoch"], "train_config": tcfg}
    cam = ARCHITECTURES[ckpt["arch"]].cam_layer if ckpt["arch"] in ARCHITECTURES else None
    return ModelSource(ckpt["arch"], list(ckpt["class_names"]), ckpt["img_size"], ckpt.get("resize", "crop"), info,
                       lambda: model_from_checkpoint(ckpt), tcfg.get("data"),
                       {"seed": tcfg.get("seed", 0), "val_fraction": tcfg.get("val_fraction", 1 / 3),
                        "crop_to_bbox": tcfg.get("crop_to_bbox", True)}, cam)


def read_class_names(path: str | Path) -> list[str]:
    """One class name a line (blank lines ignored). Raises DataError."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the class names in {path}: {exc}") from None
    if len(names) < 2:
        raise DataError(f"{path} names {len(names)} classes; a classifier needs at least 2")
    return names


def from_spec(spec: str, *, class_names: Sequence[str], checkpoint: str | None, mean: Sequence[float] | None,
              std: Sequence[float] | None, img_size: int, resize: str) -> ModelSource:
    """A model robustcars did not train (see :mod:`robustcars.anymodel`); built once here so that a bad spec or
    checkpoint fails before anything is written. Raises ConfigError, CheckpointError."""
    from .anymodel import build_from_spec, load_weights, with_normalization

    net = build_from_spec(spec, len(class_names))
    if checkpoint:
        load_weights(net, checkpoint)
    model = with_normalization(net, mean, std).eval()
    info = {"checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None, "arch": spec,
            "weights_origin": checkpoint or "random", "img_size": img_size, "resize": resize,
            "mean": list(model.normalize.mean.flatten().tolist()), "std": list(model.normalize.std.flatten().tolist()),
            "epoch": None, "train_config": {}}
    return ModelSource(spec, list(class_names), img_size, resize, info, lambda: model)


def from_module(module: nn.Module, *, class_names: Sequence[str], img_size: int = 224, resize: str = "crop",
                normalize: tuple[Sequence[float], Sequence[float]] | None = None, name: str | None = None
                ) -> ModelSource:
    """Any ``nn.Module`` returning logits (used by :func:`robustcars.evaluate`); ``normalize=(mean, std)`` adds
    the normalization it expects as its first layer. It is evaluated in eval mode;
    :func:`robustcars.evaluate` restores its mode afterwards.

    Raises:
        ConfigError: a resize mode other than crop/squash, or an image size outside [16, 1024].
    """
    from .anymodel import with_normalization

    if resize not in ("crop", "squash"):
        raise ConfigError(f"resize must be crop or squash, got {resize!r}")
    if not 16 <= img_size <= 1024:
        raise ConfigError(f"img_size must be in [16, 1024], got {img_size}")
    model = with_normalization(module, *(normalize or (None, None)))
    label = name or f"{type(module).__module__}.{type(module).__qualname__}"
    info = {"checkpoint": None, "arch": label, "weights_origin": "python object", "img_size": img_size,
            "resize": resize, "mean": model.normalize.mean.flatten().tolist(),
            "std": model.normalize.std.flatten().tolist(), "epoch": None, "train_config": {}}
    return ModelSource(label, list(class_names), img_size, resize, info, lambda: model.eval())


def cam_module(model: nn.Module, source: ModelSource) -> nn.Module:
    """The layer Grad-CAM reads: the named one, else the model's last convolution.

    Raises:
        ConfigError: the model has no convolution to read.
    """
    inner = getattr(model, "model", model)
    if source.cam_layer:
        return inner.get_submodule(source.cam_layer)
    convs = [m for m in inner.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{source.arch} has no convolution for Grad-CAM (--cam)")
    return convs[-1]
