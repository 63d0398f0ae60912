"""One SIGKILL per stage at a random point, then a resume that must give the uninterrupted
output and leave no process behind (`tools/chaos.py`; `make chaos` runs 5 kills per stage)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tools/ lives beside the installed package, not in it
    sys.path.insert(0, str(ROOT))


def _survives(tmp_path, capsys, kills: int, seed: int) -> None:
    from tools import chaos

    code = chaos.main(["--kills", str(kills), "--work", str(tmp_path), "--seed", str(seed)])
    results = json.loads((tmp_path / "chaos.json").read_text())
    out = capsys.readouterr().out
    assert [r["stage"] for r in results] == list(chaos.STAGES)
    for r in results:
        assert f"{r['stage']}: kills survived {kills}/{kills}" in out, out
        assert len(r["trials"]) == kills
        for trial in r["trials"]:
            assert trial["killed"] and not trial["orphans"], trial
    assert code == 0


@pytest.mark.chain
def test_every_stage_survives_a_kill(tmp_path, capsys):
    _survives(tmp_path, capsys, kills=1, seed=1)


@pytest.mark.slow
def test_every_stage_survives_five_kills(tmp_path, capsys):
    """What `make chaos` runs (about 15 minutes on 2 cores): the slow tier, `make test-all`."""
    _survives(tmp_path, capsys, kills=5, seed=0)


def test_the_comparison_sees_a_difference(tmp_path):
    from tools import chaos

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.0, "seconds": 1.0, "cache": str(tmp_path / "x.h5")}))
    first = chaos.evals(tmp_path / "a")
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.0, "seconds": 9.0, "cache": str(tmp_path / "x.h5")}))
    assert chaos.evals(tmp_path / "a") == first  # timings are not output
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.5, "seconds": 1.0, "cache": str(tmp_path / "x.h5")}))
    assert chaos.evals(tmp_path / "a") != first
