"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1), written here so that its targets, its budget and its stopping can be chosen.

* :func:`apgd_run` is one run of Algorithm 1: a start at ``x + eps · t / ||t||`` (``t`` uniform in [-1, 1]^d for
  L∞, Gaussian for L2), a first step of size ``2·eps``, momentum 0.75 (eq. 3: ``z = P(x_k + η ∇)``,
  ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``), and at the checkpoints ``w_j`` (the first after
  ``0.22·N_iter`` iterations, then ever shorter by ``0.03·N_iter``, at least ``0.06·N_iter``) the step size halved
  where the loss rose in at most ``rho = 75 %`` of the steps since the last checkpoint (condition 1) or where the
  step was not halved last time and the best loss has not improved since (condition 2), restarting from the best
  point. Losses: the cross-entropy (``ce``), the DLR loss (eq. 5, ``dlr``) and the targeted DLR loss (eq. 6).
  Every operation follows the reference code (``pyautoattack/autopgd_base.py`` of ``pyautoattack``; its quirks
  kept: the oscillation count of the first checkpoint compares the first loss with a not yet written zero, the
  returned example of a fooled image is its *last* fooling iterate), so with ``early_stop=False``, on the same
  images and seed, :func:`apgd` and :func:`apgd_targeted` return pyautoattack's adversarial examples
  (``tests/test_apgd.py`` compares them per image).
* What differs, each by a parameter whose default is the reference's behaviour:
  ``early_stop`` — an image leaves the batch at its first fooling iterate (the verdict cannot change: the
  reference counts an image fooled once as fooled; only its returned example and the cost differ);
  ``ranking`` — which targets APGD-T attacks: ``logit`` (AutoAttack: the highest logits after the first) or
  ``malt`` (:func:`rank_targets`); ``keep`` — the margin budget: after the first target, only that share of the
  images still standing (those closest to the boundary by their best targeted-DLR loss) gets the later targets
  (after A³, Liu et al. CVPR 2022, "online discarding"), the discarded images counted.

All inputs float32 ``(N, C, H, W)`` in [0, 1] pixel scale, labels int64 ``(N,)``; eps an L∞ or L2 budget in
pixel scale. Random starts come from a ``torch.Generator`` seeded with ``seed``, drawn in the reference's order,
so the caller's global random state is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustcars.attacks.base import Attack, AttackOutput
from robustcars.errors import ConfigError
from robustcars.registry import validate_params


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _normalize(t: torch.Tensor, norm: str) -> torch.Tensor:
    """``t / (||t|| + 1e-12)`` per image, L∞ or L2 (the reference's ``normalize``)."""
    n = t.abs().flatten(1).amax(1) if norm == "linf" else (t ** 2).flatten(1).sum(-1).sqrt()
    return t / (_view(n, t) + 1e-12)


