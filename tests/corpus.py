"""Test corpora: small real videos written on the fly, good and deliberately bad."""

from __future__ import annotations

import hashlib
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fsar.pipeline.synth import CATALOGUE, VideoParams, render_video
from fsar.pipeline.video.encode import encode_all, write_video
from fsar.pipeline.video.probe import VideoError


def clip(frames: int, width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A synthetic clip with visible motion, (frames, height, width, 3) uint8."""
    return render_video(CATALOGUE[0], VideoParams(width, height, frames, 12, seed))


def write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024 * 8), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def bad_input_corpus(root: Path) -> dict[str, str | None]:
    """Write every kind of awkward input under `root/videos`.

    Returns:
        {video id: expected failure reason, or None when the video must shard fine}.
        Ids missing from disk are included (reason "missing").
    """
    v = root / "videos"
    (v / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | None] = {}

    (v / "zero.mp4").write_bytes(b"")
    expect["zero"] = "empty file"
    good = write_video(v / "good.mp4", clip(12), 12, "h264")
    data = good.read_bytes()
    (v / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    expect["truncated"] = "truncated file"
    expect["good"] = None
    (v / "random.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    expect["random"] = "unreadable container"
    (v / "text.webm").write_text("this is not a video\n" * 50)
    expect["text"] = "unreadable container"
    write_audio_only(v / "audio.mp4")
    expect["audio"] = "no video stream"
    expect["not-on-disk"] = "missing"
    write_video(v / "one.mp4", clip(1), 12, "h264")
    expect["one"] = None
    write_video(v / "three.webm", clip(3), 12, "vp9")
    expect["three"] = None
    write_video(v / "nested" / "yuv444.mp4", clip(10), 12, "h264", pix_fmt="yuv444p", reproducible=False)
    expect["yuv444"] = None
    write_video(v / "nested" / "deeper" / "tenbit.mp4", clip(10), 12, "hevc", pix_fmt="yuv420p10le")
    expect["tenbit"] = None
    write_video(v / "hd720.mp4", clip(4, 1280, 720), 25, "h264")
    expect["hd720"] = None
    write_video(v / "anim.gif", clip(9), 10, "gif")
    expect["anim"] = None
    write_video(v / "clip with spaces.avi", clip(10), 12, "mpeg4")
    expect["clip with spaces"] = None
    write_video(v / "clip.v2.final.webm", clip(10), 12, "vp8")
    expect["clip.v2.final"] = None
    write_video(v / "клип-ü.mp4", clip(10), 12, "h264")
    expect["клип-ü"] = None
    source = write_video(v / "cut-source.mp4", clip(20), 12, "h264", gop=5)
    stream_copy_cut(source, v / "cut.mp4", 7)  # 2 frames hidden by its edit list
    stream_copy_cut(source, v / "nested" / "cut-mid-gop.mkv", 7, at_keyframe=False)  # 3 frames it cannot decode
    source.unlink()
    expect["cut"] = expect["cut-mid-gop"] = None
    write_with_encoder(v / "av1.webm", "libsvtav1", clip(24))  # frames no other frame references
    expect["av1"] = None
    write_rotated(v / "portrait.mp4", clip(10, 128, 64), 90)  # shown 64 wide, 128 high
    expect["portrait"] = None
    write_with_encoder(v / "anamorphic.mp4", "libx264", clip(10, 128, 96), sar=Fraction(4, 3))  # shown 171x96
    expect["anamorphic"] = None
    whole = faststart_copy(write_video(v / "whole.mp4", clip(24), 12, "h264"), v / "partial.mp4")
    cut_file(whole, 0.6)  # an interrupted download: the frames it holds are kept, flagged
    expect["partial"] = None
    cut_file(write_video(v / "partial-webm.webm", clip(24), 12, "vp9"), 0.6)
    expect["partial-webm"] = None
    set_display_matrix(write_rotated(v / "selfie.mp4", clip(10, 128, 64), 0), -1, 0, 0, 1)  # mirrored left to right
    expect["selfie"] = None
    damage_packet(v / "whole.mp4", v / "damaged.mp4", 5)  # a frame the decoder refuses
    expect["damaged"] = None
    garbled = write_video(v / "garbled-source.mp4", clip(60, 128, 96, seed=6), 12, "h264", gop=12)
    damage_packet(garbled, v / "garbled.mp4", 5, noise=True)  # a frame the decoder drops, saying so only in its log
    garbled.unlink()
    expect["garbled"] = None
    (v / "whole.mp4").unlink()
    return expect


def write_with_encoder(
    path, encoder: str, frames: np.ndarray, b_frames: int | None = None, gop: int | None = None,
    rate: int = 25, pix_fmt: str = "yuv420p", rotation: int | None = None, sar: Fraction | None = None,
) -> Path:
    """`frames` through an FFmpeg encoder that `write_video` has no entry for (the default rate
    is one MPEG-1 allows); `rotation` writes a display matrix turning them that many degrees
    counter-clockwise, as a phone writes portrait video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if sar is not None:  # the pixels' aspect ratio, in the bitstream (and an MP4's pasp box)
            stream.codec_context.sample_aspect_ratio = sar
        encode_all(out, stream, (av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt) for f in frames))
    return Path(path)


