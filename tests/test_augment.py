"""The image views: the CLIP-FSAR view against plain references, its randomness, the registry.

The comparison with the authors' own transform classes runs when FSAR_CLIP_FSAR_REPO names a
checkout (or bare git directory) of alibaba-mmai-research/CLIP-FSAR at 30cf0a8; otherwise it skips.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.pipeline.views import (
    CLIP_MEAN,
    CLIP_STD,
    VIEWS,
    ClipDraw,
    ClipFsarView,
    ColorJitter,
    RandomErasing,
    build_view,
    test_view,
    train_view,
)

Z = 5.3  # a binomial rate is checked to Z standard errors: two-sided normal tail ~1.2e-7 per check


def rate_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits / n - p) <= Z * math.sqrt(p * (1 - p) / n)


def pattern(T: int, H: int, W: int) -> torch.Tensor:
    """uint8 (T, H, W, 3): a distinct, colourful value pattern per frame."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    rgb = [(7 * x + 3 * y + 40 * t) % 256, (5 * y + 11 * x) % 256, (13 * x * y + 60 * t) % 256]
    return torch.stack(rgb, -1).to(torch.uint8)


def coords(scale: int, T: int) -> torch.Tensor:
    """uint8 (T, scale, scale, 3) whose pixels spell (row, column, frame): a crop reads back its own position."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(scale), torch.arange(scale), indexing="ij")
    return torch.stack([y * 8, x * 8, t * 8], -1).to(torch.uint8)


def raw(out: torch.Tensor) -> torch.Tensor:
    """Undo the CLIP normalisation: (..., 3, h, w) -> 0-255 floats."""
    m, s = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (out * s + m) * 255


# -- the test view ------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(20, 30), (45, 18), (16, 16)])
def test_test_view_is_a_square_resize_then_the_centre(hw):
    frames = pattern(3, *hw)
    out = test_view(frames, size=12, scale=16)
    # reference: each frame alone, 0-1 floats, bilinear to 16 x 16 (aspect not kept), rows and columns 2..13
    ref = []
    for f in frames:
        img = f.permute(2, 0, 1)[None].double() / 255
        img = F.interpolate(img, size=(16, 16), mode="bilinear", align_corners=False)[0, :, 2:14, 2:14]
        mean, std = (torch.tensor(v, dtype=torch.double).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
        ref.append((img - mean) / std)
    assert out.shape == (3, 3, 12, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), torch.stack(ref), atol=1e-5, rtol=0)


def test_test_view_keeps_no_aspect_ratio_and_crops_the_exact_centre():
    # a frame already 256 x 256 is not resampled: the output is exactly its rows and columns 16..239
    frames = coords(256 // 8, 1).repeat_interleave(8, 1).repeat_interleave(8, 2)  # (1, 256, 256, 3)
    out = raw(test_view(frames)).round()
    assert torch.equal(out[0].permute(1, 2, 0), frames[0, 16:240, 16:240].float())
    # a wide frame, left half black and right half white, is squeezed, not cropped: the edge stays in the middle
    wide = torch.zeros(1, 100, 400, 3, dtype=torch.uint8)
    wide[:, :, 200:] = 255
    gray = raw(test_view(wide))[0, 0, 112]  # the middle row of the red channel
    assert (gray[:111] < 1).all() and (gray[113:] > 254).all()  # edge at column 128 - 16 = 112 of the crop


# -- the training view ---------------------------------------------------------------------------


def crop_position(out: torch.Tensor) -> list[tuple[int, int]]:
    """(top, left) of each frame of a crop of `coords`, checking each frame is one rigid crop of itself."""
    v = raw(out).round().long() // 8  # (T, 3, h, w): row, column, frame
    pos = []
    for t, f in enumerate(v):
        top, left = int(f[0, 0, 0]), int(f[1, 0, 0])
        h, w = f.shape[-2:]
        assert torch.equal(f[0], (top + torch.arange(h))[:, None].expand(h, w))
        assert torch.equal(f[1], (left + torch.arange(w))[None].expand(h, w))
        assert (f[2] == t).all()  # frame t stays frame t
        pos.append((top, left))
    return pos


def test_the_training_crop_is_one_for_the_clip_inside_the_frame_and_covers_the_official_range():
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(300):
        out = train_view(coords(16, 3), rng, size=12, scale=16)
        pos = crop_position(out)
        assert len(set(pos)) == 1  # the same crop for every frame
        seen.add(pos[0])
    # the official int(random.uniform(0, 4)) gives offsets 0..3, never 4; each of the 16 pairs shows
    # in 300 draws but with probability < 16 * (15/16)**300 ~ 6e-8
    assert seen == {(t, l) for t in range(4) for l in range(4)}


def test_the_same_seed_replays_the_view_and_another_seed_moves_the_crop():
    frames = pattern(4, 64, 80)
    a = train_view(frames, np.random.default_rng(7), query_augment=True)
    b = train_view(frames, np.random.default_rng(7), query_augment=True)
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b)
    view = ClipFsarView()
    d7, d8 = view.draw(np.random.default_rng(7)), view.draw(np.random.default_rng(8))
    assert (d7.top, d7.left) != (d8.top, d8.left)


def test_a_batch_of_clips_equals_the_clips_one_by_one():
    clips = torch.stack([pattern(3, 30, 40), pattern(3, 30, 40).flip(2)])
    view = ClipFsarView(size=16, scale=20, erasing=RandomErasing(prob=0.5))
    together = view.train(clips, np.random.default_rng(3), query_augment=True)
    rng = np.random.default_rng(3)
    apart = torch.stack([view.train(c, rng, query_augment=True) for c in clips])
    torch.testing.assert_close(together, apart, atol=1e-6, rtol=0)


def test_supports_get_only_the_crop():
    view = ClipFsarView(size=12, scale=16, erasing=RandomErasing())
    rng = np.random.default_rng(1)
    frames = coords(16, 2)
    for _ in range(100):
        d = view.draw(rng, query_augment=False)
        assert (d.flip, d.gray, d.ops, d.erase) == (False, False, (), ())
        out = view.apply(frames, d)
        # exactly the cropped pixels, normalised: no flip, no colour change, nothing erased
        assert torch.equal(raw(out).round(), frames[:, d.top : d.top + 12, d.left : d.left + 12].permute(0, 3, 1, 2).float())


def test_query_augmentation_flips_jitters_and_erases_at_the_official_rates():
    n = 600
    view = ClipFsarView(size=12, scale=16, erasing=RandomErasing())
    rng = np.random.default_rng(2)
    frames = coords(16, 2)
    flips = grays = erased = 0
    for _ in range(n):
        out = view.train(frames, rng, query_augment=True)
        v = raw(out)
        cols = v[:, 1].round() // 8
        flips += bool(cols[0, 0, 0] > cols[0, 0, -1])  # columns run right to left
        grays += bool(torch.allclose(v[:, 0], v[:, 1], atol=1e-3) and torch.allclose(v[:, 1], v[:, 2], atol=1e-3))
        erased += bool((out == 0).all(dim=(0, 1)).any())  # a pixel at exactly 0 in every frame and channel
    assert rate_ok(flips, n, 0.5), flips
    assert rate_ok(grays, n, 0.3), grays
    assert rate_ok(erased, n, 0.25), erased


def test_the_official_view_erases_nothing_unless_asked():
    # the official configs build RandomErasing with RANDOM_ERASING.ENABLE false (configs/pool/base.yaml:161)
    rng = np.random.default_rng(4)
    draws = [ClipFsarView().draw(rng, query_augment=True) for _ in range(300)]
    assert not any(d.erase for d in draws)
    assert ClipFsarView().describe()["query_augment"]["random_erasing"] is None


def test_jitter_draws_follow_the_official_ranges_and_each_op_once():
    rng = np.random.default_rng(5)
    orders = set()
    for _ in range(400):
        d = ClipFsarView().draw(rng, query_augment=True)
        f = dict(d.ops)
        assert sorted(f) == ["brightness", "contrast", "hue", "saturation"]
        assert all(0.5 <= f[k] <= 1.5 for k in ("brightness", "contrast", "saturation")) and -0.25 <= f["hue"] <= 0.25
        orders.add(tuple(k for k, _ in d.ops))
    assert len(orders) == 24  # shuffled: each of the 24 orders shows in 400 draws but w.p. < 24 (23/24)**400 ~ 1e-6
    # a zero turns an adjustment off, as the official _check_input does
    d = ClipFsarView(jitter=ColorJitter(brightness=0, hue=0)).draw(rng, query_augment=True)
    assert sorted(dict(d.ops)) == ["contrast", "saturation"]


def test_jitter_keeps_values_in_range_even_at_the_extremes():
    view = ClipFsarView(size=24, scale=24, mean=(0, 0, 0), std=(1, 1, 1))
    frames = pattern(2, 24, 24)
    frames[0, :4] = 255  # saturated and black patches
    frames[1, :4] = 0
    for b in (0.5, 1.5):
        for h in (-0.25, 0.25):
            for gray in (False, True):
                d = ClipDraw(0, 0, gray=gray, ops=(("brightness", b), ("contrast", 1.5), ("saturation", 1.5), ("hue", h)))
                out = view.apply(frames, d)
                assert out.min() >= 0 and out.max() <= 1 + 1e-6, (b, h, gray)


def test_hue_by_a_third_turn_rotates_the_primaries_and_a_full_turn_is_identity():
    view = ClipFsarView(size=3, scale=3, mean=(0, 0, 0), std=(1, 1, 1))
    prim = torch.tensor([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]] * 3, dtype=torch.uint8)[None]  # (1, 3, 3, 3)
    out = view.apply(prim, ClipDraw(0, 0, ops=(("hue", 1 / 3),)))
    torch.testing.assert_close(out, view.apply(prim.roll(1, -1), ClipDraw(0, 0)), atol=1e-5, rtol=0)  # red -> green
    x = pattern(1, 3, 3)
    torch.testing.assert_close(view.apply(x, ClipDraw(0, 0, ops=(("hue", 0.0),))), view.apply(x, ClipDraw(0, 0)), atol=1e-5, rtol=0)


def test_jitter_is_one_set_of_factors_per_clip_with_each_frames_own_statistics():
    # the clip jittered at once equals each frame jittered alone with the same draw: contrast blends
    # with each frame's own mean gray, and no factor changes from frame to frame
    view = ClipFsarView(size=12, scale=12)
    frames = pattern(3, 12, 12)
    frames[1] //= 3  # a darker frame: a clip-wide mean would move it
    for d in (ClipDraw(0, 0, gray=g, ops=(("contrast", 1.4), ("hue", -0.1), ("saturation", 0.6), ("brightness", 1.2))) for g in (False, True)):
        apart = torch.cat([view.apply(f[None], d) for f in frames])
        torch.testing.assert_close(view.apply(frames, d), apart, atol=1e-6, rtol=0)


def test_hue_matches_pythons_colorsys():
    import colorsys

    view = ClipFsarView(size=8, scale=8, mean=(0, 0, 0), std=(1, 1, 1))
    frames = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8))
    frames[0, 0, :3] = torch.tensor([[90, 90, 90], [0, 0, 0], [255, 255, 255]], dtype=torch.uint8)  # grays keep no hue
    for f in (-0.25, 0.07, 0.25):
        out = view.apply(frames, ClipDraw(0, 0, ops=(("hue", f),)))[0].permute(1, 2, 0)  # (8, 8, 3)
        ref = []
        for r, g, b in (frames[0].reshape(-1, 3).double() / 255).tolist():
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            ref.append(colorsys.hsv_to_rgb((h + f) % 1.0, s, v))
        torch.testing.assert_close(out.reshape(-1, 3).double(), torch.tensor(ref, dtype=torch.double), atol=1e-5, rtol=0)


def test_erased_rectangles_follow_the_official_area_and_aspect():
    rng = np.random.default_rng(8)
    view = ClipFsarView(erasing=RandomErasing(prob=1.0))
    for _ in range(300):
        (top, left, h, w), = view.draw(rng, query_augment=True).erase
        assert 0 <= top <= 224 - h and 0 <= left <= 224 - w
        # h = round(sqrt(A a)), w = round(sqrt(A / a)): A = h w and a = h / w up to the rounding of each side
        assert 0.02 * 224**2 <= (h + 0.5) * (w + 0.5) and (h - 0.5) * (w - 0.5) <= 0.33 * 224**2
        assert 0.3 <= (h + 0.5) / (w - 0.5) and (h - 0.5) / (w + 0.5) <= 1 / 0.3


@pytest.mark.gpu
def test_the_views_give_the_same_pixels_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    frames = pattern(4, 90, 160)
    torch.testing.assert_close(test_view(frames.cuda()).cpu(), test_view(frames), atol=1e-5, rtol=0)
    view = ClipFsarView(erasing=RandomErasing())
    cpu = view.train(frames[None].repeat(3, 1, 1, 1, 1), np.random.default_rng(9), query_augment=True)
    gpu = view.train(frames[None].repeat(3, 1, 1, 1, 1).cuda(), np.random.default_rng(9), query_augment=True)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


# -- the registry ---------------------------------------------------------------------------------


def stub_model(size=224, **cfg):
    return types.SimpleNamespace(visual=types.SimpleNamespace(image_size=size, preprocess_cfg={"size": size, **cfg}))


def test_views_are_found_by_name_and_describe_themselves():
    assert sorted(VIEWS) == ["clip", "clip-fsar"]
    with pytest.raises(KeyError, match="known views: clip, clip-fsar"):
        build_view("clip-fsr")
    with pytest.raises(ValueError, match="needs the model"):
        build_view("clip")
    clip = build_view("clip", stub_model())
    fsar = build_view("clip-fsar", stub_model(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert fsar.mean == (0.5, 0.5, 0.5) and build_view("clip-fsar").mean == CLIP_MEAN
    small = build_view("clip-fsar", stub_model(64))  # another input size: the same geometry, scaled
    assert (small.size, small.scale) == (64, 73) and small.test(pattern(2, 40, 60)).shape == (2, 3, 64, 64)
    for view in (clip, fsar):
        d = json.loads(json.dumps(view.describe()))
        assert d["name"] == view.name
    d = fsar.describe()
    assert (d["resize"], d["crop"], d["interpolation"], d["keep_aspect"]) == ([256, 256], 224, "bilinear", False)
    assert d["query_augment"]["color_jitter"]["hue"] == 0.25 and d["query_augment"]["flip"] == 0.5
    frames = pattern(2, 40, 60)
    assert clip.test(frames).shape == clip.train(frames, np.random.default_rng(0)).shape == (2, 3, 224, 224)
    assert not torch.allclose(clip.test(frames), fsar.test(frames))  # different views, different pixels


# -- the authors' own classes ----------------------------------------------------------------------

REPO = os.environ.get("FSAR_CLIP_FSAR_REPO")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official transformations and random_erasing modules, imported from FSAR_CLIP_FSAR_REPO."""
    if not REPO:
        pytest.skip("set FSAR_CLIP_FSAR_REPO to a checkout of alibaba-mmai-research/CLIP-FSAR to compare with it")
    root, tmp, mods = Path(REPO), tmp_path_factory.mktemp("official"), {}
    for name in ("transformations", "random_erasing"):
        rel = f"datasets/utils/{name}.py"
        text = (root / rel).read_text() if (root / rel).exists() else subprocess.run(
            ["git", f"--git-dir={root}", "show", f"HEAD:{rel}"], check=True, capture_output=True, text=True).stdout
        (tmp / f"{name}.py").write_text(text)
        spec = importlib.util.spec_from_file_location(f"clip_fsar_official_{name}", tmp / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecated _functional_video
            spec.loader.exec_module(mods[name])
    return mods


class Recorder:
    """A numpy Generator that logs what it returns, so the official code can be fed the same numbers."""

    def __init__(self, seed):
        self.rng, self.log = np.random.default_rng(seed), []

    def _keep(self, kind, v):
        self.log.append((kind, v))
        return v

    def random(self):
        return self._keep("random", self.rng.random())

    def uniform(self, a, b):
        return self._keep("uniform", self.rng.uniform(a, b))

    def integers(self, *a):
        return self._keep("integers", self.rng.integers(*a))

    def permutation(self, n):
        return self._keep("permutation", self.rng.permutation(n))


class Replay:
    """Stands in for the `random` module of the official files, returning the recorded numbers."""

    def __init__(self, log):
        self.log = list(log)

    def _next(self, *kinds):
        kind, v = self.log.pop(0)
        assert kind in kinds, (kind, kinds)
        return kind, v

    def random(self):
        return self._next("random")[1]

    def uniform(self, a, b):
        kind, v = self._next("uniform", "integers", "random")
        return v + 0.5 if kind == "integers" else v  # a crop offset: int(uniform(0, n)) reads it back

    def randint(self, a, b):
        return int(self._next("integers")[1]) + a

    def shuffle(self, items):
        order = self._next("permutation")[1]
        items[:] = [items[i] for i in order]


def test_the_test_view_equals_the_official_one(official):
    from torchvision.transforms import _transforms_video as tv

    frames = pattern(3, 90, 160)
    crop = official["transformations"].KineticsResizedCropFewshot([256, 256], 224, num_spatial_crops=1, idx=True)
    crop.set_spatial_index(0)  # what the official test split sets with TEST.NUM_SPATIAL_CROPS 1
    ref = tv.NormalizeVideo(CLIP_MEAN, CLIP_STD, inplace=True)(crop(tv.ToTensorVideo()(frames)))  # (3, T, 224, 224)
    torch.testing.assert_close(test_view(frames), ref.permute(1, 0, 2, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_the_training_view_equals_the_official_one_given_the_same_random_numbers(official, seed, monkeypatch):
    from torchvision.transforms import _transforms_video as tv

    frames = pattern(2, 72 + 8 * seed, 128)
    erasing = RandomErasing(prob=0.7)
    view = ClipFsarView(erasing=erasing)
    rec = Recorder(seed)
    ours = {q: view.train(frames, rec, query_augment=q) for q in (False, True)}
    replay = Replay(rec.log)
    for mod in (official["transformations"], official["random_erasing"], tv):
        monkeypatch.setattr(mod, "random", replay)
    t = official["transformations"]
    cfg = types.SimpleNamespace(AUGMENTATION=types.SimpleNamespace(RANDOM_ERASING=types.SimpleNamespace(
        ENABLE=True, PROB=erasing.prob, AREA_RANGE=list(erasing.area), MIN_ASPECT=erasing.min_aspect,
        COUNT=list(erasing.count), NUM_SPLITS=0, MODE="const")))
    crop = t.KineticsResizedCropFewshot(short_side_range=[256, 256], crop_size=224)
    norm = tv.NormalizeVideo(mean=CLIP_MEAN, std=CLIP_STD, inplace=True)
    support = [tv.ToTensorVideo(), crop, norm]  # the official support list, COLOR_AUG false, NO_RANDOM_ERASE true
    jitter = t.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, grayscale=0.3,
                           consistent=True, shuffle=True, gray_first=True, is_split=False)
    query = [tv.ToTensorVideo(), tv.RandomHorizontalFlipVideo(), crop, jitter, norm, official["random_erasing"].RandomErasing(cfg)]
    for q, steps in ((False, support), (True, query)):
        x = frames
        for step in steps:
            x = step(x)
        torch.testing.assert_close(ours[q], x.permute(1, 0, 2, 3), atol=2e-5, rtol=0)
    assert not replay.log  # both consumed the same numbers
