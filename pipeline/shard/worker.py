"""The shard worker: decode, sample, resize and JPEG-encode one shard's videos into a WebDataset tar.

`ShardWorker.setup()` prepares the decoder once per worker; `process(task)` handles one
shard and never raises for a bad video: each video ends as ok, or failed with a reason.
The tar is written under a temporary name and renamed; the stats file is written last,
so its presence marks a finished shard. While a video is decoded its place in the shard
is kept in a marker file, so that whoever sees the worker's process die (a crash in a
decoder's native code, the kernel's OOM killer) can tell which video it died on.
"""

from __future__ import annotations

import json
import os
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.sampling import segment_middles
from pipeline.shard.config import ShardConfig
from pipeline.shard.plan import ShardTask, VideoEntry
from pipeline.video.decode import Planes, make_decoder, read_sampled, scaled_size
from pipeline.video.probe import VideoError


def encode_jpeg(frame: np.ndarray | Planes, quality: int) -> bytes:
    """A baseline 4:2:0 JPEG of an RGB frame (H, W, 3), or of `Planes` without a colour conversion."""
    import simplejpeg

    if isinstance(frame, Planes):
        return simplejpeg.encode_jpeg_yuv_planes(_even_luma(frame.y), frame.u, frame.v, quality=quality)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB", colorsubsampling="420")


def _even_luma(y: np.ndarray) -> np.ndarray:
    """`y` (H, W) for TurboJPEG, which reads 4:2:0 luma in whole 2x2 blocks: with an odd W or H
    it reads one column or row beyond the view, whatever lies there (the next row, a frame's
    padding), and the JPEG's edge blocks change with it. A copy then carries the edge pixels
    repeated there, as libjpeg extends edges itself; even sizes are passed as they are."""
    h, w = y.shape
    if h % 2 == 0 and w % 2 == 0:
        return y
    buf = np.empty((h + h % 2, w + w % 2), np.uint8)
    buf[:h, :w] = y
    if w % 2:
        buf[:h, w] = y[:, -1]
    if h % 2:
        buf[h] = buf[h - 1]
    return buf[:h, :w]


def marker_path(task: ShardTask, out: Path) -> Path:
    """The file naming the video `task`'s worker is decoding (a partial file, so a new run removes it)."""
    return task.stats_path(out).with_name(f".{task.name()}.current.partial")


def read_marker(task: ShardTask, out: Path) -> int | None:
    """The position in `task.entries` of the video its worker was decoding when it stopped, if any."""
    try:
        text = marker_path(task, out).read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) < len(task.entries) else None


class _Marker:
    """Keeps a shard's marker file naming the video being decoded: one fixed-width write per
    change (a few microseconds), no flush needed, since the file must survive only the
    process, not the machine."""

    _IDLE = b"-" * 9 + b"\n"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self.fd, self._IDLE)

    def on(self, position: int) -> None:
        os.pwrite(self.fd, b"%09d\n" % position, 0)

    def off(self) -> None:
        os.pwrite(self.fd, self._IDLE, 0)

    def close(self) -> None:
        """Remove the marker: the shard ended, finished or by an exception (not by a crash)."""
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def _failed(entry: VideoEntry, reason: str = "", detail: str = "") -> dict:
    """A video's status record, as failed (a video that succeeds updates it to ok)."""
    return {"id": entry.id, "label": entry.label, "key": entry.key, "status": "failed", "reason": reason, "detail": detail}


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


