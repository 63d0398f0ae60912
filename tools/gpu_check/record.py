"""A section's record: its measurements and parts, each ok, failed or skipped with the reason,
written to disk after every change so that a section stopped at its budget keeps what it measured."""

from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STATUSES = ("ok", "failed", "skipped")


class Skip(Exception):
    """Raised by a section or a part that does not apply here (no GPU in the dry run, a package not installed)."""


class Failed(Exception):
    """Raised by a part whose measurements are recorded but whose outcome is a failure (e.g. out of memory)."""


def reason_of(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    if isinstance(e, (Skip, Failed)):
        return str(e)
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:400]}" if lines else type(e).__name__


class Recorder:
    """The JSON record of one section: `values` (measurements) and `parts` (name -> entry with a
    status, a reason and the part's own measurements), rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict = {"values": {}, "parts": {}}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.partial")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)

    def set(self, key: str, value) -> None:
        """Record a measurement of the section as a whole."""
        self.data["values"][key] = value
        self.write()

    @contextmanager
    def part(self, name: str, **labels) -> Iterator[dict]:
        """Run one part: its entry (labels plus what the block puts in it) ends ok, or skipped or
        failed with the reason; an exception in the block never leaves it, so the next part runs."""
        entry: dict = {**labels, "status": "running"}
        self.data["parts"][name] = entry
        self.write()
        t = time.perf_counter()
        try:
            yield entry
            entry["status"] = "ok"
        except Skip as e:
            entry.update(status="skipped", reason=reason_of(e))
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the section goes on
            entry.update(status="failed", reason=reason_of(e))
            if not isinstance(e, Failed):
                traceback.print_exc()  # into the section's log
        finally:
            entry["seconds"] = round(time.perf_counter() - t, 2)
            self.write()

    def finish(self, status: str, reason: str = "") -> None:
        self.data["status"], self.data["reason"] = status, reason
        self.write()


def section_status(record: dict) -> tuple[str, str]:
    """(status, reason) of a finished section from its record: what it said itself, else failed when
    a part failed, skipped when every part was skipped, ok otherwise."""
    parts = record.get("parts", {})
    failed = [n for n, p in parts.items() if p.get("status") == "failed"]
    if record.get("status") in ("failed", "skipped"):
        return record["status"], record.get("reason", "")
    if failed:
        first = parts[failed[0]].get("reason", "")
        return "failed", f"{len(failed)} of {len(parts)} parts failed; first: {failed[0]}: {first}"
    if parts and all(p.get("status") == "skipped" for p in parts.values()):
        return "skipped", "every part skipped; first: " + next(iter(parts.values())).get("reason", "")
    return "ok", ""


def stopped(record: dict, why: str) -> dict:
    """The record of a section that was stopped (budget) or died: parts still running are failed with `why`."""
    for p in record.get("parts", {}).values():
        if p.get("status") == "running":
            p.update(status="failed", reason=why)
    record["status"], record["reason"] = "failed", why
    return record
