"""The NVIDIA DALI backend: NVDEC on the GPU, or the PyPI wheel's CPU decoder (VP8/VP9)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fsar.pipeline.video.frames import check_indices, coded_size, resize_frames, turn
from fsar.pipeline.video.probe import VideoError, VideoInfo

class DaliDecoder:
    """NVIDIA DALI's video decoder, fed with the file's bytes and the exact frame indices.

    `device="gpu"` decodes with NVDEC (H.264, HEVC, VP8, VP9, MPEG-4, AV1, MJPEG);
    `device="cpu"` uses the PyPI wheel's CPU decoder, which reads only VP8 and VP9.
    """

    GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg4", "av1", "mjpeg"})
    CPU_CODECS = frozenset({"vp8", "vp9"})

    planar = False  # RGB only

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
        """The codec is one this device decodes, no frames are hidden (DALI's frame index
        counts every packet, so with hidden frames its frame k is not the k-th frame shown),
        and the file is whole: `auto` gives a file cut short to PyAV, which leaves out the
        frame cut off at its end (DALI, asked directly, reads such a file as it can). Packed
        B-frames go to PyAV too: which frame DALI gives for an index there is unchecked."""
        return info.codec in self._codecs() and not info.hidden_frames and not info.truncated and not info.packed_bframes

    def _codecs(self) -> frozenset:
        return self.GPU_CODECS if self.device == "gpu" else self.CPU_CODECS

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        check_indices(info, indices)
        if info.codec not in self._codecs():
            raise VideoError("unsupported codec", f"{info.path}: {self.name} cannot decode {info.codec}")
        if info.hidden_frames:
            raise VideoError(
                "hidden frames",
                f"{info.path}: {info.hidden_frames} of its packets give no frame (an edit list hides them, or a cut took "
                f"their references), and {self.name} would count them, shifting frame indices: use --decoder auto or pyav",
            )
        if info.packed_bframes:
            raise VideoError(
                "packed b-frames",
                f"{info.path}: its B-frames are packed (DivX/XviD), and which frame {self.name} gives for an index "
                "there is unchecked: use --decoder auto or pyav",
            )
        frames = resize_frames(self.frames_at(np.fromfile(info.path, dtype=np.uint8), indices, info.path), coded_size(size, info.rotation))
        return np.stack([turn(f, info.rotation, info.mirrored) for f in frames]) if info.rotation or info.mirrored else frames

    def frames_at(self, data: np.ndarray, indices: Sequence[int], name="video") -> np.ndarray:
        """RGB frames (len(indices), H, W, 3) at `indices` (any order, repeats allowed) of the
        encoded file `data` (uint8 bytes), at the native size; `name` labels errors."""
        targets = sorted(set(int(i) for i in indices))  # DALI wants each frame once, in order
        if self._pipe is None:
            self.setup()
        try:
            self._pipe.feed_input("encoded", [data])
            self._pipe.feed_input("frames", [np.asarray(targets, dtype=np.int32)])
            (out,) = self._pipe.run()
        except Exception as e:  # DALI raises RuntimeError with the FFmpeg/NVDEC message
            self._pipe = None  # a failed run can leave the pipeline unusable: rebuild next time
            raise VideoError("decode error", f"{name}: {self.name}: {_dali_message(e)[:300]}") from None
        if self.device == "gpu":
            out = out.as_cpu()
        frames = np.asarray(out[0])
        if frames.shape[0] != len(targets):
            raise VideoError("truncated", f"{name}: {self.name} returned {frames.shape[0]} of {len(targets)} frames")
        pos = {t: k for k, t in enumerate(targets)}
        return np.stack([frames[pos[int(i)]] for i in indices])


def _dali_message(e: Exception) -> str:
    """The informative line of a DALI pipeline error: the one after "encountered:" (the lines
    before it only say that the pipeline failed and where it was defined)."""
    lines = [line.strip() for line in str(e).splitlines()]
    if "encountered:" in lines:
        rest = [line for line in lines[lines.index("encountered:") + 1 :] if line]
        if rest:
            return rest[0]
    return next((line for line in lines if line), type(e).__name__)


def cuda_available() -> bool:
    """Whether the CUDA driver loads and shows this process a GPU (it honours CUDA_VISIBLE_DEVICES).

    Asked of the driver library directly: importing torch for it took 1.1 s and a few hundred
    MB in every shard worker, which otherwise never needs torch.
    """
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except AttributeError:  # not a CUDA driver
        return False


def dali_installed() -> bool:
    """Whether NVIDIA DALI can be imported here."""
    try:
        import nvidia.dali  # noqa: F401

        return True
    except ImportError:
        return False
