"""Iterative gradient attacks: BIM / I-FGSM, PGD (L∞ and L2) and MI-FGSM.

* BIM (Kurakin, Goodfellow, Bengio 2016, "Adversarial examples in the physical world"): FGSM steps of size
  ``alpha`` from ``x``, projected onto the L∞ eps ball and [0, 1] after each step.
* PGD (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", eq. 2): the same
  projected ascent from a uniform random start in the ball; ``restarts`` independent runs, keeping per image
  the first run that fools the model (else the last). L2 steps move along ``g / ||g||₂`` and project onto
  the L2 ball. Defaults follow Madry et al.: 10 steps, ``alpha = 2.5 * eps / steps``.
* MI-FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with Momentum", eq. 6-7): accumulates
  ``g_t = mu * g_{t-1} + grad / ||grad||₁`` and steps along ``sign(g_t)``.

Early stopping. Restarts only run on images the earlier runs did not fool (the first fooling run is kept,
so this never changes a result). With ``early_stop=True`` an image also leaves the batch at the first
iterate that fools it (untargeted: prediction != label; targeted: prediction == target) and that iterate is
its adversarial image. Robust accuracy and success rate can then only go down (an image once fooled stays
counted as fooled, as in AutoAttack), while the entropy and rank shifts describe the first fooling iterate
instead of the last one; the cost falls with the share of fooled images. The fooled test reuses the logits of
the step's own forward pass, so it costs nothing. ``passes`` reports the mean forward+backward passes per
image actually spent.

Targeted variants descend the cross-entropy towards ``target``: the least-likely clean class
(``"least_likely"``), the clean runner-up (``"runner_up"``) or a fixed class index. Each core is a pure
function ``(model, x, y, *, eps, ...) -> x_adv`` using ``torch.autograd.grad``; the classes are thin wrappers.
All inputs float32 ``(N, C, H, W)`` in [0, 1]; labels int64 ``(N,)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustcars.attacks.base import Attack, AttackOutput, LossFn, input_gradient, project
from robustcars.errors import ConfigError
from robustcars.registry import TARGETS, validate_params


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


def _fooled(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def _ascend(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, steps: int, targeted: bool,
            early_stop: bool, update, loss_fn: LossFn | None = None, converge: bool = False,
            stats: dict[str, int] | None = None) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """The shared loop: ``update(idx, x_adv_sub, grad) -> new x_adv_sub`` for the still-active rows ``idx``
    (a slice while every image is active, else an int64 index tensor).

    ``converge``: an image leaves once its iterates repeat — the new iterate equals the current one (a fixed
    point) or the one before (a 2-cycle). ``update`` depends on the iterate alone (fixed step, no momentum), so
    every later iterate is then known without computing it: the image keeps the iterate the full loop would end
    on, and no later iterate can fool the model (each was already scored). Exact only for a deterministic
    model, so it is off while the model is in train mode. ``stats["converged_images"]`` counts them.

    Returns ``(x_adv, image_passes, first_logits)``: ``image_passes`` counts forward+backward passes over all
    images; ``first_logits`` ``(N, K)`` are the logits at the start point (the clean logits when it is ``x``).
    """
    active = torch.arange(x.shape[0], device=x.device)
    full = True  # every image still active: no gathers, the plain loop
    spent, first, prev = 0, None, None
    converge = converge and not model.training
    for s in range(steps):
        xa, ya = (x_adv, y) if full else (x_adv[active], y[active])
        logits, grad = input_gradient(model, xa, ya, targeted=targeted, loss_fn=loss_fn)
        spent += xa.shape[0]
        if first is None:
            first = logits
        if early_stop:
            keep = ~_fooled(logits, ya, targeted)
            if not bool(keep.all()):
                full = False
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
        new = update(slice(None) if full else active, xa, grad)
        done = None
        if converge:
            new, done = _repeated(new, xa, None if prev is None else prev[active], steps - s - 1)
        prev = x_adv.clone() if converge else None
        x_adv = new if full else x_adv.index_copy(0, active, new)
        if done is not None and bool(done.any()):
            if stats is not None:
                stats["converged_images"] = stats.get("converged_images", 0) + int(done.sum())
            full, active = False, active[~done]
            if active.numel() == 0:
                break
    return x_adv, spent, first


def _repeated(new: torch.Tensor, cur: torch.Tensor, before: torch.Tensor | None, remaining: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose iterates repeat (``new == cur``, or ``new == before``: a 2-cycle) and, for each row, the
    iterate the loop would end on after ``remaining`` more updates (a 2-cycle alternates ``new``, ``cur``)."""
    fixed = (new == cur).flatten(1).all(1)
    cycle = (new == before).flatten(1).all(1) if before is not None else torch.zeros_like(fixed)
    if remaining % 2 == 1:
        new = torch.where((cycle & ~fixed).view(-1, *([1] * (new.dim() - 1))), cur, new)
    return new, fixed | cycle


def pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
            alpha: float | None = None, random_start: bool = True, targeted: bool = False, early_stop: bool = False,
            generator: torch.Generator | None = None, loss_fn: LossFn | None = None, converge: bool = False,
            stats: dict[str, int] | None = None) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """:func:`pgd` that also returns the forward+backward passes spent (summed over images) and the logits at
    the start point (None when nothing was computed); ``converge`` and ``stats`` as in :func:`_ascend`."""
    if eps == 0 or steps == 0:
        return x.clone(), 0, None
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()

    def update(idx, xa, grad):
        step = grad.sign() if norm == "linf" else _l2_normalize(grad)
        return project(x[idx], xa + alpha * step, eps, norm)

    return _ascend(model, x, y, x_adv, steps, targeted, early_stop, update, loss_fn, converge, stats)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
        alpha: float | None = None, random_start: bool = True, targeted: bool = False, early_stop: bool = False,
        generator: torch.Generator | None = None, loss_fn: LossFn | None = None) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy (one run, no restarts).

    Args:
        x: float32 ``(N, C, H, W)`` in [0, 1]; y: int64 ``(N,)`` labels (targets when ``targeted``).
        eps: budget in [0, 1] pixel scale, L∞ (``norm="linf"``) or L2 (``"l2"``).
        steps: iterations (Madry et al. use 10 to 100); alpha: step size, default ``2.5 * eps / steps``.
        random_start: start from a uniform point of the ball (PGD); False gives BIM.
        targeted: ``y`` are targets; the loss is descended instead of ascended.
        early_stop: freeze each image at its first fooling iterate (see the module docstring).
        generator: CPU generator for the random start (determinism without touching global RNG).
        loss_fn: ``(logits, y) -> summed loss`` to ascend instead of the cross-entropy (TRADES: the KL term,
            ``y`` then the clean probabilities ``(N, K)``); early_stop then still compares argmax with ``y``,
            so leave it off.
    Returns:
        float32 ``(N, C, H, W)`` in [0, 1] within the eps ball around ``x``.
    """
    return pgd_run(model, x, y, eps=eps, norm=norm, steps=steps, alpha=alpha, random_start=random_start,
                   targeted=targeted, early_stop=early_stop, generator=generator, loss_fn=loss_fn)[0]


def mi_fgsm_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
                decay: float = 1.0, alpha: float | None = None, targeted: bool = False, early_stop: bool = False
                ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """:func:`mi_fgsm` that also returns the passes spent and the start logits, as :func:`pgd_run`."""
    if eps == 0 or steps == 0:
        return x.clone(), 0, None
    alpha = eps / steps if alpha is None else alpha
    g = torch.zeros_like(x)

    def update(idx, xa, grad):
        gi = decay * g[idx] + grad / grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        g[idx] = gi
        return project(x[idx], xa + alpha * gi.sign(), eps, "linf")

    return _ascend(model, x, y, x.clone(), steps, targeted, early_stop, update)


def mi_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
            decay: float = 1.0, alpha: float | None = None, targeted: bool = False, early_stop: bool = False
            ) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018), L∞: momentum ``decay`` (mu), step ``alpha`` (default ``eps / steps``).

    Shapes and ranges as :func:`pgd`; returns float32 ``(N, C, H, W)`` in [0, 1] within the L∞ ball.
    """
    return mi_fgsm_run(model, x, y, eps=eps, steps=steps, decay=decay, alpha=alpha, targeted=targeted,
                       early_stop=early_stop)[0]


