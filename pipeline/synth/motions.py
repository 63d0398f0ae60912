"""Motion families: each returns the objects of one clip played forwards.

A family takes the per-video context (`Ctx`) and its keyword arguments, and returns
`Track`s whose per-frame states are functions of the context's progress `p`
(or clip time `u` for periodic motions). Reversed classes reuse a family and play
its frames backwards, so they need no code here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fsar.pipeline.synth.captions import COLOURS, PATTERN_WORDS, REGIONS, CaptionedClip, group_tracks
from fsar.pipeline.synth.raster import Appearance, Track
from fsar.pipeline.synth.scene import DIRECTIONS, Ctx

TAU = 2 * np.pi
FAMILIES: dict[str, Callable[..., list[Track]]] = {}


def family(fn):
    FAMILIES[fn.__name__] = fn
    return fn


def _ease_in(p):
    return p * p


def _ease_out(p):
    return 1.0 - (1.0 - p) ** 2


def _floor(ctx: Ctx, y: float = 0.88) -> Track:
    return ctx.bar(ctx.aspect / 2, y + 0.04, ctx.aspect / 2 + 0.1, 0.04, z=-1)


# -- single objects moving along straight paths -------------------------------
@family
def move(ctx: Ctx, direction: str) -> list[Track]:
    a = ctx.obj()
    p0, p1 = ctx.path(direction, a.size + 0.02)
    x, y = ctx.lerp(p0, p1, ctx.p)
    return [Track(a, x, y, angle=float(ctx.rng.uniform(0, TAU)))]


@family
def push(ctx: Ctx, direction: str) -> list[Track]:
    """The hand approaches from behind, touches, then both move (reversed: pulling)."""
    a, h = ctx.obj(), ctx.agent()
    d = np.asarray(DIRECTIONS[direction])
    p0, p1 = ctx.path(direction, a.size + 0.02)
    p0 = p0 + d * 0.08  # leave room behind the object for the hand
    touch = np.clip(ctx.p / 0.25, 0, 1)  # hand closes the gap in the first quarter
    go = np.clip((ctx.p - 0.25) / 0.75, 0, 1)
    ox, oy = ctx.lerp(p0, p1, go)
    gap = (a.size + h.size) * (1.0 + 1.5 * (1.0 - touch))
    angle = float(np.arctan2(d[1], d[0]))
    return [Track(a, ox, oy), Track(h, ox - d[0] * gap, oy - d[1] * gap, angle=angle, z=1)]


@family
def start_move(ctx: Ctx, direction: str) -> list[Track]:
    """At rest for the first half, then accelerating away (reversed: slowing to a stop)."""
    a = ctx.obj()
    p0, p1 = ctx.path(direction, a.size + 0.02)
    x, y = ctx.lerp(p0, p1, _ease_in(np.clip((ctx.p - 0.45) / 0.55, 0, 1)))
    return [Track(a, x, y)]


@family
def zigzag(ctx: Ctx, direction: str, wave: str = "triangle") -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.1)))
    p0, p1 = ctx.path(direction, a.size + 0.12)
    x, y = ctx.lerp(p0, p1, ctx.p)
    d = np.asarray(DIRECTIONS[direction])
    n = ctx.rng.uniform(2.0, 3.5)  # periods along the path
    ph = n * ctx.p
    off = np.sin(TAU * ph) if wave == "sine" else 2 * np.abs(2 * (ph - np.floor(ph + 0.5))) - 1
    amp = ctx.rng.uniform(0.06, 0.1)
    return [Track(a, x - d[1] * amp * off, y + d[0] * amp * off)]


@family
def throw_arc(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.1)))
    x0, x1 = 0.1 * ctx.aspect, 0.9 * ctx.aspect
    y0 = ctx.rng.uniform(0.7, 0.8)
    x, _ = ctx.lerp((x0, 0), (x1, 0), ctx.p)
    y = y0 - ctx.rng.uniform(0.35, 0.5) * 4 * ctx.p * (1 - ctx.p)
    return [Track(a, x, y, angle=ctx.p * ctx.rng.uniform(2, 6)), _floor(ctx)]


@family
def roll(ctx: Ctx) -> list[Track]:
    """A wheel rolling to the right without slipping (its marker turns clockwise)."""
    a = ctx.obj(shape="circle", asymmetric=True)
    fy = 0.88
    p0, p1 = (0.1 * ctx.aspect + a.size, fy - a.size), (0.9 * ctx.aspect - a.size, fy - a.size)
    x, y = ctx.lerp(p0, p1, ctx.p)
    return [Track(a, x, y, angle=(x - x[0]) / a.size), _floor(ctx, fy)]


# -- gravity -----------------------------------------------------------------
@family
def fall(ctx: Ctx) -> list[Track]:
    """Dropped from rest near the top onto the floor (reversed: thrown upwards)."""
    a = ctx.obj()
    fy = 0.88
    x = ctx.rng.uniform(0.25, 0.75) * ctx.aspect
    y0, y1 = a.size + ctx.rng.uniform(0.02, 0.15), fy - a.size
    return [Track(a, ctx.still(x), y0 + (y1 - y0) * _ease_in(ctx.p)), _floor(ctx, fy)]


@family
def drop_onto(ctx: Ctx) -> list[Track]:
    a = ctx.obj()
    px = ctx.rng.uniform(0.3, 0.7) * ctx.aspect
    top = ctx.rng.uniform(0.6, 0.75)
    plat = ctx.bar(px, top + 0.03, a.size * 2.0, 0.03)
    y0, y1 = a.size + 0.03, top - a.size
    return [Track(a, ctx.still(px), y0 + (y1 - y0) * _ease_in(ctx.p)), plat, _floor(ctx)]


@family
def slope(ctx: Ctx) -> list[Track]:
    """Sliding down a slope, speeding up (reversed: pushed up, slowing down)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.1)))
    ang = ctx.rng.uniform(0.35, 0.6) * (1 if ctx.rng.uniform() < 0.5 else -1)
    cx, cy = ctx.aspect / 2, 0.55
    half = 0.42 * ctx.aspect / np.cos(ang)
    d = np.array([np.cos(ang), np.sin(ang)])
    if d[1] < 0:
        d = -d  # d points downhill
    normal = np.array([d[1], -d[0]])  # towards the upper side of the slope
    top = np.array([cx, cy]) - d * half * 0.8 + normal * (a.size + 0.02)
    bottom = np.array([cx, cy]) + d * half * 0.8 + normal * (a.size + 0.02)
    x, y = ctx.lerp(top, bottom, _ease_in(ctx.p))
    return [Track(a, x, y), ctx.bar(cx, cy, half, 0.02, angle=float(np.arctan2(d[1], d[0])))]


