"""`fsar-data synth`: write the synthetic benchmark as real video files plus split lists.

Output layout (OUT = `SynthConfig.out`):

    OUT/videos/<video id>.<webm|mp4|avi>   one clip per video
    OUT/classes.json                       classes (index, name, split, reversal partner) and the config
    OUT/splits/{train,val,test}.txt        `<class name>/<video id>` lines, disjoint class sets
    OUT/videos.jsonl                       per-video metadata; written last, so its presence means complete

Everything is a pure function of the config: the same arguments give byte-identical
files, whatever the number of workers. Re-running into the same OUT reuses finished
videos (each is written under a temporary name and renamed when complete).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fsar.pipeline import __version__
from fsar.pipeline.atomic import write_text_atomic
from fsar.pipeline.synth.catalogue import APPEARANCE, CATALOGUE, ClassSpec
from fsar.pipeline.synth.render import VideoParams, render_video
from fsar.pipeline.video.encode import CODECS, check_frame_size, codec_spec, write_video

SPLITS = ("train", "val", "test")
FPS_CHOICES = (12, 15, 24, 25, 30)


@dataclass
class SynthConfig:
    """Arguments of the synthetic benchmark; all but `out` and `workers` define its content."""

    out: Path
    """Output directory."""
    classes: int = 100
    """Number of classes, taken in catalogue order (1 to the catalogue's size)."""
    videos_per_class: int = 24
    """Videos rendered per class."""
    seed: int = 0
    """Master seed: every random choice derives from it."""
    size: tuple[int, int] = (192, 144)
    """Largest frame size (width, height); videos also use 3/4 of it and a 16:9 frame of its height.
    Multiples of 16, so every encoder is reproducible."""
    frames: tuple[int, int] = (24, 40)
    """Inclusive range of frames per video."""
    codecs: tuple[str, ...] = ("vp9", "h264", "mpeg4")
    """Codecs to mix (see `pipeline.video.encode.CODECS`); each class gets each in turn."""
    split_proportions: tuple[int, int, int] = (64, 12, 24)
    """Relative numbers of train/val/test classes."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Rendering processes (does not change the output)."""
    appearance: int = 0
    """Appearance-named classes (`catalogue.APPEARANCE`, "a red circle spinning") added to the
    `classes` motion classes, split in the same proportions on their own."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.size = tuple(int(v) for v in self.size)
        self.frames = tuple(int(v) for v in self.frames)
        self.codecs = tuple(self.codecs)
        self.split_proportions = tuple(int(v) for v in self.split_proportions)
        if not 1 <= self.classes <= len(CATALOGUE):
            raise ValueError(f"classes must be in [1, {len(CATALOGUE)}] (the catalogue's size), got {self.classes}")
        if not 0 <= self.appearance <= len(APPEARANCE):
            raise ValueError(f"appearance must be in [0, {len(APPEARANCE)}] (the appearance catalogue's size), got {self.appearance}")
        if not 1 <= self.videos_per_class <= 9999:
            raise ValueError(f"videos_per_class must be in [1, 9999], got {self.videos_per_class}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        w, h = self.size
        if len(self.size) != 2 or w % 16 or h % 16 or not (32 <= w <= 4096 and 32 <= h <= 4096):
            raise ValueError(f"size must be WxH with multiples of 16 in [32, 4096] (e.g. 192x144), got {w}x{h}")
        lo, hi = self.frames
        if len(self.frames) != 2 or not 1 <= lo <= hi <= 10000:
            raise ValueError(f"frames must be a range LO-HI with 1 <= LO <= HI <= 10000, got {lo}-{hi}")
        if not self.codecs:
            raise ValueError(f"codecs must name at least one of: {', '.join(CODECS)}")
        for c in self.codecs:
            for fw, fh in self.frame_sizes():
                check_frame_size(c, fw, fh)  # unknown codecs raise with the list of known ones
        if len(self.split_proportions) != 3 or min(self.split_proportions) < 0 or sum(self.split_proportions) == 0:
            raise ValueError(f"split_proportions must be three non-negative numbers, got {self.split_proportions}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def content_key(self) -> dict:
        """The arguments that determine the files (everything except `out` and `workers`)."""
        d = asdict(self)
        d.pop("out")
        d.pop("workers")
        if not self.appearance:  # folders made before appearance classes existed keep their key
            d.pop("appearance")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def frame_sizes(self) -> list[tuple[int, int]]:
        """The frame sizes videos are drawn from: full, 3/4 and 16:9 (multiples of 16)."""
        w, h = self.size

        def r16(v: float) -> int:
            return max(16, int(round(v / 16.0)) * 16)

        sizes = [(w, h), (r16(w * 0.75), r16(h * 0.75)), (r16(h * 16 / 9), h)]
        return list(dict.fromkeys(sizes))  # dedupe, keep order


@dataclass(frozen=True)
class VideoJob:
    """One video to render: everything a worker needs, nothing it must look up."""

    video_id: str
    class_index: int
    spec: ClassSpec
    split: str
    codec: str
    params: VideoParams
    path: Path


def split_sizes(n: int, proportions: tuple[int, int, int]) -> list[int]:
    """Numbers of classes per split by largest remainder; every split gets one when n >= 3."""
    total = sum(proportions)
    exact = [n * p / total for p in proportions]
    sizes = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - sizes[i], reverse=True)[: n - sum(sizes)]:
        sizes[i] += 1
    for i in range(3):
        if n >= 3 and sizes[i] == 0 and proportions[i] > 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] = 1
    return sizes


def assign_splits(specs: list[ClassSpec], proportions: tuple[int, int, int], seed: int) -> dict[str, str]:
    """Map class names to splits with disjoint class sets, keeping reversal pairs in one split.

    Both classes of a pair land in the same split, so the test split can measure
    accuracy on time-reversed pairs. A pair is split up only when the split sizes
    cannot be met otherwise.
    """
    names = {s.name for s in specs}
    pairs = [(s.name, s.partner) for s in specs if not s.reverse and s.partner in names]
    paired = {n for p in pairs for n in p}
    singles = [s.name for s in specs if s.name not in paired]
    sizes = split_sizes(len(specs), proportions)
    rng = np.random.default_rng([seed, 0x5EED])
    rng.shuffle(pairs)
    rng.shuffle(singles)
    # Singles per split: parity first (a split of odd size needs an odd number of them) ...
    n_single = [size % 2 for size in sizes]
    while sum(n_single) > len(singles):  # not enough singles: break a pair
        a, b = pairs.pop()
        singles += [a, b]
    # ... then the rest two at a time, where the split is furthest below its share.
    while sum(n_single) < len(singles):
        share = [len(singles) * size / max(1, len(specs)) - k for size, k in zip(sizes, n_single)]
        for i in sorted(range(3), key=lambda i: share[i], reverse=True):
            if n_single[i] + 2 <= sizes[i]:
                n_single[i] += 2
                break
    out: dict[str, str] = {}
    it_single, it_pair = iter(singles), iter(pairs)
    for split, size, k in zip(SPLITS, sizes, n_single):
        for _ in range(k):
            out[next(it_single)] = split
        for _ in range((size - k) // 2):
            a, b = next(it_pair)
            out[a] = out[b] = split
    return out


def plan(config: SynthConfig) -> tuple[list[dict], list[VideoJob]]:
    """The classes (as written to classes.json) and every video job, in a fixed order."""
    specs = list(CATALOGUE[: config.classes])
    split_of = assign_splits(specs, config.split_proportions, config.seed)
    if config.appearance:  # each split gets its share of both kinds
        looks = list(APPEARANCE[: config.appearance])
        split_of |= assign_splits(looks, config.split_proportions, config.seed)
        specs += looks
    names = {s.name for s in specs}
    sizes = config.frame_sizes()
    classes, jobs = [], []
    for ci, spec in enumerate(specs):
        classes.append(
            {
                "index": ci,
                "name": spec.name,
                "split": split_of[spec.name],
                "family": spec.family,
                "reversed": spec.reverse,
                "reversal_of": spec.partner if spec.partner in names else None,
            }
        )
        for v in range(config.videos_per_class):
            rng = np.random.default_rng([config.seed, ci, v])
            w, h = sizes[int(rng.integers(len(sizes)))]
            params = VideoParams(
                width=w,
                height=h,
                frames=int(rng.integers(config.frames[0], config.frames[1] + 1)),
                fps=int(rng.choice(FPS_CHOICES)),
                scene_seed=int(rng.integers(2**63)),
            )
            codec = config.codecs[(ci + v) % len(config.codecs)]  # every class gets every codec
            vid = f"{ci:03d}{v:04d}"
            path = config.out / "videos" / f"{vid}{codec_spec(codec).ext}"
            jobs.append(VideoJob(vid, ci, spec, split_of[spec.name], codec, params, path))
    return classes, jobs


def _render_job(job: VideoJob) -> bool:
    """Render and encode one video; False when it already existed."""
    if job.path.exists():
        return False
    frames = render_video(job.spec, job.params)
    write_video(job.path, frames, job.params.fps, job.codec)
    return True


def check_output(config: SynthConfig) -> None:
    """Fail if `config.out` holds a synthetic dataset made with other arguments."""
    meta = config.out / "classes.json"
    if not meta.exists():
        return
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))["config"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{meta}: not a synth dataset description ({e}); choose another output directory") from None
    if old != config.content_key():
        diff = {k: (old.get(k), v) for k, v in config.content_key().items() if old.get(k) != v}
        raise ValueError(
            f"{config.out} holds a synthetic dataset made with other arguments {diff} (old, new); "
            "choose another output directory or delete it"
        )


@dataclass
class SynthSummary:
    out: Path
    classes: dict[str, int]
    videos: int
    rendered: int
    reused: int
    seconds: float


def generate(config: SynthConfig, on_progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Render the synthetic benchmark described by `config`.

    Args:
        config: what to render and where.
        on_progress: called as on_progress(done, total) after each video.

    Returns:
        A summary: classes per split, videos rendered and reused, wall time.
    """
    t0 = time.perf_counter()
    check_output(config)
    classes, jobs = plan(config)
    (config.out / "videos").mkdir(parents=True, exist_ok=True)
    (config.out / "splits").mkdir(exist_ok=True)
    write_text_atomic(
        config.out / "classes.json",
        json.dumps({"dataset": "synth", "tool_version": __version__, "config": config.content_key(), "classes": classes}, indent=1) + "\n",
    )
    for split in SPLITS:
        lines = [f"{j.spec.name}/{j.video_id}" for j in jobs if j.split == split]
        write_text_atomic(config.out / "splits" / f"{split}.txt", "".join(line + "\n" for line in lines))

    rendered = 0
    results: Iterable[bool]
    pool = None
    if config.workers > 1:
        # spawn: safe even when the caller has already imported torch or started threads.
        pool = ProcessPoolExecutor(max_workers=config.workers, mp_context=get_context("spawn"))
        results = pool.map(_render_job, jobs, chunksize=4)
    else:
        results = map(_render_job, jobs)
    try:
        for done, was_rendered in enumerate(results, 1):
            rendered += was_rendered
            if on_progress:
                on_progress(done, len(jobs))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    records = [
        {
            "id": j.video_id,
            "class": j.spec.name,
            "class_index": j.class_index,
            "split": j.split,
            "file": j.path.relative_to(config.out).as_posix(),
            "codec": j.codec,
            "container": codec_spec(j.codec).container,
            "width": j.params.width,
            "height": j.params.height,
            "frames": j.params.frames,
            "fps": j.params.fps,
            "scene_seed": j.params.scene_seed,
        }
        for j in jobs
    ]
    write_text_atomic(config.out / "videos.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    per_split = {s: sum(c["split"] == s for c in classes) for s in SPLITS}
    return SynthSummary(config.out, per_split, len(jobs), rendered, len(jobs) - rendered, time.perf_counter() - t0)


def load_classes(out: str | os.PathLike) -> list[dict]:
    """Read back the class table of a generated dataset."""
    return json.loads((Path(out) / "classes.json").read_text(encoding="utf-8"))["classes"]


def load_videos(out: str | os.PathLike) -> list[dict]:
    """Read back the per-video metadata of a generated dataset (fails if generation did not finish)."""
    path = Path(out) / "videos.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: generation into {out} did not finish; run `fsar-data synth` again")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

