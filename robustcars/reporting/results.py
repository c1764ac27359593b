"""The one reader of robustcars results: ``records.jsonl``, ``attack.json``, ``suite.json`` and run folders.

Every later step (suite summaries, ``report``, aggregation, the web app) reads results through here, so one
rule holds everywhere:

* a ``records.jsonl`` whose last line is torn (a crash mid-write) is repaired only by ``attack --resume``,
  which drops the torn line and attacks that image again; every analysis refuses it with one line saying so;
* a line that is not valid JSON in the middle of the file, a missing file, an ``attack.json`` that is not
  valid JSON or lacks a section, or fewer records than images is a :class:`DataError` naming the file.

``attack.json`` carries what later steps need (class names, image size, norm), so nothing downstream reloads a
dataset or a checkpoint to learn them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcars.errors import DataError

RECORD_KEYS = ("index", "label", "clean_pred", "clean_top3", "clean_entropy", "adv")
ATTACK_KEYS = ("config", "run", "data", "threat_model", "rows")


@dataclass
class RecordsFile:
    """The complete records of a file; ``torn`` is True when a cut last line was left out."""

    records: list[dict[str, Any]]
    torn: bool
    intact_bytes: int  # length of the complete lines (where a resume truncates the file)


def read_records(path: str | Path, *, allow_torn: bool = False) -> RecordsFile:
    """Read one record per line.

    Args:
        allow_torn: accept a torn last line (resume repairs it); otherwise it is an error.
    Raises:
        DataError: the file is missing or unreadable, a line is not a JSON record with the keys of
            :data:`RECORD_KEYS`, or (without ``allow_torn``) the last line is torn.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} not found: the attack did not write any record (rerun it)") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records, intact = [], 0
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path}: line {n} is not valid JSON; the file is damaged (remove the folder and "
                            "rerun the attack)") from None
        if not isinstance(rec, dict) or any(k not in rec for k in RECORD_KEYS):
            raise DataError(f"{path}: line {n} is not an attack record (needs {', '.join(RECORD_KEYS)})")
        records.append(rec)
        intact += len(line) + 1
    torn = bool(tail.strip())
    if torn and not allow_torn:
        raise DataError(f"{path} ends with a torn line after {len(records)} complete records (interrupted "
                        "write); rerun the attack with --resume to repair it")
    return RecordsFile(records, torn, intact)


def read_json_file(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``. Raises DataError (missing, unreadable, not JSON, not an object)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); the file is damaged") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a {what}")
    return obj


@dataclass
class AttackResult:
    """A finished attack folder: ``meta`` is attack.json, ``records`` one dict per image in index order."""

    dir: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def eps(self) -> list[float]:
        return list(self.meta["threat_model"]["eps"])

    @property
    def norm(self) -> str:
        return self.meta["threat_model"]["norm"]

    @property
    def attack(self) -> str:
        return self.meta["config"]["attack"]

    @property
    def class_names(self) -> list[str] | None:
        return self.meta["data"].get("class_names")

    @property
    def images(self) -> int:
        return int(self.meta["data"]["images"])


def load_attack(folder: str | Path) -> AttackResult:
    """Read a finished attack folder and check that it is complete.

    Raises:
        DataError: attack.json missing, damaged or lacking a section; records.jsonl missing, damaged,
            torn, or not exactly one record per image in index order.
    """
    folder = Path(folder)
    meta = read_json_file(folder / "attack.json", "attack result (attack.json)")
    missing = [k for k in ATTACK_KEYS if k not in meta]
    if missing:
        raise DataError(f"{folder / 'attack.json'} lacks {', '.join(missing)}: not a robustcars attack result")
    records = read_records(folder / "records.jsonl").records
    n = meta["data"].get("images")
    if len(records) != n or any(r["index"] != i for i, r in enumerate(records)):
        raise DataError(f"{folder / 'records.jsonl'} holds {len(records)} records for {n} images; rerun the attack "
                        "with --resume to complete it")
    return AttackResult(folder, meta, records)


