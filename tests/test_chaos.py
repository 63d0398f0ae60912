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


@pytest.mark.chain
def test_every_stage_survives_a_kill(tmp_path, capsys):
    from tools import chaos

    code = chaos.main(["--kills", "1", "--work", str(tmp_path), "--seed", "1"])
    results = json.loads((tmp_path / "chaos.json").read_text())
    out = capsys.readouterr().out
    assert [r["stage"] for r in results] == list(chaos.STAGES)
    for r in results:
        assert f"{r['stage']}: kills survived 1/1" in out, out
        (trial,) = r["trials"]
        assert trial["killed"] and not trial["orphans"], trial
    assert code == 0


def test_the_comparison_sees_a_difference(tmp_path):
    from tools import chaos

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.0, "seconds": 1.0, "cache": str(tmp_path / "x.h5")}))
    first = chaos.evals(tmp_path / "a")
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.0, "seconds": 9.0, "cache": str(tmp_path / "x.h5")}))
    assert chaos.evals(tmp_path / "a") == first  # timings are not output
    (tmp_path / "a" / "eval-test-5w1s.json").write_text(json.dumps({"accuracy": 20.5, "seconds": 1.0, "cache": str(tmp_path / "x.h5")}))
    assert chaos.evals(tmp_path / "a") != first
