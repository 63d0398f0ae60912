"""How transferable a trained head's video encodings are, apart from its own prediction.

Scores a run's checkpoint on fixed test episodes four ways: ProtoNet and OTAM on the raw
frame embeddings (the frozen baselines) and on the head's query-path encodings (every
video, support or query, encoded as a query, i.e. without class text). Comparing these with
`fsar-eval RUN_DIR` separates what the head learnt about videos from what its prediction
adds (for CLIP-FSAR: the class-text token of prototype modulation). Runs on the CPU.

`--checkpoint init` scores the model as training started: the run's backbone weights and its
parameters initialised from its seed (in peft mode, e.g. Vita-CLIP's prompts before training);
`--set KEY=VALUE` changes the run's settings first (e.g. `global_prompts=0`).

    python -m tools.findings.probe RUN_DIR [--checkpoint best|last|init] [--set K=V] [--shot 1] [--episodes 10000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fsar.train.checkpoint import load_checkpoint
from fsar.train.config import TrainConfig, apply_overrides
from fsar.train.episodes import EpisodeConfig, Episodes, sample_episodes
from fsar.train.evaluate import score_with, summarise
from fsar.train.metrics import otam_logits, prototype_logits
from fsar.train.model import build_model
from fsar.train.trainer import encode_split
from tools.findings.feature_stats import video_cosines


def probe(run_dir: str | Path, checkpoint: str = "best", split: str = "test", config: EpisodeConfig = EpisodeConfig(), overrides: tuple[str, ...] = ()) -> dict:
    """{features: {metric: (accuracy, ci95)}} for features raw and query-path, metrics protonet and otam."""
    run_dir = Path(run_dir)
    cfg = apply_overrides(TrainConfig.from_json((run_dir / "config.json").read_text()), overrides)
    if checkpoint == "init":  # the backbone's own weights, the rest from the seed; nothing written to the run
        model, data = build_model(cfg, run_dir, write=False)
    else:
        model, data = build_model(cfg, run_dir, for_eval=True)
        load_checkpoint(run_dir / "checkpoints", checkpoint, model)
    model.eval()
    source = data.split(split)
    with torch.no_grad():
        text = model.class_text(source.info.class_names, data.text[split])
    enc = encode_split(model, source, text, "cpu")
    eps = sample_episodes(source.info.labels, config)
    metrics = {"protonet": prototype_logits, "otam": lambda q, s, w: otam_logits(q, s, w, cfg.lam)}
    out: dict = {"mean cosine between videos": mean_cosine(enc.raw)}
    for name, feats in (("raw", enc.raw), ("query-path", enc.query)):
        for metric, fn in metrics.items():

            def logits(part: Episodes, feats=feats, fn=fn) -> torch.Tensor:
                E, W, K = part.support.shape
                s = feats[torch.from_numpy(part.support.reshape(E, W * K))]
                q = feats[torch.from_numpy(part.query.reshape(E, -1))]
                return fn(q, s, W)

            out.setdefault(name, {})[metric] = summarise(score_with(logits, eps))
    return out


def mean_cosine(frames: torch.Tensor) -> float:
    """Mean cosine between the mean-pooled embeddings of different videos, frames (N, T, D):
    near 1 when an encoder maps every video to one point."""
    cos, n = video_cosines(frames), len(frames)
    return float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.findings.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--checkpoint", default="best", choices=("best", "last", "init"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="change a setting of the run first (with init)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    result = probe(a.run_dir, a.checkpoint, a.split, EpisodeConfig(a.way, a.shot, 1, a.episodes, a.seed), tuple(a.overrides))
    cosine = result.pop("mean cosine between videos")
    for name, metrics in result.items():
        for metric, (acc, ci) in metrics.items():
            print(f"{name:>10} {metric:<8} {acc:6.2f} +- {ci:.2f}")
    print(f"mean cosine between videos (raw, mean over frames): {cosine:.3f}")
    print(json.dumps({n: {m: round(v[0], 2) for m, v in ms.items()} for n, ms in result.items()} | {"mean_cosine": round(cosine, 3)}))


if __name__ == "__main__":
    main()
