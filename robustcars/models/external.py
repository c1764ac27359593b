"""Models robustcars did not train: torchvision and timm architectures, or a factory of the user's own, with
weights from a checkpoint of any common layout.

Specs (``--model``)::

    torchvision:resnet50       torchvision.models.get_model("resnet50", weights=None, num_classes=K)
    timm:convnext_tiny         timm.create_model("convnext_tiny", pretrained=False, num_classes=K)
    mypkg.models:build_net     mypkg.models.build_net(num_classes=K), or build_net() if it takes no such argument

Checkpoints are read with ``torch.load(weights_only=True)`` (they cannot run code): a plain state dict, or one
wrapped as ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}`` or ``{"net": ...}``, with
the ``module.`` prefix of DataParallel/DDP stripped. A state dict that does not fit names the missing and
unexpected keys. Normalization, if the model expects it, is added as its first layer (``mean``/``std``), so
attacks see pixels in [0, 1].
"""

from __future__ import annotations

import importlib
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcars.errors import CheckpointError, ConfigError
from robustcars.models.zoo import Normalize
from robustcars.registry import check_normalization

WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "network")


def build_from_spec(spec: str, num_classes: int) -> nn.Module:
    """A model from ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory`` (random weights).

    Raises:
        ConfigError: a malformed spec, an unknown name, a module or factory that cannot be imported.
    """
    if ":" not in spec:
        raise ConfigError(f"--model must be torchvision:NAME, timm:NAME or package.module:factory, got {spec!r}")
    source, name = spec.split(":", 1)
    if source == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError:
            raise ConfigError(f"torchvision has no model {name!r}; e.g. resnet18, resnet50, "
                              "efficientnet_b0") from None
    if source == "timm":
        try:
            import timm
        except ImportError:
            raise ConfigError("timm:… models need timm: pip install timm") from None
        if not timm.is_model(name):
            raise ConfigError(f"timm has no model {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        factory = getattr(importlib.import_module(source), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {name!r} from {source!r}: {exc}") from None
    except BaseException as exc:  # noqa: BLE001 - importing the user's module ran its code: any failure is theirs
        raise ConfigError(f"importing {source!r} failed: {exc.__class__.__name__}: {exc}") from None
    return _call_factory(spec, factory, num_classes)


def _call_factory(spec: str, factory: Any, num_classes: int) -> nn.Module:
    """Call a ``package.module:factory`` target: a Python function or class (not a builtin such as
    ``os.system``), with ``num_classes`` when it takes it; whatever it raises, or a result that is not an
    ``nn.Module``, is one ConfigError. ``SystemExit`` and ``KeyboardInterrupt`` from it are refused too, so
    ``sys:exit`` cannot end the program silently."""
    if not (inspect.isfunction(factory) or inspect.isclass(factory)):
        raise ConfigError(f"--model {spec}: the target must be a Python function or class returning a "
                          f"torch.nn.Module, got a {type(factory).__name__}")
    try:
        takes_classes = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_classes = False
    try:
        model = factory(num_classes=num_classes) if takes_classes else factory()
    except BaseException as exc:  # noqa: BLE001 - the user's code: reported in one line, never a traceback
        raise ConfigError(f"--model {spec} raised {exc.__class__.__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def unwrap_state_dict(obj: Any, path: str = "checkpoint") -> OrderedDict:
    """The tensors of a checkpoint in any of the common layouts, ``module.`` prefixes stripped.

    Raises:
        CheckpointError: no state dict inside.
    """
    for _ in range(3):  # at most a couple of nested wrappers
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            key = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
            if key is None:
                break
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (looked for a plain one and under "
                              f"{', '.join(repr(k) for k in WRAPPERS)})")
    out = OrderedDict()
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint file into ``model`` (strict).

    Raises:
        CheckpointError: missing or unreadable file, no state dict, or keys/shapes that do not fit (the message
            names the first missing and unexpected keys and how many there are).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or code-carrying pickles all mean the same
        raise CheckpointError(f"cannot read checkpoint {path} with weights_only=True: "
                              f"{exc.__class__.__name__}") from None
    state = unwrap_state_dict(obj, str(path))
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes)})" if shapes else ""]
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)
    return model


def with_normalization(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Sequential:
    """``Sequential(normalize, model)``; ``mean``/``std`` None means the model takes [0, 1] pixels as they are.

    Raises:
        ConfigError: only one of mean/std, not three finite values each, or a std <= 0.
    """

    check_normalization(mean, std)
    if mean is None:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), model=model))
