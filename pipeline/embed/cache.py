"""The embedding cache's one owner: its layout, the writer (the embed stage's part files and
the cache joined from them), and the readers (a whole split in memory, or lazily, one
handle per process; and the cache's identity, which a training run records to recognise its
cache later). The layout is described in docs/cache.md.

A cache is one HDF5 file: attributes (`format`, the backbone, its weights and activation,
the image view, the shard manifest, ...), and per split a group with `frames` (N, F, D)
float16, `labels` (N,) int64, `keys` and `ids` (N,) strings, `class_names` (C,) and a `text`
group holding, per prompt set, the ensemble (C, D) and every template's embedding (C, K, D)
as `<set>_templates`. A part file (one shard's embeddings, joined into the cache at the end
of the stage) holds `frames`, `labels`, `keys` and `ids` of its videos.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
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


REMEDY = "re-run `fsar-data embed` to write it again"
FORMAT = "fsar-embedding-cache/1"


def write_part(part: Path, frames: list[np.ndarray], labels: list[int], keys: list[str], ids: list[str]) -> None:
    """Write one shard's embeddings, frames (F, D) per video, to the part file `part` (atomically)."""
    import h5py

    from fsar.pipeline.atomic import atomic_path

    part.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(part) as tmp, h5py.File(tmp, "w") as f:
        if frames:
            f.create_dataset("frames", data=np.stack(frames), track_times=False)  # (N, F, D)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64), track_times=False)
        f.create_dataset("keys", data=keys, dtype=h5py.string_dtype(), track_times=False)
        f.create_dataset("ids", data=ids, dtype=h5py.string_dtype(), track_times=False)


def read_part(part: Path) -> dict:
    """A part file's arrays: frames (absent if it holds no video), labels, keys and ids."""
    import h5py

    with h5py.File(part, "r") as pf:
        out = {"labels": pf["labels"][()], "keys": [k.decode() for k in pf["keys"][()]], "ids": [k.decode() for k in pf["ids"][()]]}
        if "frames" in pf:
            out["frames"] = pf["frames"][()]
    return out


class CacheWriter:
    """Writes the splits of a cache opened by `cache_writer`."""

    def __init__(self, f) -> None:
        self.f = f

    def split(self, name: str, frames: np.ndarray, labels: np.ndarray, keys: list[str], ids: list[str], class_names: list[str],
              texts: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, chunked: bool = True) -> None:
        """One split: frames (N, F, D), labels (N,), keys and ids (N,), class names (C,), and per
        prompt set its (ensemble (C, D), per-template (C, K, D)) text embeddings."""
        import h5py

        g = self.f.create_group(name)
        n = frames.shape[0]
        chunks = (max(1, min(n, 16)),) + frames.shape[1:] if (n and chunked) else None
        g.create_dataset("frames", data=frames, chunks=chunks, track_times=False)
        g.create_dataset("labels", data=labels, track_times=False)
        g.create_dataset("keys", data=keys, dtype=h5py.string_dtype(), track_times=False)
        g.create_dataset("ids", data=ids, dtype=h5py.string_dtype(), track_times=False)
        g.create_dataset("class_names", data=class_names, dtype=h5py.string_dtype(), track_times=False)
        t = g.create_group("text")
        for set_name, (mean, per) in (texts or {}).items():
            t.create_dataset(set_name, data=mean.astype(np.float32), track_times=False)
            if per is not None:
                t.create_dataset(f"{set_name}_templates", data=per.astype(np.float32), track_times=False)


@contextmanager
def cache_writer(path: Path, attrs: dict):
    """A `CacheWriter` on a new cache at `path` with `attrs` (the format's added first), written
    atomically: the file appears, complete, when the block succeeds."""
    import h5py

    from fsar.pipeline.atomic import atomic_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        for k, v in attrs.items():
            f.attrs[k] = v
        yield CacheWriter(f)


def template_text(path: str | os.PathLike, split: str, prompts: str) -> np.ndarray | None:
    """Every template's class-name embeddings (C, K, D) of prompt set `prompts`, or None if the cache has none."""
    with open_cache(path) as f:
        t = f[split]["text"].get(f"{prompts}_templates")
        return None if t is None else t[()]


