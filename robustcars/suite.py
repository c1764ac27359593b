"""Attack suites: TOML files in ``attacks/`` naming attacks, eps lists and parameters.

Format::

    name = "gradient"
    description = "FGSM, BIM and PGD over an L∞ eps sweep"
    max_images = 2030            # optional: a seeded subset for every attack of the suite

    [[attack]]
    name = "fgsm"                # a registered attack (robustcars.attacks.attack_names())
    eps = [0.001, 0.003, 0.01]   # in [0, 1] pixel scale; L2 budget for pgd_l2
    [[attack]]
    name = "pgd"
    eps = [0.001, 0.003, 0.01]
    steps = 10                   # any other key is an attack parameter
    restarts = 1
    label = "pgd10"              # optional: output sub-folder (default: the attack name)
    max_images = 256             # optional: per-attack subset (e.g. for slow decision-based attacks)

Everything is validated before any work starts.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .attacks import check_eps, get_attack
from .errors import ConfigError

RESERVED = {"name", "eps", "label", "max_images"}


@dataclass
class SuiteEntry:
    attack: str
    eps: list[float]
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    max_images: int | None = None


@dataclass
class Suite:
    name: str
    description: str
    entries: list[SuiteEntry]
    path: str


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file.

    Raises:
        ConfigError: missing file, TOML syntax, unknown attack, bad parameters, eps outside [0, 1],
            duplicate labels.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    items = doc.get("attack")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: no [[attack]] entries")
    entries, labels = [], set()
    for i, item in enumerate(items, 1):
        if "name" not in item or "eps" not in item:
            raise ConfigError(f"{path}: attack #{i} needs 'name' and 'eps'")
        params = {k: v for k, v in item.items() if k not in RESERVED}
        try:
            get_attack(item["name"], **params)
            eps = sorted(set(check_eps(item["eps"] if isinstance(item["eps"], list) else [item["eps"]])))
        except ConfigError as exc:
            raise ConfigError(f"{path}: attack #{i}: {exc}") from None
        label = str(item.get("label", item["name"]))
        if label in labels:
            raise ConfigError(f"{path}: label {label!r} used twice; give each entry a distinct 'label'")
        labels.add(label)
        limit = item.get("max_images", doc.get("max_images"))
        entries.append(SuiteEntry(item["name"], eps, label, params, int(limit) if limit else None))
    return Suite(str(doc.get("name", path.stem)), str(doc.get("description", "")), entries, str(path))


def suite_checks(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cross-attack checks: PGD must be no weaker than FGSM at the same eps on the same images."""
    checks = []
    by_attack: dict[str, dict[float, float]] = {}
    images: dict[str, int] = {}
    for res in results.values():
        for row in res["rows"][1:]:
            by_attack.setdefault(row["attack"], {})[row["eps"]] = row["accuracy"]
            images[row["attack"]] = row["images"]
    for strong in ("pgd", "bim", "mifgsm"):
        if strong in by_attack and "fgsm" in by_attack and images[strong] == images["fgsm"]:
            common = sorted(set(by_attack[strong]) & set(by_attack["fgsm"]))
            worse = [e for e in common if by_attack[strong][e] > by_attack["fgsm"][e] + 1e-12]
            checks.append({"name": f"{strong}_no_weaker_than_fgsm", "ok": not worse, "eps": worse,
                           "explain": f"{strong} left more images correct than FGSM at eps {worse}: too few steps, "
                                      "too small a step size, or gradient masking"})
    return checks


# minimum-norm attacks whose objective is the norm they report (EAD minimizes an elastic-net mix: left out)
_MIN_NORM_COMPARABLE = {"deepfool": "l2", "cw_l2": "l2", "hsj": "l2", "deepfool_linf": "linf"}


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
    labels = [k for k, (name, _) in norms.items() if name in _MIN_NORM_COMPARABLE]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            (na, da), (nb, db) = norms[a], norms[b]
            if _MIN_NORM_COMPARABLE[na] != _MIN_NORM_COMPARABLE[nb]:
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


def _min_norms_by_path(folder: Path) -> dict[str, float]:
    out = {}
    with open(folder / "records.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["clean_pred"] == r["label"]:
                out[r["path"]] = math.inf if r["min_norm"] is None else float(r["min_norm"])
    return out


def entry_config(base, entry: SuiteEntry, out: Path):
    """The AttackConfig of one suite entry (``base`` gives run, device, batch size, ...)."""
    return replace(base, attack=entry.attack, eps=list(entry.eps), params=dict(entry.params),
                   out=str(out / entry.label), max_images=entry.max_images or base.max_images)


def run_suite(base, suite: Suite, *, resume: bool = False, reporter=None, command: str = "") -> dict[str, Any]:
    """Run every entry of ``suite`` with :func:`robustcars.runner.run_attack` into ``base.out/<label>``
    and write ``suite.json`` / ``suite.csv`` (all rows of all attacks) beside them."""
    from . import io as rio
    from .runner import SCHEMA_VERSION, run_attack

    out = Path(base.out)
    configs = [entry_config(base, e, out) for e in suite.entries]
    for c in configs:  # validate everything before any work
        c.validate()
    results = {}
    for entry, cfg in zip(suite.entries, configs):
        results[entry.label] = run_attack(cfg, resume=resume or False, reporter=reporter, command=command)
    if not all(results.values()):  # a non-zero torchrun rank: rank 0 writes the summary
        return {}
    first = results[suite.entries[0].label]
    rows = [first["rows"][0]]  # clean row once for the images most entries share
    for label, res in results.items():
        if res["data"]["images"] != first["data"]["images"]:  # e.g. C&W on a subset: its own clean row
            rows.append({**res["rows"][0], "label": label})
        rows += [{**r, "label": label} for r in res["rows"][1:]]
    summary = {
        "schema_version": SCHEMA_VERSION, "kind": "robustcars-suite", "suite": suite.name, "command": command,
        "description": suite.description, "suite_file": suite.path, "results": {k: str(out / k / "attack.json") for k in results},
        "rows": rows, "checks": suite_checks(results) + min_norm_checks(
            {label: (res["config"]["attack"], _min_norms_by_path(out / label))
             for label, res in results.items() if "min_norms" in res})
        + [dict(c, attack=label) for label, res in results.items() for c in res["checks"]],
        "run": first["run"], "data": first["data"],
        "cost": {label: res["cost"] for label, res in results.items()},
        "min_norms": {label: res["min_norms"] for label, res in results.items() if "min_norms" in res},
    }
    rio.write_json(out / "suite.json", summary)
    rio.write_csv(out / "suite.csv", rows)
    return summary
