"""docs/benchmarks.md as `make bench` writes it: a section per benchmark with the date, commit,
machine and command of its run, the last measurement kept where a benchmark did not run."""

import json
import sys
from pathlib import Path

import pytest

from tools.bench import report as R

DECODE = {
    "machine": "2 cores", "pinned_to_core": 0, "repeats": 3,
    "corpora": {"ssv2-like VP9 240p": {
        "clips": 120, "PyAV seeking": 30.5, "OpenCV sequential": 35.1, "fsar shard stage (1 worker)": 35.7,
        "fastest raw": "OpenCV sequential", "stage / fastest raw": 1.017, "decode+resize / fastest raw": 1.14,
        "decode+resize+JPEG / fastest raw": 1.05,
    }},
}
EMBED = {"backbone": "fsar-tiny-vit", "device": "cpu", "precision": "fp32", "batch": 256, "threads": 2,
         "bare_encode_image_frames_per_s": 1889.0, "embed_stage_frames_per_s": 689.0, "ratio": 0.365}
EVALUATE = {"episodes": 10000, "way": 5, "shot": 1, "query": 1, "frames": 8, "dim": 512, "threads": 2,
            "batched_seconds": 1.65, "loop_seconds_scaled": 755.0, "loop_episodes_timed": 200, "speedup": 457.6,
            "max_abs_logit_difference": 2.4e-7, "episode_loop_seconds_scaled": 32.0, "speedup_vs_episode_loop": 19.4}
TRAIN = {"episode": "5-way 1-shot, 5 queries per class: 30 videos x 8 frames", "backbone": "fsar-tiny-vit (none)", "threads": 2,
         "adapter_ms_per_episode": 29.6, "finetune_ms_per_episode": 558.9, "finetune_data_ms_per_episode": 149.0,
         "finetune_over_adapter": 18.9, "adapter_trainable_parameters": 197633, "finetune_trainable_parameters": 1010817}
FAKE = {"decode": DECODE, "embed": EMBED, "evaluate": EVALUATE, "train": TRAIN}
TITLES = [f"## {b.title}" for b in R.BENCHMARKS]


def write_results(results: Path, names=tuple(FAKE)) -> None:
    for name in names:
        path = results / R.BY_NAME[name].result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(FAKE[name]))


def sections(page: Path) -> dict[str, str]:
    return R.kept_sections(page)


def fake_make(tmp_path: Path) -> list[str]:
    """A stand-in for make: `bench-NAME RESULTS=DIR` writes NAME's fake JSON, as the real target writes its own."""
    script = tmp_path / "fake_make.py"
    script.write_text(
        "import json, sys\nfrom pathlib import Path\n"
        f"fake, paths = {FAKE!r}, {({b.target: (b.name, b.result) for b in R.BENCHMARKS})!r}\n"
        "name, rel = paths[sys.argv[1]]\nresults = Path(sys.argv[2].split('=', 1)[1])\n"
        "(results / rel).parent.mkdir(parents=True, exist_ok=True)\n(results / rel).write_text(json.dumps(fake[name]))\n"
    )
    return [sys.executable, str(script)]


def test_the_page_has_a_section_per_benchmark_each_with_its_date_commit_machine_and_command(tmp_path):
    results, page = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    R.run_benchmarks(["evaluate", "train"], results, fake_make(tmp_path))
    write_results(results, ["decode", "embed"])  # as `make bench-decode` alone leaves them: no record of the run
    R.write_bench_page(results, page)
    text = page.read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == TITLES
    got = sections(page)
    assert list(got) == ["decode", "embed", "evaluate", "train"]
    for name, body in got.items():
        for field in ("date", "commit", "machine", "command"):
            assert f"\n- {field}: " in body, (name, field)
    recorded = json.loads((results / "bench-evaluate" / R.PROVENANCE).read_text())
    assert recorded["command"] == "make bench-evaluate" and recorded["commit"] != "not recorded"
    assert f"- commit: {recorded['commit']}\n" in got["evaluate"] and "- command: `make bench-evaluate`" in got["evaluate"]
    assert "- commit: not recorded" in got["decode"] and "- machine: 2 cores; nothing more recorded" in got["decode"]
    # the tables read back with the JSON's figures
    assert "| 1.65 s | 755 s | 458x | 32.0 s | 19.4x |" in got["evaluate"]
    assert "| 29.6 | 558.9 | 149.0 | 18.9x | 197,633 | 1,010,817 |" in got["train"]
    assert "| ssv2-like VP9 240p | 120 | 35.1 | 30.5 | 35.7 | 1.02x (OpenCV sequential) | 1.14x | 1.05x |" in got["decode"]
    assert "| fsar-tiny-vit | cpu | fp32 | 256 | 2 | 1889.0 | 689.0 | 0.36 |" in got["embed"]


def test_a_result_rewritten_after_its_run_was_recorded_is_not_given_that_runs_commit(tmp_path):
    results, page = tmp_path / "results", tmp_path / "benchmarks.md"
    R.run_benchmarks(["evaluate"], results, fake_make(tmp_path))
    path = results / R.BY_NAME["evaluate"].result
    path.write_text(json.dumps({**EVALUATE, "batched_seconds": 2.0}))  # `make bench-evaluate` run again alone
    R.write_bench_page(results, page)
    body = sections(page)["evaluate"]
    assert "- commit: not recorded" in body and "| 2.00 s |" in body


def test_a_benchmark_that_did_not_run_keeps_its_last_section_and_one_never_run_is_named(tmp_path):
    results, page = tmp_path / "results", tmp_path / "benchmarks.md"
    R.run_benchmarks(["decode", "evaluate"], results, fake_make(tmp_path))
    R.write_bench_page(results, page)
    before = sections(page)
    fresh = tmp_path / "fresh"
    R.run_benchmarks(["evaluate"], fresh, fake_make(tmp_path))
    R.write_bench_page(fresh, page)
    after = sections(page)
    assert after["decode"] == before["decode"]  # kept as it was, its own date and commit with it
    assert list(after) == ["decode", "evaluate"]
    assert "Never run: `make bench-embed`, `make bench-train`." in page.read_text()


def test_an_unknown_benchmark_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark decoding; known: decode, embed, evaluate, train"):
        R.run_benchmarks(["evaluate", "decoding"], tmp_path, fake_make(tmp_path))
    assert not (tmp_path / "bench-evaluate").exists()


def test_a_benchmark_that_writes_no_result_is_an_error_and_records_nothing(tmp_path):
    silent = [sys.executable, "-c", "pass"]  # exits 0 and writes nothing, as `make -n bench-evaluate` does
    with pytest.raises(FileNotFoundError, match="make bench-evaluate` ended without writing"):
        R.run_benchmarks(["evaluate"], tmp_path, silent)
    assert not (tmp_path / "bench-evaluate" / R.PROVENANCE).exists()
