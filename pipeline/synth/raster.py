"""Vectorised rasteriser for the synthetic benchmark: shapes, textures, backgrounds.

World coordinates are measured in frame heights: x in [0, W/H] (left to right) and
y in [0, 1] (top to bottom), so one scene renders the same at any resolution.
Every drawing function works on all T frames at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "box", "triangle", "diamond", "hexagon", "ring", "cross")
PATTERNS = ("solid", "stripes", "checker", "half", "dot")
BACKGROUNDS = ("flat", "gradient", "stripes", "checker", "blobs")


@dataclass(frozen=True)
class Appearance:
    """How an object looks; it does not change over a clip."""

    shape: str
    colour: tuple[float, float, float]  # RGB in [0, 1]
    colour2: tuple[float, float, float]  # texture colour
    pattern: str
    freq: float  # texture frequency, in cycles per object radius
    size: float  # radius in frame heights


@dataclass
class Track:
    """One object's state in every frame; each array has shape (T,)."""

    app: Appearance
    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray | float = 1.0  # scale along the object's own x axis
    sy: np.ndarray | float = 1.0
    angle: np.ndarray | float = 0.0  # radians, clockwise on screen
    alpha: np.ndarray | float = 1.0
    brightness: np.ndarray | float = 1.0
    z: int = 0  # drawing order: larger is in front


@dataclass(frozen=True)
class Background:
    kind: str
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    angle: float
    freq: float
    blobs: tuple[tuple[float, float, float], ...] = field(default_factory=tuple)  # (x, y, radius)


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(1, 1, 1, 3)


def _polygon_sdf(lx: np.ndarray, ly: np.ndarray, sides: int, phase: float) -> np.ndarray:
    # Max over the edges' half-planes: exact inside, close enough outside for anti-aliasing.
    apothem = np.cos(np.pi / sides)
    d = None
    for k in range(sides):
        a = phase + 2 * np.pi * k / sides
        e = lx * np.float32(np.cos(a)) + ly * np.float32(np.sin(a)) - np.float32(apothem)
        d = e if d is None else np.maximum(d, e)
    return d


def shape_sdf(shape: str, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """Signed distance (in object radii) to a unit-radius shape; negative inside."""
    if shape == "circle":
        return np.sqrt(lx * lx + ly * ly) - 1.0
    if shape == "box":
        return np.maximum(np.abs(lx), np.abs(ly)) - 0.8
    if shape == "triangle":  # points up on screen, so rotations and flips show
        return _polygon_sdf(lx, ly, 3, np.pi / 2)
    if shape == "diamond":
        return _polygon_sdf(lx, ly, 4, np.pi / 4) / np.float32(np.cos(np.pi / 4))
    if shape == "hexagon":
        return _polygon_sdf(lx, ly, 6, 0.0)
    if shape == "ring":
        return np.abs(np.sqrt(lx * lx + ly * ly) - 0.72) - 0.28
    if shape == "cross":
        ax, ay = np.abs(lx), np.abs(ly)
        return np.minimum(np.maximum(ax - 1.0, ay - 0.32), np.maximum(ax - 0.32, ay - 1.0))
    if shape == "bar":  # a long thin box; stretch it with sx/sy
        return np.maximum(np.abs(lx) - 1.0, np.abs(ly) - 1.0)
    if shape == "pill":  # rounded box, used for the "hand" that pushes and lifts
        qx, qy = np.maximum(np.abs(lx) - 0.45, 0), np.maximum(np.abs(ly) - 0.25, 0)
        return np.sqrt(qx * qx + qy * qy) - 0.5
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES + ('bar', 'pill')}")


def _pattern_mask(pattern: str, freq: float, lx: np.ndarray, ly: np.ndarray) -> np.ndarray | None:
    if pattern == "solid":
        return None
    if pattern == "stripes":
        return (np.sin(lx * np.float32(freq * np.pi)) > 0).astype(np.float32)
    if pattern == "checker":
        return ((np.floor(lx * freq) + np.floor(ly * freq)) % 2).astype(np.float32)
    if pattern == "half":
        return (lx > 0).astype(np.float32)
    if pattern == "dot":
        return (((lx - 0.45) ** 2 + ly * ly) < 0.09).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")


