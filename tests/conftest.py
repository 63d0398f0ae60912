"""Shared fixtures: the read-only data beside the checkout (../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the split lists and real clips live beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def real_clips(shared_data) -> list[Path]:
    clips = sorted(p for p in (shared_data / "real-clips").rglob("*") if p.suffix in {".mp4", ".avi", ".gif", ".webm"})
    assert len(clips) >= 20
    return clips
