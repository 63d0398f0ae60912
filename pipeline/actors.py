"""Ray actor helpers shared by the stages: start them, run work on them through crashes, and
size them to the cluster's GPUs."""

from __future__ import annotations

import math
import re
import socket
import time
import warnings
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

# "host:port" (or a Ray Client "ray://host:port"); "auto" and the like are left to Ray.
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)$")


# A Ray Client proxy starts one server process per session; that start at times dies at once
# (SIGSEGV in gRPC's fork handlers, in a proxy with gRPC threads running, unless the head runs
# with GRPC_ENABLE_FORK_SUPPORT=0) and the session fails with this message. A new session
# usually gets a server: try that many times in all.
_CLIENT_SERVER_FAILED = "Starting Ray client server failed"
CLIENT_SESSION_ATTEMPTS = 3


# A head's ports open a moment after `ray start --head` returns (its Ray Client server's up
# to 0.4 s later, measured here): a refused connection is tried again for this long.
REFUSED_GRACE_SECONDS = 2.0


def _first_answer(host: str, port: int, timeout: float) -> OSError | None:
    """Connect to host:port, once more every 0.1 s while it refuses for REFUSED_GRACE_SECONDS:
    None once something answers, else why not."""
    deadline = time.monotonic() + REFUSED_GRACE_SECONDS
    while True:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return None
        except ConnectionRefusedError as e:
            if time.monotonic() >= deadline:
                return e
            time.sleep(0.1)
        except OSError as e:  # a timeout, an unknown host: no waiting would help
            return e


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None, connect_timeout: float = 10.0) -> None:
    """Join the Ray cluster at `address`, or with None start a local one of `num_cpus` CPUs.

    A local cluster is started even where RAY_ADDRESS is set: the address is the caller's to
    pass (the CLIs read RAY_ADDRESS as the default of `--address`, as `ray job submit` sets it).

    `address` may be "host:port" of the head (the driver runs here, a node of the cluster),
    a Ray Client "ray://host:port" (the driver runs here, apart from the cluster, through the
    head's `--ray-client-server-port`), or what `ray.init` takes ("auto"). A Ray Client session
    whose server could not start is tried again, with a warning, up to CLIENT_SESSION_ATTEMPTS
    times in all.

    Raises:
        RuntimeError: nothing answers at a "host:port" address within `connect_timeout`
            seconds, or it refuses for REFUSED_GRACE_SECONDS (Ray itself would retry for
            minutes without a word), or Ray finds no cluster at the address.
    """
    import ray

    quiet = dict(logging_level="ERROR", log_to_driver=False)
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **quiet)
        return
    m = _HOST_PORT.match(address.strip())
    if m:
        e = _first_answer(m["host"].strip("[]"), int(m["port"]), connect_timeout)
        if e:
            raise RuntimeError(
                f"no Ray cluster answers at {address!r} ({e.strerror or e}): start one there (`ray start --head`), "
                "or correct --address (or RAY_ADDRESS, its default)"
            ) from None
    for attempt in range(1, CLIENT_SESSION_ATTEMPTS + 1):
        try:
            ray.init(address=address, **quiet)
            return
        except ConnectionError as e:  # e.g. "auto" with no cluster running on this machine
            if _CLIENT_SERVER_FAILED in str(e) and attempt < CLIENT_SESSION_ATTEMPTS:
                warnings.warn(
                    f"the Ray Client server at {address} could not start this session's server "
                    f"(attempt {attempt} of {CLIENT_SESSION_ATTEMPTS}; its ray_client_server_*.err logs on the head say why); "
                    "trying again",
                    stacklevel=2,
                )
                continue
            raise RuntimeError(f"no Ray cluster at {address!r}: {e}") from None


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the length of a stage, through `init_ray`, and left at the end: shut down
    when started here, disconnected from when joined. A session already open (a notebook's,
    a test's) is used as it is and left open."""
    import ray

    if ray.is_initialized():
        yield
        return
    init_ray(address, num_cpus=num_cpus)
    try:
        yield
    finally:
        ray.shutdown()


def set_up(actors: list) -> None:
    """Run every actor's `setup()` and wait for all.

    Raises:
        the worker's own exception when one cannot set up (no GPU, no DALI, a missing
        checkpoint), not Ray's wrapper with its remote traceback.
        RuntimeError: an actor's process could not start or died first; one that cannot
            import its class (fsar missing on a node) says so.
    """
    import ray

    try:
        ray.get([a.setup.remote() for a in actors])
    except ray.exceptions.RayTaskError as e:
        raise plain_error(e) from None
    except ray.exceptions.RayActorError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # Ray colours the remote frames
        errors = re.findall(r"^(\w+(?:Error|Exception): .+)$", text, re.M)  # the remote exceptions' last lines
        imports = [m for m in errors if m.startswith(("ModuleNotFoundError", "ImportError"))]
        if imports:
            raise RuntimeError(
                f"a Ray worker could not import its stage ({imports[-1]}): every node of the cluster needs fsar "
                "installed, in the same Python environment as Ray's workers there"
            ) from None
        raise RuntimeError(f"a Ray worker died before it was set up: {(errors or text.splitlines() or [''])[-1]} (see Ray's logs)") from None


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


def node_cpus() -> list[int]:
    """The CPUs of each live node of the Ray cluster this process is connected to."""
    import ray

    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]


