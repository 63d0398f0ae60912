"""`fsar-data`: dataset commands (synthetic benchmark, shards, embedding caches)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from fsar.cli.errors import debug_option, reported
from fsar.cli.progress import console, progress_bar, warnings_to_console
from fsar.pipeline.datasets import DATASETS

_PAPER_VIEW = ", ".join(n for n, d in DATASETS.items() if d.view == "clip-fsar")

app = typer.Typer(
    name="fsar-data",
    help="Prepare few-shot action recognition data: synthetic benchmark, shards, embedding caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Prepare few-shot action recognition data."""


def parse_size(text: str) -> tuple[int, int]:
    """'192x144' -> (192, 144)."""
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 192x144, got {text!r}") from None


def parse_range(text: str) -> tuple[int, int]:
    """'24-40' -> (24, 40); '32' -> (32, 32)."""
    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise typer.BadParameter(f"expected a frame count N or a range LO-HI such as 24-40, got {text!r}") from None


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output directory (created; re-running resumes)."),
    classes: int = typer.Option(100, help="Number of classes (catalogue order)."),
    videos_per_class: int = typer.Option(24, help="Videos per class."),
    seed: int = typer.Option(0, help="Master seed: same arguments, byte-identical files."),
    size: str = typer.Option("192x144", help="Largest frame size WxH, multiples of 16; videos also use 3/4 of it and 16:9."),
    frames: str = typer.Option("24-40", help="Frames per video: N or LO-HI."),
    codecs: str = typer.Option("vp9,h264,mpeg4", help="Codecs to mix: vp9 (WebM), vp8 (WebM), h264 (MP4), hevc (MP4), mpeg4 (AVI)."),
    splits: str = typer.Option("64,12,24", help="Relative numbers of train,val,test classes."),
    workers: Optional[int] = typer.Option(None, help="Rendering processes (default: all cores)."),
    appearance: int = typer.Option(0, help="Also this many classes named by appearance (\"a red circle spinning\"), for CLIP pretrained with `fsar-data pretrain`."),
    debug: bool = debug_option(),
) -> None:
    """Render the procedural few-shot action benchmark (real video files, split lists, class names)."""
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.synth.generate import SynthConfig, check_output, generate

    try:
        props = tuple(int(v) for v in parse_list(splits))
    except ValueError:
        raise typer.BadParameter(f"expected three numbers such as 64,12,24, got {splits!r}", param_hint="--splits") from None
    with reported(debug, kept="finished videos are kept"):
        config = SynthConfig(
            out=out,
            classes=classes,
            videos_per_class=videos_per_class,
            seed=seed,
            size=parse_size(size),
            frames=parse_range(frames),
            codecs=parse_list(codecs),
            split_proportions=props,
            workers=workers or os.cpu_count() or 1,
            appearance=appearance,
        )
        check_output(config)
        check_writable(out, "OUT")
        with progress_bar("rendering", "videos") as on_progress:
            summary = generate(config, on_progress=on_progress)
    n = summary.classes
    console.print(
        f"synthetic benchmark: {summary.videos} videos ({summary.rendered} rendered, {summary.reused} reused) "
        f"in {summary.seconds:.1f} s; classes train/val/test {n['train']}/{n['val']}/{n['test']}"
    )
    typer.echo(f"dataset written to {summary.out.resolve()}")


