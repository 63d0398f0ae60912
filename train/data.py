"""Where episodes get their videos: the embedding cache (frozen embeddings) or the shards (pixels).

Both sources give, for a set of rows of a split, T frames per video: one random frame per
segment for training (temporal jitter over the stored training frames), the middle frame
of each segment otherwise. The cache gives embeddings [n, T, D]; the shards give
preprocessed pixels [n, T, 3, S, S] for a trainable visual encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsar.pipeline.sampling import train_candidates
from fsar.pipeline.shard.format import ShardReadError, iter_samples, read_member


def frame_positions(stored: int, T: int, n: int, rng: np.random.Generator | None) -> np.ndarray:
    """[n, T] positions into each video's `stored` frames: random per segment with `rng`, else the middles."""
    if stored == T:
        return np.broadcast_to(np.arange(T), (n, T))
    cands = np.asarray(train_candidates(stored, T))  # (T, stored // T)
    if rng is None:
        return np.broadcast_to(cands[:, cands.shape[1] // 2], (n, T))
    return cands[np.arange(T), rng.integers(cands.shape[1], size=(n, T))]


@dataclass
class SplitInfo:
    labels: np.ndarray  # (N,) split-level class index
    class_names: list[str]
    keys: list[str]


class CacheSource:
    """One split of an embedding cache, in memory (float16)."""

    def __init__(self, cache: str | os.PathLike, split: str, frames: int, prompts: str) -> None:
        from fsar.pipeline.embed.cache import load_split

        data = load_split(cache, split, verbose=False)
        if prompts not in data.text:
            raise ValueError(f"{cache} has no {prompts!r} text embeddings; it has: {', '.join(data.text)}")
        if data.frames.shape[0] == 0:
            raise ValueError(f"{cache}: split {split!r} has no videos")
        self.frames = torch.from_numpy(data.frames)  # (N, F, D) float16
        if self.frames.shape[1] % frames:
            raise ValueError(f"{cache}: {split} stores {self.frames.shape[1]} frames per video, not a multiple of {frames}")
        self.T = frames
        self.info = SplitInfo(data.labels, data.class_names, data.keys)
        self.text = torch.from_numpy(data.text[prompts]).float()  # (C, D)
        self.text_templates = _template_text(cache, split, prompts)  # (K, C, D), ActionCLIP's zero-shot
        self.attrs = data.attrs
        self.dataset = json.loads(data.attrs["shard_manifest"]).get("dataset")
        self.random_init = bool(data.attrs.get("random_init", False))
        self.dim = self.frames.shape[-1]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None, queries: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings [*rows.shape, T, D] (float32) of the videos at `rows` (`queries` is for pixel sources)."""
        flat = np.asarray(rows).reshape(-1)
        pos = frame_positions(self.frames.shape[1], self.T, len(flat), rng)
        x = self.frames[torch.from_numpy(flat)[:, None], torch.from_numpy(np.ascontiguousarray(pos))]  # (n, T, D)
        return x.float().view(*np.shape(rows), self.T, -1)


def _template_text(cache: str | os.PathLike, split: str, prompts: str) -> torch.Tensor | None:
    """Every template's class-name embeddings [K, C, D] of a prompt set (the cache stores [C, K, D])."""
    from fsar.pipeline.embed.cache import template_text

    t = template_text(cache, split, prompts)
    return None if t is None else torch.from_numpy(t).float().transpose(0, 1).contiguous()


class ShardSource:
    """One split of a shard folder, read by random access into the tars (nothing held but an index).

    Each sample's JPEG members are located once (offset, size); `batch` decodes the
    needed frames and prepares them with `view` (`pipeline.views`): its test view, or with
    `augment` other than none and a training rng its training view (`crop`: a random crop per
    clip; `crop+query`: queries also get the official query augmentation).
    """

    def __init__(self, shards: str | os.PathLike, split: str, frames: int, view, augment: str = "none") -> None:
        self.root = Path(shards)
        manifest = json.loads((self.root / "manifest.json").read_text())
        if split not in manifest["splits"]:
            raise KeyError(f"{self.root} has no split {split!r}; it has: {', '.join(manifest['splits'])}")
        info = manifest["splits"][split]
        self.manifest, self.T, self.view, self.augment = manifest, frames, view, augment
        self.dataset = manifest.get("dataset")
        self.members: list[tuple[int, list[tuple[int, int]]]] = []  # (tar index, [(offset, size) per frame])
        self.tars: list[Path] = []
        labels, keys = [], []
        for name in info["shards"]:
            path = self.root / split / name
            if not path.exists():
                continue  # a failed shard: its videos are reported in the shard stage's summary
            self.tars.append(path)
            with open(path, "rb") as f:
                for sample in iter_samples(path):
                    self.members.append((len(self.tars) - 1, sample.frames))
                    try:
                        labels.append(int(read_member(f, sample.fields["cls"])))
                    except ValueError:
                        raise ShardReadError(f"{path}: sample {sample.key!r} has an unreadable .cls member: re-run `fsar-data shard`") from None
                    keys.append(sample.key)
        if not keys:
            raise ValueError(f"{self.root}: split {split!r} has no readable samples")
        names = [c["name"] for c in sorted(info["classes"], key=lambda c: c["index"])]
        outside = [(k, c) for k, c in zip(keys, labels) if not 0 <= c < len(names)]
        if outside:
            raise ShardReadError(f"{self.root}/{split}: sample {outside[0][0]!r} has class {outside[0][1]}, outside the split's {len(names)} classes "
                                 f"(manifest.json): the shards and their manifest do not belong together; re-run `fsar-data shard`")
        stored = {len(m[1]) for m in self.members}
        if len(stored) != 1 or next(iter(stored)) % frames:
            short = min(range(len(self.members)), key=lambda i: len(self.members[i][1]))
            raise ShardReadError(f"{self.root}/{split}: frames per sample {sorted(stored)} are not one multiple of {frames} "
                                 f"(sample {keys[short]!r} holds {len(self.members[short][1])}): re-run `fsar-data shard`")
        self.stored = stored.pop()
        self.keys = keys
        self.info = SplitInfo(np.asarray(labels, dtype=np.int64), names, keys)
        self._handles: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.members)

    def _read(self, tar: int, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(tar)
        if f is None:
            f = self._handles[tar] = open(self.tars[tar], "rb")
        f.seek(offset)
        return f.read(size)

    def frames_uint8(self, row: int, positions) -> np.ndarray:
        """[T, H, W, 3] uint8 frames of one video at the given stored positions."""
        import simplejpeg

        tar, jpgs = self.members[row]
        try:
            return np.stack([simplejpeg.decode_jpeg(self._read(tar, *jpgs[p]), colorspace="RGB") for p in positions])
        except ValueError as e:  # simplejpeg: not a JPEG, or a damaged one
            raise ShardReadError(f"{self.tars[tar]}: sample {self.keys[row]!r} holds a frame that is not a readable JPEG ({e}): re-run `fsar-data shard`") from None

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None, queries: np.ndarray | None = None) -> torch.Tensor:
        """Prepared pixels [*rows.shape, T, 3, S, S] of the videos at `rows`; `queries` (a boolean
        mask broadcastable to `rows`) marks the videos that get query augmentation."""
        flat = np.asarray(rows).reshape(-1)
        pos = frame_positions(self.stored, self.T, len(flat), rng)
        is_query = np.zeros(len(flat), bool) if queries is None else np.broadcast_to(queries, np.shape(rows)).reshape(-1)
        out = []
        for r, p, q in zip(flat, pos, is_query):
            frames = torch.from_numpy(self.frames_uint8(int(r), p))  # (T, H, W, 3) uint8
            if rng is not None and self.augment != "none":
                out.append(self.view.train(frames, rng, query_augment=bool(q) and self.augment == "crop+query"))
            else:
                out.append(self.view.test(frames))
        x = torch.stack(out)
        return x.view(*np.shape(rows), *x.shape[1:])


def holdout_rows(info: SplitInfo, fraction: float) -> np.ndarray:
    """Boolean mask [N] of the videos held out of training: in every class, the
    round(fraction * n) videos whose keys hash lowest (independent of order and seed)."""
    import hashlib

    held = np.zeros(len(info.labels), dtype=bool)
    if fraction <= 0:
        return held
    for c in np.unique(info.labels):
        rows = np.flatnonzero(info.labels == c)
        rows = sorted(rows, key=lambda r: hashlib.sha1(info.keys[r].encode()).hexdigest())
        held[rows[: int(round(fraction * len(rows)))]] = True
    return held


class SubsetSource:
    """The videos of a source at `rows`, with the same interface (labels stay split-level)."""

    def __init__(self, source, rows: np.ndarray) -> None:
        self.source, self.rows = source, np.asarray(rows)
        i = source.info
        self.info = SplitInfo(i.labels[self.rows], i.class_names, [i.keys[r] for r in self.rows])
        for name in ("attrs", "dataset", "random_init", "dim", "T"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None, queries: np.ndarray | None = None) -> torch.Tensor:
        return self.source.batch(self.rows[np.asarray(rows)], rng, queries)
