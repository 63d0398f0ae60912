"""Contrastive image-text pretraining of an open_clip model on a caption corpus (`fsar-data pretrain`).

The model, its tokenizer and the loss are open_clip's own (`create_model`, `get_tokenizer`,
`loss.ClipLoss`); the optimiser follows open_clip's training defaults (AdamW, betas 0.9/0.98,
eps 1e-6, no weight decay on gains, biases and the logit scale, a linear warm-up then a cosine
decay, the logit scale clamped at 100). A clip's image feature is the mean of its frames'
normalised features, as the few-shot methods pool frames.

Everything random comes from the seed: the initial weights, and each step's batch (drawn from
`(seed, step)`), so a run killed at any point and run again ends with the same weights as an
uninterrupted one. `OUT/state.pt` (weights, optimiser, step, metric rows; tensors only, read
with `weights_only=True`) is written every `save_every` steps.

Outputs in OUT: `open_clip_model.safetensors` (the weights, with the backbone and activation
recorded for `--pretrained OUT/open_clip_model.safetensors`; plain open_clip loads it too,
see `docs/pretraining.md`), `pretrain_metrics.csv` (one row per step) and `pretrain.json`
(settings, held-out retrieval accuracy, per-attribute accuracy, timings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fsar.pipeline.atomic import atomic_path, write_text_atomic
from fsar.pipeline.backbones import Preprocess, _no_random_init_warning, _open_clip, model_activation, resolve_name, save_weights
from fsar.pipeline.lock import hold
from fsar.pipeline.synth.captions import ATTRIBUTES, CaptionedClip, load_corpus, vocabulary

WEIGHTS = "open_clip_model.safetensors"
METRICS = ("step", "loss", "accuracy", "lr", "logit_scale")


@dataclass(frozen=True)
class PretrainConfig:
    """What `fsar-data pretrain` trains.

    Attributes:
        corpus: a folder made by `fsar-data captions`.
        out: where the weights, metrics and state go (re-running resumes).
        backbone: an open_clip model name (its image and text towers are both trained).
        steps: optimiser steps.
        batch: clips per step (the contrastive loss's negatives are the batch's other clips).
        lr: peak learning rate, reached after `warmup` steps, then a cosine decay to 0.
        warmup: linear warm-up steps.
        weight_decay: AdamW weight decay on weight matrices.
        seed: initial weights and batch order.
        save_every: steps between checkpoints of the training state.
        caption_prefixes: each training caption is given one of these, drawn per clip and step, as
            web captions often begin ("a photo of ..."); held-out retrieval uses the plain captions.
        threads: torch CPU threads (None: torch's default); results depend on it only in float rounding.
    """

    corpus: Path
    out: Path
    backbone: str = "fsar-micro-vit"
    steps: int = 2000
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    save_every: int = 100
    caption_prefixes: tuple[str, ...] = ("", "a photo of ", "a video of ", "a picture of ")
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2 or self.save_every < 1 or self.warmup < 0 or not self.lr > 0:
            raise ValueError("--steps and --save-every must be at least 1, --batch at least 2, --warmup at least 0 and --lr above 0")

    def content_key(self) -> dict:
        """What decides the weights: a run folder made with other settings is refused."""
        d = asdict(self)
        for k in ("out", "save_every", "threads"):
            d.pop(k)
        d["corpus"] = str(Path(self.corpus).resolve())
        d["caption_prefixes"] = list(self.caption_prefixes)
        return d


def lr_at(step: int, config: PretrainConfig) -> float:
    """open_clip's cosine schedule: linear warm-up to `lr`, then a half cosine to 0."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    e, es = step - config.warmup, max(1, config.steps - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * config.lr


def _param_groups(model, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, norms and the logit scale."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def encode_clips(model, preprocess: Preprocess, frames: np.ndarray) -> torch.Tensor:
    """Normalised clip features: the mean of the normalised features of each clip's frames."""
    b, t = frames.shape[:2]
    x = preprocess(torch.from_numpy(np.ascontiguousarray(frames.reshape(b * t, *frames.shape[2:]))))
    f = model.encode_image(x, normalize=True).view(b, t, -1).mean(1)
    return torch.nn.functional.normalize(f, dim=-1)


def _matches(captions: list[str]) -> np.ndarray:
    """[N, N] bool: clip i's caption equals caption j (a retrieved duplicate caption is right)."""
    ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    a = np.array([ids[c] for c in captions])
    return a[:, None] == a[None, :]


@torch.no_grad()
def retrieval(model, preprocess: Preprocess, tokenize: Callable[[list[str]], torch.Tensor], frames: np.ndarray, captions: list[str], batch: int = 256) -> dict:
    """Held-out retrieval top-1 (%): each clip's nearest caption, and each caption's nearest clip;
    and `attribute_accuracy`."""
    model.eval()

    def encode_text(texts: list[str]) -> torch.Tensor:
        return torch.cat([model.encode_text(tokenize(texts[i:i + batch]), normalize=True) for i in range(0, len(texts), batch)])

    img = torch.cat([encode_clips(model, preprocess, frames[i:i + batch]) for i in range(0, len(frames), batch)])
    sim = (img @ encode_text(captions).T).numpy()
    ok = _matches(captions)
    n = len(captions)
    return {
        "clips": n,
        "image_to_text_top1": float(100 * ok[np.arange(n), sim.argmax(1)].mean()),
        "text_to_image_top1": float(100 * ok[sim.argmax(0), np.arange(n)].mean()),
        "chance_top1": float(100 * ok.sum(1).mean() / n),
        "attributes": attribute_accuracy(img, captions, encode_text),
    }


def attribute_accuracy(img: torch.Tensor, captions: list[str], encode_text: Callable[[list[str]], torch.Tensor]) -> dict | None:
    """What the model tells apart, one attribute at a time: for each clip and attribute, is its
    caption nearer than every caption that differs from it in that attribute alone ("one red
    circle ..." against "one blue circle ...")? Held-out retrieval cannot show this, as most
    captions of a batch already differ in an easy attribute.

    Args:
        img: normalised clip features [N, D].
        captions: the clips' full captions.
        encode_text: texts -> normalised features [len(texts), D].

    Returns:
        {attribute: {"top1": %, "chance": %}} for each of `captions.ATTRIBUTES`, or None when a
        caption is not in the grammar of `fsar-data captions` (a corpus written by other means).
    """
    try:
        truths = [CaptionedClip.from_caption(c) for c in captions]
    except ValueError:
        return None
    out = {}
    for attr in ATTRIBUTES:
        values = vocabulary(attr)
        texts = [replace(t, **{attr: v}).caption for t in truths for v in values]
        txt = encode_text(texts).view(len(truths), len(values), -1)  # (N, V, D)
        sim = torch.einsum("nd,nvd->nv", img, txt)
        right = torch.tensor([values.index(getattr(t, attr)) for t in truths])
        out[attr] = {"top1": float(100 * (sim.argmax(1) == right).float().mean()), "chance": 100 / len(values)}
    return out


def describe_attributes(held_out: dict) -> str | None:
    """`attribute_accuracy`'s figures in one line ("count 85.4% (chance 33.3%), ..."), or None where
    they were not measured (a run from before them, or captions not of `fsar-data captions`)."""
    attrs = held_out.get("attributes")
    if not attrs:
        return None
    return ", ".join(f"{a} {v['top1']:.1f}% (chance {v['chance']:.1f}%)" for a, v in attrs.items())


def _csv(rows: list[list[float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS)
    for r in rows:
        w.writerow([int(r[0])] + [f"{v:.6g}" for v in r[1:]])
    return buf.getvalue()


def run_pretrain(config: PretrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Pretrain (or resume, or find finished) the run in `config.out`; returns its summary.

    Raises:
        ValueError: the corpus is missing or unfinished, or OUT holds a run with other settings.
        FolderBusy: another process is pretraining in OUT.
    """
    out = Path(config.out)
    summary_path = out / "pretrain.json"
    with hold(out, "fsar-data pretrain"):
        if summary_path.exists():
            held = json.loads(summary_path.read_text())
            if held.get("config") != config.content_key():
                raise ValueError(f"{out} holds a pretraining run with other settings ({held.get('config')}); choose another --out or remove it")
            if held.get("finished") and (out / WEIGHTS).is_file():
                return {**held, "this_run": {"steps": 0, "seconds": 0.0}}  # nothing to do
        corpus, frames, captions = load_corpus(config.corpus)
        n_train = corpus["samples"] - corpus["held_out"]
        if config.batch > n_train:
            raise ValueError(f"--batch {config.batch} is more than the corpus's {n_train} training clips")
        write_text_atomic(summary_path, json.dumps({"config": config.content_key(), "finished": False}, indent=1) + "\n")
        if config.threads:
            torch.set_num_threads(config.threads)
        oc = _open_clip()
        name = resolve_name(config.backbone)
        with torch.random.fork_rng(devices=[]), _no_random_init_warning():  # random at first, by design
            torch.manual_seed(config.seed)
            model = oc.create_model(name, pretrained=None)
        preprocess = Preprocess(model)
        tokenize = oc.get_tokenizer(name)  # training captions are tokenized per step, with their prefixes
        loss_fn = oc.loss.ClipLoss()
        opt = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
        start, rows = 0, []
        state_path = out / "state.pt"
        if state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, rows = int(state["step"]), state["rows"].tolist()
        t0 = time.perf_counter()
        model.train()
        for step in range(start, config.steps):
            rng = np.random.default_rng([config.seed, step])
            idx = np.sort(rng.choice(n_train, config.batch, replace=False))
            prefixes = rng.integers(len(config.caption_prefixes), size=len(idx))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, config)
            img = encode_clips(model, preprocess, frames[idx])
            txt = model.encode_text(tokenize([config.caption_prefixes[k] + captions[i] for k, i in zip(prefixes, idx)]), normalize=True)
            scale = model.logit_scale.exp()
            loss = loss_fn(img, txt, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                ok = _matches([captions[i] for i in idx])
                acc = float(100 * ok[np.arange(len(idx)), (img @ txt.T).argmax(1).numpy()].mean())
            value = float(loss.detach())
            rows.append([step + 1, value, acc, lr_at(step, config), float(scale.detach())])
            if on_step:
                on_step(step + 1, {"loss": value, "accuracy": acc})
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                with atomic_path(state_path) as tmp:
                    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                                "rows": torch.tensor(rows, dtype=torch.float64)}, tmp)
                write_text_atomic(out / "pretrain_metrics.csv", _csv(rows))
        seconds = time.perf_counter() - t0
        held_out = retrieval(model, preprocess, tokenize, frames[n_train:], captions[n_train:])
        activation = model_activation(name)
        sha = save_weights(model, out / WEIGHTS, {"backbone": name, "activation": activation, "random_init": False,
                                                 "source": "fsar-data pretrain", "steps": config.steps, "seed": config.seed})
        summary = {
            "config": config.content_key(),
            "finished": True,
            "backbone": name,
            "activation": activation,
            "weights": str((out / WEIGHTS).resolve()),
            "sha256": sha,
            "corpus": corpus,
            "train_clips": n_train,
            "held_out": held_out,
            "final_loss": rows[-1][1] if rows else None,
            "this_run": {"steps": config.steps - start, "seconds": seconds},
        }
        write_text_atomic(summary_path, json.dumps(summary, indent=1) + "\n")
        return summary