@app.command()
def captions(
    out: Path = typer.Argument(..., help="Output folder (created; re-running resumes)."),
    samples: int = typer.Option(20000, help="Clips in all, held-out ones included."),
    held_out: int = typer.Option(1000, help="Clips kept out of training, for retrieval accuracy."),
    frames: int = typer.Option(4, help="Frames per clip."),
    size: str = typer.Option("64x64", help="Frame size WxH (the backbone's input size avoids a resize)."),
    seed: int = typer.Option(0, help="Master seed: same arguments, byte-identical files."),
    debug: bool = debug_option(),
) -> None:
    """Render a captioned pretraining corpus: clips of the synthetic world and what they show."""
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.synth.captions import CorpusConfig, render_corpus

    with reported(debug, kept="finished parts are kept"):
        config = CorpusConfig(out=out, samples=samples, held_out=held_out, frames=frames, size=parse_size(size), seed=seed)
        check_writable(out, "OUT")
        with progress_bar("rendering", "clips") as on_progress:
            summary = render_corpus(config, on_progress=on_progress)
    console.print(f"caption corpus: {summary['clips']} clips ({summary['rendered']} rendered, {summary['reused']} reused) in {summary['seconds']:.1f} s")
    typer.echo(f"corpus written to {Path(summary['out']).resolve()}")


