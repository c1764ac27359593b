"""User-facing errors: one clear line, no traceback.

Everything the user can get wrong (paths, data layout, corrupt images, option values, a checkpoint from
another model, a full disk) raises a subclass of :class:`RobustcarsError`. The CLI prints ``error: <msg>``
on stderr and exits with status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class RobustcarsError(Exception):
    """Base class of every error caused by input the user can fix."""

    def __init__(self, message: str) -> None:
        # torch's DataLoader re-raises a worker's exception as ``type(exc)(text)`` where ``text`` is the
        # whole worker traceback; keep only the original one-line message.
        if "Original Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


class DataError(RobustcarsError):
    """Missing/empty data folder, unknown layout, unreadable image, class mismatch."""


class CheckpointError(RobustcarsError):
    """Missing, corrupt or incompatible checkpoint."""


class ConfigError(RobustcarsError):
    """An option value outside its allowed set or range."""


class StorageError(RobustcarsError):
    """A write failed (e.g. disk full); the previous file, if any, is kept."""
