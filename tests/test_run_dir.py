"""A run directory: it claims a run only once it holds one; it finds its data from anywhere, by
identity when the data moved; Ctrl-C says how to go on; its files have the umask's permissions."""

from __future__ import annotations

import dataclasses
import csv
import json
import os
import shlex
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from fsar.train.configs import get_config
from fsar.train.trainer import train


def tiny(cache, **changes):
    """3-way 1-shot on the miniature chain, four steps, checkpoints at steps 2 and 4."""
    base = dataclasses.replace(get_config("tiny"), cache=str(cache) if cache else None, way=3, shot=1, query=1, threads=1)
    return dataclasses.replace(base, **changes)


def train_cli(*args: str):
    from fsar.cli.train import app

    return CliRunner().invoke(app, list(args))


def eval_cli(*args: str):
    from fsar.cli.eval import app

    return CliRunner().invoke(app, list(args))


def one_line(output: str) -> str:
    return " ".join(output.split())


# --- a failed start claims nothing -----------------------------------------------------------

def test_a_failed_start_leaves_nothing_and_the_rerun_needs_no_resume(tiny_chain, tmp_path):
    run = tmp_path / "run"
    # Too many classes per episode for the data: the first step fails.
    with pytest.raises(ValueError, match="need 20 classes"):
        train(tiny(tiny_chain["cache"], way=20), run)
    assert not run.exists()  # nothing claims a run: the folder this start made is gone
    summary = train(tiny(tiny_chain["cache"]), run)  # no --resume needed
    assert summary["best_step"] > 0 and (run / "checkpoints/last.json").exists()


