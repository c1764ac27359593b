"""Sanity checks that make a result suspicious, each with what a failure suggests (AutoAttack ``checks.py``
and ``flags_doc.md``). Pure functions over summary rows, records and attack.json contents; shared by a single
attack and by suites."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robustcars.registry import ATTACKS, GREY_LEVEL
from robustcars.reporting.results import split_rows


def sanity_checks(rows: list[dict[str, Any]], records: list[dict[str, Any]], eps: list[float], grad_zero: int | None,
                  attacked: int, norm: str = "linf") -> list[dict[str, Any]]:
    """Checks of one attack: accuracy non-increasing in eps, no attack above clean accuracy, every image inside
    its eps ball, and (FGSM) the share of all-zero input gradients."""
    checks = []
    clean, adversarial = split_rows(rows)
    accs = [r["accuracy"] for r in adversarial]
    checks.append({"name": "accuracy_non_increasing_in_eps", "ok": all(b <= a + 1e-12 for a, b in zip(accs, accs[1:])),
                   "explain": "robust accuracy rose with a larger budget: a weak attack or gradient masking"})
    checks.append({"name": "robust_not_above_clean", "ok": all(a <= clean["accuracy"] + 0.01 for a in accs),
                   "explain": "an attack raised accuracy by more than 1 point: likely a bug in the attack"})
    key = "linf" if norm == "linf" else "l2"
    inside = all(a[key] <= e * (1 + 1e-5) + 1e-6 for r in records for a, e in zip(r["adv"], eps))
    checks.append({"name": "inside_eps_ball", "ok": inside,
                   "explain": f"an adversarial image is outside the {norm} eps ball: the projection failed"})
    checks += realizability_checks(rows, eps, norm)
    if attacked and grad_zero is not None:
        share = grad_zero / attacked
        checks.append({"name": "zero_gradient_share", "ok": share < 0.01, "value": share,
                       "explain": "share of images with an all-zero input gradient; above 1% suggests saturated "
                                  "softmax or gradient masking (FGSM cannot move those images)"})
    return checks


def realizability_checks(rows: list[dict[str, Any]], eps: list[float], norm: str, margin: float = 0.01
                         ) -> list[dict[str, Any]]:
    """Whether the float numbers survive saving the images as 8-bit (rows with ``accuracy_8bit``; none for 0.2).

    * ``eps_at_least_one_grey_level`` (L∞ only): fails for every eps below 1/255 — a perturbation smaller than one
      grey level exists only in floating point; its 8-bit robust accuracy says what survives rounding.
    * ``realizable_in_8bit``: fails where the robust accuracy on the adversarial images rounded to the 8-bit grid
      differs from the float one by more than ``margin`` (1 point).
    """
    scored = [r for r in split_rows(rows)[1] if "accuracy_8bit" in r]
    if not scored:
        return []
    checks = []
    if norm == "linf":
        below = [e for e in eps if e < GREY_LEVEL * (1 - 1e-6)]
        checks.append({"name": "eps_at_least_one_grey_level", "ok": not below, "eps": below,
                       "explain": f"L∞ eps {', '.join(f'{e:g}' for e in below)} is below one 8-bit grey level (1/255 ="
                                  " 0.00392): such an example exists only in floating point; read the 8-bit robust "
                                  "accuracy for what survives saving it as an image"})
    gaps = {r["eps"]: r["accuracy_8bit"] - r["accuracy"] for r in scored}
    off = [e for e, g in gaps.items() if abs(g) > margin]
    worst = max(gaps.values(), key=abs)
    checks.append({"name": "realizable_in_8bit", "ok": not off, "value": worst, "eps": off,
                   "explain": f"rounded to the 8-bit grid, the adversarial images' accuracy differs from the float "
                              f"one by up to {100 * worst:+.1f} points (at eps {', '.join(f'{e:g}' for e in off)}): "
                              "the float robust accuracy is not what a saved image would get"})
    return checks


def _comparable(meta: dict[str, Any]) -> tuple:
    """What two attacks must share to be compared: norm, the very same images (split, subset, seed), untargeted."""
    c = meta["config"]
    return (meta["threat_model"]["norm"], c.get("split"), c.get("max_images"), c.get("seed"), meta["data"]["images"])


def _untargeted(meta: dict[str, Any]) -> bool:
    return meta["threat_model"].get("params", {}).get("target") is None


def suite_checks(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every untargeted iterative entry must be no weaker than every untargeted single-step entry (FGSM) of the
    same norm on the same images, at each shared eps. ``results`` maps entry label -> attack.json content;
    entries are keyed by label, so two entries of one attack (e.g. targeted and untargeted PGD) never mix."""
    checks = []
    kinds = {label: ATTACKS[m["config"]["attack"]].kind for label, m in results.items()}
    for strong, sm in results.items():
        if kinds[strong] != "iterative" or not _untargeted(sm):
            continue
        for weak, wm in results.items():
            if kinds[weak] != "single-step" or not _untargeted(wm) or _comparable(sm) != _comparable(wm):
                continue
            s_acc = {r["eps"]: r["accuracy"] for r in split_rows(sm["rows"])[1]}
            w_acc = {r["eps"]: r["accuracy"] for r in split_rows(wm["rows"])[1]}
            worse = [e for e in sorted(s_acc.keys() & w_acc.keys()) if s_acc[e] > w_acc[e] + 1e-12]
            checks.append({"name": f"{strong}_no_weaker_than_{weak}", "ok": not worse, "eps": worse,
                           "pair": [strong, weak],
                           "explain": f"{strong} left more images correct than {weak} at eps {worse}: too few steps, "
                                      "too small a step size, or gradient masking"})
    return checks


