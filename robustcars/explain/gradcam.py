"""Grad-CAM of clean vs adversarial images (Selvaraju et al., ICCV 2017, eq. 1-2) through the maintained library
``grad-cam`` (``pytorch_grad_cam``), at each architecture's last conv block
(:data:`robustcars.registry.ARCHITECTURES`); :func:`attention_shift` measures how far the map moved under attack.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from robustcars.attacks.base import frozen_weights
from robustcars.errors import ConfigError
from robustcars.registry import ARCHITECTURES


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may call ``eval()``, ``zero_grad()`` or ``backward()`` on ``model`` and restore its
    mode, its weights' ``requires_grad`` and ``.grad`` afterwards (weights are frozen inside, so no weight
    gradient is even computed)."""

    mode = model.training
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with frozen_weights(model):
            yield model
    finally:
        model.train(mode)
        for p, g in grads:
            p.grad = g


def cam_layer(model: nn.Module, arch: str, layer: str | None = None) -> nn.Module:
    """The submodule Grad-CAM reads (the one lookup of it): ``layer`` when named, else the layer the registry
    gives for ``arch`` (:data:`robustcars.registry.ARCHITECTURES`), else the model's last convolution (models
    robustcars did not train). ``model`` may be ``Sequential(normalize, model)``; names are inside the backbone.

    Raises:
        ConfigError: the model has no convolution to read.
    """
    inner = getattr(model, "model", model)
    layer = layer or (ARCHITECTURES[arch].cam_layer if arch in ARCHITECTURES else None)
    if layer:
        return inner.get_submodule(layer)
    convs = [m for m in inner.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{arch} has no convolution for Grad-CAM (--cam)")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int], layer: nn.Module) -> np.ndarray:
    """Grad-CAM heat maps of ``classes[i]`` for image ``x[i]``.

    Args:
        x: float32 ``(N, 3, H, W)`` in [0, 1]; classes: one class index per image; layer: see :func:`cam_layer`.
    Returns:
        float32 ``(N, H, W)``, each map scaled to [0, 1] (0 where the map is flat).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with untouched(model), GradCAM(model=model, target_layers=[layer]) as cam:
        cam.compute_input_gradient = True  # the weights are frozen: the graph starts at the input
        maps = cam(input_tensor=x.detach().clone(), targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.asarray(maps, dtype=np.float32)


def attention_shift(clean: np.ndarray, adv: np.ndarray, top: float = 0.1) -> dict[str, np.ndarray]:
    """How far the attention moved, per image, between two stacks of maps ``(N, H, W)``.

    Returns:
        ``pearson``: correlation of the two maps (1 = same place; nan if a map is flat), and ``top_kept``: the
        share of the clean map's ``top`` fraction of pixels that are also in the adversarial map's top fraction.
    """
    a, b = clean.reshape(len(clean), -1).astype(np.float64), adv.reshape(len(adv), -1).astype(np.float64)
    a_c, b_c = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denom = np.sqrt((a_c ** 2).sum(1) * (b_c ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.where(denom > 0, (a_c * b_c).sum(1) / denom, np.nan)
    n = max(1, int(math.ceil(top * a.shape[1])))
    top_a, top_b = np.argsort(-a, axis=1)[:, :n], np.argsort(-b, axis=1)[:, :n]
    kept = np.array([len(np.intersect1d(i, j)) / n for i, j in zip(top_a, top_b)])
    return {"pearson": pearson, "top_kept": kept}


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map on the image (``image`` float (3, H, W) or (H, W, 3) in [0, 1]) as an RGB float array."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = image.transpose(1, 2, 0) if image.shape[0] == 3 else image
    return show_cam_on_image(np.clip(img, 0, 1).astype(np.float32), heat, use_rgb=True).astype(np.float32) / 255


def attention_records(model: nn.Module, layer: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                      clean_cls: Sequence[int], adv_cls: Sequence[int]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Grad-CAM of each clean image for its clean top-1 and of its adversarial image for the adversarial top-1,
    and how far the attention moved (:func:`attention_shift`).

    Returns:
        ``(per-image {"pearson", "top_kept"} with None for a flat map, clean maps, adversarial maps)``.
    """
    clean = grad_cam(model, x, clean_cls, layer)
    adv = grad_cam(model, x_adv, adv_cls, layer)
    s = attention_shift(clean, adv)
    stats = [{"pearson": None if math.isnan(p) else round(float(p), 6), "top_kept": round(float(k), 6)}
             for p, k in zip(s["pearson"], s["top_kept"])]
    return stats, clean, adv
