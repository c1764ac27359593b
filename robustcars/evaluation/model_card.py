"""``model_card.json``: one evaluation stated the way RobustBench records a model (its ``model_info`` entries):
dataset and split, number of examples, threat model and budgets, preprocessing, the attacks with their library
and version and parameters, seed, clean / robust / worst-case accuracy (float and 8-bit) and the cost in
forward+backward passes and queries per image.

Pure functions of ``attack.json`` / ``suite.json`` contents; the schema is
``robustcars/reporting/schemas/model_card.schema.json``.
Nothing in a card depends on the clock or the machine (no seconds, no dates), so a rerun of the recorded
``reproduce`` command writes the same card.
"""

from __future__ import annotations

from typing import Any

from robustcars.registry import ATTACKS, GREY_LEVEL
from robustcars.reporting.results import split_rows

CARD_NAME = "model_card.json"
CARD_SCHEMA = "robustcars-model-card/1"
_LIBRARY = {"autoattack": "pyautoattack"}  # an attack source -> the distribution its version is read from


def eps_255(eps: float) -> str:
    """An eps in [0, 1] pixel scale as grey levels: ``0.01 -> '2.55/255'``."""
    return f"{eps / GREY_LEVEL:.3g}/255"


def _threat_models(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_norm: dict[str, set[float]] = {}
    for r in rows:
        if r["attack"] != "clean":
            by_norm.setdefault(r["norm"], set()).add(r["eps"])
    return [{"norm": norm, "eps": sorted(es), "eps_255": [eps_255(e) for e in sorted(es)], "pixel_scale": "[0, 1]"}
            for norm, es in sorted(by_norm.items())]


def _attack_entry(meta: dict[str, Any], label: str) -> dict[str, Any]:
    name = meta["config"]["attack"]
    spec = ATTACKS[name]
    library = _LIBRARY.get(spec.source, spec.source)
    cost = meta.get("cost", {})
    return {"label": label, "name": name, "norm": meta["threat_model"]["norm"], "library": library,
            "version": meta.get("versions", {}).get(library), "params": meta["threat_model"].get("params", {}),
            "targeted": bool(meta["threat_model"].get("targeted")), "examples": meta["data"]["images"],
            "forward_backward_passes_per_image": cost.get("forward_backward_passes_per_image"),
            "queries_per_image": sum((cost.get("queries_per_image_by_attack") or {}).values()) or None}


def _accuracy_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"attack": r.get("label", r["attack"]), "norm": r["norm"], "eps": r["eps"], "accuracy": r["accuracy"],
             "accuracy_8bit": r.get("accuracy_8bit")} for r in rows if r["attack"] not in ("clean", "worst-case")]


def _card(meta: dict[str, Any], rows: list[dict[str, Any]], attacks: list[dict[str, Any]],
          worst: list[dict[str, Any]]) -> dict[str, Any]:
    run, data, cfg = meta["run"], meta["data"], meta["config"]
    clean = split_rows(rows)[0]
    return {
        "schema": CARD_SCHEMA,
        "model": {"name": run["arch"], "checkpoint": run.get("checkpoint"), "weights_origin": run.get("weights_origin"),
                  "epoch": run.get("epoch")},
        "dataset": {"root": data.get("root"), "layout": data.get("layout"), "split": data.get("split"),
                    "examples": clean["images"], "classes": data.get("classes"),
                    "fingerprint": data.get("fingerprint")},
        "threat_models": _threat_models(rows),
        "preprocessing": {"img_size": run.get("img_size"), "resize": run.get("resize"), "mean": run.get("mean"),
                          "std": run.get("std"), "normalization": "inside the model (attacks see [0, 1] pixels)"},
        "evaluation": {"attacks": attacks, "seed": cfg.get("seed"), "max_images": cfg.get("max_images")},
        "results": {"clean_accuracy": clean["accuracy"], "clean_accuracy_8bit": clean.get("accuracy_8bit"),
                    "robust_accuracy": _accuracy_rows(rows),
                    "worst_case": [{"norm": w["norm"], "eps": w["eps"], "accuracy": w["accuracy"],
                                    "accuracy_8bit": w.get("accuracy_8bit"), "attacks": w["attacks"]} for w in worst]},
        "robustcars_version": meta.get("versions", {}).get("robustcars"),
        "reproduce": meta.get("reproduce"),
    }


def attack_card(meta: dict[str, Any]) -> dict[str, Any]:
    """The card of one attack (``meta``: the ``attack.json`` content)."""
    name = meta["config"]["attack"]
    return _card(meta, meta["rows"], [_attack_entry(meta, name)], [])


def suite_card(summary: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The card of a suite (``summary``: the ``suite.json`` content; ``results``: label -> ``attack.json``)."""
    first = next(iter(results.values()))
    meta = {**first, "reproduce": summary.get("reproduce")}
    attacks = [_attack_entry(m, label) for label, m in results.items()]
    return _card(meta, summary["rows"], attacks, summary.get("worst_case", []))
