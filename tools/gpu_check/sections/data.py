"""The synthetic videos and shards that the decode (dry run), embed and train sections read."""

from __future__ import annotations

import json
from pathlib import Path

from tools.gpu_check.config import CheckConfig, cores
from tools.gpu_check.record import Recorder


def videos(cfg: CheckConfig) -> Path:
    return cfg.work / "synth"


def shards(cfg: CheckConfig) -> Path:
    """The shard folder of this section; raises when the section did not make it."""
    marker = cfg.work / "data.json"
    if not marker.exists():
        raise RuntimeError("needs the synthetic shards, which the data section did not make (see its reason)")
    return Path(json.loads(marker.read_text())["shards"])


def run(cfg: CheckConfig, rec: Recorder) -> None:
    from fsar.pipeline.shard.config import ShardConfig
    from fsar.pipeline.shard.run import run_shard_stage
    from fsar.pipeline.synth import SynthConfig, generate

    with rec.part("render") as part:
        summary = generate(SynthConfig(
            out=videos(cfg), classes=cfg.synth_classes, videos_per_class=cfg.synth_videos, size=cfg.synth_size,
            frames=cfg.synth_frames, split_proportions=cfg.synth_splits, workers=cores(),
        ))
        part.update(videos=summary.videos, classes=summary.classes, seconds=round(summary.seconds, 1))
    with rec.part("shard (pyav, 1 worker)") as part:
        # One worker, no Ray: the chain section runs Ray; here the shards only have to exist.
        out = run_shard_stage(ShardConfig(dataset="synth", root=videos(cfg), out=cfg.work / "shards", workers=1, decoder="pyav", short_side=cfg.short_side))
        part.update(failed=out["failed"], videos_per_second=out["this_run"]["videos_per_second"], splits={s: c["ok"] for s, c in out["splits"].items()})
        if out["failed"]:
            raise RuntimeError(f"{out['failed']} videos failed: {out['failures_by_reason']}")
    (cfg.work / "data.json").write_text(json.dumps({"shards": str(cfg.work / "shards"), "videos": str(videos(cfg))}))