@family
def bounce(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.1)))
    fy = 0.88
    k = ctx.rng.uniform(1.5, 3.5)
    h = ctx.rng.uniform(0.3, 0.55)
    y = fy - a.size - h * np.abs(np.sin(np.pi * (k * ctx.u + ctx.rng.uniform())))
    x0 = ctx.rng.uniform(0.3, 0.7) * ctx.aspect
    x = x0 + ctx.rng.uniform(-0.15, 0.15) * (ctx.u - 0.5)
    return [Track(a, x, y), _floor(ctx, fy)]


@family
def pendulum(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09)))
    px, py, length = ctx.aspect / 2 + ctx.rng.uniform(-0.1, 0.1), 0.08, ctx.rng.uniform(0.45, 0.65)
    phi = ctx.rng.uniform(0.4, 0.8) * np.cos(TAU * (ctx.rng.uniform(0.8, 2.0) * ctx.u + ctx.rng.uniform()))
    bx, by = px + length * np.sin(phi), py + length * np.cos(phi)
    rope = ctx.bar(0, 0, length / 2, 0.008)
    rope.x, rope.y, rope.angle = (px + bx) / 2, (py + by) / 2, np.pi / 2 - phi
    return [Track(a, bx, by, z=1), rope]


# -- size, shape, rotation and appearance ----------------------------------------
@family
def zoom(ctx: Ctx) -> list[Track]:
    """Approaching the camera (reversed: moving away from it)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.1, 0.14)))
    x, y = ctx.centre(0.1)
    s = 0.45 + ctx.rng.uniform(0.9, 1.3) * ctx.p
    return [Track(a, ctx.still(x), ctx.still(y), sx=s, sy=s)]


@family
def rotate(ctx: Ctx, turns: float = 0.0) -> list[Track]:
    """Clockwise rotation: a fraction of a turn, or several `turns` (spinning)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.12, 0.2)), asymmetric=True)
    x, y = ctx.centre(0.1)
    if turns:  # spinning: the direction is random, so reversal gives the same class
        sweep = TAU * ctx.rng.uniform(turns, 2 * turns) * (1 if ctx.rng.uniform() < 0.5 else -1)
        ang = sweep * ctx.u
    else:
        ang = ctx.rng.uniform(0.6, 1.2) * np.pi * ctx.p
    return [Track(a, ctx.still(x), ctx.still(y), angle=ang + ctx.rng.uniform(0, TAU))]


