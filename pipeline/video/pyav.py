"""The PyAV backend: sparse decoding of any codec FFmpeg reads, from packets demuxed once."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
from typing import Callable, Sequence

import numpy as np

from fsar.pipeline.video.fflog import errors_logged, ffmpeg_message
from fsar.pipeline.video.frames import INTERPOLATION, Planes, check_indices, coded_size, turn
from fsar.pipeline.video.probe import VideoError, VideoInfo, count_decodable, demux_packets, info_from_packets, open_video, recount_if_damaged

# Why a decode of a stream that probed fine fails when the file is damaged: the decoder
# refused a packet, or fewer frames came out than the stream has. PyAV then counts the frames
# that do decode and samples those (see `probe.count_decodable`).
DAMAGE_REASONS = frozenset({"decode error", "truncated"})


class _OutOfOrder(Exception):
    """Decoded timestamps are not usable for matching (e.g. AVI packed B-frames)."""


# FFmpeg decoders that read `skip_frame` packet by packet, so that it can change between
# packets, and skip only frames that no other frame references (each checked against a full
# decode in tests/test_decode.py). Others may read it once, when the codec opens: libdav1d
# (AV1) then drops every non-reference frame of the stream, wanted or not. The native VP8
# and VP9 decoders ignore it (all their frames but invisible ones are references anyway).
SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video"})

# Frame colourspaces (FFmpeg's AVColorSpace) whose YUV is BT.601, the matrix of JPEG's YCbCr:
# unspecified (which FFmpeg's scaler converts as BT.601 too), BT470BG and SMPTE170M.
JFIF_MATRICES = frozenset({2, 5, 6})


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
    planar = True  # decode and read give YUV planes on request

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
            check_indices(info, indices)
            errors = errors_logged()
            try:
                frames = self._decode(stream, packets, info, indices, size_for(*info.display_size), planar)
            except VideoError as e:
                if e.reason not in DAMAGE_REASONS:
                    raise
                frames = None
            recounted = None
            if frames is not None:
                if errors_logged() == errors or info.damaged:
                    return info, indices, frames, _decoded_format(stream)
                # Errors in FFmpeg's log: damage the decoder did not report otherwise (a frame
                # dropped, so that every later index would shift), or only a jump into an open GOP.
                with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                    recounted = recount_if_damaged(path, fresh, packets, info)
                if recounted is None:
                    return info, indices, frames, _decoded_format(stream)
            if packing == "unpacked":
                return packed_again()
            # A damaged file: its decodable frames, sampled anew. Each pass gets a fresh decoder, as
            # FFmpeg's command line starts with one: a refusal can leave a decoder refusing every
            # later packet (VP9, after a frame header of an impossible size), which flushing keeps.
            if recounted is None:
                with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                    recounted = count_decodable(path, fresh, packets, info)
            info = recounted
            indices = sample(info.num_frames)
            with _fresh_decoder(path, probe_frames, self.threads) as fresh:
                frames = self._decode(fresh, packets, info, indices, size_for(*info.display_size), planar)
                return info, indices, frames, _decoded_format(fresh)

    def decode(self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None = None, planar: bool = False):
        """Frames at `indices` (any order, repeats allowed), turned by `info.rotation` and
        resized to `size` (width, height as shown): uint8 (len(indices), H, W, 3), or as in
        `read` with `planar`."""
        check_indices(info, indices)
        container, stream = open_video(info.path, probe_frames=False)
        with container:
            return self._decode(stream, demux_packets(container, stream, info.path)[0], info, indices, size, planar)

    def _decode(self, stream, packets, info: VideoInfo, indices, size, planar: bool = False):
        import av

        if not stream.codec_context.is_open:
            stream.codec_context.thread_count = self.threads
        targets = sorted(set(int(i) for i in indices))
        coded = coded_size(size, info.rotation)

        def convert(frame):
            return turn(self._convert(frame, coded, planar), info.rotation, info.mirrored)

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
