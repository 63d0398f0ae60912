"""Sizing Ray actors to the cluster's GPUs."""

from __future__ import annotations

import warnings

import pytest

from pipeline.actors import gpu_share, whole_gpu_actors


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