@family
def flip(ctx: Ctx) -> list[Track]:
    """Turning upside down, in either direction."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.12, 0.2)), shape="triangle")
    x, y = ctx.centre(0.1)
    sign = 1 if ctx.rng.uniform() < 0.5 else -1
    s = 0.5 - 0.5 * np.cos(np.pi * ctx.p)
    return [Track(a, ctx.still(x), ctx.still(y), angle=sign * np.pi * s)]


@family
def stretch(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.1, 0.14)))
    x, y = ctx.centre(0.1)
    k = ctx.rng.uniform(0.8, 1.2)
    return [Track(a, ctx.still(x), ctx.still(y), sx=1 + k * ctx.p, sy=1 - 0.4 * k * ctx.p)]


@family
def grow(ctx: Ctx) -> list[Track]:
    """Growing out of the ground (reversed: sinking into it)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.1, 0.16)), shape="box")
    fy = 0.88
    x = ctx.rng.uniform(0.3, 0.7) * ctx.aspect
    sy = 0.08 + 0.92 * ctx.p
    return [Track(a, ctx.still(x), fy - 0.8 * a.size * sy, sy=sy), _floor(ctx, fy)]


@family
def pulse(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.1, 0.14)))
    x, y = ctx.centre(0.1)
    s = 1 + 0.35 * np.sin(TAU * (ctx.rng.uniform(1.5, 3) * ctx.u + ctx.rng.uniform()))
    return [Track(a, ctx.still(x), ctx.still(y), sx=s, sy=s)]


@family
def fade(ctx: Ctx) -> list[Track]:
    a = ctx.obj()
    x, y = ctx.point(a.size + 0.05)
    return [Track(a, ctx.still(x), ctx.still(y), alpha=ctx.p)]


@family
def blink(ctx: Ctx) -> list[Track]:
    a = ctx.obj()
    x, y = ctx.point(a.size + 0.05)
    on = np.sin(TAU * (ctx.rng.uniform(2, 4) * ctx.u + ctx.rng.uniform())) > 0
    return [Track(a, ctx.still(x), ctx.still(y), alpha=on.astype(np.float64))]


@family
def light_up(ctx: Ctx) -> list[Track]:
    a = ctx.obj()
    x, y = ctx.point(a.size + 0.05)
    return [Track(a, ctx.still(x), ctx.still(y), brightness=0.2 + 0.9 * ctx.p)]


@family
def colour_change(ctx: Ctx) -> list[Track]:
    """One colour cross-fading into another: its reversal is the same class."""
    a = ctx.obj()
    b = Appearance(a.shape, ctx.colour(), a.colour2, a.pattern, a.freq, a.size)
    x, y = ctx.point(a.size + 0.05)
    return [Track(a, ctx.still(x), ctx.still(y)), Track(b, ctx.still(x), ctx.still(y), alpha=ctx.p, z=1)]


