"""Threat model, the attack base class and the helpers every attack shares.

An attack sees pixels in [0, 1] (normalization is inside the model) and returns adversarial images for a
list of budgets. The base class's :meth:`Attack.__call__` is the one public entry: it validates eps,
freezes the weights' ``requires_grad`` for the call (restored afterwards, the model's train/eval mode is
never touched), calls the subclass's :meth:`Attack.run`, then projects every result onto the eps ball and
[0, 1] ("clip to epsilon because we don't really know what the attack returns", foolbox 3
``attacks/base.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustcars.registry import check_eps

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="sum")


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter for the block, then restore each flag; every buffer
    (BatchNorm running statistics, which a model in train mode updates on each forward pass) is restored too.

    Gradients w.r.t. the input then never build weight-gradient work, ``.grad`` of the weights is never
    touched, and the model leaves the block with the state it entered it with.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False,
                   loss_fn: LossFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the gradient of the summed cross-entropy w.r.t. the input, from ONE forward pass.

    Args:
        x: float32 ``(N, C, H, W)`` in [0, 1]; y: int64 ``(N,)`` labels (targets when ``targeted``).
        targeted: return the gradient of ``-CE`` (descending towards ``y``).
        loss_fn: ``(logits, y) -> summed loss`` ascended instead of the cross-entropy (e.g. TRADES' KL term,
            with ``y`` the clean probabilities ``(N, K)``).
    Returns:
        ``(logits (N, K) detached, grad (N, C, H, W))``. Uses ``torch.autograd.grad``, never ``backward``.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = (loss_fn or _ce_sum)(logits, y)
        if targeted:
            loss = -loss
        (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto ``{x' : ||x' - x|| <= eps} ∩ [0, 1]^d`` (per image)."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * (eps / n).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(L∞, L2)`` norms of ``x_adv - x``, float32 ``(N,)`` each, in pixel scale."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1), d.norm(dim=1)


def to_8bit_grid(x: torch.Tensor) -> torch.Tensor:
    """``x`` as an 8-bit image would store it: ``round(255 · x) / 255``, clipped to [0, 1] (round half to even,
    :func:`torch.round`). Shape and dtype kept; pixel scale [0, 1]. What a PNG written from ``x`` and read back
    gives, so scoring it tells whether an adversarial example survives being saved as an image."""
    return torch.round(x.clamp(0, 1) * 255) / 255


@dataclass
class AttackOutput:
    """``adv[i]``: float32 ``(N, C, H, W)`` in [0, 1] for ``eps[i]``; ``clean_logits``: ``(N, K)`` from the
    attack's own first forward pass (so the caller needs no extra clean pass), or None; ``grad_zero``:
    bool ``(N,)``, True where the input gradient was exactly zero (a gradient-masking signal)."""

    eps: list[float]
    adv: list[torch.Tensor]
    clean_logits: torch.Tensor | None = None
    grad_zero: torch.Tensor | None = None
    targets: torch.Tensor | None = None  # int64 (N,) for targeted attacks
    min_norms: torch.Tensor | None = None  # float (N,) minimal adversarial norm (minimum-norm attacks; inf = failed)
    passes: float = 0.0  # mean forward+backward passes spent per image (0 when the attack does not count them)
    passes_by: dict[str, int] | None = None  # cascades: passes summed over the batch, per attack label
    queries_by: dict[str, int] | None = None  # cascades: forward passes without gradients, likewise
    fooled_by: list[list[str | None]] | None = None  # cascades: per eps, per image, the label of the attack that won
    counters: dict[str, int] | None = None  # budget decisions summed over the batch (converged images, discarded…)


class Attack:
    """Base class: subclasses set ``name``/``norm`` and implement :meth:`run`."""

    name: str = "attack"
    norm: str = "linf"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float]) -> AttackOutput:
        """Attack ``x`` (float32 ``(N, C, H, W)`` in [0, 1]) with true labels ``y`` (int64 ``(N,)``) for
        every budget in ``eps``; the model must return logits.

        Raises:
            ConfigError: eps outside [0, 1]; ValueError: ``x`` outside [0, 1] or shapes that do not match.
        """
        eps = check_eps(eps)
        if x.dim() != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"expected x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError("x must be in [0, 1]: normalization belongs inside the model")
        with frozen_weights(model):
            out = self.run(model, x, y, eps)
        out.adv = [project(x, a.detach(), e, self.norm) for a, e in zip(out.adv, eps)]
        return out