def min_norm_checks(norms: dict[str, tuple[str, dict[str, float]]], min_shared: int = 10, ratio: float = 1.5
                    ) -> list[dict[str, Any]]:
    """Cross-attack check for minimum-norm attacks (Carlini et al. 2019, §4: compare attacks on the same inputs).

    Args:
        norms: label -> (attack name, {image path: minimal norm of a clean-correct image, ``inf`` = not found}).
        min_shared: fewest shared images for a comparison.
        ratio: flag when the median over shared images of ``norm_a / norm_b`` exceeds this.

    Returns:
        One check per pair of attacks minimizing the same norm: ok when neither attack's minimal norms are,
        image by image, ``ratio`` times the other's — a larger factor means the weaker attack is
        under-optimized (too few steps, too large a step size, too few binary-search steps) and its robust
        accuracy overstates robustness.
    """
    checks = []
    minimized = {name: spec.minimizes for name, spec in ATTACKS.items() if spec.minimizes}  # EAD: elastic net, left out
    labels = [k for k, (name, _) in norms.items() if name in minimized]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            (na, da), (nb, db) = norms[a], norms[b]
            if minimized[na] != minimized[nb]:
                continue
            shared = [k for k in da.keys() & db.keys() if 0 < da[k] < math.inf and 0 < db[k] < math.inf]
            if len(shared) < min_shared:
                continue
            r = float(np.median([da[k] / db[k] for k in shared]))
            weak, strong, factor = (a, b, r) if r >= 1 else (b, a, 1 / r)
            checks.append({"name": "min_norm_attacks_agree", "ok": factor <= ratio, "value": factor,
                           "pair": [weak, strong], "images": len(shared),
                           "explain": f"{weak}'s minimal norms are {factor:.2f}x {strong}'s on the same {len(shared)} "
                                      f"images (median ratio): {weak} is under-optimized — more steps, a smaller "
                                      "step size or more binary-search steps"})
    return checks


def min_norms_by_path(records: list[dict[str, Any]]) -> dict[str, float]:
    """Minimal norm of each clean-correct image, keyed by its path (``inf`` where the attack failed)."""
    return {r["path"]: math.inf if r["min_norm"] is None else float(r["min_norm"])
            for r in records if r["clean_pred"] == r["label"]}


