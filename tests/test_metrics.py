"""OTAM against a scalar loop of its recurrence; metric and sampler invariants; the eval protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fsar.train.episodes import EpisodeConfig, sample_episodes, sample_pair_episodes
from fsar.train.evaluate import summarise
from fsar.train.metrics import frame_distances, otam_distance, otam_logits, prototype_logits


def otam_scalar(d: list[list[float]], lam: float = 0.5) -> float:
    """The recurrence cell by cell, in plain Python floats."""
    Tq, Ts = len(d), len(d[0])
    p = [[0.0] + row + [0.0] for row in d]  # one zero column each side
    W = Ts + 2
    c = [[0.0] * W for _ in range(Tq)]
    for m in range(1, W):
        c[0][m] = p[0][m] + c[0][m - 1]

    def smin(*xs):
        return -lam * math.log(sum(math.exp(-x / lam) for x in xs))

    for l in range(1, Tq):
        c[l][1] = p[l][1] + smin(c[l - 1][0], c[l - 1][1], c[l][0])
        for m in range(2, W - 1):
            c[l][m] = p[l][m] + smin(c[l - 1][m - 1], c[l][m - 1])
        c[l][W - 1] = p[l][W - 1] + smin(c[l - 1][W - 2], c[l - 1][W - 1], c[l][W - 2])
    return c[Tq - 1][W - 1]


@pytest.mark.parametrize("tq, ts", [(8, 8), (4, 6), (1, 5), (5, 1), (2, 2)])
def test_otam_equals_the_scalar_recurrence(tq, ts):
    g = torch.Generator().manual_seed(tq * 10 + ts)
    d = torch.rand(3, 4, tq, ts, generator=g, dtype=torch.float64) * 2
    got = otam_distance(d)
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert got[i, j].item() == pytest.approx(otam_scalar(d[i, j].tolist()), abs=1e-9)


def test_identical_clips_score_closest_and_reversal_changes_otam():
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(8, 32, generator=g)
    others = torch.randn(3, 8, 32, generator=g)
    supports = torch.cat([clip[None], others, clip.flip(0)[None]])[None]  # [1, 5, 8, 32]: itself, 3 others, reversed
    logits = otam_logits(clip[None, None], supports, way=5)[0, 0]
    assert logits.argmax().item() == 0
    assert logits[4] < logits[0] - 0.1  # reversing a clip changes its OTAM distance
    proto = prototype_logits(clip[None, None], supports, way=5)[0, 0]
    assert proto[4] == pytest.approx(proto[0].item(), abs=1e-5)  # ProtoNet cannot tell the reversal


def test_frame_distances_are_one_minus_cosine():
    q, s = torch.randn(2, 3, 4, 16), torch.randn(2, 5, 4, 16)
    d = frame_distances(q, s)
    ref = 1 - torch.nn.functional.cosine_similarity(q[1, 2, 3], s[1, 4, 0], dim=0)
    assert d.shape == (2, 3, 5, 4, 4) and d[1, 2, 4, 3, 0].item() == pytest.approx(ref.item(), abs=1e-6)


def test_episodes_have_disjoint_balanced_supports_and_queries_and_are_seeded():
    labels = np.repeat(np.arange(12), 7)
    cfg = EpisodeConfig(way=5, shot=2, query=3, episodes=300, seed=4)
    eps = sample_episodes(labels, cfg)
    assert eps.support.shape == (300, 5, 2) and eps.query.shape == (300, 5, 3)
    for e in range(300):
        assert len(set(eps.classes[e])) == 5
        rows = np.concatenate([eps.support[e].ravel(), eps.query[e].ravel()])
        assert len(set(rows)) == len(rows)  # disjoint supports and queries
        for w, c in enumerate(eps.classes[e]):
            assert (labels[eps.support[e, w]] == c).all() and (labels[eps.query[e, w]] == c).all()
    again = sample_episodes(labels, cfg)
    assert np.array_equal(again.support, eps.support) and np.array_equal(again.query, eps.query)
    other = sample_episodes(labels, EpisodeConfig(5, 2, 3, 300, seed=5))
    assert not np.array_equal(other.support, eps.support)
    counts = np.bincount(eps.classes.ravel(), minlength=12)
    assert counts.min() > 0.5 * counts.mean()  # every class is drawn, roughly evenly


def test_sampler_refuses_splits_too_small():
    with pytest.raises(ValueError, match="need 5 classes with >= 3 videos"):
        sample_episodes(np.repeat(np.arange(4), 3), EpisodeConfig(5, 1, 2, 10))
    eps = sample_pair_episodes(np.repeat(np.arange(4), 3), [(0, 1), (2, 3)], EpisodeConfig(9, 1, 1, 50))
    assert eps.classes.shape == (50, 2) and all(set(c) in ({0, 1}, {2, 3}) for c in map(set, eps.classes))


def test_confidence_interval_is_1_96_std_over_sqrt_n():
    correct = np.array([[1, 0], [1, 1], [0, 0], [1, 1]], dtype=bool)  # per-episode 0.5, 1, 0, 1
    acc, ci = summarise(correct)
    per = np.array([0.5, 1, 0, 1])
    assert acc == pytest.approx(62.5) and ci == pytest.approx(1.96 * per.std() / 2 * 100)
