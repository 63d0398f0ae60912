"""Decode benchmark: the shard stage against raw decoders doing the same sampling, in one run.

    python -m tools.bench.decode [--out results/bench-decode] [--scale 1.0] [--repeats 3]

Builds (once, cached) a corpus like the benchmarks' videos, then measures videos/s on
one core (the process is pinned to it): our shard stage (decode, resize, JPEG, tar) and
raw decoders returning the same 8 uniformly sampled frames resized to a 256-pixel short
side: PyAV decoding every frame, PyAV seeking per frame, torchcodec, decord, OpenCV and
DALI's CPU decoder (each skipped, with the reason, when not installed or unable to read
the corpus). It also times the stage's decoding and resizing alone, and the same plus the
JPEG encoding: the first shows what the stage's own JPEG and tar work costs, the second
the most any stage writing these JPEGs could reach with this decoder. Each method's figure
is its best of `--repeats` interleaved passes; a pass goes over the corpus as often as it
takes to last a second. Then the stage's scaling from 1 to 2 workers, also the best of
`--repeats` interleaved runs. Ratios are against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fsar.pipeline.sampling import segment_middles
from fsar.pipeline.video.decode import resize_frames, scaled_size
from fsar.pipeline.synth import CATALOGUE, VideoParams, render_video
from fsar.pipeline.video.encode import CODECS, write_video
from fsar.pipeline.video.probe import probe

SHORT_SIDE = 256
T = 8
JPEG_QUALITY = 90  # the shard stage's default (`--jpeg-quality`)

# name: (codec, width, height, frames, fps, gop, clips, grain, bframes). Grain (noise std in
# grey levels) gives the encoders detail to spend bits on, as in real video.
# UCF101's own AVIs vary: of the four beside the checkout, two have one keyframe and B-frames
# (XviD's usual), one two keyframes, one a keyframe every 12 frames (FFmpeg's default), so
# both ends are measured. Their bitrates are 208 to 716 kbps, 412 on average; the MPEG-4
# encoder's default rate control gave the synthetic clips 55 to 67 kbps (median), so a
# bitrate like theirs is set (ENCODER_OPTIONS).
CORPORA = {
    "ssv2-like VP9 240p": ("vp9", 424, 240, 42, 12, None, 120, 0.0, None),
    "kinetics-like H.264 10 s, 1 keyframe": ("h264", 456, 256, 250, 25, 1000, 10, 2.0, None),
    "kinetics-like H.264 10 s, keyframe/30": ("h264", 456, 256, 250, 25, 30, 10, 2.0, None),
    "ucf-like MPEG-4 AVI 320x240": ("mpeg4", 320, 240, 175, 25, None, 30, 10.0, None),
    "ucf-like MPEG-4 AVI 320x240, 1 keyframe, B-frames": ("mpeg4", 320, 240, 175, 25, 1000, 30, 10.0, 2),
    "ssv2-like VP9 240p, keyframe/30": ("vp9", 424, 240, 42, 12, 30, 120, 0.0, None),
}
ENCODER_OPTIONS = {"mpeg4": {"b": "400k"}}
REAL_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-clips"


def build_corpus(root: Path, scale: float) -> dict[str, list[Path]]:
    """Render and encode the corpora under `root` (reused when already there)."""
    out = {}
    for i, (name, spec) in enumerate(CORPORA.items()):
        codec, w, h, n, fps, gop, clips, grain, bframes = spec
        d = root / f"corpus{i}"
        d.mkdir(parents=True, exist_ok=True)
        stamp = root / f"corpus{i}.spec.json"  # a corpus cached under another spec is rebuilt, not reused
        options = ENCODER_OPTIONS.get(codec)
        spec_text = json.dumps({"name": name, "spec": spec, **({"options": options} if options else {})})
        if not stamp.exists() or stamp.read_text() != spec_text:
            for old in d.iterdir():
                old.unlink()
            stamp.write_text(spec_text)
        paths = []
        for k in range(max(2, int(clips * scale))):
            p = d / f"{i}-{k:03d}{CODECS[codec].ext}"
            if not p.exists():
                spec = CATALOGUE[(7 * k + i) % len(CATALOGUE)]
                frames = render_video(spec, VideoParams(w, h, n, fps, 1000 * i + k))
                if grain:
                    noise = np.random.default_rng(k).normal(0.0, grain, size=frames.shape)
                    frames = np.clip(frames + noise, 0, 255).astype(np.uint8)
                write_video(p, frames, fps, codec, gop=gop, reproducible=False, bframes=bframes, options=options)
            paths.append(p)
        out[name] = paths
    if REAL_CLIPS.is_dir():  # the real clips beside the checkout: UCF101/HMDB51 MPEG-4, Kinetics H.264
        out["real clips (UCF101, HMDB51, Kinetics)"] = sorted(p for p in REAL_CLIPS.rglob("*") if p.suffix in (".mp4", ".avi"))
    return out


def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """The raw decoders' resize: OpenCV's (the fastest here) when installed."""
    size = scaled_size(frame.shape[1], frame.shape[0], short_side)
    if size is None:
        return frame
    try:
        import cv2

        cv2.setNumThreads(1)
        return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    except ImportError:
        return resize_frames(frame[None], size)[0]


# -- raw decoders: path, indices -> list of resized RGB frames ---------------------------------
def pyav_every_frame(path: Path, idx: list[int]) -> list[np.ndarray]:
    import av

    want, out = set(idx), {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        for k, f in enumerate(c.decode(s)):
            if k in want:
                out[k] = resize_short_side(f.to_ndarray(format="rgb24"), SHORT_SIDE)
            if k >= idx[-1]:
                break
    return [out[i] for i in idx]


def pyav_seek(path: Path, idx: list[int]) -> list[np.ndarray]:
    """The usual per-frame recipe: seek to the frame's time, decode forward to it."""
    import av

    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        rate, tb = float(s.average_rate), float(s.time_base)
        start = s.start_time or 0
        for i in idx:
            target = start + int(round(i / rate / tb))
            c.seek(target, stream=s, backward=True)
            for f in c.decode(s):
                if f.pts is not None and f.pts >= target:
                    out.append(resize_short_side(f.to_ndarray(format="rgb24"), SHORT_SIDE))
                    break
    return out