@family
def tip_over(ctx: Ctx) -> list[Track]:
    """A tall box falling over around its bottom corner (reversed: being stood up)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.08, 0.11)), shape="box")
    fy = 0.88
    w, h = 0.8 * a.size, 0.8 * a.size * 1.8
    side = 1 if ctx.rng.uniform() < 0.5 else -1  # which way it tips
    pivot = np.array([ctx.rng.uniform(0.35, 0.65) * ctx.aspect, fy])
    th = side * (np.pi / 2) * _ease_in(ctx.p)
    c, s = np.cos(th), np.sin(th)
    ox, oy = -side * w, -h  # centre relative to the pivot when upright
    return [
        Track(a, pivot[0] + c * ox - s * oy, pivot[1] + s * ox + c * oy, sy=1.8, angle=th),
        _floor(ctx, fy),
    ]


@family
def fill(ctx: Ctx) -> list[Track]:
    """A container filling up (reversed: being emptied)."""
    cx, bottom = ctx.rng.uniform(0.35, 0.65) * ctx.aspect, ctx.rng.uniform(0.75, 0.85)
    hw, hh = ctx.rng.uniform(0.08, 0.12), ctx.rng.uniform(0.2, 0.3)
    outer = ctx.bar(cx, bottom - hh, hw + 0.02, hh + 0.01)
    inner = ctx.bar(cx, bottom - hh, hw, hh, z=1)
    inner.app = Appearance("bar", (0.08, 0.08, 0.08), (0.08, 0.08, 0.08), "solid", 1.0, hh)
    level = (0.04 + 0.92 * ctx.p) * hh  # half height of the liquid
    col = ctx.colour()
    liquid = Appearance("bar", col, col, "solid", 1.0, 0.01)
    return [outer, inner, Track(liquid, ctx.still(cx), bottom - level, sx=hw / 0.01, sy=level / 0.01, z=2)]


# -- two or more objects -----------------------------------------------------------
@family
def apart(ctx: Ctx, axis: str, same: bool = False) -> list[Track]:
    """Two objects moving apart from contact (`same`: one object splitting in two)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.07, 0.11)))
    b = a if same else ctx.obj(size=float(ctx.rng.uniform(0.07, 0.11)))
    v = np.asarray(DIRECTIONS["right" if axis == "horizontal" else "down"])
    c = np.asarray(ctx.centre(0.05))
    extent = ctx.aspect if axis == "horizontal" else 1.0
    far = ctx.rng.uniform(0.3, 0.4) * extent
    near_a, near_b = (0.0, 0.0) if same else (a.size, b.size)
    ax, ay = ctx.lerp(c - v * near_a, c - v * far, ctx.p)
    bx, by = ctx.lerp(c + v * near_b, c + v * far, ctx.p)
    return [Track(a, ax, ay), Track(b, bx, by, z=1)]


@family
def approach(ctx: Ctx) -> list[Track]:
    """Moving something towards a still object and stopping next to it."""
    a, b = ctx.obj(), ctx.obj()
    side = 1 if ctx.rng.uniform() < 0.5 else -1
    ax, y = ctx.aspect / 2 + side * ctx.rng.uniform(0.15, 0.25), ctx.rng.uniform(0.35, 0.65)
    start, stop = ax - side * 0.8 * ctx.aspect, ax - side * (a.size + b.size) * 1.1
    start = float(np.clip(start, b.size, ctx.aspect - b.size))
    x, _ = ctx.lerp((start, 0), (stop, 0), _ease_out(ctx.p))
    return [Track(a, ctx.still(ax), ctx.still(y)), Track(b, x, ctx.still(y), z=1)]


@family
def place_next(ctx: Ctx) -> list[Track]:
    """Bringing something in from outside the frame and putting it next to something."""
    a, b = ctx.obj(), ctx.obj()
    side = 1 if ctx.rng.uniform() < 0.5 else -1
    ax, y = ctx.aspect / 2 + side * ctx.rng.uniform(0.05, 0.2), ctx.rng.uniform(0.4, 0.7)
    start = ctx.aspect / 2 - side * (ctx.aspect / 2 + b.size)
    stop = ax - side * (a.size + b.size) * 1.05
    x, _ = ctx.lerp((start, 0), (stop, 0), _ease_out(ctx.p))
    return [Track(a, ctx.still(ax), ctx.still(y)), Track(b, x, ctx.still(y), z=1)]


@family
def cover(ctx: Ctx) -> list[Track]:
    """A larger object slides in from the top and covers a still one (reversed: uncovering)."""
    a = ctx.obj()
    lid = ctx.obj(size=a.size * 1.5, shape="box")
    x, y = ctx.point(lid.size + 0.05)
    _, ly = ctx.lerp((0, -lid.size), (0, y), _ease_out(ctx.p))
    return [Track(a, ctx.still(x), ctx.still(y)), Track(lid, ctx.still(x), ly, z=1)]


