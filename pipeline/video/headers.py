"""What a container's own header says, read without FFmpeg: the size it declares, and how
an MP4/MOV's display matrix turns and mirrors its frames.

Each reader walks a few box or chunk headers (microseconds per file), and treats a header
it cannot walk as saying nothing.
"""

from __future__ import annotations

import math
import os
import struct


def file_truncated(path) -> bool:
    """Whether `path` is shorter than the size its container's header declares (see `declared_size`)."""
    try:
        declared = declared_size(path)
        return declared is not None and declared > os.path.getsize(path)
    except (OSError, struct.error):  # unreadable, or a header cut inside a 64-bit size
        return False


def declared_size(path) -> int | None:
    """The file size the container's own header implies, where it states one: the end of
    the last top-level box an MP4/MOV's headers announce, of the RIFF chunks of an AVI
    (OpenDML's extensions included), or of a Matroska/WebM Segment (None when written
    with an unknown size, as live recorders do). None for formats that state no size
    (MPEG-TS, MPEG-PS, FLV, GIF ...) or a header this cannot read. A download or copy
    that stopped early leaves a file shorter than this."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12:
            return None
        if head[:4] == b"RIFF":
            return _riff_end(f, size)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return _ebml_segment_end(f)
        if head[4:8] in _BMFF_TOP:
            return _bmff_end(f, size)
    return None


# Top-level box types an ISO-BMFF file (MP4, MOV, 3GP) starts with, and those it may hold:
# the walk stops at any other type, since bytes after the last box may look like a box header.
_BMFF_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"sidx", b"moof"})
_BMFF_BOXES = _BMFF_TOP | {b"mfra", b"meta", b"pdin", b"ssix", b"prft", b"emsg", b"uuid", b"udta"}


def _riff_end(f, size: int) -> int:
    """Where the chain of RIFF chunks (OpenDML's AVIX after the first) ends, as their headers
    declare (sizes padded to even). It stops at the first header past the file's end, and
    at a chunk other than RIFF: bytes after the last."""
    pos = 0
    while pos + 8 <= size:
        f.seek(pos)
        kind, length = struct.unpack("<4sI", f.read(8))
        if kind != b"RIFF":
            break
        pos += 8 + length + (length & 1)
    return pos


def _bmff_end(f, size: int) -> int:
    """Where the top-level boxes of an ISO-BMFF file end, as their headers declare. It stops
    at the first header past the file's end, and at a type not in `_BMFF_BOXES`: bytes
    after the last box may look like a box header."""
    last = 0
    for kind, _, stop in _boxes(f, 0, size, clamp=False):
        if kind not in _BMFF_BOXES:
            break
        last = stop
    return last


def _ebml_segment_end(f) -> int | None:
    """End of the Matroska Segment that follows the EBML header, or None for an unknown size."""
    f.seek(4)
    header_size, _ = _vint(f)
    if header_size is None:
        return None
    f.seek(f.tell() + header_size)
    if f.read(4) != b"\x18\x53\x80\x67":  # Segment
        return None
    segment_size, _ = _vint(f)
    return None if segment_size is None else f.tell() + segment_size


def _vint(f) -> tuple[int | None, int]:
    """An EBML variable-length size: (value, or None when it is "unknown", all ones; its length)."""
    first = f.read(1)
    if not first or first[0] == 0:
        return None, 0
    length = 9 - first[0].bit_length()
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None, 0
    value = first[0] & (0xFF >> length)
    for b in rest:
        value = value << 8 | b
    return (None if value == (1 << 7 * length) - 1 else value), length


def mp4_orientation(path) -> tuple[int, bool]:
    """How the display matrix of the first video track of an MP4/MOV file turns its frames,
    read from the `tkhd` box (PyAV does not expose the stream's display matrix): (counter-
    clockwise degrees 0, 90, 180 or 270, then whether to mirror left to right), as FFmpeg's
    command line shows the frames (`ffmpeg -i` with its default autorotate; `_ORIENTATIONS`).
    (0, False) for no matrix, one that turns by an angle off a multiple of 90 degrees by
    more than one degree, or a header this cannot walk. As in FFmpeg, the track's matrix is
    applied after the movie header's (`mvhd`, the identity in practice, when it comes
    before the track)."""
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            for kind, start, stop in _boxes(f, 0, end):
                if kind != b"moov":
                    continue
                movie = _IDENTITY
                for kind, t0, t1 in _boxes(f, start, stop):
                    if kind == b"mvhd":  # past the times, time scale and duration, then rate, volume, reserved
                        movie = _read_matrix(f, t0, (16, 28), 16)
                    elif kind == b"trak" and _handler(f, t0, t1) == b"vide":
                        track = _tkhd_matrix(f, t0, t1)
                        return _orientation(_compose(track, movie)) if track else (0, False)
                return 0, False
    except (OSError, struct.error, ValueError, IndexError):
        pass
    return 0, False


def _boxes(f, start: int, end: int, clamp: bool = True):
    """(type, content start, content end) of each ISO-BMFF box between `start` and `end`;
    with `clamp` False, the end is where the box's header says it ends, even past `end`."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        head = 8
        if size == 1:  # a 64-bit size follows
            (size,) = struct.unpack(">Q", f.read(8))
            head = 16
        elif size == 0:  # to the end of the enclosing box
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(pos + size, end) if clamp else pos + size
        pos += size


