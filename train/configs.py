"""Named training configs. Each is a function returning a `TrainConfig`; variants edit a base.

The per-dataset CLIP-FSAR configs give the schedule the official code executes, in our
optimiser steps (alibaba-mmai-research/CLIP-FSAR @30cf0a8, `configs/projects/CLIPFSAR/<dataset>/
CLIPFSAR_*_{1,5}shot_v1.yaml`, whose 1-shot and 5-shot files share every value below):

- One optimiser step is 16 episodes: the loop runs one episode per GPU per iteration on 4 GPUs
  (`NUM_GPUS: 4`), divides each loss by `TRAIN.BATCH_SIZE: 4` and steps every
  `BATCH_SIZE_PER_TASK: 4` iterations (`runs/train_net_few_shot.py:150`). Training ends after
  `NUM_TRAIN_TASKS` iterations (line 63), i.e. NUM_TRAIN_TASKS / 4 steps.
- The loop hands the LR policy the epoch `floor(i / S) + i / S` at iteration i, S = `STEPS_ITER`
  (lines 59, 66 and 95), which runs twice as fast as intended: the 1-epoch warm-up ends at iteration S
  (S / 4 steps), and a decay at epoch a of `SOLVER.STEPS` happens at iteration ceil(a / 2) * S
  (`models/utils/lr_policy.py`, `steps_with_relative_lrs`). The LR is set every iteration and
  used by the step at iteration 4 s + 3, so a boundary at iteration B is our step
  ceil((B - 3) / 4); in the warm-up the official LR runs up to 3/4 of a step ahead of ours.
- Adam with weight decay 1e-3 (`OPTIMIZER.WEIGHT_DECAY`, `configs/pool/run/training/
  finetune.yaml:51`, read by `models/utils/optimizer.py`), 0 for parameters named with
  "norm" or "bn" (`BN.WEIGHT_DECAY`, finetune.yaml:58); the datasets' own SOLVER.WEIGHT_DECAY is
  never read.
- Validation every `VAL_FRE_ITER` iterations (line 68), i.e. VAL_FRE_ITER / 4 steps.
- The 5-shot configs train on 1-shot episodes (`SHOT: 1`, `SHOT_TEST: 5`) and merge supports
  before the temporal transformer (`MERGE_BEFORE: true`); no config turns on test-time fusion
  (`TRAIN.COMBINE`), so the official test is OTAM alone.
- alpha = TRAIN.USE_CLASSIFICATION_VALUE. Those configs fine-tune the whole visual encoder.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from fsar.train.config import TrainConfig

EPISODES_PER_STEP = 16  # NUM_GPUS 4 x BATCH_SIZE_PER_TASK 4
ITERATIONS_PER_STEP = 4  # BATCH_SIZE_PER_TASK
WEIGHT_DECAY = 1e-3  # configs/pool/run/training/finetune.yaml:51 (OPTIMIZER.WEIGHT_DECAY)


def clip_fsar_base() -> TrainConfig:
    """CLIP-FSAR's shared settings: 16 episodes per step, 5 training queries per class, an
    8-head temporal transformer, merge-before prototypes, OTAM alone at test."""
    return TrainConfig(
        method="clip-fsar", prompts="clip-fsar", fusion_beta=None, episodes_per_step=EPISODES_PER_STEP, query=5,
        heads=8, ffn_dim=2048, attn_dropout=0.2, ffn_dropout=0.05, prototype_merge="before",
    )


def _step_of_iteration(iteration: int) -> int:
    """The first optimiser step whose LR is set at or after official `iteration` (steps at 4 s + 3)."""
    return max(0, math.ceil((iteration - (ITERATIONS_PER_STEP - 1)) / ITERATIONS_PER_STEP))


def _official(dataset: str, alpha: float, base_lr: float, warmup_start_lr: float, steps_iter: int, decay_epochs: tuple[int, int], train_tasks: int, val_fre_iter: int, view: str = "clip-fsar", query_augment: bool = False) -> TrainConfig:
    """A dataset's config from its yaml's values (see the module docstring for the mapping)."""
    S = steps_iter
    decay_iterations = tuple(math.ceil(a / 2) * S for a in decay_epochs)  # epoch floor(i/S) + i/S reaches a
    return dataclasses.replace(
        clip_fsar_base(),
        dataset=dataset,
        alpha=alpha,
        lr=base_lr,
        warmup_start_lr=warmup_start_lr,
        warmup_iterations=_step_of_iteration(S),
        iterations=train_tasks // ITERATIONS_PER_STEP,
        lr_decay_at=tuple(_step_of_iteration(b) for b in decay_iterations),
        lr_decay=0.1,
        weight_decay=WEIGHT_DECAY,
        val_every=val_fre_iter // ITERATIONS_PER_STEP,
        image_view=view,
        train_augment="crop+query" if query_augment else "crop",
    )


# Values from configs/projects/CLIPFSAR/<dataset>/CLIPFSAR_*_1shot_v1.yaml (the 5-shot files repeat
# them): USE_CLASSIFICATION_VALUE, SOLVER.BASE_LR, SOLVER.WARMUP_START_LR, SOLVER.STEPS_ITER,
# SOLVER.STEPS[1:], TRAIN.NUM_TRAIN_TASKS, TRAIN.VAL_FRE_ITER.
def ssv2_full() -> TrainConfig:
    """ssv2_full/CLIPFSAR_SSv2_Full_1shot_v1.yaml: lines 6, 58, 67, 60, 61, 14, 16."""
    return _official("ssv2", 3.0, 5e-5, 1e-5, 4000, (4, 6), 30000, 1000)


def ssv2_small() -> TrainConfig:
    """ssv2_small/CLIPFSAR_SSv2_Small_1shot_v1.yaml: lines 6, 59, 68, 61, 62, 14, 16."""
    return _official("ssv2-small", 3.0, 5e-5, 2e-5, 2000, (4, 6), 30000, 1000)


def kinetics100() -> TrainConfig:
    """kinetics100/CLIPFSAR_K100_1shot_v1.yaml: lines 7, 61, 70, 63, 64, 16, 18; training queries get
    the official flip and colour jitter (`AUGMENTATION.SUPPORT_QUERY_DIFF`, line 29). The official
    query pipeline also builds RandomErasing, which its config leaves off
    (`AUGMENTATION.RANDOM_ERASING.ENABLE: false`, configs/pool/base.yaml:161), so it never erases."""
    return _official("kinetics100", 1.5, 1e-5, 5e-6, 250, (6, 9), 5000, 100, query_augment=True)


def ucf101() -> TrainConfig:
    """ucf101/CLIPFSAR_UCF101_1shot_v1.yaml: lines 6, 61, 70, 63, 64, 15, 17."""
    return _official("ucf101", 1.5, 2e-6, 1e-7, 600, (4, 6), 3000, 100)


def hmdb51() -> TrainConfig:
    """hmdb51/CLIPFSAR_HMDB51_1shot_v1.yaml: lines 6, 61, 70, 63, 64, 15, 17."""
    return _official("hmdb51", 1.2, 1e-5, 1e-6, 700, (4, 6), 5000, 300)


def synth() -> TrainConfig:
    """The built-in synthetic benchmark with a tiny backbone on a 2-core CPU.

    The method's settings are the paper's: OTAM alone at test (no text fusion, as every official
    config; `fsar-eval RUN_DIR --fusion-beta 0.9` scores the fused prediction), the video-text
    loss on the backbone's features, few-shot logits at scale 1. The schedule is ours, for the
    CPU: 600 steps of 16 episodes at lr 1e-3, a 512-wide feed-forward block.

    A chain with a random backbone (`--pretrained none`) trains better with `--set
    fewshot_scale=50`: the random ViT's frames are nearly alike (mean cosine 0.86 between
    videos), so OTAM distances differ too little for the cross-entropy at scale 1 (5-way 1-shot,
    seed 0: 23.8% at 50, 21.5% at 1, ProtoNet 22.4%). On the pretrained chain 50 costs CLIP-FSAR
    5.6 points and MA-CLIP 7.1 (docs/findings.md), so the default is the paper's 1.
    """
    return dataclasses.replace(
        clip_fsar_base(),
        dataset="synth",
        fusion_beta=None,
        alpha=1.0,
        lr=1e-3,
        warmup_start_lr=1e-4,
        warmup_iterations=50,
        iterations=600,
        lr_decay_at=(400, 500),
        weight_decay=5e-5,
        ffn_dim=512,
        val_every=50,
        val_episodes=1000,
    )


def synth_peft() -> TrainConfig:
    """The synthetic benchmark in peft mode on a 2-core CPU: every step runs the frozen ViT
    forward and backward on every frame, so batches are small (2 episodes, 2 queries per
    class) and the run short (150 steps)."""
    return dataclasses.replace(synth(), episodes_per_step=2, query=2, iterations=150, warmup_iterations=10, lr_decay_at=(100, 130), val_every=50)


def tiny() -> TrainConfig:
    """A few steps, for tests and smoke runs."""
    return dataclasses.replace(synth(), iterations=4, episodes_per_step=2, query=2, ffn_dim=64, val_every=2, val_episodes=20, log_every=1, warmup_iterations=0)


def for_method(config: TrainConfig, method: str) -> TrainConfig:
    """`config` (a dataset's settings) with `method`'s own defaults (`MethodSpec.defaults` on its
    head: e.g. ma-clip's alpha 0.5, actionclip's prompt ensemble and 6-block fusion, vita-clip's
    peft mode)."""
    from fsar.train.heads import method_spec

    return dataclasses.replace(config, method=method, **method_spec(method).defaults)


def paper_settings() -> dict[str, dict[str, object]]:
    """{method: {setting: its official code's value}} for every registered method (`MethodSpec.paper`):
    a run's report marks every setting that departs from these as ours. ("mode" is how the backbone trains.)"""
    from fsar.train.heads import HEADS

    return {name: dict(head.spec.paper) for name, head in HEADS.items()}


def departures(config: TrainConfig) -> dict[str, tuple[object, object]]:
    """{setting: (this run's value, the paper's)} for every setting of `PAPER_SETTINGS` where
    `config` departs from its method's official code, plus the dataset schedule where the run
    is on one of the paper's benchmarks and its schedule is not the official one."""
    from fsar.train.heads import method_spec

    spec = method_spec(config.method)
    out = {}
    for key, paper in spec.paper.items():
        if key == "text_trains" and config.mode != "finetune":
            continue
        value = getattr(config, key)
        if key == "text_loss_features" and value == "auto":  # what auto means in this mode
            value = "backbone" if config.mode == "finetune" else "adapted"
        if value != paper:
            out[key] = (value, paper)
    if spec.official_schedules and config.dataset in CONFIGS and config.dataset in OFFICIAL_DATASETS:
        official = CONFIGS[config.dataset]()
        for key in ("lr", "warmup_start_lr", "warmup_iterations", "iterations", "lr_decay_at", "weight_decay", "alpha", "image_view", "train_augment"):
            if getattr(config, key) != getattr(official, key):
                out[key] = (getattr(config, key), getattr(official, key))
    return out


OFFICIAL_DATASETS = ("ssv2", "ssv2-small", "kinetics100", "ucf101", "hmdb51")

CONFIGS: dict[str, Callable[[], TrainConfig]] = {
    "synth": synth,
    "synth-peft": synth_peft,
    "ssv2": ssv2_full,
    "ssv2-small": ssv2_small,
    "kinetics100": kinetics100,
    "ucf101": ucf101,
    "hmdb51": hmdb51,
    "tiny": tiny,
}


def get_config(name: str, method: str | None = None) -> TrainConfig:
    """The named config, with `method`'s defaults when given; unknown names list the known ones."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
    config = CONFIGS[name]()
    return config if method is None else for_method(config, method)