def _project(x: torch.Tensor, z: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Onto the eps ball around ``x`` and [0, 1], written as the reference writes it (bit-identical results)."""
    if norm == "linf":
        return torch.clamp(torch.min(torch.max(z, x - eps), x + eps), 0.0, 1.0)
    d = z - x
    length = _view((d ** 2).flatten(1).sum(-1).sqrt(), d)
    return torch.clamp(x + _normalize(d, norm) * torch.min(eps * torch.ones_like(x), length), 0.0, 1.0)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020, eq. 5), per image ``(N,)``:
    ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3)`` with ``π`` the logits in decreasing order; needs ≥ 3 classes."""
    z, _ = logits.sort(dim=1)
    top_is_y = (logits.argmax(1) == y).float()
    u = torch.arange(len(y), device=y.device)
    return -(logits[u, y] - z[:, -2] * top_is_y - z[:, -1] * (1.0 - top_is_y)) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (Croce & Hein 2020, eq. 6), per image ``(N,)``:
    ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)``; needs ≥ 4 classes."""
    z, _ = logits.sort(dim=1)
    u = torch.arange(len(y), device=y.device)
    return -(logits[u, y] - logits[u, target]) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def _loss(kind: str, target: torch.Tensor | None):
    """``(logits, y, rows) -> per-image loss`` for the rows ``rows`` (a slice or an index tensor) of the batch."""
    if kind == "ce":
        return lambda logits, y, rows: nn.functional.cross_entropy(logits, y, reduction="none")
    if kind == "dlr":
        return lambda logits, y, rows: dlr_loss(logits, y)
    if kind == "dlr_targeted":
        if target is None:
            raise ValueError("the targeted DLR loss needs target classes")
        return lambda logits, y, rows: dlr_targeted_loss(logits, y, target[rows])
    raise ConfigError(f"APGD loss must be ce, dlr or dlr_targeted, got {kind!r}")


@dataclass
class RunResult:
    """One APGD run on ``N`` images: ``adv`` float32 ``(N, C, H, W)`` (the fooling iterate where ``fooled``, else
    ``x``), ``fooled`` bool ``(N,)``, ``best_loss`` float ``(N,)`` (the highest loss reached), ``passes``
    forward+backward passes summed over the images."""

    adv: torch.Tensor
    fooled: torch.Tensor
    best_loss: torch.Tensor
    passes: int


def start_noise(shape: torch.Size, norm: str, generator: torch.Generator) -> torch.Tensor:
    """The reference's random start direction: uniform in [-1, 1] (L∞) or standard normal (L2), float32, CPU."""
    if norm == "linf":
        return 2 * torch.rand(shape, generator=generator) - 1
    return torch.randn(shape, generator=generator)


class _Checkpoints:
    """The step-size schedule of Algorithm 1 (conditions 1 and 2 at the checkpoints ``w_j``), per image."""

    def __init__(self, n_iter: int, loss0: torch.Tensor, rho: float) -> None:
        self.k = max(int(0.22 * n_iter), 1)
        self.k_min, self.k_decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        self.rho, self.counter = rho, 0
        self.steps = torch.zeros(n_iter, len(loss0), device=loss0.device)
        self.best_at_check, self.reduced = loss0.clone(), torch.ones_like(loss0)

    def due(self, i: int, loss: torch.Tensor, best: torch.Tensor) -> torch.Tensor | None:
        """Record iteration ``i``'s loss; at a checkpoint return the float ``(N,)`` mask of images whose step is
        halved, else None. The count reads ``steps[i - c - 1]`` as the reference does, ``-1`` wrapping around."""
        self.steps[i] = loss
        self.counter += 1
        if self.counter != self.k:
            return None
        rises = torch.zeros(self.steps.shape[1], device=loss.device)
        for c in range(self.k):
            rises += (self.steps[i - c] > self.steps[i - c - 1]).float()
        halve = (rises <= self.k * self.rho * torch.ones_like(rises)).float()
        no_gain = (1.0 - self.reduced) * (self.best_at_check >= best).float()
        halve = torch.max(halve, no_gain)
        self.reduced, self.best_at_check = halve.clone(), best.clone()
        self.k, self.counter = max(self.k - self.k_decr, self.k_min), 0
        return halve


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, rows) -> tuple:
    """Logits, per-image loss and its input gradient at ``x[rows]`` (one forward+backward pass)."""
    xa = x[rows].detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xa)
        loss = loss_fn(logits, y[rows], rows)
        (g,) = torch.autograd.grad(loss.sum(), xa)
    return logits.detach(), loss.detach(), g.detach()


def apgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             n_iter: int = 100, loss: str = "ce", target: torch.Tensor | None = None, rho: float = 0.75,
             noise: torch.Tensor, early_stop: bool = False) -> RunResult:
    """One run of APGD (Algorithm 1, see the module docstring) at one eps.

    Args:
        x: float32 ``(N, C, H, W)`` in [0, 1]; y: int64 ``(N,)`` true labels.
        eps: L∞ or L2 (``norm``) budget in pixel scale; n_iter: iterations (``N_iter``).
        loss: ``ce``, ``dlr`` or ``dlr_targeted`` (then ``target``, int64 ``(N,)``, is the class aimed at).
        noise: float32 ``(N, C, H, W)`` start direction (:func:`start_noise`).
        early_stop: an image leaves at its first fooling iterate (``adv`` is that iterate).
    Returns:
        :class:`RunResult`; ``passes`` = ``(1 + n_iter) · N`` without early stop.
    """
    loss_fn = _loss(loss, target)
    every = slice(None)
    x_adv = (x + eps * torch.ones_like(x) * _normalize(noise.to(x.device), norm)).clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    logits, loss_now, grad = _grad(model, x_adv, y, loss_fn, every)
    passes, grad_best = len(y), grad.clone()
    robust = logits.argmax(1) == y
    loss_best = loss_now.clone()
    step = 2.0 * eps * torch.ones([len(y), *([1] * (x.dim() - 1))], device=x.device)
    x_old, schedule = x_adv.clone(), _Checkpoints(n_iter, loss_best, rho)
    active = torch.arange(len(y), device=x.device)
    for i in range(n_iter):
        with torch.no_grad():
            momentum, x_old = x_adv - x_old, x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            moved = x_adv + step * (grad.sign() if norm == "linf" else _normalize(grad, norm))
            z = _project(x, moved, eps, norm)
            z = x_adv + (z - x_adv) * a + momentum * (1 - a)
            x_adv = _project(x, z, eps, norm)
        rows = every if len(active) == len(y) else active
        sub_logits, sub_loss, sub_grad = _grad(model, x_adv, y, loss_fn, rows)
        passes += len(sub_loss)
        if rows is every:
            logits, loss_now, grad = sub_logits, sub_loss, sub_grad
        else:
            loss_now = loss_now.index_copy(0, active, sub_loss)
            grad = grad.index_copy(0, active, sub_grad)
        pred_ok = sub_logits.argmax(1) == y[rows]
        now_fooled = active[~pred_ok]
        robust[now_fooled] = False
        x_best_adv[now_fooled] = x_adv[now_fooled]
        with torch.no_grad():
            better = (loss_now > loss_best).nonzero().squeeze()
            x_best[better] = x_adv[better].clone()
            grad_best[better] = grad[better].clone()
            loss_best[better] = loss_now[better]
            halve = schedule.due(i, loss_now, loss_best)
            if halve is not None and halve.sum() > 0:
                h = (halve > 0).nonzero().squeeze()
                step[h] /= 2.0
                x_adv[h] = x_best[h].clone()
                grad[h] = grad_best[h].clone()
        if early_stop and len(now_fooled):
            active = active[robust[active]]
            if len(active) == 0:
                break
    adv = torch.where(_view(robust, x), x, x_best_adv)
    return RunResult(adv, ~robust, loss_best, passes)