def torchcodec_frames(path: Path, idx: list[int]) -> list[np.ndarray]:
    from torchcodec.decoders import VideoDecoder

    d = VideoDecoder(str(path), num_ffmpeg_threads=1, seek_mode="approximate")
    batch = d.get_frames_at(idx).data.permute(0, 2, 3, 1).numpy()
    return [resize_short_side(f, SHORT_SIDE) for f in batch]


def decord_frames(path: Path, idx: list[int]) -> list[np.ndarray]:
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    return [resize_short_side(f, SHORT_SIDE) for f in vr.get_batch(idx).asnumpy()]


def opencv_sequential(path: Path, idx: list[int]) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    want, out, k = set(idx), {}, 0
    while k <= idx[-1]:
        if not cap.grab():
            break
        if k in want:
            ok, bgr = cap.retrieve()
            out[k] = resize_short_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SHORT_SIDE)
        k += 1
    cap.release()
    return [out[i] for i in idx]


_DECODER = None


def fsar_decoder(path: Path, idx: list[int]) -> list:
    """The stage's decoding and resizing alone: our PyAV decoder giving the resized frames as
    the stage takes them (YUV planes where the matrix allows, else RGB), with no JPEG or tar.
    It separates the work every reader does from the encoding only the stage does."""
    global _DECODER
    if _DECODER is None:
        from fsar.pipeline.video.decode import PyAVDecoder

        _DECODER = PyAVDecoder()
        _DECODER.setup()
    _, _, frames = _DECODER.read(path, lambda n: idx, lambda w, h: scaled_size(w, h, SHORT_SIDE), planar=True)
    return list(frames)


DECODER_ALONE = "fsar decode+resize (no JPEG, tar)"


