"""The synthetic benchmark's two naming regimes in results, and the paper's ablations in the
report: classes named by appearance (as in Kinetics) against classes named by motion (as in
SSv2), and the runs `fsar-reproduce` trains for a method's ablations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fsar.pipeline.synth.catalogue import APPEARANCE, CATALOGUE
from fsar.train.evaluate import appearance_classes, by_regime, classification_result
from fsar.train.report import Row, _ablation, _regimes_section
from fsar.train.results import run_dir

NAMES = [CATALOGUE[0].name, APPEARANCE[0].name, CATALOGUE[1].name, APPEARANCE[1].name, CATALOGUE[2].name]  # motion, look, motion, look, motion


def test_appearance_classes_are_the_look_family_on_synth_only():
    assert appearance_classes(NAMES, "synth").tolist() == [False, True, False, True, False]
    assert appearance_classes(NAMES, "kinetics100") is None  # a real dataset's names say nothing of it
    assert appearance_classes([c.name for c in CATALOGUE[:4]], "synth") is None  # one regime: no split to show


def test_by_regime_averages_each_regimes_queries():
    truth = np.array([[0, 1, 2], [3, 4, 1]])
    correct = np.array([[True, True, False], [False, True, False]])
    r = by_regime(correct, truth, appearance_classes(NAMES, "synth"))
    # appearance queries: class 1, 3, 1 -> right, wrong, wrong; motion: 0, 2, 4 -> right, wrong, right
    assert r == pytest.approx({"appearance": 100 / 3, "motion": 200 / 3})
    assert by_regime(correct[:, ::2], np.array([[0, 2], [4, 0]]), appearance_classes(NAMES, "synth")) is None  # no appearance query: no mean of nothing


def test_zero_shot_right_on_appearance_wrong_on_motion_reads_100_and_0():
    labels = np.arange(5).repeat(2)
    scores = torch.zeros(10, 5)
    look = appearance_classes(NAMES, "synth")
    for i, c in enumerate(labels):
        scores[i, c if look[c] else (c + 1) % 5] = 1.0  # right on appearance classes, wrong on motion classes
    result, top1 = classification_result(scores, labels, NAMES, "zero-shot", "synth")
    assert result["accuracy_by_regime"] == {"appearance": 100.0, "motion": 0.0}
    assert result["accuracy"] == 40.0 and top1.sum() == 4
    assert "accuracy_by_regime" not in classification_result(scores, labels, NAMES, "zero-shot")[0]


def test_an_ablation_run_has_its_own_folder_and_label(tmp_path):
    run = run_dir(tmp_path, "clip-fsar", "adapter", 5, 1, "without prototype modulation")
    assert run.name == "clip-fsar-adapter-5w1s-without-prototype-modulation"
    assert run_dir(tmp_path, "clip-fsar", "adapter", 5, 1).name == "clip-fsar-adapter-5w1s"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": "clip-fsar", "text_modulation": False}))
    assert _ablation(run, "clip-fsar") == ", without prototype modulation"
    (run / "config.json").write_text(json.dumps({"method": "clip-fsar", "text_modulation": True}))
    assert _ablation(run, "clip-fsar") == ""  # the paper's setting: no label
    assert _ablation(run, "no-such-method") == ""


def _row(label: str, mode: str, accuracy: float, regimes: dict | None, protocol: str = "few-shot") -> Row:
    result = {"protocol": protocol, "accuracy": accuracy, "ci95": 0.4, "split": "test", "way": 5, "shot": 1, "episodes": 100}
    if regimes:
        result["accuracy_by_regime"] = regimes
    return Row(label, label.split(" ")[0], mode, result, Path("x.json"), None)


def test_the_report_sets_the_regimes_side_by_side_with_the_evaluations_numbers():
    rows = [
        _row("otam (frozen backbone)", "frozen", 32.91, {"appearance": 52.35, "motion": 28.03}),
        _row("clip-fsar, without prototype modulation", "adapter", 31.93, {"appearance": 52.36, "motion": 26.81}),
        _row("zero-shot (frozen backbone)", "frozen", 11.11, {"appearance": 40.0, "motion": 3.3}, protocol="zero-shot"),
    ]
    text = "\n".join(_regimes_section(rows, (5, 1)))
    assert "| otam (frozen backbone) | frozen | 5-way 1-shot | 32.91 | 52.35 | 28.03 |" in text
    assert "| clip-fsar, without prototype modulation | adapter | 5-way 1-shot | 31.93 | 52.36 | 26.81 |" in text
    assert "| zero-shot (frozen backbone) | frozen | zero-shot, all test classes | 11.11 | 40.00 | 3.30 |" in text
    assert _regimes_section([_row("otam (frozen backbone)", "frozen", 30.0, None)], (5, 1)) == []  # no regimes: no section
