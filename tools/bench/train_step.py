"""Train-step benchmark: time per training episode in adapter mode vs finetune mode, same episode,
same head, same tiny backbone; then finetune steps on 2 Ray Train workers against 1
(`tools.bench.train_workers`).

    python -m tools.bench.train_step --shards data/synth-shards --cache data/synth-cache.h5
        [--config synth] [--shot 1] [--repeats 5] [--threads 0] [--workers 2] [--out DIR]

Adapter mode reads the episode's cached embeddings; finetune mode reads the same videos'
JPEG frames from the shards, preprocesses them and runs the visual encoder forward and
backward. Both do one optimiser step per episode (forward, backward, Adam), timed over
--repeats steps after one warm-up step; finetune's data loading (JPEG decode and
preprocessing) is timed separately and included in its total.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _time_steps(model, source, text, eps, config, repeats: int) -> tuple[float, float]:
    """Seconds per step (total, of which data loading)."""
    from fsar.train.trainer import episode_batch, make_optimizer

    opt = make_optimizer(model, config)
    base = text
    model.train()
    times, loads = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        x = source.batch(np.concatenate([eps.support.reshape(1, -1), eps.query.reshape(1, -1)], axis=1), np.random.default_rng(i))
        t1 = time.perf_counter()

        class Preloaded:  # the batch already read, so episode_batch only embeds
            info = source.info

            @staticmethod
            def batch(rows, rng, queries=None):
                return x

        batch = episode_batch(model, Preloaded, text, eps, None, "cpu")
        loss, _ = model.head.loss(batch, base)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
            loads.append(t1 - t0)
    return float(np.median(times)), float(np.median(loads))


def main(argv: list[str] | None = None) -> dict:
    from fsar.train.configs import get_config
    from fsar.train.episodes import EpisodeConfig, sample_episodes
    from fsar.train.model import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="the cache of --shards, embedded with --backbone")
    ap.add_argument("--config", default="synth")
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2, help="also finetune steps on this many Ray Train workers against 1 (tools.bench.train_workers); 0: not")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = dataclasses.replace(get_config(args.config), shot=args.shot, episodes_per_step=1)
    adapter_cfg = dataclasses.replace(base, mode="adapter", cache=str(args.cache))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import h5py

        with h5py.File(args.cache, "r") as f:
            backbone, pretrained, seed = f.attrs["backbone"], str(f.attrs["pretrained"]), int(f.attrs["seed"])
        finetune_cfg = dataclasses.replace(base, mode="finetune", shards=str(args.shards), backbone=backbone, pretrained=pretrained, seed=max(seed, 0))
        adapter, a_data = build_model(adapter_cfg)
        finetune, f_data = build_model(finetune_cfg)
    a_src, f_src = a_data.split("train"), f_data.split("train")
    if a_src.info.keys != f_src.info.keys:
        raise SystemExit(f"{args.cache} was not embedded from {args.shards}: their train splits differ")
    eps = sample_episodes(a_src.info.labels, EpisodeConfig(base.way, base.shot, base.query, 1, seed=0))
    videos = eps.support.size + eps.query.size
    a_step, _ = _time_steps(adapter, a_src, a_data.text["train"], eps, adapter_cfg, args.repeats)
    f_step, f_load = _time_steps(finetune, f_src, f_data.text["train"], eps, finetune_cfg, args.repeats)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    result = {
        "episode": f"{base.way}-way {base.shot}-shot, {base.query} queries per class: {videos} videos x {base.frames} frames",
        "backbone": f"{backbone} ({pretrained})",
        "threads": torch.get_num_threads(),
        "adapter_ms_per_episode": round(a_step * 1000, 2),
        "finetune_ms_per_episode": round(f_step * 1000, 2),
        "finetune_data_ms_per_episode": round(f_load * 1000, 2),
        "finetune_over_adapter": round(f_step / a_step, 1),
        "adapter_trainable_parameters": count(adapter),
        "finetune_trainable_parameters": count(finetune),
    }
    print(f"one training episode ({result['episode']}), {result['backbone']}, {result['threads']} threads:")
    print(f"  adapter  {result['adapter_ms_per_episode']:9.1f} ms  ({result['adapter_trainable_parameters']:,} trainable parameters)")
    print(
        f"  finetune {result['finetune_ms_per_episode']:9.1f} ms  ({result['finetune_trainable_parameters']:,} trainable parameters; "
        f"{result['finetune_data_ms_per_episode']:.1f} ms of it reading and preprocessing frames)"
    )
    print(f"  finetune / adapter: {result['finetune_over_adapter']}x")
    if args.workers:
        from tools.bench.train_workers import measure, print_result

        result["workers"] = measure(args.shards, backbone, pretrained, args.workers, config=args.config)
        print_result(result["workers"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_step.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
