"""CLIP-FSAR's dataset configs against the schedule their training loop executes (fixture: schedule).

Their loop (runs/train_net_few_shot.py) runs NUM_TRAIN_TASKS single-episode iterations per GPU,
sets the learning rate every iteration from get_epoch_lr(cur_iter // STEPS_ITER + cur_iter /
STEPS_ITER) and steps the optimiser every BATCH_SIZE_PER_TASK iterations. The fixture holds the
rate each optimiser step used, at chosen steps (warm-up, every jump, every plateau, the last
step), recorded by running that loop. Ours counts optimiser steps: outside the warm-up the rates
must be equal; inside it theirs, set at the step's last iteration, runs up to 3/4 of a step
ahead of ours, so theirs must lie between ours at that step and the next.

Weight decay: their optimiser reads OPTIMIZER.WEIGHT_DECAY (the datasets' SOLVER.WEIGHT_DECAY is
never read) and gives 0 to parameters whose names contain "bn" or "norm" (models/utils/optimizer.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from parity_io import load_fixture
from fsar.train.configs import get_config


@pytest.fixture(scope="module")
def fx():
    return load_fixture("schedule")


def _keys(fx) -> list[str]:
    return sorted(fx.meta["configs"])


DATASETS = ["ssv2", "ssv2-small", "kinetics100", "ucf101", "hmdb51"]


def test_fixture_covers_every_dataset_config_and_shot(fx):
    assert _keys(fx) == sorted(f"{d}_{s}shot" for d in DATASETS for s in (1, 5))


@pytest.mark.parametrize("dataset", DATASETS)
def test_one_and_five_shot_configs_share_one_schedule(fx, dataset):
    """The 5-shot configs train as the 1-shot ones do (every value the loop and the LR policy
    read is the same), so one named config per dataset suffices."""
    configs = fx.meta["configs"]
    assert configs[f"{dataset}_1shot"]["loop_settings"] == configs[f"{dataset}_5shot"]["loop_settings"]
    assert configs[f"{dataset}_5shot"]["shot"] == 1 and configs[f"{dataset}_5shot"]["shot_test"] == 5
    assert torch.equal(fx[f"output.lr.{dataset}_1shot"], fx[f"output.lr.{dataset}_5shot"])
    assert fx.meta["configs"][f"{dataset}_1shot"]["optimizer_steps"] == fx.meta["configs"][f"{dataset}_5shot"]["optimizer_steps"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_length_and_warmup_match_official(fx, dataset):
    official = fx.meta["configs"][f"{dataset}_1shot"]
    config = get_config(dataset)
    assert (config.iterations, config.warmup_iterations) == (official["optimizer_steps"], official["warmup_steps"])


@pytest.mark.parametrize("dataset", DATASETS)
def test_learning_rate_matches_official_at_chosen_steps(fx, dataset):
    official = fx.meta["configs"][f"{dataset}_1shot"]
    config = get_config(dataset)
    steps, rates = fx[f"output.steps.{dataset}_1shot"].tolist(), fx[f"output.lr.{dataset}_1shot"].tolist()
    wrong = []
    for step, theirs in zip(steps, rates):
        ours = config.learning_rate(step)
        if step < official["warmup_steps"]:
            ok = ours <= theirs * (1 + 1e-9) and theirs <= config.learning_rate(step + 1) * (1 + 1e-9)
        else:
            ok = math.isclose(ours, theirs, rel_tol=1e-9)
        if not ok:
            wrong.append(f"step {step}: ours {ours:.4g}, theirs {theirs:.4g}")
    assert not wrong, f"{dataset} ({official['file']}): " + "; ".join(wrong)


@pytest.mark.parametrize("dataset", DATASETS)
def test_weight_decay_is_the_one_their_optimiser_reads(fx, dataset):
    official = fx.meta["configs"][f"{dataset}_1shot"]
    assert get_config(dataset).weight_decay == pytest.approx(official["weight_decay_read"], rel=1e-12)


def _official_name(ours: str) -> str:
    """Their parameter name for one of ours (a CLIP-FSAR model: head plus visual encoder)."""
    if ours.startswith("visual."):
        return "head.backbone." + ours[len("visual.") :]
    head = {
        "head.text_scale": "head.scale",
        "head.temporal.attn.qkv.weight": "head.context2.layers.0.0.fn.to_q.weight",
    }
    if ours in head:
        return head[ours]
    for mine, theirs in (("head.temporal.norm.", "head.context2.layers.0.0.norm."), ("head.temporal.attn.out.", "head.context2.layers.0.0.fn.to_out."), ("head.temporal.ffn.", "head.context2.layers.0.1.net.")):
        if ours.startswith(mine):
            return theirs + ours[len(mine) :]
    raise KeyError(ours)


def test_weight_decay_per_parameter_matches_official(fx):
    """Our trainer's optimiser gives each parameter the decay theirs gives its counterpart
    (0 on their norm-named parameters), for CLIP-FSAR fine-tuning a CLIP ViT."""
    from open_clip.model import CLIP

    from fsar.train.heads.clip_fsar import CLIPFSAR
    from fsar.train.model import FewShotModel
    from fsar.train.trainer import make_optimizer

    decay_by_name = fx.meta["weight_decay_by_name"]
    config = get_config("ssv2")
    visual = CLIP(embed_dim=64, vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=1, head_width=32), text_cfg=dict(width=64, heads=2, layers=1), quick_gelu=True).visual
    model = FewShotModel(CLIPFSAR(64, config), visual=visual)
    optimizer = make_optimizer(model, config)
    decay = {id(p): group.get("weight_decay", optimizer.defaults["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    wrong = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        theirs = decay_by_name[_official_name(name)]
        if not math.isclose(decay[id(p)], theirs, rel_tol=1e-12, abs_tol=0.0):
            wrong.append(f"{name}: ours {decay[id(p)]}, theirs {theirs}")
    assert not wrong, "; ".join(wrong)
