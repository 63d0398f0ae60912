"""The synthetic benchmark: determinism, splits, decodability, time-reversal pairs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from corpus import tree_digest
from fsar.pipeline.synth import CATALOGUE, SynthConfig, VideoParams, catalogue_by_name, generate, render_video
from fsar.pipeline.synth.generate import SPLITS, assign_splits, load_classes, load_videos, plan, split_sizes

TINY = dict(classes=10, videos_per_class=3, size=(96, 64), frames=(6, 10), codecs=("vp9", "h264", "mpeg4", "vp8", "hevc"))


def decode(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
        return frames, float(stream.average_rate)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate(SynthConfig(out=out, workers=2, **TINY))
    return out


def test_same_arguments_give_byte_identical_files(tiny, tmp_path):
    again = tmp_path / "again"
    generate(SynthConfig(out=again, workers=1, **TINY))  # other worker count, same content
    a, b = tree_digest(tiny), tree_digest(again)
    assert sorted(a) == sorted(b)
    assert a == b
    other = tmp_path / "other-seed"
    generate(SynthConfig(out=other, workers=1, **{**TINY, "seed": 1}))
    c = tree_digest(other)
    videos = [k for k in a if k.startswith("videos/")]
    assert all(a[k] != c[k] for k in videos), "a different seed must give different videos"


def test_splits_are_disjoint_and_in_the_standard_format(tiny):
    classes = {c["name"]: c for c in load_classes(tiny)}
    seen_ids: set[str] = set()
    class_sets = {}
    for split in SPLITS:
        lines = (tiny / "splits" / f"{split}.txt").read_text().splitlines()
        assert lines, f"{split} split is empty"
        names = set()
        for line in lines:
            name, vid = line.rsplit("/", 1)
            assert classes[name]["split"] == split
            assert vid not in seen_ids
            seen_ids.add(vid)
            names.add(name)
        class_sets[split] = names
    assert not class_sets["train"] & class_sets["val"]
    assert not class_sets["train"] & class_sets["test"]
    assert not class_sets["val"] & class_sets["test"]
    assert len(seen_ids) == TINY["classes"] * TINY["videos_per_class"]
    assert {v["id"] for v in load_videos(tiny)} == seen_ids


def test_default_benchmark_plan_has_64_12_24_classes_and_keeps_pairs_together(tmp_path):
    classes, jobs = plan(SynthConfig(out=tmp_path))
    per_split = {s: [c for c in classes if c["split"] == s] for s in SPLITS}
    assert [len(per_split[s]) for s in SPLITS] == [64, 12, 24]
    by_name = {c["name"]: c for c in classes}
    pairs = [c for c in classes if c["reversal_of"]]
    assert len(pairs) >= 80
    for c in pairs:
        assert by_name[c["reversal_of"]]["split"] == c["split"]
    # Each test split needs both pairs and time-symmetric classes to compare them.
    for s in SPLITS:
        kinds = {c["reversal_of"] is None for c in per_split[s]}
        assert kinds == {True, False}, s
    assert len(jobs) == 2400
    assert len({j.video_id for j in jobs}) == 2400
    sizes = {(j.params.width, j.params.height) for j in jobs}
    assert len(sizes) == 3 and all(w % 16 == 0 and h % 16 == 0 for w, h in sizes)
    assert len({j.params.fps for j in jobs}) > 1 and len({j.params.frames for j in jobs}) > 1
    assert {j.codec for j in jobs} == {"vp9", "h264", "mpeg4"}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 17, 33, 64, 99, 100])
def test_split_assignment_meets_sizes_for_any_class_count(n):
    specs = list(CATALOGUE[:n])
    split_of = assign_splits(specs, (64, 12, 24), seed=0)
    assert sorted(split_of) == sorted(s.name for s in specs)
    counts = [sum(v == s for v in split_of.values()) for s in SPLITS]
    assert counts == split_sizes(n, (64, 12, 24))
    if n >= 3:
        assert min(counts) >= 1


def test_every_file_decodes_with_pyav_to_the_stated_frame_count(tiny):
    videos = load_videos(tiny)
    assert {v["codec"] for v in videos} == set(TINY["codecs"])
    for v in videos:
        frames, rate = decode(tiny / v["file"])
        assert frames.shape == (v["frames"], v["height"], v["width"], 3), v["file"]
        assert rate == pytest.approx(v["fps"]), v["file"]


PAIRS = [c for c in CATALOGUE if c.partner and not c.reverse]


@pytest.mark.parametrize("spec", PAIRS, ids=[c.family + ":" + c.name for c in PAIRS])
def test_reversal_pairs_are_exact_reversals_and_not_palindromes(spec):
    partner = catalogue_by_name()[spec.partner]
    assert partner.reverse and partner.partner == spec.name
    params = VideoParams(width=64, height=48, frames=12, fps=12, scene_seed=1234)
    fwd, back = render_video(spec, params), render_video(partner, params)
    assert np.array_equal(back, fwd[::-1])
    # Order must matter: the clip differs from its own reversal (else the pair is indistinguishable).
    assert np.abs(fwd.astype(np.int16) - fwd[::-1]).mean() > 1.0, spec.name


def blur8(x: np.ndarray) -> np.ndarray:
    """8x8 block means: averages away sensor noise and codec error, keeps object positions."""
    T, H, W, C = x.shape
    return x.astype(np.float32).reshape(T, H // 8, 8, W // 8, 8, C).mean(axis=(2, 4))


def test_decoded_files_are_their_partner_class_played_backwards(tiny):
    classes = {c["name"]: c for c in load_classes(tiny)}
    err_rev, err_fwd = [], []
    for v in load_videos(tiny):
        partner = classes[v["class"]]["reversal_of"]
        if not partner:
            continue
        params = VideoParams(v["width"], v["height"], v["frames"], v["fps"], v["scene_seed"])
        rendered = blur8(render_video(catalogue_by_name()[partner], params))
        decoded = blur8(decode(tiny / v["file"])[0])
        err_rev.append(np.abs(decoded - rendered[::-1]).mean())
        err_fwd.append(np.abs(decoded - rendered).mean())
        assert err_rev[-1] < 3.0, (v["file"], err_rev[-1])  # lossy codec and colour conversion only
    assert len(err_rev) >= 6
    assert np.mean(err_rev) < 0.6 * np.mean(err_fwd), (np.mean(err_rev), np.mean(err_fwd))


def test_videos_of_one_class_differ(tiny):
    videos = [v for v in load_videos(tiny) if v["class_index"] == 0]
    clips = [decode(tiny / v["file"])[0] for v in videos]
    assert len({v["scene_seed"] for v in videos}) == len(videos)
    assert len({(c.shape, c[0].tobytes()) for c in clips}) == len(clips)


def test_rerun_reuses_finished_videos_and_redoes_missing_ones(tiny, tmp_path):
    out = tmp_path / "resume"
    config = SynthConfig(out=out, workers=1, **TINY)
    first = generate(config)
    before = tree_digest(out)
    victim = next((out / "videos").iterdir())
    victim.unlink()
    (out / "videos.jsonl").unlink()
    (out / "videos" / ".junk.mp4.partial").write_bytes(b"half a file")  # as left by a kill
    second = generate(config)
    assert first.rendered == first.videos and second.rendered == 1 and second.reused == first.videos - 1
    after = tree_digest(out)
    after.pop("videos/.junk.mp4.partial")
    assert after == before


def test_other_arguments_into_the_same_directory_are_refused(tiny, tmp_path):
    out = tmp_path / "d"
    generate(SynthConfig(out=out, workers=1, **{**TINY, "classes": 3, "videos_per_class": 1}))
    with pytest.raises(ValueError, match="other arguments.*seed"):
        generate(SynthConfig(out=out, workers=1, **{**TINY, "classes": 3, "videos_per_class": 1, "seed": 5}))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"size": (100, 100)}, "multiples of 16"),
        ({"frames": (10, 5)}, "LO <= HI"),
        ({"codecs": ("vp9", "theora")}, "unknown codec 'theora'; known: vp9"),
        ({"classes": 0}, r"classes must be in \[1, 100\]"),
        ({"videos_per_class": 0}, "videos_per_class"),
        ({"workers": 0}, "workers"),
        ({"size": (48, 32), "codecs": ("hevc",)}, "at least 64 pixels"),
    ],
)
def test_invalid_config_names_value_and_allowed_range(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(out=tmp_path, **kw)


def test_catalogue_names_are_unique_and_natural_language():
    names = [c.name for c in CATALOGUE]
    assert len(names) == len(set(names)) == 100
    assert all(" " in n and n == n.lower() for n in names)
    assert "something falling" in names and "two things moving away from each other" in names
    assert json.dumps(names)  # plain strings


def test_encoder_options_set_the_bitrate(tmp_path):
    """`write_video(options=...)` reaches the encoder: the bench sets UCF101's bitrates so."""
    from fsar.pipeline.video.encode import write_video

    rng = np.random.default_rng(0)
    frames = render_video(CATALOGUE[0], VideoParams(320, 240, 50, 25, 0))
    frames = np.clip(frames + rng.normal(0, 10, frames.shape), 0, 255).astype(np.uint8)
    kbps = {}
    for rate in ("100k", "800k"):
        path = write_video(tmp_path / f"{rate}.avi", frames, 25, "mpeg4", options={"b": rate})
        kbps[rate] = path.stat().st_size * 8 / 2.0 / 1000  # 50 frames at 25 fps
    assert kbps["100k"] < 200 < 500 < kbps["800k"] < 1100, kbps
