"""Shards label every video by the class its split list gives it, found where the list says.

Each tiny video here is one flat grey level, so a sample's frames tell which file it was
cut from, whatever the shard's own json says.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from fsar.cli.data import app
from corpus import write_lists
from fsar.pipeline.datasets import DATASETS
from fsar.pipeline.shard.config import ShardConfig
from fsar.pipeline.shard.plan import plan
from fsar.pipeline.shard.run import run_shard_stage
from fsar.pipeline.video.encode import write_video

CLASSES = ("cat", "dog", "eel")
PER_CLASS = 4
STEP = 15  # grey levels of two videos this far apart survive H.264 and JPEG apart


def flat(level: int) -> np.ndarray:
    return np.full((3, 32, 32, 3), level, np.uint8)  # (T, H, W, 3)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """ROOT/<class>/<n>.mp4, numbered from 0 in each class as a new user lays out their
    clips; returns the root and {grey level: "<class>/<n>.mp4"}."""
    root = tmp_path_factory.mktemp("numbered")
    levels = {}
    for c, cls in enumerate(CLASSES):
        for n in range(PER_CLASS):
            level = 20 + STEP * (c * PER_CLASS + n)
            (root / cls).mkdir(exist_ok=True)
            write_video(root / cls / f"{n}.mp4", flat(level), 12, "h264")
            levels[level] = f"{cls}/{n}.mp4"
    return root, levels


def read_back(out: Path, split: str) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in (out / split).glob("shard-*.tar")), shardshuffle=False))


def source_of(sample: dict, levels: dict[int, str]) -> str:
    """The file a sample's first frame was cut from, by its grey level."""
    level = np.asarray(Image.open(io.BytesIO(sample["000.jpg"]))).mean()
    nearest = min(levels, key=lambda lv: abs(lv - level))
    assert abs(nearest - level) < STEP / 3, (level, nearest)
    return levels[nearest]


def shard(root: Path, out: Path, **kw) -> dict:
    config = ShardConfig(**{"dataset": "folder", "root": root, "out": out, "workers": 1, "frames": 2, "train_frames": 4, "short_side": 0, **kw})
    return run_shard_stage(config)


