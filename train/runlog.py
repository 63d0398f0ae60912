"""Training metrics: CSV files (the record), TensorBoard events and a PNG of the curves."""

from __future__ import annotations

import csv
import sys
from pathlib import Path


class RunLog:
    """Appends metric rows to RUN_DIR/<kind>_metrics.csv and TensorBoard events under RUN_DIR/tensorboard.

    On resume from step `start`, rows after `start` (work redone after the last checkpoint)
    are dropped from the CSVs and TensorBoard is told to purge them.
    """

    def __init__(self, run_dir: Path, start: int = 0) -> None:
        self.run_dir = run_dir
        for kind in ("train", "val"):
            path = self._path(kind)
            if path.exists():
                rows = self.read(kind)
                kept = [r for r in rows if int(r["step"]) <= start]
                if len(kept) != len(rows):
                    self._rewrite(path, kept)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
        except ImportError:  # tensorboard is optional at run time; the CSVs are the record
            print("tensorboard is not installed: metrics go to CSV only (pip install tensorboard)", file=sys.stderr)

    def _path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}_metrics.csv"

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        fields = list(rows[0]) if rows else []
        with open(path, "w", newline="") as f:
            if fields:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)

    def read(self, kind: str) -> list[dict]:
        path = self._path(kind)
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def write(self, kind: str, step: int, metrics: dict[str, float]) -> None:
        path = self._path(kind)
        row = {"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}}
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)
            self.tb.flush()

    def plot(self) -> Path | None:
        """Write RUN_DIR/curves.png: training loss (log scale) and accuracy, validation accuracy,
        against chance for the run's episodes (its config.json's `way`)."""
        try:
            from fsar.train.plotting import chance_line, integer_steps, legend_outside, log_loss_axis, pyplot, save

            plt = pyplot()
        except ImportError:
            print("matplotlib is not installed: no curves.png (pip install matplotlib)", file=sys.stderr)
            return None
        train, val = self.read("train"), self.read("val")
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.6))
        losses = []
        if train:
            steps = [int(r["step"]) for r in train]
            for key in ("loss", "fewshot_loss", "video_text_loss"):
                if key in train[0]:
                    values = [float(r[key]) for r in train]
                    losses += values
                    ax_loss.plot(steps, values, label=key)
            ax_acc.plot(steps, [float(r["accuracy"]) for r in train], label="train episodes", alpha=0.6)
        if val:
            vs = [int(r["step"]) for r in val]
            for key in val[0]:
                if key.startswith("accuracy"):
                    ax_acc.plot(vs, [float(r[key]) for r in val], marker="o", label=f"val {key}")
        way = self._way()
        if way:
            chance_line(ax_acc, way)
        log = log_loss_axis(ax_loss, losses)
        ax_loss.set(xlabel="step", ylabel="loss" + (" (log scale)" if log else ""), title="training loss")
        ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="few-shot accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            integer_steps(ax)
            if ax.lines:
                legend_outside(ax, 8)
        return save(fig, self.run_dir / "curves.png")

    def _way(self) -> int | None:
        """Classes per episode of the run (its config.json), for the chance line."""
        import json

        try:
            return int(json.loads((self.run_dir / "config.json").read_text())["way"])
        except (OSError, ValueError, KeyError):
            return None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
