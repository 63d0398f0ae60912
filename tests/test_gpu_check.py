"""`make gpu-check` (tools/gpu_check): its CPU dry run end to end, the isolation of its sections, the
wheel batches that carry its dependencies to a GPU machine, and the table of GPU peaks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tools/ lives beside the installed packages, not in them
    sys.path.insert(0, str(ROOT))

from tools.gpu_check import run as check_run  # noqa: E402
from tools.gpu_check import wheels  # noqa: E402
from tools.gpu_check.config import SECTIONS, dry_run_config  # noqa: E402
from tools.gpu_check.peaks import bf16_peak  # noqa: E402
from tools.gpu_check.record import Failed, Skip  # noqa: E402

GPU_ONLY = ("dali", "torchcodec")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, Path, float]:
    """One dry run of the script, as `make gpu-check DRY_RUN=1` runs it: (GPU.json, out folder, seconds)."""
    out = tmp_path_factory.mktemp("gpu-check")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--dry-run", "--out", str(out), "--work", str(out / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "GPU.json").read_text()), out, seconds


@pytest.mark.chain
def test_dry_run_writes_every_section_with_a_status(dry_run):
    results, out, _ = dry_run
    assert results["dry_run"] is True
    assert list(results["sections"]) == list(SECTIONS)
    for name, s in results["sections"].items():
        assert s["status"] in ("ok", "failed", "skipped"), name
        assert s["seconds"] <= s["budget_seconds"] + 5, name
        assert (out / s["log"]).is_file(), name
    md = (out / "GPU.md").read_text()
    assert md.startswith("# GPU check") and "Dry run on a CPU" in md
    for name in SECTIONS[1:]:
        assert f"## {name}" in md


@pytest.mark.chain
def test_dry_run_cpu_sections_are_ok_and_gpu_steps_skipped(dry_run):
    sections = dry_run[0]["sections"]
    assert {n: s["status"] for n, s in sections.items()} == {
        "environment": "ok", "data": "ok", "pytest-gpu": "skipped", "decode": "ok", "embed": "ok", "train": "ok", "chain": "ok",
    }, {n: s.get("reason") for n, s in sections.items()}
    assert sections["environment"]["parts"]["CUDA GPU"]["status"] == "skipped"
    for name, part in sections["decode"]["parts"].items():
        assert part["status"] == ("skipped" if any(g in part["method"] for g in GPU_ONLY) else "ok"), name
    # The CPU parts measured something: rates and step times are positive, bf16 embeds close to fp32.
    decode = [p for p in sections["decode"]["parts"].values() if p["method"].startswith("pyav")]
    assert decode and all(p["videos_per_s"] > 0 for p in decode)
    embed = sections["embed"]["parts"]
    assert embed["encode_image fp32"]["frames_per_s"] > 0 and embed["encode_image bf16"]["frames_per_s"] > 0
    assert 0.9 < embed["bf16 against fp32"]["cosine_min"] <= 1.0 + 1e-6
    assert embed["FLOPs per frame"]["gflops"] > 0
    assert embed["embed stage vs bare encode_image"]["ratio"] > 0
    train = sections["train"]["parts"]
    assert set(train) == {"clip-fsar finetune", "ma-clip peft", "vita-clip peft"}
    assert all(p["seconds_per_step"] > 0 and p["episodes_per_step"] == 2 for p in train.values())
    assert all(p["status"] == "ok" for p in sections["chain"]["parts"].values())


def _fake_sections(monkeypatch, behaviours: dict) -> None:
    """Replace each named section's module by one whose run() does what `behaviours` says."""
    def module(name):
        return types.SimpleNamespace(run=behaviours[name])

    monkeypatch.setattr(check_run, "_section_module", module)


def test_a_section_that_fails_dies_or_overruns_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    def raises(cfg, rec):
        with rec.part("measured") as p:
            p["value"] = 1
        with rec.part("broken"):
            raise ValueError("bad value\nsecond line")
        with rec.part("out of memory") as p:
            p["fits"] = 2
            raise Failed("out of memory at 16")

    def overruns(cfg, rec):
        with rec.part("done") as p:
            p["value"] = 2
        with rec.part("stuck"):
            time.sleep(60)

    def dies(cfg, rec):
        os.kill(os.getpid(), 9)

    def skips(cfg, rec):
        raise Skip("not here")

    def fine(cfg, rec):
        rec.set("x", 3)
        with rec.part("fine"):
            pass

    _fake_sections(monkeypatch, {"environment": raises, "data": overruns, "pytest-gpu": dies, "decode": skips, "embed": fine, "train": fine, "chain": fine})
    monkeypatch.setattr(check_run, "_preload", lambda: None)
    cfg = dataclasses.replace(dry_run_config(tmp_path / "out", tmp_path / "work"), budgets={s: 2.0 for s in SECTIONS})
    t = time.perf_counter()
    results = check_run.run_check(cfg)
    assert time.perf_counter() - t < 30  # the sleeping section was stopped at its budget
    s = results["sections"]
    env = s["environment"]
    assert env["status"] == "failed" and env["reason"].startswith("2 of 3 parts failed; first: broken: ValueError: bad value")
    timeless = {n: {k: v for k, v in p.items() if k != "seconds"} for n, p in env["parts"].items()}
    assert timeless["measured"] == {"value": 1, "status": "ok"}
    assert timeless["out of memory"] == {"fits": 2, "status": "failed", "reason": "out of memory at 16"}
    assert s["data"]["status"] == "failed" and s["data"]["reason"].startswith("stopped at its budget of 2 s")
    assert s["data"]["parts"]["done"]["status"] == "ok" and s["data"]["parts"]["stuck"]["status"] == "failed"
    assert s["pytest-gpu"]["status"] == "failed" and "its process died (killed by SIGKILL)" in s["pytest-gpu"]["reason"]
    assert s["decode"]["status"] == "skipped" and s["decode"]["reason"] == "not here"
    assert [s[n]["status"] for n in ("embed", "train", "chain")] == ["ok"] * 3 and s["embed"]["values"] == {"x": 3}
    # --only reruns a section and keeps the others from GPU.json
    _fake_sections(monkeypatch, {"environment": fine})
    again = check_run.run_check(cfg, only=["environment"])["sections"]
    assert again["environment"]["status"] == "ok" and again["data"]["reason"] == s["data"]["reason"]
    assert json.loads((cfg.out / "GPU.json").read_text())["sections"]["environment"]["status"] == "ok"


