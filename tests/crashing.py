"""Stage workers whose process dies where a crash plan says, as on a segfault in a decoder's
native code or an OOM kill. Ray actors read the plan (a JSON file named in their
environment) themselves, since a test's module state does not reach them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from fsar.pipeline.embed.worker import EmbedWorker
from fsar.pipeline.shard.worker import ShardWorker

CRASH_ENV = "FSAR_TEST_CRASH_PLAN"  # the path of the plan file (see `write_crash_plan`)
HANG_SECONDS = 120  # long past any test's timeout, but bounded: a hang not stopped ends, and its video then decodes


def write_crash_plan(path: Path, videos: dict[str, str] | None = None, shards: tuple[str, ...] = (), embed: dict[str, str] | None = None) -> Path:
    """Tell the workers whose environment names `path` in CRASH_ENV where to die.

    Args:
        videos: `CrashingWorker` dies with signal `videos[id]` (a name: SIGSEGV ...) on that video,
            or with "hang" sleeps `HANG_SECONDS` there, as a decoder stuck in native code.
        shards: `CrashingWorker` dies at the start of each of these shards (`split/shard-000000`).
        embed: `CrashingEmbedWorker` dies (SIGKILL) on shard `split/shard-000000.tar`: "once", the first
            time only, or "always".
    """
    path.write_text(json.dumps({"videos": videos or {}, "shards": list(shards), "embed": embed or {}}))
    return path


def _crash_plan() -> dict:
    path = os.environ.get(CRASH_ENV)
    return json.loads(Path(path).read_text()) if path else {}


class CrashingWorker(ShardWorker):
    """A shard worker that dies where its crash plan says."""

    def process(self, task, retry_failed=False, crashed=None):
        if f"{task.split}/{task.name()}" in _crash_plan().get("shards", ()):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(task, retry_failed=retry_failed, crashed=crashed)

    def _video(self, entry, task):
        sig = _crash_plan().get("videos", {}).get(entry.id)
        if sig == "hang":
            Path(os.environ[CRASH_ENV]).with_name(f"hung-{os.getpid()}").touch()  # tells a test which process hangs
            time.sleep(HANG_SECONDS)
        elif sig:
            os.kill(os.getpid(), getattr(signal, sig))
        return super()._video(entry, task)


class CrashingEmbedWorker(EmbedWorker):
    """An embed worker that dies where its crash plan says (once: a flag file beside the plan remembers)."""

    def process(self, shard, part):
        name = f"{Path(shard).parent.name}/{Path(shard).name}"
        how = _crash_plan().get("embed", {}).get(name)
        if how:
            flag = Path(os.environ[CRASH_ENV]).with_name("died-" + name.replace("/", "-"))
            if how == "always" or not flag.exists():
                flag.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().process(shard, part)
