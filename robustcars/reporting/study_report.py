"""The report of a study folder (``robustcars study``; ``robustcars report STUDY_OUT``).

Per configuration, read from its run folder and its attack folder (nothing is recomputed but means):

* Table 2 of the reference study: train loss and macro-F1, validation loss and macro-F1 at the best epoch;
* Table 3: test accuracy, macro-F1 and mean entropy (nats), clean and under the study's attack at each eps;
* training cost: epochs run, best epoch, minutes, trainable and total parameters;
* two figures: validation cross-entropy and validation macro-F1 per epoch for every configuration, the line the mean
  over validation batches and the band ±1 standard deviation over batches (``val_*_batch_mean`` / ``_std`` of
  ``history.csv``);
* the study's claim checked on this data, when the study file states one (``claim = "a ≈ b ≫ c ≈ d"``).

A configuration still training is listed with what it has so far (its figures lines stop at its last epoch).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from robustcars import storage as rio
from robustcars.errors import DataError
from robustcars.reporting.figures import best_epoch as best_epoch_of
from robustcars.reporting.results import load_attack, read_json_file, split_rows
from robustcars.runtime import library_versions
from robustcars.version import __version__

STUDY_FILE = "study.json"
#: How the claim's relations are judged, on the test macro-F1 of each configuration's best model (clean).
ABOUT_EQUAL = 0.03  # "a ≈ b": |F1(a) - F1(b)| <= 0.03
MUCH_BETTER = 0.10  # "a ≫ b": F1(a) - F1(b) >= 0.10


@dataclass(frozen=True)
class StudyRow:
    """One configuration of a study: options, best-epoch training numbers, test numbers, cost.

    Losses are cross-entropy in nats (with the run's label smoothing for train and validation, without for test);
    F1 is macro-F1 in [0, 1]; ``attacked`` maps each eps (pixel scale) of the study's attack to its test accuracy,
    macro-F1 and mean entropy; None where the run has not got that far.
    """

    name: str
    weights: str
    freeze: int
    trainable: int | None
    parameters: int | None
    epochs_run: int
    best_epoch: int | None
    train_loss: float | None
    train_f1: float | None
    val_loss: float | None
    val_f1: float | None
    test_acc: float | None
    test_f1: float | None
    test_entropy: float | None
    attacked: dict[float, dict[str, float]]
    minutes: float
    finished: bool


def is_study(folder: Path) -> bool:
    return (Path(folder) / STUDY_FILE).is_file()


def _history(path: Path) -> list[dict[str, float]]:
    """A configuration's ``history.csv`` (empty before its first epoch)."""
    from robustcars.reporting.report import read_run_history

    return read_run_history(path) if path.is_file() else []


def _attack_numbers(folder: Path) -> tuple[dict[str, float] | None, dict[float, dict[str, float]]]:
    """``(clean, {eps: adversarial})`` accuracy / macro-F1 / mean entropy of a finished attack folder."""
    if not (folder / "attack.json").is_file():
        return None, {}
    rows = load_attack(folder).meta["rows"]
    clean, adversarial = split_rows(rows)

    def nums(r: dict[str, Any]) -> dict[str, float]:
        return {"accuracy": r["accuracy"], "macro_f1": r.get("macro_f1"), "entropy": r.get("entropy_mean")}

    return (nums(clean) if clean else None), {float(r["eps"]): nums(r) for r in adversarial}


def _row(name: str, cfg: dict[str, Any], run: Path, attack_folder: str | None) -> tuple[StudyRow, list[dict]]:
    history = _history(run / "history.csv")
    metrics = read_json_file(run / "metrics.json", "metrics.json") if (run / "metrics.json").is_file() else {}
    best_epoch = metrics.get("best_epoch") or best_epoch_of(history)
    best = next((h for h in history if h["epoch"] == best_epoch), {})
    clean, attacked = _attack_numbers(run / attack_folder) if attack_folder else (None, {})
    row = StudyRow(
        name=name, weights=cfg["weights"], freeze=cfg["freeze"], trainable=metrics.get("trainable_parameters"),
        parameters=metrics.get("parameters"), epochs_run=len(history),
        best_epoch=int(best_epoch) if best_epoch else None, train_loss=best.get("train_loss"),
        train_f1=best.get("train_f1"), val_loss=best.get("val_loss"), val_f1=best.get("val_f1"),
        test_acc=metrics.get("test_acc"), test_f1=metrics.get("test_f1"),
        test_entropy=clean["entropy"] if clean else None, attacked=attacked,
        minutes=sum(h["seconds"] for h in history) / 60, finished="test_acc" in metrics)
    return row, history


def read_study(folder: str | Path) -> tuple[dict[str, Any], list[StudyRow], dict[str, list[dict[str, float]]]]:
    """``(study.json, one row per configuration, history per configuration)`` of a study folder.

    Raises:
        DataError: no study.json, or a damaged file in it.
    """
    folder = Path(folder)
    if not is_study(folder):
        raise DataError(f"{folder} holds no study ({STUDY_FILE} is missing)")
    meta = read_json_file(folder / STUDY_FILE, STUDY_FILE)
    attack_folder = (meta.get("attack") or {}).get("folder")
    rows, histories = [], {}
    for name, cfg in meta["configs"].items():
        row, history = _row(name, cfg, folder / name, attack_folder)
        rows.append(row)
        histories[name] = history
    return meta, rows, histories


def read_studies(folders: list[Path]) -> tuple[list[dict[str, Any]], list[StudyRow], dict[str, list[dict]]]:
    """Several study folders side by side (the first one's title and claim lead); a configuration name used by two
    studies is shown as ``<study folder>/<name>``."""
    metas, rows, histories = [], [], {}
    folders = list(dict.fromkeys(folders))  # the same folder twice is read once
    read = [read_study(f) for f in folders]
    names = [r.name for _, rs, _ in read for r in rs]
    for folder, (meta, rs, hs) in zip(folders, read):
        metas.append(meta)
        for r in rs:
            key = r.name if names.count(r.name) == 1 else f"{Path(folder).name}/{r.name}"
            rows.append(replace(r, name=key))
            histories[key] = hs[r.name]
    return metas, rows, histories


_RELATION = re.compile(r"\s*(≈|~|≫|>>)\s*")


def claim_names(claim: str) -> list[str]:
    """The configuration names of a claim such as ``"a ≈ b ≫ c"``, in order."""
    return _RELATION.split(claim.strip())[0::2] if claim.strip() else []


def check_claim(claim: str, rows: list[StudyRow]) -> dict[str, Any]:
    """Judge a claim such as ``"pretrained ≈ freeze-3 ≫ scratch ≈ freeze-6"`` on the test macro-F1 of each
    configuration (``≈``/``~``: within :data:`ABOUT_EQUAL`; ``≫``/``>>``: ahead by at least :data:`MUCH_BETTER`;
    groups joined by ``≈`` compared through their weakest and strongest member).

    Returns:
        ``{"claim", "holds" (bool, or None when a named configuration has no test F1), "steps": [...]}``.
    Raises:
        DataError: a name in the claim is not a configuration of the study.
    """
    f1 = {r.name: r.test_f1 for r in rows}
    names = claim_names(claim)
    relations = ["≈" if p in ("≈", "~") else "≫" for p in _RELATION.split(claim.strip())[1::2]]
    unknown = [n for n in names if n not in f1]
    if unknown:
        raise DataError(f"claim {claim!r} names {', '.join(unknown)}, not configurations of this study")
    if any(f1[n] is None for n in names):
        return {"claim": claim, "holds": None, "steps": []}
    groups = [[names[0]]]
    for rel, name in zip(relations, names[1:]):
        groups[-1].append(name) if rel == "≈" else groups.append([name])
    steps = []
    for g in groups:
        spread = max(f1[n] for n in g) - min(f1[n] for n in g)
        steps.append({"relation": " ≈ ".join(g), "gap": spread, "holds": spread <= ABOUT_EQUAL})
    for a, b in zip(groups, groups[1:]):
        gap = min(f1[n] for n in a) - max(f1[n] for n in b)
        steps.append({"relation": f"{' ≈ '.join(a)} ≫ {' ≈ '.join(b)}", "gap": gap, "holds": gap >= MUCH_BETTER})
    return {"claim": claim, "holds": all(s["holds"] for s in steps), "steps": steps}


def _f(x: Any, d: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def study_tables(metas: list[dict[str, Any]], rows: list[StudyRow]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, head, body)`` of Table 2 (training), Table 3 (test, clean vs attack) and the cost table; the
    attack columns are every eps of the studies' attacks (named after the first study's attack)."""
    table2 = ["configuration", "weights", "freeze", "best epoch", "train loss", "train F1", "val loss", "val F1"]
    t2 = [[r.name, r.weights, str(r.freeze), str(r.best_epoch or "—"), _f(r.train_loss), _f(r.train_f1),
           _f(r.val_loss), _f(r.val_f1)] for r in rows]
    attacks = [m["attack"] for m in metas if m.get("attack")]
    eps = sorted({float(e) for a in attacks for e in a["eps"]})
    head3 = ["configuration", "clean acc", "clean F1", "clean entropy"]
    for e in eps:
        head3 += [f"{attacks[0]['attack']} {e:g} acc", "F1", "entropy"]
    t3 = []
    for r in rows:
        cells = [r.name, _f(r.test_acc), _f(r.test_f1), _f(r.test_entropy, 3)]
        for e in eps:
            a = r.attacked.get(float(e), {})
            cells += [_f(a.get("accuracy")), _f(a.get("macro_f1")), _f(a.get("entropy"), 3)]
        t3.append(cells)
    cost = [[r.name, str(r.epochs_run), f"{r.minutes:.1f}", f"{r.trainable:,}" if r.trainable else "—",
             f"{r.parameters:,}" if r.parameters else "—", "yes" if r.finished else "no"] for r in rows]
    return [("Training (best epoch; losses with label smoothing)", table2, t2),
            ("Test split: clean vs attacked (best model)", head3, t3),
            ("Cost", ["configuration", "epochs run", "training (min)", "trainable parameters", "parameters",
                      "finished"], cost)]


def _bands(histories: dict[str, list[dict[str, float]]], key: str, label: str, path: Path) -> Path:
    from robustcars.reporting.figures import banded_curves

    curves = {name: ([h["epoch"] for h in hist], [h.get(f"val_{key}_batch_mean", math.nan) for h in hist],
                     [h.get(f"val_{key}_batch_std", math.nan) for h in hist]) for name, hist in histories.items()}
    return banded_curves(curves, path, ylabel=label,
                         title=f"Validation {label} per epoch: mean over batches ± 1 std")


def build_study_report(folders: list[Path], out: str | Path, *, title: str | None = None, command: str = ""
                       ) -> dict[str, Any]:
    """Write ``report.json``, ``report.md``, ``index.html`` and ``figures/`` of a study into ``out`` and return
    ``report.json``'s content; like ``robustcars report``, the folder is built aside and moved into place.

    Raises:
        DataError: not a study folder, or a damaged file in it; ConfigError, StorageError: ``out`` cannot be
            written (see :func:`robustcars.reporting.report.write_report_folder`).
    """
    from robustcars.reporting.report import check_report_out, write_report_folder

    check_report_out(Path(out))  # before reading the studies
    study = read_studies([Path(f) for f in folders])
    return write_report_folder(Path(out), lambda tmp: _write(folders, study, tmp, title, command))


def _write(folders: list[Path], study, out: Path, title: str | None, command: str) -> dict[str, Any]:
    from robustcars.reporting.report import html_of, markdown_of

    metas, rows, histories = study
    meta = metas[0]
    figures = {"val_loss": _bands(histories, "loss", "cross-entropy (nats)", out / "figures" / "study_val_loss.png"),
               "val_f1": _bands(histories, "f1", "macro-F1", out / "figures" / "study_val_f1.png")}
    claim = check_claim(meta["claim"], rows) if meta.get("claim") else None  # the first study's claim
    report = {"kind": "robustcars-study-report", "title": title or meta["title"],
              "studies": [str(f) for f in folders],
              "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "reproducibility": {"report_command": command, "study_commands": [m.get("command") for m in metas],
                                  "threads": [m.get("threads") for m in metas], "robustcars_version": __version__,
                                  "versions": library_versions()},
              "configs": [{**asdict(r), "attacked": {str(k): v for k, v in r.attacked.items()}} for r in rows],
              "tables": [{"title": t, "head": h, "rows": b} for t, h, b in study_tables(metas, rows)],
              "figures": {k: str(p.relative_to(out)) for k, p in figures.items()}, "claim": claim}
    sections = list(_sections(report, metas))
    rio.write_json(out / "report.json", report)
    rio.write_text(out / "report.md", markdown_of(sections))
    rio.write_text(out / "index.html", html_of(report["title"], sections))
    return report


def _sections(report: dict[str, Any], metas: list[dict[str, Any]]):
    yield "h1", report["title"]
    rep = report["reproducibility"]
    studies = "; ".join(f"{f}" + (f" ({m['description']})" if m.get("description") else "")
                        for f, m in zip(report["studies"], metas))
    yield "p", f"Created {report['created']} by robustcars {rep['robustcars_version']} from {studies}."
    for t in report["tables"]:
        yield "h2", t["title"]
        yield "table", (t["head"], t["rows"])
    yield "h2", "Validation curves"
    yield "img", report["figures"]["val_loss"]
    yield "img", report["figures"]["val_f1"]
    claim = report["claim"]
    if claim:
        yield "h2", "The study's claim on this data"
        verdict = {True: "holds", False: "does not hold", None: "cannot be judged yet (a configuration has no test F1)"}
        yield "p", (f"{claim['claim']} — {verdict[claim['holds']]}, judged on test macro-F1: ≈ within "
                    f"{ABOUT_EQUAL:g}, ≫ ahead by at least {MUCH_BETTER:g}.")
        if claim["steps"]:
            yield "table", (["relation", "gap (F1)", "holds"],
                            [[s["relation"], f"{s['gap']:+.4f}", "yes" if s["holds"] else "no"]
                             for s in claim["steps"]])
    yield "h2", "Reproducibility"
    body = [[f"study {f} (as typed)", c or "—"] for f, c in zip(report["studies"], rep["study_commands"])]
    body += [[f"study {f}: torch threads", str(t or "torch's choice")]
             for f, t in zip(report["studies"], rep["threads"])]
    body += [["report", rep["report_command"] or "—"], *[[k, str(v)] for k, v in rep["versions"].items()]]
    yield "table", (["what", "value"], body)
