"""The figures of one attack folder, drawn from its records and the images kept during the scoring pass
(:class:`robustcars.evaluation.resume.KeptImages`): nothing is attacked again, so every panel shows the very
adversarial images whose numbers are in ``records.jsonl``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from robustcars.config import AttackConfig
from robustcars.evaluation.resume import KeptImages
from robustcars.reporting.aggregate import extreme_images


def _panel_row(entry: dict[str, Any], j: int, adv_index: int) -> dict[str, Any]:
    rec = entry["record"]
    a = rec["adv"][j]
    return {"image": entry["image"].numpy(), "adv": entry["adv"][adv_index].numpy(), "label": rec["label"],
            "clean_top": list(zip(rec["clean_top3"], rec["clean_top3_prob"])),
            "adv_top": list(zip(a["top3"], a["top3_prob"])), "ranks": a["clean_top3_rank"]}


def attack_figures(records: list[dict[str, Any]], kept: KeptImages, cfg: AttackConfig, attack: str, norm: str,
                   class_names: list[str], folder: Path, min_norms: dict[str, Any] | None = None,
                   cam: tuple[Any, Any] | None = None) -> list[str]:
    """Write the minimal-norm curve (min-norm attacks), the entropy histogram, one example panel per eps, the
    panel of the most and least affected images at the largest eps, and with ``cam = (model, layer)`` the
    Grad-CAM panel of the examples at the largest eps; returns their paths."""
    from robustcars.reporting.figures import attack_panel, entropy_histograms, robustness_curves

    paths = []
    unit = "L∞" if norm == "linf" else "L2"
    if min_norms:  # robust accuracy at every eps, from the per-image minimal norms
        curve = {f"{attack} (from minimal {unit} norms)": [tuple(p) for p in min_norms["curve"]]}
        clean_acc = float(np.mean([r["clean_pred"] == r["label"] for r in records]))
        paths.append(robustness_curves(curve, folder / "min_norm_curve.png",
                                       f"{attack}: robust accuracy vs {unit} eps, {len(records)} images",
                                       {name: norm for name in curve}, {name: clean_acc for name in curve}))
    clean = np.array([r["clean_entropy"] for r in records])
    adv = {f"{attack} eps={e:g}": np.array([r["adv"][j]["entropy"] for r in records]) for j, e in enumerate(cfg.eps)}
    paths.append(entropy_histograms(clean, adv, math.log(len(class_names)), folder / "entropy_hist.png"))
    if cfg.examples == 0:
        return [str(p) for p in paths]
    examples = [kept.examples[i] for i in sorted(kept.examples)]
    if examples:
        for j, e in enumerate(cfg.eps):
            paths.append(attack_panel([_panel_row(ex, j, j) for ex in examples], class_names,
                                      f"{attack.upper()} eps = {e:g} ({unit}, pixel scale)",
                                      folder / f"panel_{attack}_eps{e:g}.png", norm))
    e_max = cfg.eps[-1]
    if examples and cam is not None:
        paths.append(_cam_panel(examples, cam, class_names, f"{attack.upper()} eps = {e_max:g}: where the model "
                                "looks, clean vs adversarial", folder / f"cam_{attack}_eps{e_max:g}.png"))
    j = len(cfg.eps) - 1
    most, least = extreme_images([e["record"] for e in kept.extremes.values()], j, kept.k)
    if most or least:
        rows = [_panel_row(kept.extremes[i], j, 0) for i in most + least]
        title = (f"{attack.upper()} eps = {cfg.eps[j]:g}: the {len(most)} most affected (top rows) and "
                 f"{len(least)} least affected images")
        paths.append(attack_panel(rows, class_names, title, folder / f"panel_{attack}_extremes_eps{cfg.eps[j]:g}.png",
                                  norm))
        if cam is not None:
            paths.append(_cam_panel([kept.extremes[i] for i in most + least], cam, class_names,
                                    f"{attack.upper()} eps = {e_max:g}: where the model looks — the {len(most)} most "
                                    f"(top rows) and {len(least)} least affected images",
                                    folder / f"cam_{attack}_extremes_eps{e_max:g}.png"))
    return [str(p) for p in paths]


def _cam_panel(examples: list[dict[str, Any]], cam: tuple[Any, Any], class_names: list[str], title: str,
               path: Path) -> Path:
    """Grad-CAM of kept images, clean (clean top-1) vs adversarial at the largest eps (its top-1); each kept
    entry's last adversarial image is the one at the largest eps."""
    import torch

    from robustcars.explain.gradcam import attention_records, overlay
    from robustcars.reporting.figures import cam_panel

    model, layer = cam
    x = torch.stack([e["image"] for e in examples])
    x_adv = torch.stack([e["adv"][-1] for e in examples])
    recs = [e["record"] for e in examples]
    stats, clean, adv = attention_records(model, layer, x, x_adv, [r["clean_top3"][0] for r in recs],
                                          [r["adv"][-1]["top3"][0] for r in recs])
    rows = []
    for e, r, s, c, a in zip(examples, recs, stats, clean, adv):
        img, im_adv, last = e["image"].numpy(), e["adv"][-1].numpy(), r["adv"][-1]
        rows.append({"image": img, "cam": overlay(img, c), "cam_map": c, "label": class_names[r["label"]],
                     "adv": im_adv, "adv_cam": overlay(im_adv, a), "adv_cam_map": a, "shift": s,
                     "top": [(class_names[k], p) for k, p in zip(r["clean_top3"], r["clean_top3_prob"])],
                     "adv_top": [(class_names[k], p) for k, p in zip(last["top3"], last["top3_prob"])]})
    return cam_panel(rows, title, path)
