"""fsar-eval end to end on a small cache: outputs, recomputable CI, batched = per-episode answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fsar.cli.eval import app
from fsar.pipeline.embed.cache import load_split
from fsar.train.episodes import EpisodeConfig, Episodes, sample_episodes
from fsar.train.baselines import episode_logits, eval_frames


@pytest.fixture(scope="module")
def cache(tiny_chain) -> Path:
    return tiny_chain["cache"]


@pytest.mark.parametrize("method", ["protonet", "otam", "zero-shot"])
def test_fsar_eval_writes_results_anyone_can_recompute(cache, tmp_path, method):
    result = CliRunner().invoke(app, [str(tmp_path), "--cache", str(cache), "--method", method, "--episodes", "300", "--way", "5", "--shot", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / f"eval-test-5w1s-{method}.json").read_text())
    for key in ("accuracy", "ci95", "episodes", "way", "shot", "seed", "method", "per_class_accuracy"):
        assert key in out
    assert out["episodes"] == 300 and out["method"] == method and out["random_init_backbone"]
    with open(tmp_path / out["per_episode_file"]) as f:
        acc = np.array([float(r["accuracy"]) for r in csv.DictReader(f)])
    assert len(acc) == 300
    assert out["accuracy"] == pytest.approx(acc.mean() * 100)
    assert out["ci95"] == pytest.approx(1.96 * acc.std() / np.sqrt(300) * 100)
    assert set(out["per_class_accuracy"]) <= set(load_split(cache, "test", verbose=False).class_names)
    assert 0 <= out["reversal_pair_2way"]["accuracy"] <= 100 and out["reversal_pair_2way"]["pairs"] >= 1


def test_batched_episodes_give_the_per_episode_answers(cache):
    data = load_split(cache, "test", verbose=False)
    frames = eval_frames(data)
    eps = sample_episodes(data.labels, EpisodeConfig(5, 1, 1, 40, seed=3))
    text = torch.from_numpy(data.text["clip-fsar"])
    for method in ("protonet", "otam", "zero-shot"):
        batched = episode_logits(method, frames, eps, text)
        single = torch.cat([episode_logits(method, frames, Episodes(eps.classes[e : e + 1], eps.support[e : e + 1], eps.query[e : e + 1]), text) for e in range(40)])
        assert torch.allclose(batched, single, atol=1e-5), method


def test_pixel_baseline_reads_every_shard_sample(cache):
    from tools.findings.pixel_baseline import main, pixel_features

    shards = cache.parent / "shards"
    feats, labels, names = pixel_features(shards, "test")
    manifest = json.loads((shards / "manifest.json").read_text())["splits"]["test"]
    assert feats.shape == (manifest["videos"], 8, 16 * 12 * 3) and len(names) == len(manifest["classes"])
    results = main(["--shards", str(shards), "--shot", "1", "--episodes", "50"])
    assert set(results) == {f"{f} / {m}" for f in ("pixels", "pixels minus first frame") for m in ("protonet", "otam")}


def test_bad_eval_arguments_exit_2(cache, tmp_path):
    bad = CliRunner().invoke(app, [str(tmp_path), "--cache", str(cache), "--method", "trx"])
    assert bad.exit_code == 2 and "unknown method 'trx'" in bad.output
    big = CliRunner().invoke(app, [str(tmp_path), "--cache", str(cache), "--method", "otam", "--way", "20"])
    assert big.exit_code == 2 and "need 20 classes" in " ".join(big.output.split())
    notrun = CliRunner().invoke(app, [str(tmp_path), "--cache", str(cache)])
    assert notrun.exit_code == 2 and "not a training run" in " ".join(notrun.output.split())


def test_pixel_cache_reads_back_as_an_embedding_cache(cache, tmp_path):
    import h5py

    from fsar.train.data import CacheSource
    from tools.findings.pixel_baseline import pixel_features, write_pixel_cache

    shards = cache.parent / "shards"
    write_pixel_cache(shards, tmp_path / "px.h5")
    with h5py.File(tmp_path / "px.h5", "r") as f:
        assert set(f) == {"train", "val", "test"}
    src = CacheSource(tmp_path / "px.h5", "test", 8, "clip-fsar")
    raw, labels, _ = pixel_features(shards, "test")
    assert np.array_equal(src.info.labels, labels)
    torch.testing.assert_close(src.batch(np.arange(len(src))), (raw - raw[:, :1]).half().float())
