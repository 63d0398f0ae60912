"""Run the shard stage: plan, skip finished shards, execute the rest in a worker process or on Ray, summarise."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from fsar.pipeline.actors import gpu_share, node_cpus, ray_session, run_on_actors, set_up, warn_unplaced
from fsar.pipeline.child import ChildWorker, run_on_child
from fsar.pipeline.shard.config import ShardConfig
from fsar.pipeline.shard.plan import ShardTask, plan, write_manifest
from fsar.pipeline.lock import hold
from fsar.pipeline.atomic import remove_stale_partials, write_json_atomic
from fsar.pipeline.shard.worker import ShardWorker, marker_path, read_marker
from fsar.pipeline.video.decode import dali_installed

Progress = Callable[[int, int, int], None]  # (videos done, videos total, failures so far)


def _finished(task: ShardTask, out: Path) -> dict | None:
    stats = task.stats_path(out)
    if stats.exists() and task.tar_path(out).exists():
        return json.loads(stats.read_text(encoding="utf-8"))
    return None


CRASH_REASON = "worker crashed"
TIMEOUT_REASON = "decoder timed out"


@dataclass
class _Job:
    """A shard to write, with the videos that took a worker down on it so far."""

    task: ShardTask
    retry_failed: bool
    crashed: dict[str, dict] = field(default_factory=dict)
    deaths_outside_videos: int = 0
    seen_position: int | None = None  # the video its marker named when last looked at...
    seen_since: float = 0.0  # ... and since when (the driver's clock)
    hung_position: int | None = None  # the video its worker was stopped on, as overdue


def _overdue(job: _Job, out: Path, timeout: float) -> bool:
    """True when `job`'s worker has been on one video for `timeout` seconds or more, by the
    driver's clock (its first sight of the video; worker clocks are never compared)."""
    position, now = read_marker(job.task, out), time.monotonic()
    if position is None or position != job.seen_position:
        job.seen_position, job.seen_since = position, now
        return False
    if now - job.seen_since < timeout:
        return False
    job.hung_position = position
    return True


def _watch(config: ShardConfig, logs: str) -> tuple[Callable, Callable | None, float]:
    """(on_death, overdue, check_every) for `run_on_actors` and `run_on_child`: a video that
    kills its worker, or holds it past the timeout, is recorded as failed and the shard goes
    again. The markers are looked at every tenth of the timeout, at most every second.

    Args:
        logs: where the workers' own output is, for the error after two deaths outside videos.
    """
    overdue = (lambda job: _overdue(job, config.out, config.video_timeout)) if config.video_timeout else None
    check_every = min(1.0, config.video_timeout / 10) if config.video_timeout else 1.0
    return (lambda job: _record_crash(job, config, logs)), overdue, check_every


def _run_local(config: ShardConfig, work: list[_Job], worker_cls: type) -> Iterator[dict | int]:
    """One worker, without Ray: in a child process, so that a video that crashes or hangs it
    is recorded as failed (as under Ray) instead of ending or holding the run. Yields 1 (the
    workers started) once it is set up, then each shard's stats."""
    children: list[ChildWorker] = []

    def new_child() -> ChildWorker:
        children.append(ChildWorker(worker_cls, config))
        children[-1].start()
        return children[-1]

    def call(child: ChildWorker, job: _Job) -> None:
        child.submit("process", job.task, retry_failed=job.retry_failed, crashed=job.crashed)

    try:
        first = new_child()
        yield 1  # set up: throughput is timed from here
        for _, stats, error in run_on_child(first, work, call, new_child, *_watch(config, "see the worker's output above")):
            if error is not None:  # a fault in the stage itself, not a video: stop, plainly
                raise error
            yield stats
    finally:
        for child in children:
            child.close()


def gpus_per_actor(decoder: str, actors: int, cluster_gpus: float) -> float:
    """The GPUs each shard actor asks Ray for: with `dali` or `auto`, the cluster's GPUs shared out.

    Ray hides every GPU from an actor that asks for none (CUDA_VISIBLE_DEVICES=""), so `auto`
    must ask for a share to decode with DALI at all; and a whole GPU per actor would leave all
    but one actor per GPU waiting for ever to start. NVDEC decodes several streams at once, so
    actors sharing a GPU still gain. Without DALI installed `auto` decodes with PyAV and asks
    for none, leaving the GPUs to other jobs on the cluster.
    """
    if decoder == "dali" or (decoder == "auto" and cluster_gpus > 0 and dali_installed()):  # importing DALI takes 0.8 s
        return gpu_share(actors, cluster_gpus)
    return 0


