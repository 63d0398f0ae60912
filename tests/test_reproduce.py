"""A miniature of `make reproduce`: every stage, every method, the report; then a re-run that reuses it all."""

from __future__ import annotations

import json
import re

import pytest

from fsar.train.reproduce import ReproduceConfig, reproduce


@pytest.mark.chain
def test_miniature_chain_end_to_end_then_rerun_reuses(tmp_path):
    cfg = ReproduceConfig(
        data=tmp_path / "data",
        results=tmp_path / "results",
        backbone="fsar-micro-vit",
        short_side=48,
        synth_classes=24,
        synth_videos_per_class=3,
        synth_size=(64, 48),
        synth_frames=(8, 10),
        way=3,
        shots=(1, 2),
        episodes=40,
        train_config="tiny",
        train_overrides=("query=1",),
        workers=1,
        threads=1,
    )
    report = reproduce(cfg, log=None)
    text = report.read_text()
    res = tmp_path / "results"
    # Every method and baseline appears in both settings, with a number and a CI.
    for setting in ("3-way 1-shot", "3-way 2-shot"):
        section = text.split(f"## {setting}")[1].split("\n## ")[0]
        for label in ("protonet (frozen backbone)", "otam (frozen backbone)", "zero-shot (frozen backbone)", "clip-fsar", "ma-clip", "actionclip", "vita-clip"):
            assert re.search(rf"\| {re.escape(label)}[^|]*\|[^\n]*\d+\.\d\d ± \d+\.\d\d", section), (setting, label)
    assert "random (untrained) weights" in text
    for png in ("curves.png", "shots.png", "confusion.png", "reversal.png"):
        assert (res / "plots" / png).stat().st_size > 1000 and f"plots/{png}" in text
    # The table's numbers are the evaluation JSON's, not typed.
    otam = json.loads((res / "baselines" / "eval-test-3w1s-otam.json").read_text())
    assert f"{otam['accuracy']:.2f} ± {otam['ci95']:.2f}" in text
    assert "## Zero-shot and supervised classification" in text and "| supervised |" in text
    timings = json.loads((res / "timings.json").read_text())["stages"]
    assert {"synth", "shard", "embed"} <= set(timings) and any(k.startswith("train ") for k in timings)
    assert timings["embed"]["frames"] > 0 and timings["embed"]["frames_per_second"] > 0
    commands = (res / "commands.sh").read_text()
    assert commands.count("fsar-train") == 5  # every method once, scored at every shot from that run (as the paper), and CLIP-FSAR's ablation
    ablation = res / "runs" / "clip-fsar-adapter-3w1s-without-prototype-modulation"
    assert json.loads((ablation / "config.json").read_text())["text_modulation"] is False and "--set text_modulation=false" in commands
    assert (ablation / "eval-test-3w1s.json").exists() and not (ablation / "eval-test-3w2s.json").exists()  # scored at the first shot
    assert re.search(r"\| clip-fsar, without prototype modulation \| adapter \|[^\n]*\d+\.\d\d ± ", text.split("## 3-way 1-shot")[1].split("\n## ")[0])
    assert not (res / "runs" / "clip-fsar-adapter-3w2s").exists() and (res / "runs" / "clip-fsar-adapter-3w1s" / "eval-test-3w2s.json").exists()
    # Beside the main rows (selected on val), the checkpoint best on test, labelled, and the settings section.
    assert "clip-fsar (checkpoint best on test, as the official code selects)" in text and (res / "runs" / "clip-fsar-adapter-3w1s" / "eval-test-3w1s-best-on-test.json").exists()
    settings = text.split("## Settings: the paper's and ours")[1].split("\n## ")[0]
    assert "| clip-fsar-adapter-3w1s | mode: 'adapter' → 'finetune'" in settings and "vita-clip-peft" in settings
    assert commands.count("--mode peft") == 1 and "| vita-clip | peft |" in text
    assert (res / "runs" / "vita-clip-peft" / "eval-test-zero-shot.json").exists()
    # A re-run trains nothing and evaluates nothing again, and gives the same report.
    summaries = {p: p.stat().st_mtime_ns for p in res.glob("runs/*/summary.json")}
    evals = {p: p.stat().st_mtime_ns for p in res.glob("**/eval-*.json")}
    assert reproduce(cfg, log=None).read_text() == text
    assert {p: p.stat().st_mtime_ns for p in res.glob("runs/*/summary.json")} == summaries
    assert {p: p.stat().st_mtime_ns for p in res.glob("**/eval-*.json")} == evals


@pytest.mark.chain
def test_miniature_chain_pretrains_its_clip_and_says_so(tmp_path):
    import h5py

    cfg = ReproduceConfig(
        data=tmp_path / "data", results=tmp_path / "results", backbone="fsar-micro-vit", pretrained="corpus",
        corpus_samples=300, pretrain_steps=4, short_side=48, synth_classes=24, synth_appearance=24, synth_videos_per_class=3,
        synth_size=(64, 48), synth_frames=(8, 10), way=3, shots=(1,), episodes=40, methods=("clip-fsar",), peft_methods=("vita-clip",),
        train_config="tiny", train_overrides=("query=1", "iterations=4"), workers=1, threads=1,
    )
    text = reproduce(cfg, log=None).read_text()
    res, weights = tmp_path / "results", (tmp_path / "data" / "pretrain" / "open_clip_model.safetensors").resolve()
    assert "random (untrained) weights" not in text
    assert f"Its weights were pretrained here (`fsar-data pretrain`, `{weights}`" in text and "4 steps" in text
    assert re.search(r"One attribute at a time .*: count \d+\.\d% \(chance 33\.3%\), colour .* background \d+\.\d% \(chance 20\.0%\)\.", text)
    timings = json.loads((res / "timings.json").read_text())["stages"]
    assert timings["pretrain"]["steps"] == 4 and timings["captions"]["clips"] == 300
    with h5py.File(tmp_path / "data" / "synth-cache.h5") as f:
        assert f.attrs["pretrained"] == str(weights) and not f.attrs["random_init"]
        assert sum(name.decode().startswith(("a ", "an ")) for name in f["test/class_names"][()]) > 0
    backbone = json.loads((res / "runs" / "vita-clip-peft" / "backbone.json").read_text())
    assert backbone["pretrained"] == str(weights)
    commands = (res / "commands.sh").read_text()
    assert "fsar-data captions" in commands and "fsar-data pretrain" in commands and "--appearance 24" in commands
    # Both naming regimes, side by side, for the baselines, the run and its ablation.
    regimes = text.split("## Classes named by appearance and by motion")[1].split("\n## ")[0]
    for label in ("otam (frozen backbone) | frozen | 3-way 1-shot", "clip-fsar | adapter | 3-way 1-shot", "clip-fsar, without prototype modulation | adapter | 3-way 1-shot",
                  "zero-shot (frozen backbone) | frozen | zero-shot, all test classes"):
        assert re.search(rf"\| {re.escape(label)} \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \|", regimes), label
    assert reproduce(cfg, log=None).read_text() == text  # nothing redone, pretraining included
    assert json.loads((res / "timings.json").read_text())["stages"]["pretrain"] == timings["pretrain"]
