"""User errors in every command: one line naming the file and the remedy, exit 2, no traceback;
--debug and FSAR_DEBUG=1 show the traceback; outputs are checked writable before the work."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsar.train.configs import get_config
from fsar.train.trainer import train


def invoke(app, *args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def one_line(output: str) -> str:
    return " ".join(output.split())


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@contextmanager
def unwritable(folder: Path):
    """`folder` made so that nothing can be written in it, even by root (who ignores permission
    bits): immutable where we are root, else read-only by its mode; skips where neither works."""
    root = os.geteuid() == 0
    if root:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root, and this file system cannot make a folder immutable (chattr +i)")
    else:
        folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_text("x")
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("cannot make a folder read-only here")
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    with unwritable(folder):
        yield folder


@pytest.fixture(scope="module")
def run(tiny_chain, tmp_path_factory) -> Path:
    """A trained miniature run (3-way 1-shot, four steps)."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(dataclasses.replace(get_config("tiny"), cache=str(tiny_chain["cache"]), way=3, shot=1, query=1, threads=1), out)
    return out


@pytest.fixture
def corrupt(tiny_chain, tmp_path) -> Path:
    bad = tmp_path / "damaged.h5"
    bad.write_bytes(tiny_chain["cache"].read_bytes()[:4096])
    return bad


def test_a_read_only_out_stops_fsar_train_before_it_starts(tiny_chain, read_only):
    from fsar.cli.train import app

    result = invoke(app, "--out", str(read_only / "run"), "--cache", str(tiny_chain["cache"]), "--config", "tiny", "--way", "3")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert f"cannot write in {read_only}" in line and "choose another --out" in line


def test_fsar_eval_checks_it_can_write_before_it_evaluates(run, tmp_path, monkeypatch):
    import fsar.train.evaluate_run
    from fsar.cli.eval import app

    ro_run = tmp_path / "run"
    shutil.copytree(run, ro_run)
    called = []
    monkeypatch.setattr(fsar.train.evaluate_run, "evaluate_run", lambda *a, **k: called.append(1))
    with unwritable(ro_run):
        result = invoke(app, str(ro_run), "--way", "3", "--episodes", "50")
    assert result.exit_code == 2, result.output
    assert f"cannot write in {ro_run}" in one_line(result.output) and not called


def test_a_read_only_out_stops_the_shard_stage_in_one_line(tiny_chain, read_only):
    from fsar.cli.data import app

    result = invoke(app, "shard", "synth", "--root", str(tiny_chain["root"] / "synth"), "--out", str(read_only / "shards"), "--workers", "1")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and f"cannot write in {read_only}" in one_line(result.output)


@pytest.mark.parametrize("command", ["eval-run", "eval-baseline", "train"])
def test_a_corrupt_cache_is_one_line_naming_it_and_the_remedy(command, run, corrupt, tmp_path):
    from fsar.cli.eval import app as eval_app
    from fsar.cli.train import app as train_app

    args = {
        "eval-run": (eval_app, str(run), "--cache", str(corrupt)),
        "eval-baseline": (eval_app, str(tmp_path / "out"), "--cache", str(corrupt), "--method", "otam"),
        "train": (train_app, "--out", str(tmp_path / "out"), "--cache", str(corrupt), "--config", "tiny", "--way", "3"),
    }[command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    (line,) = error_lines(result.output)
    assert str(corrupt) in line and "not a readable embedding cache" in line and "re-run `fsar-data embed`" in line


def test_debug_and_fsar_debug_show_the_traceback(run, corrupt):
    from fsar.cli.eval import app

    plain = invoke(app, str(run), "--cache", str(corrupt))
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit)
    for extra, env in ((["--debug"], None), ([], {"FSAR_DEBUG": "1"})):
        shown = invoke(app, str(run), "--cache", str(corrupt), *extra, env=env)
        assert isinstance(shown.exception, ValueError) and "not a readable embedding cache" in str(shown.exception)


def test_an_unexpected_error_is_one_line_too(run, monkeypatch):
    import fsar.train.evaluate_run
    from fsar.cli.eval import app

    def broken(*args, **kwargs):
        return None + 1  # a bug: TypeError

    monkeypatch.setattr(fsar.train.evaluate_run, "evaluate_run", broken)
    result = invoke(app, str(run), "--way", "3")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (line,) = error_lines(result.output)
    assert "TypeError" in line and "--debug" in line


def test_fsar_report_says_what_to_pass(tmp_path):
    from fsar.cli.reproduce import report_app

    missing = invoke(report_app, str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no folder" in one_line(missing.output)
    empty = invoke(report_app, str(tmp_path))
    assert empty.exit_code == 2 and "no evaluation results" in one_line(empty.output)


def test_the_debug_option_is_on_every_command():
    from fsar.cli.data import app as data_app
    from fsar.cli.eval import app as eval_app
    from fsar.cli.reproduce import app as reproduce_app
    from fsar.cli.reproduce import report_app
    from fsar.cli.train import app as train_app

    for app, args in ((data_app, ["shard"]), (data_app, ["embed"]), (data_app, ["synth"]), (data_app, ["captions"]), (data_app, ["pretrain"]), (eval_app, []), (train_app, []), (reproduce_app, []), (report_app, [])):
        result = invoke(app, *args, "--help")
        assert result.exit_code == 0 and "--debug" in result.output, (args, result.output)


def test_worker_options_that_cannot_work_are_one_line(tiny_chain, tmp_path):
    """Settings --workers cannot honour stop before Ray starts: exit 2, one line, nothing left."""
    from fsar.cli.eval import app as eval_app
    from fsar.cli.train import app as train_app

    base = ["--config", "tiny", "--mode", "adapter", "--cache", str(tiny_chain["cache"]), "--way", "3"]
    for extra, message in (
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "3"], "--workers 3 needs at least as many episodes per step; this config has episodes_per_step 2 (--set episodes_per_step=N)"),
        (["--workers", "2", "--max-failures", "-1"], "--max-failures must be >= 0, got -1"),
        (["--workers", "2", "--cpus-per-worker", "64", "--set", "episodes_per_step=2"],
         f"2 workers of 64 CPU core(s) need 128; this machine has {os.cpu_count()}: use fewer --workers (or --cpus-per-worker), or join a cluster with --address"),
    ):
        result = invoke(train_app, "--out", str(tmp_path / "run"), *base, *extra, env={"RAY_ADDRESS": None})
        assert result.exit_code == 2 and error_lines(result.output) == [f"error: {message}"], result.output
        assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    result = invoke(eval_app, str(tmp_path / "base"), "--cache", str(tiny_chain["cache"]), "--method", "otam", "--workers", "2", env={"RAY_ADDRESS": None})
    assert result.exit_code == 2 and "the frozen baselines (--method) run in this process" in one_line(result.output)
