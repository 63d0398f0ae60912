"""Dropout whose masks belong to episodes, not to batches.

A training step's episodes may be split among workers (`fsar.train.parallel`); for N workers
to take the step one worker takes, every random choice must depend on the episode, not on
which batch it travels in. Inside `episode_streams(seeds)` (one seed per episode of the batch,
in batch order), `EpisodeDropout` draws the mask of episode e's rows from a generator seeded
by (seeds[e], k), where k counts the dropout calls of this forward pass; outside it (or with
no episodes at hand) it is plain `nn.Dropout`.

Tensors reaching a head's dropout are episode-major: their first dimension is E blocks of
equal size, one per episode (supports or queries of each episode, class by class).
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn


class _Streams:
    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = [int(s) for s in seeds]
        self.calls = 0


_current: contextvars.ContextVar[_Streams | None] = contextvars.ContextVar("fsar_episode_streams", default=None)


@contextmanager
def episode_streams(seeds: Sequence[int]) -> Iterator[None]:
    """Draw `EpisodeDropout` masks per episode, episode e of the batch from `seeds[e]`."""
    token = _current.set(_Streams(seeds))
    try:
        yield
    finally:
        _current.reset(token)


class EpisodeDropout(nn.Dropout):
    """`nn.Dropout` (same arguments, no parameters) with per-episode masks inside `episode_streams`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = _current.get()
        if not self.training or self.p == 0 or streams is None:
            return super().forward(x)
        E = len(streams.seeds)
        if x.shape[0] % E:
            raise RuntimeError(f"dropout on a batch of {x.shape[0]} rows, not episode-major over {E} episodes")
        k, streams.calls = streams.calls, streams.calls + 1
        rows = x.shape[0] // E
        keep = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        for e, seed in enumerate(streams.seeds):
            g = torch.Generator(device=x.device)
            g.manual_seed(int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
            keep[e * rows : (e + 1) * rows] = torch.rand(x[e * rows : (e + 1) * rows].shape, generator=g, device=x.device) >= self.p
        return x * keep / (1 - self.p)
