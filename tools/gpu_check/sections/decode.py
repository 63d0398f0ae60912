"""Decode throughput, videos/s per GPU: DALI's NVDEC against PyAV on every core and torchcodec's
CUDA decoder, each returning the 8 segment-middle frames of a video resized to a 256-pixel short
side, on the decode benchmark's corpora (`tools.bench.decode`: its corpus builder and readers)."""

from __future__ import annotations

import math
import multiprocessing
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from tools.gpu_check.config import CheckConfig, cores
from tools.gpu_check.record import Recorder, Skip

_DALI = None


def dali_gpu(path: Path, idx: list[int]) -> list[np.ndarray]:
    """DALI's NVDEC decoder (the shard stage's `--decoder dali`), set up once per process, fed the file's bytes."""
    global _DALI
    from tools.bench.decode import SHORT_SIDE, resize_short_side
    from fsar.pipeline.video.decode import DaliDecoder

    if _DALI is None:
        _DALI = DaliDecoder("gpu")
        _DALI.setup()
    return [resize_short_side(f, SHORT_SIDE) for f in _DALI.frames_at(np.fromfile(path, dtype=np.uint8), idx, path)]


def torchcodec_cuda(path: Path, idx: list[int]) -> list[np.ndarray]:
    """torchcodec's CUDA decoder; the frames come back to the CPU for the same resize as the others."""
    from torchcodec.decoders import VideoDecoder

    from tools.bench.decode import SHORT_SIDE, resize_short_side

    frames = VideoDecoder(str(path), device="cuda", seek_mode="approximate").get_frames_at(idx).data  # (N, 3, H, W) uint8 on the GPU
    return [resize_short_side(f, SHORT_SIDE) for f in frames.permute(0, 2, 3, 1).cpu().numpy()]


def _readers() -> dict:
    from tools.bench.decode import pyav_every_frame

    return {"pyav": pyav_every_frame, "dali": dali_gpu}


def _decode_one(job: tuple[str, Path, list[int]]) -> int:
    """A pool worker's task: frames read from one video by the named reader."""
    method, path, idx = job
    return len(_readers()[method](path, idx))


def time_pool(pool, processes: int, method: str, paths: list[Path], indices: dict, seconds: float) -> float:
    """videos/s of `processes` pool workers reading `paths` with `method`, round after round (each
    round at least two videos per worker, so every worker stays busy) for at least `seconds`,
    after one warm-up round (imports, decoder set-up).

    Raises:
        RuntimeError: a reader returned the wrong number of frames.
    """
    jobs = [(method, p, indices[p]) for p in paths] * math.ceil(2 * processes / len(paths))
    pool.map(_decode_one, jobs, chunksize=1)
    t, videos = time.perf_counter(), 0
    while videos == 0 or time.perf_counter() - t < seconds:
        for (_, p, idx), n in zip(jobs, pool.map(_decode_one, jobs, chunksize=1)):
            if n != len(idx):
                raise RuntimeError(f"{method} gave {n} of {len(idx)} frames of {p.name}")
        videos += len(jobs)
    return videos / (time.perf_counter() - t)


def _rate(value: float | str, unavailable_skips: bool) -> float:
    """A `time_raw` result: videos/s, or the reason it could not run, raised: as a skip where the
    reader could not start (`n/a ...`) and `unavailable_skips`, else as a failure."""
    if isinstance(value, str):
        raise (Skip if unavailable_skips and value.startswith("n/a") else RuntimeError)(value)
    return round(value, 1)


def corpora(cfg: CheckConfig) -> dict[str, list[Path]]:
    """The bench corpora (`build_corpus`, reused when whole), or in the dry run the synthetic videos."""
    from tools.bench.decode import CORPORA, build_corpus

    if cfg.corpus is None:
        from tools.gpu_check.sections.data import shards, videos

        shards(cfg)  # the data section made them
        return {"synthetic videos (data section)": sorted(p for p in videos(cfg).rglob("*") if p.suffix in (".webm", ".mp4", ".avi"))}
    missing = [i for i in range(len(CORPORA)) if not (cfg.corpus / f"corpus{i}.spec.json").exists()]
    if missing:  # rendering them takes many minutes on one core: no GPU time for that
        raise RuntimeError(f"the decode corpus is not in {cfg.corpus} (corpora {missing} missing): build and carry it with python -m tools.gpu_check.wheels pack")
    return build_corpus(cfg.corpus, cfg.corpus_scale)


def run(cfg: CheckConfig, rec: Recorder) -> None:
    from tools.bench.decode import T, time_raw
    from fsar.pipeline.sampling import segment_middles
    from fsar.pipeline.video.decode import DaliDecoder, dali_installed
    from fsar.pipeline.video.probe import probe

    found = corpora(cfg)
    infos = {p: probe(p) for paths in found.values() for p in paths}
    indices = {p: segment_middles(info.num_frames, T) for p, info in infos.items()}
    dali = DaliDecoder("gpu")  # asks nothing of the GPU: which files auto would give it
    n_cpu, n_gpu = cores(), cfg.dali_processes
    rec.set("processes", {"pyav": n_cpu, "dali": n_gpu})
    rec.set("frames_per_video", T)
    ctx = multiprocessing.get_context("fork")
    with ExitStack() as stack:
        # The pools fork first: a process forked after CUDA is initialised (DALI's import may do it) cannot use it.
        cpu_pool = stack.enter_context(ctx.Pool(n_cpu))
        gpu_pool = None if cfg.dry_run else stack.enter_context(ctx.Pool(n_gpu))
        gpu_why = "dry run: no GPU" if cfg.dry_run else ("" if dali_installed() else "nvidia.dali does not import")
        for corpus, paths in found.items():
            on_dali = [p for p in paths if dali.supports(infos[p])]
            label = dict(corpus=corpus, clips=len(paths))
            with rec.part(f"{corpus} | pyav, {n_cpu} processes", method=f"pyav, {n_cpu} processes", **label) as part:
                part["videos_per_s"] = round(time_pool(cpu_pool, n_cpu, "pyav", paths, indices, cfg.seconds), 1)
            for method, processes in ((f"dali, {n_gpu} processes", n_gpu), ("dali, 1 process", 1)):
                with rec.part(f"{corpus} | {method}", method=method, **label) as part:
                    if gpu_why:
                        raise (Skip if cfg.dry_run else RuntimeError)(gpu_why)
                    if not on_dali:
                        raise Skip("auto gives none of these clips to DALI (codec, hidden frames or packed B-frames)")
                    part["clips_on_dali"] = len(on_dali)
                    if processes > 1:
                        part["videos_per_s"] = round(time_pool(gpu_pool, processes, "dali", on_dali, indices, cfg.seconds), 1)
                    else:
                        part["videos_per_s"] = _rate(time_raw(dali_gpu, on_dali, indices, cfg.seconds), False)
            with rec.part(f"{corpus} | torchcodec cuda", method="torchcodec cuda", **label) as part:
                if cfg.dry_run:
                    raise Skip("dry run: no GPU")
                try:
                    import torchcodec  # noqa: F401
                except Exception as e:  # noqa: BLE001 - not installed, or no FFmpeg libraries for it
                    raise Skip(f"torchcodec does not import ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
                part["videos_per_s"] = _rate(time_raw(torchcodec_cuda, paths, indices, cfg.seconds), True)
