"""The shard format has one owner (`fsar.pipeline.shard.format`): what its writer writes, its
one reader gives back, a plain tar reader and webdataset agree, and every consumer refuses the
same malformed tars with the same error."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from fsar.pipeline.shard.format import ShardReadError, iter_sample_data, iter_samples, read_tar_samples, sample_members, tar_writer


def write_shard(path, samples):
    with tar_writer(path) as tar:
        for key, jpegs, meta, cls in samples:
            tar.add(sample_members(key, jpegs, meta, cls))
    return path


SAMPLES = [("a_0_1234abcd", [b"\xff\xd8one", b"\xff\xd8two"], {"id": "a/0"}, 0), ("b_0_5678abcd", [b"\xff\xd8three", b"\xff\xd8four"], {"id": "b/0"}, 3)]


def test_what_the_writer_writes_every_reader_reads_back(tmp_path):
    path = write_shard(tmp_path / "s.tar", SAMPLES)
    assert [(k, m, j, c) for k, m, j, c in iter_sample_data(path)] == [(k, m, j, c) for k, j, m, c in SAMPLES]
    with tarfile.open(path) as tar:  # a plain reader: the same members, regular files, mode 0o444, mtime 0
        members = tar.getmembers()
        assert [m.name for m in members][:4] == ["a_0_1234abcd.000.jpg", "a_0_1234abcd.001.jpg", "a_0_1234abcd.json", "a_0_1234abcd.cls"]
        assert all(m.isfile() and m.mode == 0o444 and m.mtime == 0 for m in members)
        assert tar.extractfile("b_0_5678abcd.cls").read() == b"3"
    wds = pytest.importorskip("webdataset")
    got = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in got] == [k for k, *_ in SAMPLES] and json.loads(got[1]["json"]) == {"id": "b/0"}
    assert read_tar_samples(path)["b_0_5678abcd"][-1] == ("b_0_5678abcd.cls", b"3")
    assert [s.frames for s in iter_samples(path)][0][1][1] == len(b"\xff\xd8two")


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    write_shard(path, SAMPLES[:1])
    raw = path.read_bytes()
    with tarfile.open(path, "w") as tar:  # the good sample, then the bad member
        with tarfile.open(fileobj=io.BytesIO(raw)) as good:
            for m in good.getmembers():
                tar.addfile(m, good.extractfile(m))
        tar.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "no-cls"])
def test_a_malformed_tar_is_refused_by_every_consumer(tmp_path, kind):
    from fsar.pipeline.views import build_view
    from fsar.train.data import ShardSource

    path = tmp_path / "train" / "shard-000000.tar"
    path.parent.mkdir()
    if kind == "no-cls":
        with tar_writer(path) as tar:
            tar.add([m for m in sample_members(*SAMPLES[0][:1], SAMPLES[0][1], SAMPLES[0][2], 0) if not m[0].endswith(".cls")])
    else:
        info = tarfile.TarInfo({"dotdot": "../evil.jpg", "absolute": "/tmp/evil.jpg", "symlink": "c_0.000.jpg"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 3
        _tar_with(path, info, b"bad" if kind != "symlink" else b"")
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": {"shards": [path.name], "classes": [{"index": 0, "name": "a"}]}}}))
    readers = {
        "embed": lambda: list(iter_sample_data(path)),
        "shard resume": lambda: read_tar_samples(path),
        "finetune/peft": lambda: ShardSource(tmp_path, "train", 2, build_view("clip-fsar", None)),
    }
    for name, read in readers.items():
        with pytest.raises(ShardReadError, match=str(path)):
            read()
    assert not (tmp_path.parent / "evil.jpg").exists()


def _shard_folder(tmp_path, samples, classes=1):
    path = tmp_path / "train" / "shard-000000.tar"
    path.parent.mkdir(parents=True)
    write_shard(path, samples)
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {"train": {"shards": [path.name], "classes": [{"index": i, "name": f"c{i}"} for i in range(classes)]}}}))
    return path


def _jpeg() -> bytes:
    import numpy as np
    import simplejpeg

    return simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8), colorspace="RGB")


@pytest.mark.parametrize("kind,says", [
    ("label outside the split", "has class 3, outside the split's 2 classes"),
    ("missing frames", r"holds 1\): re-run"),
    ("undecodable jpeg", "holds a frame that is not a readable JPEG"),
])
def test_shards_read_for_finetune_and_peft_are_checked(tmp_path, kind, says):
    from fsar.pipeline.views import build_view
    from fsar.train.data import ShardSource

    good = [_jpeg(), _jpeg()]
    samples = {
        "label outside the split": [("a", good, {}, 0), ("b", good, {}, 3)],
        "missing frames": [("a", good, {}, 0), ("b", good[:1], {}, 1)],
        "undecodable jpeg": [("a", good, {}, 0), ("b", [good[0], b"\xff\xd8 not a jpeg"], {}, 1)],
    }[kind]
    path = _shard_folder(tmp_path, samples, classes=2)
    with pytest.raises(ShardReadError, match=says) as e:
        source = ShardSource(tmp_path, "train", 2, build_view("clip-fsar", None))
        source.batch(np.arange(len(source)))
    assert str(tmp_path) in str(e.value) and "re-run `fsar-data shard`" in str(e.value)
    assert isinstance(e.value, ValueError)  # a user error: exit 2 from any command
