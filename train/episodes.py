"""N-way K-shot episodes: sampled from one split's classes, reproducible from a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeConfig:
    """Shape and seed of a set of episodes."""

    way: int = 5
    """Classes per episode."""
    shot: int = 1
    """Support videos per class."""
    query: int = 1
    """Query videos per class (the published test protocol uses 1; training 5)."""
    episodes: int = 10000
    """Number of episodes."""
    seed: int = 0
    """Seed: the same seed, split and shape give the same episodes for every method and run."""

    def __post_init__(self) -> None:
        for name in ("way", "shot", "query", "episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes as row indices into a split.

    Attributes:
        classes: [E, way] class labels of each episode, in episode order.
        support: [E, way, shot] rows, class by class.
        query: [E, way, query] rows; query i of class w has target w.
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


def sample_episodes(labels: np.ndarray, config: EpisodeConfig) -> Episodes:
    """Draw `config.episodes` episodes from a split with per-video `labels`.

    Supports and queries of an episode are distinct videos; each class in an episode
    contributes exactly `shot` supports and `query` queries.

    Raises:
        ValueError: fewer classes than `way`, or a class with fewer than shot + query videos.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    need = config.shot + config.query
    usable = classes[counts >= need]
    if len(usable) < config.way:
        raise ValueError(
            f"{config.way}-way {config.shot}-shot episodes with {config.query} queries need {config.way} classes "
            f"with >= {need} videos each; this split has {len(usable)} such classes (of {len(classes)})"
        )
    rows_of = {c: np.flatnonzero(labels == c) for c in usable}
    rng = np.random.default_rng(config.seed)
    E, W = config.episodes, config.way
    ep_classes = np.empty((E, W), dtype=np.int64)
    picks = np.empty((E, W, need), dtype=np.int64)
    for e in range(E):
        chosen = rng.choice(usable, size=W, replace=False)
        ep_classes[e] = chosen
        for w, c in enumerate(chosen):
            picks[e, w] = rng.choice(rows_of[c], size=need, replace=False)
    return Episodes(ep_classes, picks[:, :, : config.shot], picks[:, :, config.shot :])


def sample_pair_episodes(labels: np.ndarray, pairs: list[tuple[int, int]], config: EpisodeConfig) -> Episodes:
    """2-way episodes whose two classes are a time-reversal pair (the same motion played backwards).

    An order-blind method scores about 50% here; `config.way` is ignored.
    """
    if not pairs:
        raise ValueError("no time-reversal pairs among this split's classes")
    labels = np.asarray(labels)
    rows_of = {c: np.flatnonzero(labels == c) for p in pairs for c in p}
    need = config.shot + config.query
    short = [c for c, r in rows_of.items() if len(r) < need]
    if short:
        raise ValueError(f"classes {short} have fewer than {need} videos")
    rng = np.random.default_rng(config.seed)
    E = config.episodes
    ep_classes = np.empty((E, 2), dtype=np.int64)
    picks = np.empty((E, 2, need), dtype=np.int64)
    for e in range(E):
        pair = pairs[rng.integers(len(pairs))]
        order = rng.permutation(2)
        for w in range(2):
            c = pair[order[w]]
            ep_classes[e, w] = c
            picks[e, w] = rng.choice(rows_of[c], size=need, replace=False)
    return Episodes(ep_classes, picks[:, :, : config.shot], picks[:, :, config.shot :])