def _run_ray(config: ShardConfig, work: list[_Job], worker_cls: type) -> Iterator[dict | int]:
    """One actor per worker (its decoder is set up once; `config.workers` None: one per CPU of
    the cluster), each shard one task. Yields the actors' number once they are set up, then
    each shard's stats."""
    import ray

    with ray_session(config.address, num_cpus=config.workers):
        resources = ray.cluster_resources()
        n_actors = max(1, min(config.workers or int(resources.get("CPU", 1)), len(work)))
        warn_unplaced(n_actors, 1, node_cpus())  # more --workers than a joined cluster's CPUs
        gpus = gpus_per_actor(config.decoder, n_actors, resources.get("GPU", 0))
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus)(worker_cls)
        actors = [actor_cls.remote(config) for _ in range(n_actors)]
        set_up(actors)
        yield n_actors  # workers are up: throughput is timed from here

        def call(actor, job: _Job):
            return actor.process.remote(job.task, retry_failed=job.retry_failed, crashed=job.crashed)

        for _, stats, error in run_on_actors(actors, work, call, lambda: actor_cls.remote(config), *_watch(config, "see Ray's logs")):
            if error is not None:  # a fault in the stage itself, not a video: stop, plainly
                raise error
            yield stats


def _record_crash(job: _Job, config: ShardConfig, logs: str) -> bool:
    """Put the death of `job`'s worker, or its stopping as overdue, on the video its marker
    names; True: run the shard again.

    Args:
        logs: where the worker's own output is, for the error below.

    Raises:
        RuntimeError: the worker died twice on this shard outside any video, so no video
            can be blamed and trying again would not end.
    """
    position = read_marker(job.task, config.out)
    marker_path(job.task, config.out).unlink(missing_ok=True)  # the next worker must not be timed on it
    hung, job.hung_position, job.seen_position = job.hung_position, None, None
    if hung is not None and position != hung:  # stopped as overdue, but that video ended as it was: go again
        return True
    if position is None:
        job.deaths_outside_videos += 1
        if job.deaths_outside_videos >= 2:
            raise RuntimeError(f"a shard worker died twice on {job.task.split}/{job.task.name()} while decoding no video; {logs}")
        return True
    entry = job.task.entries[position]
    if hung is not None:
        reason, what = TIMEOUT_REASON, f"still decoding after {config.video_timeout:g} s (--video-timeout), so its worker was stopped"
        said = f"{entry.path} was still decoding after {config.video_timeout:g} s"
    else:
        reason, what = CRASH_REASON, "the worker's process died while decoding it (a crash in the decoder's native code, or killed for memory)"
        said = f"a shard worker died while decoding {entry.path}"
    job.crashed[entry.key] = {"reason": reason, "detail": f"{entry.path}: {what}"}
    warnings.warn(f"{said}: recorded as failed ({reason}); its shard goes to a new worker", stacklevel=2)
    return True


def _warn_on_stopped_videos(tasks: list[ShardTask], out: Path) -> None:
    """Say which videos the last run's workers were decoding when it was stopped, if it was
    stopped mid-video (a worker that dies leaves its marker to the driver, which clears it:
    one left over means the driver went down too, killed or with its machine)."""
    stopped = [(task, task.entries[i]) for task in tasks if (i := read_marker(task, out)) is not None]
    if not stopped:
        return
    where = "; ".join(f"{e.path} ({t.split}/{t.name()})" for t, e in stopped[:5]) + ("; ..." if len(stopped) > 5 else "")
    what = where if len(stopped) == 1 else f"{len(stopped)} videos: {where}"
    warnings.warn(f"the last run was stopped (killed, or its machine went down) while decoding {what}; decoding again now", stacklevel=3)


def run_shard_stage(config: ShardConfig, on_progress: Progress | None = None, worker_cls: type = ShardWorker) -> dict:
    """Shard the videos described by `config`; returns the summary (also OUT/summary.json).

    Finished shards (tar and stats file present) are skipped; with
    `config.retry_failed` those with failures are redone for their failed videos only.
    Partial shards (no stats file) are redone from scratch. Under Ray, a video that takes
    its worker's process down is recorded as failed (`worker crashed`) and the job goes
    on, as is one still decoding after `config.video_timeout` seconds (`decoder timed out`:
    its worker is stopped and replaced). Without Ray (one worker) the worker runs in a
    child process, to the same effect.

    Args:
        config: what to shard, and how.
        on_progress: called with (videos done, videos total, failures so far).
        worker_cls: the stage class each worker runs (`ShardWorker`, or a subclass with,
            say, its own decoder in `setup()`).

    Raises:
        RuntimeError: another run is writing `config.out`, or the job cannot go on (no
            worker can be set up, a worker dies twice on a shard outside any video).
        ValueError: `config.out` was sharded with other inputs or settings.
    """
    t0 = time.perf_counter()
    manifest, tasks = plan(config)
    with hold(config.out, "fsar-data shard"):
        return _shard(config, manifest, tasks, t0, on_progress, worker_cls)


