"""``robustcars report``: a self-contained robustness report from train and attack results.

Reads run folders (``best.pt``, ``metrics.json``, ``history.csv``, and every ``attack-*/`` and ``suite-*/``
inside), attack folders (``attack.json`` + ``records.jsonl``), suite folders (``suite.json``) and corruption
folders of ``robustcars corrupt`` (``corruption.json``; a run's ``corrupt/`` is found on its own). Nothing is
re-computed on images: every number comes from those files. Writes::

    OUT/report.json   every number, schema-versioned      OUT/index.html  one static page (offline)
    OUT/report.md     the same for reading in a repository OUT/figures/*.png
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from robustcars import storage as rio
from robustcars.console import attack_rows, fmt
from robustcars.errors import ConfigError, DataError, StorageError
from robustcars.lock import file_lock
from robustcars.registry import NORMS
from robustcars.reporting.aggregate import confusion, flips, group_robustness, make_of, top1_rank_distribution
from robustcars.reporting.corruption_report import (
    comparison_sections,
    corruption_comparison,
    corruption_entry,
    corruption_sections,
)
from robustcars.reporting.results import (
    CORRUPTION_RESULT,
    AttackResult,
    attack_dirs,
    load_attack,
    read_corruption_result,
    read_json_file,
    read_suite_result,
    split_rows,
)
from robustcars.runtime import library_versions
from robustcars.version import __version__

REPORT_SCHEMA_VERSION = 1


@dataclass
class ModelResults:
    """One trained model and every attack result found for it."""

    key: str
    run_dir: Path | None
    checkpoint: Path | None  # None: a model given as a Python object (robustcars.evaluate)
    attacks: list[AttackResult] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    suites: list[dict[str, Any]] = field(default_factory=list)  # suite.json contents (worst case, suite checks)
    corruptions: list[dict[str, Any]] = field(default_factory=list)  # corruption.json contents (robustcars corrupt)


def read_run_history(path: Path) -> list[dict[str, float]]:
    """A run's ``history.csv`` (:func:`robustcars.storage.read_history`); DataError when it cannot be read."""
    try:
        return rio.read_history(path)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _classify(paths: list[Path]) -> tuple[list[Path], list[Path], list[Path], dict[Path, Path], list[Path]]:
    """``(attack folders, run folders, suite folders, attack folder -> the run it was found in, corruption
    folders)`` of the inputs.

    Raises:
        DataError: a path that is none of these.
    """
    found: list[Path] = []
    runs: list[Path] = []
    suite_dirs: list[Path] = []
    owner: dict[Path, Path] = {}  # attack folder -> the run folder it was found in
    corrupted: list[Path] = []
    for p in map(Path, paths):
        if (p / CORRUPTION_RESULT).is_file():
            corrupted.append(p)
        elif (p / "attack.json").is_file() or (p / "records.jsonl").is_file():
            found.append(p)
        elif (p / "suite.json").is_file():
            found += attack_dirs(p)
            suite_dirs.append(p)
        elif (p / "best.pt").is_file():
            runs.append(p)
            inner = attack_dirs(p)
            found += inner
            owner.update({d.resolve(): p for d in inner})
            suite_dirs += sorted(q.parent for q in p.glob("*/suite.json"))
            corrupted += sorted(q.parent for q in p.glob(f"*/{CORRUPTION_RESULT}"))
        else:
            raise DataError(f"{p} is not a run folder (best.pt), an attack folder (attack.json), a suite "
                            f"(suite.json) or a corruption folder ({CORRUPTION_RESULT})")
    corrupted += [q.parent for d in suite_dirs for q in sorted(d.glob(f"*/{CORRUPTION_RESULT}"))]  # [corruptions]
    return found, runs, suite_dirs, owner, corrupted


def collect(paths: list[Path]) -> list[ModelResults]:
    """Read and check every result under the given run / attack / suite folders, grouped by model checkpoint.

    Nothing is written here: a damaged or incomplete result stops the report before its folder is touched.

    Raises:
        DataError: a path that is none of these, or a result that is damaged or incomplete (the message
            names the file and what to do).
    """
    found, runs, suite_dirs, owner, corrupted = _classify(paths)
    models: dict[str, ModelResults] = {}
    for r in runs:
        key = str((r / "best.pt").resolve())
        models.setdefault(key, ModelResults(key, r, r / "best.pt"))
    seen = set()
    for d in found:
        if d.resolve() in seen:
            continue
        seen.add(d.resolve())
        res = load_attack(d)
        key, ckpt, run_dir = _model_key(res.meta["run"])
        run = owner.get(d.resolve())
        if run is not None and ckpt is not None and key != str((run / "best.pt").resolve()):
            raise DataError(f"{d} lies in run {run} but holds results of another model ({ckpt}); move it to its "
                            "own run or report it on its own")
        models.setdefault(key, ModelResults(key, run_dir, ckpt)).attacks.append(res)
    for d in dict.fromkeys(c.resolve() for c in corrupted):  # natural corruptions go with their model
        result = read_corruption_result(d)
        key, ckpt, run_dir = _model_key(result["run"])
        models.setdefault(key, ModelResults(key, run_dir, ckpt)).corruptions.append(result)
    for m in models.values():
        if m.run_dir is not None:
            if (m.run_dir / "metrics.json").is_file():
                m.metrics = read_json_file(m.run_dir / "metrics.json", "run metrics")
            if (m.run_dir / "config.json").is_file():
                m.config = read_json_file(m.run_dir / "config.json", "run config")
            if (m.run_dir / "history.csv").is_file():
                m.history = read_run_history(m.run_dir / "history.csv")
        if not m.config and m.attacks:
            m.config = m.attacks[0].meta["run"].get("train_config", {})
    for d in suite_dirs:  # suite-level results (worst-case rows, cross-attack checks) go with their model
        suite = read_suite_result(d)
        info = suite.get("run", {})
        key = (str(Path(info["checkpoint"]).resolve()) if info.get("checkpoint")
               else f"model:{info.get('arch')}:{info.get('weights_origin')}")
        if key in models:
            models[key].suites.append({**suite, "_dir": str(d)})
    _check_one_class_set(list(models.values()))
    return list(models.values())


