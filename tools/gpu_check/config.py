"""What one `make gpu-check` run does and how long each part may take: the GPU run and its CPU dry run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

SECTIONS = ("environment", "data", "pytest-gpu", "decode", "embed", "train", "chain")
"""In the order they run. `data` renders and shards the synthetic videos that decode (dry run),
embed and train read; every other section stands alone."""


@dataclass(frozen=True)
class CheckConfig:
    """Sizes, devices and time budgets of one run of the check."""

    out: Path
    """Where GPU.md, GPU.json and logs/ go."""
    work: Path
    """Scratch folder for the synthetic data, shards, caches and runs (emptied at the start)."""
    dry_run: bool = False
    """CPU, tiny sizes, GPU-only parts skipped: proves the script runs, measures nothing of a GPU."""
    device: str = "cuda"
    """Where models run: cuda, or cpu in the dry run."""
    backbone: str = "ViT-B/16"
    """Backbone of the embed and train sections and the chain (random weights)."""
    activation: str = "quick_gelu"
    """The activation OpenAI's weights need, so the measured model is the one users run."""
    seconds: float = 2.0
    """Each throughput figure is measured for at least this long (after a warm-up), not a fixed count."""
    embed_batch: int = 256
    """Frames per encode_image call."""
    corpus: Path | None = None
    """The decode benchmark's corpus folder (`tools.bench.decode.build_corpus`, reused when whole);
    None: the decode section reads the synthetic videos of `data` instead (the dry run)."""
    corpus_scale: float = 0.1
    """`build_corpus`'s scale: clips per corpus are repeated as often as a timed pass needs."""
    dali_processes: int = 4
    """Processes that share the GPU's NVDEC in the second DALI figure."""
    synth_classes: int = 20
    synth_videos: int = 16
    synth_splits: tuple[int, int, int] = (12, 4, 4)
    synth_size: tuple[int, int] = (192, 144)
    synth_frames: tuple[int, int] = (24, 40)
    short_side: int = 256
    """Shards' frame size (the shard stage's default); the dry run's are as small as its videos."""
    way: int = 5
    shot: int = 1
    query: int = 5
    episodes_per_step: int = 16
    """Of the train section's steps: CLIP-FSAR's official batch (4 GPUs x 4 episodes)."""
    chain_classes: int = 15
    chain_videos: int = 6
    chain_splits: tuple[int, int, int] = (5, 5, 5)
    workers: int | None = None
    """Shard workers of the chain (None: one per core, through Ray, as users run it)."""
    budgets: dict[str, float] = field(default_factory=lambda: {
        "environment": 15, "data": 35, "pytest-gpu": 60, "decode": 75, "embed": 50, "train": 100, "chain": 85,
    })
    """Seconds each section may take before it is stopped and recorded as failed."""

    def __post_init__(self) -> None:
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be cuda or cpu, got {self.device!r}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        unknown = sorted(set(self.budgets) - set(SECTIONS))
        if unknown or any(v <= 0 for v in self.budgets.values()):
            raise ValueError(f"budgets must be > 0 seconds for sections among {', '.join(SECTIONS)}, got {self.budgets}")
        if self.synth_videos < (self.shot + self.query) / 0.8 or min(self.synth_splits[0], self.chain_splits[1]) < self.way:
            raise ValueError(
                f"{self.way}-way {self.shot}-shot {self.query}-query episodes need {self.way} training and validation classes "
                f"and {self.shot + self.query} videos per class after a 20% holdout; got {self.synth_splits}, {self.synth_videos} videos"
            )

    @property
    def total_budget(self) -> float:
        return sum(self.budgets.values())


def gpu_config(out: Path, work: Path, corpus: Path) -> CheckConfig:
    """The run on one CUDA GPU: ViT-B/16, the bench corpora, CLIP-FSAR's batch; 7 minutes of section
    budgets in all (each section stops at its own), so that the run ends inside 8 minutes."""
    return CheckConfig(out=out, work=work, corpus=corpus)


def dry_run_config(out: Path, work: Path) -> CheckConfig:
    """The same script on a CPU: the micro ViT, a handful of 64x48 videos, short measurements."""
    return replace(
        CheckConfig(out=out, work=work),
        dry_run=True, device="cpu", backbone="fsar-micro-vit", activation="auto", seconds=0.2, embed_batch=32,
        corpus=None, dali_processes=2, synth_classes=9, synth_videos=4, synth_splits=(3, 3, 3), synth_size=(64, 48),
        synth_frames=(8, 10), short_side=48, way=3, shot=1, query=1, episodes_per_step=2, chain_classes=9, chain_videos=3,
        chain_splits=(3, 3, 3), workers=1,
        budgets={"environment": 60, "data": 120, "pytest-gpu": 60, "decode": 120, "embed": 120, "train": 180, "chain": 240},
    )


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
