"""Episodic training: one loop for adapter mode (cached embeddings), and finetune and peft modes (shards).

Every source of randomness in a step (episodes, frame jitter, dropout) is seeded by
(config.seed, step), so a run resumed from a checkpoint replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fsar.pipeline.lock import hold
from fsar.pipeline.atomic import check_writable, write_text_atomic
from fsar.train import parallel
from fsar.train.checkpoint import load_checkpoint, save_checkpoint
from fsar.train.config import TrainConfig
from fsar.train.episodes import EpisodeConfig, Episodes, sample_episodes
from fsar.train.heads import EpisodeBatch
from fsar.train.heads.dropout import episode_streams
from fsar.train.model import FewShotModel, build_model, resolve_device
from fsar.train.rundir import clear_unstarted, prepare_run
from fsar.train.runlog import RunLog


def step_seed(seed: int, step: int) -> int:
    """A per-step seed, distinct for every (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def episode_seeds(seed: int, step: int, episodes: np.ndarray) -> list[int]:
    """A seed for each of a step's `episodes` (indices among the step's episodes), distinct for
    every (seed, step, episode): what an episode draws depends on nothing else, so any worker
    can train it."""
    return [int(np.random.SeedSequence([seed, step, int(e)]).generate_state(1)[0]) for e in episodes]


def episode_batch(model: FewShotModel, source, text: torch.Tensor, eps: Episodes, rngs: list[np.random.Generator] | None, device) -> EpisodeBatch:
    """Embed the videos of a batch of episodes; supports and queries ordered class by class.
    `rngs`: each episode's own generator for frame jitter and augmentation (None: test view)."""
    E, W, K = eps.support.shape
    Q = eps.query.shape[2]
    rows = np.concatenate([eps.support.reshape(E, W * K), eps.query.reshape(E, W * Q)], axis=1)  # (E, W*K + W*Q)
    queries = np.arange(rows.shape[1]) >= W * K  # (W*K + W*Q,): which columns are queries (their augmentation may differ)
    if rngs is None:
        x = source.batch(rows, None, queries).to(device)
    else:
        x = torch.stack([source.batch(rows[e], rngs[e], queries) for e in range(E)]).to(device)  # (E, W*K + W*Q, ...)
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


ENCODE_CHUNK = 256  # videos encoded at a time for evaluation


@dataclass
class EncodedSplit:
    """Every video of a split encoded once: raw frame embeddings and the head's support and query encodings."""

    raw: torch.Tensor  # (N, T, D)
    support: torch.Tensor  # (N, T, D')
    query: torch.Tensor  # (N, T, D')
    text: torch.Tensor  # (C, D)


@torch.no_grad()
def encode_split(model: FewShotModel, source, text: torch.Tensor, device, chunk: int = ENCODE_CHUNK, head: bool = True) -> EncodedSplit:
    """Encode all videos of `source` (middle frame of each segment) for evaluation; without
    `head`, only the raw frame embeddings (what the video-text protocols score), and
    `support` / `query` are empty. In a group of workers each encodes its `chunk`-video pieces
    (`fsar.train.parallel.my_chunks`) and every worker gets the whole split's encodings."""
    was_training = model.training
    model.eval()
    head = head and model.head.spec.encodes_independently  # else episodes are encoded as they are scored
    labels = torch.from_numpy(source.info.labels)
    text = text.to(device)
    group = parallel.current()
    mine = {}  # start row: (raw, support, query) of each chunk this worker encodes
    shared = (lambda t: t.cpu()) if group.world > 1 else (lambda t: t)  # noqa: E731  the gather pickles: send host tensors
    for s, e in parallel.my_chunks(len(source), chunk, group):
        rows = np.arange(s, e)
        pixels = source.batch(rows).to(device)
        t = text[labels[rows].to(device)]
        x = model.embed(pixels).float()  # (n, T, D): as a query
        if not head:
            mine[s] = (shared(x), None, None)
            continue
        xs = model.embed(pixels, t).float() if model.text_conditioned else x  # as a support
        mine[s] = (shared(x), shared(model.head.encode_support(xs, t)), shared(model.head.encode_query(x)))
    model.train(was_training)
    parts = parallel.gather_chunks(mine, group)  # every worker's chunks, in row order
    raw = torch.cat([p[0] for p in parts]).to(device)
    if not head:
        empty = torch.empty(0)
        return EncodedSplit(raw, empty, empty, text)
    return EncodedSplit(raw, torch.cat([p[1] for p in parts]).to(device), torch.cat([p[2] for p in parts]).to(device), text)


def head_logits_fn(model: FewShotModel, enc: EncodedSplit, fusion_beta: float | None) -> Callable[[Episodes], torch.Tensor]:
    """`logits_fn(episodes)` for `train.evaluate.score_with`, from precomputed encodings."""

    independent = model.head.spec.encodes_independently

    def fn(eps: Episodes) -> torch.Tensor:
        E, W, K = eps.support.shape
        Q = eps.query.shape[2]
        dev = enc.raw.device
        sup = torch.from_numpy(eps.support.reshape(E, W * K)).to(dev)
        qry = torch.from_numpy(eps.query.reshape(E, W * Q)).to(dev)
        class_text = enc.text[torch.from_numpy(eps.classes).to(dev)]  # (E, W, D)
        if independent:
            batch = EpisodeBatch(enc.raw[sup], enc.raw[qry], None, class_text, None, None, W)
            return model.head.predict(batch, enc.query[qry], enc.support[sup], fusion_beta)
        support_text = class_text.repeat_interleave(K, dim=1)  # (E, W*K, D): supports are class by class
        batch = EpisodeBatch(enc.raw[sup], enc.raw[qry], support_text, class_text, None, None, W)
        support_enc, query_enc = model.head.encode_episodes(batch)  # each episode's videos together
        return model.head.predict(batch, query_enc, support_enc, fusion_beta)

    return fn


def validate(model: FewShotModel, data, config: TrainConfig, device, split: str = "val") -> dict[str, float]:
    """Accuracy on the fixed validation episodes, with the few-shot logits alone and fused with
    text. With `split="test"`: the first `val_episodes` of the fixed test episodes (seed 0, the
    prefix of fsar-eval's), for `track_test`."""
    from fsar.train.evaluate import score_with, summarise

    source = data.split(split)
    with torch.no_grad():
        text = model.class_text(source.info.class_names, data.text[split])
    enc = encode_split(model, source, text, device)
    seed = config.val_seed if split == "val" else 0
    eps = sample_episodes(source.info.labels, EpisodeConfig(config.way, config.eval_shot, 1, config.val_episodes, seed))
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


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train `config.method` episodically, validating every `config.val_every` steps.

    Writes RUN_DIR/config.json, data.json, checkpoints/{last,best}.*, train_metrics.csv,
    val_metrics.csv, tensorboard/, curves.png and summary.json. RUN_DIR is held for the
    run (a second run there fails at once); a run that stops before its first checkpoint
    leaves none of these behind.

    Args:
        resume: continue from checkpoints/last (exactly: the same result as an uninterrupted run).
        on_step: called after every step with (steps done, that step's metrics).

    Returns:
        The summary: best validation accuracy and its step, parameter counts, timings.

    Raises:
        ValueError: RUN_DIR cannot be written, or the config or data do not fit it.
        FileExistsError: RUN_DIR holds a run and `resume` is not set.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir, "--out")
    with hold(run_dir, "fsar-train"):
        found = {p.name for p in run_dir.iterdir()}
        try:
            return _train(config, run_dir, resume, on_step)
        except BaseException:
            clear_unstarted(run_dir, found)  # a run that wrote no checkpoint yet claims nothing
            raise


def _train(config: TrainConfig, run_dir: Path, resume: bool, on_step: Callable[[int, dict], None] | None) -> dict:
    config = prepare_run(config, run_dir, resume)
    return train_loop(config, run_dir, resume, on_step)


class TrainStep(torch.nn.Module):
    """The forward pass of one training step on this worker's share of the step's episodes,
    returning (loss, metrics). A module, so that DDP can wrap it: DDP averages gradients
    over the workers of what this forward used."""

    def __init__(self, model: FewShotModel, config: TrainConfig, source, frozen_text: torch.Tensor, device) -> None:
        super().__init__()
        self.model, self.config, self.source, self.frozen_text, self.device = model, config, source, frozen_text, device

    def forward(self, eps: Episodes, local: np.ndarray, step: int, share: float) -> tuple[torch.Tensor, dict]:
        """`eps`: the step's episodes, all workers' (`local`: indices of this worker's); `share`:
        the factor that turns this worker's loss into its part of the step's, given DDP's
        average over workers (local episodes x workers / step's episodes; a `batch_loss`
        method's: workers)."""
        model, c = self.model, self.config
        mine = Episodes(eps.classes[local], eps.support[local], eps.query[local])
        rngs = [np.random.default_rng(s) for s in episode_seeds(c.seed + 2, step, local)]  # frame jitter, augmentation
        # Learnt text (Vita-CLIP's context) changes every step; ActionCLIP's trained text tower scores
        # accuracy against the frozen text and trains on per-video prompts below.
        base_text = self.frozen_text if model.text_per_video else model.class_text(self.source.info.class_names, self.frozen_text)
        with episode_streams(episode_seeds(c.seed + 1, step, local)):  # dropout
            batch = episode_batch(model, self.source, base_text, mine, rngs, self.device)
            if model.text_per_video:  # ActionCLIP in finetune mode: each video's class in a random template, the text tower training
                labels = torch.cat([batch.support_labels, batch.query_labels], dim=1)  # (e, videos per episode)
                every = np.random.default_rng(step_seed(c.seed + 3, step)).integers(len(model.text.prompts), size=(len(eps.classes), labels.shape[1]))
                templates = torch.from_numpy(every[local].reshape(-1))  # the step's draw, this worker's episodes
                loss, metrics = model.head.loss(batch, base_text, model.text.per_video(labels.reshape(-1), templates))
            else:
                loss, metrics = model.head.loss(batch, base_text)
        return loss * share, metrics


def set_learning_rates(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> None:
    scale = config.learning_rate(step) / config.lr
    for g in optimizer.param_groups:
        g["lr"] = (config.backbone_lr or config.lr) * scale if g.get("name", "").startswith("visual") else config.lr * scale


def train_loop(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    on_step: Callable[[int, dict], None] | None = None,
    device: torch.device | None = None,
    worker_log: bool = False,
) -> dict:
    """The training loop of one worker of a run (one process: a group of one), on a RUN_DIR that
    `prepare_run` prepared. Every worker trains its share of each step's episodes
    (`fsar.train.parallel.block`); in a group of several, DDP averages the gradients, so
    N workers take the step one worker takes. Validation is shared out the same way. Rank 0
    writes the run's files and calls `on_step`; with `worker_log`, each worker appends a line
    per step to RUN_DIR/workers/rank<r>.jsonl (its episodes, loss, seconds and pid)."""
    group = parallel.current()
    device = device or resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.episodes_per_step < group.world:
        raise ValueError(f"{group.world} workers need at least as many episodes per step; this config has episodes_per_step {config.episodes_per_step}")
    model, data = build_model(config, run_dir, write=group.main)  # one writer of RUN_DIR's files (their temporary names are fixed)
    model.to(device)
    train_src = data.split("train")
    frozen_text = data.text["train"].to(device)  # the class text unless the model learns its own
    optimizer = make_optimizer(model, config)
    ckpt_dir = run_dir / "checkpoints"
    start, best, best_step, elapsed, best_test = 0, -1.0, -1, 0.0, -1.0
    window: list[dict] = []  # metrics of the steps since the last train_metrics.csv row
    if resume and (ckpt_dir / "last.json").exists():
        info = load_checkpoint(ckpt_dir, "last", model, optimizer)
        start, best, best_step, elapsed = info["step"], info["best_val_accuracy"], info["best_step"], info["train_seconds"]
        best_test = info.get("best_test_accuracy", -1.0)
        window = list(info.get("train_window", []))
    log = RunLog(run_dir, start) if group.main else None
    counts = parameter_counts(model)
    model.train()
    forward = TrainStep(model, config, train_src, frozen_text, device)
    if group.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        forward = DistributedDataParallel(forward, device_ids=ids, find_unused_parameters=True)  # rank 0's weights to all
    E = config.episodes_per_step
    local = parallel.block(E, group)
    # Each worker's loss is its episodes' mean; weighted by its share of the step, DDP's average is the step's mean.
    # A batch loss is the step's already, on every worker, and each worker's gradient flows through its own rows only.
    share = group.world if model.head.spec.batch_loss else len(local) * group.world / E
    wlog = None
    if worker_log:
        (run_dir / "workers").mkdir(exist_ok=True)
        wlog = open(run_dir / "workers" / f"rank{group.rank}.jsonl", "a")
    t0 = time.perf_counter()
    for step in range(start, config.iterations):
        ts = time.perf_counter()
        set_learning_rates(optimizer, config, step)
        torch.manual_seed(step_seed(config.seed + 1, step))  # any torch randomness outside the heads' per-episode dropout
        eps = sample_episodes(train_src.info.labels, EpisodeConfig(config.way, config.shot, config.query, E, step_seed(config.seed, step)))
        loss, metrics = forward(eps, local, step, share)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        metrics = parallel.weighted_mean(metrics, len(local) / E, group)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        if wlog is not None:
            wlog.write(json.dumps({"step": step, "episodes": [int(local[0]), int(local[-1]) + 1], "of": E, "loss": loss.item() / share,
                                   "seconds": round(time.perf_counter() - ts, 4), "pid": os.getpid()}) + "\n")
            wlog.flush()
        window.append(metrics)
        done = step + 1
        if log is not None and (done % config.log_every == 0 or done == config.iterations):
            log.write("train", done, {k: float(np.mean([m[k] for m in window])) for k in window[0]})
        if done % config.log_every == 0 or done == config.iterations:
            window = []
        if done % config.val_every == 0 or done == config.iterations:
            val = validate(model, data, config, device)
            if config.track_test:  # for comparison with published numbers only: selection stays on val
                val["test_accuracy"] = validate(model, data, config, device, "test")["accuracy"]
            selected = val.get("accuracy_fused", val["accuracy"])
            train_seconds = elapsed + time.perf_counter() - t0
            info = {"step": done, "val": val, "train_seconds": train_seconds, "parameters": counts}
            improved = selected > best
            if improved:
                best, best_step = selected, done
            improved_test = config.track_test and val["test_accuracy"] > best_test
            if improved_test:
                best_test = val["test_accuracy"]
            if group.main:
                log.write("val", done, val)
                if improved:
                    save_checkpoint(ckpt_dir, "best", model, None, {**info, "selected_on": "accuracy_fused" if "accuracy_fused" in val else "accuracy"})
                if improved_test:
                    save_checkpoint(ckpt_dir, "best-on-test", model, None, {**info, "selected_on": "test accuracy (as the official code selects)"})
                save_checkpoint(ckpt_dir, "last", model, optimizer, {**info, "best_val_accuracy": best, "best_step": best_step, "best_test_accuracy": best_test,
                                                                      "train_window": window})  # a resume averages the same steps into its next row
                log.plot()
            parallel.barrier(group)  # no worker runs ahead of the checkpoint it would resume from
            metrics = {**metrics, **{f"val_{k}": v for k, v in val.items()}}
        if on_step is not None and group.main:
            on_step(done, metrics)
    if wlog is not None:
        wlog.close()
    summary = {
        "method": config.method,
        "mode": config.mode,
        "steps": config.iterations,
        "best_val_accuracy": best,
        "best_step": best_step,
        "parameters": counts,
        "train_seconds": round(elapsed + time.perf_counter() - t0, 3),
        "episodes_per_second": round(E * (config.iterations - start) / max(time.perf_counter() - t0, 1e-9), 2),
        "workers": group.world,
    }
    if group.main:
        log.close()
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
