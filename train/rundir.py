"""A run folder (RUN_DIR) before training starts: what it holds, what a start that wrote no
checkpoint left behind, and the checks a new run or a resume makes there."""

from __future__ import annotations

import json
from pathlib import Path

from fsar.pipeline.atomic import write_text_atomic
from fsar.train.config import TrainConfig


RUN_FILES = ("config.json", "data.json", "backbone.json", "summary.json", "train_metrics.csv", "val_metrics.csv", "curves.png", "text.safetensors")
RUN_FOLDERS = ("checkpoints", "tensorboard", "workers")


def holds_run(run_dir: Path) -> bool:
    """Whether RUN_DIR holds a run: it does once the run's first checkpoint is written
    (checkpoints/last.json). What a start leaves before that (it failed, or was stopped)
    claims nothing: the next start removes it and begins afresh."""
    return (Path(run_dir) / "checkpoints" / "last.json").exists()


def _own_config(run_dir: Path) -> bool:
    """Whether RUN_DIR/config.json is a training run's (not some other file of that name)."""
    try:
        TrainConfig.from_json((run_dir / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False
    return True


def clear_unstarted(run_dir: Path, found: set[str] | None = None) -> None:
    """Remove what a start that wrote no checkpoint left in RUN_DIR: a run's files, where its
    config.json is a run's; and, given the names `found` there before this start began,
    whatever this start made."""
    import shutil

    if holds_run(run_dir) or not run_dir.is_dir():
        return
    names = set(RUN_FILES + RUN_FOLDERS) if _own_config(run_dir) else set()
    if found is not None:
        names |= {p.name for p in run_dir.iterdir()} - found
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def prepare_run(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig:
    """Check RUN_DIR for this start, and on a new run write its config.json and data.json
    (the data's absolute path and identity, see `train.rundata`); returns `config` with
    absolute data paths.

    A run that RUN_DIR holds (see `holds_run`) goes on only with `resume` and the same config:
    only `iterations` may grow, and the data may have moved (it is recognised by its
    identity). Anything an earlier start left before its first checkpoint is removed.
    """
    from fsar.train import rundata

    config = rundata.with_absolute_data(config)
    kind = rundata.data_kind(config)
    saved = run_dir / "config.json"
    if saved.exists() and not _own_config(run_dir):
        raise FileExistsError(f"{saved} is not a training run's config: choose another --out")
    for folder in (run_dir, run_dir / "checkpoints"):  # partial files of a run killed while writing (this one holds RUN_DIR)
        for stale in folder.glob(".*.partial"):
            stale.unlink()
    if holds_run(run_dir):
        step = json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run, trained to step {step}: pass --resume to continue it, or choose another --out")
        old = rundata.with_absolute_data(TrainConfig.from_json(saved.read_text()))
        a, b = json.loads(old.to_json()), json.loads(config.to_json())
        differ = sorted(k for k in a if a[k] != b[k] and k not in ("iterations", kind))
        rec = rundata.recorded(run_dir)
        if a[kind] != b[kind] and rec is None:  # a run from before runs recorded their data: only its path tells
            differ.append(kind)
        if differ:
            raise ValueError(
                f"--resume with a different config: {', '.join(f'{k}: {a[k]!r} -> {b[k]!r}' for k in differ)}; "
                f"pass the run's own settings (they are in {saved}), or delete {run_dir} to start a new run there"
            )
        if a[kind] != b[kind]:  # the data moved: the same data, by its identity
            rundata.check_same(kind, b[kind], rundata.identity(kind, b[kind]), rec["identity"], rec["path"])
            rundata.record(config, run_dir, rec["identity"])
        if a != b:
            write_text_atomic(saved, config.to_json() + "\n")
        return config
    if resume and not saved.exists():
        raise FileNotFoundError(f"nothing to resume: {run_dir} holds no run (no checkpoint); leave out --resume to start one")
    ident = rundata.identity(kind, getattr(config, kind)) if getattr(config, kind) else None  # reads the data: a damaged cache stops the run here
    clear_unstarted(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, config.to_json() + "\n")
    if ident is not None:
        rundata.record(config, run_dir, ident)
    return config
