"""Sparse frame decoding backends: PyAV (any codec FFmpeg reads) and NVIDIA DALI (GPU, or CPU for VP8/VP9).

Every backend returns the frames at the requested indices as RGB uint8 arrays of the
video's native size, where index k is the k-th frame in presentation order (the k-th
frame a full decode yields). The same file and indices give the same frames whatever
the backend, up to the decoders' colour conversion.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from pipeline.video.probe import VideoError, VideoInfo

BACKENDS = ("auto", "dali", "dali-cpu", "pyav")


class _OutOfOrder(Exception):
    """Decoded timestamps are not usable for matching (e.g. AVI packed B-frames)."""


class PyAVDecoder:
    """Seek-based sparse decoding with PyAV.

    Frames are matched by presentation timestamp, so seeking cannot shift an index.
    The decoder seeks to the keyframe before a wanted frame only when that skips
    frames, and (with `skip_nonref`) tells FFmpeg not to decode non-reference frames
    that are not wanted. Streams whose timestamps cannot be trusted are decoded from
    the start, counting frames.
    """

    name = "pyav"

    def __init__(self, skip_nonref: bool = True, threads: int = 1) -> None:
        self.skip_nonref = skip_nonref
        self.threads = threads

    def setup(self) -> None:
        import av  # noqa: F401  (fail early if missing)

    def supports(self, info: VideoInfo) -> bool:
        return True

    def decode(self, info: VideoInfo, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed): uint8 (len(indices), H, W, 3)."""
        _check_indices(info, indices)
        targets = sorted(set(int(i) for i in indices))
        frames = None
        if info.pts_reliable:
            try:
                frames = self._by_pts(info, targets)
            except _OutOfOrder:
                frames = None
        if frames is None:
            frames = self._in_order(info, targets)
        return np.stack([frames[i] for i in indices])

    # -- strategies -------------------------------------------------------------------
    def _open(self, info: VideoInfo):
        import av

        try:
            container = av.open(info.path)
        except av.FFmpegError as e:
            raise VideoError("unreadable container", f"{info.path}: {e}") from None
        stream = container.streams.video[0]
        stream.codec_context.thread_count = self.threads
        return container, stream

    def _by_pts(self, info: VideoInfo, targets: list[int]) -> dict[int, np.ndarray]:
        import av

        want = {info.frame_pts[i]: i for i in targets}  # pts -> frame index
        remaining = sorted(want)
        keys = info.keyframe_pts or (info.frame_pts[0],)
        out: dict[int, np.ndarray] = {}
        container, stream = self._open(info)
        cc = stream.codec_context
        last = None  # pts of the last frame the decoder returned
        with container:
            try:
                while remaining:
                    k = keys[max(0, bisect.bisect_right(keys, remaining[0]) - 1)]
                    if last is not None or k > info.frame_pts[0]:
                        container.seek(k, stream=stream, backward=True, any_frame=False)
                    cc.flush_buffers()
                    last = None
                    for packet in container.demux(stream):
                        if self.skip_nonref:
                            cc.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in want else "NONREF"
                        found = False
                        for frame in cc.decode(packet):
                            pts = frame.pts
                            if pts is None or (last is not None and pts <= last) or (last is None and pts > remaining[0]):
                                raise _OutOfOrder
                            last = pts
                            if pts in want and want[pts] not in out:
                                out[want[pts]] = frame.to_ndarray(format="rgb24")
                                remaining.remove(pts)
                                found = True
                        if not remaining:
                            break
                        # Past the frames we wanted here, and the next one lies beyond a later keyframe: seek.
                        if found and keys[max(0, bisect.bisect_right(keys, remaining[0]) - 1)] > last:
                            break
                    else:
                        if remaining:  # the stream ended before every wanted timestamp appeared
                            raise _OutOfOrder
            except av.FFmpegError as e:
                raise VideoError("decode error", f"{info.path}: {e}") from None
        return out

    def _in_order(self, info: VideoInfo, targets: list[int]) -> dict[int, np.ndarray]:
        import av

        wanted = set(targets)
        out: dict[int, np.ndarray] = {}
        container, stream = self._open(info)
        n = 0
        with container:
            try:
                for frame in container.decode(stream):
                    if n in wanted:
                        out[n] = frame.to_ndarray(format="rgb24")
                    n += 1
                    if n > targets[-1]:
                        break
            except av.FFmpegError as e:
                if not out or n <= targets[-1]:
                    raise VideoError("decode error", f"{info.path}: frame {n}: {e}") from None
        if len(out) < len(wanted):
            raise VideoError("truncated", f"{info.path}: decoded {n} of {info.num_frames} frames")
        return out


