"""Iterative gradient attacks: BIM / I-FGSM, PGD (L∞ and L2) and MI-FGSM.

* BIM (Kurakin, Goodfellow, Bengio 2016, "Adversarial examples in the physical world"): FGSM steps of size
  ``alpha`` from ``x``, projected onto the L∞ eps ball and [0, 1] after each step.
* PGD (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", eq. 2): the same
  projected ascent from a uniform random start in the ball; ``restarts`` independent runs, keeping per image
  the first run that fools the model (else the last). L2 steps move along ``g / ||g||₂`` and project onto
  the L2 ball. Defaults follow Madry et al.: 10 steps, ``alpha = 2.5 * eps / steps``.
* MI-FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with Momentum", eq. 6-7): accumulates
  ``g_t = mu * g_{t-1} + grad / ||grad||₁`` and steps along ``sign(g_t)``.

Targeted variants descend the cross-entropy towards ``target``: the least-likely clean class
(``"least_likely"``), the clean runner-up (``"runner_up"``) or a fixed class index. Each core is a pure
function ``(model, x, y, *, eps, ...) -> x_adv`` using ``torch.autograd.grad``; the classes are thin wrappers.
All inputs float32 ``(N, C, H, W)`` in [0, 1]; labels int64 ``(N,)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import Attack, AttackOutput, input_gradient, project

TARGETS = ("least_likely", "runner_up")


def _l2_normalize(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * eps
    else:  # uniform in the L2 ball: direction on the sphere, radius eps * u^(1/d)
        d = x[0].numel()
        direction = _l2_normalize(torch.randn(x.shape, generator=generator, device="cpu").to(x.device))
        radius = eps * torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) ** (1 / d)
        noise = direction * radius.view(-1, *([1] * (x.dim() - 1)))
    return (x + noise).clamp(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
        alpha: float | None = None, random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy (one run, no restarts).

    Args:
        eps: budget in [0, 1] pixel scale, L∞ (``norm="linf"``) or L2 (``"l2"``).
        steps: iterations (Madry et al. use 10 to 100); alpha: step size, default ``2.5 * eps / steps``.
        random_start: start from a uniform point of the ball (PGD); False gives BIM.
        targeted: ``y`` are targets; the loss is descended instead of ascended.
        generator: CPU generator for the random start (determinism without touching global RNG).
    Returns:
        float32 ``(N, C, H, W)`` in [0, 1] within the eps ball around ``x``.
    """
    if eps == 0 or steps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
    for _ in range(steps):
        _, grad = input_gradient(model, x_adv, y, targeted=targeted)
        step = grad.sign() if norm == "linf" else _l2_normalize(grad)
        x_adv = project(x, x_adv + alpha * step, eps, norm)
    return x_adv


def mi_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
            decay: float = 1.0, alpha: float | None = None, targeted: bool = False) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018), L∞: momentum ``decay`` (mu), step ``alpha`` (default ``eps / steps``)."""
    if eps == 0 or steps == 0:
        return x.clone()
    alpha = eps / steps if alpha is None else alpha
    g = torch.zeros_like(x)
    x_adv = x.clone()
    for _ in range(steps):
        _, grad = input_gradient(model, x_adv, y, targeted=targeted)
        g = decay * g + grad / grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = project(x, x_adv + alpha * g.sign(), eps, "linf")
    return x_adv


def choose_targets(logits: torch.Tensor, target: str | int) -> torch.Tensor:
    """Targets from clean logits ``(N, K)``: least-likely class, the runner-up, or a fixed class index."""
    if target == "least_likely":
        return logits.argmin(dim=1)
    if target == "runner_up":
        return logits.topk(2, dim=1).indices[:, 1]
    if isinstance(target, int) and 0 <= target < logits.shape[1]:
        return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    raise ConfigError(f"target must be one of {', '.join(TARGETS)} or a class index in [0, {logits.shape[1]}), got {target!r}")


class _Iterative(Attack):
    """Shared wrapper: targets, restarts and pass counting around a per-eps core."""

    random_start = False

    def __init__(self, steps: int = 10, alpha: float | None = None, rel_alpha: float | None = None,
                 restarts: int = 1, target: str | int | None = None, seed: int = 0) -> None:
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if restarts < 1:
            raise ConfigError(f"restarts must be >= 1, got {restarts}")
        if alpha is not None and alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        self.steps, self.alpha, self.rel_alpha, self.restarts, self.target, self.seed = (
            steps, alpha, rel_alpha, restarts, target, seed)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def step_size(self, eps: float) -> float | None:
        if self.alpha is not None:
            return self.alpha
        return None if self.rel_alpha is None else self.rel_alpha * eps

    def core(self, model, x, y, eps, generator) -> torch.Tensor:
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        with torch.no_grad():
            clean_logits = model(x)
        goal = choose_targets(clean_logits, self.target) if self.targeted else y
        generator = torch.Generator().manual_seed(self.seed)
        advs = []
        for e in eps:
            best = None
            for _ in range(self.restarts):
                cand = self.core(model, x, goal, e, generator)
                if best is None:
                    best = cand
                    continue
                with torch.no_grad():
                    pred = model(best).argmax(1)
                    done = pred == goal if self.targeted else pred != y
                best = torch.where(done.view(-1, 1, 1, 1), best, cand)
            advs.append(best)
        return AttackOutput(eps=eps, adv=advs, clean_logits=clean_logits, targets=goal if self.targeted else None,
                            passes=self.steps * self.restarts * len(eps))


class BIM(_Iterative):
    """BIM / I-FGSM (Kurakin et al. 2016), L∞, no random start; ``alpha`` defaults to ``eps / steps``."""

    name, norm = "bim", "linf"

    def core(self, model, x, y, eps, generator):
        alpha = self.step_size(eps) or eps / self.steps
        return pgd(model, x, y, eps=eps, norm="linf", steps=self.steps, alpha=alpha, random_start=False,
                   targeted=self.targeted)


class PGDLinf(_Iterative):
    """PGD L∞ (Madry et al. 2018) with random start and ``restarts``."""

    name, norm = "pgd", "linf"

    def __init__(self, *args, random_start: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.random_start = random_start

    def core(self, model, x, y, eps, generator):
        return pgd(model, x, y, eps=eps, norm=self.norm, steps=self.steps, alpha=self.step_size(eps),
                   random_start=self.random_start, targeted=self.targeted, generator=generator)


class PGDL2(PGDLinf):
    """PGD L2 (Madry et al. 2018): steps along the L2-normalized gradient, projection onto the L2 ball."""

    name, norm = "pgd_l2", "l2"


class MIFGSM(_Iterative):
    """MI-FGSM (Dong et al. 2018), L∞, momentum ``decay`` (default 1.0)."""

    name, norm = "mifgsm", "linf"

    def __init__(self, *args, decay: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decay = decay

    def core(self, model, x, y, eps, generator):
        return mi_fgsm(model, x, y, eps=eps, steps=self.steps, decay=self.decay, alpha=self.step_size(eps),
                       targeted=self.targeted)