def read_tar_samples(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Members of a shard grouped by sample key, in file order."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key = m.name.split(".", 1)[0]
            out.setdefault(key, []).append((m.name, tar.extractfile(m).read()))
    return out


class ShardWorker:
    """Turns one shard's videos into a WebDataset tar plus a stats file."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.decoder = None

    def setup(self) -> None:
        """Create the decoder (once per worker: DALI builds a pipeline here)."""
        self.decoder = make_decoder(self.config.decoder)
        self.decoder.setup()

    def process(self, task: ShardTask, retry_failed: bool = False, crashed: dict[str, dict] | None = None) -> dict:
        """Write `task`'s shard; returns its stats (also written to the stats file).

        Args:
            task: the shard.
            retry_failed: copy the videos that succeeded in the existing shard over
                unchanged and decode only the failed ones again.
            crashed: videos (by key) that took a worker's process down, with the reason and
                detail to record: they are recorded as failed and not decoded again.
        """
        if self.decoder is None:
            self.setup()
        out = self.config.out
        tar_path, stats_path = task.tar_path(out), task.stats_path(out)
        tar_path.parent.mkdir(parents=True, exist_ok=True)
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        reuse: dict[str, list[tuple[str, bytes]]] = {}
        old_status: dict[str, dict] = {}
        if retry_failed and stats_path.exists() and tar_path.exists():
            reuse = read_tar_samples(tar_path)
            old_status = {r["key"]: r for r in json.loads(stats_path.read_text(encoding="utf-8"))["videos"]}
        crashed = crashed or {}
        records = []
        marker = _Marker(marker_path(task, out))
        try:
            with tar_writer(tar_path) as tar:
                for position, entry in enumerate(task.entries):
                    if entry.key in reuse and old_status.get(entry.key, {}).get("status") == "ok":
                        tar.add(reuse[entry.key])
                        records.append(old_status[entry.key])
                        continue
                    if entry.key in crashed:
                        records.append(_failed(entry, **crashed[entry.key]))
                        continue
                    marker.on(position)
                    members, record = self._video(entry, task)
                    marker.off()
                    records.append(record)
                    if members:
                        tar.add(members)
        finally:
            marker.close()
        ok = sum(r["status"] == "ok" for r in records)
        stats = {
            "split": task.split,
            "shard": task.name() + ".tar",
            "ok": ok,
            "failed": len(records) - ok,
            "frames": ok * task.num_frames,
            "bytes": tar_path.stat().st_size,
            "videos": records,
        }
        write_json_atomic(stats_path, stats)  # last: marks the shard finished
        return stats

    def _video(self, entry: VideoEntry, task: ShardTask) -> tuple[list[tuple[str, bytes]], dict]:
        record = _failed(entry)
        try:
            if entry.path is None:
                raise VideoError("missing", f"no file for {entry.label}/{entry.id} under the root (looked for <class>/<id>.<ext>, then a file of that id outside other classes' folders)")
            info, indices, frames, backend, fallback = read_sampled(
                self.decoder,
                entry.path,
                lambda n: segment_middles(n, task.num_frames),
                lambda w, h: scaled_size(w, h, self.config.short_side),
                planar=True,  # straight to JPEG: no RGB round trip
            )
            flags = ["decoder_fallback"] if fallback else []  # why is kept in the status file's detail
            if info.num_frames < self.config.frames:
                flags.append("short")
            if info.num_frames < task.num_frames:
                flags.append("repeated_frames")
            if info.truncated:
                flags.append("truncated")
            if info.damaged:
                flags.append("damaged")
            jpegs = [encode_jpeg(f, self.config.jpeg_quality) for f in frames]
        except VideoError as e:
            record.update(reason=e.reason, detail=e.detail)
            return [], record
        except Exception as e:  # a bad video must never take the shard down
            record.update(reason=f"error: {type(e).__name__}", detail=f"{entry.path}: {e}"[:500])
            return [], record
        meta = {
            "id": entry.id,
            "key": entry.key,
            "class_index": entry.class_index,
            "class_name": entry.class_name,
            "label": entry.label,
            "split": task.split,
            "source": os.path.relpath(entry.path, self.config.root),
            "frame_indices": [int(i) for i in indices],
            "timestamps": [round(info.timestamp(i), 6) for i in indices],
            "fps": round(info.fps, 6),
            "num_frames": info.num_frames,
            "width": info.width,
            "height": info.height,
            "sample_aspect_ratio": list(info.sample_aspect_ratio) if info.sample_aspect_ratio else None,
            "rotation": info.rotation,
            "mirrored": info.mirrored,
            "codec": info.codec,
            "pix_fmt": info.pix_fmt,
            "decoder": backend,
            "flags": flags,
        }
        members = [(f"{entry.key}.{j:03d}.jpg", b) for j, b in enumerate(jpegs)]
        members.append((f"{entry.key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
        members.append((f"{entry.key}.cls", str(entry.class_index).encode("ascii")))
        record.update(status="ok", decoder=meta["decoder"], flags=flags, num_frames=info.num_frames, detail=fallback)
        return members, record
