"""Atomic file writes: a file appears under its name complete, or not at all.

Writers fill a hidden sibling (`.NAME.partial`) and rename it into place; a killed
process can leave only such partial files, which the next run removes. A run holds its
output folder (`fsar.pipeline.lock.hold`), so that no second run removes them while it writes.
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
        if tmp.is_file():  # some writers (safetensors) create their file 0600: give it the umask's mode, as any other output
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (setting it to read it would race with
    other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the only other way to read it
    os.umask(mask)
    return mask


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Fail now, not after minutes of work, when `folder` (or, where it does not exist yet, the
    folder it would be made in) cannot be written: a file is created there and removed.

    Raises:
        ValueError: naming the folder, the reason and `what` to change (e.g. "--out").
    """
    import tempfile

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {folder}: {probe} is a file, not a folder; choose another {what}")
    try:
        fd, name = tempfile.mkstemp(prefix=".fsar-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ValueError(f"cannot write in {probe} ({e.strerror or e}): choose another {what}, or make {probe} writable") from None


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