class DaliDecoder:
    """NVIDIA DALI's video decoder, fed with the file's bytes and the exact frame indices.

    `device="gpu"` decodes with NVDEC (H.264, HEVC, VP8, VP9, MPEG-4, AV1, MJPEG);
    `device="cpu"` uses the PyPI wheel's CPU decoder, which reads only VP8 and VP9.
    """

    GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg4", "av1", "mjpeg"})
    CPU_CODECS = frozenset({"vp8", "vp9"})

    def __init__(self, device: str = "gpu", device_id: int = 0, threads: int = 1) -> None:
        if device not in ("gpu", "cpu"):
            raise ValueError(f"DALI device must be 'gpu' or 'cpu', got {device!r}")
        self.device = device
        self.device_id = device_id
        self.threads = threads
        self.name = "dali" if device == "gpu" else "dali-cpu"
        self._pipe = None

    def setup(self) -> None:
        try:
            from nvidia.dali import fn, pipeline_def, types
        except ImportError:
            raise RuntimeError(
                "NVIDIA DALI is not installed: pip install nvidia-dali-cuda130 (Linux x86-64), or use --decoder pyav"
            ) from None
        if self.device == "gpu" and not cuda_available():
            raise RuntimeError("no GPU found: use --decoder pyav (or dali-cpu for VP8/VP9), or install a CUDA build")
        dev = "mixed" if self.device == "gpu" else "cpu"

        @pipeline_def(
            batch_size=1,
            num_threads=self.threads,
            device_id=self.device_id if self.device == "gpu" else None,
            exec_dynamic=True,
            prefetch_queue_depth=1,
        )
        def pipe():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            return fn.decoders.video(encoded, device=dev, frames=frames)

        self._pipe = pipe()
        self._pipe.build()

    def supports(self, info: VideoInfo) -> bool:
        return info.codec in (self.GPU_CODECS if self.device == "gpu" else self.CPU_CODECS)

    def decode(self, info: VideoInfo, indices: Sequence[int]) -> np.ndarray:
        _check_indices(info, indices)
        if not self.supports(info):
            raise VideoError("unsupported codec", f"{info.path}: {self.name} cannot decode {info.codec}")
        if self._pipe is None:
            self.setup()
        targets = sorted(set(int(i) for i in indices))
        data = np.fromfile(info.path, dtype=np.uint8)
        try:
            self._pipe.feed_input("encoded", [data])
            self._pipe.feed_input("frames", [np.asarray(targets, dtype=np.int32)])
            (out,) = self._pipe.run()
        except Exception as e:  # DALI raises RuntimeError with the FFmpeg/NVDEC message
            self._pipe = None  # a failed run can leave the pipeline unusable: rebuild next time
            raise VideoError("decode error", f"{info.path}: {self.name}: {str(e).splitlines()[0][:300]}") from None
        if self.device == "gpu":
            out = out.as_cpu()
        frames = np.asarray(out[0])  # (len(targets), H, W, 3)
        if frames.shape[0] != len(targets):
            raise VideoError("truncated", f"{info.path}: {self.name} returned {frames.shape[0]} of {len(targets)} frames")
        pos = {t: k for k, t in enumerate(targets)}
        return np.stack([frames[pos[i]] for i in indices])


class AutoDecoder:
    """Per video, the first backend in preference order that supports its codec."""

    name = "auto"

    def __init__(self, backends: list) -> None:
        self.backends = backends

    def setup(self) -> None:
        for b in self.backends:
            b.setup()

    def pick(self, info: VideoInfo):
        for b in self.backends:
            if b.supports(info):
                return b
        raise VideoError("unsupported codec", f"{info.path}: no backend decodes {info.codec}")

    def supports(self, info: VideoInfo) -> bool:
        return any(b.supports(info) for b in self.backends)

    def decode(self, info: VideoInfo, indices: Sequence[int]) -> np.ndarray:
        return self.pick(info).decode(info, indices)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def make_decoder(name: str, threads: int = 1):
    """A decoder by backend name (see BACKENDS); call `.setup()` once per worker before use.

    `auto` prefers DALI on the GPU for the codecs NVDEC reads when a GPU is present, and
    PyAV otherwise (on CPU, PyAV was faster than DALI's CPU decoder on VP9).
    """
    if name == "pyav":
        return PyAVDecoder(threads=threads)
    if name == "dali":
        return DaliDecoder("gpu", threads=threads)
    if name == "dali-cpu":
        return DaliDecoder("cpu", threads=threads)
    if name == "auto":
        backends = [DaliDecoder("gpu", threads=threads)] if cuda_available() and _dali_installed() else []
        return AutoDecoder(backends + [PyAVDecoder(threads=threads)])
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(BACKENDS)}")


def decoder_used(decoder, info: VideoInfo) -> str:
    """The name of the backend that decodes `info` (resolves `auto`)."""
    return decoder.pick(info).name if isinstance(decoder, AutoDecoder) else decoder.name


def _dali_installed() -> bool:
    try:
        import nvidia.dali  # noqa: F401

        return True
    except ImportError:
        return False


def _check_indices(info: VideoInfo, indices: Sequence[int]) -> None:
    if len(indices) == 0:
        raise ValueError("no frame indices requested")
    bad = [i for i in indices if not 0 <= int(i) < info.num_frames]
    if bad:
        raise ValueError(f"{info.path}: frame indices {bad[:5]} outside [0, {info.num_frames})")