def _model_key(info: dict[str, Any]) -> tuple[str, Path | None, Path | None]:
    """``(key, checkpoint, run folder)`` of the model a result's ``run`` entry names: its checkpoint's path, or
    for a model handed over as a Python object (or a ``--model`` spec without one) its arch and weights."""
    if info.get("checkpoint"):
        ckpt = Path(info["checkpoint"])
        return str(ckpt.resolve()), ckpt, ckpt.parent if (ckpt.parent / "metrics.json").exists() else None
    return f"model:{info.get('arch')}:{info.get('weights_origin')}", None, None


def _check_one_class_set(models: list[ModelResults]) -> None:
    """Results of different class sets (another dataset, another class order) are not put in one report.

    Raises:
        DataError: two models with different class names (the message names both).
    """
    seen: dict[tuple[str, ...], str] = {}
    for m in models:
        names = _class_names(m) or (m.config.get("class_names") if m.config else None)
        if names is None and m.checkpoint is not None and m.checkpoint.is_file():
            from robustcars.models.checkpoint import read_checkpoint

            names = read_checkpoint(m.checkpoint)["class_names"]
        if names is None:
            continue
        where = str(m.run_dir or m.checkpoint or m.key)
        seen.setdefault(tuple(names), where)
        if len(seen) > 1:
            (a, wa), (b, wb) = list(seen.items())[:2]
            raise DataError(f"{wa} ({len(a)} classes) and {wb} ({len(b)} classes) were evaluated on different class "
                            "sets (another dataset or class order); report them separately")


def sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(root: str, seed: int = 0) -> dict[str, Any]:
    """For a run without attacks: :func:`robustcars.data.cars.fingerprint` of its data root (files listed,
    none read)."""
    from robustcars.data.cars import fingerprint, load_cars

    try:
        return fingerprint(load_cars(root, seed=seed))
    except DataError as exc:
        return {"root": root, "available": False, "reason": str(exc)}


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _focus_eps_index(eps: list[float], near: float = 0.01) -> int:
    """The eps used for per-class analyses: the one closest to ``near`` (log scale)."""
    return int(np.argmin([abs(math.log(max(e, 1e-9)) - math.log(near)) for e in eps]))


def _label(attack: AttackResult) -> str:
    d = attack.dir.name
    return attack.attack if d.startswith("attack-") else d


def _class_names(m: ModelResults) -> list[str] | None:
    """From attack.json (schema 2); results of schema 1 fall back to the checkpoint."""
    for a in m.attacks:
        if a.class_names:
            return a.class_names
    if m.attacks and m.checkpoint is not None and m.checkpoint.is_file():
        from robustcars.models.checkpoint import read_checkpoint

        return read_checkpoint(m.checkpoint)["class_names"]
    return None


def model_name(m: ModelResults) -> str:
    c = m.config or (m.attacks[0].meta["run"] if m.attacks else {})
    frozen = f", freeze {c.get('freeze')}" if c.get("freeze") else ""
    weights = c.get("weights", c.get("weights_origin", "?"))
    if c.get("adversarial"):
        frozen += f", {c['adversarial']} eps {c.get('train_eps'):g}"
    elif c.get("distill_from"):
        frozen += f", {'defensive ' if c.get('defensive') else ''}distilled T={c.get('temperature'):g}"
    return f"{c.get('arch', '?')} ({weights}{frozen}, {c.get('img_size', '?')} px)"


PANELS = ("all", "extremes", "none")


def build_report(paths: list[Path], out: Path, *, title: str = "robustcars robustness report", command: str = "",
                 panels: str = "all") -> dict[str, Any]:
    """Write the report folder and return ``report.json``'s content.

    Every input is read and checked first; the report is then built in a temporary folder beside ``out`` and
    moved into place at the end, so a failure leaves no half-written report (and an earlier report at
    ``out`` stays as it was). ``out`` may be a new folder or an earlier report; any other existing folder is
    refused rather than replaced.

    Args:
        panels: which example panels of the attack folders to copy: ``all``, ``extremes`` (only the most and
            least affected images at the largest eps) or ``none`` (each panel PNG is ~1.3 MB).
    Raises:
        DataError: no run or attack result in ``paths``, or a damaged or incomplete one; ConfigError: unknown
            ``panels``, ``out`` is a file or a folder that is not a report, or another process writes it;
            StorageError: the report cannot be written.
    """
    if panels not in PANELS:
        raise ConfigError(f"panels must be one of {', '.join(PANELS)}, got {panels!r}")
    out = Path(out)
    check_report_out(out)  # before reading the inputs
    models = collect(paths)
    if not models:
        raise DataError("no runs or attack results found in the given paths")
    return write_report_folder(out, lambda tmp: _write_report(models, tmp, title=title, command=command,
                                                              panels=panels))


