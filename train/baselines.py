"""Frozen-backbone baselines, straight from the embedding cache: `protonet` (cosine to mean
prototypes of frame-averaged embeddings), `otam` (ordered temporal alignment) and `zero-shot`
(video-text cosine against the episode's class names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fsar.pipeline.embed.cache import CachedSplit, load_split
from fsar.pipeline.sampling import train_candidates
from fsar.train.episodes import EpisodeConfig, Episodes, sample_episodes
from fsar.train.evaluate import classification_result, protocol_result, score_with
from fsar.train.metrics import otam_logits, prototype_logits, text_logits
from fsar.train.results import BASELINES as METHODS


def eval_frames(data: CachedSplit) -> torch.Tensor:
    """[N, T, D] float32 frames for evaluation: a training split's extra stored frames are thinned
    to the middle candidate of each of the T segments (as val/test store them)."""
    manifest = json.loads(data.attrs["shard_manifest"])
    T = manifest["sampling"]["frames"]
    x = torch.from_numpy(data.frames.astype(np.float32))
    if x.shape[1] != T:
        x = x[:, [c[len(c) // 2] for c in train_candidates(x.shape[1], T)]]
    return x


def episode_logits(method: str, frames: torch.Tensor, eps: Episodes, text: torch.Tensor | None, lam: float = 0.5) -> torch.Tensor:
    """Logits [E, way * query, way] of a method on a batch of episodes (all in one pass)."""
    E, W, K = eps.support.shape
    Q = eps.query.shape[2]
    sup = frames[torch.from_numpy(eps.support.reshape(E, W * K))]  # [E, W*K, T, D]
    qry = frames[torch.from_numpy(eps.query.reshape(E, W * Q))]  # [E, W*Q, T, D]
    if method == "otam":
        return otam_logits(qry, sup, W, lam)
    if method == "protonet":
        return prototype_logits(qry, sup, W)
    if method == "zero-shot":
        if text is None:
            raise ValueError("zero-shot needs class-name embeddings")
        return text_logits(qry, text[torch.from_numpy(eps.classes)])
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def score(method, frames, eps: Episodes, text=None, chunk: int = 2000) -> np.ndarray:
    """Correctness [E, way * query] of a frozen-backbone baseline on every query."""
    return score_with(lambda part: episode_logits(method, frames, part, text), eps, chunk)


def evaluate_frozen(cache: str | Path, method: str, split: str = "test", config: EpisodeConfig = EpisodeConfig(), prompts: str = "clip-fsar") -> tuple[dict, np.ndarray]:
    """Score a frozen-backbone baseline on seeded episodes of a cached split.

    Returns:
        (result, correctness [E, way * query]); the result holds accuracy, ci95, the
        protocol, per-class accuracy and, on the synthetic benchmark, accuracy on
        time-reversal-pair classes, on the other classes, and on 2-way reversal-pair episodes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    data = load_split(cache, split, verbose=False)
    frames = eval_frames(data)
    text = None
    if method == "zero-shot":
        if prompts not in data.text:
            raise ValueError(f"{cache} has no {prompts!r} text embeddings; it has: {', '.join(data.text)}")
        text = torch.from_numpy(data.text[prompts])
    eps = sample_episodes(data.labels, config)
    result, correct = protocol_result(lambda part: episode_logits(method, frames, part, text), eps, config, data.labels, data.class_names, json.loads(data.attrs["shard_manifest"]).get("dataset"))
    result = {
        "method": method,
        "split": split,
        **result,
        "cache": str(cache),
        "backbone": str(data.attrs.get("backbone")),
        "random_init_backbone": bool(data.attrs.get("random_init", False)),
    }
    if method == "zero-shot":
        result["prompts"] = prompts
    return result, correct


def evaluate_frozen_classification(cache: str | Path, split: str = "test", prompts: str = "clip-fsar") -> tuple[dict, np.ndarray]:
    """Frozen-backbone zero-shot classification of every video of `split` among all its classes."""
    data = load_split(cache, split, verbose=False)
    if prompts not in data.text:
        raise ValueError(f"{cache} has no {prompts!r} text embeddings; it has: {', '.join(data.text)}")
    frames = eval_frames(data)
    scores = torch.nn.functional.normalize(frames.mean(dim=1), dim=-1) @ torch.nn.functional.normalize(torch.from_numpy(data.text[prompts]).float(), dim=-1).T
    result, correct = classification_result(scores, data.labels, data.class_names, "zero-shot", json.loads(data.attrs["shard_manifest"]).get("dataset"))
    return {
        "method": "zero-shot",
        "split": split,
        **result,
        "prompts": prompts,
        "cache": str(cache),
        "backbone": str(data.attrs.get("backbone")),
        "random_init_backbone": bool(data.attrs.get("random_init", False)),
    }, correct
