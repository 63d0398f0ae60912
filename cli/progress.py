"""Progress of the long-running commands, and warnings shown as they come.

On a terminal: a rich progress bar with item rate and time left. Otherwise (nohup, a batch
job, `> log`): a plain line every FSAR_PROGRESS_INTERVAL seconds (default 30) while the
work goes on, and one at its end, so that a log shows the work moving.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)  # a message stays one line in a log, however long


class RateColumn(ProgressColumn):
    """Items per second, e.g. '41.2 videos/s': the task's `rate` field where it has one, else
    rich's estimate over its recent updates."""

    def __init__(self, unit: str) -> None:
        super().__init__(table_column=Column(no_wrap=True))  # a narrow log line cuts the bar, not "steps/s" onto a line of its own
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.fields.get("rate", task.finished_speed or task.speed)
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the task's `rate` field, e.g. '0:01:05'."""

    def render(self, task) -> Text:
        rate = task.fields.get("rate")
        if task.finished:
            return Text("0:00:00", style="progress.remaining")
        if not rate or task.total is None:
            return Text("-:--:--", style="progress.remaining")
        return Text(str(timedelta(seconds=round((task.total - task.completed) / rate))), style="progress.remaining")


class FailuresColumn(ProgressColumn):
    """Failures so far, in red once there are any."""

    def render(self, task) -> Text:
        n = task.fields.get("failures")
        if n is None:
            return Text("")
        return Text(f"{n} failed", style="red" if n else "dim")


DEFAULT_INTERVAL = 30.0


def progress_interval() -> float:
    """Seconds between two progress lines in a log: FSAR_PROGRESS_INTERVAL, default 30."""
    raw = os.environ.get("FSAR_PROGRESS_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"FSAR_PROGRESS_INTERVAL must be a number of seconds > 0, got {raw!r}")
    return value


class Rate:
    """Items per second of this run: the items done since the last update that found none new
    (items already done when the run started, such as finished shards skipped, do not count,
    nor the time before work began: a caller may call again once its workers are up), over
    the time since that update. Work finishes in bursts (a shard of videos at a time, several
    workers at once), which an estimate over the last few updates turns into rates many
    times the real one."""

    def __init__(self) -> None:
        self.d0: int | None = None
        self.t0 = 0.0

    def update(self, done: int, now: float) -> float | None:
        if self.d0 is None or done == self.d0:
            self.d0, self.t0 = done, now
        return (done - self.d0) / (now - self.t0) if now > self.t0 and done > self.d0 else None


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class LineProgress:
    """Progress as plain lines on the console, for output that is not a terminal: one every
    `interval` seconds from a background thread while the work goes on (also while no update
    comes, so a log shows the command alive), and one when it ends. A line reads, e.g.

        sharding: 128/256 videos (50%), 12.8 videos/s, 1 failed, 0:00:10 elapsed, 0:00:10 left

    Use as a context manager; `update` may be called from any thread.
    """

    def __init__(self, description: str, unit: str, interval: float, get_time: Callable[[], float] | None = None, total: int | None = None) -> None:
        self.description, self.unit, self.interval = description, unit, interval
        self.get_time = get_time or time.monotonic
        self.start = self.get_time()
        self.done, self.total, self.failures, self.stats = 0, total, None, ""
        self.rate: float | None = None
        self._meter = Rate()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, done: int, total: int | None, failures: int | None = None, stats: str = "") -> None:
        with self._lock:
            self.rate = self._meter.update(done, self.get_time())
            self.done, self.total, self.failures, self.stats = done, total, failures, stats

    def line(self) -> str:
        """The current state as one line."""
        with self._lock:
            done, total, rate = self.done, self.total, self.rate
            parts = [f"{done}/{total} {self.unit}" + (f" ({100 * done / total:.0f}%)" if total else "") if total is not None else f"{done} {self.unit}"]
            parts.append(f"{rate:.1f} {self.unit}/s" if rate else f"- {self.unit}/s")
            if self.failures is not None:
                parts.append(f"{self.failures} failed")
            if self.stats:
                parts.append(self.stats)
            parts.append(f"{_clock(self.get_time() - self.start)} elapsed")
            if total is not None and done >= total:
                parts.append("done")
            elif rate and total is not None:
                parts.append(f"{_clock((total - done) / rate)} left")
            else:
                parts.append("-:--:-- left")
        return f"{self.description}: " + ", ".join(parts)

    def emit(self) -> None:
        console.print(self.line(), markup=False, highlight=False, soft_wrap=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()

    def __enter__(self) -> "LineProgress":
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.description}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.emit()


