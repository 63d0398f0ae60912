"""`fsar-train`: episodic training of a few-shot head, on the embedding cache or the shards."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from fsar.cli.errors import debug_option, reported
from fsar.cli.progress import console
from fsar.train.configs import CONFIGS

app = typer.Typer(name="fsar-train", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def train(
    out: Path = typer.Option(..., help="Run directory (config, checkpoints, metrics, curves)."),
    mode: Optional[str] = typer.Option(None, help="adapter (cached embeddings, backbone never runs), finetune (shards; the visual encoder trains) or peft (shards; frozen encoder, the method's adapters or prompts train). Default: the method's own."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache from `fsar-data embed` (adapter mode)."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder from `fsar-data shard` (finetune and peft modes)."),
    method: Optional[str] = typer.Option(None, help="Method (head): clip-fsar, ma-clip, actionclip, vita-clip or any registered one; each declares the modes it trains in."),
    way: Optional[int] = typer.Option(None, help="Classes per episode."),
    shot: Optional[int] = typer.Option(None, help="Support videos per class."),
    config: str = typer.Option("synth", help="Named config: " + ", ".join(CONFIGS) + "."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field: --set key=value (repeatable)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (with any number of workers)."),
    workers: int = typer.Option(1, help="Data-parallel workers on Ray Train (DDP: gloo on CPU, NCCL on GPU), each training its share of every step's episodes; 1 without --address: this process alone, no Ray."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Run the workers on this existing Ray cluster (host:port of its head, ray://host:port through Ray Client, or auto); RUN_DIR and the data must be on storage every node shares."),
    gpus_per_worker: Optional[float] = typer.Option(None, help="GPUs per worker (default: 1 where the Ray cluster has GPUs, else 0)."),
    cpus_per_worker: Optional[int] = typer.Option(None, help="CPU cores per worker, its torch threads (default: 1 with GPUs, else the cluster's cores / workers)."),
    max_failures: int = typer.Option(3, help="Restarts of the workers after one dies, each from the last checkpoint."),
    debug: bool = debug_option(),
) -> None:
    """Train a few-shot head episodically; the best checkpoint on val is kept for `fsar-eval RUN_DIR`."""
    from fsar.cli.progress import train_bar
    from fsar.train.config import apply_overrides
    from fsar.train.configs import get_config
    from fsar.train.trainer import train as run_training

    with reported(debug):
        cfg = get_config(config, method)
        direct = {"mode": mode, "way": way, "shot": shot, "cache": str(cache) if cache else None, "shards": str(shards) if shards else None}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in direct.items() if v is not None})
        cfg = apply_overrides(cfg, set_)
        if cfg.mode == "adapter" and not cfg.cache:
            raise ValueError("adapter mode needs --cache CACHE.h5")
        if cfg.mode in ("finetune", "peft") and not cfg.shards:
            raise ValueError(f"{cfg.mode} mode needs --shards OUT")
        from fsar.train.workers import WorkersConfig, train_on_workers

        parallel = WorkersConfig(workers, address, gpus_per_worker, cpus_per_worker, max_failures)
        where = f" on {workers} Ray Train workers" + (f" of the cluster at {address}" if address else "") if parallel.on_ray else ""
        console.print(f"training {cfg.method} ({cfg.mode}) {cfg.way}-way {cfg.shot}-shot, config {config}, {cfg.iterations} steps{where} -> {out}")
        try:
            with train_bar(cfg.iterations) as on_step:
                if parallel.on_ray:
                    summary = train_on_workers(cfg, out, parallel, resume=resume, on_step=on_step)
                else:
                    summary = run_training(cfg, out, resume=resume, on_step=on_step)
        except KeyboardInterrupt:
            if debug:
                raise
            interrupted(out, resume_command(out, mode, cache, shards, method, way, shot, config, set_))
    p = summary["parameters"]
    console.print(
        f"best val accuracy {summary['best_val_accuracy']:.2f}% at step {summary['best_step']}; "
        f"{p['trainable']:,} trainable of {p['total']:,} parameters; {summary['train_seconds']:.1f} s, "
        f"{summary['episodes_per_second']} episodes/s"
    )
    typer.echo(f"run written to {out.resolve()}")


def resume_command(out: Path, mode, cache, shards, method, way, shot, config: str, set_: list[str]) -> str:
    """The command that continues this run: its own options (paths absolute, so that it works
    from any directory) and --resume."""
    argv = ["fsar-train", "--out", str(out.resolve()), "--config", config]
    for name, value in (("--mode", mode), ("--cache", cache), ("--shards", shards), ("--method", method), ("--way", way), ("--shot", shot)):
        if value is not None:
            argv += [name, str(value.resolve()) if isinstance(value, Path) else str(value)]
    for item in set_:
        argv += ["--set", item]
    return shlex.join(argv + ["--resume"])


def interrupted(out: Path, command: str) -> None:
    """Stop after Ctrl-C, saying what the run kept and how to go on, with the shell's code for it, 130."""
    import json

    last = out / "checkpoints" / "last.json"
    if last.exists():
        step = json.loads(last.read_text())["step"]
        console.print(f"interrupted: the checkpoint at step {step} is kept in {out.resolve()}; continue from it with:", markup=False, highlight=False)
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("interrupted before the run's first checkpoint: nothing was kept; run the same command again to start it", markup=False, highlight=False)
    raise typer.Exit(130)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="fsar-train")


if __name__ == "__main__":
    main()