def test_unknown_section_is_a_one_line_error(capsys):
    assert check_run.main(["--dry-run", "--only", "decode,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gpu-check: unknown section(s) nope: choose among {', '.join(SECTIONS)}"]


def test_batches_fill_each_call_and_cover_every_file_exactly():
    mib = 2**20
    folders = [("clips", 23 * mib), ("corpus", 13 * mib)]
    files = [("dali.whl", 190 * mib), ("ray.whl", 76 * mib), ("av.whl", 34 * mib), ("small.whl", 3 * mib)]
    capacity = 61 * mib
    batches = wheels.plan_batches(folders, files, capacity)
    total = sum(s for _, s in folders + files)
    assert len(batches) == math.ceil(total / capacity)  # no call carries less than it could
    assert all(sum(n for _, _, n in b) <= capacity for b in batches)
    for name, size in folders:  # folders travel whole
        assert sum(1 for b in batches for piece in b if piece[0] == name) == 1
    for name, size in files:  # each file's pieces follow each other and cover it
        pieces = [(off, n) for b in batches for nm, off, n in b if nm == name]
        assert pieces[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(pieces, pieces[1:])) and sum(n for _, n in pieces) == size
    with pytest.raises(ValueError, match="more than one call carries"):
        wheels.plan_batches([("huge", 70 * mib)], [], capacity)


def test_packed_parts_join_back_into_the_same_wheels(tmp_path, monkeypatch):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    rng = __import__("random").Random(0)
    specs = [("big-pkg", "1.0", 5000), ("small", "2.0", 300)]
    for name, version, size in specs:
        (downloads / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(rng.randbytes(size))
    monkeypatch.setattr(wheels, "WHEELS", [(n, v, "test") for n, v, _ in specs])
    monkeypatch.setattr(wheels, "CALL_BYTES", 2000)
    monkeypatch.setattr(wheels, "tree_bytes", lambda: 0)
    monkeypatch.setattr(wheels, "CORPUS", tmp_path / "none")
    monkeypatch.setattr(wheels, "REAL_CLIPS", tmp_path / "none")
    monkeypatch.setattr(wheels, "ROOT", tmp_path)
    carry = tmp_path / "carry"
    plan = wheels.pack(downloads, carry, margin=0)
    assert len(plan["batches"]) == 3 and all(b["bytes"] <= 2000 for b in plan["batches"])
    # On the GPU machine the batches arrive one call after another.
    there = tmp_path / "there"
    (there / "b1").parent.mkdir(parents=True)
    os.rename(carry / "b1", there / "b1")
    first = wheels.join_arrived(there, tmp_path / "joined")
    big, small = "big_pkg-1.0-py3-none-any.whl", "small-2.0-py3-none-any.whl"
    assert first["joined"] == [] and first["waiting"] == {big: [f"{big}.part001", f"{big}.part002"], small: [small]}
    for b in ("b2", "b3"):
        os.rename(carry / b, there / b)
    done = wheels.join_arrived(there, tmp_path / "joined")
    assert not done["waiting"] and not done["failed"] and len(done["joined"]) == 2
    for path in done["joined"]:
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256((downloads / path.name).read_bytes()).digest()
    # A damaged part is caught by the checksum, not installed.
    part = next((there / "b2" / "wheels").iterdir())
    part.write_bytes(b"x" + part.read_bytes()[1:])
    for p in done["joined"]:
        p.unlink()
    assert any("sha256 differs" in r for r in wheels.join_arrived(there, tmp_path / "joined2")["failed"].values())


@pytest.mark.parametrize("name,label", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA GH200 480GB", "GH200"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"), ("NVIDIA L40S", "L40S"), ("NVIDIA L40", "L40"), ("NVIDIA L4", "L4"),
    ("NVIDIA A10", "A10"), ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"), ("Tesla T4", None),
])
def test_bf16_peaks_are_found_by_the_name_torch_reports(name, label):
    found = bf16_peak(name)
    assert (found[0] if found else None) == label