def check_report_out(out: Path) -> None:
    """Raises ConfigError when ``out`` exists and is neither an empty folder nor a report folder."""
    if out.exists() and not (out.is_dir() and ((out / "report.json").is_file() or not any(out.iterdir()))):
        raise ConfigError(f"--out {out} exists and is not a robustcars report folder; choose another --out")


def write_report_folder(out: Path, write: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run ``write(tmp)`` on a temporary folder beside ``out``, under ``out``'s lock, then move it into place
    (an earlier report at ``out`` is replaced only once the new one is complete); returns what ``write`` returns.

    Raises:
        ConfigError: ``out`` exists and is not a report folder, or another process writes it; StorageError:
            the report cannot be written.
    """
    out = Path(out)
    check_report_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None
    with file_lock(out.parent / f".{out.name}.robustcars.lock", what=str(out)):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        except OSError as exc:
            raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None
        try:
            report = write(tmp)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``: the old report is moved aside first and removed only once the new one is in."""
    old = None
    try:
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}; the previous report is kept") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_report(models: list[ModelResults], out: Path, *, title: str, command: str, panels: str) -> dict[str, Any]:
    from robustcars.reporting import figures as F

    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION, "kind": "robustcars-report", "title": title,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "reproducibility": {"report_command": command, "robustcars_version": __version__, "git_commit": git_commit(),
                            "versions": library_versions()},
        "models": [],
    }
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    names = unique_names(models)
    for i, m in enumerate(models):
        entry, model_curves = _model_entry(m, f"m{i + 1}", out, panels, names[i])
        if model_curves:
            curves[entry["name"]] = model_curves
        report["models"].append(entry)
    if len(curves) > 1:  # two or more models with attack results (not only corruptions)
        overlay = {f"{name} · {label}": pts for name, mc in curves.items() for label, pts in mc.items()}
        norms: dict[str, str] = {}
        clean: dict[str, float] = {}
        for entry in report["models"]:
            n, c = _curve_keys(entry["attacks"], f"{entry['name']} · ")
            norms.update(n)
            clean.update(c)
        report["comparison_figure"] = _rel(F.robustness_curves(overlay, out / "figures" / "comparison_robustness.png",
                                                               "Robust accuracy vs eps, all models", norms, clean), out)
    report["comparison"] = comparison_rows(report["models"])
    report["transfer"] = transfer_matrix(report["models"])
    if report["transfer"]:
        report["transfer_figure"] = _rel(F.transfer_heatmap(report["transfer"], out / "figures" / "transfer.png"), out)
    report["defence_comparison"] = defence_comparison(report["models"])
    report["corruption_comparison"] = corruption_comparison(report["models"])
    suite_failed = [{"model": m["name"], "attack": f"suite {su['suite']}", **c} for m in report["models"]
                    for su in m["suites"] for c in su["checks"] if not c["ok"]]
    report["failed_checks"] = suite_failed + [{"model": m["name"], "attack": a["label"], **c}
                                              for m in report["models"] for a in m["attacks"] for c in a["checks"]
                                              if not c["ok"]]
    rio.write_json(out / "report.json", report)
    rio.write_text(out / "report.md", render_markdown(report))
    rio.write_text(out / "index.html", render_html(report))
    return report


def _rel(path: Path | str, out: Path) -> str:
    return str(Path(path).relative_to(out))


def unique_names(models: list[ModelResults]) -> list[str]:
    """Display names of the models, made distinct: a name two models share gets each one's run folder (or
    checkpoint, or its position) in brackets, so no model's curves or rows overwrite another's."""
    names = [model_name(m) for m in models]
    out = []
    for i, (m, name) in enumerate(zip(models, names)):
        if names.count(name) > 1:
            where = m.run_dir.name if m.run_dir else m.checkpoint.name if m.checkpoint else f"#{i + 1}"
            name = f"{name} [{where}]"
        out.append(name)
    if len(set(out)) < len(out):  # run folders of the same name in different places
        out = [f"{n} #{i + 1}" for i, n in enumerate(out)]
    return out


