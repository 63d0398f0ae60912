"""The shard format's one owner: how a sample is laid out in a shard tar, the writer, and the
one sample reader that every consumer uses (the embed stage, finetune and peft training, the
shard stage's resume).

A shard is a WebDataset tar. Each sample is consecutive members named `<key>.<field>`:
`<key>.000.jpg` ... (the sampled frames, in frame order), `<key>.json` (what the shard stage
recorded about the video) and `<key>.cls` (the class index in its split, ASCII). Keys are the
class-qualified video ids made safe (`plan.sample_key`: letters, digits, `_` and `-`), so a
member name never holds a `/` or a second sample's key. Members are regular files of mode
0o444 and mtime 0, in PAX format, as `tarfile` writes them.
"""

from __future__ import annotations

import json
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fsar.pipeline.atomic import atomic_path


class ShardReadError(ValueError):
    """A shard that cannot be read: a corrupt or truncated tar, a member that is not a sample's
    regular file (a link, a path), or a sample without its .json or .cls member."""


class UnsafeMember(ShardReadError):
    """A tar member that is a link, a folder or a path: no shard of ours holds one, so the tar was
    made elsewhere, perhaps to reach outside its folder. Stages refuse the folder (exit 2) instead
    of counting the tar as one failed shard."""


def sample_members(key: str, jpegs: list[bytes], meta: dict, class_index: int) -> list[tuple[str, bytes]]:
    """The (name, bytes) members of one sample, in the order they are written."""
    members = [(f"{key}.{j:03d}.jpg", b) for j, b in enumerate(jpegs)]
    members.append((f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
    members.append((f"{key}.cls", str(class_index).encode("ascii")))
    return members


_BLOCK = tarfile.BLOCKSIZE  # 512


def _tar_header(name: str, size: int) -> bytes:
    """The 512-byte header tarfile writes for a regular file of mode 0o444, mtime 0, owner 0.

    Built by hand because tarfile's header code is about half the cost of writing a
    shard's small members; names that need a PAX record (non-ASCII or over 100 bytes) go
    through tarfile itself.
    """
    raw = name.encode("ascii", "strict") if name.isascii() else b""
    if not raw or len(raw) > 100 or size > 0o77777777777:  # a PAX record, or no ustar header holds it
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o444
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    h = bytearray(_BLOCK)
    h[0 : len(raw)] = raw
    h[100:148] = b"0000444\x000000000\x000000000\x00%011o\x0000000000000\x00" % size  # mode uid gid size mtime
    h[148:156] = b" " * 8  # the checksum counts its own field as spaces
    h[156:157] = tarfile.REGTYPE
    h[257:265] = tarfile.POSIX_MAGIC
    h[148:155] = b"%06o\x00" % sum(h)
    return bytes(h)


_ZEROS = bytes(_BLOCK)
_WRITE_BUFFER = 1 << 20  # few large writes instead of three small ones per member


class TarWriter:
    """Appends samples to a binary file as tar members, in the bytes `tarfile` writes in PAX
    format (members of mode 0o444 and mtime 0); `finish()` adds the two zero blocks and pads
    to tarfile's 10240-byte record. Each sample goes to the file as it comes, so a shard's
    frames are never all held in memory."""

    def __init__(self, f) -> None:
        self.f = f
        self.written = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        for name, data in members:
            header = _tar_header(name, len(data))
            pad = -len(data) % _BLOCK
            self.f.write(header)
            self.f.write(data)
            self.f.write(_ZEROS[:pad])
            self.written += len(header) + len(data) + pad

    def finish(self) -> None:
        end = self.written + 2 * _BLOCK
        self.f.write(bytes(2 * _BLOCK + -end % tarfile.RECORDSIZE))


@contextmanager
def tar_writer(path: Path) -> Iterator[TarWriter]:
    """A `TarWriter` on `path`, written atomically: the tar appears, finished, when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=_WRITE_BUFFER) as f:
        tar = TarWriter(f)
        yield tar
        tar.finish()


@dataclass
class SampleIndex:
    """Where one sample's members lie in its tar: {field: (offset, size)} in file order
    (fields: `000.jpg`, ..., `json`, `cls`)."""

    key: str
    fields: dict[str, tuple[int, int]]

    @property
    def frames(self) -> list[tuple[int, int]]:
        """(offset, size) of each frame JPEG, in frame order."""
        return [self.fields[f] for f in sorted(f for f in self.fields if f.endswith(".jpg"))]


def iter_samples(path: Path) -> Iterator[SampleIndex]:
    """Index every sample of the shard tar at `path` in one pass over its headers, reading no data.

    Raises:
        UnsafeMember: a member is a link or a folder, or has a path in its name.
        ShardReadError: the tar cannot be read, or a sample lacks its .cls member.
    """
    try:
        with tarfile.open(path) as tar:
            fields: dict[str, tuple[int, int]] = {}
            key = None
            for m in tar:
                if not m.isfile() or "/" in m.name or "\\" in m.name or m.name.startswith("."):
                    raise UnsafeMember(f"{path}: member {m.name!r} is not a sample's file (a link, a folder or a path): not a shard of fsar-data shard; "
                                       "refused: remove the tar and re-run `fsar-data shard`")
                k, _, field = m.name.partition(".")
                if key is not None and k != key:
                    yield _checked(path, key, fields)
                    fields = {}
                key = k
                fields[field] = (m.offset_data, m.size)
            if key is not None:
                yield _checked(path, key, fields)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShardReadError(f"{path}: {type(e).__name__}: {e}") from None


def _checked(path: Path, key: str, fields: dict) -> SampleIndex:
    if "cls" not in fields:
        raise ShardReadError(f"{path}: sample {key!r} has no .cls member")
    return SampleIndex(key, fields)


def read_member(f, where: tuple[int, int]) -> bytes:
    """The bytes of a member at (offset, size) of an open tar file `f`."""
    f.seek(where[0])
    data = f.read(where[1])
    if len(data) != where[1]:
        raise ShardReadError(f"{getattr(f, 'name', 'shard')}: truncated member at byte {where[0]}")
    return data


def iter_sample_data(path: Path) -> Iterator[tuple[str, dict, list[bytes], int]]:
    """(key, json metadata, [JPEG bytes in frame order], class index) for each sample of a shard."""
    with open(path, "rb") as f:
        for s in iter_samples(path):
            if "json" not in s.fields:
                raise ShardReadError(f"{path}: sample {s.key!r} lacks its .json or .cls member")
            try:
                meta = json.loads(read_member(f, s.fields["json"]))
                cls = int(read_member(f, s.fields["cls"]))
            except ValueError as e:
                raise ShardReadError(f"{path}: sample {s.key!r}: unreadable .json or .cls member ({e})") from None
            yield s.key, meta, [read_member(f, w) for w in s.frames], cls


def read_tar_samples(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Members (name, bytes) of a shard grouped by sample key, in file order."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    with open(path, "rb") as f:
        for s in iter_samples(path):
            out[s.key] = [(f"{s.key}.{field}", read_member(f, w)) for field, w in s.fields.items()]
    return out
