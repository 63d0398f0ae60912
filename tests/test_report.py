"""`fsar-report RUN_DIR`, and what its plots show: chance lines, a log-scale loss, legends off the
data, nothing cut off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.image
import pytest
from typer.testing import CliRunner

from fsar.train.configs import get_config
from fsar.train.trainer import train


@pytest.fixture(scope="module")
def evaluated_run(tiny_chain, tmp_path_factory) -> Path:
    """A miniature 3-way run, evaluated at 1 and 2 shots by `fsar-eval`."""
    from fsar.cli.eval import app

    run = tmp_path_factory.mktemp("report") / "run"
    train(dataclasses.replace(get_config("tiny"), cache=str(tiny_chain["cache"]), way=3, shot=1, query=1, threads=1), run)
    for shot in ("1", "2"):
        result = CliRunner().invoke(app, [str(run), "--way", "3", "--shot", shot, "--episodes", "40"])
        assert result.exit_code == 0, result.output
    return run


class Figures:
    """Every figure a plot function saves, checked as it is written."""

    def __init__(self) -> None:
        self.saved: dict[str, object] = {}

    def wrap(self, save):
        def capture(fig, out):
            fig.tight_layout()  # as a save does first: the extent is measured on the layout saved
            fig.canvas.draw()
            needed = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: every artist, titles and legends too
            axes = [(ax.get_title(), ax.get_yscale(), [line.get_label() for line in ax.get_lines()], _legend_outside(ax)) for ax in fig.axes]
            dpi = fig.dpi
            path = save(fig, out)
            height, width = matplotlib.image.imread(path).shape[:2]
            self.saved[Path(out).name] = {"axes": axes, "fits": width >= needed.width * dpi - 2 and height >= needed.height * dpi - 2}
            return path

        return capture


def _legend_outside(ax) -> bool | None:
    legend = ax.get_legend()
    if legend is None:
        return None
    return not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_fsar_report_on_one_run_names_the_dataset_and_plots_what_a_reader_needs(evaluated_run, monkeypatch):
    import fsar.train.report
    from fsar.cli.reproduce import report_app

    figures = Figures()
    monkeypatch.setattr(fsar.train.report, "save", figures.wrap(fsar.train.report.save))
    result = CliRunner().invoke(report_app, [str(evaluated_run)])
    assert result.exit_code == 0, result.output
    text = (evaluated_run / "REPORT.md").read_text()
    assert text.splitlines()[0] == "# fsar results: synth, the built-in synthetic benchmark"
    assert "## 3-way 1-shot (40 test episodes)" in text and "## 3-way 2-shot (40 test episodes)" in text
    assert set(figures.saved) == {"curves.png", "shots.png", "confusion.png", "reversal.png"}
    assert all(f["fits"] for f in figures.saved.values()), {k: f["fits"] for k, f in figures.saved.items()}  # nothing cut off

    accuracy, loss = figures.saved["curves.png"]["axes"]
    assert "chance, 3-way (33.3%)" in accuracy[2] and loss[1] == "log"
    (shots,) = figures.saved["shots.png"]["axes"]
    assert "chance, 3-way (33.3%)" in shots[2] and shots[3] is True  # the legend beside the lines, not over them
    (reversal,) = figures.saved["reversal.png"]["axes"]
    assert {"chance, 3-way (33.3%)", "chance, 2-way (50.0%)"} <= set(reversal[2]) and reversal[3] is True  # not over the bars


def test_a_runs_own_curves_show_chance_and_a_log_loss(evaluated_run, monkeypatch):
    import fsar.train.plotting
    from fsar.train.runlog import RunLog

    figures = Figures()
    monkeypatch.setattr(fsar.train.plotting, "save", figures.wrap(fsar.train.plotting.save))
    log = RunLog(evaluated_run, 4)
    log.plot()
    log.close()
    loss, accuracy = figures.saved["curves.png"]["axes"]
    assert loss[1] == "log" and "chance, 3-way (33.3%)" in accuracy[2] and figures.saved["curves.png"]["fits"]


def test_a_long_title_and_long_class_names_are_not_cut_off(tmp_path, monkeypatch):
    import fsar.train.report
    from fsar.train.report import Row, plot_confusion

    figures = Figures()
    monkeypatch.setattr(fsar.train.report, "save", figures.wrap(fsar.train.report.save))
    classes = [f"pretending to put something {i} next to something else" for i in range(6)]
    result = {"way": 5, "shot": 1, "confusion": {"classes": classes, "counts": [[int(i == j) * 9 + 1 for j in range(6)] for i in range(6)]}}
    plot_confusion(Row("clip-fsar (text fusion, beta 0.9)", "clip-fsar", "adapter", result, tmp_path / "eval.json", None), tmp_path / "confusion.png")
    assert figures.saved["confusion.png"]["fits"]
