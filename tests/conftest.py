"""Shared fixtures: the read-only data beside the checkout (../shared)."""

from __future__ import annotations

from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory) -> dict[str, Path]:
    """A miniature of the main chain: 24 synthetic classes x 3 videos -> shards -> a micro-ViT cache."""
    import warnings

    from fsar.pipeline.embed.config import EmbedConfig
    from fsar.pipeline.embed.run import run_embed_stage
    from fsar.pipeline.shard.config import ShardConfig
    from fsar.pipeline.shard.run import run_shard_stage
    from fsar.pipeline.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("chain")
    generate(SynthConfig(out=root / "synth", classes=24, videos_per_class=3, size=(64, 48), frames=(8, 10), workers=1))
    run_shard_stage(ShardConfig(dataset="synth", root=root / "synth", out=root / "shards", workers=1, short_side=48))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_embed_stage(EmbedConfig(shards=root / "shards", cache=root / "c.h5", backbone="fsar-micro-vit", pretrained="none", threads=1))
    return {"root": root, "shards": root / "shards", "cache": root / "c.h5"}


@dataclass(frozen=True)
class RayCluster:
    address: str  # "host:port" of its head
    client: str  # its Ray Client address, "ray://host:port"


@pytest.fixture
def ray_cluster(request, monkeypatch):
    """A Ray cluster started apart from the test, in its own head processes
    as `ray start --head` starts one: 2 CPUs, or as many as the test's indirect parameter,
    with a Ray Client server (`--ray-client-server-port`) at `.client`. While it runs, a
    plain `ray.init()` on this machine joins it, so it lives for one test only."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from corpus import free_port

    cpus = getattr(request, "param", 2)
    port = free_port()  # from the kernel's ephemeral range, above Ray's worker ports (10002 to 19999)
    # Without this the client server's process for a session dies at times as it starts
    # (SIGSEGV in gRPC's fork handlers; see pipeline.actors), and the session fails after 40 s.
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "0")  # the head's processes inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False, "ray_client_server_port": port})
    try:
        yield RayCluster(cluster.address, f"ray://127.0.0.1:{port}")
    finally:
        cluster.shutdown()
