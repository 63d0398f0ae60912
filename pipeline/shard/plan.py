"""Plan the shard stage: resolve split lists, class names and video paths; cut splits into shards.

The plan is a pure function of the inputs: the same split lists, root and config give
the same shards with the same contents, so runs can be resumed and compared. A listed
video that could be one of several files stops the plan: it is never guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fsar.pipeline import __version__
from fsar.pipeline.atomic import write_json_atomic
from fsar.pipeline.datasets import SPLITS, Lookup, VideoIndex, dataset_spec, find_split_dir, read_split, ssv2_class_names
from fsar.pipeline.shard.config import ShardConfig


@dataclass(frozen=True)
class VideoEntry:
    """One listed video: its id, WebDataset key, class, and where it was found (None: missing)."""

    id: str  # as listed, without its class
    key: str
    label: str  # the class label as written in the split list
    class_index: int  # index among the split's classes
    class_name: str  # natural-language name
    path: str | None


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: a split's slice of videos and where its files go."""

    split: str
    index: int
    entries: tuple[VideoEntry, ...]
    num_frames: int  # frames stored per video in this split

    def name(self) -> str:
        return f"shard-{self.index:06d}"

    def tar_path(self, out: Path) -> Path:
        return Path(out) / self.split / f"{self.name()}.tar"

    def stats_path(self, out: Path) -> Path:
        # Kept out of the split folder, so that folder holds only shards for any reader.
        return Path(out) / "_status" / self.split / f"{self.name()}.json"


def safe_key(video_id: str) -> str:
    """A WebDataset key for a video id: no dots (they separate key from field) nor other
    characters that trouble file names; ids that had any get a short hash of the original
    appended, so distinct ids keep distinct keys."""
    key = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)
    if key != video_id:
        key = f"{key}_{hashlib.sha1(video_id.encode('utf-8')).hexdigest()[:8]}"
    return key


SAMPLE_KEYS = "safe <class>/<id>"  # recorded in the manifest: shards keyed otherwise are not mixed in


def sample_key(label: str, vid: str) -> str:
    """The WebDataset key of the listed video `label/vid`: its class-qualified id made safe, so
    that `a/0` and `b/0` stay two samples (a reader merges samples that share a key)."""
    return safe_key(f"{label}/{vid}")


def _natural(label: str) -> list:
    # 'train2' < 'train10', as SSv2-Full's anonymous labels are numbered.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def plan(config: ShardConfig) -> tuple[dict, list[ShardTask]]:
    """Resolve everything the workers need and cut each split into shards.

    Returns:
        (manifest, tasks): the manifest describes the dataset (classes per split,
        counts, how the videos were found, sampling config, tool version); tasks are in
        split then shard order.

    Raises:
        ValueError: a split list is malformed; a listed video matches several files; one
            file is listed twice in a split; two entries of a split share a sample key.
        FileNotFoundError: a split's list is missing.
    """
    spec = dataset_spec(config.dataset)
    split_dir = find_split_dir(spec, config.splits_dir, config.root, config.cache_dir)
    entries = {}
    for split in config.splits:
        path = split_dir / f"{split}.txt"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no {split} list for {spec.name} (use --split to choose splits)")
        entries[split] = read_split(path)
    names: dict[str, str] = {}
    names_from = "split lists"
    if spec.ssv2_labels:
        names = ssv2_class_names(config.root, entries)
        names_from = "SSv2 label files under the root" if names else "none found: anonymous labels kept"
    index = VideoIndex(config.root)
    every_class = {label for items in entries.values() for label, _ in items}
    for split in set(SPLITS) - set(entries):  # the classes of splits not sharded now own their folders too
        if (split_dir / f"{split}.txt").exists():
            every_class |= {label for label, _ in read_split(split_dir / f"{split}.txt")}
    every_class = frozenset(every_class)
    found = {split: [index.find(label, vid, every_class) for label, vid in items] for split, items in entries.items()}
    lists = {split: split_dir / f"{split}.txt" for split in entries}
    _check_unambiguous(config.root, lists, entries, found)

    manifest = {
        "dataset": spec.name,
        "title": spec.title,
        "tool_version": __version__,
        "root": str(config.root.resolve()),
        "split_lists": str(split_dir.resolve()),
        "class_names_from": names_from,
        "sampling": config.sampling(),
        "decoder": config.decoder,
        "sample_keys": SAMPLE_KEYS,
        "splits": {},
    }
    tasks: list[ShardTask] = []
    for split, items in entries.items():
        labels = sorted({label for label, _ in items}, key=_natural)
        cls_index = {label: i for i, label in enumerate(labels)}
        videos = [
            VideoEntry(vid, sample_key(label, vid), label, cls_index[label], names.get(label, label), f.path)
            for (label, vid), f in zip(items, found[split])
        ]
        _check_distinct(lists[split], videos)
        n_frames = config.train_frames if split == "train" else config.frames
        shards = [
            ShardTask(split, i, tuple(videos[s : s + config.shard_size]), n_frames)
            for i, s in enumerate(range(0, len(videos), config.shard_size))
        ]
        tasks += shards
        manifest["splits"][split] = {
            "classes": [{"index": cls_index[l], "label": l, "name": names.get(l, l)} for l in labels],
            "videos": len(videos),
            "missing": sum(v.path is None for v in videos),
            "found_by": dict(Counter(f.how for f in found[split] if f.path)),  # path, class folder or id
            "frames_per_video": n_frames,
            "shards": [t.name() + ".tar" for t in shards],
            "list_sha256": hashlib.sha256("".join(f"{l}/{v}\n" for l, v in items).encode()).hexdigest(),
        }
    return manifest, tasks


