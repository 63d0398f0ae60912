"""How much of a cache's frame embeddings is motion: cosine between frames of one video vs between videos.

    python -m tools.findings.feature_stats --cache data/synth-cache.h5 [--split test]

Few-shot heads that match frames (OTAM, CLIP-FSAR) need frames of one video to differ;
when frames of a video are near-identical in embedding space, what a clip shows over
time is invisible to every head trained on that cache.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F


def video_cosines(frames: torch.Tensor) -> torch.Tensor:
    """Cosine [N, N] between the frame-averaged embeddings of videos `frames` [N, T, D]."""
    m = F.normalize(frames.float().mean(dim=1), dim=-1)  # (N, D)
    return m @ m.T


def frame_cosines(frames: torch.Tensor, labels: np.ndarray | None = None) -> dict[str, float]:
    """Mean cosine between frames of the same video, between frames of different videos, and the
    spread (std over a video's frames) relative to the embedding norm. `frames`: [N, T, D].
    With `labels` [N], also the mean cosine between frame-averaged videos of one class and of
    different classes (how far apart the classes are to begin with)."""
    v = F.normalize(frames.float(), dim=-1)  # (N, T, D)
    N, T, _ = v.shape
    within = torch.einsum("ntd,nsd->nts", v, v)
    off = ~torch.eye(T, dtype=torch.bool)
    means = v.mean(dim=1)  # (N, D) sum of unit frames / T
    between = (means @ means.T - torch.diag(torch.diag(means @ means.T))).sum() / (N * (N - 1))
    rel = (frames.float().std(dim=1).norm(dim=-1) / frames.float().mean(dim=1).norm(dim=-1)).mean()
    out = {"within_video": float(within[:, off].mean()), "between_videos": float(between), "temporal_spread": float(rel)}
    if labels is not None:
        cos = video_cosines(frames)
        lab = torch.as_tensor(labels)
        same = (lab[:, None] == lab[None]) & ~torch.eye(N, dtype=torch.bool)
        out["same_class_videos"] = float(cos[same].mean())
        out["different_class_videos"] = float(cos[lab[:, None] != lab[None]].mean())
    return out


def main(argv: list[str] | None = None) -> dict:
    from fsar.train.data import CacheSource

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    src = CacheSource(args.cache, args.split, 8, "clip-fsar")
    stats = frame_cosines(src.batch(np.arange(len(src))), src.info.labels)
    print(
        f"{args.cache} [{args.split}], {len(src)} videos: mean cosine between frames of one video {stats['within_video']:.4f}, "
        f"between videos {stats['between_videos']:.4f}; frame-to-frame spread {100 * stats['temporal_spread']:.2f}% of the embedding norm; "
        f"between frame-averaged videos of one class {stats['same_class_videos']:.4f}, of different classes {stats['different_class_videos']:.4f}"
    )
    return stats


if __name__ == "__main__":
    main()