def _model_entry(m: ModelResults, slug: str, out: Path, panels: str, name: str
                 ) -> tuple[dict[str, Any], dict[str, list[tuple[float, float]]]]:
    """One model's section (``name``: its distinct display name): metrics, learning curves, confusion matrix and
    every attack."""
    from robustcars.reporting import figures as F

    figdir = out / "figures"
    entry: dict[str, Any] = {
        "id": slug, "name": name, "checkpoint": str(m.checkpoint) if m.checkpoint else None,
        "checkpoint_sha256": sha256_file(m.checkpoint) if m.checkpoint else None,
        "config": m.config, "metrics": m.metrics, "commands": m.metrics.get("commands", []),
        "reproduce": m.metrics.get("reproduce"), "figures": {},
        "attacks": [],
    }
    fingerprints = [a.meta["data"]["fingerprint"] for a in m.attacks if "fingerprint" in a.meta["data"]]
    if fingerprints:
        entry["dataset"] = fingerprints[0]
    elif m.config.get("data"):
        entry["dataset"] = dataset_fingerprint(m.config["data"], seed=m.config.get("seed", 0))
    if m.history:
        entry["history"] = m.history
        curves_png = F.learning_curves(m.history, figdir / f"{slug}_learning_curves.png")
        entry["figures"]["learning_curves"] = _rel(curves_png, out)
    class_names = _class_names(m)
    entry["suites"] = [{"suite": su.get("suite"), "dir": su["_dir"], "worst_case": su.get("worst_case", []),
                        "checks": [c for c in su.get("checks", []) if "attack" not in c],
                        **({"calibration": su["calibration"]} if su.get("calibration") else {})} for su in m.suites]
    model_curves: dict[str, list[tuple[float, float]]] = {}
    used: set[str] = set()
    for a in m.attacks:
        label = _label(a)
        if label in used:  # e.g. attack-fgsm/ and suite-gradient/fgsm/ of the same model
            label = f"{a.dir.parent.name}-{label}"
        used.add(label)
        att = _attack_entry(a, label, slug, class_names, out, panels)
        model_curves[label] = [(r["eps"], r["accuracy"]) for r in split_rows(att["rows"])[1]]
        entry["attacks"].append(att)
    entry["corruptions"] = [corruption_entry(c, f"{slug}_c{j + 1}", out) for j, c in enumerate(m.corruptions)]
    if model_curves:
        norms, clean = _curve_keys(entry["attacks"])
        entry["figures"]["robustness_curves"] = _rel(F.robustness_curves(
            model_curves, figdir / f"{slug}_robustness.png", f"{entry['name']}: robust accuracy vs eps", norms,
            clean), out)
    # the attack over the most images carries the clean predictions used for the confusion matrix
    biggest = max(m.attacks, key=lambda a: a.images, default=None)
    if biggest is not None and class_names:
        entry["figures"]["confusion"] = _rel(_confusion_pair(biggest, entry["name"], class_names,
                                                             figdir / f"{slug}_confusion.png"), out)
    return entry, model_curves


def _confusion_pair(a: AttackResult, name: str, class_names: list[str], path: Path) -> Path:
    """The clean confusion matrix of ``a``'s images beside the one of its adversarial predictions at its focus
    eps (where do attacked cars go: the same make?)."""
    from robustcars.reporting import figures as F

    fi = _focus_eps_index(a.eps)
    k = len(class_names)
    moved = flips(a.records, class_names, fi)
    share = moved["same_make_share"]
    within = f"{share:.0%} of its {moved['fooled']} flips stay within the make" if moved["fooled"] else "no flips"
    return F.confusion_heatmap(
        [(f"{name}: clean, {a.images} images", confusion(a.records, k)),
         (f"{_label(a)} at {NORMS.get(a.norm, a.norm)} eps {a.eps[fi]:g}: {within}", confusion(a.records, k, fi))],
        path, makes=[make_of(c) for c in class_names])


def _curve_keys(attacks: list[dict[str, Any]], prefix: str = "") -> tuple[dict[str, str], dict[str, float]]:
    """Per robustness curve (``prefix`` + attack label): its norm and the clean accuracy of its images."""
    return ({prefix + a["label"]: a["norm"] for a in attacks},
            {prefix + a["label"]: split_rows(a["rows"])[0]["accuracy"] for a in attacks})


