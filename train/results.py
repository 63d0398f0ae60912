"""The results folder's one owner: where evaluations go, their file names, writing and listing.

A results folder (`fsar-reproduce --results`, or the user's own) holds
- `baselines/eval-<split>-<way>w<shot>s-<baseline>.json`: frozen-backbone baselines;
- `runs/<run>/eval-<split>-<way>w<shot>s[<suffix>].json`: each trained run's evaluations
  (suffix: `-beta<b>`, `-nofusion`, `-best-on-test`), and `eval-<split>-<protocol>.json` for
  the zero-shot and supervised protocols;
each JSON with its per-episode (or per-video) correctness in a CSV beside it. A run folder
holds its own evaluations directly. The report (`fsar.train.report`) and `fsar-reproduce`
read and write through this module only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

BASELINES_DIR = "baselines"
RUNS_DIR = "runs"
BASELINES = ("protonet", "otam", "zero-shot")
"""The frozen-backbone baselines (`fsar.train.baselines`); their evaluations are named after them."""


def eval_stem(split: str, protocol: str = "few-shot", way: int | None = None, shot: int | None = None, baseline: str | None = None, suffix: str = "") -> str:
    """The file stem of an evaluation: eval-<split>-<way>w<shot>s (few-shot) or eval-<split>-<protocol>,
    then -<baseline> for a frozen baseline, then `suffix`."""
    stem = f"eval-{split}-{way}w{shot}s" if protocol == "few-shot" else f"eval-{split}-{protocol}"
    if baseline is not None:
        stem += f"-{baseline}"
    return stem + suffix


def eval_path(folder: str | Path, split: str, protocol: str = "few-shot", way: int | None = None, shot: int | None = None, baseline: str | None = None, suffix: str = "") -> Path:
    """FOLDER/<eval_stem(...)>.json."""
    return Path(folder) / f"{eval_stem(split, protocol, way, shot, baseline, suffix)}.json"


def write_eval(folder: str | Path, result: dict, correct: np.ndarray, suffix: str = "") -> Path:
    """Write FOLDER/<stem>.json for `result` and its per-episode (or per-video) correctness beside it (CSV)."""
    from fsar.pipeline.atomic import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    protocol = result.get("protocol", "few-shot")
    baseline = result["method"] if result["method"] in BASELINES else None
    stem = eval_stem(result["split"], protocol, result.get("way"), result.get("shot"), baseline, suffix)
    per_episode = correct.mean(axis=1)
    unit = "episode" if protocol == "few-shot" else "video"
    rows = ["%s,accuracy,correct,queries" % unit] + [f"{e},{a:.6f},{int(c)},{correct.shape[1]}" for e, (a, c) in enumerate(zip(per_episode, correct.sum(axis=1)))]
    write_text_atomic(folder / f"{stem}-{unit}s.csv", "\n".join(rows) + "\n")
    path = folder / f"{stem}.json"
    write_text_atomic(path, json.dumps({**result, f"per_{unit}_file": f"{stem}-{unit}s.csv"}, indent=1) + "\n")
    return path


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` is one training run's folder (`fsar-train --out`), not a results folder."""
    return (Path(folder) / "config.json").exists() and (Path(folder) / "checkpoints").is_dir()


def iter_eval_files(results: Path) -> Iterator[Path]:
    """Every evaluation JSON under a results folder (baselines first), or in one run's folder."""
    results = Path(results)
    if is_run_dir(results):
        yield from sorted(results.glob("eval-*.json"))
        return
    yield from sorted(results.glob(f"{BASELINES_DIR}/eval-*.json"))
    yield from sorted(results.glob(f"{RUNS_DIR}/*/eval-*.json"))


def run_dir(results: Path, method: str, mode: str, way: int | None = None, trained_shot: int | None = None, ablation: str | None = None) -> Path:
    """RESULTS/runs/<method>-<mode>[-<way>w<shot>s][-<ablation>]: where `fsar-reproduce` keeps a run
    (shot-free methods train once, so their name has no shot; an ablation's label, e.g. "without
    prototype modulation", becomes words joined by hyphens)."""
    name = f"{method}-{mode}" if trained_shot is None else f"{method}-{mode}-{way}w{trained_shot}s"
    if ablation:
        name += "-" + re.sub(r"[^a-z0-9]+", "-", ablation.lower()).strip("-")
    return Path(results) / RUNS_DIR / name
