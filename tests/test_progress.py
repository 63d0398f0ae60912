"""The progress bar's rate and time left, on a fake clock."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

import cli.progress as P


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def screen(monkeypatch):
    console = Console(record=True, width=160, force_terminal=False, color_system=None)
    monkeypatch.setattr(P, "console", console)
    return console


def _last_line(console: Console) -> str:
    return [line for line in console.export_text().splitlines() if line.strip()][-1]


def test_rate_is_this_runs_items_over_its_time_even_when_they_come_in_bursts(screen):
    clock = Clock()
    with P.progress_bar("sharding", "videos", get_time=clock) as update:
        update(0, 256, 0)
        clock.t = 9.9  # two workers finish a shard each a moment apart
        update(64, 256, 0)
        clock.t = 10.0
        update(128, 256, 1)
    line = _last_line(screen)
    assert "12.8 videos/s" in line  # 128 in 10 s; an estimate over the last updates says hundreds
    assert "1 failed" in line
    assert "0:00:10" in line  # 128 left at 12.8/s


def test_items_already_done_when_the_run_starts_do_not_count(screen):
    clock = Clock()
    with P.progress_bar("sharding", "videos", get_time=clock) as update:
        update(200, 300, 0)  # finished shards skipped on a resumed run
        clock.t = 20.0
        update(250, 300, 0)
    line = _last_line(screen)
    assert "2.5 videos/s" in line and "0:00:20" in line and "250/300" in line


def test_rate_is_timed_from_the_last_call_before_any_progress(screen):
    clock = Clock()
    with P.progress_bar("sharding", "videos", get_time=clock) as update:
        update(0, 46, 0)
        clock.t = 4.0  # the workers are up
        update(0, 46, 0)
        clock.t = 6.0
        update(23, 46, 0)
    line = _last_line(screen)
    assert "11.5 videos/s" in line and "0:00:02" in line and "0:00:06" in line  # rate, time left, elapsed


def test_no_rate_before_anything_is_done(screen):
    clock = Clock()
    with P.progress_bar("embedding", "shards", get_time=clock) as update:
        update(0, 4, 0)
        clock.t = 5.0
        update(0, 4, 0)
    line = _last_line(screen)
    assert "- shards/s" in line and "-:--:--" in line
    assert not re.search(r"\d shards/s", line)
