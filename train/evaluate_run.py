"""Evaluate a training run's checkpoint on seeded episodes, with the same protocol as the baselines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fsar.train.checkpoint import load_checkpoint
from fsar.train.config import TrainConfig
from fsar.train.episodes import EpisodeConfig, sample_episodes
from fsar.train.evaluate import SCORE_CHUNK, classification_result, protocol_result
from fsar.train.model import build_model, resolve_device
from fsar.train import parallel
from fsar.train.trainer import ENCODE_CHUNK, encode_split, head_logits_fn

KEEP = object()  # fusion_beta default: the run's own setting


PROTOCOLS = ("few-shot", "zero-shot", "supervised")


class Counting:
    """A split's source that reports each batch it gives: ("videos", done, total), `total` the
    videos this worker encodes (all of them in one process)."""

    def __init__(self, source, on_progress: Callable[[str, int, int], None], total: int | None = None) -> None:
        self.source, self.on_progress, self.info, self.done = source, on_progress, source.info, 0
        self.total = len(source) if total is None else total
        on_progress("videos", 0, self.total)

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        x = self.source.batch(rows, rng)
        self.done += int(np.size(rows))
        self.on_progress("videos", self.done, self.total)
        return x


def episodes_total(config: EpisodeConfig, class_names: list[str], dataset: str | None) -> int:
    """The episodes `protocol_result` scores: the test episodes, and on the synthetic benchmark
    up to 2,000 two-way episodes of time-reversed class pairs."""
    from fsar.train.evaluate import reversal_pairs

    pairs = reversal_pairs(class_names) if dataset == "synth" else []
    return config.episodes + (min(config.episodes, 2000) if pairs else 0)


def counting_episodes(logits_fn, on_progress: Callable[[str, int, int], None], total: int):
    """`logits_fn` reporting the episodes it has scored: ("episodes", done, total)."""
    done = 0
    on_progress("episodes", 0, total)

    def fn(eps):
        nonlocal done
        out = logits_fn(eps)
        done += len(eps.classes)
        on_progress("episodes", done, max(done, total))
        return out

    return fn


def zero_shot_text(model, source, cfg: TrainConfig, text: torch.Tensor) -> torch.Tensor:
    """The class texts the video-text protocols score against: a method with `template_zero_shot`
    (ActionCLIP's official zero-shot) scores every template apart ([K, C, D]: the cache's per-template embeddings, or its trained
    text tower's); the other methods the prompt ensemble `text` [C, D]."""
    from fsar.train.heads import method_spec

    if not method_spec(cfg.method).template_zero_shot:
        return text
    if hasattr(model.text, "templates"):  # finetune: the trained text tower
        with torch.no_grad():
            return model.text.templates(source.info.class_names).float().to(text.device)
    templates = getattr(getattr(source, "source", source), "text_templates", None)
    return text if templates is None else templates.to(text.device)


def checked_run(run_dir: Path, checkpoint: str, protocol: str, fusion_beta, cache, shards) -> tuple[TrainConfig, float | None]:
    """What `evaluate_run` checks before it loads anything: the run's config (with its data where
    it is now) and the fusion weight to use.

    Raises:
        FileNotFoundError: not a run, no such checkpoint, or its data is not where it was.
        ValueError: an unknown protocol, a fusion weight outside [0, 1], or other data than the run's.
    """
    from fsar.train import rundata

    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.json); for a frozen backbone pass --method protonet|otam|zero-shot and --cache")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    cfg = TrainConfig.from_json(cfg_path.read_text())
    if not (run_dir / "checkpoints" / f"{checkpoint}.json").exists():
        raise FileNotFoundError(f"{run_dir} has no {checkpoint!r} checkpoint yet (checkpoints/{checkpoint}.json): a run writes its first at its first validation ({cfg.val_every} steps)")
    beta = cfg.fusion_beta if fusion_beta is KEEP else fusion_beta
    if beta is not None and not 0 <= beta <= 1:
        raise ValueError(f"fusion beta must be in [0, 1], got {beta}")
    kind = rundata.data_kind(cfg)
    given = {"cache": cache, "shards": shards}
    other = "shards" if kind == "cache" else "cache"
    if given[other] is not None:
        raise ValueError(f"{run_dir} trained in {cfg.mode} mode on {'an embedding cache' if kind == 'cache' else 'shards'}: pass --{kind}, not --{other}")
    return dataclasses.replace(cfg, **{kind: rundata.locate(run_dir, cfg, given[kind])}), beta


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    config: EpisodeConfig = EpisodeConfig(),
    fusion_beta=KEEP,
    checkpoint: str = "best",
    device: str | None = None,
    protocol: str = "few-shot",
    cache: str | Path | None = None,
    shards: str | Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict, "object"]:
    """Score a run's checkpoint (`best` on val, `last`, or `best-on-test` of a run with
    `track_test`) on `split`.

    few-shot: `config.episodes` seeded episodes. Every video of the split is encoded once (the
    head's support and query encodings depend on one video each), then all episodes are
    scored from those encodings. zero-shot: every video of `split` classified among all of
    its classes by video-text scores. supervised: the same on the training classes, over the
    training videos the run held out (`holdout` > 0); `split` is ignored.

    Args:
        fusion_beta: text/few-shot fusion weight; KEEP uses the run's, None disables fusion.
        cache, shards: the run's cache (adapter mode) or shard folder (finetune, peft) where it
            is now, instead of the path the run recorded; checked to be the data it trained on.
        on_progress: called with (phase, done, total): ("videos", ...) while encoding,
            ("episodes", ...) while scoring.

    Returns:
        (result, correctness [E, way * query]).

    Raises:
        FileNotFoundError: not a run, or its data is not where it was (pass `data`).
        ValueError: `data` is other data than the run trained on.
    """
    from fsar.train import rundata

    run_dir = Path(run_dir).resolve()
    cfg, beta = checked_run(run_dir, checkpoint, protocol, fusion_beta, cache, shards)
    model, data = build_model(cfg, run_dir, for_eval=True)
    info = load_checkpoint(run_dir / "checkpoints", checkpoint, model)
    dev = resolve_device(device or cfg.device)
    model.to(dev).eval()
    if protocol == "supervised":
        split = "train-holdout"
    source = data.split(split)
    with torch.no_grad():
        text = model.class_text(source.info.class_names, data.text[split])
    group = parallel.current()
    share = lambda n, chunk: sum(e - s for s, e in parallel.my_chunks(n, chunk, group))  # noqa: E731  what this worker computes of n
    counted = Counting(source, on_progress, share(len(source), ENCODE_CHUNK)) if on_progress else source
    enc = encode_split(model, counted, text, dev, head=protocol == "few-shot")
    if protocol == "few-shot":
        eps = sample_episodes(source.info.labels, config)
        logits_fn = head_logits_fn(model, enc, beta)
        if on_progress:
            total = episodes_total(config, source.info.class_names, source.dataset)
            logits_fn = counting_episodes(logits_fn, on_progress, share(config.episodes, SCORE_CHUNK) + share(total - config.episodes, SCORE_CHUNK))
        result, correct = protocol_result(logits_fn, eps, config, source.info.labels, source.info.class_names, source.dataset)
    else:
        with torch.no_grad():
            scores = model.head.video_text_scores(enc.raw, zero_shot_text(model, source, cfg, enc.text))
        result, correct = classification_result(scores, source.info.labels, source.info.class_names, protocol, source.dataset)
        beta = None
    random_init = source.random_init if cfg.mode == "adapter" else cfg.pretrained == "none"
    shard_source = getattr(source, "source", source)  # the whole split behind held-out videos
    manifest = json.loads(source.attrs["shard_manifest"]) if cfg.mode == "adapter" else shard_source.manifest
    result = {
        "method": cfg.method,
        "mode": cfg.mode,
        "split": split,
        "dataset": manifest.get("dataset"),
        "dataset_root": manifest.get("root"),
        "fusion_beta": beta,
        **result,
        "run_dir": str(run_dir),
        rundata.data_kind(cfg): getattr(cfg, rundata.data_kind(cfg)),
        "checkpoint": checkpoint,
        "checkpoint_step": info["step"],
        "val_at_checkpoint": info.get("val"),
        "parameters": info.get("parameters"),
        "train_seconds": info.get("train_seconds"),
        "backbone": str(source.attrs.get("backbone")) if cfg.mode == "adapter" else cfg.backbone,
        "random_init_backbone": bool(random_init),
    }
    return result, correct
