"""A captioned pretraining corpus: short clips of the synthetic world with a caption that says
what they show, written from the renderer's own ground truth.

Each clip holds 1 to 3 identical objects (a shape, a named colour, a texture) grouped in one
region of the frame, on a background of one kind, doing one thing over the clip:

    "two red striped circles on the left moving up on a checked background"

The clips are not the benchmark's videos: they come from their own scene generator and their
own seeds (`np.random.default_rng([seed, CORPUS_TAG, index])`, where the benchmark draws its
scenes from `[seed, class, video]`), as CLIP never saw the test videos of the benchmarks it is
evaluated on. Nor does any clip show a colour, shape and motion that name one of the benchmark's
appearance classes (`catalogue.APPEARANCE`): those are new combinations of words the corpus
taught, as a novel class is. Sample `i` depends on `(seed, i)` and the clip geometry only, so the corpus is
deterministic at any part size and any number of runs.

On disk, `OUT/corpus.json` (the settings) and `OUT/part-NNNNNN.npz` parts, each written
atomically with `frames` (uint8, [n, T, H, W, 3]) and `captions` (str, [n]); a rerun keeps the
finished parts and renders the rest.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from fsar.pipeline.atomic import atomic_path, write_text_atomic
from fsar.pipeline.lock import hold
from fsar.pipeline.synth.raster import Appearance, Track, rasterise
from fsar.pipeline.synth.scene import Ctx, _hsv

CORPUS_TAG = 0xC4A7  # keeps the corpus's seeds apart from the benchmark's
FORMAT = 1

# Named hues, far enough apart to be told apart after JPEG and a 64-pixel view.
COLOURS = {"red": 0.0, "orange": 0.08, "yellow": 0.16, "green": 0.33, "cyan": 0.5, "blue": 0.64, "purple": 0.77, "pink": 0.9}
SHAPE_WORDS = {"circle": "circle", "box": "square", "triangle": "triangle", "diamond": "diamond", "hexagon": "hexagon", "ring": "ring", "cross": "cross"}
PATTERN_WORDS = {"solid": "plain", "stripes": "striped", "checker": "checked", "dot": "dotted"}
BACKGROUND_WORDS = {"flat": "plain", "gradient": "shaded", "stripes": "striped", "checker": "checked", "blobs": "spotted"}
REGIONS = {"on the left": (0.3, 0.5), "on the right": (0.7, 0.5), "at the top": (0.5, 0.3), "at the bottom": (0.5, 0.7), "in the middle": (0.5, 0.5)}
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "standing still", "spinning", "growing", "shrinking")
COUNTS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class CaptionedClip:
    """One sample's ground truth; `caption` is the text the model learns from."""

    count: int
    colour: str
    pattern: str
    shape: str
    region: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        noun = SHAPE_WORDS[self.shape]
        if self.count > 1:
            noun += "es" if noun.endswith("s") else "s"
        return (f"{COUNTS[self.count]} {self.colour} {PATTERN_WORDS[self.pattern]} {noun} {self.region} "
                f"{self.motion} on a {BACKGROUND_WORDS[self.background]} background")

    @classmethod
    def from_caption(cls, caption: str) -> "CaptionedClip":
        """The ground truth a full caption (`.caption`) states.

        Raises:
            ValueError: the text is not a caption of this corpus.
        """
        m = _CAPTION.fullmatch(caption)
        if m is None:
            raise ValueError(f"not a caption of the corpus: {caption!r}")
        g = m.groupdict()
        return cls(count=_COUNT_OF[g["count"]], colour=g["colour"], pattern=_PATTERN_OF[g["pattern"]],
                   shape=_SHAPE_OF[g["noun"]], region=g["region"], motion=g["motion"], background=_BACKGROUND_OF[g["background"]])


# The ground truth's fields, in caption order; `vocabulary` gives each one's values.
ATTRIBUTES = ("count", "colour", "pattern", "shape", "region", "motion", "background")


def vocabulary(attribute: str) -> list:
    """The values the corpus draws `attribute` (one of `ATTRIBUTES`) from."""
    return list({"count": COUNTS, "colour": COLOURS, "pattern": PATTERN_WORDS, "shape": SHAPE_WORDS, "region": REGIONS,
                 "motion": MOTIONS, "background": BACKGROUND_WORDS}[attribute])


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COUNT_OF = {v: k for k, v in COUNTS.items()}
_PATTERN_OF = {v: k for k, v in PATTERN_WORDS.items()}
_BACKGROUND_OF = {v: k for k, v in BACKGROUND_WORDS.items()}
_SHAPE_OF = {**{v: k for k, v in SHAPE_WORDS.items()}, **{v + ("es" if v.endswith("s") else "s"): k for k, v in SHAPE_WORDS.items()}}
_CAPTION = re.compile(
    f"(?P<count>{_alternatives(_COUNT_OF)}) (?P<colour>{_alternatives(COLOURS)}) (?P<pattern>{_alternatives(_PATTERN_OF)}) "
    f"(?P<noun>{_alternatives(_SHAPE_OF)}) (?P<region>{_alternatives(REGIONS)}) (?P<motion>{_alternatives(MOTIONS)}) "
    f"on a (?P<background>{_alternatives(_BACKGROUND_OF)}) background"
)