@app.command()
def pretrain(
    corpus: Path = typer.Option(..., help="Folder made by `fsar-data captions`."),
    out: Path = typer.Option(..., help="Run folder (re-running resumes; the weights go to OUT/open_clip_model.safetensors)."),
    backbone: str = typer.Option("fsar-micro-vit", help="open_clip model whose image and text towers are trained from random weights."),
    steps: int = typer.Option(2000, help="Optimiser steps."),
    batch: int = typer.Option(128, help="Clips per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (linear warm-up, then cosine decay)."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay on weight matrices."),
    seed: int = typer.Option(0, help="Initial weights and batch order."),
    save_every: int = typer.Option(100, help="Steps between checkpoints of the training state."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
    debug: bool = debug_option(),
) -> None:
    """Pretrain an open_clip model with the CLIP objective on a caption corpus (CPU is enough for a tiny one)."""
    from fsar.cli.progress import train_bar
    from fsar.pipeline.pretrain import PretrainConfig, describe_attributes, run_pretrain

    with reported(debug, kept="the last checkpoint is kept"):
        config = PretrainConfig(corpus=corpus, out=out, backbone=backbone, steps=steps, batch=batch, lr=lr, warmup=warmup,
                                weight_decay=weight_decay, seed=seed, save_every=save_every, threads=threads)
        with train_bar(steps) as on_step:
            summary = run_pretrain(config, on_step=on_step)
    r = summary["held_out"]
    console.print(f"{summary['backbone']} pretrained for {config.steps} steps; held-out retrieval over {r['clips']} clips: "
                  f"clip->caption {r['image_to_text_top1']:.1f}%, caption->clip {r['text_to_image_top1']:.1f}% (chance {r['chance_top1']:.1f}%)")
    if attributes := describe_attributes(r):
        console.print(f"told apart one attribute at a time: {attributes}")
    typer.echo(f"weights written to {summary['weights']}")


@app.command()
def shard(
    dataset: str = typer.Argument(..., help=f"{', '.join(DATASETS)}."),
    root: Path = typer.Option(..., help="Folder of the videos: a listed <class>/<id> is looked up as ROOT/<class>/<id>.<ext>, then in a folder named for the class at any depth, then by an id unique under ROOT."),
    out: Path = typer.Option(..., help="Output folder for shards, manifest.json and summary.json."),
    splits: Optional[Path] = typer.Option(None, help="Folder with train.txt/val.txt/test.txt (or <dataset>/ sub-folders); default: the data's own or a one-time download."),
    split: str = typer.Option("train,val,test", help="Splits to shard."),
    frames: int = typer.Option(8, help="T: segments per video; val/test store the middle frame of each."),
    train_frames: int = typer.Option(16, help="Frames stored per training video (a multiple of --frames), for temporal jitter."),
    short_side: int = typer.Option(256, help="Resize to this shorter side in pixels (0 keeps the size)."),
    jpeg_quality: int = typer.Option(90, help="JPEG quality of stored frames."),
    decoder: str = typer.Option("auto", help="auto, dali (GPU), dali-cpu (VP8/VP9) or pyav."),
    workers: Optional[int] = typer.Option(None, help="Ray workers (default: one per core, here or of the --address cluster; 1 without --address: one worker process, no Ray)."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join this existing Ray cluster (host:port of its head, ray://host:port through Ray Client, or auto) instead of starting one."),
    shard_size: int = typer.Option(64, help="Videos per shard."),
    max_failure_rate: float = typer.Option(0.05, help="Exit 1 if more than this fraction of listed videos fail (missing included)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-attempt only the videos that failed in finished shards."),
    video_timeout: float = typer.Option(300.0, help="Record a video still decoding after this many seconds as failed and replace its worker (0: no limit)."),
    debug: bool = debug_option(),
) -> None:
    """Decode videos, sample frames uniformly and write WebDataset shards (resumable; bad videos are recorded, not fatal)."""
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.shard.config import ShardConfig
    from fsar.pipeline.shard.run import run_shard_stage

    with reported(debug, kept="finished shards are kept"):
        config = ShardConfig(
            dataset=dataset,
            root=root,
            out=out,
            splits_dir=splits,
            splits=parse_list(split),
            frames=frames,
            train_frames=train_frames,
            short_side=short_side,
            jpeg_quality=jpeg_quality,
            decoder=decoder,
            shard_size=shard_size,
            workers=workers,
            address=address,
            max_failure_rate=max_failure_rate,
            retry_failed=retry_failed,
            video_timeout=video_timeout,
        )
        check_writable(out, "--out")
        with warnings_to_console(), progress_bar("sharding", "videos") as on_progress:
            summary = run_shard_stage(config, on_progress=on_progress)
    print_shard_summary(summary)
    if not summary["passed"]:
        console.print(
            f"[red]failure rate {summary['failure_rate']:.2%} exceeds --max-failure-rate {summary['max_failure_rate']:.2%}[/red]"
        )
        raise typer.Exit(1)


@app.command()
def embed(
    shards: Path = typer.Option(..., help="Output folder of `fsar-data shard` (with manifest.json)."),
    cache: Path = typer.Option(..., help="HDF5 cache to write (part files go to CACHE.parts/)."),
    backbone: str = typer.Option("ViT-B/16", help="open_clip model (OpenAI spellings accepted); fsar-tiny-vit for CPU runs."),
    pretrained: Optional[str] = typer.Option(None, help="Pretrained tag, checkpoint file, or none (random) (default: openai)."),
    activation: str = typer.Option("auto", help="The model's MLP activation: auto (what the weights were trained with: from the tag's open_clip config, or the file), gelu, or quick_gelu (OpenAI's weights, e.g. a local ViT-B-16.pt)."),
    view: str = typer.Option("auto", help="How frames are prepared: clip (open_clip's eval transform), clip-fsar (the official CLIP-FSAR test view: 256x256, centre 224), or auto (clip-fsar on " + _PAPER_VIEW + "; clip otherwise)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)."),
    batch: int = typer.Option(256, help="Frames per forward pass."),
    workers: int = typer.Option(1, help="Ray workers (one per GPU, or CPU workers); 1 runs in this process."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Join this existing Ray cluster (host:port of its head, ray://host:port through Ray Client, or auto)."),
    templates: str = typer.Option("raw,clip-fsar,actionclip", help="Prompt sets for class-name embeddings."),
    max_failure_rate: float = typer.Option(0.0, help="Fraction of shards tolerated that cannot be embedded (unreadable, or their worker died twice): reported and skipped."),
    debug: bool = debug_option(),
) -> None:
    """Embed every stored frame and each split's class names with a frozen open_clip model into HDF5."""
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.embed.config import EmbedConfig
    from fsar.pipeline.embed.run import run_embed_stage

    # RuntimeError: shards that could not be embedded, past --max-failure-rate: the stage failed on its input (exit 1)
    with reported(debug, kept="finished parts are kept", stage_failure=(RuntimeError,)):
        config = EmbedConfig(
            shards=shards, cache=cache, backbone=backbone, pretrained=pretrained, activation=activation, view=view, device=device, precision=precision,
            batch=batch, workers=workers, address=address, templates=parse_list(templates), max_failure_rate=max_failure_rate,
        )
        check_writable(cache.parent, "--cache")
        with warnings_to_console(), progress_bar("embedding", "shards") as on_progress:
            summary = run_embed_stage(config, on_progress=on_progress)
    run = summary["this_run"]
    rate = f"{run['frames_per_second']:.0f} frames/s" if run["frames_per_second"] else "all parts reused"
    if run["frames_per_second"] and run["startup_seconds"] >= 0.1:  # Ray's start, left out of the rate
        rate += f" once started; {run['startup_seconds']:.1f} s to start"
    by = ""
    if run["workers"]:
        by = f" by {run['workers']} worker" + ("s" if run["workers"] > 1 else "")
        if summary["device"] != "cuda":
            by += f" of {run['threads_per_worker']} thread" + ("s" if run["threads_per_worker"] > 1 else "") + (" each" if run["workers"] > 1 else "")
        if run["ray_address"]:
            by += f" on the Ray cluster at {run['ray_address']}"
    console.print(
        f"{summary['backbone']} ({'RANDOM weights' if summary['random_init'] else summary['pretrained']}) on {summary['device']}, "
        f"{summary['precision']}: {run['frames']} frames in {run['seconds']:.1f} s{by} ({rate})"
    )
    for shard, reason in summary["failed_shards"].items():
        console.print(f"[red]skipped shard[/red] {shard}: {reason}")
    typer.echo(f"cache written to {Path(summary['cache']).resolve()}")


def print_shard_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"shards in {summary['out']}")
    for col in ("split", "videos", "ok", "failed", "shards", "frames", "MB"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, c in summary["splits"].items():
        table.add_row(split, str(c["videos"]), str(c["ok"]), str(c["failed"]), str(c["shards"]), str(c["frames"]), f"{c['bytes'] / 1e6:.1f}")
    console.print(table)
    run = summary["this_run"]
    if not run["videos_per_second"]:
        rate = "nothing to do"
    else:  # Ray takes seconds to start and stop; the rate leaves them out
        rate = f"{run['videos_per_second']:.1f} videos/s"
        overhead = [f"{run[k]:.1f} s to {verb}" for k, verb in (("startup_seconds", "start"), ("shutdown_seconds", "stop")) if run[k] >= 0.1]
        if overhead:
            rate += " once started; " + ", ".join(overhead)
    by = ""
    if run["workers"]:
        by = f" by {run['workers']} worker" + ("s" if run["workers"] > 1 else "")
        if run["ray_address"]:
            by += f" of the Ray cluster at {run['ray_address']}"
    console.print(f"this run: {run['videos_processed']} videos in {run['seconds']:.1f} s{by} ({rate}); decoders: {summary['decoders']}")
    if summary["flags"]:  # kept, but a user may want to leave them out (a `truncated` video is sampled from what is there)
        console.print("ok but flagged: " + ", ".join(f"{k}: {v}" for k, v in sorted(summary["flags"].items())) + " (each video's json has its flags)")
    if summary["failures_by_reason"]:
        console.print("failures by reason: " + ", ".join(f"{k}: {v}" for k, v in summary["failures_by_reason"].items()))
        for f in summary["failed_videos"][:5]:
            where = f"{f['label']}/{f['id']}" if f.get("label") else f["id"]
            console.print(f"  {f['split']}/{where}: {f['reason']} {f['detail'][:120]}")
    typer.echo(f"summary written to {Path(summary['out']).resolve() / 'summary.json'}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; `argv` defaults to sys.argv[1:]."""
    app(args=argv, prog_name="fsar-data")


if __name__ == "__main__":
    main()