@dataclass
class Budget:
    """What an attack's budget decisions saved, summed over the images: ``discarded`` images that got no later
    targets (the margin budget), ``passes_saved`` the forward+backward passes they would have cost."""

    discarded: int = 0
    passes_saved: int = 0


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", n_iter: int = 100,
         n_restarts: int = 1, loss: str = "ce", rho: float = 0.75, seed: int = 0, early_stop: bool = False
         ) -> tuple[torch.Tensor, int]:
    """Untargeted APGD (APGD-CE with ``loss="ce"``, APGD-DLR with ``"dlr"``), ``n_restarts`` runs, each on the
    images no earlier run fooled (the reference's ``APGDAttack.perturb``); clean-misclassified images are left.

    Returns:
        ``(adv, passes)``: float32 ``(N, C, H, W)`` in the eps ball (``x`` where not fooled) and the
        forward+backward passes summed over the images.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    adv, passes = x.clone(), 0
    for _ in range(n_restarts):
        idx = standing.nonzero().flatten()
        if idx.numel() == 0:
            break
        res = apgd_run(model, x[idx], y[idx], eps=eps, norm=norm, n_iter=n_iter, loss=loss, rho=rho,
                       noise=start_noise(x[idx].shape, norm, generator), early_stop=early_stop)
        passes += res.passes
        hit = idx[res.fooled]
        adv[hit], standing[hit] = res.adv[res.fooled], False
    return adv, passes


def rank_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, *, method: str = "logit",
                 candidates: int = 20, norm: str = "linf") -> tuple[torch.Tensor, int]:
    """The ``k`` target classes to attack per image, best first.

    * ``logit`` (AutoAttack): the classes with the highest clean logits after the first (``sort`` order, as
      ``APGDAttack_targeted`` picks them).
    * ``malt`` (Melamed, Yehudai & Shamir, NeurIPS 2024, "MALT Powers Up Adversarial Attacks", Alg. 1): among the
      ``candidates`` highest-logit classes ``c ≠ y``, those with the smallest linearised distance to the boundary
      between ``y`` and ``c``, ``(z_y - z_c) / ||∇_x (z_y - z_c)||_*`` with ``||·||_*`` the dual norm of the
      threat model (L1 for L∞, L2 for L2): the distance the boundary would be at if the model were linear.
      One forward+backward pass per candidate class.

    Args:
        x: float32 ``(N, C, H, W)`` in [0, 1]; y: int64 ``(N,)`` true labels; k: targets per image
            (``k <= candidates`` for ``malt``, ``k <= classes - 1`` for both).
    Returns:
        ``(targets, passes)``: int64 ``(N, k)``, and the forward+backward passes spent (summed over images).
    Raises:
        ConfigError: an unknown method, or ``k`` larger than the candidates or the classes allow.
    """
    with torch.no_grad():
        logits = model(x)
    order = logits.sort(dim=1)[1]  # ascending: -1 is the top class
    n_classes = logits.shape[1]
    if method == "logit":
        if k > n_classes - 1:
            raise ConfigError(f"{k} target classes asked of a model with {n_classes} classes")
        return torch.stack([order[:, -(j + 2)] for j in range(k)], dim=1), 0
    if method != "malt":
        raise ConfigError(f"target ranking must be logit or malt, got {method!r}")
    c = min(candidates, n_classes - 1)
    if k > c:
        raise ConfigError(f"malt ranking: {k} target classes but only {c} candidates")
    desc = order.flip(1)
    cand = torch.stack([row[row != yi][:c] for row, yi in zip(desc, y)])  # (N, c): top logits without y
    dual = 1.0 if norm == "linf" else 2.0
    scores = torch.empty(cand.shape, dtype=torch.float32, device=x.device)
    u = torch.arange(len(y), device=x.device)
    for j in range(c):
        xa = x.detach().requires_grad_(True)
        with torch.enable_grad():
            z = model(xa)
            margin = z[u, y] - z[u, cand[:, j]]
            (g,) = torch.autograd.grad(margin.sum(), xa)
        scores[:, j] = margin.detach() / (g.flatten(1).norm(p=dual, dim=1) + 1e-12)
    best = scores.argsort(dim=1)[:, :k]
    return cand.gather(1, best), c * len(y)


def apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, eps: float,
                  norm: str = "linf", n_iter: int = 100, n_restarts: int = 1, rho: float = 0.75, seed: int = 0,
                  early_stop: bool = False, keep: float = 1.0) -> tuple[torch.Tensor, int, Budget]:
    """APGD-T: APGD on the targeted DLR loss for each column of ``targets`` (int64 ``(N, K)``, best first) in turn,
    ``n_restarts`` runs each, every run on the images still standing (the reference's
    ``APGDAttack_targeted.perturb`` when ``targets`` are :func:`rank_targets`' ``logit`` ones).

    ``keep`` < 1 is the margin budget: after the first target, only the ``ceil(keep · m)`` of the ``m`` images still
    standing whose best targeted-DLR loss came closest to 0 (the boundary) are attacked with the later targets.

    Returns:
        ``(adv, passes, budget)``: float32 ``(N, C, H, W)``, forward+backward passes summed over images, and
        the :class:`Budget` of the images discarded and the passes that saved.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    adv, passes, budget = x.clone(), 0, Budget()
    closeness = torch.full((len(y),), -math.inf, device=x.device)
    for j in range(targets.shape[1]):
        if j == 1 and keep < 1.0:
            idx = standing.nonzero().flatten()
            n_keep = math.ceil(keep * len(idx))
            dropped = idx[closeness[idx].argsort(descending=True)[n_keep:]]
            standing[dropped] = False
            budget.discarded = len(dropped)
            budget.passes_saved = len(dropped) * (targets.shape[1] - 1) * n_restarts * (n_iter + 1)
        for _ in range(n_restarts):
            idx = standing.nonzero().flatten()
            if idx.numel() == 0:
                break
            res = apgd_run(model, x[idx], y[idx], eps=eps, norm=norm, n_iter=n_iter, loss="dlr_targeted",
                           target=targets[idx, j], rho=rho, noise=start_noise(x[idx].shape, norm, generator),
                           early_stop=early_stop)
            passes += res.passes
            closeness[idx] = torch.max(closeness[idx], res.best_loss)
            hit = idx[res.fooled]
            adv[hit], standing[hit] = res.adv[res.fooled], False
    return adv, passes, budget


class APGD(Attack):
    """Own APGD-CE / APGD-DLR (``apgd``): :func:`apgd` at every eps (module docstring)."""

    name, norm = "apgd", "linf"

    def __init__(self, **params: Any) -> None:
        """``params`` by the registry's names; defaults and ranges are the registry's (``robustcars attacks``).

        Raises:
            ConfigError: an unknown parameter, or a value of the wrong type or out of range.
        """
        self.params = validate_params(self.name, params)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        p, advs, spent = self.params, [], 0
        for e in eps:
            if e == 0:
                advs.append(x.clone())
                continue
            adv, n = apgd(model, x, y, eps=e, norm=self.norm, n_iter=p["n_iter"], n_restarts=p["n_restarts"],
                          loss=p["loss"], rho=p["rho"], seed=p["seed"], early_stop=p["early_stop"])
            advs.append(adv)
            spent += n
        return AttackOutput(eps=eps, adv=advs, passes=spent / len(y))


class APGDL2(APGD):
    """Own APGD L2 (``apgd_l2``)."""

    name, norm = "apgd_l2", "l2"


class APGDTargeted(APGD):
    """Own APGD-T (``apgd_targeted``) with a choice of target ranking and a margin budget: :func:`rank_targets`
    then :func:`apgd_targeted` at every eps (module docstring)."""

    name = "apgd_targeted"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        p, advs, budget = self.params, [], Budget()
        targets, ranked = rank_targets(model, x, y, p["n_target_classes"], method=p["ranking"],
                                      candidates=p["candidates"], norm=self.norm)
        spent = ranked
        for e in eps:
            if e == 0:
                advs.append(x.clone())
                continue
            adv, n, b = apgd_targeted(model, x, y, targets, eps=e, norm=self.norm, n_iter=p["n_iter"],
                                      n_restarts=p["n_restarts"], rho=p["rho"], seed=p["seed"],
                                      early_stop=p["early_stop"], keep=p["keep"])
            advs.append(adv)
            spent += n
            budget.discarded += b.discarded
            budget.passes_saved += b.passes_saved
        counters = {"discarded_images": budget.discarded, "passes_saved": budget.passes_saved,
                    "ranking_passes": ranked}
        return AttackOutput(eps=eps, adv=advs, targets=targets[:, 0], passes=spent / len(y), counters=counters)


class APGDTargetedL2(APGDTargeted):
    """Own APGD-T L2 (``apgd_targeted_l2``)."""

    name, norm = "apgd_targeted_l2", "l2"