def _examples(items: list[str], shown: int = 3) -> str:
    return "; ".join(items[:shown]) + (f"; and {len(items) - shown} more" if len(items) > shown else "")


def _check_unambiguous(root: Path, lists: dict[str, Path], entries: dict, found: dict[str, list[Lookup]]) -> None:
    """Stop on listed videos that match several files, naming a few with their candidates."""
    ambiguous = [
        f"{lists[split].name} {label}/{vid} -> " + ", ".join(Path(os.path.relpath(p, root)).as_posix() for p in f.candidates[:3])
        + (", ..." if len(f.candidates) > 3 else "")
        for split, items in entries.items()
        for (label, vid), f in zip(items, found[split])
        if f.how == "ambiguous"
    ]
    if ambiguous:
        raise ValueError(
            f"{len(ambiguous)} listed video{'s match' if len(ambiguous) > 1 else ' matches'} several files under {root} "
            f"and no <class>/<id> path picks one: {_examples(ambiguous)}; put each video at "
            "ROOT/<class>/<id>.<ext> (a folder per class), or give each file a name no other file under the root has"
        )


def _check_distinct(split_list: Path, videos: list[VideoEntry]) -> None:
    """Stop on one file listed twice in a split (under two classes, or by two names) and on
    two videos whose keys coincide, naming both entries."""
    by_path: dict[str, VideoEntry] = {}
    twice = []
    for v in videos:
        if v.path is not None and by_path.setdefault(v.path, v) is not v:
            twice.append(f"{by_path[v.path].label}/{by_path[v.path].id} and {v.label}/{v.id} are both {v.path}")
    if twice:
        raise ValueError(
            f"{split_list}: one video file listed twice ({_examples(twice)}); list each video once, under one class; "
            "if they are different videos, put each at ROOT/<class>/<id>.<ext>"
        )
    by_key: dict[str, VideoEntry] = {}
    for v in videos:
        other = by_key.setdefault(v.key, v)
        if other is not v:
            raise ValueError(
                f"{split_list}: {other.label}/{other.id} and {v.label}/{v.id} map to one sample key {v.key!r}; rename one of the two"
            )


def identity(manifest: dict) -> dict:
    """The manifest fields that determine the shards' content (not the tool version or paths)."""
    return {
        "dataset": manifest["dataset"],
        "sampling": manifest["sampling"],
        "decoder": manifest["decoder"],
        "sample_keys": manifest.get("sample_keys"),  # absent: shards from before keys were class-qualified
        "splits": {s: v["list_sha256"] for s, v in manifest["splits"].items()},
    }


def write_manifest(out: Path, manifest: dict) -> None:
    """Write OUT/manifest.json, refusing an OUT sharded from other inputs or settings."""
    out = Path(out)
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        old_id, new_id = identity(old), identity(manifest)
        old_splits = old_id.pop("splits")
        new_splits = new_id.pop("splits")
        changed = [k for k in new_id if old_id.get(k) != new_id[k]]
        changed += [f"split {s}" for s in new_splits if s in old_splits and old_splits[s] != new_splits[s]]
        if changed:
            raise ValueError(
                f"{out} holds shards made with other inputs or settings ({', '.join(changed)} differ); "
                "choose another --out or delete it"
            )
        # Keep splits sharded by earlier runs that this run does not touch.
        manifest = {**manifest, "splits": {**old["splits"], **manifest["splits"]}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, manifest)
