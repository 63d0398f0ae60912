"""Sparse frame decoding backends: PyAV (any codec FFmpeg reads) and NVIDIA DALI (GPU, or CPU for VP8/VP9).

Every backend returns the frames at the requested indices as RGB uint8 arrays of the
video's native size, where index k is the k-th frame in presentation order (the k-th
frame a full decode yields). The same file and indices give the same frames whatever
the backend, up to the decoders' colour conversion.

The backends live in `pyav.py` and `dali.py`, the frame geometry they share in
`frames.py`. Each implements `Decoder`; `DECODERS` names them, and `make_decoder` is the one
place that chooses: by name, or with `auto` one per video. A new backend is a class with
`Decoder`'s members and an entry in `DECODERS`.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from fsar.pipeline.video.dali import DaliDecoder, cuda_available, dali_installed
from fsar.pipeline.video.frames import Planes, resize_frames, scaled_size
from fsar.pipeline.video.probe import VideoError, VideoInfo, probe
from fsar.pipeline.video.pyav import DAMAGE_REASONS, PyAVDecoder

__all__ = [
    "BACKENDS", "DECODERS", "AutoDecoder", "DaliDecoder", "Decoder", "OnePassDecoder", "Planes", "PyAVDecoder", "Sampled",
    "cuda_available", "dali_installed", "make_decoder", "read_sampled", "resize_frames", "scaled_size",
]


@runtime_checkable
class Decoder(Protocol):
    """What every backend implements. One instance per worker: `setup()` once (load libraries,
    open the GPU), then `decode` many times; nothing in it knows whether it runs under Ray."""

    name: str
    """The backend's name in summaries and status files (`pyav`, `dali`, `dali-cpu`)."""
    planar: bool
    """Whether `decode(..., planar=True)` may give `Planes` (YUV planes the JPEG encoder takes as they are)."""

    def setup(self) -> None:
        """Prepare the backend; raise RuntimeError saying what is missing (library, GPU) if it cannot run."""

    def supports(self, info: VideoInfo) -> bool:
        """Whether it can decode this video's codec and format (probed)."""

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None, **kw) -> np.ndarray:
        """RGB uint8 frames (N, H, W, 3) at `indices` (presentation order), resized to `size` (W, H)
        when given; raise `VideoError` with a reason when the video cannot be read."""


@runtime_checkable
class OnePassDecoder(Decoder, Protocol):
    """A backend that also probes, samples and decodes in one pass over the file, and reads
    damaged files, counting the frames that do decode (PyAV)."""

    def read(self, path, sample: Callable[[int], list[int]], size_for: Callable[[int, int], tuple | None], planar: bool = False):
        """(info, indices, frames) of `path`: `sample(num_frames)` chooses the indices, `size_for(w, h)` the size."""


# Every backend by name: a factory of a fresh instance given decoding threads.
DECODERS: dict[str, Callable[[int], Decoder]] = {
    "dali": lambda threads: DaliDecoder("gpu", threads=threads),
    "dali-cpu": lambda threads: DaliDecoder("cpu", threads=threads),
    "pyav": lambda threads: PyAVDecoder(threads=threads),
}
BACKENDS = ("auto", *DECODERS)


class AutoDecoder:
    """Per video, the first backend in preference order that supports its codec, and the next
    one that does if it fails on that video: NVDEC refuses some streams FFmpeg reads (H.264
    4:4:4 or 10-bit on most GPUs, sizes past its limits), and PyAV, last, reads them."""

    name = "auto"

    def __init__(self, backends: list) -> None:
        self.backends = backends

    def setup(self) -> None:
        """Set up every backend; one that cannot be (no GPU, a driver DALI cannot use) is left
        out with a warning, except the last, whose error is raised."""
        ready = []
        for k, b in enumerate(self.backends):
            try:
                b.setup()
            except RuntimeError as e:
                if k == len(self.backends) - 1:
                    raise
                warnings.warn(f"decoder auto: {b.name} left out: {e}", stacklevel=2)
                continue
            ready.append(b)
        self.backends = ready

    def supports(self, info: VideoInfo) -> bool:
        return any(b.supports(info) for b in self.backends)

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        return self.decode_any(info, indices, size)[0]

    def decode_any(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None, planar: bool = False):
        """(frames, name of the backend that gave them, what the backends tried before it said).

        Raises:
            VideoError: "unsupported codec" when no backend takes it; else the last backend's
                reason when every one that takes it fails.
        """
        failed: list[tuple[str, VideoError]] = []
        for b in self.backends:
            if not b.supports(info):
                continue
            try:
                kw = {"planar": True} if planar and b.planar else {}
                return b.decode(info, indices, size, **kw), b.name, "; ".join(f"{n}: {e}" for n, e in failed)
            except VideoError as e:
                failed.append((b.name, e))
        if not failed:
            raise VideoError("unsupported codec", f"{info.path}: no backend decodes {info.codec}")
        raise VideoError(failed[-1][1].reason, "; ".join(f"{n}: {e}" for n, e in failed))


class Sampled(NamedTuple):
    """What `read_sampled` gives."""

    info: VideoInfo
    indices: list[int]
    frames: np.ndarray | list  # (N, H, W, 3) RGB, or per index `Planes` or RGB with `planar`
    backend: str  # the backend that decoded the frames
    fallback: str  # with `auto`, why the backends before it failed on this video ("" if none did)


def read_sampled(decoder, path, sample: Callable[[int], list[int]], size_for: Callable[[int, int], tuple | None], planar: bool = False) -> Sampled:
    """Probe, choose indices and decode them, resized.

    PyAV does it in one pass over the file; other backends probe first. With `planar`,
    PyAV gives `Planes` where it can (see `PyAVDecoder.read`); other backends give RGB.
    """
    if isinstance(decoder, AutoDecoder) and len(decoder.backends) == 1:
        decoder = decoder.backends[0]
    if isinstance(decoder, OnePassDecoder):
        info, indices, frames = decoder.read(path, sample, size_for, planar)
        return Sampled(info, indices, frames, decoder.name, "")
    info = probe(path)
    indices = sample(info.num_frames)
    size = size_for(*info.display_size)
    if isinstance(decoder, AutoDecoder):
        try:
            return Sampled(info, indices, *decoder.decode_any(info, indices, size, planar))
        except VideoError as e:  # a damaged file: PyAV counts the frames that do decode and samples those
            pyav = next((b for b in decoder.backends if isinstance(b, OnePassDecoder)), None)
            if pyav is None or e.reason not in DAMAGE_REASONS:
                raise
            info, indices, frames = pyav.read(path, sample, size_for, planar)
            return Sampled(info, indices, frames, pyav.name, str(e))
    return Sampled(info, indices, decoder.decode(info, indices, size), decoder.name, "")


def make_decoder(name: str, threads: int = 1):
    """A decoder by backend name (see BACKENDS); call `.setup()` once per worker before use.

    `auto` prefers DALI on the GPU for the codecs NVDEC reads when a GPU is present, and
    PyAV otherwise (on CPU, PyAV was faster than DALI's CPU decoder on VP9).
    """
    if name in DECODERS:
        return DECODERS[name](threads)
    if name == "auto":
        backends = [DECODERS["dali"](threads)] if cuda_available() and dali_installed() else []
        return AutoDecoder(backends + [DECODERS["pyav"](threads)])
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(BACKENDS)}")
