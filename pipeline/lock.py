"""One lock for every output folder: shard, embed, a training run, fsar-eval's outputs and
fsar-reproduce's results. A second process that asks for a held folder is refused at once,
with one line naming the holder; a folder whose holder died is taken over, saying so.

The lock is the kernel's (flock on the folder itself), so it is released however the process
ends; beside it the holder writes `.fsar-lock.json` (command, host, pid, since), which a
refused process reads to name it. The file is removed on release; a file left behind says a
run was killed, and the next run says whose lock it took over. Where the file system has no
such locks (some network mounts), runs go unguarded.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HOLDER = ".fsar-lock.json"


class FolderBusy(RuntimeError):
    """Another live process holds the folder (a user error: exit 2)."""


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "an unknown time"
    return f"{holder.get('command', 'another fsar run')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {since})"


def _read_holder(folder: Path) -> dict | None:
    try:
        return json.loads((folder / HOLDER).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def hold(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `folder` (made if need be) for the length of a run of `what` (e.g. "fsar-train").

    Raises:
        FolderBusy: another live process holds `folder`; the message names it.
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
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            holder = _read_holder(folder)
            who = _describe(holder) if holder else f"another {what} run"
            raise FolderBusy(f"{folder} is in use by {who}: let it end, or choose another folder") from None
        except OSError:  # no locks on this file system
            pass
        if locked:
            stale = _read_holder(folder)
            if stale is not None:
                warnings.warn(f"{folder}: took over the lock of {_describe(stale)}, which ended without releasing it", stacklevel=3)
            record = {"command": what, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "argv": sys.argv}
            tmp = folder / f".{HOLDER}.partial"
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, folder / HOLDER)
        try:
            yield
        finally:
            if locked:
                (folder / HOLDER).unlink(missing_ok=True)
    finally:
        os.close(fd)
        if made:  # a run that stopped before writing leaves no empty folder
            try:
                folder.rmdir()
            except OSError:  # not empty: the run's output
                pass