def test_what_a_killed_start_left_is_replaced_by_the_next_start(tiny_chain, tmp_path):
    """A start killed before its first checkpoint (no chance to clean up) leaves its config; the
    next start, with another config and with or without --resume, begins afresh."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(tiny(tiny_chain["cache"], lr=0.01).to_json())
    (run / "tensorboard").mkdir()
    (run / "train_metrics.csv").write_text("step,loss\n1,99\n")
    train(tiny(tiny_chain["cache"]), run, resume=True)
    assert json.loads((run / "config.json").read_text())["lr"] == tiny(None).lr
    rows = list(csv.DictReader(open(run / "train_metrics.csv")))
    assert rows[0]["step"] == "1" and float(rows[0]["loss"]) != 99  # this start's row, not the killed one's


def test_a_folder_with_someone_elses_config_is_left_alone(tiny_chain, tmp_path):
    (tmp_path / "config.json").write_text('{"theirs": 1}')
    with pytest.raises(FileExistsError, match="not a training run's config"):
        train(tiny(tiny_chain["cache"]), tmp_path)
    assert (tmp_path / "config.json").read_text() == '{"theirs": 1}'


def test_a_corrupt_cache_stops_fsar_train_in_one_line_and_leaves_no_run(tiny_chain, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(tiny_chain["cache"].read_bytes()[:4096])  # a copy cut short
    run = tmp_path / "run"
    result = train_cli("--out", str(run), "--cache", str(bad), "--config", "tiny", "--way", "3", "--set", "threads=1")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(bad) in error[0] and "re-run `fsar-data embed`" in error[0]
    assert not (run / "config.json").exists()
    ok = train_cli("--out", str(run), "--cache", str(tiny_chain["cache"]), "--config", "tiny", "--way", "3", "--set", "query=1", "--set", "threads=1")
    assert ok.exit_code == 0, ok.output


def test_a_second_run_in_the_same_folder_fails_at_once(tiny_chain, tmp_path):
    from fsar.pipeline.lock import hold

    with hold(tmp_path / "run", "fsar-train"):  # as a run in another process holds it
        with pytest.raises(RuntimeError, match=rf"in use by fsar-train \(pid {os.getpid()} on "):
            train(tiny(tiny_chain["cache"]), tmp_path / "run")


# --- a run finds its data ---------------------------------------------------------------------

@contextmanager
def cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def test_a_run_finds_its_cache_from_any_directory_and_by_identity_once_it_moved(tiny_chain, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_chain["cache"], data / "c.h5")
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    with cwd(work):
        train(tiny("../data/c.h5"), "run")  # paths relative to where training runs
    run = work / "run"
    assert json.loads((run / "config.json").read_text())["cache"] == str(data / "c.h5")
    with cwd(elsewhere):
        ok = eval_cli(str(run), "--way", "3", "--episodes", "50")
        assert ok.exit_code == 0, ok.output
        # Not a terminal: the progress of each phase, as lines.
        assert "encoding: 18/18 videos (100%)" in ok.output and "scoring: 100/100 episodes (100%)" in ok.output
        first = json.loads((run / "eval-test-3w1s.json").read_text())["accuracy"]

        (data / "c.h5").rename(data / "moved.h5")
        gone = eval_cli(str(run), "--way", "3", "--episodes", "50")
        assert gone.exit_code == 2 and "Traceback" not in gone.output
        assert str(data / "c.h5") in one_line(gone.output) and "pass --cache" in one_line(gone.output)

        moved = eval_cli(str(run), "--way", "3", "--episodes", "50", "--cache", str(data / "moved.h5"))
        assert moved.exit_code == 0, moved.output
        assert json.loads((run / "eval-test-3w1s.json").read_text())["accuracy"] == first

        other = data / "other.h5"  # the same videos, other embeddings
        shutil.copy(data / "moved.h5", other)
        with h5py.File(other, "r+") as f:
            f["test/frames"][0] = np.zeros_like(f["test/frames"][0])
        wrong = eval_cli(str(run), "--way", "3", "--episodes", "50", "--cache", str(other))
        assert wrong.exit_code == 2 and "not the embedding cache this run trained on" in one_line(wrong.output)
        assert "split test: the embeddings" in one_line(wrong.output)

        # Resuming with the moved cache continues the run (the same data), and records the new path.
        train(tiny(str(data / "moved.h5"), iterations=6), run, resume=True)
        assert json.loads((run / "data.json").read_text())["path"] == str(data / "moved.h5")
        with pytest.raises(ValueError, match="not the embedding cache this run trained on"):
            train(tiny(str(other), iterations=8), run, resume=True)


def test_a_shard_folder_is_recognised_by_identity(tiny_chain, tmp_path):
    from fsar.train.rundata import differences, shard_identity

    copy = tmp_path / "shards"
    shutil.copytree(tiny_chain["shards"], copy)
    assert differences(shard_identity(tiny_chain["shards"]), shard_identity(copy)) == []
    tar = sorted((copy / "test").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # inside the first member's content
    tar.write_bytes(bytes(data))
    assert differences(shard_identity(tiny_chain["shards"]), shard_identity(copy)) == ["the shard files"]


def test_eval_says_which_data_a_run_takes(tiny_chain, tmp_path):
    train(tiny(tiny_chain["cache"]), tmp_path / "run")
    result = eval_cli(str(tmp_path / "run"), "--shards", str(tiny_chain["shards"]))
    assert result.exit_code == 2 and "pass --cache, not --shards" in one_line(result.output)


# --- Ctrl-C and permissions ------------------------------------------------------------------

def interrupt_at(step: int):
    """A stand-in for fsar.cli.progress.train_bar whose callback raises Ctrl-C after `step` steps."""

    @contextmanager
    def bar(total: int, get_time=None):
        def on_step(done, metrics):
            if done == step:
                raise KeyboardInterrupt

        yield on_step

    return bar


def test_ctrl_c_in_fsar_train_says_what_was_kept_and_the_command_that_resumes(tiny_chain, tmp_path, monkeypatch):
    import fsar.cli.progress

    run = tmp_path / "run"
    args = ["--out", str(run), "--cache", str(tiny_chain["cache"]), "--config", "tiny", "--way", "3", "--set", "query=1", "--set", "threads=1"]
    with monkeypatch.context() as m:
        m.setattr(fsar.cli.progress, "train_bar", interrupt_at(3))
        cut = train_cli(*args)
    assert cut.exit_code == 130, cut.output
    text = cut.output
    assert "checkpoint at step 2 is kept" in one_line(text)
    command = next(line.strip() for line in text.splitlines() if line.strip().startswith("fsar-train "))
    argv = shlex.split(command)
    assert argv[-1] == "--resume" and str(run.resolve()) in argv
    resumed = train_cli(*argv[1:])  # the printed command, as the user pastes it
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 4

    early = tmp_path / "early"
    with monkeypatch.context() as m:
        m.setattr(fsar.cli.progress, "train_bar", interrupt_at(1))
        stopped = train_cli(*[str(early) if a == str(run) else a for a in args])
    assert stopped.exit_code == 130 and "nothing was kept" in one_line(stopped.output)
    assert not early.exists()


def test_checkpoints_and_weights_have_the_umask_permissions(tiny_chain, tmp_path):
    old = os.umask(0o022)
    try:
        train(tiny(tiny_chain["cache"]), tmp_path / "run")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert "last.safetensors" in modes and "best.safetensors" in modes and "last.optim.safetensors" in modes
    assert set(modes.values()) == {0o644}, modes
