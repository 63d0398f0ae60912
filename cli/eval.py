"""`fsar-eval`: score few-shot methods on fixed, seeded test episodes."""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer

from fsar.cli.errors import debug_option, reported
from fsar.cli.progress import console, progress_bar

app = typer.Typer(name="fsar-eval", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A training run (scored from its best checkpoint), or where baseline results go."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache: of the frozen-backbone baselines (--method), or a run's own cache where it is now (checked to be the data it trained on)."),
    shards: Optional[Path] = typer.Option(None, help="A finetune or peft run's shard folder where it is now (checked to be the data it trained on)."),
    method: Optional[str] = typer.Option(None, help="Frozen-backbone baseline instead of a run: protonet, otam or zero-shot."),
    split: str = typer.Option("test", help="Split to draw episodes from."),
    episodes: int = typer.Option(10000, help="Number of episodes (fixed by the seed)."),
    way: int = typer.Option(5, help="Classes per episode."),
    shot: int = typer.Option(1, help="Support videos per class."),
    query: int = typer.Option(1, help="Query videos per class."),
    seed: int = typer.Option(0, help="Episode seed: every method and run is scored on the same tasks."),
    prompts: str = typer.Option("clip-fsar", help="Prompt set for zero-shot."),
    fusion_beta: Optional[str] = typer.Option(None, help="A run's text/few-shot fusion weight in [0, 1], or 'none' for few-shot logits alone (default: the run's)."),
    checkpoint: str = typer.Option("best", help="A run's checkpoint: best (on val), last, or best-on-test (runs trained with --set track_test=true; for comparison with published numbers, which the official code selects on the test episodes)."),
    protocol: str = typer.Option("few-shot", help="few-shot (episodes), zero-shot (every video of --split among all its classes, by video-text similarity) or supervised (a run's held-out training videos among the training classes)."),
    workers: int = typer.Option(1, help="A run's evaluation shared among Ray Train workers (videos to encode, episodes to score); the result is exactly one process's. 1 without --address: this process alone."),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Run the workers on this existing Ray cluster (host:port of its head, ray://host:port, or auto); the run and its data must be on storage every node shares."),
    gpus_per_worker: Optional[float] = typer.Option(None, help="GPUs per worker (default: 1 where the Ray cluster has GPUs, else 0)."),
    debug: bool = debug_option(),
) -> None:
    """Score a training run, or a frozen backbone's baselines on the embedding cache, on fixed seeded episodes."""
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.baselines import evaluate_frozen
    from fsar.train.results import write_eval

    from contextlib import ExitStack

    from fsar.pipeline.atomic import check_writable
    from fsar.pipeline.lock import hold

    suffix = ""
    t0 = time.perf_counter()
    with reported(debug), ExitStack() as held:
        config = EpisodeConfig(way=way, shot=shot, query=query, episodes=episodes, seed=seed)
        check_writable(run_dir, "RUN_DIR")  # before minutes of evaluation, not after
        held.enter_context(hold(run_dir, "fsar-eval"))  # a run still training there, or another fsar-eval, is refused
        if method is not None:
            if workers > 1 or address:
                raise ValueError("--workers and --address share a run's evaluation; the frozen baselines (--method) run in this process")
            if cache is None:
                raise ValueError("--method evaluates a frozen backbone and needs --cache CACHE.h5")
            if shards is not None:
                raise ValueError("--shards is a run's data; a frozen backbone is evaluated on --cache")
            with progress_bar(f"evaluating {method}", "episodes" if protocol == "few-shot" else "videos") as on_progress:
                on_progress(0, None)  # the baselines report no progress of their own: the time elapsed shows
                if protocol == "few-shot":
                    result, correct = evaluate_frozen(cache, method, split, config, prompts)
                elif protocol == "zero-shot" and method == "zero-shot":
                    from fsar.train.baselines import evaluate_frozen_classification

                    result, correct = evaluate_frozen_classification(cache, split, prompts)
                else:
                    raise ValueError(f"a frozen backbone has the few-shot protocol, and the zero-shot protocol with --method zero-shot; got --protocol {protocol} --method {method}")
                n = correct.shape[0]
                on_progress(n, n)
        else:
            from fsar.train.evaluate_run import KEEP, evaluate_run

            beta = KEEP
            if fusion_beta is not None:
                beta = None if fusion_beta.lower() == "none" else _float(fusion_beta)
                suffix = "-nofusion" if beta is None else f"-beta{beta:g}"
            if checkpoint != "best":  # results of another checkpoint go beside those of the best, not over them
                suffix += f"-{checkpoint}"
            from fsar.train.workers import WorkersConfig, evaluate_on_workers

            parallel = WorkersConfig(workers, address, gpus_per_worker)
            with phases() as on_progress:
                if parallel.on_ray:
                    result, correct = evaluate_on_workers(run_dir, parallel, on_progress, split=split, config=config, fusion_beta=beta, checkpoint=checkpoint,
                                                          protocol=protocol, cache=cache, shards=shards)
                else:
                    result, correct = evaluate_run(run_dir, split, config, beta, checkpoint, protocol=protocol, cache=cache, shards=shards, on_progress=on_progress)
        path = write_eval(run_dir, {**result, "seconds": round(time.perf_counter() - t0, 3)}, correct, suffix)
    note = " (RANDOM backbone weights)" if result["random_init_backbone"] else ""
    if result.get("protocol", "few-shot") != "few-shot":
        k = min(5, result["classes"])
        console.print(
            f"{result['method']} {result['protocol']} on {result['split']}: {result['videos']} videos among {result['classes']} classes, "
            f"top-1 {result['accuracy']:.2f} +- {result['ci95']:.2f}%, top-{k} {result[f'top{k}_accuracy']:.2f} +- {result[f'top{k}_ci95']:.2f}%{note}"
        )
        if "accuracy_by_regime" in result:
            console.print(_regimes(result["accuracy_by_regime"]))
        typer.echo(f"results written to {path.resolve()}")
        return
    label = result["method"] + (f" ({result['mode']}, fusion beta {result['fusion_beta']})" if "mode" in result else "")
    console.print(
        f"{label} on {split}, {way}-way {shot}-shot, {episodes} episodes (seed {seed}): "
        f"{result['accuracy']:.2f} +- {result['ci95']:.2f}%{note}"
    )
    if "accuracy_by_regime" in result:
        console.print(_regimes(result["accuracy_by_regime"]))
    if "reversal_pair_2way" in result:
        p = result["reversal_pair_2way"]
        other = result["accuracy_other_classes"]
        others = f"{other:.2f}% on the others" if other is not None else "no other classes in this split"
        console.print(
            f"time-reversal pairs: {result['accuracy_reversal_pair_classes']:.2f}% on their classes, {others}; "
            f"2-way pair episodes {p['accuracy']:.2f} +- {p['ci95']:.2f}%"
        )
    typer.echo(f"results written to {path.resolve()}")


def _regimes(r: dict) -> str:
    return f"classes named by appearance: {r['appearance']:.2f}%; named by motion: {r['motion']:.2f}%"


@contextmanager
def phases() -> Iterator[Callable[[str, int, int], None]]:
    """Yield `on_progress(phase, done, total)` showing each phase ("videos" encoded, "episodes"
    scored) as its own progress bar, or progress lines where stderr is not a terminal."""
    with ExitStack() as stack:
        current: dict = {}

        def update(phase: str, done: int, total: int) -> None:
            if current.get("phase") != phase:
                if "stack" in current:
                    current["stack"].close()
                current["stack"] = inner = ExitStack()
                current["phase"] = phase
                current["update"] = inner.enter_context(progress_bar("encoding" if phase == "videos" else "scoring", phase))
            current["update"](done, total)

        stack.callback(lambda: current["stack"].close() if "stack" in current else None)
        yield update


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--fusion-beta must be a number in [0, 1] or 'none', got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="fsar-eval")


if __name__ == "__main__":
    main()
