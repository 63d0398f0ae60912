"""The decode benchmark's timing rules and its report table (the measurements themselves run in `make bench-decode`)."""

from __future__ import annotations

from pathlib import Path

from tools.bench import decode as B
from tools.bench.report import _decode


def test_a_raw_pass_goes_over_the_whole_corpus_until_it_has_lasted_long_enough(monkeypatch):
    clock = [0.0]  # a fake clock: each decoded clip takes 10 ms
    monkeypatch.setattr(B.time, "perf_counter", lambda: clock[0])
    paths = [Path(f"clip{k}.avi") for k in range(3)]
    indices = {p: [0, 1] for p in paths}
    calls = []

    def fn(path, idx):
        calls.append(path)
        clock[0] += 0.01
        return [b"f"] * len(idx)

    rate = B.time_raw(fn, paths, indices, min_seconds=0.05)
    # After the untimed warm-up, rounds of 3 clips: 0.03 s is short of 0.05, 0.06 is not.
    assert calls[1:] == paths * 2
    assert abs(rate - 6 / 0.06) < 1e-9


def test_a_raw_pass_reports_why_a_reader_could_not_run():
    paths = [Path("a.mp4"), Path("b.mp4")]
    indices = {p: [0, 5, 9] for p in paths}

    def missing(path, idx):
        raise ImportError("No module named 'decord'")

    def short_on_b(path, idx):
        return [0] * (len(idx) - (path.name == "b.mp4"))

    def fails_on_b(path, idx):
        if path.name == "b.mp4":
            raise ValueError("bad")
        return [0] * len(idx)

    assert B.time_raw(missing, paths, indices) == "n/a (ImportError: No module named 'decord')"
    assert B.time_raw(short_on_b, paths, indices, min_seconds=0) == "wrong frame count on b.mp4: 2 of 3"
    assert B.time_raw(fails_on_b, paths, indices, min_seconds=0) == "failed on b.mp4 (ValueError)"


def test_a_stage_pass_repeats_runs_and_weighs_them_by_their_time(monkeypatch, tmp_path):
    rates = iter([100.0, 50.0, 25.0])
    runs = []

    def fake_stage(paths, out, workers):
        runs.append(out)
        return {"videos_processed": len(paths), "videos_per_second": next(rates)}

    monkeypatch.setattr(B, "time_stage", fake_stage)
    # 10 videos at 100/s (0.1 s) then 10 at 50/s (0.2 s): 0.3 s passes min_seconds=0.25, so 20 / 0.3.
    assert abs(B.time_stage_pass([Path(f"v{k}") for k in range(10)], tmp_path, min_seconds=0.25) - 20 / 0.3) < 1e-9
    assert len(runs) == 2 and len(set(runs)) == 2  # each run into its own folder


def test_the_report_gives_both_ceilings_of_the_stage_beside_its_ratio():
    row = {
        "clips": 30,
        "PyAV seeking": 250.0,
        "OpenCV sequential": "n/a (ImportError: cv2)",
        B.DECODER_ALONE: 275.0,
        B.DECODER_JPEG: 180.0,
        "fsar shard stage (1 worker)": 175.0,
        "fastest raw": "PyAV seeking",
        "stage / fastest raw": 0.7,
        "decode+resize / fastest raw": 1.1,
        "decode+resize+JPEG / fastest raw": 0.72,
    }
    older = {k: v for k, v in row.items() if k not in (B.DECODER_JPEG, "decode+resize+JPEG / fastest raw")}
    md = _decode({"machine": "2 cores", "corpora": {"mpeg4": row, "an older run": older}})
    header = next(line for line in md if line.startswith("| corpus"))
    lines = {line.split(" | ")[0]: line for line in md if line.startswith("| mpeg4") or line.startswith("| an older run")}
    assert header.endswith("| stage / fastest raw | decode+resize / fastest raw | decode+resize+JPEG / fastest raw |")
    assert lines["| mpeg4"].endswith("| 175.0 | 0.70x (PyAV seeking) | 1.10x | 0.72x |")
    assert lines["| an older run"].endswith("| 0.70x (PyAV seeking) | 1.10x | – |")
    assert "| 180.0 |" in lines["| mpeg4"] and "n/a (ImportError: cv2)" in lines["| mpeg4"]
