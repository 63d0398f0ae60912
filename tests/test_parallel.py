"""What lets N workers take the step one worker takes, checked in one process: an episode's
random draws depend on the episode alone, and shares of a step's loss add up to the step's.
The runs on Ray Train workers are in test_workers.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fsar.train import parallel
from fsar.train.configs import get_config
from fsar.train.episodes import EpisodeConfig, sample_episodes
from fsar.train.heads import HEADS, method_spec
from fsar.train.heads.dropout import EpisodeDropout, episode_streams
from fsar.train.heads.ma_clip import CrossAttentionBlock
from fsar.train.model import build_model
from fsar.train.trainer import TrainStep, step_seed


def test_shares_of_episodes_and_chunks_cover_everything_once():
    for n, world in ((16, 2), (7, 3), (3, 3)):
        shares = [parallel.block(n, parallel.Group(r, world)) for r in range(world)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        chunks = [c for r in range(world) for c in parallel.my_chunks(n * 100 + 3, 64, parallel.Group(r, world))]
        assert sorted(chunks) == [(s, min(s + 64, n * 100 + 3)) for s in range(0, n * 100 + 3, 64)]


def test_an_episodes_dropout_mask_does_not_depend_on_its_batch():
    drop = EpisodeDropout(0.5).train()
    x = torch.ones(3 * 4, 5)  # 3 episodes of 4 rows
    seeds = [11, 22, 33]
    with episode_streams(seeds):
        together = drop(x)
        second_call = drop(x)
    with episode_streams(seeds[1:2]):
        alone = drop(x[4:8])
    assert torch.equal(together[4:8], alone)
    assert not torch.equal(together[:4], together[4:8])  # episodes differ
    assert not torch.equal(together, second_call)  # and so do a forward pass's calls
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(RuntimeError, match="episode-major"):
        with episode_streams(seeds):
            drop.train()(torch.ones(4, 5))


def test_ma_clip_attention_written_out_is_multihead_attention():
    torch.manual_seed(0)
    block = CrossAttentionBlock(64, 8, 128, 0.2).eval()
    ref = nn.MultiheadAttention(64, 8, dropout=0.2, batch_first=True).eval()
    ref.load_state_dict(block.attn.state_dict())
    x, c = torch.randn(6, 9, 64), torch.randn(6, 10, 64)
    torch.testing.assert_close(block.attend(x, c), ref(x, c, c, need_weights=False)[0], rtol=1e-5, atol=1e-6)


EVERY_METHOD_AND_MODE = [(name, mode) for name in HEADS for mode in method_spec(name).modes]


@pytest.mark.parametrize("method, mode", EVERY_METHOD_AND_MODE)
def test_worker_shares_of_a_step_give_its_gradient(tiny_chain, method, mode):
    """Two halves of a step's episodes, each scaled as a worker scales its loss, sum (DDP averages
    them) to the gradient of the whole step: the same dropout masks, frame jitter and loss."""
    data = {"cache": str(tiny_chain["cache"])} if mode == "adapter" else {"shards": str(tiny_chain["shards"]), "backbone": "fsar-micro-vit", "pretrained": "none"}
    config = dataclasses.replace(get_config("tiny", method), mode=mode, **data, way=3, shot=1, query=1, episodes_per_step=4, threads=1)
    model, data = build_model(config)
    if model.head.spec.batch_loss:  # its loss is over the step's videos together: the workers gather them (test_workers.py)
        return
    model.train()
    source = data.split("train")
    step = TrainStep(model, config, source, data.text["train"], torch.device("cpu"))
    eps = sample_episodes(source.info.labels, EpisodeConfig(3, 1, 1, 4, step_seed(config.seed, 5)))

    def grads(local, share):
        model.zero_grad()
        loss, _ = step(eps, np.asarray(local), 5, share)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole = grads([0, 1, 2, 3], 1.0)
    halves = [grads([0, 1], 1.0), grads([2, 3], 1.0)]  # each worker: 2 of 4 episodes x 2 workers / 4
    assert len(whole) == len(halves[0]) > 0
    assert any((a - w).norm() > 1e-3 * w.norm() for w, a in zip(whole, halves[0]))  # a share is not the whole step
    for w, a, b in zip(whole, *halves):  # up to the order of float sums
        assert ((a + b) / 2 - w).norm() <= 1e-5 * w.norm() + 1e-9
    if (method, mode) == ("clip-fsar", "adapter"):  # dropout is on: another step's masks give another gradient
        model.zero_grad()
        step(eps, np.arange(4), 6, 1.0)[0].backward()
        assert not all(torch.allclose(w, p.grad) for w, p in zip(whole, (p for p in model.parameters() if p.grad is not None)))