@family
def pass_by(ctx: Ctx, behind: bool) -> list[Track]:
    """Passing left to right behind (or in front of) a tall still object."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.07, 0.1)))
    y = ctx.rng.uniform(0.35, 0.65)
    occ = ctx.bar(ctx.aspect / 2 + ctx.rng.uniform(-0.05, 0.05), 0.5, ctx.rng.uniform(0.05, 0.1), 0.35, z=0)
    x, _ = ctx.lerp((0.08 * ctx.aspect, 0), (0.92 * ctx.aspect, 0), ctx.p)
    return [occ, Track(a, x, ctx.still(y), z=-1 if behind else 1)]


@family
def follow(ctx: Ctx) -> list[Track]:
    a, b = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09))), ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09)))
    y = ctx.rng.uniform(0.3, 0.7)
    gap = a.size + b.size + ctx.rng.uniform(0.05, 0.15)
    x, _ = ctx.lerp((0.1 * ctx.aspect + gap, 0), (0.9 * ctx.aspect, 0), ctx.p)
    return [Track(a, x, ctx.still(y)), Track(b, x - gap, ctx.still(y))]


@family
def stack(ctx: Ctx) -> list[Track]:
    """Carrying something over another object and putting it on top (reversed: taking it off)."""
    base, top = ctx.obj(shape="box"), ctx.obj(shape="box")
    fy = 0.88
    bx = ctx.rng.uniform(0.5, 0.7) * ctx.aspect
    by = fy - 0.8 * base.size
    rest = by - 0.8 * (base.size + top.size)
    high = ctx.rng.uniform(0.12, 0.25)
    across = np.clip(ctx.p / 0.6, 0, 1)
    down = np.clip((ctx.p - 0.6) / 0.4, 0, 1)
    x = 0.12 * ctx.aspect + (bx - 0.12 * ctx.aspect) * across
    y = high + (rest - high) * down
    return [Track(base, ctx.still(bx), ctx.still(by)), Track(top, x, y, z=1), _floor(ctx, fy)]


@family
def lift(ctx: Ctx) -> list[Track]:
    """A hand comes down, takes an object off the floor and lifts it (reversed: putting it down)."""
    a, h = ctx.obj(), ctx.agent()
    fy = 0.88
    x = ctx.rng.uniform(0.3, 0.7) * ctx.aspect
    rest = fy - a.size
    reach = np.clip(ctx.p / 0.4, 0, 1)
    up = np.clip((ctx.p - 0.4) / 0.6, 0, 1)
    oy = rest - (rest - a.size - 0.2) * up
    grip = a.size + 0.9 * h.size  # hand centre above object centre when touching
    hy = np.where(up > 0, oy - grip, -h.size + (rest - grip + h.size) * reach)
    return [Track(a, ctx.still(x), oy), Track(h, ctx.still(x), hy, angle=np.pi / 2, z=1), _floor(ctx, fy)]


@family
def jump_over(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.08)))
    fy = 0.88
    ob = ctx.bar(ctx.aspect / 2, fy - 0.1, 0.04, 0.1)
    x, _ = ctx.lerp((0.1 * ctx.aspect, 0), (0.9 * ctx.aspect, 0), ctx.p)
    hop = np.clip((x - (ctx.aspect / 2 - 0.25)) / 0.5, 0, 1)
    y = fy - a.size - ctx.rng.uniform(0.3, 0.4) * 4 * hop * (1 - hop)
    return [Track(a, x, y, z=1), ob, _floor(ctx, fy)]


@family
def hit(ctx: Ctx) -> list[Track]:
    """One object runs into a still one, stops, and the other moves on."""
    a, b = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09))), ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09)))
    y = ctx.rng.uniform(0.3, 0.7)
    bx0 = ctx.aspect / 2 + ctx.rng.uniform(-0.05, 0.05)
    first, second = np.clip(ctx.p / 0.5, 0, 1), np.clip((ctx.p - 0.5) / 0.5, 0, 1)
    ax, _ = ctx.lerp((0.1 * ctx.aspect, 0), (bx0 - a.size - b.size, 0), first)
    bx, _ = ctx.lerp((bx0, 0), (0.9 * ctx.aspect, 0), _ease_out(second))
    return [Track(a, ax, ctx.still(y)), Track(b, bx, ctx.still(y))]


@family
def swap(ctx: Ctx) -> list[Track]:
    a, b = ctx.obj(), ctx.obj()
    y = ctx.rng.uniform(0.4, 0.6)
    xa, xb = 0.3 * ctx.aspect, 0.7 * ctx.aspect
    s = 0.5 - 0.5 * np.cos(np.pi * ctx.p)
    arc = 0.2 * np.sin(np.pi * s)
    return [Track(a, xa + (xb - xa) * s, y - arc), Track(b, xb + (xa - xb) * s, y + arc)]


@family
def curtains(ctx: Ctx) -> list[Track]:
    """Two panels sliding away from the middle, revealing an object (reversed: closing)."""
    a = ctx.obj()
    cx = ctx.aspect / 2
    hw = cx / 2 + 0.02
    left, right = ctx.bar(0, 0.5, hw, 0.5, z=1), ctx.bar(0, 0.5, hw, 0.5, z=1)
    right.app = left.app
    open_ = _ease_out(ctx.p) * (hw - 0.05)
    left.x, right.x = cx - hw - open_, cx + hw + open_
    return [Track(a, ctx.still(cx), ctx.still(ctx.rng.uniform(0.35, 0.65))), left, right]


# -- paths that turn ---------------------------------------------------------------------
@family
def orbit(ctx: Ctx, around: bool = False) -> list[Track]:
    """Circling clockwise on screen, optionally around a still object."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09)))
    cx, cy = ctx.centre(0.05)
    r = ctx.rng.uniform(0.22, 0.32)
    th = ctx.rng.uniform(0, TAU) + ctx.rng.uniform(1.2, 1.8) * np.pi * ctx.p
    out = [Track(a, cx + r * np.cos(th), cy + r * np.sin(th), z=1)]
    if around:
        out.append(Track(ctx.obj(size=float(ctx.rng.uniform(0.08, 0.12))), ctx.still(cx), ctx.still(cy)))
    return out