def write_rotated(path: Path, frames: np.ndarray, degrees: int) -> Path:
    """An H.264 MP4 whose display matrix turns its frames `degrees` counter-clockwise."""
    return write_with_encoder(path, "libx264", frames, rate=12, rotation=degrees)


def set_display_matrix(path: Path, a: int, b: int, c: int, d: int, box: bytes = b"tkhd") -> Path:
    """Write (a b / c d), in units of 1.0, into the first `tkhd` matrix of the MP4 `path` (or,
    with `box=b"mvhd"`, the movie header's), in place: any turning or mirroring, where
    FFmpeg's muxer writes only rotations."""
    data = bytearray(path.read_bytes())
    at = data.index(box)
    if box == b"mvhd":  # past the type, version and flags, times, time scale, duration, rate, volume, reserved
        matrix = at + 8 + (28 if data[at + 4] == 1 else 16) + 16
    else:  # past the type, version and flags, times, ids, layer, volume
        matrix = at + 8 + (32 if data[at + 4] == 1 else 20) + 16
    struct.pack_into(">2i", data, matrix, a << 16, b << 16)
    struct.pack_into(">2i", data, matrix + 12, c << 16, d << 16)
    path.write_bytes(bytes(data))
    return path


def remux(src: Path, dst: Path, edit=lambda packets: packets, options: dict | None = None) -> Path:
    """Copy the video stream of `src` into `dst` without re-encoding: its non-empty packets,
    in decode order, as `edit` returns them (it may drop, change or replace them), through
    a muxer with `options`."""
    with av.open(str(src)) as ic:
        stream = ic.streams.video[0]
        packets = edit([p for p in ic.demux(stream) if p.size])
        with av.open(str(dst), "w", options=options or {}) as oc:
            out = oc.add_stream_from_template(stream)
            for p in packets:
                p.stream = out
                oc.mux(p)
    return dst


def stream_copy_cut(src: Path, dst: Path, start_frame: int, at_keyframe: bool = True) -> Path:
    """Cut `src` (MP4) at frame `start_frame` without re-encoding, as `ffmpeg -ss T -c copy`
    does: the packets from the keyframe before the cut on, shifted so the cut is at time 0.
    The MP4 muxer writes an edit list, and the frames between that keyframe and the cut are
    marked to be decoded but not shown. With `at_keyframe=False` the packets start at the
    cut itself, as `ffmpeg -i SRC -ss T -c copy -copyinkf` writes them: the frames up to
    the next keyframe lack their references."""

    def cut(packets: list) -> list:
        at = sorted(p.pts for p in packets)[start_frame]
        key = max(p.pts for p in packets if p.is_keyframe and p.pts <= at) if at_keyframe else at
        first = next(k for k, p in enumerate(packets) if p.pts == key)
        for p in packets[first:]:
            p.pts -= at
            p.dts -= at
        return packets[first:]

    return remux(src, dst, cut)


