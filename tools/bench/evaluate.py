"""Evaluation benchmark: batched OTAM episodes against a straightforward per-episode loop.

    python -m tools.bench.evaluate [--episodes 10000] [--loop-episodes 200] [--dim 512] [--frames 8]

Both score the same seeded 5-way 1-shot episodes on the same embeddings (random unit
vectors shaped like a cache split, or `--cache C.h5 --split test`). Two loops: one
episode and one (query, support) pair at a time, as research code often does; and one
episode at a time, vectorised within it. They run on the first `--loop-episodes`
episodes, their logits are checked against the batched ones (to 1e-5), and their times
are scaled to all episodes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fsar.train.episodes import EpisodeConfig, Episodes, sample_episodes
from fsar.train.baselines import episode_logits, eval_frames, score
from fsar.train.metrics import frame_distances, otam_distance


def loop_logits(frames: torch.Tensor, eps: Episodes, e: int) -> torch.Tensor:
    """OTAM logits of episode e, one (query, support) pair at a time: [way * query, way]."""
    W, K = eps.support.shape[1:]
    queries = eps.query[e].ravel()
    out = torch.zeros(len(queries), W)
    for qi, q in enumerate(queries):
        for w in range(W):
            total = 0.0
            for s in eps.support[e, w]:
                d = frame_distances(frames[q][None, None], frames[s][None, None])[0, 0, 0]  # [T, T]
                total += (otam_distance(d) + otam_distance(d.T)).item()
            out[qi, w] = -total / K
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--episodes", type=int, default=10000)
    ap.add_argument("--loop-episodes", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("results/bench-evaluate"))
    args = ap.parse_args(argv)
    if args.cache:
        from fsar.pipeline.embed.cache import load_split

        data = load_split(args.cache, args.split)
        frames, labels = eval_frames(data), data.labels
    else:  # shaped like a cache split: 24 classes x 24 videos
        g = torch.Generator().manual_seed(0)
        frames = torch.nn.functional.normalize(torch.randn(576, args.frames, args.dim, generator=g), dim=-1)
        labels = np.repeat(np.arange(24), 24)
    eps = sample_episodes(labels, EpisodeConfig(5, 1, 1, args.episodes, seed=0))
    t = time.perf_counter()
    correct = score("otam", frames, eps)
    batched = time.perf_counter() - t
    n = min(args.loop_episodes, args.episodes)
    sub = Episodes(eps.classes[:n], eps.support[:n], eps.query[:n])
    with torch.no_grad():
        ref = episode_logits("otam", frames, sub, None)
        t = time.perf_counter()
        loop = torch.stack([loop_logits(frames, eps, e) for e in range(n)])
        loop_time = (time.perf_counter() - t) * args.episodes / n
        t = time.perf_counter()  # one episode per call, vectorised within it
        per_episode = torch.cat([episode_logits("otam", frames, Episodes(eps.classes[e : e + 1], eps.support[e : e + 1], eps.query[e : e + 1]), None) for e in range(n)])
        episode_time = (time.perf_counter() - t) * args.episodes / n
    max_diff = max((loop - ref).abs().max().item(), (per_episode - ref).abs().max().item())
    result = {
        "episodes": args.episodes, "way": 5, "shot": 1, "query": 1, "frames": frames.shape[1], "dim": frames.shape[2],
        "threads": torch.get_num_threads(), "batched_seconds": round(batched, 3),
        "loop_seconds_scaled": round(loop_time, 1), "loop_episodes_timed": n,
        "speedup": round(loop_time / batched, 1), "max_abs_logit_difference": max_diff,
        "episode_loop_seconds_scaled": round(episode_time, 1), "speedup_vs_episode_loop": round(episode_time / batched, 1),
        "accuracy": float(correct.mean() * 100),
    }
    print(json.dumps(result, indent=1))
    assert max_diff < 1e-5, f"batched and loop logits differ by {max_diff}"
    print(
        f"\n{args.episodes} episodes: batched {batched:.2f} s; per-episode loop over (query, support) pairs {loop_time:.0f} s "
        f"({loop_time / batched:.0f}x); per-episode loop vectorised within each episode {episode_time:.1f} s "
        f"({episode_time / batched:.1f}x); times of loops scaled from {n} episodes"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-evaluate.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