@family
def spiral(ctx: Ctx) -> list[Track]:
    """Spiralling inwards, turning either way (reversed: spiralling outwards)."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.05, 0.08)))
    cx, cy = ctx.centre(0.05)
    r = ctx.rng.uniform(0.3, 0.38) * (1 - 0.9 * ctx.p)
    th = ctx.rng.uniform(0, TAU) + (1 if ctx.rng.uniform() < 0.5 else -1) * ctx.rng.uniform(2.5, 3.5) * np.pi * ctx.p
    return [Track(a, cx + r * np.cos(th), cy + r * np.sin(th))]


@family
def square_path(ctx: Ctx) -> list[Track]:
    """Going round a square, clockwise on screen."""
    a = ctx.obj(size=float(ctx.rng.uniform(0.05, 0.08)))
    cx, cy = ctx.centre(0.05)
    h = ctx.rng.uniform(0.2, 0.3)
    corners = np.array([[-h, -h], [h, -h], [h, h], [-h, h], [-h, -h]]) + [cx, cy]
    k = int(ctx.rng.integers(0, 4))
    corners = np.roll(corners[:4], -k, axis=0)
    corners = np.vstack([corners, corners[:1]])
    s = ctx.p * 4
    i = np.minimum(s.astype(int), 3)
    f = (s - i)[:, None]
    pts = corners[i] + (corners[i + 1] - corners[i]) * f
    return [Track(a, pts[:, 0], pts[:, 1])]


@family
def figure_eight(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.05, 0.08)))
    cx, cy = ctx.centre(0.05)
    th = TAU * (ctx.u * (1 if ctx.rng.uniform() < 0.5 else -1) + ctx.rng.uniform())
    return [Track(a, cx + 0.35 * ctx.aspect * 0.5 * np.sin(th), cy + 0.2 * np.sin(2 * th))]


@family
def oscillate(ctx: Ctx, axis: str, amp: float, cycles: float) -> list[Track]:
    """Back and forth along an axis; symmetric in time (shaking, bobbing)."""
    a = ctx.obj()
    x, y = ctx.centre(0.1)
    off = amp * np.sin(TAU * (ctx.rng.uniform(cycles, 2 * cycles) * ctx.u + ctx.rng.uniform()))
    if axis == "horizontal":
        return [Track(a, x + off, ctx.still(y))]
    return [Track(a, ctx.still(x), y + off)]


@family
def wall_bounce(ctx: Ctx) -> list[Track]:
    a = ctx.obj(size=float(ctx.rng.uniform(0.06, 0.09)))
    side = 1 if ctx.rng.uniform() < 0.5 else -1
    wx = ctx.aspect / 2 + side * 0.42 * ctx.aspect
    wall = ctx.bar(wx, 0.5, 0.03, 0.45)
    y = ctx.rng.uniform(0.3, 0.7)
    contact = wx - side * (0.03 + a.size)
    far = ctx.aspect / 2 - side * 0.3 * ctx.aspect
    tri = 1 - np.abs(2 * ctx.p - 1)
    return [Track(a, far + (contact - far) * tri, ctx.still(y)), wall]


@family
def look(ctx: Ctx, colour: str, shape: str, motion: str) -> list[Track]:
    """An appearance class: 1 to 3 objects of a named colour and shape doing one of the caption
    corpus's motions; count, texture and place vary (see `captions.group_tracks`)."""
    rng = ctx.rng
    truth = CaptionedClip(int(rng.integers(1, 4)), colour, str(rng.choice(list(PATTERN_WORDS))), shape,
                          str(rng.choice(list(REGIONS))), motion, "flat")
    return group_tracks(ctx, truth, COLOURS[colour] + rng.uniform(-0.025, 0.025))
