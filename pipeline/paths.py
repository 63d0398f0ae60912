"""Paths as every worker sees them."""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike) -> Path:
    """`path` with `~` expanded, made absolute against this process's cwd (symlinks kept):
    Ray workers, on a joined cluster above all, do not share the driver's cwd."""
    return Path(path).expanduser().absolute()
