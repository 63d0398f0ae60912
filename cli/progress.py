"""A rich progress bar with item rate, and warnings shown as they come, shared by the long-running commands."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column
from rich.text import Text

console = Console(stderr=True)


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


@contextmanager
def progress_bar(description: str, unit: str, get_time: Callable[[], float] | None = None) -> Iterator[Callable[..., None]]:
    """Yield an `on_progress(done, total[, failures])` callback that drives a progress bar on stderr.

    The rate counts the items done since the last call that found none new (items already
    done when the run started, such as finished shards skipped, do not count, nor the time
    before work began: a caller may call again once its workers are up), over the time since
    that call; the time left follows from it. Work finishes in bursts (a shard of videos at
    a time, several workers at once), which rich's estimate over the last few updates turns
    into rates many times the real one.
    """
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
        d0, t0 = None, 0.0  # items done, and the time, at the last call before any progress

        def update(done: int, total: int, failures: int | None = None) -> None:
            nonlocal d0, t0
            now = bar.get_time()
            if d0 is None or done == d0:
                d0, t0 = done, now
            rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
            bar.update(task, completed=done, total=total, failures=failures, rate=rate)

        yield update


@contextmanager
def train_bar(total: int) -> Iterator[Callable[[int, dict], None]]:
    """Yield an `on_step(done, metrics)` callback: a progress bar with steps/s, loss and accuracy."""
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
        smooth: dict[str, float] = {}

        def update(done: int, metrics: dict) -> None:
            for k in ("loss", "accuracy"):
                if k in metrics:
                    smooth[k] = metrics[k] if k not in smooth else 0.9 * smooth[k] + 0.1 * metrics[k]
            stats = f"loss {smooth.get('loss', float('nan')):.3f} acc {smooth.get('accuracy', float('nan')):.1f}%"
            if "val_accuracy" in metrics:
                smooth["val"] = metrics.get("val_accuracy_fused", metrics["val_accuracy"])
            if "val" in smooth:
                stats += f" val {smooth['val']:.1f}%"
            bar.update(task, completed=done, stats=stats)

        yield update


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
