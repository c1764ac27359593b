"""Where a model under attack comes from: a robustcars run, a ``--model`` spec with a checkpoint, or any
``nn.Module`` handed to :func:`robustcars.evaluate`. The runner sees only a :class:`ModelSource`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustcars.errors import ConfigError, DataError
from robustcars.models.checkpoint import model_from_checkpoint, read_checkpoint
from robustcars.models.external import build_from_spec, load_weights, with_normalization
from robustcars.registry import ARCHITECTURES


@dataclass
class ModelSource:
    """What the runner needs of a model, whatever made it.

    ``make()`` returns the model in eval mode with normalization as its first layer (pixels in [0, 1] in,
    logits out); ``info`` is the ``run`` section of attack.json; ``data_options`` are the arguments of
    :func:`robustcars.data.cars.load_cars` that reproduce the model's split; ``cam_layer`` names the submodule of
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


def check_logits(logits: Any, num_classes: int, who: str = "the model") -> None:
    """What a model returned for a batch of N images must be: its logits, a finite float tensor ``(N, K)``
    with one column per class. Checked once, on the first batch, before anything is written.

    Raises:
        ConfigError: anything else (a tuple or dict, another shape, an integer dtype, NaN or inf); the message
            says what came back and what is expected.
    """
    import torch

    want = f"a float tensor of logits of shape (N, {num_classes}), one column per class"
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(f"{who} returns a {type(logits).__name__}, not {want} (wrap it so that forward returns "
                          "the logits only)")
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ConfigError(f"{who} returns a tensor of shape {tuple(logits.shape)}; expected {want}")
    if not logits.is_floating_point():
        raise ConfigError(f"{who} returns {str(logits.dtype).removeprefix('torch.')} values; expected {want}")
    if not bool(torch.isfinite(logits).all()):
        raise ConfigError(f"{who} returns non-finite logits (NaN or inf) for a valid image")


def check_image_item(item: Any, num_classes: int, where: str, size: tuple[int, ...] | None = None
                     ) -> tuple[int, ...]:
    """One ``(image, label)`` of a Dataset handed to :func:`robustcars.evaluate`: image a float tensor
    ``(3, H, W)`` in [0, 1] (of ``size`` when given), label an integer in [0, K). Returns the image's shape.

    Raises:
        DataError: anything else, naming the item (``where``) and what was expected.
    """
    import torch

    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(f"{where} is a {type(item).__name__}; a Dataset must yield (image, label) pairs")
    x, y = item
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 3 or x.shape[0] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{where}: the image must be a float tensor (3, H, W) in [0, 1], got {shape}"
                        + (f" {str(x.dtype).removeprefix('torch.')}" if isinstance(x, torch.Tensor) else ""))
    if size is not None and tuple(x.shape) != size:
        raise DataError(f"{where}: image of shape {tuple(x.shape)}, but the first is {size}; every image must have "
                        "the same size")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
        raise DataError(f"{where}: pixel values in [{lo:g}, {hi:g}]; images must be in [0, 1] (divide 8-bit "
                        "images by 255; normalization belongs in the model)")
    label = y.item() if isinstance(y, torch.Tensor) and y.numel() == 1 else y
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise DataError(f"{where}: label {label!r} is not a class index in [0, {num_classes})")
    return tuple(x.shape)


def from_run(run: str | Path) -> ModelSource:
    """A robustcars run folder or checkpoint (its best.pt). Raises CheckpointError."""

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
    """A model robustcars did not train (see :mod:`robustcars.models.external`); built once here so that a bad spec or
    checkpoint fails before anything is written. Raises ConfigError, CheckpointError."""

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
