"""Paths given by a browser are accepted only inside the folders given on the command line."""

from __future__ import annotations

import re
from pathlib import Path

from robustcars.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class OutsideRoot(ConfigError):
    """A path that resolves outside its allowed root (``..``, an absolute path elsewhere, a symlink escape)."""


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved (symlinks followed), refused unless it stays inside ``root``.

    Raises:
        OutsideRoot: the resolved path leaves ``root``.
    """
    root = root.resolve()
    candidate = Path(relative)
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if target != root and root not in target.parents:
        raise OutsideRoot(f"path {relative!r} is outside the allowed folder")
    return target


def check_name(name: str, what: str = "name") -> str:
    """A plain folder name (letters, digits, ``_ . -``; no separators, no leading dot).

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} must be a folder name of letters, digits, '_', '-', '.', got {name!r}")
    return name