def faststart_copy(src: Path, dst: Path) -> Path:
    """`src` (MP4) remuxed with its index (moov) first, as web downloads are, so that a
    download that stops early still opens."""
    return remux(src, dst, options={"movflags": "faststart"})


def damage_packet(src: Path, dst: Path, index: int, noise: bool = False) -> Path:
    """`src` remuxed with its `index`-th packet (decode order) cut to half its bytes, as a
    damaged download or disk leaves one: the decoder refuses it (an H.264/HEVC NAL length
    past the end) or conceals it, and the frames after it may lose their reference. With
    `noise`, the packet keeps its size and first 4 bytes (an MP4 NAL's length), and the rest
    is random: the decoder then parses garbage where it expects headers."""

    def damage(packets: list) -> list:
        p = packets[index]
        data = bytes(p)
        if noise:
            data = data[:4] + np.random.default_rng(index).integers(0, 256, len(data) - 4, dtype=np.uint8).tobytes()
        bad = av.Packet(data if noise else data[: p.size // 2])
        bad.pts, bad.dts, bad.time_base, bad.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
        packets[index] = bad
        return packets

    return remux(src, dst, damage)


def decodable_frames(path) -> list[np.ndarray]:
    """A full decode that passes over the packets the decoder refuses, as FFmpeg's command line
    does (it reports the error and goes on with the same decoder)."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for packet in c.demux(stream):  # it ends with an empty packet, which drains the decoder
            try:
                out += [f.to_ndarray(format="rgb24") for f in stream.codec_context.decode(packet)]
            except av.FFmpegError:
                pass
    return out


def cut_file(path: Path, fraction: float) -> Path:
    """Keep the first `fraction` of the file's bytes, as a download or copy stopped early leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_lists(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """Write `<class>/<id>` split lists under root/splits; returns that folder."""
    d = root / "splits"
    d.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        (d / f"{split}.txt").write_text("".join(f"{c}/{i}\n" for c, i in items), encoding="utf-8")
    return d


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (file names in `skip` left out)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def write_tagged(path: Path, frames: np.ndarray, codec: str, colorspace: int | None = None, full_range: bool = False) -> Path:
    """Encode RGB frames as yuv420p tagged with a colour matrix (FFmpeg's AVColorSpace) and range.

    The YUV is made with that matrix and range, so a decoder that honours the tags gets
    the frames back (up to compression).
    """
    import av

    rng = 2 if full_range else 1  # AVColorRange: JPEG (full) or MPEG (limited)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        cc = stream.codec_context
        cc.thread_count = 1
        cc.color_range = rng
        if colorspace is not None:
            cc.colorspace = colorspace

        def tagged(rgb: np.ndarray):
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709" if colorspace == 1 else None, dst_color_range=rng)
            vf.color_range = rng
            if colorspace is not None:
                vf.colorspace = colorspace
            return vf

        encode_all(out, stream, (tagged(f) for f in frames))
    return path


class RefusingBackend:
    """A GPU-like backend that takes every codec, then refuses this video (as NVDEC refuses
    H.264 4:4:4), or cannot be set up at all. A `Decoder` (fsar.pipeline.video.decode)."""

    planar = False

    def __init__(self, name: str = "dali", setup_error: str | None = None) -> None:
        self.name, self.setup_error, self.calls = name, setup_error, 0

    def setup(self) -> None:
        if self.setup_error:
            raise RuntimeError(self.setup_error)

    def supports(self, info) -> bool:
        return True

    def decode(self, info, indices, size=None):
        self.calls += 1
        raise VideoError("decode error", f"{info.path}: {self.name}: codec profile not supported")


def free_port() -> int:
    """A TCP port on this machine where nothing listens (just now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
