"""Run the embed stage: resolve the backbone, embed shards into part files, join them into the cache."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fsar.pipeline import __version__
from fsar.pipeline.actors import WorkerDied, cpus_per_actor, node_cpus, ray_session, run_on_actors, set_up, warn_unplaced, whole_gpu_actors
from fsar.pipeline.lock import hold
from fsar.pipeline.atomic import remove_stale_partials, write_json_atomic
from fsar.pipeline.backbones import BackboneSpec, create_backbone, default_pretrained, resolve_name, save_weights, sha256_file
from fsar.pipeline.embed.cache import cache_writer, read_part
from fsar.pipeline.embed.config import EmbedConfig
from fsar.pipeline.embed.worker import EmbedWorker
from fsar.pipeline.shard.format import ShardReadError, UnsafeMember
from fsar.pipeline.paths import absolute
from fsar.pipeline.prompts import PROMPT_SETS, encode_prompts, ensemble
from fsar.pipeline.views import build_view

Progress = Callable[[int, int, int], None]  # (shards done, shards total, shards failed)


def resolve_weights(config: EmbedConfig) -> tuple[BackboneSpec, dict]:
    """The backbone every worker loads, and how its weights were obtained.

    With pretrained 'none' the seeded random weights are saved beside the cache once,
    and everyone (workers, text encoder, later fine-tuning) loads that very file.
    """
    name = resolve_name(config.backbone)
    pretrained = config.pretrained or default_pretrained(name)
    if pretrained != "none" and (file := absolute(pretrained)).is_file():  # a checkpoint: named as workers elsewhere find it
        pretrained = str(file)
    if pretrained != "none":
        return BackboneSpec(name, pretrained, activation=config.activation), {}
    warnings.warn(
        f"{name} with RANDOM weights (--pretrained none, seed {config.seed}): embeddings carry no pretrained "
        "knowledge; every output records this",
        stacklevel=2,
    )
    path = config.random_weights
    if not path.exists():
        model, source = create_backbone(BackboneSpec(name, "none", config.seed, config.activation))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, path, {"backbone": name, "activation": source["activation"], "random_init": True, "seed": config.seed})
    return BackboneSpec(name, str(path), activation=config.activation), {"pretrained": "none", "random_init": True, "seed": config.seed, "weights_file": path.name}


def _run_ray(config: EmbedConfig, spec: BackboneSpec, device: str, precision: str, view: str, work, worker_cls: type) -> Iterator[tuple | dict]:
    """Embed `work` on Ray actors. Yields {"workers", "threads_per_worker"} once they are set
    up (nothing with no work), then (work item, stats, error) as shards finish."""
    import ray

    if not work:  # every part is there: no cluster to start
        return
    n = min(config.workers, len(work))
    # A local cluster holds every worker: more workers than cores share them, one thread each.
    with ray_session(config.address, num_cpus=max(os.cpu_count() or 1, n)):
        gpu = device == "cuda"
        nodes = node_cpus()
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpu and not config.address:  # one model per GPU: on this machine, actors beyond its GPUs could never start
            n = whole_gpu_actors(n, gpus)
        elif gpu and gpus < n:  # an autoscaler may add GPU nodes for them
            warnings.warn(f"{n} workers want one GPU each and the Ray cluster has {gpus:g} now: the rest wait for GPUs to join", stacklevel=2)
        threads = 1 if gpu else cpus_per_actor(n, nodes)  # the cluster's CPUs, shared out, not this machine's
        if not gpu:
            warn_unplaced(n, threads, nodes)
        actor = ray.remote(num_gpus=1 if gpu else 0, num_cpus=threads)(worker_cls)

        def new_actor():
            return actor.remote(spec, device, precision, config.batch, threads, view)

        deaths: Counter = Counter()

        def again(w) -> bool:  # a shard whose worker died goes once more to a fresh one, then counts as failed
            deaths[w] += 1
            return deaths[w] < 2

        actors = [new_actor() for _ in range(n)]
        set_up(actors)
        yield {"workers": n, "threads_per_worker": threads}  # up: the rate is timed from here, as the shard stage's
        for w, stats, error in run_on_actors(actors, work, lambda a, w: a.process.remote(w[1], w[2]), new_actor, again):
            if error is not None and (isinstance(error, UnsafeMember) or not isinstance(error, (ShardReadError, WorkerDied))):
                raise error  # a fault in the stage or a crafted tar, not a damaged shard: stop, as in-process
            if isinstance(error, WorkerDied):
                error = f"{w[1]}: {error}"  # a read error names its shard itself
            yield w, stats, None if error is None else f"{error}"[:300]


def run_embed_stage(config: EmbedConfig, on_progress: Progress | None = None, worker_cls: type = EmbedWorker) -> dict:
    """Embed every shard listed in the shard manifest and write the cache; returns a summary.

    Finished part files are reused; unreadable shards are reported and skipped while
    their fraction stays within `config.max_failure_rate`, else the stage fails
    (RuntimeError) without writing the cache. Under Ray, a shard whose worker's process
    dies (the OOM killer, a crash in native code) goes once more to a fresh worker, and
    then counts as failed, like an unreadable one. A tar holding a link or a path (`UnsafeMember`)
    stops the stage: the folder is refused, not counted.

    Args:
        config: what to embed, and how.
        on_progress: called with (shards done, shards total, shards failed).
        worker_cls: the stage class each worker runs (`EmbedWorker` or a subclass).

    Raises:
        RuntimeError: too many shards failed (above), or another run is using the cache's
            part files.
    """
    with hold(config.parts, "fsar-data embed"):
        return _embed(config, on_progress, worker_cls)


def _embed(config: EmbedConfig, on_progress: Progress | None, worker_cls: type) -> dict:
    t0 = time.perf_counter()
    manifest = json.loads((config.shards / "manifest.json").read_text(encoding="utf-8"))
    device, precision = config.resolved_device(), config.resolved_precision()
    spec, random_info = resolve_weights(config)
    model, source = create_backbone(spec, device)
    source = {**source, **random_info}
    if random_info:
        source["sha256"] = sha256_file(spec.pretrained)
    view = config.resolved_view(manifest.get("dataset"))
    preprocess = build_view(view, model)
    identity = {
        "backbone": source["backbone"],
        "pretrained": source["pretrained"],
        "weights_sha256": source.get("sha256"),
        "state_sha256": source["state_sha256"],
        "activation": source["activation"],
        "precision": precision,
        "preprocess": preprocess.describe(),
        "shard_manifest": manifest["splits"],
    }
    config.parts.mkdir(parents=True, exist_ok=True)
    id_file = config.parts / "config.json"
    if id_file.exists() and json.loads(id_file.read_text(encoding="utf-8")) != json.loads(json.dumps(identity)):
        raise ValueError(f"{config.parts} holds parts made with another backbone, weights, precision or shards; delete it or choose another --cache")
    write_json_atomic(id_file, identity)
    remove_stale_partials(config.parts)

    tasks = []  # (split, shard tar, part file)
    for split, info in manifest["splits"].items():
        for name in info["shards"]:
            tasks.append((split, config.shards / split / name, config.parts / split / (Path(name).stem + ".h5")))
    work = [t for t in tasks if not t[2].exists()]
    failed: dict[str, str] = {}
    frames_done, t_work = 0, time.perf_counter()
    if on_progress:
        on_progress(len(tasks) - len(work), len(tasks), 0)
    if config.workers > 1 or config.address:
        results = _run_ray(config, spec, device, precision, view, work, worker_cls)
    else:
        worker = worker_cls(spec, device, precision, config.batch, config.threads, view)
        worker.setup(model)

        def local():
            if work:
                yield {"workers": 1, "threads_per_worker": config.threads}
            for w in work:
                try:
                    yield w, worker.process(w[1], w[2]), None
                except UnsafeMember:
                    raise  # a crafted tar: the folder is refused (exit 2), not counted as a failed shard
                except ShardReadError as e:
                    yield w, None, str(e)

        results = local()
    done, t_ready = len(tasks) - len(work), t_work  # t_ready: workers up (none started: nothing to do)
    layout = {"workers": 0, "threads_per_worker": 0}
    for result in results:
        if isinstance(result, dict):  # the workers are set up
            layout, t_ready = result, time.perf_counter()
            if on_progress:
                on_progress(done, len(tasks), 0)
            continue
        w, stats, error = result
        done += 1
        if error:
            failed[str(w[1])] = error
        else:
            frames_done += stats["frames"]
        if on_progress:
            on_progress(done, len(tasks), len(failed))
    seconds_work = time.perf_counter() - t_ready
    rate = len(failed) / len(tasks) if tasks else 0.0
    summary = {
        "cache": str(config.cache),
        "backbone": source["backbone"],
        "pretrained": source["pretrained"],
        "random_init": source.get("random_init", False),
        "activation": source["activation"],
        "device": device,
        "precision": precision,
        "shards": len(tasks),
        "failed_shards": failed,
        "this_run": {
            **layout,
            "frames": frames_done,
            "seconds": round(seconds_work, 3),
            "frames_per_second": round(frames_done / seconds_work, 1) if frames_done else None,
            "startup_seconds": round(t_ready - t_work, 3),  # starting Ray and setting up its workers
            "ray_address": config.address,  # the cluster joined, None for a local one or none
        },
    }
    if rate > config.max_failure_rate:
        raise RuntimeError(
            f"{len(failed)} of {len(tasks)} shards could not be embedded (more than --max-failure-rate "
            f"{config.max_failure_rate:.0%}); the cache was not written: " + "; ".join(failed.values())
        )
    join_cache(config, manifest, tasks, failed, model, source, preprocess, precision)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def join_cache(config, manifest, tasks, failed, model, source, preprocess, precision) -> None:
    """Copy the part files, in shard order, into one HDF5 file with text embeddings and attributes."""
    from fsar.pipeline.backbones import _open_clip

    tokenizer = _open_clip().get_tokenizer(source["backbone"])
    device = next(model.parameters()).device.type
    attrs = {
        "tool_version": __version__,
        "backbone": source["backbone"],
        "pretrained": source["pretrained"],
        "random_init": bool(source.get("random_init", False)),
        "weights_sha256": source.get("sha256", ""),
        "weights_file": source.get("weights_file", ""),
        "weights_state_sha256": source["state_sha256"],  # of the loaded weights, for any source
        "activation": source["activation"],
        "activation_from": source["activation_from"],
        "seed": int(source.get("seed", -1)),
        "precision": precision,
        "preprocess": json.dumps(preprocess.describe()),
        "shard_manifest": json.dumps(manifest, ensure_ascii=False),
        "skipped_shards": json.dumps(failed),
        "prompt_sets": json.dumps({t: PROMPT_SETS[t] for t in config.templates}),
    }
    with cache_writer(config.cache, attrs) as cache:
        for split, info in manifest["splits"].items():
            parts = [read_part(t[2]) for t in tasks if t[0] == split and str(t[1]) not in failed]
            frames = [p["frames"] for p in parts if "frames" in p]
            frames = np.concatenate(frames) if frames else np.zeros((0, info["frames_per_video"], 0), np.float16)
            labels = np.concatenate([p["labels"] for p in parts]) if parts else np.zeros(0, np.int64)
            names = [c["name"] for c in sorted(info["classes"], key=lambda c: c["index"])]
            texts = {}
            for set_name in config.templates:
                per = encode_prompts(model, tokenizer, names, PROMPT_SETS[set_name], device)
                texts[set_name] = (ensemble(per), per)
            cache.split(split, frames, labels, [k for p in parts for k in p["keys"]], [k for p in parts for k in p["ids"]], names, texts)
