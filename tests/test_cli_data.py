"""`fsar-data` from the command line: help, the synth command end to end, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fsar.cli.data import app

runner = CliRunner()


def test_help_lists_the_data_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "synth" in result.output


def test_synth_writes_a_dataset_and_says_where(tmp_path):
    out = tmp_path / "bench"
    args = ["synth", str(out), "--classes", "4", "--videos-per-class", "2", "--size", "64x48", "--frames", "5-6", "--workers", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"dataset written to {out.resolve()}" in result.output
    assert len(list((out / "videos").iterdir())) == 8
    assert (out / "splits" / "train.txt").read_text().count("\n") + (out / "splits" / "test.txt").read_text().count("\n") + (
        out / "splits" / "val.txt"
    ).read_text().count("\n") == 8


def test_bad_arguments_exit_2_with_the_reason(tmp_path):
    cases = [
        (["--size", "100x100"], "multiples of 16"),
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--frames", "a-b"], "LO-HI"),
        (["--codecs", "vp9,divx"], "unknown codec 'divx'"),
        (["--splits", "1,2"], "three"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["synth", str(tmp_path / "x"), *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in " ".join(result.output.split()), (extra, result.output)


def test_console_scripts_are_installed():
    bindir = Path(sys.executable).parent
    for script, command in (("fsar-data", "shard"), ("fsar-eval", "--method")):
        result = subprocess.run([str(bindir / script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and command in result.stdout, (script, result.stderr)
