"""The trainer's configuration: one typed dataclass, validated on construction, overridable by key."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass

MODES = ("adapter", "finetune", "peft")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as JSON in the run directory."""

    method: str = "clip-fsar"
    """Head name from `train.heads.HEADS`."""
    mode: str = "adapter"
    """adapter: train the head on cached frozen embeddings; finetune: the visual encoder trains too;
    peft: the visual encoder stays frozen and the method's adapters or prompts inside it train
    (ma-clip, vita-clip)."""
    dataset: str = "synth"
    """Dataset the run is for (recorded; the named configs set its defaults)."""
    cache: str | None = None
    """Embedding cache (adapter mode)."""
    shards: str | None = None
    """Shard folder of `fsar-data shard` (finetune mode)."""
    backbone: str = "fsar-tiny-vit"
    """open_clip model for finetune and peft modes (adapter mode reads the cache's)."""
    pretrained: str = "none"
    """Pretrained tag, checkpoint file or 'none' (seeded random weights) for finetune and peft modes."""
    activation: str = "auto"
    """The backbone's MLP activation in finetune and peft modes: auto (what the weights were trained
    with; OpenAI's need quick_gelu), gelu or quick_gelu. The run records the one it used."""
    prompts: str = "clip-fsar"
    """Prompt set of the class-name text embeddings."""

    way: int = 5
    """Classes per episode."""
    shot: int = 1
    """Support videos per class in training episodes (the official 5-shot configs train on 1-shot
    episodes: `SHOT: 1`, `SHOT_TEST: 5`)."""
    test_shot: int | None = None
    """Support videos per class in validation episodes (None: `shot`); `fsar-eval --shot` scores any."""
    query: int = 5
    """Query videos per class in training episodes (validation and test use 1)."""
    frames: int = 8
    """Frames per video (T segments)."""
    episodes_per_step: int = 16
    """Episodes whose losses are averaged per optimiser step."""
    iterations: int = 1000
    """Optimiser steps."""

    lr: float = 5e-5
    """Base learning rate (Adam)."""
    backbone_lr: float | None = None
    """Learning rate of the visual encoder in finetune mode (default: lr)."""
    weight_decay: float = 5e-5
    """L2 weight decay (Adam's, as in the official configs)."""
    warmup_iterations: int = 0
    """Linear warm-up from warmup_start_lr to lr over this many steps."""
    warmup_start_lr: float = 1e-5
    """Learning rate at step 0 when warming up."""
    lr_decay_at: tuple[int, ...] = ()
    """Steps at which the learning rate is multiplied by lr_decay."""
    lr_decay: float = 0.1
    """Factor applied at each of lr_decay_at."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""

    alpha: float = 1.0
    """CLIP-FSAR: weight of the video-text loss (USE_CLASSIFICATION_VALUE, >= 0); MA-CLIP: weight
    in [0, 1] of the video-text terms against the few-shot term, in the loss and the prediction."""
    fusion_beta: float | None = 0.9
    """Test-time fusion p = p_text^beta * p_fewshot^(1-beta); None: few-shot logits alone."""
    lam: float = 0.5
    """OTAM soft-minimum temperature."""
    heads: int = 8
    """Attention heads of the temporal transformer."""
    ffn_dim: int = 2048
    """Hidden width of the transformer's feed-forward block."""
    attn_dropout: float = 0.2
    """Dropout after the attention projection."""
    ffn_dropout: float = 0.05
    """Dropout in the feed-forward block."""
    text_scale_init: float = 1.0
    """Initial value of the learnable video-text logit scale (CLIP-FSAR, MA-CLIP)."""
    text_loss_features: str = "backbone"
    """CLIP-FSAR: the video features of its video-text loss (and zero-shot scores and fusion):
    `backbone` (the frame embeddings, as the paper; where the backbone is frozen the loss trains
    only its scale, and the text side is CLIP's own zero-shot), `adapted` (ours: the temporal
    transformer's output on the query path; on the synthetic benchmark the few-shot loss
    collapses those features, see docs/findings.md) or `auto` (backbone in finetune mode, else
    adapted: the default before, kept so that runs saved with it score as they trained)."""
    fewshot_scale: float = 1.0
    """CLIP-FSAR and MA-CLIP: factor (a temperature) on the few-shot (negative OTAM distance)
    logits; 1 as in the papers. CLIP-FSAR applies it in the training loss only (its prediction,
    the argmax, does not depend on it); MA-CLIP in the loss and in the probabilities its
    prediction mixes with the text's."""
    prototype_merge: str = "before"
    """CLIP-FSAR with several shots: `before` averages a class's support frame embeddings (and
    text tokens) before the temporal transformer, one (T+1)-token sequence per class, as every
    official 5-shot config (`TRAIN.MERGE_BEFORE: true`); `after` (ours) encodes each support and
    averages the outputs. The same at 1 shot."""
    cosine_eps: float = 0.01
    """CLIP-FSAR: epsilon of its cosine x.y / (|x||y| + eps) in the frame distances of OTAM and
    in the video-text logits, 0.01 as the official `cos_sim`; 0 is the exact cosine (ours)."""
    image_view: str = "clip"
    """Frames for the visual encoder in finetune and peft modes, at validation and test: `clip`
    (open_clip's eval transform: shortest side to the model's size, centre crop) or `clip-fsar`
    (the official CLIP-FSAR test view: every frame resized to 256x256, centre 224 crop)."""
    train_augment: str = "none"
    """Training frames in finetune and peft modes: `none` (the `image_view` as at test), `crop`
    (the official CLIP-FSAR training view: 256x256, a random 224 crop per clip) or `crop+query`
    (also the official Kinetics-100 query augmentation: flip and colour jitter per clip)."""
    text_modulation: bool = True
    """CLIP-FSAR: append each support's class-text token to its frames in the temporal
    transformer (prototype modulation); False passes supports through it as queries are."""
    frame_positions: bool = False
    """CLIP-FSAR: add learned frame-position embeddings before its temporal transformer (the
    paper has none: frame order enters through OTAM only)."""
    temporal_fusion: str = "transformer"
    """ActionCLIP's fusion of frame embeddings into a video embedding: transformer (the official
    `Transf`) or mean."""
    temporal_layers: int = 6
    """Residual attention blocks of ActionCLIP's fusion transformer (6, as the official `Transf`)."""
    text_trains: bool = True
    """ActionCLIP in finetune mode: its text encoder trains too, each video paired with its class
    in a random template every step, as the official training; False keeps the frozen text."""
    text_context: int = 8
    """Vita-CLIP: learnable context tokens per class in the text prompt."""
    global_prompts: int = 8
    """Vita-CLIP: learnable global prompt tokens per layer of the visual encoder."""
    holdout: float = 0.0
    """Fraction of each training class's videos kept out of training (deterministic by video
    key), on which `fsar-eval --protocol supervised` scores the seen classes."""

    val_every: int = 100
    """Validate (and keep the best checkpoint) every this many steps, and at the end."""
    val_episodes: int = 1000
    """Fixed validation episodes (1 query per class), seeded by val_seed."""
    val_seed: int = 1
    """Seed of the validation episodes (test episodes use fsar-eval's seed)."""
    track_test: bool = False
    """Ours, to compare with published numbers (the official code keeps the checkpoint best on
    its test episodes): at every validation also score the first `val_episodes` fixed test
    episodes (seed 0) and keep the best of them as checkpoints/best-on-test. The run's own
    selection (checkpoints/best) stays on val."""
    log_every: int = 10
    """Write training metrics every this many steps."""
    seed: int = 0
    """Seed of parameters, episodes, frame jitter and dropout."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    threads: int = 0
    """CPU threads (0: torch's default)."""

    def __post_init__(self) -> None:
        from fsar.train.heads import HEADS

        self.lr_decay_at = tuple(int(s) for s in self.lr_decay_at)
        if self.method not in HEADS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(HEADS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.test_shot is not None and self.test_shot < 1:
            raise ValueError(f"test_shot must be >= 1 or None, got {self.test_shot}")
        if self.cosine_eps < 0:
            raise ValueError(f"cosine_eps must be >= 0, got {self.cosine_eps}")
        if self.prototype_merge not in ("before", "after"):
            raise ValueError(f"prototype_merge must be before or after, got {self.prototype_merge!r}")
        if self.image_view not in ("clip", "clip-fsar"):
            raise ValueError(f"image_view must be clip or clip-fsar, got {self.image_view!r}")
        if self.train_augment not in ("none", "crop", "crop+query"):
            raise ValueError(f"train_augment must be none, crop or crop+query, got {self.train_augment!r}")
        if self.train_augment != "none" and self.image_view != "clip-fsar":
            raise ValueError(f"train_augment {self.train_augment} is the official CLIP-FSAR training view: it needs image_view=clip-fsar, got {self.image_view}")
        for name in ("way", "shot", "query", "frames", "episodes_per_step", "iterations", "val_every", "val_episodes", "log_every", "heads", "ffn_dim", "temporal_layers", "text_context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.way < 2:
            raise ValueError(f"way must be >= 2, got {self.way}")
        for name in ("lr", "warmup_start_lr"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.backbone_lr is not None and not 0 <= self.backbone_lr < 1:
            raise ValueError(f"backbone_lr must be in [0, 1), got {self.backbone_lr}")
        if self.weight_decay < 0 or self.warmup_iterations < 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"need weight_decay >= 0, warmup_iterations >= 0 and lr_decay in (0, 1]; got {self.weight_decay}, {self.warmup_iterations}, {self.lr_decay}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.fusion_beta is not None and not 0 <= self.fusion_beta <= 1:
            raise ValueError(f"fusion_beta must be in [0, 1] or None, got {self.fusion_beta}")
        if self.fewshot_scale <= 0:
            raise ValueError(f"fewshot_scale must be > 0, got {self.fewshot_scale}")
        if self.lam <= 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        for name in ("attn_dropout", "ffn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.global_prompts < 0:
            raise ValueError(f"global_prompts must be >= 0, got {self.global_prompts}")
        if self.text_loss_features not in ("auto", "backbone", "adapted"):
            raise ValueError(f"text_loss_features must be auto, backbone or adapted, got {self.text_loss_features!r}")
        if self.temporal_fusion not in ("transformer", "mean"):
            raise ValueError(f"temporal_fusion must be transformer or mean, got {self.temporal_fusion!r}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.activation not in ("auto", "gelu", "quick_gelu"):
            raise ValueError(f"activation must be auto, gelu or quick_gelu, got {self.activation!r}")

    @property
    def eval_shot(self) -> int:
        """Shots of the validation episodes."""
        return self.test_shot or self.shot

    def learning_rate(self, step: int) -> float:
        """The scheduled learning rate at `step` (0-based): warm-up, then step decay."""
        if step < self.warmup_iterations:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_iterations
        return self.lr * self.lr_decay ** sum(step >= s for s in self.lr_decay_at)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        data = json.loads(text)
        # Runs saved before the field existed trained CLIP-FSAR's video-text loss on the backbone's features.
        data.setdefault("text_loss_features", "backbone")
        # Runs saved before these fields existed averaged CLIP-FSAR's supports after the transformer
        # and read frames with open_clip's eval transform.
        data.setdefault("prototype_merge", "after")
        data.setdefault("cosine_eps", 0.0)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; known: {', '.join(sorted(known))}")
        return cls(**data)


def _parse(kind: str, key: str, raw: str):
    """Parse an override value for a field whose annotation is `kind` (a string, as annotations are postponed)."""
    optional = "None" in kind
    if optional and raw.lower() in ("none", "null"):
        return None
    base = kind.replace("| None", "").strip()
    try:
        if base == "bool":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
        if base.startswith("tuple"):
            return tuple(int(v) for v in raw.replace("(", "").replace(")", "").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--set {key}={raw}: expected {kind}") from None
    return raw


def apply_overrides(config: TrainConfig, overrides: typing.Iterable[str]) -> TrainConfig:
    """Return a copy of `config` with `key=value` overrides applied (and validated); unknown keys are errors."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in kinds:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(kinds))}")
        changes[key] = _parse(kinds[key], key, raw.strip())
    return dataclasses.replace(config, **changes)


__all__ = ["MODES", "TrainConfig", "apply_overrides"]
