"""`--workers N`: training and evaluation on Ray Train workers (DDP over gloo, on CPU) give what
one process gives: the same weights up to float reduction order, the same validation, the
same per-episode results, through a dead worker and a resume with another N."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fsar.train.configs import get_config
from fsar.train.evaluate_run import evaluate_run
from fsar.train.episodes import EpisodeConfig
from fsar.train.trainer import train
from fsar.train.workers import WorkersConfig, evaluate_on_workers, train_on_workers

pytestmark = pytest.mark.cluster
TWO = WorkersConfig(workers=2, cpus_per_worker=1)


@pytest.fixture(scope="module", autouse=True)
def ray_left_at_the_end():
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


@pytest.fixture
def ray_here():
    """A local Ray instance of 2 CPUs, shared by the module's runs (each uses it as it is)."""
    import ray

    from fsar.pipeline.actors import init_ray

    if not ray.is_initialized():
        init_ray(None, num_cpus=2)


def adapter(cache, **changes):
    """CLIP-FSAR (dropout on) on the miniature chain: 3-way 1-shot, 4 episodes a step, 20 steps."""
    base = dataclasses.replace(get_config("tiny", "clip-fsar"), cache=str(cache), way=3, shot=1, query=2, episodes_per_step=4, iterations=20,
                               val_every=10, val_episodes=40, threads=1)
    return dataclasses.replace(base, **changes)


def without_key_bias(weights: dict) -> dict:
    """The weights less the key part of attention's input-projection biases. A key bias adds the
    same q.b to every key's score, which softmax ignores: its exact gradient is 0, so what it
    gets is float noise, which Adam scales to steps of about the learning rate. It differs
    between any two orders of float sums and means nothing."""
    out = {}
    for k, v in weights.items():
        if k.endswith("in_proj_bias"):
            D = v.shape[0] // 3
            v = torch.cat([v[:D], v[2 * D :]])  # queries' and values' parts
        out[k] = v
    return out


def relative_gap(a_dir, b_dir, name="last") -> float:
    """|a - b| / |a| over all weights (floating point, less the key biases) as one vector. Per
    tensor, parameters that start at zero and get gradients near float noise (a query bias at
    initialisation) can differ by more, as Adam divides their noise by its own size."""
    a, b = (without_key_bias(load_file(str(d / "checkpoints" / f"{name}.safetensors"))) for d in (a_dir, b_dir))
    assert a.keys() == b.keys()
    keys = [k for k in a if a[k].is_floating_point()]
    return (sum((a[k] - b[k]).norm() ** 2 for k in keys) ** 0.5 / sum(a[k].norm() ** 2 for k in keys) ** 0.5).item()


def val_rows(run) -> list[dict]:
    import csv

    return list(csv.DictReader(open(run / "val_metrics.csv")))