def fsar_decoder_jpeg(path: Path, idx: list[int]) -> list[bytes]:
    """The stage's decoding, resizing and JPEG encoding, at the stage's quality, with no tar,
    metadata or bookkeeping: the most videos/s any stage writing these JPEGs can reach with
    this decoder, so a stage ratio above this one's cannot be had by trimming overheads."""
    from fsar.pipeline.shard.worker import encode_jpeg

    return [encode_jpeg(f, JPEG_QUALITY) for f in fsar_decoder(path, idx)]


DECODER_JPEG = "fsar decode+resize+JPEG (no tar)"

_DALI_CPU = None


def dali_cpu(path: Path, idx: list[int]) -> list[np.ndarray]:
    """DALI's CPU video decoder (the PyPI wheel's reads VP8 and VP9 only), fed the file's bytes."""
    global _DALI_CPU
    if path.suffix not in (".webm", ".mkv"):
        raise ValueError("reads VP8 and VP9 (WebM) only")
    if _DALI_CPU is None:
        from fsar.pipeline.video.decode import DaliDecoder

        _DALI_CPU = DaliDecoder("cpu")
        _DALI_CPU.setup()
    return [resize_short_side(f, SHORT_SIDE) for f in _DALI_CPU.frames_at(np.fromfile(path, dtype=np.uint8), idx, path)]


RAW: dict[str, Callable] = {
    "PyAV every frame": pyav_every_frame,
    "PyAV seeking": pyav_seek,
    "torchcodec get_frames_at": torchcodec_frames,
    "decord get_batch": decord_frames,
    "OpenCV sequential": opencv_sequential,
    "DALI CPU (VP8/VP9 only)": dali_cpu,
}


# A pass goes over its corpus as many whole times as it takes to last this long: one pass
# over 30 short MPEG-4 clips takes 0.15 s, where one slow moment of the machine decides.
MIN_PASS_SECONDS = 1.0


def time_raw(fn: Callable, paths: list[Path], indices: dict[Path, list[int]], min_seconds: float = MIN_PASS_SECONDS) -> float | str:
    """videos/s of `fn` over `paths` (round after round, for at least `min_seconds`), or the reason it could not run."""
    try:
        fn(paths[0], indices[paths[0]])  # warm-up: imports, codec init
    except Exception as e:  # missing package or unsupported file
        return f"n/a ({type(e).__name__}: {str(e).splitlines()[0][:60]})"
    t, videos = time.perf_counter(), 0
    while videos == 0 or time.perf_counter() - t < min_seconds:
        for p in paths:
            try:
                frames = fn(p, indices[p])
            except Exception as e:
                return f"failed on {p.name} ({type(e).__name__})"
            if len(frames) != len(indices[p]):
                return f"wrong frame count on {p.name}: {len(frames)} of {len(indices[p])}"
        videos += len(paths)
    return videos / (time.perf_counter() - t)


def time_stage_pass(paths: list[Path], tmp: Path, min_seconds: float = MIN_PASS_SECONDS) -> float:
    """videos/s of the one-worker shard stage (no Ray) over `paths`, run after run (each into a fresh
    folder, its set-up not timed) until the timed work lasts at least `min_seconds`."""
    videos, seconds, k = 0, 0.0, 0
    while videos == 0 or seconds < min_seconds:
        r = time_stage(paths, tmp / f"run{k}", workers=1)
        videos += r["videos_processed"]
        seconds += r["videos_processed"] / r["videos_per_second"]
        k += 1
    return videos / seconds


def _best(old, new):
    """The higher of two videos/s figures; a failure (a string saying why) stands."""
    if old is None or isinstance(new, str) and not isinstance(old, str):
        return new
    return old if isinstance(old, str) else max(old, new)


