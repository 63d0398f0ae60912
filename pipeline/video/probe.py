"""Read a video's stream facts without decoding: codec, size, rate, and every frame's timestamp.

Demuxing is cheap (milliseconds per clip), and it gives the exact frame count and
the presentation timestamp of every frame, which sampling and seeking rely on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fsar.pipeline.video.fflog import errors_logged, ffmpeg_message
from fsar.pipeline.video.headers import declared_size, file_truncated, mp4_orientation


class VideoError(Exception):
    """A video that cannot be read; `reason` is a short, stable category for summaries."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream.

    Attributes:
        path: the file.
        codec: FFmpeg decoder name (h264, vp9, mpeg4, gif ...).
        pix_fmt: decoded pixel format (yuv420p, yuv444p, yuv420p10le ...).
        width, height: coded frame size.
        fps: average frame rate.
        num_frames: frames in the stream (one per non-empty packet), not counting hidden ones.
        frame_pts: presentation timestamps of frames 0..num_frames-1, in stream time base.
        keyframe_pts: timestamps of the keyframes, ascending (hidden ones included).
        time_base: seconds per timestamp unit.
        pts_reliable: every packet had a timestamp, all distinct, and they are the
            timestamps of the frames decoded from them (not so with `packed_bframes`).
        hidden_frames: packets that give no frame: those the container marks to be
            decoded but not shown (an MP4 edit list skips them where a stream-copied cut
            starts after a keyframe; the decoder needs them as references), and, in a
            stream cut where it lost references (see `info_from_packets`), those the
            decoder cannot decode. The decoder drops both, as players do; frame indices
            count only the others.
        rotation: degrees counter-clockwise (0, 90, 180 or 270) the container says to turn
            the frames to show them (an MP4/MOV display matrix, as phones write); the
            decoders return frames turned, as players and FFmpeg's command line show them.
            `width` and `height` stay the coded size.
        mirrored: after turning, the frames are mirrored left to right to show them (a
            mirroring display matrix: some front-camera recordings, or a flip set in an
            editor); the decoders return them so.
        damaged: the decoder refused packets past the first keyframe, or returned fewer
            frames than the stream has (a damaged file; see `count_decodable`). Its frames
            are those a full decode returns, passing over the packets it refuses, as
            FFmpeg's command line reads it; frame indices count those.
        packed_bframes: an MPEG-4 stream (DivX 5, XviD in AVI) that stores each B-frame
            inside the packet of the P-frame after it, a placeholder packet keeping its
            place (see `divx_packed`). Its packets' timestamps are not those of the
            frames decoded from them, so the packets are unpacked and given their frames'
            timestamps (`unpack_bframes`); where that fails, it is decoded in order (its
            frames come out one per packet, as shown) and `pts_reliable` is False.
        truncated: the file ends before its container says it does (an interrupted
            download or copy; see `declared_size`), or inside a frame. Its frames are
            the ones the file holds whole: a frame cut off at the end is left out, as a
            short read (FFmpeg's decoder refuses it, and a player shows none).
        sample_aspect_ratio: (num, den), the width of a coded pixel over its height, as
            FFmpeg guesses it (the container's, else the bitstream's); None when neither
            says. The decoders return the pixels as coded, as `ffmpeg -i` writes them: a
            player stretches frames whose ratio is not 1:1 to it.
    """

    path: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    num_frames: int
    frame_pts: tuple[int, ...] = field(repr=False)
    keyframe_pts: tuple[int, ...] = field(repr=False)
    time_base: float
    pts_reliable: bool
    hidden_frames: int = 0
    rotation: int = 0
    mirrored: bool = False
    truncated: bool = False
    damaged: bool = False
    packed_bframes: bool = False
    sample_aspect_ratio: tuple[int, int] | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the frames as shown, after the rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    def timestamp(self, index: int) -> float:
        """Seconds from the stream's first frame to frame `index`."""
        if self.pts_reliable:
            return (self.frame_pts[index] - self.frame_pts[0]) * self.time_base
        return index / self.fps


# Codecs whose frames leave the decoder in packet order (no reordering delay to learn) and
# whose frame size a Matroska/WebM header states: for these, nothing FFmpeg learns by
# decoding a first frame while opening changes how the stream decodes.
HEADER_ONLY_CODECS = frozenset({"vp8", "vp9", "av1"})


def open_video(path: str | os.PathLike, probe_frames: bool = True):
    """Open `path` with PyAV; returns (container, its first video stream).

    Args:
        path: the video file.
        probe_frames: let FFmpeg decode the first frame while opening, to learn the pixel
            format and whatever the container does not state. With False, VP8, VP9 and AV1
            in Matroska/WebM open from the header alone (about 2 ms less per 240p VP9
            clip here, the cost of decoding its keyframe once more); their pixel format is
            then unknown until a frame is decoded. Other files open as with True.

    Raises:
        VideoError: missing, empty or unreadable file, or no video stream.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError("missing", str(path))
    if path.stat().st_size == 0:
        raise VideoError("empty file", str(path))
    if not probe_frames and path.suffix.lower() in (".webm", ".mkv"):
        try:  # an empty decoder whitelist: avformat_find_stream_info may open no decoder
            container, stream = _open(path, {"codec_whitelist": "none"})
        except VideoError:  # a bad file fails below, with the reason a probed open gives
            pass
        else:
            cc = stream.codec_context
            if "matroska" in container.format.name and cc is not None and cc.codec.canonical_name in HEADER_ONLY_CODECS and cc.width > 0 and cc.height > 0:
                return container, stream
            container.close()
    return _open(path, None)


def _open(path: Path, options: dict | None):
    import av  # heavy import, kept local

    errors = errors_logged()
    try:
        container = av.open(str(path), options=options)
    except av.FFmpegError as e:
        message = ffmpeg_message(e, errors)
        if file_truncated(path):  # e.g. an MP4 whose index (moov), written last, was never reached
            raise VideoError("truncated file", f"{path}: {path.stat().st_size} bytes where its header declares {declared_size(path)}; {message}") from None
        raise VideoError("unreadable container", f"{path}: {message}") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError("no video stream", f"{path} has streams: {', '.join(kinds)}")
    return container, container.streams.video[0]


def demux_packets(container, stream, path, unpack: bool = True) -> tuple[list, bool, str]:
    """Every whole, non-empty packet of `stream`, in decode order (flush packets and AVI
    placeholders dropped); whether any were cut off at the end: packets the demuxer
    read short because the file ends inside them (flagged corrupt) are dropped from the
    end (a corrupt packet before the last whole one stays; the decoder conceals it); and
    how B-frames are packed: "" (not), "unpacked" (packed in the file, the packets given
    unpacked: see `unpack_bframes`) or "packed" (left packed: the filter failed, or not
    `unpack`)."""
    import av

    errors = errors_logged()
    try:
        packets = [p for p in container.demux(stream) if p.size > 0]
    except av.FFmpegError as e:
        raise VideoError("corrupt stream", f"{path}: {ffmpeg_message(e, errors)}") from None
    whole = len(packets)
    while whole and packets[whole - 1].is_corrupt:
        whole -= 1
    cut_short = whole < len(packets)
    packets = packets[:whole]
    cc = stream.codec_context
    packing = ""
    if packets and cc is not None and cc.codec.canonical_name == "mpeg4" and divx_packed(cc.extradata, packets[0]):
        unpacked = unpack_bframes(stream, packets) if unpack else None
        packing = "packed" if unpacked is None else "unpacked"
        packets = unpacked or packets
    return packets, cut_short, packing


def info_from_packets(path, stream, packets: list, cut_short: bool = False, packing: str = "") -> VideoInfo:
    """Stream facts from its demuxed packets: one frame per packet, except the packets marked
    to be discarded (decoded as references, never shown). `cut_short`, `packing`: as
    `demux_packets` says.

    A stream that may have lost references to a cut (see `_cut_references`) is decoded
    through once, and its frames are the ones the decoder returns: it drops those it cannot
    decode.
    """
    if not packets:
        raise VideoError("no frames", f"{path}: the file ends inside its first frame" if cut_short else str(path))
    facts = [(p.pts, p.is_keyframe, p.is_discard) for p in packets]  # read once: each is a call into PyAV
    shown_pts = [t for t, _, discard in facts if not discard]
    damaged = False
    if _cut_references(facts):
        shown_pts, damaged = _decoded_pts(stream, packets)
    if not shown_pts:
        raise VideoError("no frames", f"{path}: none of its {len(packets)} frames is to be shown or can be decoded")
    pts = [t for t in shown_pts if t is not None]
    keys = [t for t, key, _ in facts if t is not None and key]
    every_pts = [t for t, _, _ in facts if t is not None]
    cc = stream.codec_context
    orientation = mp4_orientation(path) if "mov" in stream.container.format.name.split(",") else (0, False)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    tb = float(stream.time_base) if stream.time_base else 0.0
    if fps <= 0 and tb > 0 and len(pts) > 1 and max(pts) > min(pts):
        fps = (len(pts) - 1) / ((max(pts) - min(pts)) * tb)
    return VideoInfo(
        path=str(path),
        codec=cc.codec.canonical_name,  # h264, vp9, av1 (not the decoder's own name, e.g. libdav1d)
        pix_fmt=cc.format.name if cc.format else "unknown",
        width=cc.width,
        height=cc.height,
        fps=fps if fps > 0 else 25.0,
        num_frames=len(shown_pts),
        frame_pts=tuple(sorted(pts)),
        keyframe_pts=tuple(sorted(keys)),
        time_base=tb,
        pts_reliable=not damaged and packing != "packed" and (
            len(every_pts) == len(packets) and len(set(every_pts)) == len(every_pts)
            and len(pts) == len(shown_pts) and len(set(pts)) == len(pts) and tb > 0
        ),
        hidden_frames=len(packets) - len(shown_pts),
        rotation=orientation[0],
        mirrored=orientation[1],
        truncated=cut_short or file_truncated(path),
        damaged=damaged,
        packed_bframes=bool(packing),
        sample_aspect_ratio=(sar.numerator, sar.denominator) if (sar := stream.sample_aspect_ratio) else None,
    )


# How an MPEG-4 Part 2 encoder says it packs B-frames: user data "DivX<version>b<build>p"
# (or "...Build..."), the trailing "p" for packed, as DivX 5 writes it and XviD copies it.
# FFmpeg's decoder reads the same string to unpack them (`divx_packed`).
_DIVX_PACKED = re.compile(rb"DivX\d+(?:Build|b)\d+p")
_DIVX_USER_DATA = re.compile(rb"DivX\d+(?:Build|b)\d+")
_VOP_START = b"\x00\x00\x01\xb6"
_VOP_TYPES = "IPBS"  # vop_coding_type, the VOP header's first two bits


def divx_packed(extradata: bytes | None, first_packet) -> bool:
    """Whether an MPEG-4 Part 2 stream packs its B-frames, by the user data in its codec
    header: the first packet's, or where that has none, the extradata's (the AVI stream
    header's copy), as FFmpeg's decoder reads them."""
    data = bytes(first_packet)
    if _DIVX_USER_DATA.search(data):
        return bool(_DIVX_PACKED.search(data))
    return bool(_DIVX_PACKED.search(extradata or b""))


def unpack_bframes(stream, packets: list) -> list | None:
    """Packed B-frames (see `VideoInfo.packed_bframes`) as an ordinary stream: FFmpeg's
    `mpeg4_unpack_bframes` filter gives each B-frame its own packet in the placeholder's
    place (and clears the packed flag in the user data), and each packet gets the
    timestamp of the frame decoded from it. FFmpeg's parser gave them timestamps for an
    unpacked stream; here a frame's timestamp is the one of its place in display order,
    known from the frame types: a B-frame is shown as it is decoded, an I- or P-frame when
    the next one is. Then frames are matched by timestamp, jumps and non-reference
    frames skipped as in any stream.

    Returns None when the filter fails or its packets are not one frame (VOP) each: the
    stream is then decoded in order, as packed.
    """
    import av
    import av.bitstream

    def copy(p):  # the filter takes a packet's data, emptying it; `packets` must stay whole
        q = av.Packet(bytes(p))
        q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
        return q

    try:
        bsf = av.bitstream.BitStreamFilterContext("mpeg4_unpack_bframes", stream)
        out = [q for p in packets for q in bsf.filter(copy(p))]
        out += bsf.filter(None)
    except (av.FFmpegError, ValueError):
        return None
    types = []
    for q in out:
        data = bytes(q)
        at = data.find(_VOP_START)
        if at < 0 or at + 4 >= len(data) or data.find(_VOP_START, at + 4) >= 0:
            return None
        types.append(_VOP_TYPES[data[at + 4] >> 6])
    dts = [q.dts for q in out]
    if len(out) != len(packets) or types[0] != "I" or None in dts or len(set(dts)) != len(dts):
        return None
    shown, pending = [], None  # packet indices in display order
    for k, t in enumerate(types):
        if t == "B":
            shown.append(k)
        else:
            if pending is not None:
                shown.append(pending)
            pending = k
    shown.append(pending)
    for place, k in zip(sorted(dts), shown):
        out[k].pts = place
    return out


def _cut_references(facts: list[tuple]) -> bool:
    """Whether the stream may start with frames whose references were cut away: its first
    packet is not a keyframe (cut at a packet that is not one), or the first keyframe has
    leading pictures, decoded after it but shown before it (an open GOP: an HEVC CRA or an
    H.264 recovery point, whose leading pictures may reference frames before it; Matroska
    stores those it cannot show with no timestamp)."""
    first, key, _ = facts[0]  # (pts, is_keyframe, is_discard) of each packet, in decode order
    if not key or first is None:
        return True
    return any(t is None or t < first for t, _, _ in facts)


def count_decodable(path, stream, packets: list, info: VideoInfo) -> VideoInfo:
    """`info` of a stream whose decoding failed (a refused packet, or fewer frames out than
    it has), made to describe the frames a full decode returns when it passes over every
    packet the decoder refuses, as FFmpeg's command line does: flagged `damaged`, with
    those frames counted and their timestamps, to be decoded in order (`pts_reliable`
    False), passing over the same packets.

    Raises:
        VideoError: "decode error" when no frame decodes at all.
    """
    return _as_decoded(path, packets, info, _decoded_pts(stream, packets)[0])


def recount_if_damaged(path, stream, packets: list, info: VideoInfo) -> VideoInfo | None:
    """As `count_decodable` where a full decode of `packets` gives fewer frames than `info`
    counts, or refuses a packet past the first keyframe: damage that the decoder told only
    its log of (H.264 drops a frame whose slice headers are garbled). None where it gives
    every frame. The decoder is left flushed."""
    pts, refused = _decoded_pts(stream, packets)
    return _as_decoded(path, packets, info, pts) if refused or len(pts) < info.num_frames else None


def _as_decoded(path, packets: list, info: VideoInfo, pts: list) -> VideoInfo:
    if not pts:
        raise VideoError("decode error", f"{path}: none of its {len(packets)} packets decodes")
    return dataclasses.replace(
        info,
        num_frames=len(pts),
        frame_pts=tuple(sorted(t for t in pts if t is not None)),
        pts_reliable=False,
        hidden_frames=max(0, len(packets) - len(pts)),
        damaged=True,
    )


def _decoded_pts(stream, packets: list) -> tuple[list, bool]:
    """Timestamps of the frames a full decode of `packets` returns, in the order it returns
    them, passing over the packets the decoder refuses, as FFmpeg's command line does; and
    whether it refused one at or after the first keyframe (damage, where before it a frame
    only lacks the references a cut took: VP9 refuses those). The decoder is left flushed,
    ready to start again."""
    import av

    cc = stream.codec_context
    cc.skip_frame = "DEFAULT"
    out = []
    keyed = refused = False
    try:
        for packet in [*packets, None]:  # None drains the decoder
            keyed = keyed or packet is None or packet.is_keyframe
            try:
                out.extend(f.pts for f in cc.decode(packet))
            except av.FFmpegError:
                refused = refused or keyed
    finally:
        cc.flush_buffers()
    return out, refused


def probe(path: str | os.PathLike) -> VideoInfo:
    """Demux the first video stream of `path` (no decoding, unless a cut may have taken references away).

    Raises:
        VideoError: missing, empty or unreadable file, no video stream, or no frames.
    """
    container, stream = open_video(path)
    with container:
        stream.codec_context.thread_count = 1  # should it decode (see `info_from_packets`)
        return info_from_packets(path, stream, *demux_packets(container, stream, path))
