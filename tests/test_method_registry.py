"""A method declares itself (`MethodSpec` on its head); adding one that fits the existing modes
takes its head file (tests/toy_method.py) and its registration, nothing else."""

from __future__ import annotations

import json

import pytest

from fsar.train.heads import HEADS, Head, MethodSpec, method_spec, methods_with, register, unregister


@pytest.fixture
def toy():
    from toy_method import ToyProto

    register(ToyProto)
    yield ToyProto
    unregister("toy-proto")


def test_a_new_method_trains_evaluates_and_reports_through_the_commands(toy, tiny_chain, tmp_path):
    from fsar.cli.eval import main as eval_main
    from fsar.cli.reproduce import report_main
    from fsar.cli.train import main as train_main

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train_main(["--out", str(run), "--cache", str(tiny_chain["cache"]), "--method", "toy-proto", "--way", "3", "--config", "tiny",
                    "--set", "query=1", "--set", "threads=1"])
    assert e.value.code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "toy-proto" and config["mode"] == "adapter" and config["lr"] == 1e-3  # its declared defaults
    with pytest.raises(SystemExit) as e:
        eval_main([str(run), "--way", "3", "--episodes", "200"])
    assert e.value.code == 0
    result = json.loads((run / "eval-test-3w1s.json").read_text())
    assert result["method"] == "toy-proto" and 0 <= result["accuracy"] <= 100
    with pytest.raises(SystemExit) as e:
        report_main([str(run)])
    assert e.value.code == 0
    report = (run / "REPORT.md").read_text()
    assert "| toy-proto | adapter |" in report
    assert "episodes_per_step" in report  # the tiny config departs from its declared paper setting


def test_a_method_that_encodes_each_episode_together_scores_as_one_that_encodes_once(toy, tiny_chain, tmp_path, monkeypatch):
    """The per-episode path (`encodes_independently=False`) against the encode-once path, on a
    head for which both must give the same predictions."""
    import dataclasses

    from fsar.train.configs import get_config
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.evaluate_run import evaluate_run
    from fsar.train.trainer import train

    run = tmp_path / "run"
    train(dataclasses.replace(get_config("tiny", "toy-proto"), cache=str(tiny_chain["cache"]), way=3, query=1, threads=1), run)
    ep = EpisodeConfig(way=3, shot=2, query=1, episodes=300, seed=0)
    once, correct_once = evaluate_run(run, "test", ep)
    monkeypatch.setattr(toy, "spec", dataclasses.replace(toy.spec, encodes_independently=False))
    per_episode, correct_per_episode = evaluate_run(run, "test", ep)
    assert (correct_once == correct_per_episode).all() and once["accuracy"] == per_episode["accuracy"]


def test_a_method_is_refused_in_a_mode_it_does_not_declare(toy, tiny_chain, tmp_path):
    from fsar.cli.train import main as train_main

    with pytest.raises(SystemExit) as e:
        train_main(["--out", str(tmp_path / "run"), "--mode", "peft", "--shards", str(tiny_chain["shards"]), "--method", "toy-proto",
                    "--config", "tiny", "--set", "backbone=fsar-micro-vit", "--set", "pretrained=none"])
    assert e.value.code == 2
    assert not (tmp_path / "run" / "config.json").exists()


def test_the_registry_reads_each_declaration(toy):
    assert methods_with(reproduce_mode="adapter") == ("clip-fsar", "ma-clip", "actionclip")
    assert methods_with(reproduce_mode="peft") == ("vita-clip",)
    assert set(methods_with("peft")) == {"ma-clip", "vita-clip"}
    assert "toy-proto" in methods_with("adapter") and "toy-proto" not in methods_with(reproduce_mode="adapter")
    assert method_spec("actionclip").shot_free and not method_spec("clip-fsar").shot_free
    assert method_spec("clip-fsar").paper_numbers["ssv2"][1] == 61.9
    with pytest.raises(ValueError, match="unknown method 'nope'; known: clip-fsar, ma-clip, actionclip, vita-clip, toy-proto"):
        method_spec("nope")


def test_a_head_must_declare_itself_fully():
    class NoSpec(Head):
        pass

    class PeftWithoutAdapters(Head):
        spec = MethodSpec("half-done", modes=("adapter", "peft"))

    with pytest.raises(TypeError, match="no `spec"):
        register(NoSpec)
    with pytest.raises(TypeError, match="does not implement peft_visual"):
        register(PeftWithoutAdapters)
    with pytest.raises(ValueError, match="registered already"):
        register(type("Other", (Head,), {"spec": MethodSpec("clip-fsar")}))
    with pytest.raises(ValueError, match="reproduce_mode 'peft' is not one of its modes"):
        MethodSpec("x", modes=("adapter",), reproduce_mode="peft")
    assert "half-done" not in HEADS