def worst_case(entries: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per norm and eps, the accuracy when an image counts as robust only if it is clean-correct and no attack of
    the suite fooled it at that eps or a smaller one (a smaller ball's adversarial example lies in the larger
    ball), over the images every entry of that norm attacked (matched by path); AutoAttack's rule.

    Args:
        entries: label -> (attack.json content, records). Targeted entries are left out.
    Returns:
        One row per norm and eps: ``attack="worst-case"``, ``accuracy``, ``images``, the entries used, and
        ``only_broken_by`` (label -> images no other entry fooled at that eps).
    """
    rows = []
    by_norm: dict[str, list[str]] = {}
    for label, (meta, _) in entries.items():
        if _untargeted(meta):
            by_norm.setdefault(meta["threat_model"]["norm"], []).append(label)
    for norm, labels in by_norm.items():
        recs = {label: {r["path"]: r for r in entries[label][1]} for label in labels}
        paths = sorted(set.intersection(*(set(r) for r in recs.values())))
        if not paths:
            continue
        all_eps = sorted({a["eps"] for label in labels for a in entries[label][1][0]["adv"]})
        for e in all_eps:
            fooled = {}
            for label in labels:
                fooled[label] = {p for p in paths if any(a["eps"] <= e and a["pred"] != recs[label][p]["label"]
                                                         for a in recs[label][p]["adv"])}
            first = recs[labels[0]]
            correct = {p for p in paths if first[p]["clean_pred"] == first[p]["label"]}
            broken = set().union(*fooled.values())
            only = {label: len((fooled[label] & correct) - set().union(*(fooled[o] for o in labels if o != label)))
                    for label in labels}
            rows.append({"attack": "worst-case", "norm": norm, "eps": e, "images": len(paths),
                         "accuracy": len(correct - broken) / len(paths), "attacks": labels, "only_broken_by": only})
            if all("clean_pred_8bit" in entries[label][1][0] for label in labels):
                rows[-1]["accuracy_8bit"] = _worst_case_8bit(recs, labels, paths, e)
    return rows


def _worst_case_8bit(recs: dict[str, dict[str, dict[str, Any]]], labels: list[str], paths: list[str], e: float
                     ) -> float:
    """The worst case on images rounded to the 8-bit grid: robust only if the rounded clean image is correct and no
    entry's rounded adversarial image at eps ``e`` or below is misclassified."""
    first = recs[labels[0]]
    robust = [p for p in paths if first[p]["clean_pred_8bit"] == first[p]["label"]
              and all(a["pred_8bit"] == recs[label][p]["label"] for label in labels
                      for a in recs[label][p]["adv"] if a["eps"] <= e)]
    return len(robust) / len(paths)


def _is_reference(meta: dict[str, Any], norm: str) -> bool:
    """AutoAttack's attacks, and minimum-norm attacks minimizing ``norm`` (DeepFool L∞ for an L∞ PGD)."""
    spec = ATTACKS[meta["config"]["attack"]]
    return _untargeted(meta) and (spec.kind == "reference" or spec.minimizes == norm)


def weaker_than_reference(results: dict[str, dict[str, Any]], margin: float = 0.01) -> list[dict[str, Any]]:
    """Own untargeted iterative attacks (PGD, BIM, MI-FGSM) against reference attacks on the same images and
    norm: AutoAttack's (Croce & Hein 2020) and minimum-norm attacks of that norm (DeepFool, C&W: an image whose
    minimal norm is at most eps is not robust at eps). Flags robust accuracy more than ``margin`` above the
    reference's at a shared eps: the own attack was too weak — too few steps, a fixed step size, or a masked
    gradient (a saturated softmax gives cross-entropy no gradient; Carlini & Wagner 2017)."""
    checks = []
    for own, om in results.items():
        spec = ATTACKS[om["config"]["attack"]]
        if spec.kind != "iterative" or spec.source != "robustcars" or not _untargeted(om):
            continue
        for ref, rm in results.items():
            if not _is_reference(rm, spec.norm) or _comparable(om) != _comparable(rm):
                continue
            o_acc = {r["eps"]: r["accuracy"] for r in split_rows(om["rows"])[1]}
            r_acc = {r["eps"]: r["accuracy"] for r in split_rows(rm["rows"])[1]}
            gaps = {e: o_acc[e] - r_acc[e] for e in sorted(o_acc.keys() & r_acc.keys())}
            if not gaps:
                continue
            worst = max(gaps.values())
            checks.append({"name": f"{own}_not_weaker_than_{ref}", "ok": worst <= margin, "value": worst,
                           "pair": [own, ref], "eps": [e for e, g in gaps.items() if g > margin],
                           "explain": f"{own} left up to {100 * worst:.1f} points more images correct than {ref} at "
                                      "the same eps: it overstates robustness (too few steps, a fixed step size, "
                                      "or a masked gradient)"})
    return checks
