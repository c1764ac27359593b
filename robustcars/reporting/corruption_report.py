"""The natural-corruption part of a report (``robustcars report``): each model's ``robustcars corrupt`` results —
clean accuracy, mean corruption error, CE / mCE against the reference it was run with, accuracy per corruption
(mean over severities) and per severity, its figures — and, for several models on the same images, their
accuracies per corruption side by side with the change from the first.

CE and mCE are taken from ``corruption.json`` as ``robustcars corrupt --reference`` computed them (ImageNet-C,
Hendrycks & Dietterich 2019, Sec. 3); nothing is recomputed here except means of the rows it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustcars import storage as rio
from robustcars.registry import CORRUPTIONS, EXTRA_CORRUPTIONS

#: The figures of a corruption folder copied into the report, by key.
FIGURES = {"heatmap": "corruption_heatmap.png", "examples": "corruption_examples.png",
           "families": "corruption_families.png", "change": "corruption_change.png"}


def _mean_accuracy(rows: list[dict[str, Any]], key: str) -> dict[Any, float]:
    """Mean accuracy of ``rows`` grouped by ``key`` (``corruption`` or ``severity``), in first-seen order."""
    groups: dict[Any, list[float]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r["accuracy"])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _per_corruption(name: str, acc: float, errors: dict[str, Any]) -> dict[str, Any]:
    """One corruption's line: family, mean accuracy and error over its severities, and against the reference its
    CE, relative CE and accuracy change (``None`` without a reference)."""
    family = {**CORRUPTIONS, **EXTRA_CORRUPTIONS}[name]
    against = {k: (errors.get(k) or {}).get(name) for k in ("ce", "relative_ce", "accuracy_change")}
    return {"corruption": name, "family": family, "accuracy": acc, "error": errors["mean_error"].get(name), **against}


def corruption_entry(result: dict[str, Any], slug: str, out: Path) -> dict[str, Any]:
    """One corruption result of a model for ``report.json``, its figures copied to ``out/figures/``.

    Args:
        result: a ``corruption.json`` as :func:`robustcars.reporting.results.read_corruption_result` returns it.
        slug: the model's id in the report (prefix of the copied figures' names).
    """
    folder = Path(result["dir"])
    errors = result["errors"]
    entry: dict[str, Any] = {
        "dir": str(folder), "split": result["data"]["split"], "images": result["clean"]["images"],
        "seed": result["config"].get("seed"),
        "clean_accuracy": result["clean"]["accuracy"], "clean_macro_f1": result["clean"]["macro_f1"],
        "mean_corruption_error": errors.get("mean_corruption_error"), "mce": errors.get("mce"),
        "relative_mce": errors.get("relative_mce"), "reference": result.get("reference"),
        "per_corruption": [_per_corruption(c, a, errors)
                           for c, a in _mean_accuracy(result["rows"], "corruption").items()],
        "per_severity": [{"severity": s, "accuracy": a} for s, a in _mean_accuracy(result["rows"], "severity").items()],
        "command": result.get("command", ""), "reproduce": result.get("reproduce"),
        "seconds": result.get("cost", {}).get("seconds"), "figures": {},
    }
    for key, name in FIGURES.items():
        src = folder / "figures" / name
        if src.is_file():
            dest = out / "figures" / f"{slug}_{name}"
            rio.write_bytes(dest, src.read_bytes())
            entry["figures"][key] = str(dest.relative_to(out))
    return entry


def corruption_comparison(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Models' mean accuracy per corruption side by side, the first model the baseline of the changes.

    Only results on the same images (split, number and subset seed) as the first model's are put side by side;
    ``None`` when fewer than two are.
    """
    results = [(m["name"], c) for m in models for c in m.get("corruptions", [])[:1]]
    if len(results) < 2:
        return None
    base_name, base = results[0]
    images = lambda c: (c["split"], c["images"], c["seed"])  # noqa: E731
    same = [(n, c) for n, c in results if images(c) == images(base)]
    if len(same) < 2:
        return None
    acc = [{r["corruption"]: r["accuracy"] for r in c["per_corruption"]} for _, c in same]
    names = [r["corruption"] for r in base["per_corruption"] if all(r["corruption"] in a for a in acc)]
    head = ["corruption", *[n for n, _ in same], *[f"Δ {n}" for n, _ in same[1:]]]
    rows = [["clean", *[f"{c['clean_accuracy']:.4f}" for _, c in same],
             *[f"{c['clean_accuracy'] - base['clean_accuracy']:+.4f}" for _, c in same[1:]]]]
    for name in names:
        rows.append([name, *[f"{a[name]:.4f}" for a in acc], *[f"{a[name] - acc[0][name]:+.4f}" for a in acc[1:]]])
    return {"images": base["images"], "split": base["split"], "models": [n for n, _ in same], "baseline": base_name,
            "head": head, "rows": rows}


def _f(x: Any, d: int = 4) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def corruption_sections(c: dict[str, Any]):
    """The (kind, payload) blocks of one model's corruption result, as the report's renderers take them."""
    yield "h3", f"Natural corruptions (ImageNet-C, {c['images']} {c['split']} images)"
    bench = sum(r["corruption"] in CORRUPTIONS for r in c["per_corruption"])
    sevs = ", ".join(str(r["severity"]) for r in c["per_severity"])
    summary = (f"Clean accuracy {_f(c['clean_accuracy'])}; mean corruption error {_f(c['mean_corruption_error'])} "
               f"(the mean over {bench} benchmark corruptions of the error averaged over severities {sevs})")
    if c.get("mce") is not None:
        summary += (f"; mCE {_f(c['mce'])} and relative mCE {_f(c['relative_mce'])} against the reference "
                    f"{c['reference']}")
    yield "p", summary + "."
    with_ref = c.get("mce") is not None
    head = ["corruption", "family", "accuracy (mean over severities)", "error"] + (
        ["CE", "relative CE", "accuracy change vs reference"] if with_ref else [])
    body = [[r["corruption"], r["family"], _f(r["accuracy"]), _f(r["error"])]
            + ([_f(r["ce"]), _f(r["relative_ce"]), _f(r["accuracy_change"], 4)] if with_ref else [])
            for r in c["per_corruption"]]
    yield "table", (head, body)
    yield "table", (["severity", *[str(r["severity"]) for r in c["per_severity"]]],
                    [["mean accuracy", *[_f(r["accuracy"]) for r in c["per_severity"]]]])
    for key in FIGURES:
        if key in c["figures"]:
            yield "img", c["figures"][key]


def comparison_sections(comp: dict[str, Any] | None):
    """The side-by-side table of :func:`corruption_comparison` (nothing without one)."""
    if not comp:
        return
    yield "h2", f"Natural corruptions side by side ({comp['images']} {comp['split']} images, mean over severities)"
    yield "p", f"Δ: a model's accuracy minus the first one's ({comp['baseline']}), in accuracy points of [0, 1]."
    yield "table", (comp["head"], comp["rows"])
