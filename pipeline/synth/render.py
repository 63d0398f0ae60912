"""Render one synthetic clip: scene, motion, distractors, camera jitter and noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsar.pipeline.synth.catalogue import ClassSpec
from fsar.pipeline.synth.motions import FAMILIES
from fsar.pipeline.synth.raster import rasterise
from fsar.pipeline.synth.scene import Ctx


@dataclass(frozen=True)
class VideoParams:
    """What varies across videos beyond the scene: size, length, rate and the scene's seed."""

    width: int
    height: int
    frames: int
    fps: int
    scene_seed: int


def render_video(spec: ClassSpec, params: VideoParams) -> np.ndarray:
    """Render a clip of class `spec`.

    Everything random (objects, textures, colours, background, speeds, start points,
    distractors, camera jitter, noise) comes from `params.scene_seed`, drawn in an
    order that does not depend on `spec.reverse`: the two classes of a reversal pair
    rendered with one seed give the same frames in opposite order.

    Returns:
        uint8 array of shape (frames, height, width, 3), RGB.
    """
    if spec.family not in FAMILIES:
        raise ValueError(f"class {spec.name!r}: unknown motion family {spec.family!r}; known: {sorted(FAMILIES)}")
    rng = np.random.default_rng(params.scene_seed)
    T, H, W = params.frames, params.height, params.width
    ctx = Ctx.make(rng, W / H, T)
    bg = ctx.background()
    tracks = FAMILIES[spec.family](ctx, **dict(spec.kwargs)) + ctx.distractors()
    # Hand-held camera: a slow random walk plus per-frame shake, in frame heights.
    walk = np.cumsum(rng.normal(0.0, rng.uniform(0.0, 0.004), size=(T, 2)), axis=0)
    jitter = walk - walk.mean(axis=0) + rng.normal(0.0, rng.uniform(0.0, 0.003), size=(T, 2))
    sigma = rng.uniform(0.0, 0.03)
    # Luma noise, shared by the three channels: (T, H, W, 1).
    noise = rng.standard_normal((T, H, W, 1), dtype=np.float32) * np.float32(sigma)
    frames = rasterise(tracks, bg, W, H, jitter, noise)
    if spec.reverse:
        frames = np.ascontiguousarray(frames[::-1])
    return frames
