"""How work is split among the processes of a data-parallel run, and how their results meet.

One process (no `torch.distributed` group) is a group of one: every function here then does
its work alone, so the trainer and the evaluation run the same code with one worker or N
(`fsar.train.workers` starts the N under Ray Train).

Two ways of splitting:
- a step's training episodes: worker r takes a contiguous block (`block`), so the episodes of
  a step are defined by (seed, step, episode index) alone, whoever trains them;
- evaluation: fixed-size chunks of videos or episodes, dealt round-robin (`my_chunks`), so each
  chunk is computed exactly as one process computes it and the gathered result is identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Group:
    """This process's place among the workers of a run."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0


def current() -> Group:
    """The group of the `torch.distributed` process group, if one is set up; else a group of one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def block(n: int, group: Group) -> np.ndarray:
    """Indices of this worker's contiguous share of `n` items (shares differ by at most one)."""
    return np.array_split(np.arange(n), group.world)[group.rank]


def my_chunks(n: int, chunk: int, group: Group) -> list[tuple[int, int]]:
    """(start, stop) of the `chunk`-sized pieces of range(n) this worker computes: piece i goes to worker i % world."""
    return [(s, min(s + chunk, n)) for i, s in enumerate(range(0, n, chunk)) if i % group.world == group.rank]


def gather_chunks(mine: dict[int, Any], group: Group) -> list[Any]:
    """Every worker's pieces {start: value}, gathered on every worker, in order of start."""
    if group.world == 1:
        return [mine[s] for s in sorted(mine)]
    import torch.distributed as dist

    everyone: list = [None] * group.world
    dist.all_gather_object(everyone, mine)
    merged = {s: v for part in everyone for s, v in part.items()}
    return [merged[s] for s in sorted(merged)]


def gather_rows(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Every worker's rows of `x` [n_r, ...], concatenated in rank order (the workers' blocks of
    episodes in order: the rows one process would have). This worker's rows keep their
    gradient; the others' are constants here (their worker computes their gradient), so a
    loss on the result, computed alike by every worker, gets from DDP's average 1 / world of
    its gradient: multiply it by `world`."""
    if group.world == 1:
        return x
    import torch.distributed as dist

    everyone: list = [None] * group.world
    dist.all_gather_object(everyone, x.detach().cpu())
    everyone[group.rank] = x
    return torch.cat([t.to(x.device) for t in everyone])


def weighted_mean(values: dict[str, float], weight: float, group: Group) -> dict[str, float]:
    """The mean over workers of each value, worker r weighing `weight` (the weights sum to 1)."""
    if group.world == 1:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


def barrier(group: Group) -> None:
    """Wait for every worker (after rank 0 wrote what the others read)."""
    if group.world > 1:
        import torch.distributed as dist

        dist.barrier()
