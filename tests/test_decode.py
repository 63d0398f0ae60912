"""Sparse decoding gives exactly the frames a full decode gives, whatever the backend."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from corpus import RefusingBackend, clip, damage_packet, decodable_frames, faststart_copy, set_display_matrix, stream_copy_cut, write_rotated, write_tagged, write_with_encoder
from fsar.pipeline.sampling import segment_middles
from fsar.pipeline.shard.worker import encode_jpeg
from fsar.pipeline.video.decode import AutoDecoder, DaliDecoder, Planes, PyAVDecoder, make_decoder, resize_frames, scaled_size
from fsar.pipeline.video.encode import CODECS, write_video
from fsar.pipeline.video.headers import declared_size
from fsar.pipeline.video.probe import VideoError, open_video, probe


def full_decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def index_sets(n: int, rng) -> list[list[int]]:
    sets = [segment_middles(n, 8), segment_middles(n, 16), [n - 1, 0], [0] * 3]
    sets.append(sorted(rng.choice(n, size=min(8, n), replace=False).tolist()))
    sets.append(rng.choice(n, size=min(8, n), replace=False).tolist())  # unsorted
    return sets


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_pyav_sparse_equals_full_decode_on_real_clips(real_clips, skip_nonref):
    dec = PyAVDecoder(skip_nonref=skip_nonref)
    rng = np.random.default_rng(0)
    for path in real_clips:
        info = probe(path)
        ref = full_decode(path)
        assert info.num_frames == len(ref), path
        for idx in index_sets(info.num_frames, rng):
            got = dec.decode(info, idx)
            assert got.shape[0] == len(idx)
            for k, i in enumerate(idx):
                assert np.array_equal(got[k], ref[i]), (path.name, i)


@pytest.mark.parametrize("unpack", [True, False])
@pytest.mark.parametrize("skip_nonref", [True, False])
def test_packed_b_frames_give_the_frame_a_full_decode_gives_at_every_index(real_clips, skip_nonref, unpack, monkeypatch):
    """DivX/XviD AVIs that pack each B-frame into the P-frame's packet (two of UCF101's four
    here): their packets' timestamps name other frames than the ones decoded from them, so
    matching by them gave, at one index in three, a neighbouring frame, with nothing to
    show it was wrong. Unpacked and given their frames' timestamps, or left packed and
    decoded in order, every index read alone must be the full decode's frame."""
    import fsar.pipeline.video.probe as probe_module

    if not unpack:  # the filter runs, but its packets are refused, as when it fails on a file
        monkeypatch.setattr(probe_module, "_VOP_START", b"no such start code")
    dec = PyAVDecoder(skip_nonref=skip_nonref)
    packed = [p for p in real_clips if probe(p).packed_bframes]
    assert {p.name for p in packed} == {"v_ApplyEyeMakeup_g01_c01.avi", "v_Shotput_g05_c02.avi"}
    for path in packed:
        info = probe(path)
        assert info.pts_reliable == unpack and not DaliDecoder("gpu").supports(info)
        ref = full_decode(path)
        assert info.num_frames == len(ref)
        assert [round(info.timestamp(i) * info.fps, 6) for i in (0, 1, 2, 3)] == [0, 1, 2, 3]
        for i in range(info.num_frames):
            assert np.array_equal(dec.decode(info, [i])[0], ref[i]), (path.name, i)
        rng = np.random.default_rng(0)
        for idx in index_sets(info.num_frames, rng):
            got = dec.decode(info, idx)
            assert all(np.array_equal(got[k], ref[i]) for k, i in enumerate(idx)), (path.name, idx)


def test_a_damaged_clip_with_packed_b_frames_reads_as_ffmpeg_reads_it(real_clips, tmp_path):
    """Unpacked, a packed clip with noise in its bytes was flagged damaged, and 6 of its 8
    sampled frames differed from the ones FFmpeg's command line reads. It is read packed
    then, as FFmpeg reads it. (Read packed, the decoder conceals the damage and gives no
    frame for the placeholder packet after it, saying so only in its log: a sparse read
    counted 164 frames where FFmpeg counts 163, until the logged errors sent it through a
    full count.)"""
    src = next(p for p in real_clips if p.name == "v_ApplyEyeMakeup_g01_c01.avi")
    data = bytearray(src.read_bytes())
    at = int(len(data) * 0.3)
    data[at : at + 800] = np.random.default_rng(1).integers(0, 256, 800, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    ref = decodable_frames(bad)
    for every in (False, True):
        sample = (lambda n: list(range(n))) if every else (lambda n: segment_middles(n, 8))
        info, indices, frames = PyAVDecoder().read(bad, sample, lambda w, h: None)
        assert info.packed_bframes and info.damaged and info.num_frames == len(ref) == 163
        assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, indices))


def test_unpacked_b_frames_are_not_taken_for_packed_ones(tmp_path):
    """FFmpeg's own MPEG-4 encoder writes B-frames unpacked, with timestamps that match."""
    path = write_video(tmp_path / "b.avi", clip(40), 25, "mpeg4", bframes=2)
    info = probe(path)
    assert not info.packed_bframes and info.pts_reliable


def _jpeg_rgb(frame) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(encode_jpeg(frame, 90)).astype(np.int16)


