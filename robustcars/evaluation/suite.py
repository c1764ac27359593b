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

With ``cascade = true`` (top level) the entries run as ONE worst-case sweep in the order given — put the cheapest
first — each attacking only the images no earlier entry fooled, eps in increasing order, an image fooled at a
smaller eps keeping its example at larger ones (``reuse_eps = false`` turns that off):
:class:`robustcars.attacks.cascade.Cascade`. Its results land in ``OUT/cascade/`` with, per image and eps, the
entry that fooled it first (``fooled_by``) and the passes each entry spent. Every entry must then share one
norm and one eps list.

A ``[corruptions]`` table adds natural corruptions (``robustcars corrupt``) on the same images, after the
attacks, into ``OUT/<label>/`` (default ``corrupt``); every key is optional::

    [corruptions]
    corruptions = ["fog", "contrast"]   # default: ImageNet-C's 15
    severities = [1, 3, 5]               # default: 1-5
    extra = false                        # true adds the four held-out corruptions
    max_images = 512                     # default: the suite's
    label = "corrupt"

A ``[calibration]`` table states what a cheaper suite was measured against, so every result of it (``suite.json``
and the report) carries that statement; ``reference``, ``agreement`` and ``images`` are required::

    [calibration]
    reference = "AutoAttack standard, once per eps"   # what the suite stands in for
    agreement = 1.0            # share of images whose per-image verdict (robust or not) agreed, in [0, 1]
    images = 256               # images the agreement was measured on
    models = ["lite0 standard", "lite0 FGSM-RS"]
    robust_accuracy_gap = 0.0  # largest (this suite - reference) robust accuracy over the eps, in [0, 1]
    passes_ratio = 6.9         # reference forward+backward passes / this suite's
    source = "docs/results/fast-worst-case.md"

Everything is validated before any work starts.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustcars.errors import ConfigError, RobustcarsError
from robustcars.evaluation.checks import (
    min_norm_checks,
    min_norms_by_path,
    suite_checks,
    weaker_than_reference,
    worst_case,
)
from robustcars.evaluation.model_card import CARD_NAME, suite_card
from robustcars.registry import SUITE_KIND, attack_spec, check_eps, validate_params
from robustcars.reporting.results import split_rows

RESERVED = {"name", "eps", "label", "max_images"}
CORRUPTION_KEYS = {"corruptions", "severities", "extra", "max_images", "label"}
CALIBRATION_KEYS = {"reference": str, "agreement": float, "images": int, "models": list, "robust_accuracy_gap": float,
                    "passes_ratio": float, "source": str}
CASCADE_LABEL = "cascade"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

__all__ = ["Suite", "SuiteEntry", "load_suite", "min_norm_checks", "run_suite", "suite_checks"]


@dataclass
class SuiteEntry:
    attack: str
    eps: list[float]
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    max_images: int | None = None


@dataclass
class SuiteCorruptions:
    """A suite's ``[corruptions]`` table: what :func:`robustcars.evaluation.corruptions.run_corruptions` runs."""

    corruptions: list[str]
    severities: list[int]
    label: str = "corrupt"
    max_images: int | None = None


@dataclass
class Suite:
    name: str
    description: str
    entries: list[SuiteEntry]
    path: str
    cascade_of: list[str] = field(default_factory=list)  # the labels chained by a cascade suite, in order
    corruptions: SuiteCorruptions | None = None
    calibration: dict[str, Any] | None = None  # the suite's [calibration] table, validated


def _calibration(path: Path, item: Any) -> dict[str, Any]:
    """The validated ``[calibration]`` table (see the module docstring). Raises ConfigError."""
    where = f"{path}: [calibration]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(item) - set(CALIBRATION_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; choose from {', '.join(CALIBRATION_KEYS)}")
    missing = [k for k in ("reference", "agreement", "images") if k not in item]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}")
    for key, kind in CALIBRATION_KEYS.items():
        value = item.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = {str: isinstance(value, str) and value.strip(), list: isinstance(value, list)
              and all(isinstance(v, str) for v in value), int: isinstance(value, int) and not isinstance(value, bool)
              and value >= 1, float: number and value >= 0 and (key != "agreement" or value <= 1)}[kind]
        if key in item and not ok:
            raise ConfigError(f"{where}: {key} must be {_KIND_TEXT[kind]}, got {value!r}")
    return {k: item[k] for k in CALIBRATION_KEYS if k in item}