def plain_output() -> bool:
    """Whether progress goes to a log rather than a terminal."""
    return not console.is_terminal


@contextmanager
def progress_bar(description: str, unit: str, get_time: Callable[[], float] | None = None) -> Iterator[Callable[..., None]]:
    """Yield an `on_progress(done, total[, failures])` callback that drives a progress bar on
    stderr, or progress lines where stderr is not a terminal (see `LineProgress`).

    The rate is `Rate`'s; the time left follows from it.
    """
    if plain_output():
        with LineProgress(description, unit, progress_interval(), get_time) as lines:
            yield lambda done, total, failures=None: lines.update(done, total, failures)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=None),  # takes the width left over, so a narrow line shortens the bar
        MofNCompleteColumn(),
        RateColumn(unit),
        FailuresColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        console=console,
        transient=False,
        get_time=get_time,
    ) as bar:
        task = bar.add_task(description, total=None, failures=None)
        meter = Rate()

        def update(done: int, total: int, failures: int | None = None) -> None:
            bar.update(task, completed=done, total=total, failures=failures, rate=meter.update(done, bar.get_time()))

        yield update


class TrainStats:
    """The loss and accuracy of training steps, smoothed (exponentially, 0.9), and the last
    validation accuracy: 'loss 1.234 acc 56.7% val 48.0%'."""

    def __init__(self) -> None:
        self.smooth: dict[str, float] = {}

    def update(self, metrics: dict) -> str:
        smooth = self.smooth
        for k in ("loss", "accuracy"):
            if k in metrics:
                smooth[k] = metrics[k] if k not in smooth else 0.9 * smooth[k] + 0.1 * metrics[k]
        stats = f"loss {smooth.get('loss', float('nan')):.3f} acc {smooth.get('accuracy', float('nan')):.1f}%"
        if "val_accuracy" in metrics:
            smooth["val"] = metrics.get("val_accuracy_fused", metrics["val_accuracy"])
        if "val" in smooth:
            stats += f" val {smooth['val']:.1f}%"
        return stats


@contextmanager
def train_bar(total: int, get_time: Callable[[], float] | None = None) -> Iterator[Callable[[int, dict], None]]:
    """Yield an `on_step(done, metrics)` callback: a progress bar with steps/s, loss and accuracy,
    or progress lines with the same where stderr is not a terminal."""
    stats = TrainStats()
    if plain_output():
        with LineProgress("train", "steps", progress_interval(), get_time, total) as lines:
            yield lambda done, metrics: lines.update(done, total, stats=stats.update(metrics))
        return
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(bar_width=None),  # takes the width left over, so a narrow line shortens the bar
        MofNCompleteColumn(),
        RateColumn("steps"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=total, stats="")
        yield lambda done, metrics: bar.update(task, completed=done, stats=stats.update(metrics))


@contextmanager
def warnings_to_console() -> Iterator[None]:
    """Show each warning at once as a 'warning: ...' line on the console, above a live progress
    bar (a stage may warn, say, that it waits for nodes to join), instead of Python's
    file-and-line form; a warning that weights are random in bold red. Python's filters apply."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if "RANDOM weights" in text:
            console.print(f"WARNING: {text}", style="bold red", markup=False, highlight=False)
        else:
            console.print(f"warning: {text}", style="yellow", markup=False, highlight=False)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