@pytest.fixture(scope="module")
def one_worker(tiny_chain, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    train(adapter(tiny_chain["cache"]), run)
    return run


def assert_same_run(reference, run):
    assert relative_gap(reference, run) <= 1e-5
    for a, b in zip(val_rows(reference), val_rows(run), strict=True):
        assert a["step"] == b["step"] and abs(float(a["accuracy"]) - float(b["accuracy"])) <= 1e-5 * float(a["accuracy"])


def test_two_workers_train_and_evaluate_what_one_process_does(tiny_chain, one_worker, tmp_path, ray_here):
    run = tmp_path / "run"
    steps = []
    summary = train_on_workers(adapter(tiny_chain["cache"]), run, TWO, on_step=lambda done, m: steps.append(done))
    assert summary["workers"] == 2 and steps == list(range(1, 21))
    assert_same_run(one_worker, run)
    # Every step's 4 episodes: two for each worker, none twice, none left out.
    logs = [[json.loads(line) for line in open(run / "workers" / f"rank{r}.jsonl")] for r in (0, 1)]
    for step in range(20):
        shares = [range(*next(e for e in log if e["step"] == step)["episodes"]) for log in logs]
        assert sorted(i for s in shares for i in s) == [0, 1, 2, 3] and all(len(s) == 2 for s in shares)
    assert {e["pid"] for e in logs[0]}.isdisjoint({e["pid"] for e in logs[1]})
    # Sharded evaluation of this run: exactly one process's, episode by episode.
    config = EpisodeConfig(3, 1, 1, 3000, 0)  # 2 chunks of 2,000 episodes, and 2,000 reversal-pair episodes
    alone, correct_alone = evaluate_run(run, config=config, checkpoint="last")
    shared, correct_shared = evaluate_on_workers(run, TWO, config=config, checkpoint="last")
    assert np.array_equal(correct_alone, correct_shared)
    assert json.dumps(alone, sort_keys=True) == json.dumps(shared, sort_keys=True)


def test_a_run_resumed_with_another_number_of_workers_ends_as_an_uninterrupted_one(tiny_chain, one_worker, tmp_path, ray_here):
    run = tmp_path / "run"
    train_on_workers(adapter(tiny_chain["cache"], iterations=10), run, TWO)
    train(adapter(tiny_chain["cache"]), run, resume=True)  # one process from step 10 to 20
    assert_same_run(one_worker, run)


def test_a_killed_worker_is_restarted_and_the_run_ends_as_an_uninterrupted_one(tiny_chain, one_worker, tmp_path, ray_here):
    """kill -9 of worker 1 after the step-10 checkpoint: Ray Train restarts the workers, which
    resume from it; the final weights are an uninterrupted run's."""
    run = tmp_path / "run"
    log = run / "workers" / "rank1.jsonl"
    killed = []

    def kill_after_step_13() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) >= 13:
                pid = json.loads(lines[-1])["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_after_step_13, daemon=True)
    watcher.start()
    summary = train_on_workers(adapter(tiny_chain["cache"]), run, TWO)
    watcher.join()
    assert killed, "worker 1 was not killed"
    pids = {json.loads(line)["pid"] for line in log.read_text().splitlines()}
    assert len(pids) == 2  # a second worker 1 finished the run
    assert summary["best_step"] > 0
    assert_same_run(one_worker, run)


def test_a_loss_over_the_whole_step_is_gathered_from_the_workers(tiny_chain, tmp_path, ray_here):
    """ActionCLIP's loss compares every video of a step with every other: the workers gather the
    step's embeddings, so 2 workers still take one process's step."""
    cfg = dataclasses.replace(get_config("tiny", "actionclip"), cache=str(tiny_chain["cache"]), way=3, shot=1, query=1, episodes_per_step=4,
                              iterations=10, val_every=5, val_episodes=40, threads=1, temporal_layers=1)
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    train(cfg, alone)
    train_on_workers(cfg, shared, TWO)
    assert_same_run(alone, shared)


def test_finetune_mode_on_two_workers_is_one_process(tiny_chain, tmp_path, ray_here):
    """A tiny ViT trained end to end (finetune mode, on the shards): 2 workers = 1 process."""
    cfg = dataclasses.replace(get_config("tiny", "clip-fsar"), mode="finetune", shards=str(tiny_chain["shards"]), backbone="fsar-micro-vit",
                              pretrained="none", way=3, shot=1, query=1, episodes_per_step=2, iterations=20, val_every=10, val_episodes=20,
                              threads=1, image_view="clip-fsar", train_augment="crop+query")
    alone = tmp_path / "alone"
    train(cfg, alone)
    shared = tmp_path / "shared"
    train_on_workers(cfg, shared, TWO)
    assert_same_run(alone, shared)


def test_fsar_train_and_eval_on_a_cluster_through_ray_client(tiny_chain, one_worker, tmp_path, ray_cluster):
    """The commands as a user runs them against a cluster started apart (`ray start --head`),
    from outside it through Ray Client: the run is one process's."""
    import ray
    from typer.testing import CliRunner

    from fsar.cli.eval import app as eval_app
    from fsar.cli.train import app as train_app

    ray.shutdown()  # the module's own instance, if an earlier test started one
    run = tmp_path / "run"
    args = ["--out", str(run), "--config", "tiny", "--method", "clip-fsar", "--mode", "adapter", "--cache", str(tiny_chain["cache"]), "--way", "3",
            "--shot", "1", "--set", "query=2", "--set", "episodes_per_step=4", "--set", "iterations=20", "--set", "val_every=10",
            "--set", "val_episodes=40", "--set", "threads=1", "--workers", "2", "--address", ray_cluster.client]
    result = CliRunner().invoke(train_app, args, env={"RAY_ADDRESS": None})
    assert result.exit_code == 0, result.output
    assert f"on 2 Ray Train workers of the cluster at {ray_cluster.client}" in " ".join(result.output.split())
    assert_same_run(one_worker, run)
    result = CliRunner().invoke(eval_app, [str(run), "--way", "3", "--episodes", "500", "--workers", "2"], env={"RAY_ADDRESS": ray_cluster.address})
    assert result.exit_code == 0, result.output
    alone, _ = evaluate_run(run, config=EpisodeConfig(3, 1, 1, 500, 0))
    shared = json.loads((run / "eval-test-3w1s.json").read_text())
    assert (shared["accuracy"], shared["per_class_accuracy"]) == (alone["accuracy"], alone["per_class_accuracy"])
    assert not ray.is_initialized()
