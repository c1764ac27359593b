"""FGSM, the fast gradient sign method (Goodfellow, Shlens, Szegedy 2014, "Explaining and Harnessing
Adversarial Examples", eq. 3), L∞ threat model:

    x_adv = clip(x + eps * sign(∇ₓ J(θ, x, y)), 0, 1),   J = cross-entropy of the logits.

One forward and one input-backward pass serve every eps of a sweep, and the clean logits come from the
same forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustcars.attacks.base import Attack, AttackOutput, input_gradient


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    """One FGSM step of size ``eps``.

    Args:
        model: maps float32 ``(N, C, H, W)`` in [0, 1] to logits ``(N, K)``; its mode is not changed.
        x: float32 ``(N, C, H, W)`` in [0, 1]; y: int64 ``(N,)`` true labels; eps: L∞ budget in [0, 1].
    Returns:
        float32 ``(N, C, H, W)`` in [0, 1], ``|x_adv - x|∞ <= eps``.

    Example:
        >>> x_adv = fgsm(model, images, labels, eps=0.01)
    """
    return fgsm_sweep(model, x, y, eps=[eps])[1][0]


def fgsm_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float]
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """FGSM for several budgets from one gradient.

    Returns:
        ``(clean_logits (N, K), [x_adv for each eps], grad_zero (N,) bool)``.
    """
    logits, grad = input_gradient(model, x, y)
    step = grad.sign()
    adv = [(x + e * step).clamp(0.0, 1.0) for e in eps]
    return logits, adv, grad.flatten(1).abs().amax(dim=1) == 0


class FGSM(Attack):
    """FGSM (Goodfellow et al. 2014), L∞; see :func:`fgsm`. Costs 1 forward+backward pass for any eps list."""

    name = "fgsm"
    norm = "linf"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        logits, adv, zero = fgsm_sweep(model, x, y, eps=eps)
        return AttackOutput(eps=eps, adv=adv, clean_logits=logits, grad_zero=zero, passes=1)