def cpus_per_actor(actors: int, nodes: list[int]) -> int:
    """The CPUs (threads) each of `actors` CPU actors asks for: the most that still lets all of
    them be placed at once on nodes of `nodes` CPUs (an actor lives on one node), at least 1."""
    for each in range(max(1, min(max(nodes, default=1), sum(nodes) // max(1, actors))), 1, -1):
        if sum(c // each for c in nodes) >= actors:
            return each
    return 1


def warn_unplaced(actors: int, each: int, nodes: list[int]) -> None:
    """Warn when the cluster cannot hold `actors` actors of `each` CPUs at once: Ray starts
    the rest only when nodes join (an autoscaler's), and the stage waits for them until then."""
    room = sum(c // each for c in nodes)
    if room < actors:
        warnings.warn(
            f"{actors} workers want {each} CPU{'s' if each > 1 else ''} each and the Ray cluster has room for {room} now "
            f"({sum(nodes)} CPUs on {len(nodes)} node{'s' if len(nodes) != 1 else ''}): the stage waits until nodes join; "
            "ask for fewer --workers",
            stacklevel=3,
        )


class WorkerDied(Exception):
    """An actor's process died (a crash in native code, the OOM killer) while on an item."""


def run_on_actors(
    actors: list,
    items: Iterable,
    call: Callable,
    new_actor: Callable,
    on_death: Callable[[object], bool],
    overdue: Callable[[object], bool] | None = None,
    check_every: float = 1.0,
) -> Iterator[tuple[object, object, Exception | None]]:
    """Run every item on the actors, one at a time per actor, as they come free.

    Args:
        actors: set-up actors.
        items: the work.
        call: `call(actor, item)` submits the item (returns the ObjectRef of an actor method).
        new_actor: makes an actor to replace one whose process died; it is set up here.
        on_death: called with the item whose actor died: True runs it again (on the next free
            actor), False yields it with a `WorkerDied` error. It may raise to stop the run.
        overdue: called every `check_every` seconds with each running item: True kills its
            actor (stuck, say, in a decoder's native code, where nothing else can stop it),
            and the item then goes to `on_death` as on any death.

    Yields:
        (item, result, None), or (item, None, the exception its task raised in the worker,
        Ray's wrapper removed), in the order the items finish.
    """
    import ray

    queue = deque(items)
    idle = list(actors)
    running: dict = {}  # ObjectRef -> (actor, item)
    killed: set = set()  # refs whose actor was killed as overdue: their death is on its way

    def replacement():
        fresh = new_actor()
        set_up([fresh])
        return fresh

    next_check = time.monotonic() + check_every
    while queue or running:
        while idle and queue:
            actor, item = idle.pop(), queue.popleft()
            running[call(actor, item)] = (actor, item)
        timeout = None if overdue is None else max(0.0, next_check - time.monotonic())
        ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
        if overdue is not None and time.monotonic() >= next_check:  # also when results keep coming
            for r, (a, it) in running.items():
                if r not in killed and overdue(it):
                    killed.add(r)
                    ray.kill(a)
            next_check = time.monotonic() + check_every
        if not ready:
            continue
        ref = ready[0]
        actor, item = running.pop(ref)
        stopped = ref in killed  # if its item ended just before the kill, the actor is dying all the same
        killed.discard(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            ray.kill(actor)  # already dead, or (if only unreachable) stopped so it cannot finish the item too
            idle.append(replacement())
            if on_death(item):
                queue.appendleft(item)
            else:
                yield item, None, WorkerDied(f"a worker's process died on it ({type(e).__name__}: a crash in native code, or killed for memory); see Ray's logs")
            continue
        except ray.exceptions.RayTaskError as e:
            idle.append(replacement() if stopped else actor)
            yield item, None, plain_error(e)
            continue
        idle.append(replacement() if stopped else actor)
        yield item, result, None
