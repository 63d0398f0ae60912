"""The whole chain as a user runs it, through the command-line entry points, on a small synthetic
set: `fsar-data synth`, `fsar-data shard --decoder auto` (Ray workers with GPU shares, DALI where
it reads the codec), `fsar-data embed --device cuda`, two short `fsar-train` runs (adapter on the
cache; CLIP-FSAR fine-tuning the backbone on the shards) and `fsar-eval`: where a tensor is on the
wrong device, a step fails here."""

from __future__ import annotations

import json

from tools.gpu_check.config import CheckConfig
from tools.gpu_check.record import Recorder


def cli(main, argv: list[str]) -> None:
    """Run a console entry point in this process; a non-zero exit is an error naming the command."""
    try:
        main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"exit code {e.code} from {' '.join(argv[:2])} ... (the section's log has its message)") from None


def run(cfg: CheckConfig, rec: Recorder) -> None:
    from fsar.cli.data import main as data_main
    from fsar.cli.eval import main as eval_main
    from fsar.cli.train import main as train_main

    root = cfg.work / "chain"
    videos, shards, cache = root / "synth", root / "shards", root / "cache.h5"
    size = f"{cfg.synth_size[0]}x{cfg.synth_size[1]}"
    frames = f"{cfg.synth_frames[0]}-{cfg.synth_frames[1]}"
    on_gpu = cfg.device == "cuda"
    with rec.part("fsar-data synth") as part:
        cli(data_main, ["synth", str(videos), "--classes", str(cfg.chain_classes), "--videos-per-class", str(cfg.chain_videos),
                        "--splits", ",".join(map(str, cfg.chain_splits)), "--size", size, "--frames", frames])
        part["videos"] = cfg.chain_classes * cfg.chain_videos
    with rec.part("fsar-data shard --decoder auto") as part:
        workers = ["--workers", str(cfg.workers)] if cfg.workers else []
        cli(data_main, ["shard", "synth", "--root", str(videos), "--out", str(shards), "--decoder", "auto", "--short-side", str(cfg.short_side), *workers])
        summary = json.loads((shards / "summary.json").read_text())
        part.update(decoders=summary["decoders"], workers=summary["this_run"]["workers"], videos_per_s=summary["this_run"]["videos_per_second"])
        if on_gpu and not any(d.startswith("dali") for d in summary["decoders"]):
            raise RuntimeError(f"auto on a GPU machine decoded no video with DALI: {summary['decoders']}")
    with rec.part(f"fsar-data embed --device {cfg.device}") as part:
        cli(data_main, ["embed", "--shards", str(shards), "--cache", str(cache), "--backbone", cfg.backbone, "--pretrained", "none",
                        "--activation", cfg.activation, "--device", cfg.device, "--batch", str(cfg.embed_batch)])
        import h5py

        with h5py.File(cache, "r") as f:
            part.update(backbone=str(f.attrs["backbone"]), activation=str(f.attrs["activation"]), precision=str(f.attrs["precision"]))
    # Two steps of one episode and one validation: enough to meet every tensor on its device, and a checkpoint.
    device = ["--way", str(cfg.way), "--set", f"device={cfg.device}", "--set", "iterations=2", "--set", "val_every=2", "--set", "episodes_per_step=1"]
    adapter = root / "run-adapter"
    with rec.part(f"fsar-train adapter --set device={cfg.device}") as part:
        cli(train_main, ["--out", str(adapter), "--mode", "adapter", "--cache", str(cache), "--config", "tiny", *device])
        part["summary"] = json.loads((adapter / "summary.json").read_text())
    with rec.part(f"fsar-train finetune --set device={cfg.device}") as part:
        run_dir = root / "run-finetune"
        cli(train_main, ["--out", str(run_dir), "--mode", "finetune", "--shards", str(shards), "--config", "tiny", *device,
                         "--set", f"backbone={cfg.backbone}", "--set", "pretrained=none", "--set", f"activation={cfg.activation}"])
        part["summary"] = json.loads((run_dir / "summary.json").read_text())
    with rec.part("fsar-eval (adapter run)") as part:
        cli(eval_main, [str(adapter), "--way", str(cfg.way), "--episodes", "200"])
        found = sorted(adapter.glob("eval-test-*.json"))
        if not found:
            raise RuntimeError(f"fsar-eval wrote no eval-test-*.json in {adapter}")
        result = json.loads(found[0].read_text())
        part.update(accuracy=result["accuracy"], ci95=result["ci95"], episodes=result["episodes"])
