"""Embed benchmark: the embed stage against a bare encode_image loop, same device and batch size.

    python -m tools.bench.embed --shards data/synth-shards [--split test] [--backbone fsar-tiny-vit]
        [--pretrained none] [--batch 256] [--device auto] [--precision auto]

The bare loop runs encode_image on preprocessed frames already in memory; the stage
also reads the shards, decodes the JPEGs, preprocesses and writes the part files.
Goal: the stage reaches at least 90% of the bare loop's frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def flops_per_frame(model, size: int) -> float | None:
    """Forward FLOPs of encode_image for one frame, counted by torch's FLOP counter."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode_image(x)
        return float(counter.get_total_flops())
    except Exception:
        return None


def main(argv: list[str] | None = None) -> dict:
    import simplejpeg

    from fsar.pipeline.embed.config import EmbedConfig
    from fsar.pipeline.embed.run import resolve_weights, run_embed_stage
    from fsar.pipeline.embed.worker import autocast_for
    from fsar.pipeline.shard.format import iter_sample_data as iter_shard
    from fsar.pipeline.backbones import Preprocess, create_backbone

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, default=Path("data/synth-shards"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--backbone", default="fsar-tiny-vit")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--max-shards", type=int, default=0, help="embed only the first N shards of the split (0: all)")
    ap.add_argument("--min-seconds", type=float, default=5.0, help="time the bare loop for at least this long")
    ap.add_argument("--out", type=Path, default=Path("results/bench-embed"))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    manifest = json.loads((args.shards / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        # A view of the shards holding only the chosen split.
        view = Path(tmp) / "shards"
        view.mkdir()
        os.symlink((args.shards / args.split).resolve(), view / args.split)
        info = dict(manifest["splits"][args.split])
        if args.max_shards:
            info["shards"] = info["shards"][: args.max_shards]
        (view / "manifest.json").write_text(json.dumps({**manifest, "splits": {args.split: info}}))
        config = EmbedConfig(shards=view, cache=Path(tmp) / "cache.h5", backbone=args.backbone, pretrained=args.pretrained,
                             device=args.device, precision=args.precision, batch=args.batch)
        device, precision = config.resolved_device(), config.resolved_precision()
        spec, _ = resolve_weights(config)
        model, _ = create_backbone(spec, device)
        pre = Preprocess(model)
        # Bare loop input: preprocessed frames of the first shards, in memory on the device.
        frames = []
        for shard in sorted((view / args.split).glob("*.tar")):
            for _, _, jpgs, _ in iter_shard(shard):
                frames.append(pre(torch.from_numpy(np.stack([simplejpeg.decode_jpeg(b) for b in jpgs])).to(device)))
            if sum(f.shape[0] for f in frames) >= 4 * args.batch:
                break
        x = torch.cat(frames)[: 4 * args.batch]
        with torch.no_grad(), autocast_for(device, precision):
            model.encode_image(x[: args.batch])  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t, done = time.perf_counter(), 0
            while done == 0 or time.perf_counter() - t < args.min_seconds:
                for i in range(0, x.shape[0], args.batch):
                    model.encode_image(x[i : i + args.batch])
                    done += min(args.batch, x.shape[0] - i)
                if device == "cuda":
                    torch.cuda.synchronize()
            bare = done / (time.perf_counter() - t)
        fl = flops_per_frame(model, pre.size)
        del model
        summary = run_embed_stage(config)
        stage = summary["this_run"]["frames_per_second"]
    result = {
        "backbone": args.backbone, "device": device, "precision": precision, "batch": args.batch,
        "threads": torch.get_num_threads(), "bare_encode_image_frames_per_s": round(bare, 1),
        "embed_stage_frames_per_s": stage, "stage_frames": summary["this_run"]["frames"], "ratio": round(stage / bare, 3),
    }
    if fl:
        result["gflops_per_frame"] = round(fl / 1e9, 3)
        result["achieved_tflops_stage"] = round(fl * stage / 1e12, 3)
    print(json.dumps(result, indent=1))
    print(f"\nembed stage {stage:.0f} frames/s vs bare encode_image {bare:.0f} frames/s: {stage / bare:.2f} (goal >= 0.90)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-embed.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
