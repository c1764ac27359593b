"""Atomic file writes: a temp file in the target folder, fsync, then ``os.replace``.

A crash or a full disk mid-write leaves the previous file intact and no half-written file behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from robustcars.errors import StorageError


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and rename it over ``path``.

    Raises:
        StorageError: the folder cannot be created or the write fails (disk full, permissions);
            the previous ``path``, if any, is left untouched and the temp file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}; the previous file is kept") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN is written as null, as JSON has no NaN)."""
    return write_text(path, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Iterable[str] | None = None
              ) -> Path:
    import io as _io

    buf = _io.StringIO()
    names = list(fieldnames) if fieldnames is not None else list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return write_text(path, buf.getvalue())


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """The per-epoch rows of a run's ``history.csv`` as floats (``True``/``False`` of older files as 1.0/0.0).

    Raises:
        OSError: the file cannot be read.
        ValueError: a cell is neither a number nor a boolean.
    """
    flags = {"True": 1.0, "False": 0.0}
    with open(path, encoding="utf-8") as fh:
        return [{k: flags[v] if v in flags else float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    if isinstance(obj, Mapping):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