def _attack_entry(a: AttackResult, label: str, slug: str, class_names: list[str] | None, out: Path, panels: str
                  ) -> dict[str, Any]:
    from robustcars.reporting import figures as F

    figdir = out / "figures"
    recs, meta, eps = a.records, a.meta, a.eps
    att = {"label": label, "attack": a.attack, "norm": a.norm, "images": a.images, "split": meta["data"]["split"],
           "command": meta.get("command", ""), "reproduce": meta.get("reproduce"),
           "params": meta["threat_model"].get("params", {}), "rows": meta["rows"],
           "checks": meta.get("checks", []), "cost": meta.get("cost", {}), "dir": str(a.dir), "figures": {}}
    fi = _focus_eps_index(eps)
    att["focus_eps"] = eps[fi]
    att["image_set"] = image_set_id(recs)
    att["top1_rank"] = {str(e): top1_rank_distribution(recs, j) for j, e in enumerate(eps)}
    att["figures"]["rank_hist"] = _rel(F.rank_histogram(att["top1_rank"], figdir / f"{slug}_{label}_ranks.png",
                                                        f"{label}: adversarial rank of the clean top-1"), out)
    clean_ent = np.array([r["clean_entropy"] for r in recs])
    adv_ent = {f"eps={e:g}": np.array([r["adv"][j]["entropy"] for r in recs]) for j, e in enumerate(eps)}
    n_classes = len(class_names) if class_names else max(r["label"] for r in recs) + 1
    att["figures"]["entropy_hist"] = _rel(F.entropy_histograms(
        clean_ent, adv_ent, math.log(n_classes), figdir / f"{slug}_{label}_entropy.png"), out)
    if class_names:
        per_class = group_robustness(recs, class_names, fi)
        robust_first = sorted(per_class, key=lambda r: (-r["robust_acc"], -r["images"], r["group"]))
        att["per_class"] = {"most_fragile": per_class[:10], "most_robust": robust_first[:10]}
        att["per_make"] = group_robustness(recs, [make_of(n) for n in class_names], fi)
        att["flips"] = flips(recs, class_names, fi)
    att["figures"]["panels"] = []
    for p in meta.get("figures", []):
        p = a.dir / p
        wanted = panels == "all" or (panels == "extremes" and "_extremes_" in p.name)
        if "panel_" in p.name and wanted and p.is_file():
            dest = figdir / f"{slug}_{label}_{p.name}"
            rio.write_bytes(dest, p.read_bytes())
            att["figures"]["panels"].append(_rel(dest, out))
        elif p.name.startswith("cam_") and p.is_file():  # Grad-CAM panels (attack --cam): examples, extremes
            dest = figdir / f"{slug}_{label}_{p.name}"
            rio.write_bytes(dest, p.read_bytes())
            att["figures"].setdefault("cam", []).append(_rel(dest, out))
    if "attention_shift" in meta:
        att["attention_shift"] = meta["attention_shift"]
    if "fooled_by" in meta:  # a cascade: which attack fooled each image first, and the passes each spent
        att["fooled_by"] = meta["fooled_by"]
    if "transfer" in meta:  # examples made on another model (robustcars transfer)
        att["transfer"] = {"source": meta["transfer"]["source"],
                           "source_checkpoint": meta["transfer"]["source_run"].get("checkpoint")}
    if meta.get("saved_examples"):
        att["saved_examples"] = str(a.dir.resolve())
    if (a.dir / "model_card.json").is_file():
        att["model_card"] = str((a.dir / "model_card.json").resolve())
    return att