def choose_targets(logits: torch.Tensor, target: str | int) -> torch.Tensor:
    """Targets from clean logits ``(N, K)``: least-likely class, the runner-up, or a fixed class index."""
    if target == "least_likely":
        return logits.argmin(dim=1)
    if target == "runner_up":
        return logits.topk(2, dim=1).indices[:, 1]
    if isinstance(target, int) and 0 <= target < logits.shape[1]:
        return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    raise ConfigError(f"target must be one of {', '.join(TARGETS)} or a class index in [0, {logits.shape[1]}), "
                      f"got {target!r}")


class _Iterative(Attack):
    """Shared wrapper: targets, restarts and pass counting around a per-eps core."""

    random_start = False

    def __init__(self, **params: Any) -> None:
        """``params`` by the registry's names (``steps``, ``alpha``, ``restarts``, ``target``, ``early_stop``,
        ``seed``; ``random_start`` for PGD, ``decay`` for MI-FGSM); defaults and ranges are the registry's alone
        (``robustcars attacks`` lists them).

        Raises:
            ConfigError: an unknown parameter, or a value of the wrong type or out of range.
        """
        for key, value in validate_params(self.name, params).items():
            setattr(self, key, value)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def step_size(self, eps: float) -> float | None:
        return self.alpha

    def core(self, model, x, y, eps, generator) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """One run at one eps: ``(x_adv, forward+backward passes summed over images, start logits)``."""
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        # Untargeted without random start, the first step's forward pass is at x: its logits are the clean
        # logits, so no separate clean pass is needed (the floor of the attack, see robustcars.evaluation.bench).
        clean_logits = None
        if self.targeted or self.random_start:
            with torch.no_grad():
                clean_logits = model(x)
        goal = choose_targets(clean_logits, self.target) if self.targeted else y
        generator = torch.Generator().manual_seed(self.seed)
        advs, spent, self._stats = [], 0, {}
        for e in eps:
            best, n, first = self.core(model, x, goal, e, generator)
            spent += n
            if clean_logits is None and first is not None:
                clean_logits = first
            for _ in range(1, self.restarts):  # later runs only where no earlier run fooled the model
                with torch.no_grad():
                    todo = (~_fooled(model(best), goal, self.targeted)).nonzero().flatten()
                if todo.numel() == 0:
                    break
                cand, n, _ = self.core(model, x[todo], goal[todo], e, generator)
                spent += n
                best = best.index_copy(0, todo, cand)
            advs.append(best)
        if clean_logits is None:  # every eps was 0
            with torch.no_grad():
                clean_logits = model(x)
        return AttackOutput(eps=eps, adv=advs, clean_logits=clean_logits, targets=goal if self.targeted else None,
                            passes=spent / x.shape[0], counters=dict(self._stats) if self._stats else None)


class BIM(_Iterative):
    """BIM / I-FGSM (Kurakin et al. 2016), L∞, no random start; ``alpha`` defaults to ``eps / steps``."""

    name, norm = "bim", "linf"

    def core(self, model, x, y, eps, generator):
        alpha = self.step_size(eps) or eps / self.steps
        return pgd_run(model, x, y, eps=eps, norm="linf", steps=self.steps, alpha=alpha, random_start=False,
                       targeted=self.targeted, early_stop=self.early_stop, converge=self.converge, stats=self._stats)


class PGDLinf(_Iterative):
    """PGD L∞ (Madry et al. 2018) with random start and ``restarts``."""

    name, norm = "pgd", "linf"

    def core(self, model, x, y, eps, generator):
        return pgd_run(model, x, y, eps=eps, norm=self.norm, steps=self.steps, alpha=self.step_size(eps),
                       random_start=self.random_start, targeted=self.targeted, early_stop=self.early_stop,
                       generator=generator, converge=self.converge, stats=self._stats)


class PGDL2(PGDLinf):
    """PGD L2 (Madry et al. 2018): steps along the L2-normalized gradient, projection onto the L2 ball."""

    name, norm = "pgd_l2", "l2"


class MIFGSM(_Iterative):
    """MI-FGSM (Dong et al. 2018), L∞, momentum ``decay`` (default 1.0)."""

    name, norm = "mifgsm", "linf"

    def core(self, model, x, y, eps, generator):
        return mi_fgsm_run(model, x, y, eps=eps, steps=self.steps, decay=self.decay, alpha=self.step_size(eps),
                           targeted=self.targeted, early_stop=self.early_stop)
