"""Damage that a decoder tells only its log of, or that leaves it refusing every later packet."""

import av
import numpy as np
import pytest
from corpus import clip, damage_packet, decodable_frames, remux

from fsar.pipeline.sampling import segment_middles
from fsar.pipeline.video.decode import PyAVDecoder
from fsar.pipeline.video.probe import VideoError, probe
from fsar.pipeline.video.encode import write_video
from fsar.pipeline.video.fflog import errors_logged


def _read(path, segments: int = 8):
    return PyAVDecoder().read(path, lambda n: segment_middles(n, segments), lambda w, h: None)


def test_a_frame_dropped_with_only_a_log_line_is_counted_as_ffmpeg_counts_it(tmp_path):
    """Noise in an H.264 packet's slice headers (its NAL length kept): the decoder returns no
    frame for it, refusing nothing and flagging nothing; only its log says "missing picture
    in access unit". Read sparsely, the file counted 60 frames where FFmpeg counts 59, and 7
    of the 8 sampled indices named frames other than FFmpeg's. The logged error now has a
    full decode count the frames."""
    src = write_video(tmp_path / "src.mp4", clip(60, 128, 96, seed=6), 12, "h264", gop=12)
    bad = damage_packet(src, tmp_path / "bad.mp4", 5, noise=True)
    ref = decodable_frames(bad)
    info, indices, frames = _read(bad)
    assert len(ref) == info.num_frames == 59 and info.damaged and not info.pts_reliable
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, indices))
    assert not _read(src)[0].damaged


def test_a_decoder_left_refusing_every_packet_is_not_used_to_count(tmp_path):
    """Noise in a VP9 frame header can declare an impossible frame size: FFmpeg's decoder
    refuses that packet and every later one, so FFmpeg's command line reads the frames
    before it. Counted on the decoder the sparse read had used, which then refused every
    packet, the file failed with "none of its 60 packets decodes"; each pass over a damaged
    file now gets a fresh decoder."""
    src = write_video(tmp_path / "src.webm", clip(60, 128, 96, seed=6), 12, "vp9", gop=12)
    bad = damage_packet(src, tmp_path / "bad.webm", 12, noise=True)
    ref = decodable_frames(bad)
    assert 0 < len(ref) < 60
    info, indices, frames = _read(bad)
    assert info.num_frames == len(ref) and info.damaged
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, indices))


def _open_gop_h264(path, frames: np.ndarray):
    """x264 with open GOPs: B-frames after a keyframe (decode order) that reference the GOP before it."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": "keyint=12:open-gop=1:bframes=3:threads=1"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("ext", ["mkv", "mp4", "ts"])
def test_errors_logged_at_a_jump_into_an_open_gop_flag_nothing(tmp_path, ext):
    """Jumping to an open GOP's keyframe, the decoder logs errors ("mmco: unref short failure")
    for frames that no index wants. The full count they lead to finds every frame: nothing
    is flagged, and every sampled frame is the full decode's."""
    src = _open_gop_h264(tmp_path / "src.mkv", clip(90, 160, 96, seed=4))
    path = src if ext == "mkv" else remux(src, tmp_path / f"v.{ext}")
    ref = decodable_frames(path)
    logged = False
    for segments in (8, 16, 32):
        before = errors_logged()
        info, indices, frames = _read(path, segments)
        logged = logged or errors_logged() > before
        assert info.num_frames == len(ref) == 90 and not info.damaged, segments
        assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, indices)), segments
    assert logged  # the path under test was taken


def test_counting_ffmpeg_errors_prints_nothing(tmp_path, capfd):
    """PyAV's log is off by default; counting its errors turns it on at a level that passes on
    no error line, to the terminal or to Python's logging."""
    bad = damage_packet(write_video(tmp_path / "src.mp4", clip(24, seed=1), 12, "h264", gop=12), tmp_path / "bad.mp4", 5)
    before = errors_logged()
    assert _read(bad)[0].damaged and errors_logged() > before
    out, err = capfd.readouterr()
    assert "NAL" not in out + err and "h264" not in out + err


def test_a_failure_ends_with_its_own_ffmpeg_error_line_and_no_other_files(tmp_path):
    """PyAV ends an error's words with the last error line FFmpeg logged since PyAV's previous
    exception. After an open-GOP file whose read logs errors and raises none, a file of random
    bytes, which logs none of its own, failed with an "[h264] ..." line of the other file's:
    the same file, failing in words that depend on what its worker read before it."""
    logs_without_failing = _open_gop_h264(tmp_path / "gop.mkv", clip(90, 160, 96, seed=4))
    random = tmp_path / "random.avi"
    random.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    text = tmp_path / "text.webm"
    text.write_text("this is not a video\n" * 50)
    before = errors_logged()
    _read(logs_without_failing, 32)
    assert errors_logged() > before
    with pytest.raises(VideoError) as e:
        probe(random)
    assert e.value.reason == "unreadable container" and "last error log" not in e.value.detail
    with pytest.raises(VideoError) as e:
        probe(text)
    assert e.value.detail.endswith("last error log: [matroska,webm] EBML header parsing failed")