def _shard(config: ShardConfig, manifest: dict, tasks: list[ShardTask], t0: float, on_progress: Progress | None, worker_cls: type) -> dict:
    write_manifest(config.out, manifest)
    _warn_on_stopped_videos(tasks, config.out)
    remove_stale_partials(config.out)
    done: dict[tuple[str, int], dict] = {}
    work: list[_Job] = []
    for task in tasks:
        stats = _finished(task, config.out)
        if stats is None:
            work.append(_Job(task, False))
        elif config.retry_failed and stats["failed"]:
            work.append(_Job(task, True))
        else:
            done[(task.split, task.index)] = stats
    total = sum(len(t.entries) for t in tasks)
    skipped_videos = sum(len(v["videos"]) for v in done.values())
    processed = 0
    failures = sum(v["failed"] for v in done.values())
    if on_progress:
        on_progress(skipped_videos, total, failures)
    results: Iterable[dict | int] = []
    workers = 0
    if work:
        use_ray = config.address is not None or (config.workers > 1 and len(work) > 1)  # workers is None only with an address
        results = _run_ray(config, work, worker_cls) if use_ray else _run_local(config, work, worker_cls)
    t_start = t_work = t_last = time.perf_counter()
    for stats in results:
        if isinstance(stats, int):  # workers ready: the progress rate is timed from here, as the summary's
            workers = stats
            t_work = t_last = time.perf_counter()
            if on_progress:
                on_progress(skipped_videos, total, failures)
            continue
        t_last = time.perf_counter()  # the work ends with the last shard, not after Ray's shutdown
        key = (stats["split"], int(stats["shard"][6:12]))
        done[key] = stats
        processed += len(stats["videos"])
        failures += stats["failed"]
        if on_progress:
            on_progress(skipped_videos + processed, total, failures)
    t_end = time.perf_counter()
    summary = summarise(config, [done[(t.split, t.index)] for t in tasks], processed, t_end - t0, t_last - t_work)
    summary["this_run"]["workers"] = workers  # started (0: nothing to do; 1: no Ray)
    summary["this_run"]["startup_seconds"] = round(t_work - t_start, 3)
    summary["this_run"]["shutdown_seconds"] = round(t_end - t_last, 3)
    write_json_atomic(config.out / "summary.json", summary)
    return summary


def summarise(config: ShardConfig, shard_stats: list[dict], processed: int, seconds: float, work_seconds: float) -> dict:
    """Counts per split, failures by reason, decoders used and this run's throughput."""
    per_split: dict[str, Counter] = {}
    reasons: Counter = Counter()
    decoders: Counter = Counter()
    flags: Counter = Counter()
    failed_videos = []
    for s in shard_stats:
        c = per_split.setdefault(s["split"], Counter())
        c["videos"] += len(s["videos"])
        c["ok"] += s["ok"]
        c["failed"] += s["failed"]
        c["frames"] += s["frames"]
        c["bytes"] += s["bytes"]
        c["shards"] += 1
        for r in s["videos"]:
            if r["status"] == "ok":
                decoders[r["decoder"]] += 1
                flags.update(r["flags"])
            else:
                reasons[r["reason"]] += 1
                failed_videos.append({"split": s["split"], "shard": s["shard"], "label": r.get("label"), "id": r["id"], "reason": r["reason"], "detail": r["detail"]})
    total = sum(c["videos"] for c in per_split.values())
    failed = sum(c["failed"] for c in per_split.values())
    rate = failed / total if total else 0.0
    return {
        "out": str(config.out),
        "videos": total,
        "ok": total - failed,
        "failed": failed,
        "failure_rate": round(rate, 6),
        "max_failure_rate": config.max_failure_rate,
        "passed": rate <= config.max_failure_rate,
        "splits": {k: dict(v) for k, v in per_split.items()},
        "failures_by_reason": dict(reasons.most_common()),
        "decoders": dict(decoders),
        "flags": dict(flags),
        "this_run": {
            "videos_processed": processed,
            "seconds": round(seconds, 3),
            "videos_per_second": round(processed / work_seconds, 3) if processed and work_seconds > 0 else None,  # workers up
            "ray_address": config.address,
        },
        "failed_videos": failed_videos,
    }
