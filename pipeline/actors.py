"""Ray actor helpers shared by the stages: start them, and size them to the cluster's GPUs."""

from __future__ import annotations

import math
import warnings


def set_up(actors: list) -> None:
    """Run every actor's `setup()` and wait for all.

    Raises:
        the worker's own exception when one cannot set up (no GPU, no DALI, a missing
        checkpoint), not Ray's wrapper with its remote traceback.
    """
    import ray

    try:
        ray.get([a.setup.remote() for a in actors])
    except ray.exceptions.RayTaskError as e:
        raise plain_error(e) from None


def plain_error(e: Exception) -> Exception:
    """The exception a Ray task raised in its worker, without Ray's wrapper and remote traceback."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(str(e).splitlines()[-1])


def gpu_share(actors: int, cluster_gpus: float) -> float:
    """The GPUs each of `actors` actors asks for when they share the cluster's: at most one each,
    rounded down to Ray's 1e-4 resource step so that the shares never add up to more than the
    cluster has (an actor that cannot be placed waits for ever)."""
    if cluster_gpus <= 0:
        return 0
    return min(1.0, math.floor(cluster_gpus / actors * 1e4) / 1e4)


def whole_gpu_actors(wanted: int, cluster_gpus: float) -> int:
    """How many actors of one GPU each to start: `wanted`, or as many as the cluster has GPUs
    (with a warning), since the rest could never be placed and setting them up would wait for ever.

    Raises:
        RuntimeError: the cluster has no GPU.
    """
    have = int(cluster_gpus)
    if have < 1:
        raise RuntimeError("no GPU in the Ray cluster: use --device cpu, or join a cluster with GPUs (--address)")
    if wanted > have:
        warnings.warn(f"{wanted} workers asked for one GPU each but the Ray cluster has {have}: starting {have}", stacklevel=2)
        return have
    return wanted
