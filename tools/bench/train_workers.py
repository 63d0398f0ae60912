"""Finetune-mode training steps on Ray Train workers: N workers against 1, in the same run.

    python -m tools.bench.train_workers --shards data/synth-shards --backbone fsar-micro-vit
        [--workers 2] [--steps 8] [--episodes 4] [--out DIR]

Both runs are `train_on_workers` on a local Ray instance with one CPU core (one torch thread)
per worker, so a worker stands for one device: 1 worker trains all of a step's episodes,
N workers a share each and average gradients (DDP over gloo). Steps per second is the
inverse of rank 0's median step time in RUN_DIR/workers/rank0.jsonl (forward, backward, the
gradient all-reduce and Adam), leaving out the first two steps and the validation. This
process alone, with torch's default threads (no Ray), is measured too, for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _step_seconds(run: Path, skip: int = 2) -> float:
    rows = [json.loads(line) for line in open(run / "workers" / "rank0.jsonl")]
    return float(np.median([r["seconds"] for r in rows if r["step"] >= skip]))


def measure(shards: Path, backbone: str, pretrained: str, workers: int = 2, steps: int = 8, episodes: int = 4, config: str = "synth") -> dict:
    """Finetune steps/s on `workers` Ray Train workers and on 1, each worker one CPU thread; and in this process alone."""
    import ray
    import torch

    from fsar.pipeline.actors import init_ray
    from fsar.train.configs import get_config
    from fsar.train.rundir import prepare_run
    from fsar.train.trainer import train_loop
    from fsar.train.workers import WorkersConfig, train_on_workers

    cfg = dataclasses.replace(get_config(config, "clip-fsar"), mode="finetune", shards=str(shards), backbone=backbone, pretrained=pretrained,
                              episodes_per_step=episodes, iterations=steps, val_every=steps, val_episodes=20, log_every=steps, threads=0)
    out: dict = {"episode": f"{cfg.way}-way {cfg.shot}-shot, {cfg.query} queries per class, {cfg.frames} frames", "backbone": f"{backbone} ({pretrained})",
                 "episodes_per_step": episodes, "steps_timed": steps - 2, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        here = Path(tmp) / "here"
        t = time.perf_counter()
        train_loop(prepare_run(cfg, here, False), here, False, worker_log=True)
        out["here_threads"] = torch.get_num_threads()
        out["here_steps_per_second"] = round(1 / _step_seconds(here), 3)
        init_ray(None, num_cpus=max(workers, 1))
        try:
            for n in (1, workers):
                run = Path(tmp) / f"w{n}"
                t = time.perf_counter()
                train_on_workers(cfg, run, WorkersConfig(workers=n, address="auto" if n == 1 else None, cpus_per_worker=1))
                out[f"workers_{n}_steps_per_second"] = round(1 / _step_seconds(run), 3)
                out[f"workers_{n}_wall_seconds"] = round(time.perf_counter() - t, 1)
        finally:
            ray.shutdown()
    out["workers"] = workers
    out["speedup"] = round(out[f"workers_{workers}_steps_per_second"] / out["workers_1_steps_per_second"], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--backbone", default="fsar-micro-vit")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    r = measure(args.shards, args.backbone, args.pretrained, args.workers, args.steps, args.episodes)
    print_result(r)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_workers.json").write_text(json.dumps(r, indent=1) + "\n")
    return r


def print_result(r: dict) -> None:
    n = r["workers"]
    print(f"finetune steps ({r['episode']}; {r['episodes_per_step']} episodes a step; {r['backbone']}), median of {r['steps_timed']} steps:")
    print(f"  1 Ray Train worker, 1 thread   {r['workers_1_steps_per_second']:7.3f} steps/s")
    print(f"  {n} Ray Train workers, 1 thread each {r[f'workers_{n}_steps_per_second']:7.3f} steps/s: {r['speedup']}x")
    print(f"  this process, {r['here_threads']} threads (no Ray) {r['here_steps_per_second']:7.3f} steps/s")


if __name__ == "__main__":
    main()
