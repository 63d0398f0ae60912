"""How solvable is a sharded benchmark without any model? Few-shot baselines on raw pixels.

    python -m tools.findings.pixel_baseline --shards data/synth-shards [--split test] [--shot 5] [--episodes 3000]
    python -m tools.findings.pixel_baseline --shards data/synth-shards --write-cache data/pixel-cache.h5

Each stored frame is shrunk to 16x12 pixels; features are those pixels, and the same
minus the clip's first frame (which removes the static scene and keeps the motion).
ProtoNet and OTAM then run on the usual seeded episodes, plus 2-way time-reversal-pair
episodes on the synthetic benchmark. A learned model should beat these numbers.

`--write-cache` instead writes the "pixels minus first frame" features of every split in
the embedding-cache layout, with all-zero class-name embeddings (no text), so trainers and
`fsar-eval` can run on features that are known to carry the motion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def pixel_features(shards: Path, split: str, size=(16, 12)) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """[N, T, 3 * w * h] pixel features, labels and class names of a sharded split."""
    import simplejpeg
    from PIL import Image

    from fsar.pipeline.shard.format import iter_sample_data as iter_shard

    manifest = json.loads((shards / "manifest.json").read_text())
    names = [c["name"] for c in sorted(manifest["splits"][split]["classes"], key=lambda c: c["index"])]
    feats, labels = [], []
    for tar in sorted((shards / split).glob("*.tar")):
        for _, _, jpgs, cls in iter_shard(tar):
            frames = [np.asarray(Image.fromarray(simplejpeg.decode_jpeg(b)).resize(size, Image.Resampling.BOX), np.float32) for b in jpgs]
            feats.append(np.stack(frames).reshape(len(frames), -1))
            labels.append(cls)
    return torch.from_numpy(np.stack(feats)), np.asarray(labels), names


def write_pixel_cache(shards: Path, path: Path) -> None:
    """All splits' "pixels minus first frame" features as an embedding cache (float16, zero text)."""
    from fsar.pipeline.embed.cache import cache_writer

    manifest = json.loads((shards / "manifest.json").read_text())
    attrs = {"backbone": "pixels-16x12-minus-first-frame", "pretrained": "none", "random_init": False, "weights_state_sha256": "none",
             "activation": "none", "preprocess": json.dumps({"name": "pixels-16x12-minus-first-frame"}), "shard_manifest": json.dumps(manifest)}
    with cache_writer(path, attrs) as cache:
        for split in manifest["splits"]:
            raw, labels, names = pixel_features(shards, split)
            ids = [str(i) for i in range(len(labels))]
            zero = np.zeros((len(names), raw.shape[-1]), np.float32)
            cache.split(split, (raw - raw[:, :1]).numpy().astype(np.float16), labels.astype(np.int64), ids, ids, names, {"clip-fsar": (zero, None)}, chunked=False)


def main(argv: list[str] | None = None) -> dict:
    from fsar.train.episodes import EpisodeConfig, sample_episodes, sample_pair_episodes
    from fsar.train.baselines import score
    from fsar.train.evaluate import reversal_pairs, summarise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, default=Path("data/synth-shards"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-cache", type=Path, default=None, help="write the features of every split as an embedding cache and stop")
    args = ap.parse_args(argv)
    if args.write_cache:
        write_pixel_cache(args.shards, args.write_cache)
        print(f"pixel features written to {args.write_cache}")
        return {}
    raw, labels, names = pixel_features(args.shards, args.split)
    pairs = reversal_pairs(names)
    results = {}
    for feature, frames in (("pixels", raw), ("pixels minus first frame", raw - raw[:, :1])):
        for method in ("protonet", "otam"):
            cfg = EpisodeConfig(args.way, args.shot, 1, args.episodes, args.seed)
            acc, ci = summarise(score(method, frames, sample_episodes(labels, cfg)))
            row = {"accuracy": acc, "ci95": ci}
            line = f"{feature:26s} {method:9s} {args.way}-way {args.shot}-shot {acc:5.1f} +- {ci:.1f}"
            if pairs:
                pa, pci = summarise(score(method, frames, sample_pair_episodes(labels, pairs, EpisodeConfig(2, args.shot, 1, min(args.episodes, 2000), args.seed))))
                row["reversal_pair_2way"] = {"accuracy": pa, "ci95": pci}
                line += f"   2-way reversal pairs {pa:5.1f} +- {pci:.1f}"
            print(line)
            results[f"{feature} / {method}"] = row
    return results


if __name__ == "__main__":
    main()
