"""Uniform sparse frame sampling, as in TSN, OTAM, TRX and CLIP-FSAR."""

from __future__ import annotations


def segment_middles(num_frames: int, segments: int) -> list[int]:
    """Split `num_frames` into `segments` equal parts and take the middle frame of each.

    A video shorter than `segments` repeats frames (e.g. 3 frames, 8 segments ->
    [0, 0, 0, 1, 1, 2, 2, 2]) so every sample has the same length.
    """
    if num_frames < 1 or segments < 1:
        raise ValueError(f"need num_frames >= 1 and segments >= 1, got {num_frames} and {segments}")
    return [min(num_frames - 1, int((i + 0.5) * num_frames / segments)) for i in range(segments)]


def train_candidates(stored: int, segments: int) -> list[list[int]]:
    """Positions (into a sample's stored frames) that fall in each of `segments` segments.

    Training stores `stored` uniformly sampled frames (a multiple of `segments`); the
    trainer draws one random position per segment for temporal jitter.
    """
    if stored % segments:
        raise ValueError(f"stored frames ({stored}) must be a multiple of the segments ({segments})")
    per = stored // segments
    return [list(range(s * per, (s + 1) * per)) for s in range(segments)]
