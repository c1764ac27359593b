"""One writer per output folder: an exclusive ``fcntl.flock`` on ``FOLDER/.robustcars.lock``.

The lock is held by the open file, so the kernel releases it when the process ends in any way (kill -9
included): a stale lock file never blocks a later run. The file holds the holder's PID and command, which a
refused second writer names in its one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from robustcars.errors import ConfigError, StorageError

LOCK_NAME = ".robustcars.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return f"process {text}" if text else "another process"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if needed) for the block; ``what`` names the
    guarded output in the refusal.

    Raises:
        ConfigError: another process holds the lock (the message names its PID and command).
        StorageError: the lock file cannot be written (e.g. a read-only folder).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{what} is in use by {_holder(path)}; wait for it to finish or choose another "
                              "--out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} ({' '.join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]})\n".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, *, create: bool = True) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (its ``.robustcars.lock``) for the block; creates the folder.

    Raises:
        ConfigError: ``folder`` is a file, or another process holds the lock (named in the message).
        StorageError: the folder cannot be created or written (e.g. read-only).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output folder {folder} is a file; choose another --out")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    with file_lock(folder / LOCK_NAME, what=str(folder)):
        yield folder


def process_lock(folder: str | os.PathLike, d) -> contextlib.ExitStack:
    """:func:`output_lock` taken by the main process only; under torchrun every rank gets the same answer
    (``d`` is a :class:`robustcars.distributed.Dist`), so a refused lock stops all ranks, none hangs.

    Raises:
        ConfigError: the folder is busy, a file, or cannot be written (the main process's message).
    """
    from robustcars import distributed as D

    stack = contextlib.ExitStack()
    error = None
    if d.is_main:
        try:
            stack.enter_context(output_lock(folder))
        except (ConfigError, StorageError) as exc:
            error = exc
    shared = D.broadcast(None if error is None else str(error), d)
    if error is not None:
        raise error
    if shared is not None:
        raise ConfigError(shared)
    return stack