def time_stage(paths: list[Path], out: Path, workers: int) -> dict:
    from fsar.pipeline.shard.config import ShardConfig
    from fsar.pipeline.shard.run import run_shard_stage

    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    lists = out / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "test.txt").write_text("".join(f"bench/{p.stem}\n" for p in paths))
    config = ShardConfig(
        dataset="folder", root=root, splits_dir=lists, out=out / "shards", splits=("test",),
        workers=workers, shard_size=max(1, len(paths) // (4 * workers)), decoder="pyav", short_side=SHORT_SIDE,
        jpeg_quality=JPEG_QUALITY,
    )
    summary = run_shard_stage(config)
    assert summary["failed"] == 0, summary["failures_by_reason"]
    return summary["this_run"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench-decode"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of clips per corpus")
    ap.add_argument("--repeats", type=int, default=3, help="passes over each corpus; each method's best pass counts")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"building corpus in {args.out / 'corpus'} ...", flush=True)
    corpora = build_corpus(args.out / "corpus", args.scale)
    cores = os.sched_getaffinity(0)
    # Per core means one core: any thread a decoder or scaler starts shares it.
    os.sched_setaffinity(0, {min(cores)})
    results: dict = {"machine": f"{os.cpu_count()} cores", "pinned_to_core": min(cores), "repeats": args.repeats, "corpora": {}}
    for name, paths in corpora.items():
        indices = {p: segment_middles(probe(p).num_frames, T) for p in paths}
        row: dict = {"clips": len(paths)}
        for _ in range(args.repeats):  # each its best pass, the passes interleaved: this machine's speed drifts
            for raw, fn in [*RAW.items(), (DECODER_ALONE, fsar_decoder), (DECODER_JPEG, fsar_decoder_jpeg)]:
                row[raw] = _best(row.get(raw), time_raw(fn, paths, indices))
            with tempfile.TemporaryDirectory() as tmp:
                stage = "fsar shard stage (1 worker)"
                row[stage] = _best(row.get(stage), time_stage_pass(paths, Path(tmp)))
        numeric = {k: v for k, v in row.items() if k in RAW and isinstance(v, float)}
        best = max(numeric, key=numeric.get)
        row["fastest raw"] = best
        row["stage / fastest raw"] = row["fsar shard stage (1 worker)"] / numeric[best]
        for own, key in ((DECODER_ALONE, "decode+resize / fastest raw"), (DECODER_JPEG, "decode+resize+JPEG / fastest raw")):
            if isinstance(row[own], float):
                row[key] = row[own] / numeric[best]
        results["corpora"][name] = row
        print(f"\n{name} ({len(paths)} clips, {T} frames each, resize to {SHORT_SIDE}):", flush=True)
        for k, v in row.items():
            if isinstance(v, float):
                print(f"  {k:34s} {v:8.2f}x" if k.endswith("/ fastest raw") else f"  {k:34s} {v:8.1f} videos/s")
            else:
                print(f"  {k:34s} {v}")
    os.sched_setaffinity(0, cores)  # the scaling run needs them all (Ray's workers inherit this)
    paths = corpora["ssv2-like VP9 240p"]
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for _ in range(args.repeats):  # interleaved, each its best run, as above
            with tempfile.TemporaryDirectory() as tmp:
                for workers, done in runs.items():
                    done.append(time_stage(paths, Path(tmp) / str(workers), workers=workers))
    finally:
        ray.shutdown()
    one, two = (max(runs[w], key=lambda r: r["videos_per_second"]) for w in (1, 2))
    ratio = two["videos_per_second"] / one["videos_per_second"]
    results["scaling"] = {"corpus": "ssv2-like VP9 240p", "1 worker": one, "2 workers (Ray)": two, "ratio": ratio}
    print(
        f"\nscaling on {len(paths)} ssv2-like clips: 1 worker {one['videos_per_second']:.1f} videos/s, "
        f"2 Ray workers {two['videos_per_second']:.1f} videos/s once started ({two['startup_seconds']:.1f} s to start them): "
        f"{ratio:.2f}x; end to end {one['seconds']:.1f} s vs {two['seconds']:.1f} s"
    )
    (args.out / "bench-decode.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults written to {args.out / 'bench-decode.json'}")
    return results


if __name__ == "__main__":
    main()
