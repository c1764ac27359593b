"""Pure metric functions: no state, no I/O. Inputs are NumPy arrays or torch tensors on any device.

Conventions: ``logits`` float ``(N, K)``; labels/predictions int ``(N,)`` with values in ``[0, K)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import f1_score


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of ``softmax(logits)`` in nats: ``H = -sum_k p_k log p_k``.

    Args:
        logits: float ``(N, K)``.
    Returns:
        float32 ``(N,)`` in ``[0, log K]`` (computed from ``log_softmax``, so stable for large logits).
    """
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def ranks_of(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """1-based rank of given classes in each row of ``logits`` (1 = the top prediction).

    Rank = 1 + number of classes with a strictly larger logit (ties share the better rank).

    Args:
        logits: float ``(N, K)``; classes: int64 ``(N, k)``.
    Returns:
        int64 ``(N, k)`` in ``[1, K]``.
    """
    chosen = logits.gather(1, classes)  # (N, k)
    return (logits.unsqueeze(1) > chosen.unsqueeze(2)).sum(dim=2) + 1


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of ``y_pred == y_true``; NaN for empty input."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else math.nan


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` (scikit-learn).

    Classes that never occur in ``y_true`` are left out of the mean, so a subset of the test set is scored
    over its own classes; a class with no correct prediction scores 0 (``zero_division=0``).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not y_true.size:
        return math.nan
    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def attack_success_rate(y_true: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray) -> float:
    """Share of clean-correct images whose adversarial prediction is wrong (untargeted success).

    Returns NaN when no image is clean-correct.
    """
    y_true, clean_pred, adv_pred = map(np.asarray, (y_true, clean_pred, adv_pred))
    correct = clean_pred == y_true
    return float((adv_pred[correct] != y_true[correct]).mean()) if correct.any() else math.nan


def mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation; NaNs for empty input."""
    x = np.asarray(x, dtype=np.float64)
    return (float(x.mean()), float(x.std())) if x.size else (math.nan, math.nan)


def rank_shift_summary(adv_ranks: np.ndarray, top: int = 3) -> dict[str, float]:
    """Aggregate the adversarial ranks of each image's clean top-k classes.

    Args:
        adv_ranks: int ``(N, k)``: column j is the 1-based adversarial rank of the clean rank-(j+1) class.
        top: the "top-k" the clean top-1 may leave (default 3).

    Returns:
        ``top1_rank_mean``/``top1_rank_median``: adversarial rank of the clean top-1 class;
        ``top1_left_topk``: share of images whose clean top-1 is no longer in the adversarial top-k;
        ``top1_rank_max``: the largest drop seen; ``topj_rank_mean`` for every column j;
        ``topk_set_kept``: share of images whose clean top-k set equals the adversarial top-k set.
    """
    r = np.asarray(adv_ranks)
    if r.size == 0:
        return {"top1_rank_mean": math.nan, "top1_rank_median": math.nan, f"top1_left_top{top}": math.nan}
    out = {
        "top1_rank_mean": float(r[:, 0].mean()),
        "top1_rank_median": float(np.median(r[:, 0])),
        "top1_rank_max": int(r[:, 0].max()),
        f"top1_left_top{top}": float((r[:, 0] > top).mean()),
    }
    for j in range(r.shape[1]):
        out[f"top{j + 1}_rank_mean"] = float(r[:, j].mean())
    if r.shape[1] == top:
        out[f"top{top}_set_kept"] = float((r.max(axis=1) <= top).mean())
    return out


def min_norm_summary(min_norms: np.ndarray, clean_correct: np.ndarray, eps_grid: np.ndarray | None = None
                     ) -> dict[str, object]:
    """Distribution of per-image minimal adversarial norms, and robust accuracy at any eps derived from it.

    A minimum-norm attack (DeepFool, C&W, EAD, HopSkipJump) returns, for every image, the smallest perturbation
    norm it found that changes the prediction; an image is robust at budget ``eps`` iff that norm is ``> eps``
    (Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5: robust accuracy as a curve over eps).

    Args:
        min_norms: float ``(N,)``, pixel-scale norm (L2 or L∞ per attack), ``>= 0``; ``0`` for images the
            model already misclassifies, ``inf`` (or NaN) where the attack found no adversarial example.
        clean_correct: bool ``(N,)``, whether the clean prediction is correct.
        eps_grid: float ``(G,)`` budgets for the curve (default 40 log-spaced points covering the found norms).

    Returns:
        ``attacked`` (clean-correct images), ``found_rate`` (share of them with an adversarial example),
        ``median``/``q25``/``q75``/``mean_found`` over the clean-correct images (failures count as ``inf``, so the
        median is ``inf`` when the attack failed on more than half of them; NaN when none is clean-correct; the
        lower order statistic, never interpolated), and
        ``curve``: ``[[eps, robust accuracy over all N images], ...]`` — an upper bound on the true robust
        accuracy, as for every attack.
    """
    n = np.asarray(min_norms, dtype=np.float64).copy()
    ok = np.asarray(clean_correct, dtype=bool)
    if n.shape != ok.shape or n.ndim != 1:
        raise ValueError(f"min_norms {n.shape} and clean_correct {ok.shape} must be the same (N,) shape")
    n[np.isnan(n)] = np.inf
    n[~ok] = 0.0
    att = n[ok]
    fin = att[np.isfinite(att)]
    if eps_grid is None:
        pos = fin[fin > 0]
        lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (1e-4, 1.0)
        eps_grid = np.geomspace(lo / 2, hi * 2, 40)
    eps_grid = np.asarray(eps_grid, dtype=np.float64)
    curve = [[float(e), float((n > e).mean()) if n.size else math.nan] for e in eps_grid]
    if att.size == 0:
        return {"attacked": 0, "found_rate": math.nan, "median": math.nan, "q25": math.nan, "q75": math.nan,
                "mean_found": math.nan, "curve": curve}
    q25, med, q75 = (float(v) for v in np.quantile(att, [0.25, 0.5, 0.75], method="lower"))
    return {"attacked": int(att.size), "found_rate": float(fin.size / att.size), "median": med, "q25": q25,
            "q75": q75, "mean_found": float(fin.mean()) if fin.size else math.nan, "curve": curve}