def test_the_sample_aspect_ratio_is_ffmpegs_guess(real_clips, tmp_path):
    """The container's pixel aspect ratio, else the bitstream's; None where neither gives one."""
    sar = {p.name: probe(p).sample_aspect_ratio for p in real_clips}
    assert sar["abseiling_k400.mp4"] == (2048, 2043) and sar["v_Shotput_g05_c02.avi"] == (1, 1)
    assert sar["v_CricketShot_g04_c01_rgb.gif"] is None
    for ext in ("mp4", "mkv", "avi"):
        path = write_with_encoder(tmp_path / f"a.{ext}", "libx264" if ext != "avi" else "mpeg4", clip(4, 128, 96), sar=Fraction(16, 11))
        assert probe(path).sample_aspect_ratio == (16, 11), ext


def test_planar_frames_make_the_same_jpegs_as_rgb_frames(tmp_path, real_clips):
    """The shard stage's fast path (resized BT.601 planes straight into the JPEG) against the
    plain one (RGB frames, which the encoder converts): same frames, and colours at least as
    close to the source frames where those are known."""
    frames = clip(12, seed=7)
    made = {
        "limited h264": write_video(tmp_path / "a.mp4", frames, 12, "h264"),
        "full-range vp9": write_tagged(tmp_path / "b.webm", frames, "libvpx-vp9", full_range=True),
        "yuv444p": write_video(tmp_path / "c.mp4", frames, 12, "h264", pix_fmt="yuv444p", reproducible=False),
        "10-bit hevc": write_video(tmp_path / "d.mp4", frames, 12, "hevc", pix_fmt="yuv420p10le"),
        "bt709": write_tagged(tmp_path / "e.mp4", frames, "libx264", colorspace=1),  # AVCOL_SPC_BT709
        "gif": write_video(tmp_path / "f.gif", frames, 12, "gif"),
    }
    dec = PyAVDecoder()
    checked = 0
    for name, path in [*made.items(), *((p.name, p) for p in real_clips)]:
        info = probe(path)
        idx = segment_middles(info.num_frames, 8)
        for short_side in (0, 80):  # as decoded, and resized (up for the synthetic clips, down for the real ones)
            size = scaled_size(info.width, info.height, short_side) if short_side else None
            rgb = dec.decode(info, idx, size)
            planar = dec.decode(info, idx, size, planar=True)
            assert len(planar) == len(idx)
            # BT.709 and RGB sources keep the RGB path: their YUV is not JPEG's.
            expect_planes = name != "bt709" and path.suffix != ".gif"
            for k in range(len(idx)):
                p = planar[k]
                assert isinstance(p, Planes) == expect_planes, (name, k)
                if not expect_planes:
                    assert np.array_equal(p, rgb[k]), name
                    continue
                h, w = rgb[k].shape[:2]
                assert p.y.shape == (h, w) and p.u.shape == p.v.shape == ((h + 1) // 2, (w + 1) // 2), name
                a, b = _jpeg_rgb(p), _jpeg_rgb(rgb[k])
                assert np.abs(a - b).mean() < 2.5, (name, short_side, k)
                assert np.abs((a - b).reshape(-1, 3).mean(0)).max() < 2.5, (name, short_side, k)  # no colour cast
                if name in made and size is None:  # the source frame is known
                    src = frames[idx[k]].astype(np.int16)
                    assert np.abs(a - src).mean() <= np.abs(b - src).mean() + 0.5, (name, k)
                    assert np.abs((a - src).reshape(-1, 3).mean(0)).max() < 1.5, (name, k)
                checked += 1
    assert checked > 8 * 2 * 20


@pytest.mark.parametrize("width,height", [(424, 240), (320, 240), (640, 360)])
def test_resized_rgb_frames_keep_the_source_colours(tmp_path, width, height):
    """The RGB path (BT.709 and RGB sources) resizes to planar RGB and packs it; FFmpeg's
    one-pass packed output was 2-3 grey levels dark at SSv2's 424x240 to 452x256."""
    frames = clip(6, width=width, height=height, seed=4)
    path = write_tagged(tmp_path / "bt709.mp4", frames, "libx264", colorspace=1)
    info = probe(path)
    idx = list(range(info.num_frames))
    size = scaled_size(width, height, 256)
    got = PyAVDecoder().decode(info, idx, size).astype(np.int16)
    want = resize_frames(frames[idx], size).astype(np.int16)  # the source frames, resized as RGB
    assert got.shape == want.shape
    assert np.abs((got - want).reshape(-1, 3).mean(0)).max() < 0.75  # no bias in any channel
    assert np.abs(got - want).mean() < 3.0  # compression noise


def test_planar_jpegs_do_not_depend_on_the_bytes_beside_the_planes():
    """Planes are views into decoder frames whose padding holds anything; odd sizes once let
    that leak into the JPEG."""
    rng = np.random.default_rng(0)
    for h, w in [(144, 185), (145, 186), (145, 185), (144, 186), (1, 1)]:
        y = rng.integers(0, 256, (h, w), dtype=np.uint8)
        u = rng.integers(0, 256, ((h + 1) // 2, (w + 1) // 2), dtype=np.uint8)
        v = rng.integers(0, 256, u.shape, dtype=np.uint8)

        def beside(a, fill):  # a view into a larger buffer, the bytes around it set to `fill`
            buf = np.full((a.shape[0] + 3, a.shape[1] + 9), fill, np.uint8)
            buf[: a.shape[0], : a.shape[1]] = a
            return buf[: a.shape[0], : a.shape[1]]

        jpegs = {encode_jpeg(Planes(beside(y, f), beside(u, f), beside(v, f)), 90) for f in (0, 7, 255)}
        assert len(jpegs) == 1, (h, w)
        assert jpegs == {encode_jpeg(Planes(y, u, v), 90)}  # contiguous planes, as in any other process


def test_webm_opens_from_its_header_and_reads_as_a_probed_open(tmp_path):
    """VP8/VP9 WebM skip FFmpeg's probing decode; what the stage reads is unchanged."""
    dec = PyAVDecoder()
    sample = lambda n: segment_middles(n, 8)  # noqa: E731
    size_for = lambda w, h: scaled_size(w, h, 80)  # noqa: E731
    clips = [("a.webm", "vp9", 30), ("b.webm", "vp8", 17), ("c.mkv", "vp9", 9), ("d.mp4", "h264", 12), ("e.avi", "mpeg4", 12), ("f.webm", "av1", 12)]
    for name, codec, n in clips:
        if codec == "av1":  # no AV1 entry in CODECS: SVT-AV1, which PyAV's FFmpeg carries
            path = write_with_encoder(tmp_path / name, "libsvtav1", clip(n, seed=n), rate=12)
        else:
            path = write_video(tmp_path / name, clip(n, seed=n), 12, codec)
        container, stream = open_video(path, probe_frames=False)
        with container:
            header_only = stream.codec_context.format is None  # no frame was decoded to learn it
        assert header_only == (codec in ("vp9", "vp8", "av1")), name
        assert probe(path).codec == codec, name
        info, idx, frames = dec.read(path, sample, size_for)
        assert info == probe(path), name  # every fact, the pixel format included
        ref_info, ref_idx, ref_frames, _ = dec._read(path, sample, size_for, False, probe_frames=True)
        assert idx == ref_idx and np.array_equal(frames, ref_frames), name


def test_a_webm_header_with_the_wrong_frame_size_is_opened_in_full(tmp_path):
    src = write_video(tmp_path / "src.webm", clip(10), 12, "vp9")  # 96x64
    lie = tmp_path / "lie.webm"
    with av.open(str(src)) as i, av.open(str(lie), "w") as o:
        s_in = i.streams.video[0]
        s_out = o.add_stream_from_template(s_in)
        s_out.width, s_out.height = 128, 96  # the header states another size
        for packet in i.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                o.mux(packet)
    container, stream = open_video(lie, probe_frames=False)
    with container:
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 96)
    info, idx, frames = PyAVDecoder().read(lie, lambda n: [0, n - 1], lambda w, h: scaled_size(w, h, 32))
    assert (info.width, info.height, info.pix_fmt) == (96, 64, "yuv420p")
    assert frames.shape == (2, 32, 48, 3)  # resized from the true size, not the header's


def test_seeking_across_many_keyframes_is_exact(tmp_path):
    # One keyframe every 5 frames: sparse decoding seeks between them.
    frames = clip(60, seed=3)
    path = write_video(tmp_path / "gop5.mp4", frames, 25, "h264", gop=5)
    info = probe(path)
    assert len(info.keyframe_pts) == 12
    ref = full_decode(path)
    for idx in ([3, 17, 41, 59], [0, 5, 10, 55], [58, 2, 30]):
        got = PyAVDecoder().decode(info, idx)
        for k, i in enumerate(idx):
            assert np.array_equal(got[k], ref[i]), i


def _decodes_as(dec: PyAVDecoder, info, ref: list[np.ndarray], index_lists) -> None:
    """Each list of indices, decoded sparsely from `info`, gives the frames of `ref` (a full decode)."""
    for idx in index_lists:
        got = dec.decode(info, idx)
        for k, i in enumerate(idx):
            assert np.array_equal(got[k], ref[i]), (info.path, idx, i)


def _sparse_reads_match(path, info, ref: list[np.ndarray], seed: int, skip_nonref: bool = True):
    """Every index set, decoded sparsely from `info` and read in one pass, gives the frames of
    `ref` (a full decode); returns what the one-pass read saw of the stream."""
    dec = PyAVDecoder(skip_nonref=skip_nonref)
    _decodes_as(dec, info, ref, index_sets(info.num_frames, np.random.default_rng(seed)))
    read_info, indices, frames = dec.read(path, lambda n: segment_middles(n, 8), lambda w, h: None)
    assert indices == segment_middles(read_info.num_frames, 8)
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, indices))
    return read_info


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_a_stream_copied_cut_reads_as_players_show_it(tmp_path, skip_nonref):
    """An MP4 cut without re-encoding starts at the keyframe before the cut, and its edit
    list hides the frames up to the cut: frame indices count only the frames shown."""
    src = write_video(tmp_path / "src.mp4", clip(40, seed=1), 25, "h264", gop=10, bframes=2)
    cut = stream_copy_cut(src, tmp_path / "cut.mp4", 14)
    info = probe(cut)
    ref = full_decode(cut)
    assert (info.num_frames, info.hidden_frames, len(ref)) == (26, 4, 26)
    assert all(np.array_equal(a, b) for a, b in zip(ref, full_decode(src)[14:]))  # the source's frames 14..39
    assert info.timestamp(0) == 0.0 and info.timestamp(25) == pytest.approx(1.0)
    assert _sparse_reads_match(cut, info, ref, seed=1, skip_nonref=skip_nonref) == info
    # DALI's frame index counts the hidden frames: `auto` gives such a video to PyAV, and `dali` refuses it
    dali = DaliDecoder("gpu")
    assert not dali.supports(info)
    with pytest.raises(VideoError, match="4 of its packets give no frame") as e:
        dali.decode(info, [0])
    assert e.value.reason == "hidden frames"
    frames, backend, tried = AutoDecoder([dali, PyAVDecoder()]).decode_any(info, [0, 25])
    assert backend == "pyav" and tried == "" and np.array_equal(frames[1], ref[25])


