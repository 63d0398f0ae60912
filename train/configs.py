"""Named training configs. Each is a function returning a `TrainConfig`; variants edit a base.

The per-dataset CLIP-FSAR configs follow the official ones (alibaba-mmai-research/CLIP-FSAR,
`configs/projects/CLIPFSAR/<dataset>/*_1shot_v1.yaml`): Adam, weight decay, a one-"epoch"
linear warm-up, the learning rate divided by 10 twice (SOLVER.STEPS x STEPS_ITER), 10 epochs of
STEPS_ITER steps, 16 episodes per step (4 GPUs x 4), 5 training queries per class, and
alpha = TRAIN.USE_CLASSIFICATION_VALUE. Those configs fine-tune the whole visual encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from train.config import TrainConfig


def clip_fsar_base() -> TrainConfig:
    """CLIP-FSAR's shared settings."""
    return TrainConfig(method="clip-fsar", prompts="clip-fsar", fusion_beta=0.9, episodes_per_step=16, query=5, heads=8, ffn_dim=2048, attn_dropout=0.2, ffn_dropout=0.05)


def _official(dataset: str, alpha: float, lr: float, warmup_start_lr: float, steps_iter: int, decay_epochs: tuple[int, int], weight_decay: float, val_every: int) -> TrainConfig:
    return dataclasses.replace(
        clip_fsar_base(),
        dataset=dataset,
        alpha=alpha,
        lr=lr,
        warmup_start_lr=warmup_start_lr,
        warmup_iterations=steps_iter,
        iterations=10 * steps_iter,
        lr_decay_at=tuple(e * steps_iter for e in decay_epochs),
        lr_decay=0.1,
        weight_decay=weight_decay,
        val_every=val_every,
    )


def ssv2_full() -> TrainConfig:
    return _official("ssv2", 3.0, 5e-5, 1e-5, 4000, (4, 6), 5e-5, 1000)


def ssv2_small() -> TrainConfig:
    return _official("ssv2-small", 3.0, 5e-5, 2e-5, 2000, (4, 6), 5e-5, 1000)


def kinetics100() -> TrainConfig:
    return _official("kinetics100", 1.5, 1e-5, 5e-6, 250, (6, 9), 5e-4, 100)


def ucf101() -> TrainConfig:
    return _official("ucf101", 1.5, 2e-6, 1e-7, 600, (4, 6), 5e-5, 100)


def hmdb51() -> TrainConfig:
    return _official("hmdb51", 1.2, 1e-5, 1e-6, 700, (4, 6), 5e-5, 300)


def synth() -> TrainConfig:
    """The built-in synthetic benchmark with a tiny backbone on a 2-core CPU.

    No text fusion by default: the default chain's text encoder has random weights, so its
    class-name embeddings carry no information (zero-shot scores chance) and fusing them
    with beta 0.9 only dilutes the few-shot scores; model selection is then on the few-shot
    accuracy. `fsar-eval RUN_DIR --fusion-beta 0.9` still scores the fused prediction.

    A few-shot temperature of 50: the random ViT's frames are nearly alike (mean cosine 0.86
    between different videos), so OTAM distances differ too little for the episodic
    cross-entropy to train at scale 1. Measured (5-way 1-shot, test, seed 0): 21.5% at 1,
    23.8% at 50, against ProtoNet's 22.4%.
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
        fewshot_scale=50.0,
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
    """`config` (a dataset's settings) with `method`'s own defaults.

    - clip-fsar: as the named configs are written.
    - ma-clip: alpha 0.5 (the weight of the video-text terms in loss and prediction) and no
      separate fusion (its prediction already mixes text and few-shot probabilities).
    - actionclip: the 16-template prompt ensemble, transformer fusion, no fusion at test, and
      20% of each training class's videos held out for the supervised protocol.
    - vita-clip (peft mode only): no fusion at test (its prediction is video-text already), and
      the same 20% holdout.
    """
    if method == "ma-clip":
        return dataclasses.replace(config, method=method, alpha=0.5, fusion_beta=None)
    if method == "actionclip":
        return dataclasses.replace(config, method=method, prompts="actionclip", fusion_beta=None, temporal_fusion="transformer", holdout=0.2)
    if method == "vita-clip":
        return dataclasses.replace(config, method=method, mode="peft", fusion_beta=None, holdout=0.2)
    return dataclasses.replace(config, method=method)


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
