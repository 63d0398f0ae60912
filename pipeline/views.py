"""Image views: how one video's uint8 frames become the normalised pixels a CLIP encoder reads.

Two views, looked up by name (`build_view`):

- ``"clip"``: open_clip's own eval transform (`pipeline.backbones.Preprocess`: shortest side to
  the model's size, centre crop), used unchanged for training and test.
- ``"clip-fsar"``: the transform of the official CLIP-FSAR code
  (alibaba-mmai-research/CLIP-FSAR @30cf0a8, `datasets/base/ssv2_few_shot.py` `_config_transform`
  and `datasets/utils/transformations.py` `KineticsResizedCropFewshot`): every frame is resized to
  ``scale x scale`` (both sides, aspect ratio not kept; bilinear, ``align_corners=False``, no
  antialias, on 0-1 floats), then cut to ``size x size``: the centre for test, one random crop per
  clip for training. Kinetics-100 queries (``SUPPORT_QUERY_DIFF``) also get, per clip, a
  horizontal flip (before the resize, as there) and a colour jitter (after the crop, before
  normalising). Random erasing is built there too but disabled by the configs
  (``RANDOM_ERASING.ENABLE: false``), so it is off here unless asked for.

Randomness comes only from a numpy ``Generator``, so a trainer's per-step seeding replays it.
The draws of one clip (`ClipDraw`) are separate from their application (`ClipFsarView.apply`),
which is deterministic. Nothing here imports from ``train`` or holds state, so the module could
live in ``pipeline`` unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, as the CLIP-FSAR configs set DATA.MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LUMA = (0.299, 0.587, 0.114)  # the official rgb_to_grayscale weights (its docstring says .2989; the code uses .299)
SOURCE = "alibaba-mmai-research/CLIP-FSAR@30cf0a8"


@dataclass(frozen=True)
class ColorJitter:
    """The official colour jitter, one set of factors per clip (``CONSISTENT``), the four
    adjustments in a random order (``SHUFFLE``), grayscale before them (``GRAY_FIRST``).

    Defaults: ``configs/pool/run/training/finetune.yaml`` 76-84 (equal to ``configs/pool/base.yaml``
    140-147). A zero turns that adjustment off, as there.
    """

    brightness: float = 0.5  # factor ~ U[max(0, 1 - b), 1 + b], x -> f x
    contrast: float = 0.5  # factor ~ U[max(0, 1 - c), 1 + c], blended with each frame's mean gray
    saturation: float = 0.5  # factor ~ U[max(0, 1 - s), 1 + s], blended with the pixel's gray
    hue: float = 0.25  # shift ~ U[-h, h] of the HSV hue, in turns
    grayscale: float = 0.3  # probability of turning the clip gray

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ColorJitter.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"ColorJitter.hue must be in [0, 0.5], got {self.hue}")
        if not 0 <= self.grayscale <= 1:
            raise ValueError(f"ColorJitter.grayscale must be in [0, 1], got {self.grayscale}")


@dataclass(frozen=True)
class RandomErasing:
    """The official random erasing (``datasets/utils/random_erasing.py``, mode ``const``): after
    normalising, with probability ``prob``, one rectangle of the crop, the same in every frame,
    is set to 0 (the mean colour). Defaults: ``configs/pool/base.yaml`` 160-167."""

    prob: float = 0.25
    area: tuple[float, float] = (0.02, 0.33)  # fraction of the crop's area, per rectangle
    min_aspect: float = 0.3  # aspect h/w ~ exp(U[log a, log 1/a])
    count: tuple[int, int] = (1, 1)  # rectangles per clip, drawn in [min, max]

    def __post_init__(self) -> None:
        if not 0 <= self.prob <= 1:
            raise ValueError(f"RandomErasing.prob must be in [0, 1], got {self.prob}")
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"RandomErasing.area must satisfy 0 < min <= max <= 1, got {self.area}")
        if not 0 < self.min_aspect <= 1:
            raise ValueError(f"RandomErasing.min_aspect must be in (0, 1], got {self.min_aspect}")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"RandomErasing.count must satisfy 1 <= min <= max, got {self.count}")


@dataclass(frozen=True)
class ClipDraw:
    """The random choices for one clip; `ClipFsarView.apply` turns them into pixels."""

    top: int  # crop offsets in the scale x scale frame
    left: int
    flip: bool = False  # mirror left-right before resizing
    gray: bool = False  # grayscale first, then `ops`
    ops: tuple[tuple[str, float], ...] = ()  # (adjustment, factor) in the order applied
    erase: tuple[tuple[int, int, int, int], ...] = ()  # (top, left, h, w) rectangles zeroed after normalising


@dataclass(frozen=True)
class ClipFsarView:
    """CLIP-FSAR's official frame transform (module docstring); `test` and `train` are its two uses."""

    size: int = 224  # DATA.TRAIN_CROP_SIZE, DATA.TEST_CROP_SIZE
    scale: int = 256  # DATA.TRAIN_JITTER_SCALES [256, 256], DATA.TEST_SCALE 256: height and width
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    flip: float = 0.5  # torchvision RandomHorizontalFlipVideo's default p, queries only
    jitter: ColorJitter | None = field(default_factory=ColorJitter)  # queries only
    erasing: RandomErasing | None = None  # queries only; the official configs leave it disabled
    name: str = "clip-fsar"

    def __post_init__(self) -> None:
        if not 0 < self.size <= self.scale:
            raise ValueError(f"clip-fsar view needs 0 < size <= scale, got size={self.size}, scale={self.scale}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={self.mean}, std={self.std}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {self.flip}")

    def describe(self) -> dict:
        """JSON-ready record of this view, for caches and runs."""
        return {
            "name": self.name,
            "source": SOURCE,
            "resize": [self.scale, self.scale],
            "keep_aspect": False,
            "interpolation": "bilinear",
            "align_corners": False,
            "antialias": False,
            "crop": self.size,
            "test_crop": "center",
            "train_crop": "random, one per clip",
            "mean": list(self.mean),
            "std": list(self.std),
            "query_augment": {
                "flip": self.flip,
                "color_jitter": None
                if self.jitter is None
                else {**asdict(self.jitter), "consistent": True, "shuffle": True, "gray_first": True},
                "random_erasing": None if self.erasing is None else {**asdict(self.erasing), "mode": "const"},
            },
        }

    # -- test ---------------------------------------------------------------------------------

    def test(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) frames of any videos -> float (N, 3, size, size), normalised:
        resize to scale x scale, centre crop (the official ``x_max // 2``)."""
        x = _resize(_to_float(frames), self.scale)  # (N, 3, scale, scale)
        o = (self.scale - self.size) // 2
        return self._normalise(x[..., o : o + self.size, o : o + self.size])

    # -- train --------------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, query_augment: bool = False) -> ClipDraw:
        """The random choices for one clip, in the official order: flip, crop x, crop y, jitter, erasing."""
        flip = bool(query_augment and rng.random() < self.flip)
        span = self.scale - self.size  # the official int(random.uniform(0, span)): 0 .. span - 1, or 0
        left = int(rng.integers(max(span, 1)))
        top = int(rng.integers(max(span, 1)))
        if not query_augment:
            return ClipDraw(top, left)
        gray, ops = False, ()
        if self.jitter is not None:
            gray, ops = _draw_jitter(rng, self.jitter)
        erase = () if self.erasing is None else _draw_erasing(rng, self.erasing, self.size)
        return ClipDraw(top, left, flip, gray, ops, erase)

    def apply(self, frames: torch.Tensor, draw: ClipDraw) -> torch.Tensor:
        """uint8 (T, H, W, 3) frames of one clip -> float (T, 3, size, size), given its draws."""
        return self._apply_resized(_resize(_to_float(frames, draw.flip), self.scale), draw)

    def train(self, frames: torch.Tensor, rng: np.random.Generator, query_augment: bool = False) -> torch.Tensor:
        """uint8 (T, H, W, 3) of one clip -> float (T, 3, size, size); or (B, T, H, W, 3) clips ->
        (B, T, 3, size, size), drawing clip by clip (the same as calling once per clip).

        Args:
            rng: the only source of randomness.
            query_augment: also flip, colour jitter (and erase, if enabled), as the official
                code does for Kinetics-100's training queries.
        """
        if frames.dim() == 4:
            return self.apply(frames, self.draw(rng, query_augment))
        if frames.dim() != 5:
            raise ValueError(f"expected uint8 frames (T, H, W, 3) or (B, T, H, W, 3), got shape {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        draws = [self.draw(rng, query_augment) for _ in range(B)]
        x = _to_float(frames.flatten(0, 1))  # (B*T, 3, H, W)
        flips = torch.tensor([d.flip for d in draws], device=x.device).repeat_interleave(T)
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        x = _resize(x, self.scale).view(B, T, 3, self.scale, self.scale)  # one resize for all clips
        return torch.stack([self._apply_resized(x[b], d) for b, d in enumerate(draws)])

    def _apply_resized(self, x: torch.Tensor, draw: ClipDraw) -> torch.Tensor:
        # x: (T, 3, scale, scale) in [0, 1], already flipped if drawn
        x = x[..., draw.top : draw.top + self.size, draw.left : draw.left + self.size]
        if draw.gray:
            x = _gray(x).expand_as(x)
        for op, f in draw.ops:
            x = _ADJUST[op](x, f)
        x = self._normalise(x)
        for top, left, h, w in draw.erase:
            x[..., top : top + h, left : left + w] = 0.0  # same rectangle in every frame and channel
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std


# -- pixel operations on (..., 3, H, W) floats in [0, 1] ---------------------------------------


def _to_float(frames: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] (ToTensorVideo's x / 255)."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    return x.flip(-1) if flip else x


def _resize(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, scale, scale): both sides, as the official interpolate call."""
    if x.shape[-2:] == (scale, scale):
        return x
    return F.interpolate(x, size=(scale, scale), mode="bilinear", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W) luma."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: float) -> torch.Tensor:
    return (f * a + (1 - f) * b).clamp(0.0, 1.0)


def _brightness(x: torch.Tensor, f: float) -> torch.Tensor:
    return (f * x).clamp(0.0, 1.0)


def _contrast(x: torch.Tensor, f: float) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)  # each frame's mean gray


def _saturation(x: torch.Tensor, f: float) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: torch.Tensor, f: float) -> torch.Tensor:
    """Rotate the HSV hue by f turns."""
    r, g, b = x.unbind(-3)
    v = x.amax(-3)
    vi = torch.where(r == v, 0, torch.where(g == v, 1, 2))  # the channel holding the max; ties go to red, then green
    delta = v - x.amin(-3)
    s = torch.where(delta > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(vi == 0, (g - b) / d, torch.where(vi == 1, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    h = torch.remainder(torch.remainder(h / 6.0 + 1.0, 1.0) + f, 1.0)
    # back to RGB: sector k = floor(6h); each channel is v, p, q or t by sector
    h6 = h * 6.0
    k = torch.floor(h6)
    frac = h6 - k
    k = k.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * frac)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - frac))).clamp(0.0, 1.0)
    choice = torch.stack([v, q, p, t])  # (4, ...): index 0 v, 1 q, 2 p, 3 t
    pick = torch.tensor(_HSV_SECTORS, device=x.device)[k]  # (..., H, W, 3) indices into `choice`
    out = choice.gather(0, pick.movedim(-1, 0))  # (3, ..., H, W)
    return out.movedim(0, -3)


# per sector 0..5, which of (v, q, p, t) each of R, G, B takes
_HSV_SECTORS = ((0, 3, 2), (1, 0, 2), (2, 0, 3), (2, 1, 0), (3, 2, 0), (0, 2, 1))
_ADJUST = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


def _draw_jitter(rng: np.random.Generator, j: ColorJitter) -> tuple[bool, tuple[tuple[str, float], ...]]:
    """Factors in the official order (brightness, contrast, saturation, hue), then their order, then gray."""
    ops = []
    for name in ("brightness", "contrast", "saturation"):
        a = getattr(j, name)
        if a > 0:
            ops.append((name, float(rng.uniform(max(0.0, 1.0 - a), 1.0 + a))))
    if j.hue > 0:
        ops.append(("hue", float(rng.uniform(-j.hue, j.hue))))
    ops = [ops[i] for i in rng.permutation(len(ops))]
    gray = bool(rng.random() < j.grayscale)
    return gray, tuple(ops)


def _draw_erasing(rng: np.random.Generator, e: RandomErasing, size: int) -> tuple[tuple[int, int, int, int], ...]:
    """Rectangles of the official erasing on a size x size crop: up to 10 tries per rectangle."""
    if rng.random() > e.prob:
        return ()
    count = e.count[0] if e.count[0] == e.count[1] else int(rng.integers(e.count[0], e.count[1] + 1))
    log_aspect = (math.log(e.min_aspect), -math.log(e.min_aspect))
    boxes = []
    for _ in range(count):
        for _attempt in range(10):
            target = float(rng.uniform(*e.area)) * size * size / count
            aspect = math.exp(float(rng.uniform(*log_aspect)))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < size and h < size:
                boxes.append((int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1)), h, w))
                break
    return tuple(boxes)


# -- the two named views ----------------------------------------------------------------------


def test_view(frames: torch.Tensor, size: int = 224, scale: int = 256, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """The official test view: uint8 (N, H, W, 3) -> float (N, 3, size, size), normalised."""
    return ClipFsarView(size=size, scale=scale, mean=tuple(mean), std=tuple(std)).test(frames)


test_view.__test__ = False  # not a pytest test, despite the name


def train_view(
    frames: torch.Tensor,
    rng: np.random.Generator,
    query_augment: bool = False,
    size: int = 224,
    scale: int = 256,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    flip: float = 0.5,
    jitter: ColorJitter | None = ColorJitter(),
    erasing: RandomErasing | None = None,
) -> torch.Tensor:
    """The official training view of one clip: uint8 (T, H, W, 3) -> float (T, 3, size, size)
    (or a batch (B, T, ...), see `ClipFsarView.train`)."""
    view = ClipFsarView(size=size, scale=scale, mean=tuple(mean), std=tuple(std), flip=flip, jitter=jitter, erasing=erasing)
    return view.train(frames, rng, query_augment)


class ClipView:
    """open_clip's own eval transform (`pipeline.backbones.Preprocess`), for training and test alike."""

    name = "clip"

    def __init__(self, model) -> None:
        from fsar.pipeline.backbones import Preprocess

        self.preprocess = Preprocess(model)

    def describe(self) -> dict:
        return {"name": self.name, **self.preprocess.describe()}

    def test(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, S, S), normalised."""
        return self.preprocess(frames)

    def train(self, frames: torch.Tensor, rng: np.random.Generator | None = None, query_augment: bool = False) -> torch.Tensor:
        """The same as `test`: this view has no augmentation; `rng` and `query_augment` are ignored."""
        if frames.dim() == 5:
            return torch.stack([self.preprocess(f) for f in frames])
        return self.preprocess(frames)


def _clip_fsar(model) -> ClipFsarView:
    """The official view; normalised with the model's own mean/std when it states them (for
    OpenAI CLIP weights these are the official DATA.MEAN/STD). A backbone of another input size
    (the tiny test models) gets the same geometry scaled: resize to round(size x 256 / 224),
    crop `size`."""
    if model is None:
        return ClipFsarView()
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size if isinstance(size, int) else int(size[0])
    return ClipFsarView(size=size, scale=round(size * 256 / 224), mean=tuple(cfg.get("mean", CLIP_MEAN)), std=tuple(cfg.get("std", CLIP_STD)))


VIEWS = {"clip": ClipView, "clip-fsar": _clip_fsar}


def build_view(name: str, model=None) -> ClipView | ClipFsarView:
    """The view called `name` (see `VIEWS`). `model` is the open_clip model the pixels are for:
    required by "clip" (its eval transform), optional for "clip-fsar" (its mean/std)."""
    if name not in VIEWS:
        raise KeyError(f"unknown view {name!r}; known views: {', '.join(sorted(VIEWS))}")
    if name == "clip" and model is None:
        raise ValueError("view 'clip' needs the model whose eval transform it is")
    return VIEWS[name](model)
