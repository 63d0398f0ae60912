"""`fsar-data`: dataset commands (synthetic benchmark; sharding and embedding arrive with their stages)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from cli.progress import console, progress_bar

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
    workers: Optional[int] = typer.Option(None, help="Rendering processes [default: all cores]."),
) -> None:
    """Render the procedural few-shot action benchmark (real video files, split lists, class names)."""
    from pipeline.synth.generate import SynthConfig, check_output, generate

    try:
        props = tuple(int(v) for v in parse_list(splits))
    except ValueError:
        raise typer.BadParameter(f"expected three numbers such as 64,12,24, got {splits!r}", param_hint="--splits") from None
    try:
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
        )
        check_output(config)
        with progress_bar("rendering", "videos") as on_progress:
            summary = generate(config, on_progress=on_progress)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    n = summary.classes
    console.print(
        f"synthetic benchmark: {summary.videos} videos ({summary.rendered} rendered, {summary.reused} reused) "
        f"in {summary.seconds:.1f} s; classes train/val/test {n['train']}/{n['val']}/{n['test']}"
    )
    typer.echo(f"dataset written to {summary.out.resolve()}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; `argv` defaults to sys.argv[1:]."""
    app(args=argv, prog_name="fsar-data")


if __name__ == "__main__":
    main()