def test_per_class_numbering_labels_every_video_by_its_folder(numbered, tmp_path):
    """`cat/0`, `dog/0` and `eel/0` are three videos: each sample holds the frames of the file
    in its class's folder, and its class is that folder's, in train and test alike."""
    root, levels = numbered
    lists = {"train": [(c, str(n)) for c in CLASSES[:2] for n in range(PER_CLASS)], "test": [(CLASSES[2], str(n)) for n in range(PER_CLASS)]}
    write_lists(tmp_path, lists)
    out = tmp_path / "out"
    summary = shard(root, out, splits_dir=tmp_path / "splits", splits=("train", "test"))
    assert summary["failed"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for split, listed in lists.items():
        names = {c["index"]: c["name"] for c in manifest["splits"][split]["classes"]}
        samples = read_back(out, split)
        seen = []
        for s in samples:
            meta = json.loads(s["json"])
            folder, _, name = source_of(s, levels).partition("/")
            assert names[int(s["cls"])] == meta["label"] == folder, (split, meta["label"], meta["id"], folder, name)
            assert f"{meta['id']}.mp4" == name and meta["source"] == f"{folder}/{name}"
            seen.append((folder, meta["id"]))
        assert sorted(seen) == sorted(listed) and len({s["__key__"] for s in samples}) == len(listed)
        assert manifest["splits"][split]["found_by"] == {"path": len(listed)}


def test_a_0_and_b_0_stay_two_samples_for_webdataset(numbered, tmp_path):
    """Lines `cat/0` and `dog/0` side by side: WebDataset groups a tar's members by key, so
    two samples keyed `0` would be read as one (or refused)."""
    root, levels = numbered
    write_lists(tmp_path, {"test": [("cat", "0"), ("dog", "0"), ("eel", "0"), ("eel", "1")]})
    out = tmp_path / "out"
    shard(root, out, splits_dir=tmp_path / "splits", splits=("test",))
    samples = read_back(out, "test")
    assert [source_of(s, levels) for s in samples] == ["cat/0.mp4", "dog/0.mp4", "eel/0.mp4", "eel/1.mp4"]
    assert len({s["__key__"] for s in samples}) == 4 and not any("." in s["__key__"] for s in samples)
    for s in samples:
        assert sorted(k for k in s if k.endswith(".jpg")) == ["000.jpg", "001.jpg"]  # none merged with another's frames


def test_an_ambiguous_id_stops_the_command_with_examples_and_the_remedy(tmp_path):
    """Two files named 0 and no `<class>/0` path to choose: exit 2 before anything is written."""
    root = tmp_path / "root"
    for rel in ("clips/part1/0.mp4", "clips/part2/0.mp4", "clips/part1/1.mp4", "clips/part2/1.webm", "clips/part1/2.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")  # never decoded: the plan stops first
    write_lists(root, {"train": [("cat", "0"), ("cat", "1"), ("cat", "2")], "val": [("dog", "0")], "test": [("eel", "2")]})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["shard", "folder", "--root", str(root), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"error: 3 listed videos match several files under {root} and no <class>/<id> path picks one: " in said
    assert "train.txt cat/0 -> clips/part1/0.mp4, clips/part2/0.mp4; train.txt cat/1 -> clips/part1/1.mp4, clips/part2/1.webm; val.txt dog/0 ->" in said
    assert "put each video at ROOT/<class>/<id>.<ext> (a folder per class)" in said and "Traceback" not in result.output
    assert not out.exists()


def test_one_file_under_two_classes_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "78687.webm").write_bytes(b"x")
    write_lists(root, {"test": [("test3", "78687"), ("test4", "78687")]})
    with pytest.raises(ValueError, match=r"test.txt: one video file listed twice \(test3/78687 and test4/78687 are both .*78687.webm\)"):
        plan(ShardConfig(dataset="folder", root=root, out=tmp_path / "out", splits=("test",), workers=1))


def test_a_video_in_another_class_folder_is_not_taken_by_its_id(tmp_path):
    """With `--split test`, test's `fox/5` is missing, not train's `cat/5.mp4`: an id found
    only in another class's folder (of any list beside it) is that class's video."""
    root = tmp_path / "root"
    for rel in ("cat/5.mp4", "loose/6.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    write_lists(root, {"train": [("cat", "5")], "test": [("fox", "5"), ("fox", "6")]})
    manifest, tasks = plan(ShardConfig(dataset="folder", root=root, out=tmp_path / "out", splits=("test",), workers=1))
    assert [(e.label, e.id, e.path) for e in tasks[0].entries] == [("fox", "5", None), ("fox", "6", str(root / "loose" / "6.mp4"))]
    assert manifest["splits"]["test"]["missing"] == 1 and manifest["splits"]["test"]["found_by"] == {"id": 1}


def test_two_entries_with_one_key_are_refused_naming_both(numbered, tmp_path, monkeypatch):
    import fsar.pipeline.shard.plan as P

    monkeypatch.setattr(P, "sample_key", lambda label, vid: P.safe_key(vid))  # keys from the id alone
    root, _ = numbered
    write_lists(tmp_path, {"test": [("cat", "1"), ("dog", "1")]})
    with pytest.raises(ValueError, match=r"test.txt: cat/1 and dog/1 map to one sample key '1'; rename one of the two"):
        plan(ShardConfig(dataset="folder", root=root, splits_dir=tmp_path / "splits", splits=("test",), out=tmp_path / "out", workers=1))


LAYOUTS = {  # each benchmark's files as its archive unpacks them, and how its lines are found
    "ucf101": (lambda cls, vid: f"UCF-101/{cls}/{vid}.avi", "class folder"),
    "hmdb51": (lambda cls, vid: f"{cls}/{vid}.avi", "path"),
    "kinetics100": (lambda cls, vid: f"test/{cls}/{vid}.mp4", "class folder"),
    "ssv2": (lambda cls, vid: f"20bn-something-something-v2/{vid}.webm", "id"),
    "ssv2-small": (lambda cls, vid: f"20bn-something-something-v2/{vid}.webm", "id"),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_benchmark_finds_its_listed_videos_where_its_archive_puts_them(shared_data, tmp_path, name):
    """Lines of the published test lists (three classes, two videos each) against files laid out
    as each dataset ships, SSv2's anonymous labels and flat folder of numbered ids included."""
    spec = DATASETS[name]
    lines = (shared_data / "splits" / spec.folder / "test.txt").read_text().splitlines()
    picked: dict[str, list[str]] = {}
    for line in lines:
        cls, _, vid = line.rpartition("/")
        if cls in picked or len(picked) < 3:
            vids = picked.setdefault(cls, [])
            if len(vids) < 2:
                vids.append(vid)
    assert len(picked) == 3 and all(len(v) == 2 for v in picked.values())
    where, how = LAYOUTS[name]
    root = tmp_path / "root"
    for cls, vids in picked.items():
        for vid in vids:
            (root / where(cls, vid)).parent.mkdir(parents=True, exist_ok=True)
            (root / where(cls, vid)).write_bytes(b"x")
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "unlisted.mp4").write_bytes(b"x")
    lists = tmp_path / "lists" / spec.folder
    lists.mkdir(parents=True)
    (lists / "test.txt").write_text("".join(f"{c}/{v}\n" for c, vids in picked.items() for v in vids), encoding="utf-8")
    manifest, tasks = plan(ShardConfig(dataset=name, root=root, splits_dir=tmp_path / "lists", splits=("test",), out=tmp_path / "out", workers=1))
    entries = [e for t in tasks for e in t.entries]
    assert [(e.label, e.id) for e in entries] == [(c, v) for c, vids in picked.items() for v in vids]
    assert all(e.path == str(root / where(e.label, e.id)) for e in entries)
    assert manifest["splits"]["test"]["found_by"] == {how: 6} and manifest["splits"]["test"]["missing"] == 0


def test_shards_keyed_by_id_alone_are_not_mixed_with_class_keyed_ones(numbered, tmp_path):
    """An OUT written before keys were class-qualified (its manifest has no `sample_keys`),
    perhaps with mislabelled videos, is refused rather than completed."""
    root, _ = numbered
    write_lists(tmp_path, {"test": [("cat", "0"), ("dog", "0")]})
    out = tmp_path / "out"
    shard(root, out, splits_dir=tmp_path / "splits", splits=("test",))
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["sample_keys"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"holds shards made with other inputs or settings \(sample_keys differ\); choose another --out or delete it"):
        shard(root, out, splits_dir=tmp_path / "splits", splits=("test",))