@contextmanager
def open_cache(path: str | os.PathLike):
    """The cache at `path` open for reading (h5py.File), with its failures said as the user can act
    on them: a read that fails inside the block (a truncated or damaged file) too.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: not a readable HDF5 cache, or a part of it is missing or damaged.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no embedding cache at {path}: check the path, or write it with `fsar-data embed`")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an embedding cache (an .h5 file written by `fsar-data embed`)")
    try:
        f = h5py.File(path, "r")
    except PermissionError as e:
        raise ValueError(f"cannot read the embedding cache {path} ({e.strerror or e}): make it readable") from None
    except OSError as e:  # h5py: "file signature not found", "truncated file", ...
        raise ValueError(f"{path} is not a readable embedding cache ({_reason(e)}): {REMEDY}") from None
    try:
        with f:
            yield f
    except KeyError as e:  # a group, dataset or attribute the format has is missing
        raise ValueError(f"{path} is incomplete ({_reason(e)}): {REMEDY}") from None
    except OSError as e:  # a damaged chunk
        raise ValueError(f"{path} is damaged ({_reason(e)}): {REMEDY}") from None


def _reason(e: BaseException) -> str:
    """The gist of an h5py error: 'Unable to synchronously open file (truncated file: eof = 5000, ...)'
    -> 'truncated file'."""
    import re

    text = str(e.args[0]) if len(e.args) == 1 else str(e)
    m = re.search(r"\(([^:()]+)[:)]", text)
    return (m.group(1) if m else text).strip().rstrip(".") or type(e).__name__


def load_split(path: str | os.PathLike, split: str, verbose: bool = True) -> CachedSplit:
    """Load a split fully into memory, printing its size first (to stderr).

    Raises:
        KeyError: the cache has no such split.
        FileNotFoundError, ValueError: as `open_cache`.
    """
    import h5py

    with open_cache(path) as f:
        groups = [k for k in f if isinstance(f[k], h5py.Group)]
        if "shard_manifest" not in f.attrs:
            raise ValueError(f"{path} records no shard manifest, so it was not written by `fsar-data embed`: {REMEDY}")
        if split in groups:
            check_attrs(path, f.attrs)
            g = f[split]
            check_split(path, split, g)
            if verbose:
                size = g["frames"].size * g["frames"].dtype.itemsize
                print(f"loading {split} of {path}: {g['frames'].shape} {g['frames'].dtype}, {size / 2**20:.1f} MiB", file=sys.stderr)
            data = CachedSplit(
                frames=g["frames"][()],
                labels=g["labels"][()],
                keys=[_text(k) for k in g["keys"][()]],
                ids=[_text(k) for k in g["ids"][()]],
                class_names=[_text(k) for k in g["class_names"][()]],
                text={k: g["text"][k][()] for k in g["text"] if not k.endswith("_templates")},
                attrs=dict(f.attrs),
            )
            check_values(path, split, data)
    if split not in groups:  # outside the block, which reads a KeyError as a damaged file
        raise KeyError(f"{path} has no split {split!r}; it has: {', '.join(groups)}")
    return data


REQUIRED_ATTRS = ("backbone", "weights_state_sha256", "activation", "preprocess", "shard_manifest")
"""What a cache must record of how it was made: a run refuses a cache whose record differs from its own."""


def _text(k) -> str:
    return k.decode() if isinstance(k, bytes) else str(k)


def _bad(path, split: str, dataset: str, what: str) -> ValueError:
    where = f"{split}/{dataset}" if split else dataset
    return ValueError(f"{path}: {where} {what}, not what `fsar-data embed` writes: {REMEDY}")


def check_attrs(path, attrs) -> None:
    """The attributes every cache records (`REQUIRED_ATTRS`)."""
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise _bad(path, "", "attributes", f"lack {', '.join(missing)}")


def check_split(path, split: str, g) -> None:
    """Datasets, dtypes and shapes of a split group, from its headers (no data read): frames
    [N, T, D] floating point; labels [N] integers; keys, ids [N]; class_names [C]; each text
    array [C, D] (templates [C, K, D])."""
    import h5py

    for name in ("frames", "labels", "keys", "ids", "class_names", "text"):
        if name not in g:
            raise _bad(path, split, name, "is missing")
    frames, labels = g["frames"], g["labels"]
    if not isinstance(frames, h5py.Dataset) or frames.ndim != 3 or frames.dtype.kind != "f":
        raise _bad(path, split, "frames", f"is {getattr(frames, 'dtype', '?')} of shape {getattr(frames, 'shape', '?')}, not floating point [videos, frames, dim]")
    N, _, D = frames.shape
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != N:
        raise _bad(path, split, "labels", f"is {labels.dtype} of shape {labels.shape}, not {N} integers (one per video)")
    for name in ("keys", "ids"):
        if g[name].shape != (N,):
            raise _bad(path, split, name, f"has shape {g[name].shape}, not ({N},) (one per video)")
    C = g["class_names"].shape[0] if g["class_names"].ndim == 1 else -1
    if C < 1:
        raise _bad(path, split, "class_names", f"has shape {g['class_names'].shape}, not one name per class")
    for name, t in g["text"].items():
        want = 3 if name.endswith("_templates") else 2
        if t.ndim != want or t.shape[0] != C or t.shape[-1] != D or t.dtype.kind != "f":
            raise _bad(path, split, f"text/{name}", f"is {t.dtype} of shape {t.shape}, not floating point [{C} classes, {'templates, ' if want == 3 else ''}{D}] (the frames' width)")


def check_values(path, split: str, data: "CachedSplit") -> None:
    """What only the data shows, checked on the arrays just read (no second pass over the file):
    labels in [0, C), unique keys, finite frames (the first bad video is named)."""
    C = len(data.class_names)
    if len(data.labels) and (data.labels.min() < 0 or data.labels.max() >= C):
        raise _bad(path, split, "labels", f"hold {int(data.labels.min())}..{int(data.labels.max())}, outside [0, {C}) ({C} classes)")
    if len(set(data.keys)) != len(data.keys):
        raise _bad(path, split, "keys", "repeat a video")
    finite = np.concatenate([np.isfinite(data.frames[i : i + 4096]).all(axis=(1, 2)) for i in range(0, len(data.frames), 4096)] or [np.ones(0, bool)])
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise _bad(path, split, "frames", f"of video {data.ids[i]!r} (and {int((~finite).sum()) - 1} more) are not finite")


IDENTITY_SAMPLE = 32  # videos per split whose frames enter a cache's identity


def cache_identity(path: str | os.PathLike) -> dict:
    """What makes a cache the data it is, read in well under a second however large it is:
    the weights that embedded it (`weights_state_sha256`), its precision and preprocessing,
    the shards it was made from (their manifest's identity: dataset, sampling, split lists),
    and per split the videos (keys, labels, frames' shape) and a sha256 of the frames of
    IDENTITY_SAMPLE videos spread over it. The whole file is not hashed: a run checks its
    cache on every evaluation, and caches reach tens of GB. Two caches with equal identities
    were embedded from the same videos with the same weights and settings.
    """
    import h5py
    import numpy as np

    from fsar.pipeline.shard.plan import identity as shard_identity

    with open_cache(path) as f:
        a = f.attrs
        manifest = json.loads(a["shard_manifest"])
        out = {
            "format": str(a.get("format", "")),
            "weights_state_sha256": str(a.get("weights_state_sha256", "")),
            "backbone": str(a.get("backbone", "")),
            "activation": str(a.get("activation", "")),
            "precision": str(a.get("precision", "")),
            "preprocess": str(a.get("preprocess", "")),
            "shards": _digest(json.dumps(shard_identity(manifest), sort_keys=True).encode()),
            "splits": {},
        }
        for split in sorted(k for k in f if isinstance(f[k], h5py.Group)):
            g = f[split]
            frames = g["frames"]
            n = frames.shape[0]
            rows = np.unique(np.linspace(0, n - 1, min(n, IDENTITY_SAMPLE)).round().astype(np.int64)) if n else np.zeros(0, np.int64)
            h = hashlib.sha256()
            for k in g["keys"][()]:
                h.update(k + b"\n")
            h.update(np.ascontiguousarray(g["labels"][()]).astype("<i8").tobytes())
            out["splits"][split] = {
                "videos": int(n),
                "frames_shape": list(frames.shape),
                "videos_sha256": h.hexdigest(),
                "frames_sample_sha256": _digest(np.ascontiguousarray(frames[rows] if n else frames[()]).tobytes()),
            }
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LazySplit:
    """Random access to a split without loading it; safe to use from DataLoader workers.

    The HDF5 handle is opened on first use in each process (h5py handles must not
    cross a fork), so construct this before forking and read after.
    """

    def __init__(self, path: str | os.PathLike, split: str) -> None:
        self.path, self.split = Path(path), split
        with open_cache(self.path) as f:
            check_attrs(self.path, f.attrs)
            check_split(self.path, split, f[split])
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
