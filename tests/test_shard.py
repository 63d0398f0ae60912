"""The shard stage end to end: read-back, exact sampling, bad input, kill-and-resume, retries."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from fsar.cli.data import app
from corpus import RefusingBackend, bad_input_corpus, free_port, tree_digest, write_lists
from fsar.pipeline.sampling import segment_middles
from fsar.pipeline.shard.config import ShardConfig
from fsar.pipeline.shard.run import run_shard_stage
from fsar.pipeline.synth import SynthConfig, generate
from fsar.pipeline.synth.generate import load_videos
from fsar.pipeline.video.encode import CODECS, write_video

SYNTH = dict(classes=6, videos_per_class=4, size=(96, 64), frames=(12, 20), codecs=("vp9", "h264", "mpeg4"), workers=1)


def tree(root: Path, skip=("summary.json",)) -> dict[str, str]:
    return tree_digest(root, skip)


def shard_config(root: Path, out: Path, **kw) -> ShardConfig:
    return ShardConfig(**{"dataset": "synth", "root": root, "out": out, "workers": 1, "shard_size": 5, "short_side": 48, **kw})


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shard") / "synth"
    generate(SynthConfig(out=root, **SYNTH))
    return root


@pytest.fixture(scope="module")
def shards(synth_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shard") / "out"
    summary = run_shard_stage(shard_config(synth_root, out))
    assert summary["failed"] == 0 and summary["passed"]
    return out


def read_split(out: Path, split: str) -> list[dict]:
    urls = sorted(str(p) for p in (out / split).glob("shard-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_shards_read_back_with_webdataset(shards, synth_root):
    manifest = json.loads((shards / "manifest.json").read_text())
    videos = {v["id"]: v for v in load_videos(synth_root)}
    assert manifest["dataset"] == "synth" and manifest["tool_version"]
    assert manifest["sampling"]["frames"] == 8 and manifest["sampling"]["train_frames"] == 16
    for split in ("train", "val", "test"):
        samples = read_split(shards, split)
        info = manifest["splits"][split]
        assert len(samples) == info["videos"] > 0
        names = {c["index"]: c["name"] for c in info["classes"]}
        n_frames = 16 if split == "train" else 8
        for s in samples:
            meta = json.loads(s["json"])
            frames = sorted(k for k in s if k.endswith(".jpg"))
            assert frames == [f"{j:03d}.jpg" for j in range(n_frames)]
            assert int(s["cls"]) == meta["class_index"] and names[meta["class_index"]] == meta["class_name"]
            assert meta["class_name"] == videos[meta["id"]]["class"] and meta["split"] == split
            assert meta["frame_indices"] == segment_middles(meta["num_frames"], n_frames)
            assert meta["num_frames"] == videos[meta["id"]]["frames"]
            assert len(meta["timestamps"]) == n_frames and meta["decoder"] == "pyav"
            img = Image.open(io.BytesIO(s["000.jpg"]))
            assert min(img.size) == 48  # short side


def counter_video(n: int) -> np.ndarray:
    """Frame k is flat grey level 10 + 7k: its index can be read back from any lossy copy."""
    levels = 10 + 7 * np.arange(n, dtype=np.int32)
    return np.broadcast_to(levels[:, None, None, None], (n, 64, 96, 3)).astype(np.uint8).copy()


def test_tar_writer_writes_what_tarfile_writes(tmp_path):
    import tarfile

    from fsar.pipeline.shard.format import tar_writer

    def write_tar(path, samples):
        with tar_writer(path) as tar:
            for members in samples:
                tar.add(members)

    rng = np.random.default_rng(0)
    sizes = [0, 1, 511, 512, 513, 10239, 10240, 30001]
    names = ["k", "abc_DEF-12", "x" * 95, "x" * 101, "клип-ü", "a b"]  # the long and non-ASCII ones need PAX records
    samples = [[(f"{n}.{j:03d}.jpg", rng.integers(0, 256, sizes[(i + j) % len(sizes)], dtype=np.uint8).tobytes()) for j in range(3)]
               for i, n in enumerate(names)]
    write_tar(tmp_path / "ours.tar", samples)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for members in samples:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                tar.addfile(info, io.BytesIO(data))
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    with tarfile.open(tmp_path / "ours.tar") as tar:
        got = [(m.name, m.mode, m.mtime, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert got == [(n, 0o444, 0, d) for members in samples for n, d in members]
    write_tar(tmp_path / "empty.tar", [])
    with tarfile.open(tmp_path / "empty.tar") as tar:
        assert tar.getmembers() == []


def test_stored_frames_are_the_sampled_indices_exactly(tmp_path):
    root = tmp_path / "root"
    (root / "v").mkdir(parents=True)
    ids = []
    for name, codec, gop in [("h264", "h264", None), ("h264gop5", "h264", 5), ("vp9", "vp9", None), ("vp9gop4", "vp9", 4),
                             ("mpeg4", "mpeg4", None), ("hevc", "hevc", None), ("gif", "gif", None)]:
        for n in (3, 9, 17, 34):
            vid = f"{name}-{n}"
            write_video(root / "v" / f"{vid}{CODECS[codec].ext}", counter_video(n), 25, codec, gop=gop)
            ids.append(("counter", vid))
    write_lists(root, {"train": ids, "test": ids})
    out = tmp_path / "out"
    summary = run_shard_stage(ShardConfig(dataset="folder", root=root, out=out, splits=("train", "test"), workers=1, short_side=0))
    assert summary["failed"] == 0
    for split, n_frames in (("train", 16), ("test", 8)):
        samples = read_split(out, split)
        assert len(samples) == len(ids)
        for s in samples:
            meta = json.loads(s["json"])
            assert meta["frame_indices"] == segment_middles(meta["num_frames"], n_frames)
            for j, i in enumerate(meta["frame_indices"]):
                level = np.asarray(Image.open(io.BytesIO(s[f"{j:03d}.jpg"]))).mean()
                assert round((level - 10) / 7) == i, (meta["id"], j, i, level)


def test_real_clips_store_the_decoded_frames_at_the_sampled_indices(real_clips, tmp_path):
    import av

    write_lists(tmp_path, {"test": [(p.parent.name, p.stem) for p in real_clips]})
    out = tmp_path / "out"
    summary = run_shard_stage(ShardConfig(dataset="folder", root=real_clips[0].parents[1], splits_dir=tmp_path / "splits",
                                          out=out, splits=("test",), workers=1, short_side=0))
    assert summary["failed"] == 0 and summary["ok"] == len(real_clips)
    by_id = {p.stem: p for p in real_clips}
    judged = 0
    for s in read_split(out, "test"):
        meta = json.loads(s["json"])
        with av.open(str(by_id[meta["id"]])) as c:
            ref = [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]
        assert meta["num_frames"] == len(ref)
        for j, i in enumerate(meta["frame_indices"]):
            stored = np.asarray(Image.open(io.BytesIO(s[f"{j:03d}.jpg"]))).astype(np.int16)
            err = np.abs(stored - ref[i]).mean()
            assert err < 4.0, (meta["id"], i, err)  # JPEG loss only
            for k in (i - 1, i + 1):  # where a neighbour differs well beyond JPEG loss, it must not match better
                if 0 <= k < len(ref) and np.abs(ref[k] - ref[i]).mean() > 3 * err:
                    assert np.abs(stored - ref[k]).mean() > err, (meta["id"], i, k)
                    judged += 1
    assert judged >= 100


@pytest.mark.cluster
def test_ray_workers_give_identical_shards_and_ray_data_reads_them(shards, synth_root, tmp_path):
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    calls = []
    summary = run_shard_stage(shard_config(synth_root, out, workers=2), on_progress=lambda *a: calls.append(a))
    n = summary["videos"]
    assert summary["this_run"]["videos_processed"] == n
    # progress: at the start, again once the workers are up (the rate is timed from there), then per shard
    assert calls[:2] == [(0, n, 0), (0, n, 0)] and calls[-1] == (n, n, 0)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) == 2 + len(list(out.glob("*/shard-*.tar")))
    run = summary["this_run"]  # the rate leaves out Ray's start and stop, which the wall time holds
    assert run["startup_seconds"] > 0 and run["shutdown_seconds"] > 0 and run["workers"] == 2
    assert n / run["videos_per_second"] + run["startup_seconds"] + run["shutdown_seconds"] <= run["seconds"]
    assert tree(out) == tree(shards)
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        manifest = json.loads((out / "manifest.json").read_text())
        for split in ("train", "test"):
            rows = ray.data.read_webdataset(str(out / split)).take_all()
            assert len(rows) == manifest["splits"][split]["videos"]
            assert {"000.jpg", "json", "cls", "__key__"} <= set(rows[0])
    finally:
        ray.shutdown()


@pytest.mark.cluster
def test_address_joins_a_running_cluster_and_leaves_it_running(shards, synth_root, tmp_path, ray_cluster, monkeypatch):
    """`address`, and the CLI's RAY_ADDRESS (which `ray job submit` sets), put the actors on a
    cluster started apart from the run, as does a Ray Client address ("ray://host:port"): the
    shards equal the one-worker ones, paths relative to the driver's cwd included, and the
    cluster is left up for its other jobs. A stage class
    the cluster's workers cannot import (as where fsar is not installed on a node) is named
    in a plain error."""
    import ray

    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "driver_only_stage.py").write_text("from fsar.pipeline.shard.worker import ShardWorker\n\n\nclass DriverOnlyWorker(ShardWorker):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "here"))  # on the driver's path, not the workers'
    from driver_only_stage import DriverOnlyWorker

    expected = r"^a Ray worker could not import its stage \(ModuleNotFoundError: No module named 'driver_only_stage'\): every node"
    with pytest.raises(RuntimeError, match=expected):
        run_shard_stage(shard_config(synth_root, tmp_path / "unimportable", workers=2, address=ray_cluster.address), worker_cls=DriverOnlyWorker)

    summary = run_shard_stage(shard_config(synth_root, tmp_path / "api", workers=None, address=ray_cluster.address))
    assert summary["this_run"]["ray_address"] == ray_cluster.address and tree(tmp_path / "api") == tree(shards)
    assert summary["this_run"]["workers"] == 2  # one per CPU of the cluster (2), not of this machine
    assert not ray.is_initialized()  # disconnected, not shut down: see below
    monkeypatch.chdir(tmp_path)  # paths relative to the driver's cwd, which the cluster's workers do not share
    args = ["shard", "synth", "--root", os.path.relpath(synth_root), "--out", "cli", "--workers", "1", "--shard-size", "5", "--short-side", "48"]
    result = CliRunner().invoke(app, args, env={"RAY_ADDRESS": ray_cluster.address})  # with an address, even 1 worker is on Ray
    assert result.exit_code == 0, result.output
    assert tree(tmp_path / "cli") == tree(shards)
    run = json.loads((tmp_path / "cli" / "summary.json").read_text())["this_run"]
    assert (run["workers"], run["ray_address"]) == (1, ray_cluster.address)
    assert f"by 1 worker of the Ray cluster at {ray_cluster.address} (" in " ".join(result.output.split())
    # through Ray Client, as from a machine outside the cluster: the driver runs here, the workers there
    args[args.index("cli")], args[args.index("--workers") + 1] = "client", "2"
    result = CliRunner().invoke(app, [*args, "--address", ray_cluster.client], env={"RAY_ADDRESS": None})
    assert result.exit_code == 0, result.output
    assert tree(tmp_path / "client") == tree(shards)
    run = json.loads((tmp_path / "client" / "summary.json").read_text())["this_run"]
    assert (run["workers"], run["ray_address"]) == (2, ray_cluster.client) and not ray.is_initialized()
    ray.init(address=ray_cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()


@pytest.mark.cluster
def test_an_address_where_no_cluster_answers_fails_at_once_and_only_a_given_one_is_used(shards, synth_root, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    nowhere = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", nowhere)
    # the stage's own address is None: a local cluster starts, whatever RAY_ADDRESS says
    run_shard_stage(shard_config(synth_root, tmp_path / "local", workers=2))
    assert tree(tmp_path / "local") == tree(shards)
    args = ["shard", "synth", "--root", str(synth_root), "--workers", "2", "--shard-size", "5", "--short-side", "48"]
    elsewhere = f"localhost:{free_port()}"
    for given, how in ((nowhere, []), (elsewhere, ["--address", elsewhere])):  # the CLI's default is RAY_ADDRESS
        t = time.monotonic()
        result = CliRunner().invoke(app, args + ["--out", str(tmp_path / "cli")] + how)
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert f"no Ray cluster answers at '{given}'" in message and "--address (or RAY_ADDRESS" in message
        assert time.monotonic() - t < 30  # Ray by itself would retry for minutes, silently
    assert not list((tmp_path / "cli").rglob("*.tar"))
    from ray._private.services import find_gcs_addresses

    others = find_gcs_addresses()
    find_gcs_addresses.cache_clear()  # Ray keeps what it found for its own "auto"
    if others:
        pytest.skip(f"the rest needs no Ray cluster on this machine, and one runs at {sorted(others)}")
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # Ray's "the cluster running here": none is
    result = CliRunner().invoke(app, args + ["--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "no Ray cluster at 'auto': Could not find any running Ray instance" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    "decoder,dali,actors,gpus,share",
    [("pyav", True, 2, 1, 0), ("auto", True, 2, 0, 0), ("auto", True, 2, 1, 0.5), ("auto", False, 2, 1, 0),
     ("dali", True, 16, 1, 0.0625), ("dali", True, 3, 1, 0.3333), ("dali", True, 2, 8, 1.0)],
)
def test_each_actor_asks_for_a_share_of_the_gpus(monkeypatch, decoder, dali, actors, gpus, share):
    import fsar.pipeline.shard.run as R

    monkeypatch.setattr(R, "dali_installed", lambda: dali)  # without DALI, `auto` leaves the GPUs to other jobs
    assert R.gpus_per_actor(decoder, actors, gpus) == share
    assert actors * share <= max(gpus, 0)  # never more than the cluster has, or an actor waits for ever


@pytest.mark.cluster
def test_workers_sharing_a_declared_gpu_start_and_a_setup_error_reads_plainly(shards, synth_root, tmp_path):
    """On a cluster declaring one GPU (this machine has none), two `auto` workers each ask for
    half of it (with DALI installed), start, fall back to PyAV and write the in-process output; two `dali` workers
    fail at set-up with the decoder's own message, not Ray's traceback."""
    ray = pytest.importorskip("ray")
    from fsar.pipeline.video.decode import cuda_available

    if cuda_available():
        pytest.skip("a GPU is present: DALI would set up")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        run_shard_stage(shard_config(synth_root, tmp_path / "auto", workers=2, decoder="auto"))
        assert tree(tmp_path / "auto") == tree(shards)
        with pytest.raises(RuntimeError, match="^no GPU found: use --decoder pyav") as e:
            run_shard_stage(shard_config(synth_root, tmp_path / "dali", workers=2, decoder="dali"))
        assert "ray::" not in str(e.value)
    finally:
        ray.shutdown()


def samples_by_key(out: Path) -> dict[str, dict]:
    return {s["__key__"]: {k: v for k, v in s.items() if k not in ("__url__", "__local_path__")} for split in ("train", "val", "test") for s in read_split(out, split)}


@pytest.mark.cluster
def test_a_video_that_kills_or_holds_its_ray_worker_is_recorded_failed_and_the_job_goes_on(shards, synth_root, tmp_path):
    """Workers die (SIGSEGV, SIGABRT, SIGKILL as the OOM killer sends) on three videos, two in
    one shard, and hang on a fourth: each is recorded as failed, its shard goes to a fresh
    worker, every other video is sharded as usual, and --retry-failed then gives the
    uninterrupted output. A worker that dies on a shard before any video stops the job
    after a second try."""
    ray = pytest.importorskip("ray")
    from crashing import CRASH_ENV, HANG_SECONDS, CrashingWorker, write_crash_plan
    from fsar.pipeline.shard.run import CRASH_REASON, TIMEOUT_REASON

    ids = {split: [json.loads(s["json"])["id"] for s in read_split(shards, split)] for split in ("train", "val", "test")}
    crash = {ids["test"][1]: "SIGSEGV", ids["test"][3]: "SIGABRT", ids["train"][-1]: "SIGKILL", ids["val"][2]: "hang"}
    plan = write_crash_plan(tmp_path / "plan.json", videos=crash)
    tests_dir = str(Path(__file__).parent)
    env = {CRASH_ENV: str(plan), "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, runtime_env={"env_vars": env})
    try:
        out = tmp_path / "out"
        t0 = time.monotonic()
        with pytest.warns(UserWarning, match="a shard worker died while decoding|was still decoding after") as caught:
            summary = run_shard_stage(shard_config(synth_root, out, workers=2, max_failure_rate=1.0, video_timeout=3), worker_cls=CrashingWorker)
        assert time.monotonic() - t0 < HANG_SECONDS  # the hung worker was stopped, not waited for
        assert sum("died while decoding" in str(w.message) for w in caught) == 3
        assert sum("was still decoding after 3 s" in str(w.message) for w in caught) == 1
        assert summary["failed"] == 4 and summary["failures_by_reason"] == {CRASH_REASON: 3, TIMEOUT_REASON: 1}
        assert {v["id"] for v in summary["failed_videos"]} == set(crash)
        for v in summary["failed_videos"]:
            said = "still decoding after 3 s (--video-timeout)" if crash[v["id"]] == "hang" else "the worker's process died while decoding it"
            assert said in v["detail"], v
        ref = samples_by_key(shards)
        got = samples_by_key(out)
        crashed_keys = {k for k, s in ref.items() if json.loads(s["json"])["id"] in crash}
        assert len(crashed_keys) == 4 and set(got) == set(ref) - crashed_keys
        assert all(got[k] == ref[k] for k in got)  # every other video exactly as an uninterrupted run writes it
        assert not list(out.rglob(".*.partial"))  # the dead workers' markers and partial tars are gone

        write_crash_plan(plan)  # the decoder fixed: retrying the failed videos gives the uninterrupted output
        retried = run_shard_stage(shard_config(synth_root, out, retry_failed=True))
        assert retried["failed"] == 0 and tree(out) == tree(shards)

        write_crash_plan(plan, shards=("val/shard-000000",))
        with pytest.raises(RuntimeError, match="died twice on val/shard-000000 while decoding no video"):
            run_shard_stage(shard_config(synth_root, tmp_path / "dies", workers=2), worker_cls=CrashingWorker)
    finally:
        ray.shutdown()


def test_a_worker_is_overdue_only_after_the_timeout_on_one_video(shards, synth_root, tmp_path, monkeypatch):
    """The driver times a video from its first sight of it in the marker; a video that ends
    just as its worker is stopped is not blamed, and the shard simply goes again."""
    import fsar.pipeline.shard.run as run
    from fsar.pipeline.shard.plan import plan
    from fsar.pipeline.shard.worker import marker_path

    config = shard_config(synth_root, tmp_path / "out", video_timeout=10)
    job = run._Job(plan(config)[1][0], False)
    marker = marker_path(job.task, config.out)
    marker.parent.mkdir(parents=True)
    clock = [100.0]
    monkeypatch.setattr(run.time, "monotonic", lambda: clock[0])

    def look(position: int | None, at: float) -> bool:
        marker.write_text("---------\n" if position is None else f"{position:09d}\n")
        clock[0] = at
        return run._overdue(job, config.out, config.video_timeout)

    assert not look(0, 100) and not look(0, 109.9)  # on video 0 for 9.9 s
    assert not look(1, 115) and not look(None, 126) and not look(1, 127)  # between videos: the clock starts again
    assert not look(1, 136.9) and look(1, 137)
    assert job.hung_position == 1

    marker.write_text(f"{2:09d}\n")  # video 1 ended as its worker was stopped: no video to blame
    assert run._record_crash(job, config, "logs") and job.crashed == {} and not marker.exists()
    assert job.hung_position is None and job.deaths_outside_videos == 0

    assert not look(3, 200) and look(3, 211)
    with pytest.warns(UserWarning, match="was still decoding after 10 s"):
        assert run._record_crash(job, config, "logs")
    assert job.crashed == {job.task.entries[3].key: {"reason": run.TIMEOUT_REASON, "detail": f"{job.task.entries[3].path}: still decoding after 10 s (--video-timeout), so its worker was stopped"}}
    with pytest.raises(ValueError, match="video_timeout must be >= 0"):
        shard_config(synth_root, tmp_path / "out", video_timeout=-1)


@pytest.mark.cluster
def test_one_worker_without_ray_records_a_crash_and_a_hang_and_goes_on(shards, synth_root, tmp_path, monkeypatch):
    """With --workers 1 the worker is a child process: a video that kills it, and one that
    holds it past --video-timeout, are recorded as failed as under Ray, and every other
    video is written as an uninterrupted run writes it. A worker that dies on a shard
    before any video stops the job after a second try."""
    from crashing import CRASH_ENV, HANG_SECONDS, CrashingWorker, write_crash_plan
    from fsar.pipeline.shard.run import CRASH_REASON, TIMEOUT_REASON

    ids = [json.loads(s["json"])["id"] for s in read_split(shards, "val")]
    crash = {ids[1]: "SIGSEGV", ids[2]: "hang"}
    monkeypatch.setenv(CRASH_ENV, str(write_crash_plan(tmp_path / "plan.json", videos=crash)))
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match="died while decoding|was still decoding after 2 s") as caught:
        summary = run_shard_stage(shard_config(synth_root, out, video_timeout=2, max_failure_rate=1.0), worker_cls=CrashingWorker)
    assert time.monotonic() - t0 < HANG_SECONDS
    assert len([w for w in caught if "decoding" in str(w.message)]) == 2
    assert summary["failures_by_reason"] == {CRASH_REASON: 1, TIMEOUT_REASON: 1}
    assert {v["id"]: v["reason"] for v in summary["failed_videos"]} == {ids[1]: CRASH_REASON, ids[2]: TIMEOUT_REASON}
    ref, got = samples_by_key(shards), samples_by_key(out)
    lost = {k for k, s in ref.items() if json.loads(s["json"])["id"] in crash}
    assert len(lost) == 2 and set(got) == set(ref) - lost and all(got[k] == ref[k] for k in got)
    assert not list(out.rglob(".*.partial"))

    write_crash_plan(tmp_path / "plan.json", shards=("val/shard-000000",))
    with pytest.raises(RuntimeError, match="died twice on val/shard-000000 while decoding no video; see the worker's output above"):
        run_shard_stage(shard_config(synth_root, tmp_path / "dies"), worker_cls=CrashingWorker)


def test_a_killed_run_takes_its_worker_down_and_the_next_run_names_the_video(shards, synth_root, tmp_path):
    """The driver is killed (SIGKILL) while its worker process hangs on a video: the worker
    dies with it rather than write on behind the next run, which warns which video it was
    decoding and then writes the uninterrupted output. While the first run lasted, a second
    on the same OUT was refused; the killed run leaves no lock behind."""
    from crashing import CRASH_ENV, write_crash_plan

    victim = json.loads(read_split(shards, "val")[2]["json"])["id"]
    plan = write_crash_plan(tmp_path / "plan.json", videos={victim: "hang"})
    out = tmp_path / "out"
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from crashing import CrashingWorker\n"
        "from fsar.pipeline.shard.config import ShardConfig\n"
        "from fsar.pipeline.shard.run import run_shard_stage\n"
        f"run_shard_stage(ShardConfig(dataset='synth', root={str(synth_root)!r}, out={str(out)!r}, workers=1, shard_size=5, short_side=48, video_timeout=0), worker_cls=CrashingWorker)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, CRASH_ENV: str(plan)}, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("hung-*")):
        time.sleep(0.05)
    (flag,) = tmp_path.glob("hung-*")
    worker_pid = int(flag.name.split("-")[1])
    assert worker_pid != proc.pid
    # A second run on the same OUT meanwhile would remove the first's partial files: it stops at once.
    partial = out / "val" / ".shard-000000.tar.partial"
    assert partial.exists()
    with pytest.raises(RuntimeError, match=rf"^{re.escape(str(out))} is in use by fsar-data shard \(pid {proc.pid} on .*, since .*\): let it end, or choose another folder$"):
        run_shard_stage(shard_config(synth_root, out))
    assert partial.exists() and proc.poll() is None
    proc.kill()
    proc.wait()
    proc.stderr.close()

    def alive(pid: int) -> bool:  # a zombie left unreaped (no init in a container) is dead too
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while time.time() < deadline and alive(worker_pid):
        time.sleep(0.05)
    assert not alive(worker_pid), "the worker process outlived its driver"
    write_crash_plan(plan)
    # The CLI shows the warning as it comes: a plain line above the progress bar, not Python's file:line form.
    result = CliRunner().invoke(app, ["shard", "synth", "--root", str(synth_root), "--out", str(out), "--workers", "1", "--shard-size", "5", "--short-side", "48"])
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())  # as wrapped to any width
    said = re.findall(rf"warning:thelastrunwasstopped\(killed,oritsmachinewentdown\)whiledecoding\S*{re.escape(victim)}\S*\(val/shard-000000\);decodingagainnow", text)
    assert len(said) == 1 and "UserWarning" not in text and text.index(said[0]) < text.index("shardsin"), result.output
    assert tree(out) == tree(shards)


def test_several_videos_stopped_at_once_give_one_warning(shards, synth_root, tmp_path):
    """Markers left in two shards (as when a Ray run is killed mid-way): one warning names both."""
    from fsar.pipeline.shard.plan import plan
    from fsar.pipeline.shard.worker import marker_path

    config = shard_config(synth_root, tmp_path / "out")
    tasks = plan(config)[1]
    for task, position in ((tasks[0], 1), (tasks[2], 4)):
        marker_path(task, config.out).parent.mkdir(parents=True, exist_ok=True)
        marker_path(task, config.out).write_text(f"{position:09d}\n")
    with pytest.warns(UserWarning) as caught:
        run_shard_stage(config)
    stopped = [str(w.message) for w in caught if "the last run was stopped" in str(w.message)]
    assert len(stopped) == 1 and "while decoding 2 videos: " in stopped[0]
    for task, position in ((tasks[0], 1), (tasks[2], 4)):
        assert f"{task.entries[position].path} ({task.split}/{task.name()})" in stopped[0]
    assert tree(config.out) == tree(shards)


def test_a_video_the_first_backend_refuses_is_decoded_by_the_next_and_flagged(shards, synth_root, tmp_path):
    from fsar.pipeline.shard.plan import plan
    from fsar.pipeline.shard.worker import ShardWorker
    from fsar.pipeline.video.decode import AutoDecoder, PyAVDecoder

    config = shard_config(synth_root, tmp_path / "out")
    task = plan(config)[1][0]
    worker = ShardWorker(config)
    worker.decoder = AutoDecoder([RefusingBackend(), PyAVDecoder()])  # as `auto` on a GPU whose NVDEC refuses every video
    worker.decoder.setup()
    stats = worker.process(task)
    assert stats["failed"] == 0
    for r in stats["videos"]:
        assert r["decoder"] == "pyav" and r["flags"] == ["decoder_fallback"]
        assert r["detail"].startswith("dali: decode error: ") and r["detail"].endswith("codec profile not supported")
    got = list(wds.WebDataset(str(task.tar_path(config.out)), shardshuffle=False))
    ref = list(wds.WebDataset(str(task.tar_path(shards)), shardshuffle=False))
    assert [sorted(k for k in s if k.endswith(".jpg")) for s in got] == [sorted(k for k in s if k.endswith(".jpg")) for s in ref]
    assert all(g[k] == r[k] for g, r in zip(got, ref) for k in g if k.endswith(".jpg"))  # the same frames as PyAV alone
    assert all(json.loads(g["json"])["flags"] == ["decoder_fallback"] for g in got)


def test_rerun_skips_finished_shards(shards, synth_root):
    before = tree(shards)
    summary = run_shard_stage(shard_config(synth_root, shards))
    assert summary["this_run"]["videos_processed"] == 0
    assert tree(shards) == before


def test_other_settings_into_the_same_out_are_refused(shards, synth_root):
    with pytest.raises(ValueError, match="sampling"):
        run_shard_stage(shard_config(synth_root, shards, frames=4, train_frames=8))


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bad")
    expect = bad_input_corpus(root)
    ids = list(expect)
    write_lists(root, {"train": [(f"class {i % 3}", vid) for i, vid in enumerate(ids)], "test": [("other class", "good")]})
    return root, expect


def test_bad_input_ends_as_ok_or_failed_with_a_reason(bad_corpus, tmp_path):
    root, expect = bad_corpus
    out = tmp_path / "out"
    config = ShardConfig(dataset="folder", root=root, out=out, splits=("train", "test"), workers=1, shard_size=4, short_side=64, max_failure_rate=1.0)
    summary = run_shard_stage(config)
    statuses = {}
    for f in sorted((out / "_status" / "train").glob("*.json")):
        for r in json.loads(f.read_text())["videos"]:
            assert r["id"] not in statuses
            statuses[r["id"]] = r
    assert set(statuses) == set(expect)  # nothing lost
    for vid, reason in expect.items():
        r = statuses[vid]
        if reason is None:
            assert r["status"] == "ok", (vid, r)
        else:
            assert (r["status"], r["reason"]) == ("failed", reason), (vid, r)
            assert r["detail"]
    assert statuses["one"]["flags"] == ["short", "repeated_frames"] and statuses["three"]["flags"] == ["short", "repeated_frames"]
    cut_short = {vid for vid, r in statuses.items() if "truncated" in r.get("flags", [])}
    assert cut_short == {"partial", "partial-webm"}, cut_short
    assert statuses["damaged"]["flags"][-1] == "damaged" and statuses["damaged"]["num_frames"] == 23
    assert statuses["garbled"]["flags"][-1] == "damaged" and statuses["garbled"]["num_frames"] == 59  # 60 packets
    assert 0 < statuses["partial"]["num_frames"] < 24 and 0 < statuses["partial-webm"]["num_frames"] < 24
    assert "declares" in statuses["truncated"]["detail"]
    stored = {json.loads(s["json"])["id"]: s for s in read_split(out, "train")}
    assert set(stored) == {v for v, r in expect.items() if r is None}
    assert all("." not in s["__key__"] for s in stored.values())
    big = json.loads(stored["hd720"]["json"])
    assert (big["width"], big["height"]) == (1280, 720)
    assert Image.open(io.BytesIO(stored["hd720"]["000.jpg"])).size == (114, 64)
    assert json.loads(stored["partial"]["json"])["flags"][-1] == "truncated" and summary["flags"]["truncated"] == 2
    portrait = json.loads(stored["portrait"]["json"])  # coded 128x64, turned to be shown 64 wide
    assert (portrait["width"], portrait["height"], portrait["rotation"], portrait["mirrored"]) == (128, 64, 90, False)
    selfie = json.loads(stored["selfie"]["json"])
    assert (selfie["rotation"], selfie["mirrored"]) == (0, True)
    assert Image.open(io.BytesIO(stored["portrait"]["000.jpg"])).size == (64, 128)
    anamorphic = json.loads(stored["anamorphic"]["json"])  # its coded pixels kept, their aspect ratio recorded
    assert anamorphic["sample_aspect_ratio"] == [4, 3] and json.loads(stored["hd720"]["json"])["sample_aspect_ratio"] is None
    assert Image.open(io.BytesIO(stored["anamorphic"]["000.jpg"])).size == (85, 64)
    n_bad = sum(r is not None for r in expect.values())
    assert summary["failed"] == n_bad and summary["videos"] == len(expect) + 1
    assert sum(summary["failures_by_reason"].values()) == n_bad
    assert json.loads((out / "summary.json").read_text())["failed"] == n_bad


def test_cli_exit_code_follows_the_failure_rate(bad_corpus, tmp_path):
    root, expect = bad_corpus
    args = ["shard", "folder", "--root", str(root), "--workers", "1", "--short-side", "32", "--split", "test"]
    ok = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())["this_run"]
    assert f"this run: {summary['videos_processed']} videos in {summary['seconds']:.1f} s by 1 worker ({summary['videos_per_second']:.1f} videos/s" in " ".join(ok.output.split())
    again = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")])
    assert again.exit_code == 0 and "this run: 0 videos in" in again.output and "(nothing to do)" in again.output
    args[-1] = "train"
    bad = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b"), "--max-failure-rate", "0.1"])
    assert bad.exit_code == 1, bad.output
    assert "exceeds --max-failure-rate" in " ".join(bad.output.split())
    assert "failures by reason" in bad.output
    assert re.search(r"ok but flagged: damaged: 2, repeated_frames: \d+, short: \d+, truncated: 2 ", " ".join(bad.output.split()))
    lenient = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b"), "--max-failure-rate", "0.9"])
    assert lenient.exit_code == 0, lenient.output


def test_retry_failed_redoes_only_failed_videos(synth_root, shards, tmp_path):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    for p in (synth_root / "videos").iterdir():
        os.link(p, root / "videos" / p.name)
    (root / "splits").mkdir()
    for f in (synth_root / "splits").iterdir():
        (root / "splits" / f.name).write_bytes(f.read_bytes())
    victim = sorted((root / "videos").iterdir())[3]
    kept = victim.read_bytes()
    victim.unlink()
    out = tmp_path / "out"
    first = run_shard_stage(shard_config(root, out, dataset="folder", max_failure_rate=1.0))
    assert first["failed"] == 1 and first["failures_by_reason"] == {"missing": 1}
    victim.write_bytes(kept)
    again = run_shard_stage(shard_config(root, out, dataset="folder"))
    assert again["failed"] == 1 and again["this_run"]["videos_processed"] == 0  # finished shards are skipped
    retried = run_shard_stage(shard_config(root, out, dataset="folder", retry_failed=True))
    assert retried["failed"] == 0 and retried["this_run"]["videos_processed"] == 5  # one shard
    fresh = tmp_path / "fresh"
    run_shard_stage(shard_config(root, fresh, dataset="folder"))
    skip = ("summary.json", "manifest.json")
    assert tree(out, skip) == tree(fresh, skip)


def test_killed_run_resumes_to_the_uninterrupted_output(synth_root, shards, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fsar.cli.data", "shard", "synth", "--root", str(synth_root), "--out", str(out),
           "--workers", "1", "--shard-size", "5", "--short-side", "48"]
    for kill_after in (1, 3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # The run (driver and worker, one process group) goes on in slices of a few milliseconds
        # and is stopped while its finished shards are counted, so it cannot finish between the
        # count and the kill, however loaded the machine (under pytest -n auto it once did).
        deadline = time.time() + 60
        try:
            while time.time() < deadline:
                os.killpg(proc.pid, signal.SIGSTOP)
                if len(list(out.glob("_status/*/*.json"))) >= kill_after:
                    break
                os.killpg(proc.pid, signal.SIGCONT)
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass  # the run ended on its own: the assertion below says so
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # nothing of the group may stay stopped
        proc.wait()
    total_shards = len(list(shards.glob("_status/*/*.json")))
    assert len(list(out.glob("_status/*/*.json"))) < total_shards, "the run finished before it was killed"
    summary = run_shard_stage(shard_config(synth_root, out))
    assert 0 < summary["this_run"]["videos_processed"] < summary["videos"]
    assert tree(out) == tree(shards)  # stale partial files included: they must be gone


def test_ctrl_c_stops_with_code_130_and_the_same_command_goes_on(synth_root, shards, tmp_path, monkeypatch):
    """Ctrl-C (here raised where the progress bar hears of the second shard) ends the command
    with 130 and a line on how to go on; the two shards finished before it are kept."""
    from contextlib import contextmanager

    import fsar.cli.data

    @contextmanager
    def interrupting_bar(description, unit):
        def update(done, total, failures=None):
            if done >= 10:  # two shards of 5 done
                raise KeyboardInterrupt

        yield update

    monkeypatch.setattr(fsar.cli.data, "progress_bar", interrupting_bar)
    out = tmp_path / "out"
    args = ["shard", "synth", "--root", str(synth_root), "--out", str(out), "--workers", "1", "--shard-size", "5", "--short-side", "48"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted: finished shards are kept; run the same command again to go on from there" in " ".join(result.output.split())
    assert len(list(out.glob("_status/*/*.json"))) == 2 and not list(out.rglob("*.partial"))
    monkeypatch.undo()
    assert CliRunner().invoke(app, args).exit_code == 0
    assert tree(out) == tree(shards)


def test_output_that_cannot_be_written_stops_the_run_naming_the_file_and_resumes(synth_root, shards, tmp_path):
    """A write that fails (a file size limit here; a full disk or a quota alike) stops the run
    with exit code 1 and an error naming the shard, not a traceback; no partial file is left,
    and the same command run again (the limit lifted) gives the uninterrupted output."""
    import resource

    limit = (shards / "train" / "shard-000000.tar").stat().st_size - 1  # the first shard cannot be written
    assert limit > 10 * max(p.stat().st_size for p in shards.glob("*.json"))  # the manifest can
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsar.cli.data", "shard", "synth", "--root", str(synth_root), "--out", str(out),
           "--workers", "1", "--shard-size", "5", "--short-side", "48"]

    def limited():  # in the command and its worker process; Python ignores SIGXFSZ, so writes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    wide = {**os.environ, "COLUMNS": "1000"}  # no line wrapped inside a path
    proc = subprocess.run(cmd, preexec_fn=limited, env=wide, capture_output=True, text=True, timeout=120)
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"error: \[Errno 27\] File too large: '[^']*/shard-\d{6}\.tar'; finished shards are kept: make room, then run the same command again", text), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "shard-000000.tar'" in text and not list(out.rglob("*.partial")) and not list(out.rglob("*.tar"))
    again = subprocess.run(cmd, env=wide, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert tree(out) == tree(shards)