@pytest.mark.parametrize("codec,ext", [("h264", "mkv"), ("h264", "mp4"), ("vp9", "webm")])
def test_a_stream_cut_between_keyframes_counts_the_frames_it_can_decode(tmp_path, codec, ext):
    """Cut at a packet that is not a keyframe, a stream's first frames lack their references:
    the decoder drops them (H.264) or refuses them (VP9), and frame indices count the frames
    it returns."""
    src = write_video(tmp_path / f"src{CODECS[codec].ext}", clip(40, seed=2), 25, codec, gop=10, bframes=0 if codec == "h264" else None)
    cut = stream_copy_cut(src, tmp_path / f"cut.{ext}", 14, at_keyframe=False)
    info = probe(cut)
    ref = decodable_frames(cut)
    assert (info.num_frames, info.hidden_frames, len(ref)) == (20, 6, 20)
    assert all(np.array_equal(a, b) for a, b in zip(ref, full_decode(src)[20:]))  # from the keyframe at 20 on
    assert _sparse_reads_match(cut, info, ref, seed=2) == info
    assert not DaliDecoder("gpu").supports(info)


@pytest.mark.parametrize("fraction", [0.5, 0.8])
@pytest.mark.parametrize("codec,faststart", [("h264", True), ("hevc", True), ("vp9", False), ("mpeg4", False)])
def test_a_file_cut_short_keeps_the_frames_it_holds_whole(tmp_path, codec, faststart, fraction):
    """A download or copy stopped early (a web MP4 has its index first, so it still opens):
    the video is flagged truncated, the frame the file ends inside is left out (FFmpeg's
    decoder refuses it, or conceals what is missing), and every other frame is the whole
    file's frame at that timestamp."""
    whole = write_video(tmp_path / f"whole{CODECS[codec].ext}", clip(60, 128, 96, seed=3), 12, codec, gop=12)
    if faststart:
        whole = faststart_copy(whole, tmp_path / "web.mp4")
    with av.open(str(whole)) as c:
        start = next(p for p in c.demux(video=0) if p.size).pos  # the media data starts after the headers
        c.seek(0)
        by_pts = {f.pts: f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    data = whole.read_bytes()
    cut = tmp_path / f"cut{whole.suffix}"
    cut.write_bytes(data[: start + int(fraction * (len(data) - start))])  # stopped that far into the media data
    info = probe(cut)
    assert info.truncated and not probe(whole).truncated
    assert 0 < info.num_frames < 60
    ffmpeg_count = len(decodable_frames(cut))
    assert info.num_frames in (ffmpeg_count, ffmpeg_count - 1)  # less the concealed one, if any
    _sparse_reads_match(cut, info, [by_pts[t] for t in info.frame_pts], seed=5)
    assert not DaliDecoder("gpu").supports(info) and DaliDecoder("gpu").supports(probe(whole))


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "mpeg4"])
@pytest.mark.parametrize("where", [5, 12])  # a frame between keyframes; the keyframe at 12
def test_a_damaged_packet_is_passed_over_as_ffmpeg_reads_the_file(tmp_path, codec, where):
    """The decoder refuses a damaged packet (or conceals it, or drops the frames that lost
    it as a reference): the video is flagged damaged, and its frames are those of a full
    decode that passes over what the decoder refuses, as FFmpeg's command line reads it."""
    src = write_video(tmp_path / f"src{CODECS[codec].ext}", clip(60, 128, 96, seed=6), 12, codec, gop=12)
    bad = damage_packet(src, tmp_path / f"bad{CODECS[codec].ext}", where)
    ref = decodable_frames(bad)
    dec = PyAVDecoder()
    info = dec.read(bad, lambda n: list(range(n)), lambda w, h: None)[0]  # every frame: the damaged one is wanted
    assert info.num_frames == len(ref) and (info.damaged or codec == "vp9")  # FFmpeg's VP9 decoder reads the half packet without a complaint
    assert _sparse_reads_match(bad, info, ref, seed=7) == info
    assert not probe(src).damaged


