"""Split lists, downloads (from local file URLs), SSv2 names, video lookup and safe keys."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from fsar.pipeline.datasets import DATASETS, SPLITS, Lookup, VideoIndex, download_splits, find_split_dir, read_split, ssv2_class_names
from fsar.pipeline.shard.plan import safe_key, sample_key

COUNTS = {  # videos per split, as published
    "ssv2": (67013, 1926, 2857),
    "ssv2-small": (6400, 1200, 2400),
    "kinetics100": (6400, 1200, 2400),
    "ucf101": (9154, 1421, 2745),
    "hmdb51": (4280, 1194, 1292),
}
CLASSES = {"ssv2": (64, 12, 24), "ssv2-small": (64, 12, 24), "kinetics100": (64, 12, 24), "ucf101": (70, 10, 21), "hmdb51": (31, 10, 10)}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_standard_splits_from_a_split_collection(shared_data, tmp_path, name):
    spec = DATASETS[name]
    d = find_split_dir(spec, shared_data / "splits", tmp_path)
    assert d.name == spec.folder
    lists = {s: read_split(d / f"{s}.txt") for s in SPLITS}
    assert tuple(len(lists[s]) for s in SPLITS) == COUNTS[name]
    classes = {s: {c for c, _ in lists[s]} for s in SPLITS}
    assert tuple(len(classes[s]) for s in SPLITS) == CLASSES[name]
    assert not (classes["train"] & classes["val"] or classes["train"] & classes["test"] or classes["val"] & classes["test"])


def test_download_fetches_once_into_the_cache(shared_data, tmp_path):
    raw = shared_data / "splits" / "raw" / "trx" / "splits" / "hmdb_ARN"
    src = tmp_path / "src"
    src.mkdir()
    for s in SPLITS:
        (src / f"{s}list03.txt").write_bytes((raw / f"{s}list03.txt").read_bytes())
    spec = replace(DATASETS["hmdb51"], sources={s: (src / f"{s}list03.txt").as_uri() for s in SPLITS})
    d = download_splits(spec, tmp_path / "cache")
    assert d == tmp_path / "cache" / "splits" / "hmdb51"
    assert len(read_split(d / "test.txt")) == 1292
    for f in src.iterdir():  # a second call must not need the source
        f.unlink()
    assert download_splits(spec, tmp_path / "cache") == d


def test_failed_download_says_how_to_supply_the_lists(tmp_path):
    spec = replace(DATASETS["ucf101"], sources={"train": (tmp_path / "nowhere.txt").as_uri()})
    with pytest.raises(RuntimeError, match="pass --splits DIR"):
        download_splits(spec, tmp_path / "cache")


def test_public_sources_cover_every_benchmark():
    for name in COUNTS:
        assert set(DATASETS[name].sources) == set(SPLITS)
        assert all(u.startswith("https://") for u in DATASETS[name].sources.values())


def test_ssv2_names_come_from_the_label_files(tmp_path):
    labels = tmp_path / "root" / "labels"
    labels.mkdir(parents=True)
    (labels / "train.json").write_text(json.dumps([{"id": "78687", "label": "x", "template": "Pushing [something] from left to right", "placeholders": []}]))
    (labels / "validation.json").write_text(json.dumps([{"id": "195025", "label": "y", "template": "Dropping [something] onto [something]", "placeholders": []}]))
    names = ssv2_class_names(tmp_path / "root", {"train": [("train8", "78687")], "test": [("test18", "195025"), ("test3", "1")]})
    assert names == {"train8": "Pushing something from left to right", "test18": "Dropping something onto something"}
    assert ssv2_class_names(tmp_path / "empty", {"train": [("train8", "78687")]}) == {}


def test_videos_are_found_by_id_in_any_subfolder_only_where_the_id_is_unique(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "v1.webm").write_bytes(b"x")
    (tmp_path / "v2.mp4").write_bytes(b"x")
    (tmp_path / "a" / "v2.avi").write_bytes(b"x")  # the same id twice
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "clip.v3.mkv").write_bytes(b"x")
    index = VideoIndex(tmp_path)
    assert index.find("c", "v1") == Lookup(str(tmp_path / "a" / "b" / "v1.webm"), "id")
    assert index.find("c", "clip.v3").path == str(tmp_path / "clip.v3.mkv")
    assert index.find("c", "clip.v3.mkv").path == str(tmp_path / "clip.v3.mkv")  # the id may carry its extension
    both = index.find("c", "v2")
    assert both.how == "ambiguous" and both.path is None
    assert set(both.candidates) == {str(tmp_path / "v2.mp4"), str(tmp_path / "a" / "v2.avi")}
    assert index.find("c", "notes").how == "missing"


def test_a_listed_class_and_id_is_first_a_path_under_the_root(tmp_path):
    """ROOT/<class>/<id>.<ext> wins over the same id elsewhere; then a folder named for the
    class deeper down; a file in another listed class's folder is never taken by its id."""
    for rel in ("a/0.mp4", "b/0.webm", "b/1.mp4", "train/c/0.avi", "val/d/0.avi", "val/d/2.mp4", "flat/5.mkv", "e/7.mp4", "e/7.webm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    index = VideoIndex(tmp_path)
    classes = frozenset("abcde")
    assert index.find("a", "0", classes) == Lookup(str(tmp_path / "a" / "0.mp4"), "path")
    assert index.find("b", "0", classes) == Lookup(str(tmp_path / "b" / "0.webm"), "path")
    assert index.find("a", "0.mp4", classes) == Lookup(str(tmp_path / "a" / "0.mp4"), "path")  # the id with its extension
    assert index.find("c", "0", classes) == Lookup(str(tmp_path / "train" / "c" / "0.avi"), "class folder")
    assert index.find("x", "5", classes) == Lookup(str(tmp_path / "flat" / "5.mkv"), "id")
    assert index.find("a", "1", classes).how == "missing"  # b/1.mp4 is class b's video, not a's
    assert index.find("a", "2", classes).how == "missing"  # nor is val/d/2.mp4
    assert index.find("a", "2").path == str(tmp_path / "val" / "d" / "2.mp4")  # where d is no listed class, it may be
    two = index.find("e", "7", classes)  # e/7.mp4 and e/7.webm: which one is the video?
    assert two.how == "ambiguous" and set(two.candidates) == {str(tmp_path / "e" / "7.mp4"), str(tmp_path / "e" / "7.webm")}
    assert index.find("x", "0", classes).how == "ambiguous"  # four files named 0: never a guess
    assert len(index.find("x", "0", classes).candidates) == 4


def test_malformed_split_line_names_file_and_line(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("a/1\nno-slash-here\n")
    with pytest.raises(ValueError, match=r"train.txt:2: expected '<class name>/<video id>'"):
        read_split(p)


def test_safe_keys_have_no_dots_and_stay_distinct():
    ids = ["12345", "clip.v2", "clip_v2", "clip v2", "клип-ü", "a.b.c", "-VtLx-mcPds_000012_000022"]
    keys = [safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert all("." not in k and " " not in k and k.isascii() for k in keys)
    assert safe_key("12345") == "12345" and safe_key("-VtLx-mcPds_000012_000022") == "-VtLx-mcPds_000012_000022"
    assert safe_key("clip.v2") == safe_key("clip.v2")  # deterministic


def test_sample_keys_are_class_qualified():
    keys = [sample_key(c, i) for c, i in [("a", "0"), ("b", "0"), ("a_0", "x"), ("a", "0_x"), ("air drumming", "-VtLx-mcPds_000012_000022")]]
    assert len(set(keys)) == len(keys)  # a/0 and b/0 stay two samples
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", k) for k in keys)
    assert sample_key("a", "0") == sample_key("a", "0") and sample_key("a", "0").startswith("a_0_")


def test_split_list_drops_a_byte_order_mark(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("\ufeffApplyEyeMakeup/v_1\r\nBiking/v_2\r\n", encoding="utf-8")  # as Notepad saves it
    assert read_split(p) == [("ApplyEyeMakeup", "v_1"), ("Biking", "v_2")]


@pytest.mark.parametrize(
    "line,message",
    [
        ("../videos/a/1", r"'\.\./videos/a/1' has a '\.' or '\.\.' component"),
        ("a/../../1", r"'a/\.\./\.\./1' has a '\.' or '\.\.' component"),
        ("/data/ucf/a/1", r"'/data/ucf/a/1' is an absolute path"),
        ("C:\\data\\a/1", r".* is an absolute path"),
    ],
)
def test_split_list_refuses_paths_outside_the_root_with_the_line(tmp_path, line, message):
    p = tmp_path / "val.txt"
    p.write_text(f"a/0\n\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"val.txt:3: {message}"):
        read_split(p)


def test_a_line_listed_twice_names_both_lines(tmp_path):
    p = tmp_path / "test.txt"
    p.write_text("a/0\nb/0\na/1\n a/0 \n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"test.txt:4: 'a/0' is listed again \(first at {re.escape(str(p))}:1\); .*delete one"):
        read_split(p)