_KIND_TEXT = {str: "a non-empty string", list: "a list of strings", int: "an integer >= 1",
              float: "a number >= 0 (agreement: in [0, 1])"}


def _corruptions(path: Path, item: Any, default_limit: Any, labels: list[str]) -> SuiteCorruptions:
    """The validated ``[corruptions]`` table (see the module docstring). Raises ConfigError."""
    from robustcars.registry import CORRUPTIONS, EXTRA_CORRUPTIONS, check_corruptions

    where = f"{path}: [corruptions]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(item) - CORRUPTION_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; choose from {', '.join(sorted(CORRUPTION_KEYS))}")
    names = item.get("corruptions", list(CORRUPTIONS))
    severities = item.get("severities", [1, 2, 3, 4, 5])
    extra = item.get("extra", False)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ConfigError(f"{where}: corruptions must be a list of names")
    if not isinstance(severities, list) or not all(isinstance(v, int) for v in severities) or not severities:
        raise ConfigError(f"{where}: severities must be a list of integers 1-5")
    if not isinstance(extra, bool):
        raise ConfigError(f"{where}: extra must be true or false")
    names = list(dict.fromkeys(names + (list(EXTRA_CORRUPTIONS) if extra else [])))
    label, limit = item.get("label", "corrupt"), item.get("max_images", default_limit)
    try:
        check_corruptions(names, severities)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(label, str) or not _LABEL.match(label) or label in labels:
        raise ConfigError(f"{where}: label must be a folder name of letters, digits, '_', '-', '.' that no attack "
                          f"entry uses, got {label!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"{where}: max_images must be an integer >= 1, got {limit!r}")
    return SuiteCorruptions(names, sorted(set(severities)), label, limit)


def corrupt_config(base, spec: SuiteCorruptions, out: Path):
    """The CorruptConfig of a suite's ``[corruptions]`` on ``base``'s model, data, split and seed."""
    from robustcars.config import CorruptConfig

    return CorruptConfig(run=base.run, out=str(out / spec.label), corruptions=list(spec.corruptions),
                         severities=list(spec.severities), split=base.split, batch_size=base.batch_size,
                         max_images=spec.max_images or base.max_images, seed=base.seed, workers=base.workers,
                         device=base.device, data=base.data, model=base.model, checkpoint=base.checkpoint,
                         classes=base.classes, mean=base.mean, std=base.std, img_size=base.img_size,
                         resize=base.resize)


def _entry(path: Path, i: int, item: Any, default_limit: Any) -> SuiteEntry:
    where = f"{path}: attack #{i}"
    if not isinstance(item, dict) or "name" not in item or "eps" not in item:
        raise ConfigError(f"{where} needs 'name' and 'eps'")
    params = {k: v for k, v in item.items() if k not in RESERVED}
    try:
        attack_spec(item["name"])
        validate_params(item["name"], params)
        eps = sorted(set(check_eps(item["eps"])))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    label = item.get("label", item["name"])
    if not isinstance(label, str) or not _LABEL.match(label):
        raise ConfigError(f"{where}: label must be a folder name of letters, digits, '_', '-', '.', got {label!r}")
    limit = item.get("max_images", default_limit)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"{where}: max_images must be an integer >= 1, got {limit!r}")
    return SuiteEntry(item["name"], eps, label, params, limit)


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a whole suite file before anything runs.

    Raises:
        ConfigError: missing file, TOML syntax, unknown attack or parameter, a parameter of the wrong type or
            range, eps not numbers in [0, 1], a bad label or max_images, duplicate labels.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read suite file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    items = doc.get("attack")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: no [[attack]] entries")
    entries = [_entry(path, i, item, doc.get("max_images")) for i, item in enumerate(items, 1)]
    labels = [e.label for e in entries]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise ConfigError(f"{path}: label {dup!r} used twice; give each entry a distinct 'label'")
    name, description = str(doc.get("name", path.stem)), str(doc.get("description", ""))
    corrupt = (_corruptions(path, doc["corruptions"], doc.get("max_images"), labels + [CASCADE_LABEL])
               if "corruptions" in doc else None)
    calibration = _calibration(path, doc["calibration"]) if "calibration" in doc else None
    if "cascade" not in doc and "reuse_eps" not in doc:
        return Suite(name, description, entries, str(path), corruptions=corrupt, calibration=calibration)
    if not isinstance(doc.get("cascade", False), bool) or not isinstance(doc.get("reuse_eps", True), bool):
        raise ConfigError(f"{path}: cascade and reuse_eps must be true or false")
    if not doc.get("cascade", False):
        if "reuse_eps" in doc:
            raise ConfigError(f"{path}: reuse_eps goes with cascade = true")
        return Suite(name, description, entries, str(path), corruptions=corrupt, calibration=calibration)
    return Suite(name, description, [_cascade_entry(path, entries, doc.get("reuse_eps", True))], str(path),
                 [e.label for e in entries], corrupt, calibration)