def draw_background(bg: Background, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Background image of shape (T, H, W, 3) from world grids of shape (T, H, W)."""
    c0, c1 = _col(bg.colour), _col(bg.colour2)
    if bg.kind == "flat":
        m = np.zeros_like(gx)
    elif bg.kind == "gradient":
        m = np.clip(gx * np.float32(np.cos(bg.angle)) * 0.5 + gy * np.float32(np.sin(bg.angle)), 0, 1)
    elif bg.kind == "stripes":
        u = gx * np.float32(np.cos(bg.angle)) + gy * np.float32(np.sin(bg.angle))
        m = 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi * bg.freq))
    elif bg.kind == "checker":
        m = ((np.floor(gx * bg.freq) + np.floor(gy * bg.freq)) % 2).astype(np.float32)
    elif bg.kind == "blobs":
        m = np.zeros_like(gx)
        for bx, by, br in bg.blobs:
            m += np.exp(-((gx - bx) ** 2 + (gy - by) ** 2) / np.float32(2 * br * br))
        m = np.clip(m, 0, 1)
    else:
        raise ValueError(f"unknown background {bg.kind!r}; known: {BACKGROUNDS}")
    return c0 + (c1 - c0) * m[..., None]


def draw_track(img: np.ndarray, tr: Track, xs: np.ndarray, ys: np.ndarray, jitter: np.ndarray) -> None:
    """Composite one object over `img` (T, H, W, 3) in place.

    Each frame is drawn only inside the object's bounding box, which is much
    cheaper than evaluating the shape over the whole frame.

    Args:
        xs, ys: pixel-centre coordinates in world units, shapes (W,) and (H,).
        jitter: camera offsets in world units, (T, 2).
    """
    T, H, W, _ = img.shape
    app = tr.app
    x, y = (np.broadcast_to(np.asarray(v, dtype=np.float64), (T,)) for v in (tr.x, tr.y))
    sx, sy, ang, alpha, bright = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), (T,)) for v in (tr.sx, tr.sy, tr.angle, tr.alpha, tr.brightness)
    )
    col1, col2 = np.asarray(app.colour, np.float32), np.asarray(app.colour2, np.float32)
    px = float(H)  # pixels per world unit
    for t in range(T):
        if alpha[t] <= 0.0:
            continue
        # Bounding radius: every shape lies within 1.2 radii along its longest axis.
        reach = 1.2 * app.size * max(sx[t], sy[t]) + 2.0 / px
        cx, cy = x[t] - jitter[t, 0], y[t] - jitter[t, 1]  # object centre in unshifted pixel space
        i0, i1 = np.searchsorted(ys, [cy - reach, cy + reach])
        j0, j1 = np.searchsorted(xs, [cx - reach, cx + reach])
        if i0 >= i1 or j0 >= j1:
            continue  # entirely outside the frame
        dx = xs[None, j0:j1] - cx  # (1, w)
        dy = ys[i0:i1, None] - cy  # (h, 1)
        c, s = np.float32(np.cos(ang[t])), np.float32(np.sin(ang[t]))
        # Inverse rotation into the object's frame, then unit radius: (h, w).
        lx = (c * dx + s * dy) / np.float32(app.size * sx[t])
        ly = (-s * dx + c * dy) / np.float32(app.size * sy[t])
        d = shape_sdf(app.shape, lx, ly)
        # Distance in pixels (along the smaller axis) to an anti-aliased coverage in [0, 1].
        cover = np.clip(0.5 - d * np.float32(app.size * min(sx[t], sy[t]) * px), 0.0, 1.0) * np.float32(alpha[t])
        mask = _pattern_mask(app.pattern, app.freq, lx, ly)
        col = col1 if mask is None else col1 + (col2 - col1) * mask[..., None]
        col = col * np.float32(bright[t])
        a = cover[..., None]
        win = img[t, i0:i1, j0:j1]
        win *= 1.0 - a
        win += col * a


def rasterise(
    tracks: list[Track],
    bg: Background,
    width: int,
    height: int,
    jitter: np.ndarray,
    noise: np.ndarray | None,
) -> np.ndarray:
    """Render all frames of a scene.

    Args:
        tracks: objects, drawn in order of their `z`.
        bg: the background.
        width, height: frame size in pixels.
        jitter: camera offsets in frame heights, shape (T, 2).
        noise: additive per-pixel noise, broadcastable to (T, H, W, 3), or None.

    Returns:
        uint8 frames of shape (T, H, W, 3).
    """
    # Pixel centres in world units, shifted by the camera: (T, H, W).
    xs = (np.arange(width, dtype=np.float32) + 0.5) / height
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    gx = xs[None, None, :] + jitter[:, 0].astype(np.float32)[:, None, None]
    gy = ys[None, :, None] + jitter[:, 1].astype(np.float32)[:, None, None]
    gx, gy = np.broadcast_arrays(gx, gy)
    img = draw_background(bg, gx, gy).astype(np.float32)
    for tr in sorted(tracks, key=lambda t: t.z):
        draw_track(img, tr, xs, ys, jitter)
    if noise is not None:
        img += noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
