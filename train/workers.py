"""Data-parallel training and evaluation on Ray Train (`fsar-train --workers N`, `fsar-eval --workers N`).

Ray Train's `TorchTrainer` starts N worker processes (here, or on the nodes of the cluster at
`address`) with a `torch.distributed` group: gloo on CPU, NCCL on GPU. Each runs the same
`train_loop` one process runs, on its share of every step's episodes, with DDP averaging the
gradients (`fsar.train.parallel`). Rank 0 writes RUN_DIR; a worker that dies makes Ray Train
restart the group (`FailureConfig`), which resumes from RUN_DIR/checkpoints/last. Every worker
reads and writes RUN_DIR and the data at the same paths: on a cluster they must be on a
file system every node shares.

The driver (this process) shows progress from rank 0's messages on a Ray queue.
"""

from __future__ import annotations

import dataclasses
import queue as queue_module
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fsar.train.config import TrainConfig
from fsar.train.episodes import EpisodeConfig


@dataclass(frozen=True)
class WorkersConfig:
    """Where and how many workers run a training or an evaluation."""

    workers: int = 1
    """Worker processes (one per GPU on a GPU cluster)."""
    address: str | None = None
    """A Ray cluster to join (host:port of its head, ray://host:port, or auto); None: start one here."""
    gpus_per_worker: float | None = None
    """GPUs per worker; None: 1 where the cluster has GPUs, else 0 (CPU, gloo)."""
    cpus_per_worker: int | None = None
    """CPU cores per worker (its torch threads); None: 1 with GPUs, else the cluster's cores / workers."""
    max_failures: int = 3
    """Restarts of the worker group after a worker dies, each from the last checkpoint."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker is not None and self.cpus_per_worker < 1:
            raise ValueError(f"--cpus-per-worker must be >= 1, got {self.cpus_per_worker}")
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")

    @property
    def on_ray(self) -> bool:
        """Whether this runs on Ray Train (several workers, or a cluster); else in this process."""
        return self.workers > 1 or self.address is not None


def train_on_workers(config: TrainConfig, run_dir: str | Path, workers: WorkersConfig, resume: bool = False,
                     on_step: Callable[[int, dict], None] | None = None) -> dict:
    """`fsar.train.trainer.train` on Ray Train workers: the same files in RUN_DIR, the same
    weights (up to the order of float sums), whatever the number of workers.

    RUN_DIR is prepared here (config, data identity, the model built once, so that a wrong
    setting stops here with its own message), then the workers train.
    """
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.lock import hold
    from fsar.train.model import build_model
    from fsar.train.rundir import clear_unstarted, prepare_run

    run_dir = Path(run_dir).resolve()
    check_writable(run_dir, "--out")
    with hold(run_dir, "fsar-train"):
        found = {p.name for p in run_dir.iterdir()}
        try:
            config = prepare_run(config, run_dir, resume)
            if config.episodes_per_step < workers.workers:
                raise ValueError(f"--workers {workers.workers} needs at least as many episodes per step; this config has episodes_per_step "
                                 f"{config.episodes_per_step} (--set episodes_per_step=N)")
            build_model(config, run_dir)  # checks the settings and data; finetune: computes the class text once, for every worker
            payload = {"config": config.to_json(), "run_dir": str(run_dir)}
            messages = _fit(_train_worker, payload, workers, run_dir, f"fsar-train-{run_dir.name}", config.device)
            summary = None
            for kind, *rest in messages:
                if kind == "step" and on_step is not None:
                    on_step(*rest)
                elif kind == "summary":
                    summary = rest[0]
            if summary is None:
                raise RuntimeError(f"the workers finished without a summary: see their logs in {run_dir / 'workers'}")
            return summary
        except BaseException:
            clear_unstarted(run_dir, found)
            raise


def evaluate_on_workers(run_dir: str | Path, workers: WorkersConfig, on_progress: Callable[[str, int, int], None] | None = None, **kwargs) -> tuple[dict, np.ndarray]:
    """`fsar.train.evaluate_run.evaluate_run(run_dir, **kwargs)` with the videos to encode and the
    episodes to score shared among workers: exactly the result of one process."""
    from fsar.train.evaluate_run import KEEP, checked_run

    run_dir = Path(run_dir).resolve()
    checked_run(run_dir, kwargs.get("checkpoint", "best"), kwargs.get("protocol", "few-shot"), kwargs.get("fusion_beta", KEEP),
                kwargs.get("cache"), kwargs.get("shards"))  # a wrong setting stops here, not in every worker
    kwargs = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items() if not (k == "fusion_beta" and v is KEEP)}  # KEEP: the workers' own default
    if "config" in kwargs:
        kwargs["config"] = dataclasses.asdict(kwargs["config"])
    payload = {"run_dir": str(run_dir), "kwargs": kwargs, "progress": on_progress is not None}
    result = None
    for kind, *rest in _fit(_evaluate_worker, payload, workers, run_dir, f"fsar-eval-{run_dir.name}", what="evaluation"):
        if kind == "progress" and on_progress is not None:
            on_progress(*rest)
        elif kind == "result":
            result = rest
    if result is None:
        raise RuntimeError("the workers finished without a result (see Ray's logs)")
    return result[0], result[1]


def _fit(loop, payload: dict, workers: WorkersConfig, run_dir: Path, name: str, device: str = "auto", what: str = "training"):
    """Run `loop(payload)` on `workers` under Ray Train; yield rank 0's messages as they come.
    `device` (the run's setting): auto takes GPUs where the cluster has them, cpu none, cuda needs them."""
    from fsar.pipeline.actors import ray_session

    with ray_session(workers.address):
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Queue

        total = ray.cluster_resources()
        gpus = workers.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if total.get("GPU", 0) >= 1 and device != "cpu" else 0.0
        if device == "cuda" and not gpus:
            raise RuntimeError("device cuda requested but the Ray cluster has no GPU (or --gpus-per-worker is 0): use --set device=cpu or join a cluster with GPUs")
        cpus = workers.cpus_per_worker or (1 if gpus else max(1, int(total.get("CPU", 1)) // workers.workers))
        if gpus and total.get("GPU", 0) < gpus * workers.workers:
            raise RuntimeError(f"{workers.workers} workers of {gpus:g} GPU need {gpus * workers.workers:g} GPUs; the Ray cluster has {total.get('GPU', 0):g}")
        if total.get("CPU", 0) < cpus * workers.workers:  # Ray Train would wait for them without a word
            need = f"{workers.workers} workers of {cpus} CPU core(s) need {cpus * workers.workers}; "
            if workers.address is None:
                raise RuntimeError(need + f"this machine has {int(total.get('CPU', 0))}: use fewer --workers (or --cpus-per-worker), or join a cluster with --address")
            warnings.warn(need + f"the Ray cluster at {workers.address} has {int(total.get('CPU', 0))} now: training starts once nodes join")
        messages = Queue()
        trainer = TorchTrainer(
            loop,
            train_loop_config={**payload, "queue": messages, "threads": cpus, "gpu": bool(gpus)},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers.workers, use_gpu=bool(gpus), resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
            run_config=RunConfig(name=f"{name}-{uuid.uuid4().hex[:8]}", storage_path=str(run_dir / "workers" / "ray"),
                                 failure_config=FailureConfig(max_failures=workers.max_failures)),
        )
        outcome: dict = {}

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as e:  # reported by the driver's thread below
                outcome["error"] = e

        thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
        thread.start()
        while True:
            try:
                yield messages.get(timeout=0.5)
            except queue_module.Empty:
                if not thread.is_alive():
                    break
        thread.join()
        while not messages.empty():
            yield messages.get()
        if "error" in outcome:
            raise RuntimeError(_worker_error(outcome["error"], workers.max_failures, run_dir, what)) from None


def _worker_error(e: BaseException, restarts: int, run_dir: Path, what: str) -> str:
    """What failed in a worker, in a line: its own exception, not Ray's wrappers."""
    failures = getattr(e, "worker_failures", None) or {}
    inner = next(iter(failures.values()), None) if isinstance(failures, dict) else None
    cause = inner or getattr(e, "__cause__", None) or e
    cause = getattr(cause, "cause", None) or cause
    text = str(cause).strip().splitlines()
    failed = f"the {what} workers failed after {restarts} restart(s) (--max-failures), the last time with {type(cause).__name__}: {text[-1] if text else ''}"
    if what != "training":
        return failed + " (Ray's logs have each worker's output)"
    return failed + f"; what each worker did is in {run_dir / 'workers'}, and a run keeps its last checkpoint (continue it with --resume)"


def _setup_worker(payload: dict) -> torch.device:
    import ray.train.torch

    torch.set_num_threads(payload["threads"])
    if not payload["gpu"]:
        return torch.device("cpu")
    device = ray.train.torch.get_device()
    torch.cuda.set_device(device)  # NCCL's collectives (all_gather_object too) use the current device
    return device


def _train_worker(payload: dict) -> None:
    """One Ray Train worker of a training run: resumes from RUN_DIR's last checkpoint where
    there is one (a run restarted after a worker died, or continued with --resume)."""
    from fsar.train import parallel
    from fsar.train.trainer import train_loop

    device = _setup_worker(payload)
    messages = payload["queue"]
    config = TrainConfig.from_json(payload["config"])
    t0 = time.perf_counter()
    summary = train_loop(config, Path(payload["run_dir"]), resume=True, device=device, worker_log=True,
                         on_step=lambda done, metrics: messages.put(("step", done, metrics)))
    if parallel.current().main:
        messages.put(("summary", {**summary, "worker_seconds": round(time.perf_counter() - t0, 3)}))


def _evaluate_worker(payload: dict) -> None:
    """One Ray Train worker of an evaluation."""
    from fsar.train import parallel
    from fsar.train.evaluate_run import evaluate_run

    device = _setup_worker(payload)
    messages = payload["queue"]
    kwargs = dict(payload["kwargs"])
    if "config" in kwargs:
        kwargs["config"] = EpisodeConfig(**kwargs["config"])
    main = parallel.current().main
    progress = (lambda phase, done, total: messages.put(("progress", phase, done, total))) if payload["progress"] and main else None
    result, correct = evaluate_run(payload["run_dir"], device=str(device), on_progress=progress, **kwargs)
    if main:
        messages.put(("result", result, correct))