def _cascade_entry(path: Path, entries: list[SuiteEntry], reuse_eps: bool) -> SuiteEntry:
    """The one ``cascade`` entry that chains a cascade suite's entries (see the module docstring)."""
    norms = {attack_spec(e.attack).norm for e in entries}
    if len(norms) > 1:
        raise ConfigError(f"{path}: a cascade chains attacks of one norm; these mix {' and '.join(sorted(norms))}")
    if len({tuple(e.eps) for e in entries}) > 1:
        raise ConfigError(f"{path}: every entry of a cascade needs the same eps list")
    if len({e.max_images for e in entries}) > 1:
        raise ConfigError(f"{path}: a cascade attacks one set of images; set max_images at the top level only")
    name = "cascade" if norms == {"linf"} else "cascade_l2"
    params = {"attacks": [{"name": e.attack, "label": e.label, **e.params} for e in entries], "reuse_eps": reuse_eps}
    try:
        validate_params(name, params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return SuiteEntry(name, list(entries[0].eps), CASCADE_LABEL, params, entries[0].max_images)


def entry_config(base, entry: SuiteEntry, out: Path):
    """The AttackConfig of one suite entry (``base`` gives run, device, batch size, ...)."""
    return replace(base, attack=entry.attack, eps=list(entry.eps), params=dict(entry.params),
                   out=str(out / entry.label), max_images=entry.max_images or base.max_images)


def _precheck_corruptions(cfg, resume: bool) -> None:
    """The ``[corruptions]`` part checked before the first attack: its options, the package, and its folder
    against the resume rules of :func:`robustcars.evaluation.runner.open_folder` (records need ``--resume``
    and the same configuration). Reads only."""
    from robustcars.evaluation.corruptions import _corrupt_fn
    from robustcars.evaluation.runner import open_folder

    try:
        cfg.validate()
        _corrupt_fn()
        open_folder(Path(cfg.out), cfg, 0, resume=resume, what="corruption", complete=lambda _: False)
    except RobustcarsError as exc:
        raise type(exc)(f"suite [corruptions]: {exc}") from None


def _precheck(configs: list, labels: list[str], resume: bool, source=None, images=None) -> None:
    """Everything that could stop the suite half-way is checked before its first attack: each entry against
    the run and data (targets, classes, folders), and the resume rules of each entry folder."""
    from robustcars.evaluation.resume import ResumeState
    from robustcars.evaluation.runner import prepare

    for label, cfg in zip(labels, configs):
        try:
            prepare(cfg, source, images)
            out = Path(cfg.out)
            records = out / "records.jsonl"
            if (records.is_file() and records.stat().st_size > 0) or any(out.glob("records.rank*.jsonl")):
                if not resume:
                    raise ConfigError(f"{out} already holds attack records; pass --resume to continue the suite "
                                      "or choose another --out")
                state = ResumeState.load(out)
                if state is None or state.fingerprint != cfg.fingerprint():
                    raise ConfigError(f"{out} holds results of a different configuration (the entry changed since "
                                      "it ran); give the changed entry a new label")
        except RobustcarsError as exc:
            raise type(exc)(f"suite entry {label!r}: {exc}") from None


def run_suite(base, suite: Suite, *, resume: bool = False, reporter=None, command: str = "", source=None,
              images=None, corruption_progress=None) -> dict[str, Any]:
    """Run every entry of ``suite`` with :func:`robustcars.evaluation.runner.run_attack` into ``base.out/<label>``
    and write ``suite.json`` / ``suite.csv`` (all rows of all attacks) beside them; then its ``[corruptions]``
    with :func:`robustcars.evaluation.corruptions.run_corruptions` (``corruption_progress`` is its progress
    callback), summarised in ``suite.json`` under ``corruptions``.

    With ``resume``, finished entries whose configuration did not change are reused as they are (not
    rewritten), interrupted ones continue, new ones run; a finished suite resumed unchanged is left byte for
    byte as it was (its ``suite.json`` is returned with ``"unchanged": True``).
    """
    from robustcars import distributed as D
    from robustcars import storage as rio
    from robustcars.evaluation.runner import SCHEMA_VERSION, run_attack
    from robustcars.lock import process_lock
    from robustcars.reporting.results import load_attack
    from robustcars.runtime import resolve_device

    out = Path(base.out)
    configs = [entry_config(base, e, out) for e in suite.entries]
    for c in configs:
        c.validate()
    _precheck(configs, [e.label for e in suite.entries], resume, source, images)
    corrupt_cfg = corrupt_config(base, suite.corruptions, out) if suite.corruptions else None
    if corrupt_cfg is not None:
        if source is not None:
            raise ConfigError("a suite with [corruptions] runs on a run folder or --model, not on a Python model")
        _precheck_corruptions(corrupt_cfg, resume)
    reproduce = base.command(suite=str(Path(suite.path).resolve()))
    d, _ = D.init(resolve_device(base.device))
    with process_lock(out, d):
        results = {}
        for entry, cfg in zip(suite.entries, configs):
            results[entry.label] = run_attack(cfg, resume=resume, reporter=reporter, command=command, source=source,
                                              images=images, reproduce=reproduce)
        if not all(results.values()):  # a non-zero torchrun rank: rank 0 writes the summary
            return {}
        corrupted = None
        if corrupt_cfg is not None:
            from robustcars.evaluation.corruptions import run_corruptions

            corrupted = run_corruptions(corrupt_cfg, resume=resume, progress=corruption_progress, command=command)
        unchanged = corrupted is None or corrupted.get("unchanged")
        if unchanged and all(r.get("unchanged") for r in results.values()) and (out / "suite.json").is_file():
            from robustcars.reporting.results import read_json_file

            return {**read_json_file(out / "suite.json", "suite summary"), "unchanged": True}
        summary = _summary(suite, results, out, (command, reproduce), SCHEMA_VERSION, load_attack)
        if corrupted is not None:
            summary["corruptions"] = {"result": str(Path(corrupt_cfg.out) / "corruption.json"),
                                      "images": corrupted["clean"]["images"], "clean": corrupted["clean"]["accuracy"],
                                      "mean_corruption_error": corrupted["errors"]["mean_corruption_error"],
                                      "reproduce": corrupted["reproduce"]}
        rio.write_json(out / CARD_NAME, suite_card(summary, results))
        rio.write_json(out / "suite.json", summary)
        rio.write_csv(out / "suite.csv", summary["rows"])
    return summary


def _summary(suite: Suite, results: dict[str, dict[str, Any]], out: Path, command: tuple[str, str], schema: int,
             load_attack) -> dict[str, Any]:
    first = results[suite.entries[0].label]
    rows = [split_rows(first["rows"])[0]]  # clean row once for the images most entries share
    for label, res in results.items():
        clean, adversarial = split_rows(res["rows"])
        if res["data"]["images"] != first["data"]["images"]:  # e.g. C&W on a subset: its own clean row
            rows.append({**clean, "label": label})
        rows += [{**r, "label": label} for r in adversarial]
    loaded = {label: load_attack(out / label) for label in results}
    min_norms = {label: (res["config"]["attack"], min_norms_by_path(loaded[label].records))
                 for label, res in results.items() if "min_norms" in res}
    worst = worst_case({label: (res, loaded[label].records) for label, res in results.items()})
    return {
        "schema_version": schema, "kind": SUITE_KIND, "suite": suite.name, "command": command[0],
        "reproduce": command[1],
        "description": suite.description, "suite_file": suite.path,
        "results": {k: str(out / k / "attack.json") for k in results},
        "rows": rows + worst,
        "worst_case": worst,
        "checks": weaker_than_reference(results) + suite_checks(results) + min_norm_checks(min_norms)
        + [dict(c, attack=label) for label, res in results.items() for c in res["checks"]],
        "run": first["run"], "data": first["data"],
        "cost": {label: res["cost"] for label, res in results.items()},
        "min_norms": {label: res["min_norms"] for label, res in results.items() if "min_norms" in res},
        "fooled_by": {label: res["fooled_by"] for label, res in results.items() if "fooled_by" in res},
        **({"calibration": suite.calibration} if suite.calibration else {}),
    }
