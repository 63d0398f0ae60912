"""Configuration of the embed stage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fsar.pipeline.paths import absolute
from fsar.pipeline.prompts import PROMPT_SETS


@dataclass
class EmbedConfig:
    """Shards -> an HDF5 cache of frozen frame and class-text embeddings."""

    shards: Path
    """Output folder of `fsar-data shard` (holds manifest.json)."""
    cache: Path
    """The HDF5 file to write; part files go to <cache>.parts/ next to it."""
    backbone: str = "ViT-B/16"
    """Any open_clip model name, or OpenAI's spelling (ViT-B/16, ViT-B/32, RN50)."""
    pretrained: str | None = None
    """A pretrained tag, a checkpoint file, or 'none' (random init); default: the model's OpenAI weights."""
    activation: str = "auto"
    """The MLP activation to build the model with: auto (what the weights were trained with, from
    open_clip's pretrained config or the file; see `pipeline.backbones.resolve_activation`),
    gelu or quick_gelu (OpenAI's weights need it)."""
    view: str = "auto"
    """How frames are prepared for the model (`pipeline.views`): clip (open_clip's eval transform:
    shortest side to the model's size, centre crop), clip-fsar (the official CLIP-FSAR test view:
    256x256, centre 224 crop), or auto: clip-fsar for the benchmarks CLIP-FSAR reports on (ssv2,
    ssv2-small, kinetics100, ucf101, hmdb51), clip for the others (synth, folder)."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "auto"
    """bf16, fp16 or fp32; auto: bf16 on a GPU, fp32 on a CPU (bf16 is much slower on CPUs)."""
    batch: int = 256
    """Frames per forward pass."""
    workers: int = 1
    """Ray workers (one per GPU, or CPU workers); 1 without --address runs in this process."""
    address: str | None = None
    """Address of an existing Ray cluster to join ("host:port" of its head, or "auto");
    the CLI defaults to RAY_ADDRESS. The shards and the cache must be on storage every node
    sees, and fsar installed on every node."""
    templates: tuple[str, ...] = tuple(PROMPT_SETS)
    """Prompt sets for the class-name text embeddings."""
    max_failure_rate: float = 0.0
    """Fraction of shards that may be unreadable (reported and skipped) before the stage fails."""
    seed: int = 0
    """Seed of the random initialisation with pretrained='none'."""
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    """CPU threads for the forward pass in each worker."""

    def __post_init__(self) -> None:
        self.shards, self.cache = absolute(self.shards), absolute(self.cache)  # as workers on other nodes see them
        self.address = (self.address or "").strip() or None  # an empty RAY_ADDRESS means none
        self.templates = tuple(self.templates)
        if not (self.shards / "manifest.json").exists():
            raise ValueError(f"{self.shards} has no manifest.json: run `fsar-data shard` first")
        from fsar.pipeline.backbones import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.view not in ("auto", "clip", "clip-fsar"):
            raise ValueError(f"view must be auto, clip or clip-fsar, got {self.view!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        if not 1 <= self.batch <= 65536:
            raise ValueError(f"batch must be in [1, 65536], got {self.batch}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        unknown = [t for t in self.templates if t not in PROMPT_SETS]
        if unknown or not self.templates:
            raise ValueError(f"unknown prompt sets {unknown}; known: {', '.join(PROMPT_SETS)}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")

    @property
    def parts(self) -> Path:
        return self.cache.with_name(self.cache.name + ".parts")

    @property
    def random_weights(self) -> Path:
        """Where random-init weights are saved, beside the cache."""
        return self.cache.with_name(self.cache.stem + ".backbone.safetensors")

    def resolved_view(self, dataset: str | None) -> str:
        """The view for a shard folder of `dataset` (its manifest's dataset name)."""
        if self.view != "auto":
            return self.view
        from fsar.pipeline.datasets import DATASETS

        return DATASETS[dataset].view if dataset in DATASETS else "clip"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.resolved_device() == "cuda" else "fp32"