@pytest.mark.parametrize("skip_nonref", [True, False])
def test_a_damaged_stream_cut_is_counted_as_ffmpeg_reads_it(tmp_path, skip_nonref):
    """A stream that starts between keyframes is counted by decoding it: damage past its
    first keyframe is passed over there too."""
    src = write_video(tmp_path / "src.mp4", clip(40, seed=2), 25, "h264", gop=10, bframes=0)
    cut = stream_copy_cut(src, tmp_path / "cut.mkv", 14, at_keyframe=False)
    bad = damage_packet(cut, tmp_path / "bad.mkv", 10)  # past the keyframe at 20 (packet 6)
    info = probe(bad)
    ref = decodable_frames(bad)
    assert info.damaged and not info.pts_reliable and info.num_frames == len(ref) < 20
    _sparse_reads_match(bad, info, ref, seed=8, skip_nonref=skip_nonref)


def test_a_file_whose_first_frame_is_cut_off_fails_with_the_reason(tmp_path):
    whole = write_video(tmp_path / "whole.avi", clip(12, 128, 96), 12, "mpeg4")
    with av.open(str(whole)) as c:
        first = next(p for p in c.demux(video=0) if p.size)
        end = first.pos + first.size // 2  # inside the first frame
    (tmp_path / "cut.avi").write_bytes(whole.read_bytes()[:end])
    with pytest.raises(VideoError, match="ends inside its first frame") as e:
        probe(tmp_path / "cut.avi")
    assert e.value.reason == "no frames"


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_declared_size_tells_a_whole_file_from_one_cut_short(tmp_path, codec):
    whole = write_video(tmp_path / f"whole{CODECS[codec].ext}", clip(12, 128, 96), 12, codec)
    size = whole.stat().st_size
    if codec == "gif":  # GIF states no size
        assert declared_size(whole) is None
        return
    assert declared_size(whole) == size
    assert not probe(whole).truncated
    (tmp_path / f"junk{whole.suffix}").write_bytes(whole.read_bytes() + b"\0trailing bytes")  # more than declared: whole
    assert not probe(tmp_path / f"junk{whole.suffix}").truncated
    short = tmp_path / f"short{whole.suffix}"
    short.write_bytes(whole.read_bytes()[:-1])
    assert declared_size(short) == size
    if codec == "mpeg4":  # AVI keeps its index last: one byte less still opens, flagged
        assert probe(short).truncated
    else:
        try:
            assert probe(short).truncated
        except VideoError as e:  # an MP4's index is last here: it no longer opens
            assert e.reason == "truncated file" and f"{size - 1} bytes where its header declares {size}" in str(e)