def attack_dirs(folder: str | Path) -> list[Path]:
    """Attack folders directly inside ``folder`` and inside its suite folders (``*/attack.json``,
    ``*/*/attack.json``)."""
    folder = Path(folder)
    direct = sorted(p.parent for p in folder.glob("*/attack.json"))
    return direct + sorted(p.parent for p in folder.glob("*/*/attack.json"))


def read_suite_result(folder: str | Path) -> dict[str, Any]:
    """Read ``suite.json``. Raises DataError when missing or damaged."""
    return read_json_file(Path(folder) / "suite.json", "suite result (suite.json)")


CORRUPTION_RESULT = "corruption.json"  # what ``robustcars corrupt`` writes into its folder
CORRUPTION_KIND = "robustcars-corruption"


def corruption_folder(path: str | Path) -> Path:
    """The corruption folder ``path`` names: itself when it holds ``corruption.json``, else its ``corrupt/``."""
    path = Path(path)
    return path if (path / CORRUPTION_RESULT).is_file() or not (path / "corrupt").is_dir() else path / "corrupt"


def read_corruption_result(path: str | Path) -> dict[str, Any]:
    """Read the ``corruption.json`` of a corruption folder (or of a run folder's ``corrupt/``), with ``dir`` added.

    Raises:
        DataError: missing, damaged, or not a robustcars corruption result.
    """
    folder = corruption_folder(path)
    result = read_json_file(folder / CORRUPTION_RESULT, "corruption result (corruption.json)")
    if result.get("kind") != CORRUPTION_KIND or not {"clean", "rows", "errors", "run"} <= result.keys():
        raise DataError(f"{folder / CORRUPTION_RESULT} is not a robustcars corruption result")
    return {**result, "dir": str(folder)}


# --- typed results ------------------------------------------------------------------------------------------

#: The fields every row has, in the order attack.json writes them; the rest are the attack's own metrics.
ROW_FIELDS = ("attack", "norm", "eps", "images", "accuracy", "macro_f1", "entropy_mean", "entropy_std")
CLEAN = "clean"  # the ``attack`` of the clean row


