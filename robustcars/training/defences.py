"""Adversarial fine-tuning and knowledge distillation: the per-batch training losses, robust validation, and the
catastrophic-overfitting guard. :func:`robustcars.training.loop.fit` calls these; the attacks inside training are the
attack code of :mod:`robustcars.attacks` (one implementation of each).

* **FGSM-RS** (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020, Alg. 3): a uniform random start in
  the L∞ eps ball, one FGSM step of ``1.25·eps``, projection onto the ball and [0, 1]: :func:`pgd` with one step.
* **PGD-AT** (Madry et al., ICLR 2018): ``K`` steps of size ``2.5·eps/K`` from a uniform random start.
* **TRADES** (Zhang et al., ICML 2019, eq. 5): ``CE(f(x), y) + β·KL(f(x) ‖ f(x'))``, ``x'`` from ``K`` PGD steps
  that ascend the KL term (random start in the ball instead of the paper's ``0.001·N(0, I)``).
* **Distillation** (Hinton, Vinyals & Dean 2015): ``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y)``;
  at ``T = 100`` deployed at ``T = 1`` it is *defensive distillation* (Papernot et al., IEEE S&P 2016), which
  masks gradients rather than adding robustness (Carlini & Wagner 2017).

BatchNorm: adversarial examples are generated with the model in **eval mode** (as in the TRADES reference code):
the attack then ascends the loss of the very function that is evaluated, and BatchNorm statistics are updated
only by the training forward pass, never by attack iterates. The model's train mode (frozen children kept in
eval) is restored before the training forward. Every random start comes from a generator seeded by
``(seed, epoch, batch)``, so a resumed run repeats the same examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from robustcars.attacks.base import frozen_weights
from robustcars.attacks.iterative import pgd
from robustcars.models.zoo import set_train_mode

BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def warmup_eps(eps: float, epoch: int, progress: float, warmup: float) -> float:
    """The training eps at ``epoch`` (1-based) and ``progress`` in [0, 1) through it: linear from 0 to ``eps``
    over the first ``warmup`` epochs (Wong et al. 2020 and Rice et al. 2020 ramp eps the same way), then ``eps``."""
    if warmup <= 0:
        return eps
    return eps * min(1.0, (epoch - 1 + progress) / warmup)


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """A CPU generator for one batch's random starts, the same on a resumed run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + batch)


def kl_sum(logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """``Σ_i KL(p_clean_i ‖ softmax(logits_i))`` in nats: the quantity TRADES' inner attack ascends."""
    return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                criterion: nn.Module | None = None) -> torch.Tensor:
    """TRADES' training loss (Zhang et al. 2019, eq. 5): ``CE(f(x), y) + β · mean_i KL(f(x)_i ‖ f(x')_i)``.

    Args:
        logits_clean, logits_adv: float ``(N, K)``; y: int64 ``(N,)``; beta: weight of the robust term (paper: 6).
        criterion: the natural loss (default plain cross-entropy; training passes its label-smoothed one).
    Returns:
        a scalar tensor (the KL term is averaged over the batch, as the reference code's ``(1/N)·KLDiv(sum)``).
    """
    natural = (criterion or nn.CrossEntropyLoss())(logits_clean, y)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return natural + beta * robust


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
                      alpha: float, criterion: nn.Module | None = None, *, defensive: bool = False) -> torch.Tensor:
    """Hinton et al. (2015): ``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y)`` (KL averaged over the
    batch; ``T²`` keeps the soft term's gradient scale independent of ``T``); minimized at ``s = t`` (+ a
    constant per image). Logits float ``(N, K)``.

    ``defensive`` (Papernot et al. 2016): the targets are the teacher's own probabilities ``softmax(t)`` while the
    student's softmax runs at ``T`` — what distilling at ``T`` from a teacher trained at ``T`` amounts to — so
    the soft term ``α·KL(softmax(t) ‖ softmax(s/T))`` is minimized at ``s = T·t``: deployed at ``T = 1`` the
    student's logits are ``T`` times larger and its softmax saturates (the masked gradient)."""
    if defensive:
        target, scale = F.softmax(teacher, dim=1), 1.0
    else:
        target, scale = F.softmax(teacher / temperature, dim=1), temperature ** 2
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), target, reduction="batchmean") * scale
    hard = (criterion or nn.CrossEntropyLoss())(student, y)
    return alpha * soft + (1 - alpha) * hard


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps: float, steps: int,
                         generator: torch.Generator, frozen: Sequence[str] = (), *, fgsm_step: float = 1.25,
                         random_start: bool = True) -> torch.Tensor:
    """Training-time adversarial examples in [0, 1], L∞ ``eps`` (eval mode; see the module docstring).

    ``method``: ``fgsm-rs`` (one step of ``fgsm_step·eps`` — 1.25 in the paper; ``random_start=False`` with
    ``fgsm_step=1`` is plain FGSM training), ``pgd`` (``steps`` steps of ``2.5·eps/steps``) or ``trades`` (the
    same PGD on the KL term). The weights' ``requires_grad``, ``.grad`` and buffers are left as they were; the
    model is back in train mode (frozen children in eval) on return.
    """
    inner = getattr(model, "module", model)
    inner.eval()
    try:
        with frozen_weights(inner):
            if eps == 0:
                return x.clone()
            if method == "fgsm-rs":
                return pgd(inner, x, y, eps=eps, steps=1, alpha=fgsm_step * eps, random_start=random_start,
                           generator=generator)
            if method == "pgd":
                return pgd(inner, x, y, eps=eps, steps=steps, generator=generator)
            if method == "trades":
                with torch.no_grad():
                    p_clean = F.softmax(inner(x), dim=1)
                return pgd(inner, x, p_clean, eps=eps, steps=steps, generator=generator, loss_fn=kl_sum)
            raise ValueError(f"unknown adversarial training method {method!r}")
    finally:
        set_train_mode(model, frozen)


