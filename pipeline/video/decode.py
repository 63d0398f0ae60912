"""Sparse frame decoding backends: PyAV (any codec FFmpeg reads) and NVIDIA DALI (GPU, or CPU for VP8/VP9).

Every backend returns the frames at the requested indices as RGB uint8 arrays of the
video's native size, where index k is the k-th frame in presentation order (the k-th
frame a full decode yields). The same file and indices give the same frames whatever
the backend, up to the decoders' colour conversion.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np

from pipeline.video.fflog import errors_logged, ffmpeg_message
from pipeline.video.probe import VideoError, VideoInfo, count_decodable, demux_packets, drops_frames, info_from_packets, open_video, probe

BACKENDS = ("auto", "dali", "dali-cpu", "pyav")


# Why a decode of a stream that probed fine fails when the file is damaged: the decoder
# refused a packet, or fewer frames came out than the stream has. PyAV then counts the frames
# that do decode and samples those (see `probe.count_decodable`).
DAMAGE_REASONS = frozenset({"decode error", "truncated"})


class _OutOfOrder(Exception):
    """Decoded timestamps are not usable for matching (e.g. AVI packed B-frames)."""


INTERPOLATION = "BILINEAR"  # FFmpeg scaler; antialiased when shrinking, about 6x faster than PIL bicubic here

# FFmpeg decoders that read `skip_frame` packet by packet, so that it can change between
# packets, and skip only frames that no other frame references (each checked against a full
# decode in tests/test_decode.py). Others may read it once, when the codec opens: libdav1d
# (AV1) then drops every non-reference frame of the stream, wanted or not. The native VP8
# and VP9 decoders ignore it (all their frames but invisible ones are references anyway).
SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video"})

# Frame colourspaces (FFmpeg's AVColorSpace) whose YUV is BT.601, the matrix of JPEG's YCbCr:
# unspecified (which FFmpeg's scaler converts as BT.601 too), BT470BG and SMPTE170M.
JFIF_MATRICES = frozenset({2, 5, 6})


class Planes(NamedTuple):
    """One frame as the full-range BT.601 YCbCr 4:2:0 planes that a JPEG (JFIF) stores, uint8.

    Encoding these straight to JPEG skips converting YUV to RGB in the scaler and RGB back
    to YCbCr in the encoder; the scaler also resizes 1.5 bytes a pixel instead of 3.
    Planes may be strided views into the decoder's frame.
    """

    y: np.ndarray  # (H, W)
    u: np.ndarray  # (ceil(H/2), ceil(W/2))
    v: np.ndarray  # (ceil(H/2), ceil(W/2))


def _turn(frame, rotation: int, mirrored: bool = False):
    """An RGB frame (H, W, 3) or `Planes` turned `rotation` degrees counter-clockwise (a
    multiple of 90), then mirrored left to right if `mirrored`; contiguous."""
    k = rotation // 90 % 4
    if k == 0 and not mirrored:
        return frame

    def turn(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k)
        return np.ascontiguousarray(a[:, ::-1] if mirrored else a)

    if isinstance(frame, Planes):
        return Planes(*(turn(p) for p in frame))
    return turn(frame)


def _coded(size: tuple[int, int] | None, rotation: int) -> tuple[int, int] | None:
    """The size to scale a coded frame to so that, turned by `rotation`, it is `size`."""
    return (size[1], size[0]) if size is not None and rotation in (90, 270) else size


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side scaled to `short_side`; None when 0 or already there."""
    if short_side == 0 or min(width, height) == short_side:
        return None
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize RGB frames (N, H, W, 3) to size (width, height) with the same scaler the PyAV path uses.

    The scaler resizes planar RGB (gbrp), then repacks it: 1.4-1.7x faster than resizing
    packed RGB, which FFmpeg's scaler does through its slow generic path, and the same
    pixels to within one grey level (tested against that one-pass resize).
    """
    if size is None:
        return frames
    import av
    from av.video.reformatter import VideoReformatter

    scale, pack = VideoReformatter(), VideoReformatter()  # one cached scaler context each
    return np.stack(
        [
            pack.reformat(
                scale.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"), width=size[0], height=size[1], format="gbrp", interpolation=INTERPOLATION, threads=1),
                format="rgb24",
                threads=1,
            ).to_ndarray()
            for f in frames
        ]
    )


class PyAVDecoder:
    """Sparse decoding with PyAV from packets demuxed once into memory.

    Frames are matched by presentation timestamp, so no index can shift. To reach a
    wanted frame the decoder jumps to the keyframe packet before it only when that
    skips work, and (with `skip_nonref`, where the decoder is in SKIP_NONREF_DECODERS)
    tells FFmpeg not to decode non-reference frames that are not wanted. Streams whose
    timestamps cannot be trusted are decoded from the start, counting frames. FFmpeg's scaler converts colour and resizes in one
    pass (to YUV planes for JPEG, or to planar RGB that is then packed). Memory use is
    about the size of the file.
    """

    name = "pyav"

    def __init__(self, skip_nonref: bool = True, threads: int = 1) -> None:
        self.skip_nonref = skip_nonref
        self.threads = threads
        self._reformatter = None
        self._packer = None

    def setup(self) -> None:
        from av.video.reformatter import VideoReformatter

        # One scaler context reused across frames: PyAV otherwise builds one per frame (2x slower).
        self._reformatter = VideoReformatter()
        self._packer = VideoReformatter()  # planar RGB to packed, a second cached context

    def supports(self, info: VideoInfo) -> bool:
        return True

    def read(self, path, sample: Callable[[int], list[int]], size_for: Callable[[int, int], tuple | None], planar: bool = False):
        """Open once (twice if a WebM header's frame size proves wrong): returns (info,
        indices = sample(num_frames), frames turned by info.rotation (and mirrored) and resized to
        size_for(w, h) of the turned frames).

        Frames are an array (N, H, W, 3) of RGB, or with `planar` a list holding for each
        index its `Planes` where the video's matrix is BT.601 (else its RGB array).
        """
        info, indices, frames, decoded = self._read(path, sample, size_for, planar, probe_frames=False)
        if decoded[:2] != (info.width, info.height):  # the header's frame size was not the stream's: open in full
            info, indices, frames, decoded = self._read(path, sample, size_for, planar, probe_frames=True)
        if info.pix_fmt == "unknown":  # opened from the header alone
            info = dataclasses.replace(info, pix_fmt=decoded[2])
        return info, indices, frames

    def _read(self, path, sample, size_for, planar: bool, probe_frames: bool, unpack: bool = True):
        # A damaged file with packed B-frames is read as FFmpeg's command line reads it: packed.
        # Unpacked, its frames around the damage were seen to differ, and one more counted.
        packed_again = lambda: self._read(path, sample, size_for, planar, probe_frames, unpack=False)  # noqa: E731
        container, stream = open_video(path, probe_frames)
        with container:
            stream.codec_context.thread_count = self.threads  # before anything decodes, which opens the codec
            packets, cut_short, packing = demux_packets(container, stream, path, unpack)
            info = info_from_packets(path, stream, packets, cut_short, packing)
            if info.damaged and packing == "unpacked":
                return packed_again()
            indices = sample(info.num_frames)
            _check_indices(info, indices)
            errors = errors_logged()
            try:
                frames = self._decode(stream, packets, info, indices, size_for(*info.display_size), planar)
                # Errors in FFmpeg's log may be damage the decoder did not report otherwise (a frame
                # dropped: every later index would shift), or only a jump into an open GOP.
                if errors_logged() > errors and not info.damaged:
                    with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                        if drops_frames(fresh, packets, info):
                            raise VideoError("decode error", f"{path}: the decoder logged errors, and a full decode drops frames")
            except VideoError as e:
                if e.reason not in DAMAGE_REASONS:
                    raise
                if packing == "unpacked":
                    return packed_again()
                # A damaged file: its decodable frames, sampled anew. Each pass gets a fresh decoder, as
                # FFmpeg's command line starts with one: a refusal can leave a decoder refusing every
                # later packet (VP9, after a frame header of an impossible size), which flushing keeps.
                with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                    info = count_decodable(path, fresh, packets, info)
                indices = sample(info.num_frames)
                with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                    frames = self._decode(fresh, packets, info, indices, size_for(*info.display_size), planar)
                    return info, indices, frames, _decoded_format(fresh)
            return info, indices, frames, _decoded_format(stream)

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None, planar: bool = False):
        """Frames at `indices` (any order, repeats allowed), turned by `info.rotation` and
        resized to `size` (width, height as shown): uint8 (len(indices), H, W, 3), or as in
        `read` with `planar`."""
        _check_indices(info, indices)
        container, stream = open_video(info.path, probe_frames=False)
        with container:
            return self._decode(stream, demux_packets(container, stream, info.path)[0], info, indices, size, planar)

    def _decode(self, stream, packets, info: VideoInfo, indices, size, planar: bool = False):
        import av

        if not stream.codec_context.is_open:
            stream.codec_context.thread_count = self.threads
        targets = sorted(set(int(i) for i in indices))
        coded = _coded(size, info.rotation)

        def convert(frame):
            return _turn(self._convert(frame, coded, planar), info.rotation, info.mirrored)

        frames = None
        errors = errors_logged()
        try:
            if info.pts_reliable:
                try:
                    frames = self._by_pts(stream, packets, info, targets, convert)
                except _OutOfOrder:
                    stream.codec_context.flush_buffers()
            if frames is None:
                frames = self._in_order(stream, packets, info, targets, convert)
        except av.FFmpegError as e:
            raise VideoError("decode error", f"{info.path}: {ffmpeg_message(e, errors)}") from None
        if planar:
            return [frames[i] for i in indices]
        return np.stack([frames[i] for i in indices])

    def _convert(self, frame, size, planar: bool):
        """One decoded frame resized to `size`: `Planes` if asked and its matrix is BT.601, else RGB."""
        if self._reformatter is None:
            self.setup()
        w, h = size if size is not None else (None, None)
        # The frame's own range, stated (PyAV's default for the source is "unspecified").
        common = dict(width=w, height=h, interpolation=INTERPOLATION, src_color_range=frame.color_range, threads=self.threads)
        if planar and frame.format.name.startswith("yuv") and frame.colorspace in JFIF_MATRICES:
            out = self._reformatter.reformat(frame, format="yuv420p", dst_color_range=2, **common)  # 2: full (JPEG) range
            return Planes(*(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in out.planes))
        if size is None:
            return self._reformatter.reformat(frame, format="rgb24", **common).to_ndarray()
        # Resizing to planar RGB and then packing it is 1.1-3.6x faster than FFmpeg's scaler
        # writing packed RGB itself, and free of the 2-3 grey-level bias that path showed at
        # some sizes (SSv2's 424x240 to 452x256).
        planar_rgb = self._reformatter.reformat(frame, format="gbrp", **common)
        return self._packer.reformat(planar_rgb, format="rgb24", threads=self.threads).to_ndarray()

    def _by_pts(self, stream, packets, info: VideoInfo, targets: list[int], convert) -> dict:
        cc = stream.codec_context
        want = {info.frame_pts[i]: i for i in targets}  # pts -> frame index
        remaining = sorted(want)
        keys = sorted((p.pts, k) for k, p in enumerate(packets) if p.is_keyframe) or [(packets[0].pts, 0)]
        key_pts = [k[0] for k in keys]
        out: dict[int, np.ndarray] = {}
        pos, last = None, None  # next packet to feed; pts of the last frame out of the decoder
        skip_nonref = self.skip_nonref and cc.codec.name in SKIP_NONREF_DECODERS

        def take(frame) -> None:
            nonlocal last
            pts = frame.pts
            if pts is None or (last is not None and pts <= last):
                raise _OutOfOrder
            if frame.is_corrupt:  # errors concealed from frames before it, which a jump may not have decoded
                raise VideoError("decode error", f"{info.path}: the frame at pts {pts} decodes with errors concealed")
            last = pts
            if pts in want and want[pts] not in out:
                out[want[pts]] = convert(frame)
                remaining.remove(pts)

        while remaining:
            t = remaining[0]
            kpts, kpos = keys[max(0, bisect.bisect_right(key_pts, t) - 1)]
            if pos is None or (pos <= kpos and (last is None or last < kpts)):
                cc.flush_buffers()  # jump: frames before keyframe kpos are not needed
                pos, last = kpos, None
            while remaining and remaining[0] == t and pos < len(packets):
                packet = packets[pos]
                pos += 1
                if skip_nonref:
                    cc.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
                for frame in cc.decode(packet):
                    take(frame)
            if remaining and remaining[0] == t:  # stream exhausted: drain delayed frames
                cc.skip_frame = "DEFAULT"
                for frame in cc.decode(None):
                    take(frame)
                if remaining:
                    raise _OutOfOrder  # a wanted timestamp never came out
        return out

    def _in_order(self, stream, packets, info: VideoInfo, targets: list[int], convert) -> dict:
        import av

        cc = stream.codec_context
        cc.skip_frame = "DEFAULT"
        wanted = set(targets)
        out: dict[int, np.ndarray] = {}
        n = 0
        for packet in [*packets, None]:  # None drains the decoder
            try:
                decoded = cc.decode(packet)
            except av.FFmpegError:
                if not info.damaged:
                    raise
                continue  # refused when it was counted too (see `count_decodable`)
            for frame in decoded:
                if n in wanted:
                    out[n] = convert(frame)
                n += 1
            if n > targets[-1]:
                break
        if len(out) < len(wanted):
            raise VideoError("truncated", f"{info.path}: decoded {n} of {info.num_frames} frames")
        return out


@contextlib.contextmanager
def _fresh_decoder(path, probe_frames: bool, threads: int):
    """The video stream of `path` opened anew, for its unused decoder (packets demuxed before can be fed to it)."""
    container, stream = open_video(path, probe_frames)
    with container:
        stream.codec_context.thread_count = threads
        yield stream


def _decoded_format(stream) -> tuple:
    """(width, height, pixel format) of the frames the stream's decoder gave (read after decoding)."""
    cc = stream.codec_context
    return cc.width, cc.height, cc.format.name if cc.format else "unknown"


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
        """The codec is one this device decodes, no frames are hidden (DALI's frame index
        counts every packet, so with hidden frames its frame k is not the k-th frame shown),
        and the file is whole: `auto` gives a file cut short to PyAV, which leaves out the
        frame cut off at its end (DALI, asked directly, reads such a file as it can). Packed
        B-frames go to PyAV too: which frame DALI gives for an index there is unchecked."""
        return info.codec in self._codecs() and not info.hidden_frames and not info.truncated and not info.packed_bframes

    def _codecs(self) -> frozenset:
        return self.GPU_CODECS if self.device == "gpu" else self.CPU_CODECS

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        _check_indices(info, indices)
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
        frames = resize_frames(self.frames_at(np.fromfile(info.path, dtype=np.uint8), indices, info.path), _coded(size, info.rotation))
        return np.stack([_turn(f, info.rotation, info.mirrored) for f in frames]) if info.rotation or info.mirrored else frames

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
                kw = {"planar": True} if planar and isinstance(b, PyAVDecoder) else {}
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
    if isinstance(decoder, PyAVDecoder):
        info, indices, frames = decoder.read(path, sample, size_for, planar)
        return Sampled(info, indices, frames, decoder.name, "")
    info = probe(path)
    indices = sample(info.num_frames)
    size = size_for(*info.display_size)
    if isinstance(decoder, AutoDecoder):
        try:
            return Sampled(info, indices, *decoder.decode_any(info, indices, size, planar))
        except VideoError as e:  # a damaged file: PyAV counts the frames that do decode and samples those
            pyav = next((b for b in decoder.backends if isinstance(b, PyAVDecoder)), None)
            if pyav is None or e.reason not in DAMAGE_REASONS:
                raise
            info, indices, frames = pyav.read(path, sample, size_for, planar)
            return Sampled(info, indices, frames, pyav.name, str(e))
    return Sampled(info, indices, decoder.decode(info, indices, size), decoder.name, "")


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
        backends = [DaliDecoder("gpu", threads=threads)] if cuda_available() and dali_installed() else []
        return AutoDecoder(backends + [PyAVDecoder(threads=threads)])
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(BACKENDS)}")


def dali_installed() -> bool:
    """Whether NVIDIA DALI can be imported here."""
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
