"""Write frames to real video files with PyAV, reproducibly.

With `reproducible=True` (the default) the same frames and arguments give
byte-identical files on the same software stack: encoders run single-threaded with
FFmpeg's bitexact flags, RGB->YUV conversion is done here rather than by FFmpeg's
scaler, and x264 runs without its assembly kernels (with them, repeated encodes of
the same frames were seen to differ).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from fsar.pipeline.atomic import atomic_path


@dataclass(frozen=True)
class CodecSpec:
    """How one codec is written: container, FFmpeg encoder, pixel format and options."""

    ext: str
    container: str
    encoder: str
    pix_fmt: str = "yuv420p"
    options: dict = field(default_factory=dict)
    tag: str | None = None
    min_longest_side: int = 0  # smaller frames are refused (see check_frame_size)


CODECS: dict[str, CodecSpec] = {
    # SSv2 ships VP9 in WebM.
    "vp9": CodecSpec(".webm", "webm", "libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0", "row-mt": "0"}),
    "vp8": CodecSpec(".webm", "webm", "libvpx", options={"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"}),
    # Kinetics ships H.264 in MP4.
    "h264": CodecSpec(".mp4", "mp4", "libx264", options={"preset": "veryfast", "crf": "23"}),
    "hevc": CodecSpec(".mp4", "mp4", "libx265", options={"preset": "ultrafast", "crf": "28", "x265-params": "log-level=none:pools=none:frame-threads=1"}, tag="hvc1", min_longest_side=64),
    # UCF101 and HMDB51 ship MPEG-4 Part 2 (XviD) in AVI. FFmpeg's default rate control
    # (`write_video(options={"b": ...})` sets a bitrate).
    "mpeg4": CodecSpec(".avi", "avi", "mpeg4", tag="XVID"),
    "gif": CodecSpec(".gif", "gif", "gif", pix_fmt="rgb8"),
}


def codec_spec(name: str) -> CodecSpec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def check_frame_size(codec: str, width: int, height: int) -> None:
    """Raise ValueError if `codec` cannot safely encode frames of this size.

    4:2:0 needs even sizes; x265 corrupts memory on frames under 64 pixels on both
    sides (seen with libx265 in PyAV's FFmpeg build), so such sizes are refused.
    """
    spec = codec_spec(codec)
    if width % 2 or height % 2:
        raise ValueError(f"{codec}: {spec.pix_fmt} needs an even frame size, got {width}x{height}")
    if max(width, height) < spec.min_longest_side:
        raise ValueError(f"{codec}: frames need a side of at least {spec.min_longest_side} pixels, got {width}x{height}")


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar YUV 4:2:0, as the (H * 3 / 2, W) array PyAV expects.

    Done here rather than by FFmpeg's scaler, whose output was seen to vary between
    runs, so that encodes are reproducible.
    """
    H, W, _ = rgb.shape
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b
    # 2x2 box average for chroma: (H/2, W/2)
    u = u.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))
    v = v.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))
    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v)]
    return np.concatenate([planes[0].reshape(-1), planes[1].reshape(-1), planes[2].reshape(-1)]).reshape(H * 3 // 2, W)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    codec: str,
    gop: int | None = None,
    reproducible: bool = True,
    pix_fmt: str | None = None,
    bframes: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames to `path` (its extension should match the codec's container).

    Args:
        path: output file; written under a temporary name and renamed when complete.
        frames: uint8 array (T, H, W, 3), H and W even.
        fps: frame rate (constant).
        codec: a key of `CODECS`.
        gop: keyframe interval in frames; None keeps the encoder's default
            (for short clips, a single keyframe).
        reproducible: byte-identical output for identical input (x264 about 2x slower).
        pix_fmt: encode in another pixel format (yuv444p, yuv420p10le ...); FFmpeg then
            converts from RGB, and the output is not guaranteed to be reproducible.
        bframes: most consecutive B-frames (None keeps the encoder's default).
        options: FFmpeg encoder options over the codec's own, e.g. {"b": "500k"}.

    Returns:
        The path written.
    """
    import av  # heavy import, kept local

    spec = codec_spec(codec)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    check_frame_size(codec, W, H)
    pix_fmt = pix_fmt or spec.pix_fmt
    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=spec.container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(spec.encoder, rate=fps, options={**spec.options, **(options or {})})
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.time_base = Fraction(1, fps)
        cc = stream.codec_context
        cc.thread_count = 1  # multi-threaded encoders are not bit-reproducible
        cc.flags |= av.codec.context.Flags.bitexact
        if spec.encoder != "gif":
            cc.color_range = 1  # limited (MPEG) range, as rgb_to_yuv420p produces
        if spec.tag:
            cc.codec_tag = spec.tag
        x264_params = []
        if bframes is not None:
            cc.max_b_frames = bframes
        if gop is not None:
            cc.gop_size = gop
            x264_params.append(f"keyint={gop}:min-keyint={gop}:scenecut=0")
        if reproducible:
            x264_params.append("asm=0")
        if spec.encoder == "libx264" and x264_params:
            cc.options = {**cc.options, "x264-params": ":".join(x264_params)}
        def yuv(rgb: np.ndarray):
            if pix_fmt == "yuv420p":
                return av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
            return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)

        encode_all(out, stream, (yuv(f) for f in frames))
    return path


def encode_all(out, stream, frames: Iterable) -> None:
    """Encode PyAV video frames into `stream` of container `out` with pts 0, 1, ..., then flush."""
    for i, frame in enumerate(frames):
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