def adversarial_batch_loss(method: str, eps_of_batch: Callable[[int], float], steps: int, beta: float, seed: int,
                           epoch: int, criterion: nn.Module, frozen: Sequence[str] = ()) -> BatchLoss:
    """The loss of one training batch for ``method``: returns ``(loss, logits)`` where ``logits`` are those of the
    adversarial examples (FGSM-RS, PGD-AT: the training accuracy is then the robust one) or of the clean images
    (TRADES)."""
    def loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = adversarial_examples(net, x, y, method, eps_of_batch(batch), steps, batch_generator(seed, epoch, batch),
                                     frozen)
        if method == "trades":
            logits = net(x)
            return trades_loss(logits, net(x_adv), y, beta, criterion), logits
        logits = net(x_adv)
        return criterion(logits, y), logits
    return loss


def distill_batch_loss(teacher: nn.Module, temperature: float, alpha: float, criterion: nn.Module,
                       size: int | None = None, defensive: bool = False) -> BatchLoss:
    """The distillation loss of one batch; the teacher (eval mode, no gradients) sees the student's images,
    resized to its own ``size`` when that differs."""
    def loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            xt = x if size is None or x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear",
                                                                               antialias=True, align_corners=False)
            t_logits = teacher(xt)
        logits = net(x)
        return distillation_loss(logits, t_logits, y, temperature, alpha, criterion, defensive=defensive), logits
    return loss


def robust_accuracy(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], eps: float,
                    steps: int = 10, seed: int = 0) -> float:
    """PGD-``steps`` robust accuracy (L∞ ``eps``, Madry's step ``2.5·eps/steps``, seeded random start) over
    ``batches`` of ``(x in [0, 1], y)``, in eval mode; the model's mode, grads and buffers are restored."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with frozen_weights(model):
            for i, (x, y) in enumerate(batches):
                x_adv = pgd(model, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(seed + i))
                with torch.no_grad():
                    correct += int((model(x_adv).argmax(1) == y).sum())
                total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def collapsed(previous: float | None, now: float, drop: float = 0.2) -> bool:
    """Catastrophic overfitting (Wong et al. 2020, Sec. 5.3): PGD accuracy on the held batch fell by more than
    ``drop`` (absolute) since the previous check."""
    return previous is not None and previous - now > drop


def describe(cfg: Any) -> dict[str, Any] | None:
    """The adversarial / distillation settings of a TrainConfig, as recorded in checkpoints and reports."""
    if getattr(cfg, "adversarial", None):
        out = {"method": cfg.adversarial, "eps": cfg.train_eps, "norm": "linf", "eps_warmup_epochs": cfg.eps_warmup,
               "examples_generated_in": "eval mode", "selection": f"PGD-{cfg.robust_val_steps} robust accuracy on "
               f"{cfg.robust_val_images or 'all'} validation images"}
        if cfg.adversarial != "fgsm-rs":
            out["steps"] = cfg.train_steps
        if cfg.adversarial == "trades":
            out["beta"] = cfg.trades_beta
        return out
    if getattr(cfg, "distill_from", None):
        return {"method": "defensive distillation" if cfg.defensive else "distillation", "teacher": cfg.distill_from,
                "temperature": cfg.temperature, "alpha": cfg.alpha}
    return None
