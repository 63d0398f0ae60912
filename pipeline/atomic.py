"""Atomic file writes: a file appears under its name complete, or not at all.

Writers fill a hidden sibling (`.NAME.partial`) and rename it into place; a killed
process can leave only such partial files, which the next run removes. A run holds its
output folder (`one_run_at_a_time`), so that no second run removes them while it writes.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; rename it onto `path` when the block succeeds.

    Raises:
        OSError: as raised in the block, with `path` as its file name where it named none (a
            write or flush that fails on a full disk names no file).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def remove_stale_partials(root: str | os.PathLike) -> None:
    """Delete partial files left under `root` by a killed run (only one run may use `root` at a time)."""
    for stale in Path(root).rglob(".*.partial"):
        stale.unlink()


@contextmanager
def one_run_at_a_time(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `folder` (made if need be) for the length of a run: another run that asks for it
    meanwhile fails at once, instead of removing this one's partial files and writing the
    same files beside it.

    The lock is the kernel's (flock on the folder itself: no file is added), released when
    the process ends however it ends, so a killed run leaves none behind. Where the file
    system has no such locks (some network mounts) runs go unguarded.

    Raises:
        RuntimeError: another run holds `folder`.
    """
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no such lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)  # not inherited by child processes (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{folder} is in use by another {what} run, still going; let it end, or choose another folder") from None
        except OSError:  # no locks here
            pass
        yield
    finally:
        os.close(fd)
        if made:  # a run that stopped before writing leaves no empty folder
            try:
                folder.rmdir()
            except OSError:  # not empty: the run's output
                pass