def test_a_matroska_segment_of_unknown_size_declares_none(tmp_path):
    frames = clip(6, 128, 96)
    path = tmp_path / "live.webm"
    with av.open(str(path), "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    assert declared_size(path) is None
    info = probe(path)
    assert not info.truncated and info.num_frames == 6


@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_a_rotated_mp4_is_returned_turned_as_shown(tmp_path, degrees, monkeypatch):
    """A display matrix (phones' portrait video) turns the frames for every backend, and the
    short side is the shown frame's; FFmpeg's own reading of the matrix is the reference."""
    path = write_rotated(tmp_path / "r.mp4", clip(12, 96, 64, seed=7), degrees)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        ffmpeg_angle = frame.rotation % 360  # counter-clockwise, as FFmpeg's command line turns it
    info = probe(path)
    assert info.rotation == ffmpeg_angle == degrees % 360
    assert (info.width, info.height) == (96, 64)
    assert info.display_size == ((64, 96) if degrees % 180 else (96, 64))
    k = info.rotation // 90
    ref = [np.rot90(f, k) for f in full_decode(path)]
    dec = PyAVDecoder()
    idx = [0, 5, 11, 3]
    got = dec.decode(info, idx)
    assert all(np.array_equal(got[j], ref[i]) for j, i in enumerate(idx))
    size_for = lambda w, h: scaled_size(w, h, 32)  # noqa: E731
    read_info, indices, frames = dec.read(path, lambda n: segment_middles(n, 4), size_for)
    size = size_for(*info.display_size)
    assert read_info == info and frames.shape == (4, size[1], size[0], 3)
    turned_first = resize_frames(np.stack([ref[i] for i in indices]), size)  # turn, then resize
    assert np.abs(frames.astype(np.int16) - turned_first).mean() < 1.5
    _, _, planes = dec.read(path, lambda n: segment_middles(n, 4), size_for, planar=True)
    assert all(p.y.shape == (size[1], size[0]) for p in planes)
    jpeg = _jpeg_rgb(planes[0])
    assert jpeg.shape == frames[0].shape and np.abs(jpeg.astype(np.int16) - frames[0]).mean() < 3
    # DALI returns the coded frames: the same turning applies (its decoder stood in for by PyAV's frames)
    dali = DaliDecoder("gpu")
    monkeypatch.setattr(dali, "frames_at", lambda data, indices, name: np.stack([full_decode(path)[i] for i in indices]))
    assert np.abs(dali.decode(info, indices, size).astype(np.int16) - frames).mean() < 2.0  # RGB resized, not YUV


# Display matrices (a b / c d) and the frames `ffmpeg -i` shows for each (checked by hand
# with FFmpeg 5.1's command line: mean absolute difference 0.0 for each of them).
SHOWN = {
    (1, 0, 0, 1): lambda f: f,
    (-1, 0, 0, -1): lambda f: f[::-1, ::-1],
    (0, 1, -1, 0): lambda f: np.rot90(f, -1),  # a quarter turn clockwise
    (0, -1, 1, 0): lambda f: np.rot90(f, 1),
    (-1, 0, 0, 1): lambda f: f[:, ::-1],  # mirrored left to right
    (1, 0, 0, -1): lambda f: f[::-1],  # upside down
    (0, 1, 1, 0): lambda f: np.swapaxes(f, 0, 1),  # about the main diagonal
    (0, -1, -1, 0): lambda f: np.swapaxes(f, 0, 1)[::-1, ::-1],  # about the other diagonal
}


@pytest.mark.parametrize("matrix", list(SHOWN))
def test_a_display_matrix_turns_and_mirrors_the_frames_as_ffmpeg_shows_them(tmp_path, matrix, monkeypatch):
    frames = clip(8, 96, 64, seed=9).copy()
    frames[:, :12, :20] = (250, 20, 20)  # marks that no turn or mirror leaves in place
    frames[:, -6:, 30:36] = (20, 250, 20)
    path = set_display_matrix(write_rotated(tmp_path / "m.mp4", frames, 0), *matrix)
    info = probe(path)
    ref = [np.ascontiguousarray(SHOWN[matrix](f)) for f in full_decode(path)]
    assert info.display_size == ref[0].shape[1::-1]
    _decodes_as(PyAVDecoder(), info, ref, [[0, 7, 3]])
    dali = DaliDecoder("gpu")  # its decoder stood in for by PyAV's coded frames
    monkeypatch.setattr(dali, "frames_at", lambda data, indices, name: np.stack([full_decode(path)[i] for i in indices]))
    assert np.array_equal(dali.decode(info, [2, 5]), np.stack([ref[2], ref[5]]))
    # The YUV planes the stage encodes are turned alike, after resizing the coded frame.
    (tmp_path / "plain.mp4").write_bytes(path.read_bytes())
    plain = set_display_matrix(tmp_path / "plain.mp4", 1, 0, 0, 1)  # the same file, no matrix
    size = scaled_size(*info.display_size, 32)
    (_, _, (shown,)), (_, _, (coded,)) = (
        PyAVDecoder().read(p, lambda n: [4], lambda w, h: s, planar=True)
        for p, s in ((path, size), (plain, size if ref[0].shape == frames[0].shape else size[::-1]))
    )
    assert all(np.array_equal(a, SHOWN[matrix](b)) for a, b in zip(shown, coded))


@pytest.mark.parametrize("movie,track", [((0, -1, 1, 0), (1, 0, 0, 1)), ((0, -1, 1, 0), (0, -1, 1, 0)), ((-1, 0, 0, 1), (0, -1, 1, 0)), ((0, 1, -1, 0), (-1, 0, 0, 1))])
def test_the_movie_header_matrix_turns_the_frames_before_the_track_matrix(tmp_path, movie, track):
    """FFmpeg applies a track's matrix after the movie header's (`mvhd`): its reading (the
    decoded frame's rotation) and the frames are as for the product set on the track alone."""
    frames = clip(6, 96, 64, seed=9).copy()
    frames[:, :12, :20] = (250, 20, 20)  # marks that no turn or mirror leaves in place
    path = set_display_matrix(set_display_matrix(write_rotated(tmp_path / "m.mp4", frames, 0), *movie, box=b"mvhd"), *track)
    (a, b), (c, d) = np.array(track).reshape(2, 2) @ np.array(movie).reshape(2, 2)
    (tmp_path / "one.mp4").write_bytes(path.read_bytes())
    one = set_display_matrix(set_display_matrix(tmp_path / "one.mp4", 1, 0, 0, 1, box=b"mvhd"), a, b, c, d)
    with av.open(str(path)) as container:
        ffmpeg_angle = next(container.decode(video=0)).rotation % 360
    info = probe(path)
    assert (info.rotation, info.mirrored) == (probe(one).rotation, probe(one).mirrored) != (0, False)
    assert info.rotation == ffmpeg_angle
    ref = [np.ascontiguousarray(SHOWN[(a, b, c, d)](f)) for f in full_decode(path)]
    _decodes_as(PyAVDecoder(), info, ref, [[0, 5, 2]])


@pytest.mark.parametrize(
    "encoder,ext",
    [("mpeg2video", "mpg"), ("mpeg2video", "ts"), ("wmv2", "wmv"), ("flv", "flv"), ("mjpeg", "avi"),
     ("h263", "3gp"), ("msmpeg4v2", "avi"), ("libx264", "mov"), ("libx264", "flv"), ("libx264", "ts"), ("libvpx", "mkv")],
)
def test_sparse_decoding_is_exact_in_the_containers_and_codecs_of_older_datasets(tmp_path, encoder, ext):
    """Every frame alone, and pairs that jump back and over keyframes, as a full decode gives them."""
    path = write_with_encoder(
        tmp_path / f"c.{ext}", encoder, clip(30, 128, 96, seed=8), gop=8,  # 128x96: a size H.263 allows
        b_frames=2 if encoder in ("mpeg2video", "libx264") else None, pix_fmt="yuvj420p" if encoder == "mjpeg" else "yuv420p",
    )
    info = probe(path)
    ref = full_decode(path)
    assert info.num_frames == len(ref) == 30 and info.hidden_frames == 0
    _decodes_as(PyAVDecoder(), info, ref, [[i] for i in range(30)] + [[29, 0], [15, 7], [1, 28, 14]])


@pytest.mark.parametrize("ext", ["mkv", "ts"])
def test_a_cut_at_an_open_gop_keyframe_counts_the_frames_it_can_decode(tmp_path, ext):
    """x265 writes open GOPs: cut at a CRA keyframe, the pictures decoded after it but shown
    before it reference frames cut away, and the decoder drops them (Matroska stores them
    with no timestamp): frame indices count the frames it returns."""
    src = write_video(tmp_path / "src.mp4", clip(40, seed=4), 12, "hevc", gop=10)
    cut = stream_copy_cut(src, tmp_path / f"cut.{ext}", 20)  # at the third keyframe
    with av.open(str(cut)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    info = probe(cut)
    ref = full_decode(cut)
    assert info.num_frames == len(ref) == 20 and info.hidden_frames == len(packets) - 20 > 0
    assert all(np.array_equal(a, b) for a, b in zip(ref, full_decode(src)[20:]))
    assert _sparse_reads_match(cut, info, ref, seed=3) == info


@pytest.mark.parametrize("codec", ["h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "av1"])
def test_skipping_unwanted_frames_gives_the_frames_of_a_full_decode(tmp_path, codec):
    """Where the decoder reads `skip_frame` packet by packet, no wanted frame is lost or
    changed by skipping the unwanted non-reference ones; libdav1d (AV1), which reads it only
    when it opens and then drops every non-reference frame, is never asked to skip."""
    frames = clip(40, seed=6)
    if codec in ("h264", "hevc", "mpeg4"):
        path = write_video(tmp_path / f"c{CODECS[codec].ext}", frames, 12, codec, bframes=None if codec == "hevc" else 2)
    elif codec == "av1":  # SVT-AV1's hierarchical mini-GOPs: many frames nothing references
        path = write_with_encoder(tmp_path / "c.webm", "libsvtav1", frames)
    else:
        path = write_with_encoder(tmp_path / "c.mpg", codec, frames, b_frames=2)
    info = probe(path)
    ref = full_decode(path)
    assert info.codec == codec and info.num_frames == len(ref) == 40
    _decodes_as(PyAVDecoder(skip_nonref=True), info, ref, [[i] for i in range(40)] + [segment_middles(40, 8), [39, 1], list(range(1, 40, 3))])


def _nearest(frame: np.ndarray, ref: list[np.ndarray], around: int) -> int:
    cands = [j for j in (around - 1, around, around + 1) if 0 <= j < len(ref)]
    return min(cands, key=lambda j: np.abs(frame.astype(np.int16) - ref[j]).mean())


@pytest.mark.parametrize("codec", ["vp9", "vp8"])
def test_dali_cpu_matches_pyav_frames_and_indices(tmp_path, codec):
    pytest.importorskip("nvidia.dali")
    frames = clip(30, seed=5)
    path = write_video(tmp_path / f"c.{codec}.webm", frames, 12, codec)
    info = probe(path)
    dali = DaliDecoder("cpu")
    dali.setup()
    ref = full_decode(path)
    idx = segment_middles(info.num_frames, 8)
    got = dali.decode(info, idx)
    pyav = PyAVDecoder().decode(info, idx)
    assert got.shape == pyav.shape
    assert np.abs(got.astype(np.int16) - pyav).mean() < 2.0
    for k, i in enumerate(idx):  # no off-by-one: the frame is closest to its own index
        assert _nearest(got[k], ref, i) == i


def test_dali_cpu_refuses_h264_with_a_reason(tmp_path):
    pytest.importorskip("nvidia.dali")
    path = write_video(tmp_path / "c.mp4", clip(8), 12, "h264")
    dali = DaliDecoder("cpu")
    assert not dali.supports(probe(path))
    with pytest.raises(VideoError, match="dali-cpu cannot decode h264"):
        dali.decode(probe(path), [0])


@pytest.mark.parametrize("shape,size", [((240, 320), (341, 256)), ((720, 1280), (455, 256)), ((241, 323), (100, 75))])
def test_resize_frames_matches_a_one_pass_packed_rgb_resize(shape, size):
    from av.video.reformatter import VideoReformatter

    frames = np.random.default_rng(3).integers(0, 256, size=(3, *shape, 3), dtype=np.uint8)
    frames[:, : shape[0] // 2] = clip(3, width=shape[1], height=shape[0])[:, : shape[0] // 2]  # smooth content and noise
    r = VideoReformatter()
    plain = np.stack(
        [r.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"), width=size[0], height=size[1], format="rgb24", interpolation="BILINEAR", threads=1).to_ndarray() for f in frames]
    )
    got = resize_frames(frames, size)
    assert got.shape == plain.shape == (3, size[1], size[0], 3)
    diff = np.abs(got.astype(np.int16) - plain)
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert resize_frames(frames, None) is frames


def test_dali_errors_give_the_failing_step_not_the_pipeline_banner(tmp_path):
    pytest.importorskip("nvidia.dali")
    dali = DaliDecoder("cpu")
    dali.setup()
    with pytest.raises(VideoError) as e:
        dali.frames_at(np.frombuffer(b"not a video " * 100, np.uint8), [0], "bad.webm")
    assert e.value.reason == "decode error"
    assert e.value.detail.startswith("bad.webm: dali-cpu: ")
    assert "Critical error in pipeline" not in e.value.detail and "decoder" in e.value.detail
    vp9 = write_video(tmp_path / "ok.webm", clip(12, seed=2), 12, "vp9")  # the pipeline is rebuilt after a failure
    data = np.fromfile(vp9, dtype=np.uint8)
    two = dali.frames_at(data, [0, 5], vp9)
    assert two.shape == (2, *clip(1).shape[1:])
    assert np.array_equal(dali.frames_at(data, [5, 0, 5], vp9), two[[1, 0, 1]])  # any order, repeats


@pytest.mark.gpu
def test_dali_gpu_matches_pyav_on_real_clips(real_clips):
    dali = DaliDecoder("gpu")
    dali.setup()
    for path in real_clips:
        info = probe(path)
        if not dali.supports(info):
            continue
        idx = segment_middles(info.num_frames, 8)
        ref = full_decode(path)
        got = dali.decode(info, idx)
        assert np.abs(got.astype(np.int16) - np.stack([ref[i] for i in idx])).mean() < 3.0, path
        for k, i in enumerate(idx):
            assert _nearest(got[k], ref, i) == i, (path, i)


def test_auto_uses_pyav_without_a_gpu(tmp_path):
    from fsar.pipeline.video.decode import cuda_available, read_sampled

    if cuda_available():
        pytest.skip("a GPU is present")
    dec = make_decoder("auto")
    dec.setup()
    path = write_video(tmp_path / "c.webm", clip(8), 12, "vp9")
    info, idx, frames, backend, fallback = read_sampled(dec, path, lambda n: [0, n - 1], lambda w, h: None)
    assert backend == "pyav" and not fallback and idx == [0, 7] and frames.shape == (2, 64, 96, 3)


def test_out_of_range_indices_are_refused(tmp_path):
    path = write_video(tmp_path / "c.mp4", clip(8), 12, "h264")
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        PyAVDecoder().decode(probe(path), [0, 8])


def test_unknown_decoder_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: auto, dali, dali-cpu, pyav"):
        make_decoder("ffmpeg")


class _FakeDriver:
    """libcuda's two entry points that `cuda_available` calls: cuInit's result, and a device count."""

    def __init__(self, init: int, devices: int) -> None:
        self.init, self.devices = init, devices

    def cuInit(self, flags):
        return self.init

    def cuDeviceGetCount(self, ref):
        ref._obj.value = self.devices
        return 0


@pytest.mark.parametrize(
    "driver,expected",
    [(None, False), (_FakeDriver(0, 2), True), (_FakeDriver(0, 0), False), (_FakeDriver(100, 1), False)],  # 100: CUDA_ERROR_NO_DEVICE
    ids=["no driver library", "two GPUs", "GPUs hidden", "cuInit fails"],
)
def test_cuda_available_asks_the_driver(monkeypatch, driver, expected):
    import ctypes

    from fsar.pipeline.video.decode import cuda_available

    def cdll(name):
        assert name == "libcuda.so.1"
        if driver is None:
            raise OSError(f"{name}: cannot open shared object file")
        return driver

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    assert cuda_available() is expected


def test_auto_falls_back_to_the_next_backend_for_a_video_the_first_refuses(tmp_path):
    from fsar.pipeline.video.decode import AutoDecoder, read_sampled

    path = write_video(tmp_path / "c.mp4", clip(12, seed=4), 12, "h264", pix_fmt="yuv444p", reproducible=False)
    first = RefusingBackend()
    auto = AutoDecoder([first, PyAVDecoder()])
    auto.setup()
    got = read_sampled(auto, path, lambda n: [1, 6, 11], lambda w, h: None)
    assert first.calls == 1 and got.backend == "pyav"
    assert got.fallback == f"dali: decode error: {path}: dali: codec profile not supported"
    assert np.array_equal(got.frames, PyAVDecoder().decode(probe(path), [1, 6, 11]))


def test_auto_reads_a_damaged_file_with_pyav_once_every_backend_fails_on_it(tmp_path):
    """Decoding with the frame count the probe found fails on a damaged file; `auto` then
    has PyAV count the frames that decode and sample those, as `pyav` alone does."""
    from fsar.pipeline.video.decode import AutoDecoder, read_sampled

    src = write_video(tmp_path / "src.mp4", clip(40, seed=5), 12, "h264", gop=10)
    bad = damage_packet(src, tmp_path / "bad.mp4", 12)
    assert not probe(bad).damaged  # the probe alone cannot tell
    first = RefusingBackend()
    auto = AutoDecoder([first, PyAVDecoder()])
    auto.setup()
    got = read_sampled(auto, bad, lambda n: list(range(n)), lambda w, h: None)
    alone = PyAVDecoder().read(bad, lambda n: list(range(n)), lambda w, h: None)
    assert first.calls == 1 and got.backend == "pyav" and "pyav: decode error" in got.fallback
    assert got.info == alone[0] and got.info.damaged and got.indices == alone[1]
    assert np.array_equal(got.frames, alone[2]) and len(got.frames) == len(decodable_frames(bad))


def test_auto_reports_every_backends_reason_when_all_fail(tmp_path):
    from fsar.pipeline.video.decode import AutoDecoder

    path = write_video(tmp_path / "c.mp4", clip(6), 12, "h264")
    auto = AutoDecoder([RefusingBackend("dali"), RefusingBackend("other")])
    with pytest.raises(VideoError) as e:
        auto.decode(probe(path), [0])
    assert e.value.reason == "decode error"
    assert "dali: decode error" in e.value.detail and "other: decode error" in e.value.detail
    with pytest.raises(VideoError, match="no backend decodes h264") as e:  # none takes the codec
        AutoDecoder([DaliDecoder("cpu")]).decode(probe(path), [0])
    assert e.value.reason == "unsupported codec"


def test_auto_leaves_out_a_backend_that_cannot_be_set_up_but_not_the_last():
    from fsar.pipeline.video.decode import AutoDecoder

    auto = AutoDecoder([RefusingBackend(setup_error="CUDA driver too old"), PyAVDecoder()])
    with pytest.warns(UserWarning, match="decoder auto: dali left out: CUDA driver too old"):
        auto.setup()
    assert [b.name for b in auto.backends] == ["pyav"]
    with pytest.raises(RuntimeError, match="no way"):
        AutoDecoder([RefusingBackend(setup_error="no way")]).setup()