def render_captioned(seed: int, index: int, width: int, height: int, frames: int) -> tuple[np.ndarray, CaptionedClip]:
    """Clip `index` of the corpus of `seed`: uint8 frames [T, H, W, 3] and what they show."""
    rng = np.random.default_rng([seed, CORPUS_TAG, index])
    truth = CaptionedClip(
        count=int(rng.integers(1, 4)),
        colour=str(rng.choice(list(COLOURS))),
        pattern=str(rng.choice(list(PATTERN_WORDS))),
        shape=str(rng.choice(list(SHAPE_WORDS))),
        region=str(rng.choice(list(REGIONS))),
        motion=str(rng.choice(MOTIONS)),
        background=str(rng.choice(list(BACKGROUND_WORDS))),
    )
    while (truth.colour, truth.shape, truth.motion) in _HELD_BACK:  # a benchmark class's combination: draw another
        truth = replace(truth, colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(list(SHAPE_WORDS))), motion=str(rng.choice(MOTIONS)))
    return render_truth(truth, rng, width, height, frames), truth


def render_truth(truth: CaptionedClip, rng: np.random.Generator, width: int, height: int, frames: int) -> np.ndarray:
    """A clip showing `truth`, its other details (exact hue, size, place, texture scale, noise)
    drawn from `rng`: uint8 [T, H, W, 3]."""
    hue = COLOURS[truth.colour] + rng.uniform(-0.025, 0.025)
    aspect = width / height
    ctx = Ctx.make(rng, aspect, frames)
    ctx.bg_hue = float(hue + rng.uniform(0.3, 0.7))  # the background's hue stays far from the objects'
    bg = ctx.background()
    if bg.kind != truth.background:
        bg = type(bg)(truth.background, bg.colour, bg.colour2, bg.angle, bg.freq, bg.blobs)
    tracks = group_tracks(ctx, truth, hue)
    noise = rng.standard_normal((frames, height, width, 1), dtype=np.float32) * np.float32(rng.uniform(0.0, 0.02))
    return rasterise(tracks, bg, width, height, np.zeros((frames, 2)), noise)


def group_tracks(ctx: Ctx, truth: CaptionedClip, hue: float) -> list[Track]:
    """The objects `truth` describes (its count, shape, colour of hue `hue`, texture, region and
    motion over clip time), their other details drawn from `ctx.rng`."""
    rng = ctx.rng
    colour = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    texture = _hsv(hue, rng.uniform(0.0, 0.3), rng.uniform(0.05, 0.3))  # a dark, same-hue texture
    size = float(rng.uniform(0.09, 0.13))
    app = Appearance(truth.shape, colour, texture, truth.pattern, float(rng.uniform(1.5, 3.0)), size)
    cx, cy = REGIONS[truth.region]
    cx, cy = cx * ctx.aspect + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)
    offsets = {1: [(0.0, 0.0)], 2: [(-1.4, 0.0), (1.4, 0.0)], 3: [(-1.4, 0.8), (1.4, 0.8), (0.0, -1.2)]}[truth.count]
    u = ctx.u
    step = 0.2 * u - 0.1  # a path of 0.2 frame heights, centred on the group's place
    dx, dy = {"moving left": (-step, 0 * u), "moving right": (step, 0 * u), "moving up": (0 * u, -step), "moving down": (0 * u, step)}.get(truth.motion, (0 * u, 0 * u))
    scale = {"growing": 0.7 + 0.6 * u, "shrinking": 1.3 - 0.6 * u}.get(truth.motion, 1.0)
    spin = 2 * np.pi * u * float(rng.choice([-1, 1])) if truth.motion == "spinning" else float(rng.uniform(-0.2, 0.2))
    return [Track(app, x=cx + ox * size + dx, y=cy + oy * size + dy, sx=scale, sy=scale, angle=spin, z=1) for ox, oy in offsets]


