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
from dataclasses import dataclass
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
