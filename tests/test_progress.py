"""The progress bar's rate and time left, on a fake clock; progress lines in a log."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

import fsar.cli.progress as P


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def screen(monkeypatch):
    """A terminal: progress shows as a bar."""
    console = Console(record=True, width=160, force_terminal=True, color_system=None)
    monkeypatch.setattr(P, "console", console)
    return console


@pytest.fixture
def log(monkeypatch):
    """Output that is not a terminal (nohup, a batch job, `> log`), 80 columns as rich assumes there."""
    console = Console(record=True, width=80, force_terminal=False, color_system=None, soft_wrap=True)
    monkeypatch.setattr(P, "console", console)
    return console


def _lines(console: Console) -> list[str]:
    return [line for line in console.export_text().splitlines() if line.strip()]


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


# --- a log: plain lines at a steady interval ---------------------------------------------------

def test_a_log_gets_a_line_per_interval_with_done_total_rate_and_time_left(log):
    clock = Clock()
    lines = P.LineProgress("sharding", "videos", 30.0, get_time=clock)
    lines.update(0, 256, 0)  # the workers are up
    clock.t = 10.0
    lines.update(128, 256, 1)
    lines.emit()
    assert _lines(log) == ["sharding: 128/256 videos (50%), 12.8 videos/s, 1 failed, 0:00:10 elapsed, 0:00:10 left"]


def test_the_lines_come_on_their_own_while_no_update_comes(log, monkeypatch):
    import time

    monkeypatch.setenv("FSAR_PROGRESS_INTERVAL", "0.05")
    with P.progress_bar("embedding", "shards") as update:
        update(0, 4, 0)
        time.sleep(0.4)  # one shard taking long: the log still shows the command alive
        update(4, 4, 0)
    lines = _lines(log)
    assert len(lines) >= 4 and all(line.startswith("embedding: ") for line in lines)
    assert lines[0].startswith("embedding: 0/4 shards (0%)") and lines[-1].startswith("embedding: 4/4 shards (100%)") and lines[-1].endswith("done")
    assert all(len(line) > 0 for line in lines) and not any("━" in line for line in lines)  # no bar in a log


def test_training_lines_carry_the_loss_and_validation(log, monkeypatch):
    clock = Clock()
    monkeypatch.setenv("FSAR_PROGRESS_INTERVAL", "3600")  # only the closing line
    with P.train_bar(100, get_time=clock) as on_step:
        clock.t = 5.0
        on_step(1, {"loss": 2.0, "accuracy": 40.0})
        clock.t = 25.0
        on_step(50, {"loss": 1.0, "accuracy": 60.0, "val_accuracy": 55.0})
    (line,) = _lines(log)
    assert line == "train: 50/100 steps (50%), 2.5 steps/s, loss 1.900 acc 42.0% val 55.0%, 0:00:25 elapsed, 0:00:20 left"


def test_the_interval_is_checked(log, monkeypatch):
    monkeypatch.setenv("FSAR_PROGRESS_INTERVAL", "often")
    with pytest.raises(ValueError, match="FSAR_PROGRESS_INTERVAL must be a number of seconds > 0, got 'often'"):
        with P.progress_bar("sharding", "videos"):
            pass
    monkeypatch.setenv("FSAR_PROGRESS_INTERVAL", "2.5")
    assert P.progress_interval() == 2.5
    monkeypatch.delenv("FSAR_PROGRESS_INTERVAL")
    assert P.progress_interval() == 30.0


def test_fsar_eval_shows_its_progress_in_a_log(tiny_chain, tmp_path, log):
    from typer.testing import CliRunner

    from fsar.cli.eval import app

    result = CliRunner().invoke(app, [str(tmp_path), "--cache", str(tiny_chain["cache"]), "--method", "otam", "--way", "3", "--episodes", "30"])
    assert result.exit_code == 0, result.output
    (line,) = _lines(log)[:1]
    assert line.startswith("evaluating otam: 30/30 episodes (100%)") and line.endswith("done")