def appearance_combos(n: int) -> list[tuple[str, str, str]]:
    """The first `n` (colour, shape, motion) combinations the benchmark names classes after, in a
    fixed shuffled order (see `catalogue.APPEARANCE`); the corpus never shows them."""
    combos = [(c, s, m) for c in COLOURS for s in SHAPE_WORDS for m in MOTIONS]
    return [combos[i] for i in np.random.default_rng(0xA77).permutation(len(combos))[:n]]


APPEARANCE_SIZE = 48
_HELD_BACK = frozenset(appearance_combos(APPEARANCE_SIZE))


@dataclass(frozen=True)
class CorpusConfig:
    """What `fsar-data captions` renders.

    Attributes:
        out: the corpus folder.
        samples: clips in all; the last `held_out` of them are kept for retrieval tests.
        held_out: clips never trained on.
        frames: frames per clip.
        size: (width, height) of a frame.
        seed: master seed; the same settings give the same bytes.
        part_size: clips per part file (a resumed run redoes at most one part).
    """

    out: Path
    samples: int = 20000
    held_out: int = 1000
    frames: int = 4
    size: tuple[int, int] = (64, 64)
    seed: int = 0
    part_size: int = 500

    def __post_init__(self) -> None:
        if self.samples < 2 or not 0 < self.held_out < self.samples:
            raise ValueError(f"--samples must be at least 2 and --held-out in [1, samples), got {self.samples} and {self.held_out}")
        if self.frames < 1 or self.part_size < 1 or min(self.size) < 16:
            raise ValueError("--frames and --part-size must be at least 1, and each side of --size at least 16")

    def content_key(self) -> dict:
        """What decides the bytes of the parts: a corpus made with other settings is refused."""
        d = asdict(self)
        d.pop("out")
        d["size"] = list(self.size)
        return {"format": FORMAT, **d}


def _part(config: CorpusConfig, k: int) -> Path:
    return config.out / f"part-{k:06d}.npz"


def render_corpus(config: CorpusConfig, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the corpus, keeping finished parts; returns a summary (clips, rendered, reused, seconds).

    Raises:
        ValueError: OUT holds a corpus made with other settings.
        FolderBusy: another process is rendering into OUT.
    """
    with hold(config.out, "fsar-data captions"):
        return _render(config, on_progress)


def _render(config: CorpusConfig, on_progress: Callable[[int, int], None] | None) -> dict:
    t0 = time.perf_counter()
    meta = config.out / "corpus.json"
    if meta.exists():
        held = json.loads(meta.read_text()).get("config")
        if held != config.content_key():
            raise ValueError(f"{config.out} holds a corpus made with other settings ({held}); choose another folder or remove it")
    config.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta, json.dumps({"config": config.content_key()}, indent=1) + "\n")
    parts = -(-config.samples // config.part_size)
    w, h = config.size
    rendered = 0
    for k in range(parts):
        path = _part(config, k)
        lo, hi = k * config.part_size, min(config.samples, (k + 1) * config.part_size)
        if not path.exists():
            clips, captions = [], []
            for i in range(lo, hi):
                frames, truth = render_captioned(config.seed, i, w, h, config.frames)
                clips.append(frames)
                captions.append(truth.caption)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, frames=np.stack(clips), captions=np.array(captions))
            rendered += hi - lo
        if on_progress:
            on_progress(hi, config.samples)
    return {"out": str(config.out), "clips": config.samples, "rendered": rendered, "reused": config.samples - rendered,
            "seconds": time.perf_counter() - t0}


def load_corpus(out: Path) -> tuple[dict, np.ndarray, list[str]]:
    """The settings, all frames [N, T, H, W, 3] and all captions of a finished corpus.

    Raises:
        ValueError: not a corpus, or an unfinished or damaged one (the line says to re-run).
    """
    meta = Path(out) / "corpus.json"
    if not meta.is_file():
        raise ValueError(f"{out} is not a caption corpus (no corpus.json): make one with `fsar-data captions {out}`")
    config = json.loads(meta.read_text())["config"]
    parts = -(-config["samples"] // config["part_size"])
    frames, captions = [], []
    for k in range(parts):
        path = Path(out) / f"part-{k:06d}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                frames.append(z["frames"])
                captions.extend(str(c) for c in z["captions"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: missing or unreadable ({type(e).__name__}): re-run `fsar-data captions {out}` to finish the corpus") from None
    all_frames = np.concatenate(frames)
    if len(all_frames) != config["samples"] or len(captions) != config["samples"]:
        raise ValueError(f"{out}: {len(all_frames)} clips where corpus.json says {config['samples']}: re-run `fsar-data captions {out}`")
    return config, all_frames, captions