@dataclass(frozen=True)
class Row:
    """One row of a result: the clean images (``attack == "clean"``, ``eps == 0``) or one attack at one eps.

    ``accuracy`` and ``macro_f1`` are in [0, 1] over ``images`` images, ``entropy_*`` in nats; ``eps`` in [0, 1]
    pixel scale of ``norm`` (``linf``/``l2``; ``""`` for clean). ``metrics`` holds the attack's other numbers
    (``success_rate``, top-k rank shifts, norms, ``accuracy_8bit``, min-norm medians…) in the written order.
    """

    attack: str
    norm: str
    eps: float
    images: int
    accuracy: float
    macro_f1: float | None = None
    entropy_mean: float | None = None
    entropy_std: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        return self.attack == CLEAN

    def get(self, key: str, default: Any = None) -> Any:
        """A field or one of ``metrics`` by its attack.json name."""
        return getattr(self, key) if key in ROW_FIELDS else self.metrics.get(key, default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        return cls(**{k: d.get(k) for k in ROW_FIELDS if k in d},
                   metrics={k: v for k, v in d.items() if k not in ROW_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The row as attack.json writes it: its fields (those a row of its kind has) then its metrics."""
        core = {k: getattr(self, k) for k in ROW_FIELDS}
        return {**{k: v for k, v in core.items() if v is not None or k in ("attack", "norm", "eps")},
                **self.metrics}


def split_rows(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(clean row or None, adversarial rows)`` of a ``rows`` list, told apart by ``attack == "clean"`` (never by
    position: a suite's rows hold one clean row per image set)."""
    clean = next((r for r in rows if r.get("attack") == CLEAN), None)
    return clean, [r for r in rows if r.get("attack") != CLEAN]


@dataclass(frozen=True)
class Check:
    """One sanity check (:mod:`robustcars.evaluation.checks`): its name, verdict, what a failure suggests, and
    the measured value where there is one."""

    name: str
    ok: bool
    explain: str
    value: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(d["name"], bool(d["ok"]), d.get("explain", ""), d.get("value"))


@dataclass(frozen=True)
class AttackSummary:
    """What one attack measured (``attack.json``): the clean row, one row per eps, the checks, the cost, and the
    extras only some attacks have — ``min_norms`` (minimum-norm attacks) and ``cascade`` (cascades) — as
    optional parts. ``meta`` is the whole file as written (provenance, threat model, data, config…).

    Returned by :func:`robustcars.evaluate`; ``to_dict()`` gives the attack.json content.
    """

    clean: Row
    rows: tuple[Row, ...]
    checks: tuple[Check, ...]
    cost: dict[str, Any]
    meta: dict[str, Any]
    min_norms: dict[str, Any] | None = None
    cascade: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackSummary:
        clean, adversarial = split_rows(d["rows"])
        return cls(Row.from_dict(clean if clean is not None else d["clean"]),
                   tuple(Row.from_dict(r) for r in adversarial), tuple(Check.from_dict(c) for c in d.get("checks", [])),
                   dict(d.get("cost", {})), d, d.get("min_norms"), d.get("cascade"))

    @property
    def eps(self) -> list[float]:
        return [r.eps for r in self.rows]

    def row(self, eps: float) -> Row:
        """The row at ``eps``. Raises KeyError naming the budgets there are."""
        for r in self.rows:
            if abs(r.eps - eps) <= 1e-12 * max(1.0, abs(eps)):
                return r
        raise KeyError(f"no row at eps {eps:g}; this result has eps {', '.join(f'{e:g}' for e in self.eps)}")

    def robust_accuracy(self, eps: float) -> float:
        """Robust accuracy in [0, 1] at ``eps`` (the share of images still classified correctly)."""
        return self.row(eps).accuracy

    @property
    def clean_accuracy(self) -> float:
        return self.clean.accuracy

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return self.meta

    def __getitem__(self, key: str) -> Any:
        """Read as the attack.json dict (the return value of robustcars 0.2's ``evaluate``)."""
        return self.meta[key]


@dataclass(frozen=True)
class WorstCase:
    """Per image and eps, robust only when no attack of a suite fooled it: its accuracy over ``images`` and how
    many images only each attack broke."""

    norm: str
    eps: float
    images: int
    accuracy: float
    only_broken_by: dict[str, int]
    accuracy_8bit: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorstCase:
        return cls(d["norm"], d["eps"], d["images"], d["accuracy"], dict(d.get("only_broken_by", {})),
                   d.get("accuracy_8bit"))


@dataclass(frozen=True)
class SuiteSummary:
    """What a suite measured (``suite.json``): its entries (label -> :class:`AttackSummary` when the entry's
    attack.json is given), the worst case per norm and eps, and the suite's checks."""

    name: str
    worst_case: tuple[WorstCase, ...]
    checks: tuple[Check, ...]
    meta: dict[str, Any]
    entries: dict[str, AttackSummary] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], entries: dict[str, dict[str, Any]] | None = None) -> SuiteSummary:
        return cls(d["suite"], tuple(WorstCase.from_dict(w) for w in d.get("worst_case", [])),
                   tuple(Check.from_dict(c) for c in d.get("checks", [])), d,
                   {k: AttackSummary.from_dict(v) for k, v in (entries or {}).items()})

    def worst_case_accuracy(self, eps: float, norm: str = "linf") -> float:
        """Worst-case robust accuracy at ``eps`` of ``norm``. Raises KeyError when the suite has no such budget."""
        for w in self.worst_case:
            if w.norm == norm and abs(w.eps - eps) <= 1e-12 * max(1.0, abs(eps)):
                return w.accuracy
        raise KeyError(f"no worst case at {norm} eps {eps:g}")

    def to_dict(self) -> dict[str, Any]:
        return self.meta

    def __getitem__(self, key: str) -> Any:
        return self.meta[key]
