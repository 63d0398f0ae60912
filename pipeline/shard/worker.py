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
from pathlib import Path

import numpy as np

from fsar.pipeline.atomic import write_json_atomic
from fsar.pipeline.sampling import segment_middles
from fsar.pipeline.shard.config import ShardConfig
from fsar.pipeline.shard.format import read_tar_samples, sample_members, tar_writer
from fsar.pipeline.shard.plan import ShardTask, VideoEntry
from fsar.pipeline.video.decode import Planes, make_decoder, read_sampled, scaled_size
from fsar.pipeline.video.probe import VideoError


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
        members = sample_members(entry.key, jpegs, meta, entry.class_index)
        record.update(status="ok", decoder=meta["decoder"], flags=flags, num_frames=info.num_frames, detail=fallback)
        return members, record