def transfer_matrix(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set of saved examples (one source attack folder): robust accuracy on each target model per eps, the
    source model itself included (its own attack's rows: white-box, the diagonal). Empty without transfers."""
    sources: dict[str, dict[str, Any]] = {}
    for m in models:
        for a in m["attacks"]:
            if "saved_examples" in a and "transfer" not in a:
                sources.setdefault(a["saved_examples"], {"source": f"{m['name']} · {a['label']}", "targets": {}})
    for m in models:
        for a in m["attacks"]:
            t = a.get("transfer")
            if t and t["source"] in sources:
                sources[t["source"]]["targets"][m["name"]] = a
    out = []
    for folder, s in sources.items():
        if not s["targets"]:
            continue
        own = next(a for m in models for a in m["attacks"] if a.get("saved_examples") == folder and "transfer" not in a)
        eps = [r["eps"] for r in split_rows(own["rows"])[1]]
        rows = [_transfer_row(s["source"].split(" · ")[0] + " (source, white-box)", own["rows"])]
        rows += [_transfer_row(name, a["rows"]) for name, a in s["targets"].items()]
        out.append({"source": s["source"], "dir": folder, "eps": eps, "rows": rows})
    return out


def _transfer_row(target: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    clean, adversarial = split_rows(rows)
    return {"target": target, "clean": clean["accuracy"], "accuracy": [r["accuracy"] for r in adversarial],
            "success_rate": [r["success_rate"] for r in adversarial]}


def image_set_id(records: list[dict[str, Any]]) -> str:
    """A short id of the images an attack result covers (SHA-256 of its sorted image paths, 16 hex digits): two
    results are on the same images exactly when their ids are equal."""
    return hashlib.sha256("\n".join(sorted(r["path"] for r in records)).encode()).hexdigest()[:16]


def _shared_focus(eps_lists: list[list[float]]) -> float | None:
    """The eps closest to 0.01 among those every list has (None when they share none)."""
    shared = sorted(set.intersection(*(set(e) for e in eps_lists))) if eps_lists else []
    return shared[_focus_eps_index(shared)] if shared else None


def _curves(m: dict[str, Any]) -> dict[str, dict[float, float]]:
    """A model's robust accuracy per eps, by column: each suite's worst case per norm, then each attack label."""
    curves: dict[str, dict[float, float]] = {}
    for su in m.get("suites", []):  # the headline: robust accuracy against every attack of the suite
        for w in su["worst_case"]:
            curves.setdefault(f"worst case ({su['suite']}, {w['norm']})", {})[w["eps"]] = w["accuracy"]
    for a in m["attacks"]:
        curves[a["label"]] = {r["eps"]: r["accuracy"] for r in split_rows(a["rows"])[1]}
    return curves


def comparison_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: clean test metrics; robust accuracy of each attack (and each suite's worst case) at
    one eps per column — the eps closest to 0.01 that every model with that attack label shares, so that models
    line up; an attack whose eps no other model shares gets a column at its own eps closest to 0.01 — and the
    mean corruption error (and mCE) of its first corruption result."""
    curves = [_curves(m) for m in models]
    eps_lists: dict[str, list[list[float]]] = {}
    for c in curves:
        for key, by_eps in c.items():
            eps_lists.setdefault(key, []).append(list(by_eps))
    focus = {k: _shared_focus(v) for k, v in eps_lists.items()}
    rows = []
    for m, c in zip(models, curves):
        row = {"model": m["name"], "test_acc": m["metrics"].get("test_acc"), "test_f1": m["metrics"].get("test_f1")}
        for key, by_eps in c.items():
            e = focus[key] if focus[key] is not None else _shared_focus([list(by_eps)])
            if e is not None:
                row[f"{key} @ {e:g}"] = by_eps[e]
        for c in m.get("corruptions", [])[:1]:  # natural corruptions: the mean error (and mCE with a reference)
            row["mean corruption error"] = c["mean_corruption_error"]
            if c.get("mce") is not None:
                row["mCE"] = c["mce"]
        rows.append(row)
    return rows


def defence_label(metrics: dict[str, Any]) -> str:
    """One line for a run's training defence (``standard`` when it has none)."""
    d = metrics.get("defence")
    if not d:
        return "standard"
    if d["method"] in ("distillation", "defensive distillation"):
        return f"{d['method']} (T = {d['temperature']:g}, alpha = {d['alpha']:g})"
    extra = f", {d['steps']} steps" if "steps" in d else ""
    extra += f", beta {d['beta']:g}" if "beta" in d else ""
    return f"{d['method']} adversarial training, L∞ eps {d['eps']:g}{extra}"


def defence_comparison(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Standard vs defended runs side by side (when at least one of two or more models has a training defence):
    clean accuracy and its cost against the first standard model, then robust accuracy, mean entropy and the
    share of clean top-1 classes pushed out of the top 3, per attack label and eps shared by two or more models,
    and each suite's worst case."""
    if len(models) < 2 or not any(m["metrics"].get("defence") for m in models):
        return None
    names = [m["name"] for m in models]
    base = next((m for m in models if not m["metrics"].get("defence")), models[0])
    base_acc = base["metrics"].get("test_acc")
    rows = [["training", *(defence_label(m["metrics"]) for m in models)],
            ["clean test accuracy", *(_f(m["metrics"].get("test_acc"), 4) for m in models)],
            [f"clean-accuracy cost vs {base['name']}",
             *(_f(None if base_acc is None or m["metrics"].get("test_acc") is None
                  else base_acc - m["metrics"]["test_acc"], 4) for m in models)]]
    # rows are matched by what was run, not by folder label: the same attack and parameters on the same images
    cells: dict[tuple, dict[int, Any]] = {}
    shown: dict[tuple, str] = {}
    for i, m in enumerate(models):
        for a in m["attacks"]:
            same = (a["attack"], a["norm"], json.dumps(a.get("params", {}), sort_keys=True, default=str),
                    a.get("image_set"))
            shown.setdefault(same, f"{a['label']} ({a['images']} images)")
            for r in split_rows(a["rows"])[1]:
                for what, key in (("robust accuracy", "accuracy"), ("mean entropy (nats)", "entropy_mean"),
                                  ("clean top-1 out of the top 3", "top1_left_top3")):
                    if key in r:
                        cells.setdefault((same, what, r["eps"]), {})[i] = r[key]
        for su in m.get("suites", []):
            for w in su["worst_case"]:
                same = ("worst case", su["suite"], w["norm"], w.get("images"))
                shown.setdefault(same, f"worst case ({su['suite']}, {w['norm']}, {w.get('images')} images)")
                cells.setdefault((same, "robust accuracy", w["eps"]), {})[i] = w["accuracy"]
    order = sorted(cells, key=lambda k: (k[1] != "robust accuracy", shown[k[0]], k[2]))
    for same, what, eps in order:
        by_model = cells[(same, what, eps)]
        if len(by_model) >= 2:
            rows.append([f"{shown[same]} @ {eps:g}: {what}", *(_f(by_model.get(i), 4) for i in range(len(models)))])
    return {"head": ["", *names], "rows": rows}


def _f(x: Any, d: int = 3) -> str:
    return fmt(x, d)


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _group_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    return (["group", "images", "clean acc", "robust acc", "drop"],
            [[r["group"], str(r["images"]), _f(r["clean_acc"]), _f(r["robust_acc"]), _f(r["drop"])] for r in rows])


def _sections(report: dict[str, Any]):
    """Yield (kind, payload) blocks shared by the Markdown and HTML renderers."""
    yield from _header_sections(report)
    yield from _transfer_sections(report)
    if report.get("defence_comparison"):
        yield "h2", "Standard vs defended (rows: the same attack and parameters on the same images)"
        yield "table", (report["defence_comparison"]["head"], report["defence_comparison"]["rows"])
    yield from comparison_sections(report.get("corruption_comparison"))
    for m in report["models"]:
        yield from _model_sections(m)
    yield from _attention_sections(report)
    yield from _reproducibility_sections(report)


def _header_sections(report: dict[str, Any]):
    """Title, provenance line, failed checks and (for several models) the comparison."""
    rep = report["reproducibility"]
    yield "h1", report["title"]
    yield "p", (f"Created {report['created']} by robustcars {rep['robustcars_version']} "
                f"(git {rep['git_commit'] or 'unknown'}).")
    if report["failed_checks"]:
        yield "h2", "⚠ Sanity checks that failed"
        yield "table", (["model", "attack", "check", "what it suggests"],
                        [[c["model"], c["attack"], c["name"] + (f" = {c['value']:.3f}" if "value" in c else ""),
                          c["explain"]] for c in report["failed_checks"]])
    if len(report["models"]) > 1:
        yield "h2", "Comparison"
        keys = list(dict.fromkeys(k for r in report["comparison"] for k in r))
        yield "table", (keys, [[_f(r.get(k), 4) if k != "model" else r[k] for k in keys] for r in report["comparison"]])
        if report.get("comparison_figure"):
            yield "img", report["comparison_figure"]


def calibration_text(cal: dict[str, Any]) -> str:
    """One sentence: what a suite was calibrated against (its ``[calibration]`` table, as ``suite.json`` keeps it)."""
    parts = [f"per-image verdict agreement {cal['agreement']:.1%} on {cal['images']} images"
             + (f" of {', '.join(cal['models'])}" if cal.get("models") else "")]
    if "robust_accuracy_gap" in cal:
        parts.append(f"robust accuracy at most {100 * cal['robust_accuracy_gap']:.2g} points above the reference")
    if "passes_ratio" in cal:
        parts.append(f"{cal['passes_ratio']:g}x fewer forward+backward passes")
    source = f" ({cal['source']})" if cal.get("source") else ""
    return f"Calibrated against {cal['reference']}: {'; '.join(parts)}{source}."


def _model_sections(m: dict[str, Any]):
    """One model: its checkpoint and training, its figures, its suites' worst cases and its attacks."""
    yield "h2", f"Model: {m['name']}"
    met = m["metrics"]
    yield "table", (["checkpoint", "sha256", "weights", "frozen", "best epoch", "clean test accuracy",
                     "clean test macro-F1"],
                    [[m["checkpoint"] or "– (a Python object)", (m["checkpoint_sha256"] or "–")[:16],
                      str(m["config"].get("weights", "–")),
                      ", ".join(met.get("frozen", [])) or "none", _f(met.get("best_epoch")),
                      _f(met.get("test_acc"), 4), _f(met.get("test_f1"), 4)]])
    yield "p", f"Training: {defence_label(met)}."
    for key in ("learning_curves", "confusion", "robustness_curves"):
        if key in m["figures"]:
            yield "img", m["figures"][key]
    for su in m.get("suites", []):
        if su["worst_case"]:
            yield "h3", f"Suite {su['suite']}: worst case over its attacks (robust = no attack fooled the image)"
            yield "table", (["norm", "eps", "images", "worst-case robust accuracy",
                             "images only this attack broke"],
                            [[w["norm"], f"{w['eps']:g}", str(w["images"]), _f(w["accuracy"], 4),
                              ", ".join(f"{k}: {v}" for k, v in w["only_broken_by"].items())]
                             for w in su["worst_case"]])
            if su.get("calibration"):
                yield "p", calibration_text(su["calibration"])
    for a in m["attacks"]:
        yield from _attack_sections(a)
    for c in m.get("corruptions", []):
        yield from corruption_sections(c)


def _attention_sections(report: dict[str, Any]):
    """Grad-CAM attention shift of every attack that measured it, with its panels."""
    looks = [(m, a) for m in report["models"] for a in m["attacks"] if "attention_shift" in a]
    if not looks:
        return
    yield "h2", "Where the model looks (Grad-CAM, clean vs adversarial)"
    yield "p", ("Grad-CAM of each clean image for its clean top-1 class and of its adversarial image for the "
                "adversarial top-1: r is the Pearson correlation of the two maps (1 = the same place), 'top-10 % "
                "kept' the share of the clean map's hottest tenth of pixels that stay among the adversarial "
                "map's.")
    yield "table", (["model", "attack", "eps", "images", "mean r", "median r", "top-10 % kept", "flat maps"],
                    [[m["name"], a["label"], f"{s['eps']:g}", str(s["images"]), _f(s["pearson_mean"]),
                      _f(s["pearson_median"]), _f(s["top_kept_mean"]), str(s["flat_maps"])]
                     for m, a in looks for s in [a["attention_shift"]]])
    for _, a in looks:
        for panel in a["figures"].get("cam", []):
            yield "img", panel


def _reproducibility_sections(report: dict[str, Any]):
    """Versions, every command as typed and as reproducible, data fingerprints and configs."""
    rep = report["reproducibility"]
    yield "h2", "Reproducibility"
    rows = [["robustcars", rep["robustcars_version"]], ["git commit", rep["git_commit"] or "unknown"],
            ["report command", rep["report_command"] or "–"]] + [[k, v] for k, v in rep["versions"].items()]
    for m in report["models"]:
        for c in m["commands"]:
            rows.append([f"train ({m['id']}, as typed)", c])
        if m.get("reproduce"):
            rows.append([f"train ({m['id']}, reproduce)", m["reproduce"]])
        for a in m["attacks"]:
            rows.append([f"attack ({m['id']}, {a['label']}, as typed)", a["command"] or "–"])
            if a.get("reproduce"):
                rows.append([f"attack ({m['id']}, {a['label']}, reproduce)", a["reproduce"]])
        for c in m.get("corruptions", []):
            rows.append([f"corrupt ({m['id']}, as typed)", c["command"] or "–"])
            if c.get("reproduce"):
                rows.append([f"corrupt ({m['id']}, reproduce)", c["reproduce"]])
        ds = m.get("dataset")
        if ds and ds.get("available"):
            counts = ", ".join(f"{k} {v['images']} ({v['files_sha256'][:12]})" for k, v in ds["splits"].items())
            rows.append([f"data ({m['id']})", f"{ds['root']}: {counts}"])
        rows.append([f"config ({m['id']})", json.dumps(m["config"], sort_keys=True)])
    yield "table", (["what", "value"], rows)


def _attack_sections(a: dict[str, Any]):
    """One attack of a model: its table, figures, cascade breakdown, per-make/class analyses and checks."""
    yield "h3", f"{a['label']} ({a['norm']}, {a['images']} {a['split']} images)"
    yield "table", attack_rows(a["rows"], a["label"])
    yield "img", a["figures"]["entropy_hist"]
    yield "img", a["figures"]["rank_hist"]
    for panel in a["figures"].get("panels", []):
        yield "img", panel
    if "fooled_by" in a:
        yield from _cascade_sections(a)
    if "per_make" in a:
        yield "h4", f"Per make at eps {a['focus_eps']:g} (most fragile first)"
        yield "table", _group_table(a["per_make"][:12])
        yield "h4", f"Most fragile classes at eps {a['focus_eps']:g}"
        yield "table", _group_table(a["per_class"]["most_fragile"])
        yield "h4", f"Most robust classes at eps {a['focus_eps']:g}"
        yield "table", _group_table(a["per_class"]["most_robust"])
        f = a["flips"]
        yield "p", (f"{f['fooled']} clean-correct images were fooled; {_f(f['same_make_share'])} of the "
                    "flips stay within the same make.")
        yield "table", (["true class", "adversarial class", "count", "same make"],
                        [[t["true"], t["adversarial"], str(t["count"]), "yes" if t["same_make"] else "no"]
                         for t in f["top"]])
    if a.get("model_card"):
        yield "p", f"Model card (RobustBench-style): {a['model_card']}"
    for c in a["checks"]:
        yield "p", f"check {c['name']}: {'ok' if c['ok'] else 'FAILED — ' + c['explain']}"


def _transfer_sections(report: dict[str, Any]):
    """The transfer matrix of the saved examples (none without transfers)."""
    if not report.get("transfer"):
        return
    yield "h2", "Transfer: examples made on one model, scored on others (robust accuracy)"
    for t in report["transfer"]:
        yield "h3", f"Examples of {t['source']}"
        yield "p", "Each cell: robust accuracy (attack success rate on the target's clean-correct images)."
        yield "table", (["scored on", "clean accuracy", *[f"eps {e:g}" for e in t["eps"]]],
                        [[r["target"], _f(r["clean"]),
                          *[f"{_f(v)} ({_f(sr)})" for v, sr in zip(r["accuracy"], r["success_rate"])]]
                         for r in t["rows"]])
    if report.get("transfer_figure"):
        yield "img", report["transfer_figure"]


def _cascade_sections(a: dict[str, Any]):
    """A cascade's breakdown: clean-correct images fooled first by each attack per eps, and its cost."""
    order = [p["label"] for p in a["params"].get("attacks", [])] or sorted(
        {k for b in a["fooled_by"] for k in b["fooled_first_by"]})
    yield "h4", "Cascade: clean-correct images fooled first by each attack (in the order run)"
    yield "table", (["eps", *order, "still robust"],
                    [[f"{b['eps']:g}", *(str(b["fooled_first_by"].get(k, 0)) for k in order), str(b["robust"])]
                     for b in a["fooled_by"]])
    by = a["cost"].get("passes_per_image_by_attack")
    if by:
        yield "p", ("Forward+backward passes per image, by attack: " + ", ".join(f"{k} {v:g}" for k, v in by.items())
                    + f" (total {sum(by.values()):g}).")


def render_markdown(report: dict[str, Any]) -> str:
    return markdown_of(_sections(report))


def markdown_of(sections) -> str:
    """Markdown of ``(kind, payload)`` blocks (h1-h4, p, table, img)."""
    out = []
    for kind, payload in sections:
        if kind in ("h1", "h2", "h3", "h4"):
            out.append("#" * int(kind[1]) + " " + payload)
        elif kind == "p":
            out.append(payload)
        elif kind == "table":
            out.append(_md_table(*payload))
        elif kind == "img":
            out.append(f"![{Path(payload).stem}]({payload})")
    return "\n\n".join(out) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """The static page, rendered by the Jinja2 template ``templates/report.html.j2`` (autoescape on)."""
    return html_of(report["title"], _sections(report))


def html_of(title: str, sections) -> str:
    """The report page of ``(kind, payload)`` blocks, by the Jinja2 template ``templates/report.html.j2``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("robustcars.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(title=title, sections=list(sections),
                                                     stem=lambda p: Path(p).stem)
