"""What every fsar plot shares: the file-only backend, a layout that cuts nothing off, legends
off the data, chance lines on accuracy axes, log-scale loss axes."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path) -> Path:
    """Lay out, write and close a figure; returns its path. The saved area grows to hold every
    title, tick label and legend (legends may sit outside the axes)."""
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.15)
    pyplot().close(fig)
    return out


def legend_outside(ax, fontsize: int = 7) -> None:
    """The axes' legend to their right, where it covers no line or bar."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def chance_line(ax, way: int, style: str = ":") -> None:
    """A labelled horizontal line at chance accuracy of a `way`-way episode, 100/way %."""
    ax.axhline(100 / way, color="grey", lw=1.0, ls=style, label=f"chance, {way}-way ({100 / way:.1f}%)", zorder=0)


def log_loss_axis(ax, values) -> bool:
    """Put the loss on a log scale (it falls over orders of magnitude) where every value is
    positive, with plain tick labels (2, 5, 10, 20); returns whether it did."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = [v for v in values if v == v]  # not NaN
    if not values or min(values) <= 0:
        return False
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return True


def integer_steps(ax) -> None:
    """Whole numbers only on a step axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
