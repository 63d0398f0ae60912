"""Episodic training: one loop for adapter mode (cached embeddings), and finetune and peft modes (shards).

Every source of randomness in a step (episodes, frame jitter, dropout) is seeded by
(config.seed, step), so a run resumed from a checkpoint replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.atomic import write_text_atomic
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.episodes import EpisodeConfig, Episodes, sample_episodes
from train.heads import EpisodeBatch
from train.model import FewShotModel, build_model, resolve_device
from train.runlog import RunLog


def step_seed(seed: int, step: int) -> int:
    """A per-step seed, distinct for every (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def episode_batch(model: FewShotModel, source, text: torch.Tensor, eps: Episodes, rng: np.random.Generator | None, device) -> EpisodeBatch:
    """Embed the videos of a batch of episodes; supports and queries ordered class by class."""
    E, W, K = eps.support.shape
    Q = eps.query.shape[2]
    rows = np.concatenate([eps.support.reshape(E, W * K), eps.query.reshape(E, W * Q)], axis=1)  # (E, W*K + W*Q)
    queries = np.arange(rows.shape[1]) >= W * K  # (W*K + W*Q,): which columns are queries (their augmentation may differ)
    x = source.batch(rows, rng, queries).to(device)
    labels = torch.from_numpy(source.info.labels[rows]).to(device)
    text = text.to(device)
    support_text = text[labels[:, : W * K]]  # (E, W*K, D)
    return EpisodeBatch(
        support=model.embed(x[:, : W * K], support_text),  # (E, W*K, T, D); peft MA-CLIP: text-conditioned
        query=model.embed(x[:, W * K :]),
        support_text=support_text,
        class_text=text[torch.from_numpy(eps.classes).to(device)],
        support_labels=labels[:, : W * K],
        query_labels=labels[:, W * K :],
        way=W,
    )


@dataclass
class EncodedSplit:
    """Every video of a split encoded once: raw frame embeddings and the head's support and query encodings."""

    raw: torch.Tensor  # (N, T, D)
    support: torch.Tensor  # (N, T, D')
    query: torch.Tensor  # (N, T, D')
    text: torch.Tensor  # (C, D)


@torch.no_grad()
def encode_split(model: FewShotModel, source, text: torch.Tensor, device, chunk: int = 256, head: bool = True) -> EncodedSplit:
    """Encode all videos of `source` (middle frame of each segment) for evaluation; without
    `head`, only the raw frame embeddings (what the video-text protocols score), and
    `support` / `query` are empty."""
    was_training = model.training
    model.eval()
    labels = torch.from_numpy(source.info.labels)
    raw, sup, qry = [], [], []
    text = text.to(device)
    for s in range(0, len(source), chunk):
        rows = np.arange(s, min(s + chunk, len(source)))
        pixels = source.batch(rows).to(device)
        t = text[labels[rows].to(device)]
        x = model.embed(pixels).float()  # (n, T, D): as a query
        raw.append(x)
        if not head:
            continue
        xs = model.embed(pixels, t).float() if model.text_conditioned else x  # as a support
        sup.append(model.head.encode_support(xs, t))
        qry.append(model.head.encode_query(x))
    model.train(was_training)
    if not head:
        empty = torch.empty(0)
        return EncodedSplit(torch.cat(raw), empty, empty, text)
    return EncodedSplit(torch.cat(raw), torch.cat(sup), torch.cat(qry), text)


def head_logits_fn(model: FewShotModel, enc: EncodedSplit, fusion_beta: float | None) -> Callable[[Episodes], torch.Tensor]:
    """`logits_fn(episodes)` for `train.evaluate.score_with`, from precomputed encodings."""

    def fn(eps: Episodes) -> torch.Tensor:
        E, W, K = eps.support.shape
        Q = eps.query.shape[2]
        dev = enc.raw.device
        sup = torch.from_numpy(eps.support.reshape(E, W * K)).to(dev)
        qry = torch.from_numpy(eps.query.reshape(E, W * Q)).to(dev)
        batch = EpisodeBatch(enc.raw[sup], enc.raw[qry], None, enc.text[torch.from_numpy(eps.classes).to(dev)], None, None, W)
        return model.head.predict(batch, enc.query[qry], enc.support[sup], fusion_beta)

    return fn


def validate(model: FewShotModel, data, config: TrainConfig, device) -> dict[str, float]:
    """Accuracy on the fixed validation episodes, with the few-shot logits alone and fused with text."""
    from train.evaluate import score_with, summarise

    source = data.split("val")
    with torch.no_grad():
        text = model.class_text(source.info.class_names, data.text["val"])
    enc = encode_split(model, source, text, device)
    eps = sample_episodes(source.info.labels, EpisodeConfig(config.way, config.eval_shot, 1, config.val_episodes, config.val_seed))
    out = {}
    acc, ci = summarise(score_with(head_logits_fn(model, enc, None), eps, chunk=500))
    out["accuracy"], out["ci95"] = acc, ci
    if config.fusion_beta is not None:
        out["accuracy_fused"] = summarise(score_with(head_logits_fn(model, enc, config.fusion_beta), eps, chunk=500))[0]
    return out


def no_weight_decay(name: str) -> bool:
    """Parameters the official CLIP-FSAR optimiser gives no weight decay: names containing "norm"
    or "bn" (`models/utils/optimizer.py`, `BN.WEIGHT_DECAY: 0.0`). CLIP's own LayerNorms are
    named ln_*, so they decay there too."""
    return "norm" in name or "bn" in name


def make_optimizer(model: FewShotModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the head, the visual encoder (its own learning rate) and a learnt text, with
    L2 weight decay except on `no_weight_decay` parameters."""
    groups = []
    for part, lr in (("head", config.lr), ("visual", config.backbone_lr or config.lr), ("text", config.lr)):
        module = getattr(model, part)
        if module is None:
            continue
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        for suffix, decay in (("", config.weight_decay), ("-no-decay", 0.0)):
            params = [p for n, p in named if no_weight_decay(n) == (suffix != "")]
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": decay, "name": part + suffix})
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def parameter_counts(model: FewShotModel) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}


def prepare_run(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig:
    """Create RUN_DIR with config.json, or check the saved config on resume (only `iterations` may grow)."""
    saved = run_dir / "config.json"
    if saved.exists():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
        old = TrainConfig.from_json(saved.read_text())
        a, b = json.loads(old.to_json()), json.loads(config.to_json())
        differ = sorted(k for k in a if a[k] != b[k] and k != "iterations")
        if differ:
            raise ValueError(f"--resume with a different config: {', '.join(f'{k}: {a[k]!r} -> {b[k]!r}' for k in differ)}")
        if a["iterations"] != b["iterations"]:
            write_text_atomic(saved, config.to_json() + "\n")
        return config
    if resume:
        raise FileNotFoundError(f"nothing to resume: {run_dir} has no config.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, config.to_json() + "\n")
    return config


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train `config.method` episodically, validating every `config.val_every` steps.

    Writes RUN_DIR/config.json, checkpoints/{last,best}.*, train_metrics.csv,
    val_metrics.csv, tensorboard/, curves.png and summary.json.

    Args:
        resume: continue from checkpoints/last (exactly: the same result as an uninterrupted run).
        on_step: called after every step with (steps done, that step's metrics).

    Returns:
        The summary: best validation accuracy and its step, parameter counts, timings.
    """
    run_dir = Path(run_dir)
    config = prepare_run(config, run_dir, resume)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, data = build_model(config, run_dir)
    model.to(device)
    train_src = data.split("train")
    train_names = train_src.info.class_names
    frozen_text = data.text["train"].to(device)  # the class text unless the model learns its own
    optimizer = make_optimizer(model, config)
    ckpt_dir = run_dir / "checkpoints"
    start, best, best_step, elapsed = 0, -1.0, -1, 0.0
    if resume and (ckpt_dir / "last.json").exists():
        info = load_checkpoint(ckpt_dir, "last", model, optimizer)
        start, best, best_step, elapsed = info["step"], info["best_val_accuracy"], info["best_step"], info["train_seconds"]
    log = RunLog(run_dir, start)
    counts = parameter_counts(model)
    model.train()
    t0 = time.perf_counter()
    ep_config = lambda step: EpisodeConfig(config.way, config.shot, config.query, config.episodes_per_step, step_seed(config.seed, step))  # noqa: E731
    window: list[dict] = []
    for step in range(start, config.iterations):
        for g in optimizer.param_groups:
            scale = config.learning_rate(step) / config.lr
            g["lr"] = (config.backbone_lr or config.lr) * scale if g.get("name", "").startswith("visual") else config.lr * scale
        torch.manual_seed(step_seed(config.seed + 1, step))  # dropout
        rng = np.random.default_rng(step_seed(config.seed + 2, step))  # frame jitter
        eps = sample_episodes(train_src.info.labels, ep_config(step))
        # Learnt text (Vita-CLIP's context) changes every step; ActionCLIP's trained text tower scores
        # accuracy against the frozen text and trains on per-video prompts below.
        base_text = frozen_text if model.text_per_video else model.class_text(train_names, frozen_text)
        batch = episode_batch(model, train_src, base_text, eps, rng, device)
        if model.text_per_video:  # ActionCLIP in finetune mode: each video's class in a random template, the text tower training
            labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)
            templates = np.random.default_rng(step_seed(config.seed + 3, step)).integers(len(model.text.prompts), size=len(labels))
            loss, metrics = model.head.loss(batch, base_text, model.text.per_video(labels, torch.from_numpy(templates)))
        else:
            loss, metrics = model.head.loss(batch, base_text)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        window.append(metrics)
        done = step + 1
        if done % config.log_every == 0 or done == config.iterations:
            log.write("train", done, {k: float(np.mean([m[k] for m in window])) for k in window[0]})
            window = []
        if done % config.val_every == 0 or done == config.iterations:
            val = validate(model, data, config, device)
            log.write("val", done, val)
            selected = val.get("accuracy_fused", val["accuracy"])
            train_seconds = elapsed + time.perf_counter() - t0
            info = {"step": done, "val": val, "train_seconds": train_seconds, "parameters": counts}
            if selected > best:
                best, best_step = selected, done
                save_checkpoint(ckpt_dir, "best", model, None, {**info, "selected_on": "accuracy_fused" if "accuracy_fused" in val else "accuracy"})
            save_checkpoint(ckpt_dir, "last", model, optimizer, {**info, "best_val_accuracy": best, "best_step": best_step})
            log.plot()
            metrics = {**metrics, **{f"val_{k}": v for k, v in val.items()}}
        if on_step is not None:
            on_step(done, metrics)
    log.close()
    summary = {
        "method": config.method,
        "mode": config.mode,
        "steps": config.iterations,
        "best_val_accuracy": best,
        "best_step": best_step,
        "parameters": counts,
        "train_seconds": round(elapsed + time.perf_counter() - t0, 3),
        "episodes_per_second": round(config.episodes_per_step * (config.iterations - start) / max(time.perf_counter() - t0, 1e-9), 2),
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