def _handler(f, start: int, end: int) -> bytes | None:
    """The handler type of a `trak` (b"vide" for video), from mdia/hdlr."""
    for kind, m0, m1 in _boxes(f, start, end):
        if kind == b"mdia":
            for kind, h0, _ in _boxes(f, m0, m1):
                if kind == b"hdlr":
                    f.seek(h0 + 8)  # version and flags, pre_defined
                    return f.read(4)
    return None


# The display matrix's first two columns (a b / c d, each column scaled to unit length and
# rounded to -1, 0 or 1) -> (counter-clockwise degrees, then mirrored left to right). Each
# entry was checked against `ffmpeg -i`'s output for a file with that matrix: it rotates by
# the angle of (a, b) and, for a mirroring matrix (a*d - b*c < 0), transposes or flips.
_ORIENTATIONS = {
    (1, 0, 0, 1): (0, False), (0, -1, 1, 0): (90, False), (-1, 0, 0, -1): (180, False), (0, 1, -1, 0): (270, False),
    (-1, 0, 0, 1): (0, True), (0, -1, -1, 0): (90, True), (1, 0, 0, -1): (180, True), (0, 1, 1, 0): (270, True),
}
_SIN_1_DEGREE = math.sin(math.radians(1))


Matrix = tuple[tuple[float, float, float], ...]
_IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _read_matrix(f, start: int, versioned: tuple[int, int], fixed: int) -> Matrix:
    """The ISO-BMFF matrix (a b u / c d v / x y w) of the full box whose content starts at
    `start`, after its version and flags, `versioned` bytes (for version 0, 1) and `fixed`
    more, as reals: a to d, x and y are 16.16 fixed point, u, v and w 2.30."""
    f.seek(start)
    version = f.read(1)[0]
    f.seek(start + 4 + versioned[version == 1] + fixed)
    m = struct.unpack(">9i", f.read(36))
    return tuple(tuple(m[3 * i + j] / (1 << (30 if j == 2 else 16)) for j in range(3)) for i in range(3))


def _compose(track: Matrix, movie: Matrix) -> Matrix:
    """The matrix FFmpeg's demuxer gives a track: its own, then the movie's (row vectors)."""
    return tuple(tuple(sum(track[i][e] * movie[e][j] for e in range(3)) for j in range(3)) for i in range(3))


def _tkhd_matrix(f, start: int, end: int) -> Matrix | None:
    for kind, h0, _ in _boxes(f, start, end):
        if kind == b"tkhd":  # past the times, ids and duration, then reserved, layer, group, volume
            return _read_matrix(f, h0, (20, 32), 16)
    return None


def _orientation(m: Matrix) -> tuple[int, bool]:
    (a, b, _), (c, d, _), _ = m
    s0, s1 = math.hypot(a, c), math.hypot(b, d)  # as FFmpeg's av_display_rotation_get scales them
    if s0 == 0 or s1 == 0:
        return 0, False
    signs = tuple(0 if abs(x) < _SIN_1_DEGREE else (1 if x > 0 else -1) for x in (a / s0, b / s1, c / s0, d / s1))
    return _ORIENTATIONS.get(signs, (0, False))
