"""Sizing Ray actors to the cluster's GPUs and CPUs."""

from __future__ import annotations

import warnings

import pytest

from fsar.pipeline.actors import cpus_per_actor, gpu_share, warn_unplaced, whole_gpu_actors


@pytest.mark.parametrize("actors,gpus", [(1, 1), (2, 1), (3, 1), (7, 2), (16, 1), (2, 8), (3, 0)])
def test_gpu_shares_fit_the_cluster_and_use_most_of_it(actors, gpus):
    share = gpu_share(actors, gpus)
    assert 0 <= share <= 1
    assert actors * share <= gpus  # more would leave an actor waiting for ever
    assert share == 1 or actors * share > gpus - actors * 1e-4  # nothing lost beyond Ray's 1e-4 step


def test_whole_gpu_actors_are_capped_at_the_clusters_gpus():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert whole_gpu_actors(2, 8) == 2
        assert whole_gpu_actors(4, 4.0) == 4
    with pytest.warns(UserWarning, match="4 workers asked for one GPU each but the Ray cluster has 1: starting 1"):
        assert whole_gpu_actors(4, 1) == 1
    with pytest.raises(RuntimeError, match="no GPU in the Ray cluster: use --device cpu"):
        whole_gpu_actors(2, 0.5)


@pytest.mark.parametrize(
    "actors,nodes",
    [(1, [2]), (2, [2]), (3, [2]), (1, [64]), (4, [64]), (3, [64]), (2, [4, 2]), (3, [4, 2]), (2, [8, 8, 1]), (5, [3, 3]), (7, [3, 3]), (2, [0, 6]), (2, [])],
)
def test_cpus_per_actor_is_the_largest_share_that_places_every_actor(actors, nodes):
    def fits(each):
        return sum(c // each for c in nodes) >= actors

    best = max([e for e in range(1, max(nodes, default=1) + 1) if fits(e)], default=1)  # plain search
    assert cpus_per_actor(actors, nodes) == best


def test_cpus_per_actor_examples_and_the_unplaced_warning():
    assert cpus_per_actor(2, [4, 2]) == 2  # an equal share (3) would place one of the two
    assert cpus_per_actor(1, [8, 8]) == 8  # one actor lives on one node
    assert cpus_per_actor(3, [2]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unplaced(2, 2, [4, 2])
        warn_unplaced(4, 1, [2, 2])
    with pytest.warns(UserWarning, match=r"3 workers want 1 CPU each and the Ray cluster has room for 2 now \(2 CPUs on 1 node\): the stage waits"):
        warn_unplaced(3, 1, [2])


def test_a_ray_client_session_whose_server_did_not_start_is_tried_again(monkeypatch):
    """Ray Client's proxy at times fails a session because the session's server died as it
    started (the proxy's message below, as ray.init raises it): init_ray asks again, with a
    warning, and gives up with the error after CLIENT_SESSION_ATTEMPTS."""
    import socket

    ray = pytest.importorskip("ray")
    from fsar.pipeline.actors import CLIENT_SESSION_ATTEMPTS, init_ray

    failure = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
        "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs.\n"
    )
    calls = []

    def init(address, **kw):
        calls.append(address)
        if len(calls) < failures:
            raise failure

    monkeypatch.setattr(ray, "init", init)
    with socket.socket() as head:  # something answers at the address, as a head's client server does
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"ray://127.0.0.1:{head.getsockname()[1]}"
        failures = CLIENT_SESSION_ATTEMPTS  # fails on every attempt but the last
        with pytest.warns(UserWarning) as record:
            init_ray(address)
        said = [str(w.message) for w in record]
        assert [s.split("(")[1].split(";")[0] for s in said] == ["attempt 1 of 3", "attempt 2 of 3"]
        assert all(s.startswith(f"the Ray Client server at {address} could not start this session's server") and s.endswith("trying again") for s in said)
        assert calls == [address] * CLIENT_SESSION_ATTEMPTS
        calls.clear()
        failures = CLIENT_SESSION_ATTEMPTS + 1  # fails on every attempt
        with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=rf"(?s)^no Ray cluster at '{address}': Initialization failure .*Starting Ray client server failed"):
            init_ray(address)
        assert len(calls) == CLIENT_SESSION_ATTEMPTS
        calls.clear()

        def refused(address, **kw):
            calls.append(address)
            raise ConnectionError("no cluster")

        monkeypatch.setattr(ray, "init", refused)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any other failure is not tried again
            with pytest.raises(RuntimeError, match=r"^no Ray cluster at .*: no cluster$"):
                init_ray(address)
        assert len(calls) == 1


def test_a_head_that_opens_its_port_a_moment_late_is_waited_for(monkeypatch):
    """`ray start --head` returns before its ports listen (a Ray Client server's up to 0.4 s
    later here): a refused connection is tried again for a moment, then named in the error."""
    import socket
    import threading
    import time

    ray = pytest.importorskip("ray")
    from corpus import free_port
    from fsar.pipeline.actors import REFUSED_GRACE_SECONDS, init_ray

    joined = []
    monkeypatch.setattr(ray, "init", lambda address, **kw: joined.append(address))
    port = free_port()
    head = socket.socket()

    def listen_late():
        time.sleep(0.5)
        head.bind(("127.0.0.1", port))
        head.listen()

    opener = threading.Thread(target=listen_late)
    opener.start()
    try:
        t = time.monotonic()
        init_ray(f"ray://127.0.0.1:{port}")
        assert joined == [f"ray://127.0.0.1:{port}"] and 0.5 <= time.monotonic() - t < REFUSED_GRACE_SECONDS
    finally:
        opener.join()
        head.close()
    nowhere = f"127.0.0.1:{free_port()}"
    t = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"^no Ray cluster answers at '{nowhere}' \(Connection refused\): start one there"):
        init_ray(nowhere)
    assert REFUSED_GRACE_SECONDS <= time.monotonic() - t < REFUSED_GRACE_SECONDS + 1
    assert joined == [f"ray://127.0.0.1:{port}"]
