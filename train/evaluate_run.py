"""Evaluate a training run's checkpoint on seeded episodes, with the same protocol as the baselines."""

from __future__ import annotations

from pathlib import Path

import torch

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.episodes import EpisodeConfig, sample_episodes
from train.evaluate import classification_result, protocol_result
from train.model import build_model, resolve_device
from train.trainer import encode_split, head_logits_fn

KEEP = object()  # fusion_beta default: the run's own setting


PROTOCOLS = ("few-shot", "zero-shot", "supervised")


def evaluate_run(run_dir: str | Path, split: str = "test", config: EpisodeConfig = EpisodeConfig(), fusion_beta=KEEP, checkpoint: str = "best", device: str | None = None, protocol: str = "few-shot") -> tuple[dict, "object"]:
    """Score a run's checkpoint (`best` on val, or `last`) on `split`.

    few-shot: `config.episodes` seeded episodes. Every video of the split is encoded once (the
    head's support and query encodings depend on one video each), then all episodes are
    scored from those encodings. zero-shot: every video of `split` classified among all of
    its classes by video-text scores. supervised: the same on the training classes, over the
    training videos the run held out (`holdout` > 0); `split` is ignored.

    Args:
        fusion_beta: text/few-shot fusion weight; KEEP uses the run's, None disables fusion.

    Returns:
        (result, correctness [E, way * query]).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.json); for a frozen backbone pass --method protonet|otam|zero-shot and --cache")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    cfg = TrainConfig.from_json(cfg_path.read_text())
    beta = cfg.fusion_beta if fusion_beta is KEEP else fusion_beta
    if beta is not None and not 0 <= beta <= 1:
        raise ValueError(f"fusion beta must be in [0, 1], got {beta}")
    model, data = build_model(cfg, run_dir, for_eval=True)
    info = load_checkpoint(run_dir / "checkpoints", checkpoint, model)
    dev = resolve_device(device or cfg.device)
    model.to(dev).eval()
    if protocol == "supervised":
        split = "train-holdout"
    source = data.split(split)
    with torch.no_grad():
        text = model.class_text(source.info.class_names, data.text[split])
    enc = encode_split(model, source, text, dev, head=protocol == "few-shot")
    if protocol == "few-shot":
        eps = sample_episodes(source.info.labels, config)
        result, correct = protocol_result(head_logits_fn(model, enc, beta), eps, config, source.info.labels, source.info.class_names, source.dataset)
    else:
        with torch.no_grad():
            scores = model.head.video_text_scores(enc.raw, enc.text)
        result, correct = classification_result(scores, source.info.labels, source.info.class_names, protocol)
        beta = None
    random_init = source.random_init if cfg.mode == "adapter" else cfg.pretrained == "none"
    result = {
        "method": cfg.method,
        "mode": cfg.mode,
        "split": split,
        "fusion_beta": beta,
        **result,
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "checkpoint_step": info["step"],
        "val_at_checkpoint": info.get("val"),
        "parameters": info.get("parameters"),
        "train_seconds": info.get("train_seconds"),
        "backbone": str(source.attrs.get("backbone")) if cfg.mode == "adapter" else cfg.backbone,
        "random_init_backbone": bool(random_init),
    }
    return result, correct
