"""`fsar-eval`: score few-shot methods on fixed, seeded test episodes."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.progress import console

app = typer.Typer(name="fsar-eval", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Where the results go (eval-<split>-<way>w<shot>s-<method>.json and per-episode CSV)."),
    cache: Path = typer.Option(..., help="Embedding cache from `fsar-data embed`."),
    method: str = typer.Option("otam", help="Frozen-backbone baseline: protonet, otam or zero-shot."),
    split: str = typer.Option("test", help="Split to draw episodes from."),
    episodes: int = typer.Option(10000, help="Number of episodes (fixed by the seed)."),
    way: int = typer.Option(5, help="Classes per episode."),
    shot: int = typer.Option(1, help="Support videos per class."),
    query: int = typer.Option(1, help="Query videos per class."),
    seed: int = typer.Option(0, help="Episode seed: every method and run is scored on the same tasks."),
    prompts: str = typer.Option("clip-fsar", help="Prompt set for zero-shot."),
) -> None:
    """Evaluate a frozen backbone's few-shot baselines on the embedding cache (no training run needed)."""
    from train.episodes import EpisodeConfig
    from train.evaluate import evaluate_frozen, write_eval

    try:
        config = EpisodeConfig(way=way, shot=shot, query=query, episodes=episodes, seed=seed)
        result, correct = evaluate_frozen(cache, method, split, config, prompts)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    path = write_eval(run_dir, result, correct)
    note = " (RANDOM backbone weights)" if result["random_init_backbone"] else ""
    console.print(
        f"{method} on {split}, {way}-way {shot}-shot, {episodes} episodes (seed {seed}): "
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


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="fsar-eval")


if __name__ == "__main__":
    main()
