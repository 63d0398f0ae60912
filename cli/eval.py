"""`fsar-eval`: score few-shot methods on fixed, seeded test episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.progress import console

app = typer.Typer(name="fsar-eval", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A training run (scored from its best checkpoint), or where baseline results go."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache, for the frozen-backbone baselines (--method)."),
    method: Optional[str] = typer.Option(None, help="Frozen-backbone baseline instead of a run: protonet, otam or zero-shot."),
    split: str = typer.Option("test", help="Split to draw episodes from."),
    episodes: int = typer.Option(10000, help="Number of episodes (fixed by the seed)."),
    way: int = typer.Option(5, help="Classes per episode."),
    shot: int = typer.Option(1, help="Support videos per class."),
    query: int = typer.Option(1, help="Query videos per class."),
    seed: int = typer.Option(0, help="Episode seed: every method and run is scored on the same tasks."),
    prompts: str = typer.Option("clip-fsar", help="Prompt set for zero-shot."),
    fusion_beta: Optional[str] = typer.Option(None, help="A run's text/few-shot fusion weight in [0, 1], or 'none' for few-shot logits alone (default: the run's)."),
    checkpoint: str = typer.Option("best", help="A run's checkpoint: best (on val) or last."),
    protocol: str = typer.Option("few-shot", help="few-shot (episodes), zero-shot (every video of --split among all its classes, by video-text similarity) or supervised (a run's held-out training videos among the training classes)."),
) -> None:
    """Score a training run, or a frozen backbone's baselines on the embedding cache, on fixed seeded episodes."""
    from train.episodes import EpisodeConfig
    from train.evaluate import evaluate_frozen, write_eval

    suffix = ""
    try:
        config = EpisodeConfig(way=way, shot=shot, query=query, episodes=episodes, seed=seed)
        if method is not None:
            if cache is None:
                raise ValueError("--method evaluates a frozen backbone and needs --cache CACHE.h5")
            if protocol == "few-shot":
                result, correct = evaluate_frozen(cache, method, split, config, prompts)
            elif protocol == "zero-shot" and method == "zero-shot":
                from train.evaluate import evaluate_frozen_classification

                result, correct = evaluate_frozen_classification(cache, split, prompts)
            else:
                raise ValueError(f"a frozen backbone has the few-shot protocol, and the zero-shot protocol with --method zero-shot; got --protocol {protocol} --method {method}")
        else:
            from train.evaluate_run import KEEP, evaluate_run

            beta = KEEP
            if fusion_beta is not None:
                beta = None if fusion_beta.lower() == "none" else _float(fusion_beta)
                suffix = "-nofusion" if beta is None else f"-beta{beta:g}"
            result, correct = evaluate_run(run_dir, split, config, beta, checkpoint, protocol=protocol)
    except (ValueError, KeyError, FileNotFoundError, OSError, NotImplementedError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    path = write_eval(run_dir, result, correct, suffix)
    note = " (RANDOM backbone weights)" if result["random_init_backbone"] else ""
    if result.get("protocol", "few-shot") != "few-shot":
        k = min(5, result["classes"])
        console.print(
            f"{result['method']} {result['protocol']} on {result['split']}: {result['videos']} videos among {result['classes']} classes, "
            f"top-1 {result['accuracy']:.2f} +- {result['ci95']:.2f}%, top-{k} {result[f'top{k}_accuracy']:.2f} +- {result[f'top{k}_ci95']:.2f}%{note}"
        )
        typer.echo(f"results written to {path.resolve()}")
        return
    label = result["method"] + (f" ({result['mode']}, fusion beta {result['fusion_beta']})" if "mode" in result else "")
    console.print(
        f"{label} on {split}, {way}-way {shot}-shot, {episodes} episodes (seed {seed}): "
        f"{result['accuracy']:.2f} +- {result['ci95']:.2f}%{note}"
    )
    if "reversal_pair_2way" in result:
        p = result["reversal_pair_2way"]
        other = result["accuracy_other_classes"]
        others = f"{other:.2f}% on the others" if other is not None else "no other classes in this split"
        console.print(
            f"time-reversal pairs: {result['accuracy_reversal_pair_classes']:.2f}% on their classes, {others}; "
            f"2-way pair episodes {p['accuracy']:.2f} +- {p['ci95']:.2f}%"
        )
    typer.echo(f"results written to {path.resolve()}")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--fusion-beta must be a number in [0, 1] or 'none', got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="fsar-eval")


if __name__ == "__main__":
    main()
