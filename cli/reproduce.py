"""`fsar-reproduce` (the whole chain, as `make reproduce` runs it) and `fsar-report` (its report)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from fsar.cli.errors import debug_option, reported
from fsar.cli.progress import console, progress_bar, train_bar, warnings_to_console
from fsar.pipeline.datasets import DATASETS

app = typer.Typer(name="fsar-reproduce", add_completion=False, pretty_exceptions_enable=False)
report_app = typer.Typer(name="fsar-report", add_completion=False, pretty_exceptions_enable=False)


def _names(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


@app.command()
def reproduce(
    dataset: str = typer.Option("synth", help="synth (rendered here), or " + ", ".join(d for d in DATASETS if d != "synth") + " with --root."),
    root: Optional[Path] = typer.Option(None, help="Video root of a real dataset (synth: where it is rendered, default DATA/synth)."),
    splits: Optional[Path] = typer.Option(None, help="Split lists of a real dataset (default: downloaded once)."),
    data: Path = typer.Option(Path("data"), help="Where shards and the embedding cache go."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder (default DATA/<dataset>-shards)."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache (default DATA/<dataset>-cache.h5)."),
    results: Path = typer.Option(Path("results"), help="Evaluations, runs, timings and REPORT.md."),
    backbone: str = typer.Option("fsar-micro-vit", help="open_clip model of the cache (ViT-B/16 for real datasets)."),
    pretrained: Optional[str] = typer.Option(None, help="Weights: a tag, a checkpoint file, none (random), or corpus (pretrained here on captioned synthetic clips; synth only) (default: corpus for synth with an fsar-* backbone, none for other datasets with one, else the model's default tag)."),
    appearance: int = typer.Option(24, help="synth: classes named by appearance added to the 100 motion classes."),
    pretrain_steps: int = typer.Option(2000, help="Steps of the pretraining (--pretrained corpus)."),
    activation: str = typer.Option("auto", help="The backbone's MLP activation: auto (what the weights were trained with), gelu, or quick_gelu (OpenAI's weights in a local file)."),
    short_side: Optional[int] = typer.Option(None, help="Stored frame short side (default: 144 for synth, 256 otherwise)."),
    methods: Optional[str] = typer.Option(None, help="Methods trained in adapter mode on the cache, comma-separated (default: each method whose head declares reproduce_mode adapter: clip-fsar, ma-clip, actionclip)."),
    peft_methods: Optional[str] = typer.Option(None, help="Methods trained in peft mode on the shards, comma-separated; '' for none (default: each method whose head declares reproduce_mode peft: vita-clip)."),
    shots: str = typer.Option("1,2,5", help="Shots to score, comma-separated; each method trains once, at the first, as the paper's 5-shot numbers come from 1-shot training."),
    per_shot_training: bool = typer.Option(False, help="Ours: train clip-fsar and ma-clip once per shot instead."),
    ablations: bool = typer.Option(True, help="Also train the paper's ablations (CLIP-FSAR without prototype modulation) once, at the first shot."),
    track_test: bool = typer.Option(True, help="Also keep and score each run's checkpoint best on the test episodes (labelled; the main rows are selected on val)."),
    episodes: int = typer.Option(10000, help="Test episodes per setting."),
    config: Optional[str] = typer.Option(None, help="Named training config (default: the dataset's)."),
    peft_config: Optional[str] = typer.Option(None, help="Named training config of the peft methods (default: <config>-peft where it exists, else --config)."),
    set_: List[str] = typer.Option([], "--set", help="Override every training config: --set key=value."),
    workers: Optional[int] = typer.Option(None, help="Ray workers of the shard stage (default: all cores)."),
    debug: bool = debug_option(),
) -> None:
    """Run data -> shards -> cache -> baselines and trained methods -> evaluation -> RESULTS/REPORT.md, reusing finished stages."""
    from fsar.pipeline.atomic import check_writable
    from fsar.train.reproduce import ReproduceConfig
    from fsar.train.reproduce import reproduce as run

    with reported(debug, kept="finished stages are kept"):
        if pretrained is None:
            from fsar.pipeline.backbones import default_pretrained

            if backbone.startswith("fsar-"):
                pretrained = "corpus" if dataset == "synth" else "none"
            else:
                pretrained = default_pretrained(backbone)
        cfg = ReproduceConfig(
            dataset=dataset,
            root=root,
            splits=splits,
            data=data,
            shards=shards,
            cache=cache,
            results=results,
            backbone=backbone,
            pretrained=pretrained,
            activation=activation,
            synth_appearance=appearance if dataset == "synth" else 0,
            pretrain_steps=pretrain_steps,
            short_side=short_side or (144 if dataset == "synth" else 256),
            **({} if methods is None else {"methods": _names(methods)}),
            **({} if peft_methods is None else {"peft_methods": _names(peft_methods)}),
            shots=tuple(int(s) for s in shots.split(",") if s.strip()),
            per_shot_training=per_shot_training,
            track_test=track_test,
            ablations=ablations,
            episodes=episodes,
            train_config=config,
            peft_config=peft_config,
            train_overrides=tuple(set_),
            workers=workers or os.cpu_count() or 1,
        )
        check_writable(cfg.data, "--data")
        check_writable(cfg.results, "--results")
        with warnings_to_console():
            path = run(cfg, progress=progress_bar, train_progress=train_bar, log=console.print)
    typer.echo(f"report: {path.resolve()}")


@report_app.command()
def report(
    results: Path = typer.Argument(Path("results"), help="The results folder of `make reproduce`, or one training run's folder (its evaluations by `fsar-eval RUN_DIR`)."),
    debug: bool = debug_option(),
) -> None:
    """Regenerate REPORT.md and plots/ in RESULTS (or RUN_DIR) from the JSON outputs."""
    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.lock import hold
    from fsar.train.report import write_report

    with reported(debug):
        if not results.is_dir():
            raise FileNotFoundError(f"no folder {results}: pass the results folder of `fsar-reproduce`, or a run folder of `fsar-train`")
        check_writable(results, "RESULTS")
        with hold(results, "fsar-report"):
            path = write_report(results)
    typer.echo(f"report: {path.resolve()}")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="fsar-reproduce")


def report_main(argv: list[str] | None = None) -> None:
    report_app(args=argv, prog_name="fsar-report")
