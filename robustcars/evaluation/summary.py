"""Clean and per-eps metrics of an attack from its per-image records (pure; see :mod:`robustcars.metrics`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robustcars.metrics import accuracy, attack_success_rate, macro_f1, mean_std, min_norm_summary, rank_shift_summary

TOPK = 3


def summarize(records: list[dict[str, Any]], eps: list[float], attack: str, norm: str, *, num_classes: int
              ) -> dict[str, Any]:
    """Clean and per-eps metrics from per-image records (pure; see :mod:`robustcars.metrics`)."""
    y = np.array([r["label"] for r in records])
    clean_pred = np.array([r["clean_pred"] for r in records])
    clean_ent = np.array([r["clean_entropy"] for r in records])
    m, s = mean_std(clean_ent)
    clean = {"attack": "clean", "norm": "", "eps": 0.0, "images": len(y), "accuracy": accuracy(y, clean_pred),
             "macro_f1": macro_f1(y, clean_pred), "entropy_mean": m, "entropy_std": s}
    rounded = bool(records) and "clean_pred_8bit" in records[0]  # robustcars 0.2 records have no 8-bit scores
    if rounded:
        clean["accuracy_8bit"] = accuracy(y, np.array([r["clean_pred_8bit"] for r in records]))
    rows = [clean]
    for j, e in enumerate(eps):
        adv = [r["adv"][j] for r in records]
        pred = np.array([a["pred"] for a in adv])
        ent = np.array([a["entropy"] for a in adv])
        ranks = np.array([a["clean_top3_rank"] for a in adv])
        m, s = mean_std(ent)
        rows.append({
            "attack": attack, "norm": norm, "eps": e, "images": len(y),
            "accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred), "entropy_mean": m, "entropy_std": s,
            "success_rate": attack_success_rate(y, clean_pred, pred),
            **rank_shift_summary(ranks, top=TOPK),
            "linf_max": float(max(a["linf"] for a in adv)), "l2_mean": float(np.mean([a["l2"] for a in adv])),
            "l2_max": float(max(a["l2"] for a in adv)),
        })
        if rounded:
            rows[-1].update(realizability(y, adv))
        if "min_norm" in records[0]:
            found = [r["min_norm"] for r in records if r["min_norm"] is not None]
            rows[-1]["min_norm_median"] = float(np.median(found)) if found else math.nan
            rows[-1]["min_norm_found"] = len(found) / len(records)
        if "target" in records[0]:
            rows[-1]["target_hit_rate"] = float(np.mean([a["pred"] == r["target"] for a, r in zip(adv, records)]))
    out = {"clean": clean, "rows": rows, "max_entropy_nats": math.log(num_classes)}
    shifts = [r["attention"] for r in records if "attention" in r]
    if shifts:
        out["attention_shift"] = attention_summary(shifts)
    if records and "min_norm" in records[0]:
        found = np.array([math.inf if r["min_norm"] is None else r["min_norm"] for r in records])
        out["min_norms"] = {"norm": norm, **min_norm_summary(found, clean_pred == y)}
    if records and records[0]["adv"] and "fooled_by" in records[0]["adv"][0]:
        out["fooled_by"] = fooled_by_summary(records, eps)
    return out


def realizability(y: np.ndarray, adv: list[dict[str, Any]]) -> dict[str, float]:
    """The 8-bit scores of one eps: ``accuracy_8bit`` (accuracy on the adversarial images rounded to the 8-bit
    grid) and ``vanished_8bit`` (share of images whose rounded adversarial equals the rounded clean image)."""
    return {"accuracy_8bit": accuracy(y, np.array([a["pred_8bit"] for a in adv])),
            "vanished_8bit": float(np.mean([a["grey_levels_8bit"] == 0 for a in adv]))}


def fooled_by_summary(records: list[dict[str, Any]], eps: list[float]) -> list[dict[str, Any]]:
    """A cascade's breakdown per eps: how many clean-correct images each attack fooled first (its contribution:
    no attack before it in the order fooled them), and how many stayed robust."""
    out = []
    for j, e in enumerate(eps):
        counts: dict[str, int] = {}
        robust = 0
        for r in records:
            if r["clean_pred"] != r["label"]:
                continue
            label = r["adv"][j]["fooled_by"]
            if label is None:
                robust += 1
            else:
                counts[label] = counts.get(label, 0) + 1
        out.append({"eps": e, "fooled_first_by": counts, "robust": robust})
    return out


def attention_summary(shifts: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median Grad-CAM correlation (clean vs adversarial map; flat maps left out) and the mean share
    of the clean map's top-10 % pixels kept, over the images measured with ``--cam``."""
    r = np.array([s["pearson"] for s in shifts if s["pearson"] is not None], dtype=float)
    kept = np.array([s["top_kept"] for s in shifts], dtype=float)
    return {"eps": shifts[0]["eps"], "images": len(shifts), "flat_maps": len(shifts) - len(r),
            "pearson_mean": float(r.mean()) if len(r) else math.nan,
            "pearson_median": float(np.median(r)) if len(r) else math.nan,
            "top_kept_mean": float(kept.mean())}
