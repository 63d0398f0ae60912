"""Read an embedding cache: a whole split in memory, or lazily, one handle per process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CachedSplit:
    """One split of a cache, in memory."""

    frames: np.ndarray  # (N, F, D) float16
    labels: np.ndarray  # (N,) int64
    keys: list[str]
    ids: list[str]
    class_names: list[str]
    text: dict[str, np.ndarray] = field(default_factory=dict)  # prompt set -> (C, D) float32
    attrs: dict = field(default_factory=dict)


def load_split(path: str | os.PathLike, split: str, verbose: bool = True) -> CachedSplit:
    """Load a split fully into memory, printing its size first (to stderr)."""
    import h5py

    with h5py.File(path, "r") as f:
        if split not in f:
            raise KeyError(f"{path} has no split {split!r}; it has: {', '.join(k for k in f if isinstance(f[k], h5py.Group))}")
        g = f[split]
        if verbose:
            size = g["frames"].size * g["frames"].dtype.itemsize
            print(f"loading {split} of {path}: {g['frames'].shape} {g['frames'].dtype}, {size / 2**20:.1f} MiB", file=sys.stderr)
        return CachedSplit(
            frames=g["frames"][()],
            labels=g["labels"][()],
            keys=[k.decode() for k in g["keys"][()]],
            ids=[k.decode() for k in g["ids"][()]],
            class_names=[k.decode() for k in g["class_names"][()]],
            text={k: g["text"][k][()] for k in g["text"] if not k.endswith("_templates")},
            attrs=dict(f.attrs),
        )


class LazySplit:
    """Random access to a split without loading it; safe to use from DataLoader workers.

    The HDF5 handle is opened on first use in each process (h5py handles must not
    cross a fork), so construct this before forking and read after.
    """

    def __init__(self, path: str | os.PathLike, split: str) -> None:
        import h5py

        self.path, self.split = Path(path), split
        with h5py.File(self.path, "r") as f:
            self.labels = f[split]["labels"][()]
            self.shape = f[split]["frames"].shape
        self._file = None
        self._pid = None

    def _frames(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.split]["frames"]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self._frames()[i], int(self.labels[i])

    def __getstate__(self):  # pickling (spawned workers) drops the handle
        d = dict(self.__dict__)
        d["_file"], d["_pid"] = None, None
        return d
