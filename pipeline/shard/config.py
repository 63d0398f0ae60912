"""Configuration of the shard stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fsar.pipeline.datasets import DATASETS, SPLITS
from fsar.pipeline.paths import absolute
from fsar.pipeline.video.decode import BACKENDS


@dataclass
class ShardConfig:
    """Videos -> sampled-frame WebDataset shards."""

    dataset: str
    """One of pipeline.datasets.DATASETS (ssv2, ssv2-small, kinetics100, ucf101, hmdb51, synth, folder)."""
    root: Path
    """Folder holding the videos: a listed `<class>/<id>` is ROOT/<class>/<id>.<any video
    extension>, else the file of that id in a folder named for the class at any depth, else
    the only file of that id anywhere below (see `pipeline.datasets.VideoIndex`)."""
    out: Path
    """Output folder: OUT/<split>/shard-NNNNNN.tar, manifest.json, summary.json."""
    splits_dir: Path | None = None
    """Split lists; default: the data's own (synth, folder) or a one-time download."""
    splits: tuple[str, ...] = SPLITS
    """Which splits to shard."""
    frames: int = 8
    """T: segments per video; val/test store the middle frame of each."""
    train_frames: int = 16
    """Frames stored per training video (uniform, a multiple of `frames`) for temporal jitter."""
    short_side: int = 256
    """Resize so the shorter side has this many pixels (0 keeps the original size)."""
    jpeg_quality: int = 90
    """JPEG quality of the stored frames (1-100)."""
    decoder: str = "auto"
    """auto, dali (GPU), dali-cpu (VP8/VP9) or pyav."""
    shard_size: int = 64
    """Videos per shard (one shard is one unit of work)."""
    workers: int | None = None
    """Ray workers (1 without --address: one worker process, no Ray); None: one per CPU of
    this machine, or with `address` of the joined cluster."""
    address: str | None = None
    """Address of an existing Ray cluster to join ("host:port" of its head, or "auto");
    the CLI defaults to RAY_ADDRESS. The videos and OUT must be on storage every node sees,
    and fsar installed on every node."""
    video_timeout: float = 300.0
    """A video still decoding after this many seconds (a decoder stuck in native code) is
    recorded as failed and its worker replaced; 0: no limit."""
    max_failure_rate: float = 0.05
    """Exit non-zero when more than this fraction of the listed videos fail (missing ones included)."""
    retry_failed: bool = False
    """Re-attempt the failed videos of finished shards (finished ones are otherwise skipped)."""
    cache_dir: Path | None = None
    """Where downloaded split lists are cached (default ~/.cache/fsar)."""

    def __post_init__(self) -> None:
        # Absolute, as the workers see them: on a joined cluster they do not share this cwd.
        self.root, self.out = absolute(self.root), absolute(self.out)
        self.splits_dir = absolute(self.splits_dir) if self.splits_dir else None
        self.cache_dir = absolute(self.cache_dir) if self.cache_dir else None
        self.address = (self.address or "").strip() or None  # an empty RAY_ADDRESS means none
        self.splits = tuple(self.splits)
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS)}")
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise ValueError(f"splits must be among {', '.join(SPLITS)}, got {', '.join(self.splits) or 'none'}")
        if not 1 <= self.frames <= 256:
            raise ValueError(f"frames must be in [1, 256], got {self.frames}")
        if self.train_frames < self.frames or self.train_frames % self.frames:
            raise ValueError(f"train_frames must be a multiple of frames ({self.frames}), got {self.train_frames}")
        if self.short_side != 0 and not 16 <= self.short_side <= 4096:
            raise ValueError(f"short_side must be 0 (keep) or in [16, 4096], got {self.short_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.decoder not in BACKENDS:
            raise ValueError(f"unknown decoder {self.decoder!r}; known: {', '.join(BACKENDS)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.workers is None and self.address is None:
            self.workers = os.cpu_count() or 1
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.video_timeout >= 0:
            raise ValueError(f"video_timeout must be >= 0 seconds (0: no limit), got {self.video_timeout}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if not self.root.is_dir():
            raise ValueError(f"video root {self.root} is not a directory")

    def sampling(self) -> dict:
        """The settings that decide the shards' content (recorded in the manifest)."""
        return {
            "frames": self.frames,
            "train_frames": self.train_frames,
            "val_test": "middle frame of each of `frames` equal segments",
            "train": "middle frame of each of `train_frames` equal segments",
            "short_side": self.short_side,
            "jpeg_quality": self.jpeg_quality,
            "shard_size": self.shard_size,
        }
