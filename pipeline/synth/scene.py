"""Per-video random scene context: appearances, positions, paths and timing."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from fsar.pipeline.synth.raster import BACKGROUNDS, PATTERNS, SHAPES, Appearance, Background, Track

# Unit vectors in screen coordinates (y grows downwards).
_S = float(np.sqrt(0.5))
DIRECTIONS = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "down": (0.0, 1.0),
    "up": (0.0, -1.0),
    "down-right": (_S, _S),
    "up-right": (_S, -_S),
}

ASYMMETRIC_PATTERNS = ("half", "dot")  # textures that make any rotation visible


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (float(r), float(g), float(b))


@dataclass
class Ctx:
    """Everything a motion family may draw from for one video.

    `p` is the action's progress per frame in [0, 1] (the action starts after a
    random delay and may finish before the clip ends); `u` is plain clip time in
    [0, 1], for periodic motions. Both have shape (T,).
    """

    rng: np.random.Generator
    aspect: float  # frame width / height
    T: int
    p: np.ndarray
    u: np.ndarray
    bg_hue: float

    @classmethod
    def make(cls, rng: np.random.Generator, aspect: float, T: int) -> "Ctx":
        u = np.linspace(0.0, 1.0, T, dtype=np.float64)
        d0, d1 = rng.uniform(0.0, 0.2, size=2)
        p = np.clip((u - d0) / (1.0 - d0 - d1), 0.0, 1.0)
        return cls(rng=rng, aspect=aspect, T=T, p=p, u=u, bg_hue=float(rng.uniform()))

    # -- appearance -------------------------------------------------------
    def colour(self) -> tuple[float, float, float]:
        """A saturated colour whose hue is far from the background's."""
        h = self.bg_hue + self.rng.uniform(0.25, 0.75)
        return _hsv(h, self.rng.uniform(0.55, 1.0), self.rng.uniform(0.6, 1.0))

    def obj(self, size: float | None = None, shape: str | None = None, asymmetric: bool = False) -> Appearance:
        """A random object; `asymmetric` guarantees that rotations are visible."""
        rng = self.rng
        shape = shape or str(rng.choice(SHAPES))
        pattern = str(rng.choice(ASYMMETRIC_PATTERNS if asymmetric else PATTERNS))
        c1 = self.colour()
        c2 = _hsv(rng.uniform(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))
        return Appearance(
            shape=shape,
            colour=c1,
            colour2=c2,
            pattern=pattern,
            freq=float(rng.uniform(1.5, 3.5)),
            size=float(size if size is not None else rng.uniform(0.08, 0.15)),
        )

    def agent(self, size: float | None = None) -> Appearance:
        """The 'hand' that pushes, pulls and lifts: a skin-toned rounded box."""
        tone = _hsv(self.rng.uniform(0.03, 0.1), self.rng.uniform(0.3, 0.6), self.rng.uniform(0.5, 0.95))
        return Appearance("pill", tone, tone, "solid", 1.0, float(size or self.rng.uniform(0.06, 0.09)))

    def bar(self, x: float, y: float, half_w: float, half_h: float, angle: float = 0.0, z: int = 0) -> Track:
        """A static rectangle (floor, wall, platform, slope, curtain) given half extents in frame heights."""
        h = self.bg_hue + self.rng.uniform(0.3, 0.7)
        col = _hsv(h, self.rng.uniform(0.2, 0.6), self.rng.uniform(0.25, 0.55))
        app = Appearance("bar", col, col, "solid", 1.0, half_h)
        return Track(app, x=np.full(self.T, x), y=np.full(self.T, y), sx=half_w / half_h, angle=angle, z=z)

    def background(self) -> Background:
        rng = self.rng
        kind = str(rng.choice(BACKGROUNDS))
        v = rng.uniform(0.15, 0.85)
        c0 = _hsv(self.bg_hue, rng.uniform(0.0, 0.5), v)
        c1 = _hsv(self.bg_hue + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.5), np.clip(v + rng.uniform(-0.25, 0.25), 0, 1))
        blobs = tuple(
            (float(rng.uniform(0, self.aspect)), float(rng.uniform(0, 1)), float(rng.uniform(0.1, 0.3)))
            for _ in range(3)
        )
        return Background(kind, c0, c1, float(rng.uniform(0, np.pi)), float(rng.uniform(2, 6)), blobs)

    # -- geometry ---------------------------------------------------------
    def point(self, margin: float = 0.15) -> tuple[float, float]:
        return (
            float(self.rng.uniform(margin, self.aspect - margin)),
            float(self.rng.uniform(margin, 1.0 - margin)),
        )

    def centre(self, spread: float = 0.08) -> tuple[float, float]:
        return (
            float(self.aspect / 2 + self.rng.uniform(-spread, spread) * self.aspect),
            float(0.5 + self.rng.uniform(-spread, spread)),
        )

    def path(self, direction: str, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Start and end points of a straight path through the frame along `direction`."""
        d = np.asarray(DIRECTIONS[direction])
        extent = abs(d[0]) * self.aspect + abs(d[1]) * 1.0
        half = self.rng.uniform(0.25, 0.38) * extent
        c = np.asarray(self.centre(0.05))
        lo, hi = np.array([margin, margin]), np.array([self.aspect - margin, 1.0 - margin])
        return np.clip(c - half * d, lo, hi), np.clip(c + half * d, lo, hi)

    def lerp(self, a, b, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points between a and b for each progress value in s: (x, y) of shape (T,)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        pts = a[None, :] + (b - a)[None, :] * np.asarray(s)[:, None]
        return pts[:, 0], pts[:, 1]

    def still(self, v: float) -> np.ndarray:
        return np.full(self.T, float(v))

    def distractors(self) -> list[Track]:
        """0-2 small objects drifting slowly behind the action, in random directions."""
        out = []
        for _ in range(int(self.rng.integers(0, 3))):
            a = self.obj(size=float(self.rng.uniform(0.03, 0.06)))
            start = np.asarray(self.point(0.05))
            drift = self.rng.normal(0.0, 0.08, size=2)
            x, y = self.lerp(start, start + drift, self.u)
            out.append(Track(a, x, y, angle=float(self.rng.uniform(0, 2 * np.pi)), z=-1))
        return out
