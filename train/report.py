"""RESULTS/REPORT.md and its plots, regenerated from the JSON and CSV outputs of a reproduce run.

Nothing in the report is typed by hand: tables come from the evaluation JSONs (baselines and
runs), train times and parameter counts from the runs, stage timings from timings.json.
`fsar-report RESULTS` rewrites it at any time.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fsar.pipeline.atomic import write_text_atomic
from fsar.train.plotting import chance_line, integer_steps, legend_outside, log_loss_axis, pyplot, save
from fsar.train.results import RUNS_DIR, is_run_dir, iter_eval_files



@dataclass
class Row:
    """One evaluation: a method (or variant) in one setting."""

    label: str
    method: str
    mode: str
    result: dict
    path: Path
    run_dir: Path | None

    @property
    def trainable(self) -> int:
        p = self.result.get("parameters") or {}
        return int(p.get("trainable", 0))

    @property
    def train_seconds(self) -> float | None:
        """The whole run's training time (the run's summary), not the time at its best checkpoint."""
        if self.run_dir is not None and (self.run_dir / "summary.json").exists():
            return json.loads((self.run_dir / "summary.json").read_text())["train_seconds"]
        return None


def _variant(path: Path) -> str:
    label = ""
    name = path.name
    if name.endswith("-best-on-test.json"):
        label, name = " (checkpoint best on test, as the official code selects)", name.replace("-best-on-test.json", ".json")
    elif name.endswith("-last.json"):
        label, name = " (last checkpoint)", name.replace("-last.json", ".json")
    m = re.search(r"-(beta[\d.]+|nofusion)\.json$", name)
    if not m:
        return label
    return (" (no text fusion)" if m.group(1) == "nofusion" else f" (text fusion, beta {m.group(1)[4:]})") + label


def _ablation(run: Path, method: str) -> str:
    """", <label>" when the run's config holds one of its method's paper ablations (`MethodSpec.ablations`)."""
    from fsar.train.heads import HEADS

    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    head = HEADS.get(method)
    for label, values in (head.spec.ablations if head else {}).items():
        if all(cfg.get(k) == v for k, v in values.items()):
            return f", {label}"
    return ""


def load_rows(results: Path) -> list[Row]:
    """Every evaluation JSON under RESULTS/baselines and RESULTS/runs/*, or of one run (RESULTS is a run's folder)."""
    single = is_run_dir(results)
    rows = []
    for path in iter_eval_files(results):
        r = json.loads(path.read_text())
        run_dir = path.parent if single or path.parent.parent.name == RUNS_DIR else None
        mode = r.get("mode", "frozen")
        label = r["method"] + _ablation(run_dir, r["method"]) + _variant(path) if run_dir else f"{r['method']} (frozen backbone)"
        rows.append(Row(label, r["method"], mode, r, path, run_dir))
    return rows


def _acc(r: dict) -> str:
    return f"{r['accuracy']:.2f} ± {r['ci95']:.2f}"


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _settings(rows: list[Row]) -> list[tuple[int, int]]:
    return sorted({(r.result["way"], r.result["shot"]) for r in rows if r.result.get("protocol", "few-shot") == "few-shot"})


def _few_shot(rows: list[Row], way: int, shot: int) -> list[Row]:
    out = [r for r in rows if r.result.get("protocol", "few-shot") == "few-shot" and r.result["way"] == way and r.result["shot"] == shot and r.result["split"] == "test"]
    return sorted(out, key=lambda r: (r.mode != "frozen", r.label))


def _run_way(run: Path) -> int | None:
    try:
        return int(json.loads((run / "config.json").read_text())["way"])
    except (OSError, ValueError, KeyError):
        return None


def plot_curves(rows: list[Row], out: Path) -> Path | None:
    """Validation accuracy and training loss against steps, one line per run."""
    plt = pyplot()

    runs = sorted({r.run_dir for r in rows if r.run_dir is not None})
    if not runs:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    losses = []
    for run in runs:
        for f, ax, col in ((run / "val_metrics.csv", a, "accuracy"), (run / "train_metrics.csv", b, "loss")):
            if f.exists():
                with open(f) as fh:
                    data = [(int(d["step"]), float(d[col])) for d in csv.DictReader(fh) if d.get(col)]
                if data:
                    ax.plot(*zip(*data), label=run.name, marker="o" if len(data) < 20 else None, ms=3)
                    if ax is b:
                        losses += [v for _, v in data]
    ways = {w for w in map(_run_way, runs) if w}
    if len(ways) == 1:
        chance_line(a, ways.pop())
    log = log_loss_axis(b, losses)
    a.set(title="validation accuracy (fixed val episodes)", xlabel="step", ylabel="accuracy (%)")
    b.set(title="training loss", xlabel="step", ylabel="loss" + (" (log scale)" if log else ""))
    for ax in (a, b):
        integer_steps(ax)
        ax.grid(alpha=0.3)
    legend_outside(b)  # the runs' names once, beside the loss; the chance line's beside the accuracy
    a.legend(handles=[h for h in a.get_lines() if h.get_label().startswith("chance")], fontsize=7, loc="best")
    return save(fig, out)


def plot_shots(rows: list[Row], out: Path) -> Path | None:
    """Test accuracy (with 95% CI) against shots, one line per method."""
    plt = pyplot()

    lines: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        if r.result.get("protocol", "few-shot") == "few-shot" and r.result["split"] == "test":
            lines.setdefault(r.label, []).append((r.result["shot"], r.result["accuracy"], r.result["ci95"]))
    if not lines or max(len(v) for v in lines.values()) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = len(lines)
    for i, (label, pts) in enumerate(sorted(lines.items())):
        pts.sort()
        x, y, e = zip(*pts)
        dx = 0.04 * (i - (n - 1) / 2)  # spread the methods a little, so that their error bars do not hide each other
        ax.errorbar([v + dx for v in x], y, yerr=e, marker="o", capsize=3, label=label)
    ways = sorted({r.result["way"] for r in rows if "way" in r.result})
    eps = sorted({r.result["episodes"] for r in rows if "episodes" in r.result})
    if len(ways) == 1:
        chance_line(ax, ways[0])
    ax.set(xlabel="shots", ylabel="test accuracy (%)", title=f"accuracy against shots ({'/'.join(map(str, ways))}-way, {'/'.join(f'{e:,}' for e in eps)} fixed episodes)")
    ax.set_xticks(sorted({p[0] for v in lines.values() for p in v}))
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save(fig, out)


def plot_confusion(row: Row, out: Path) -> Path:
    """Row-normalised confusion matrix of one evaluation over its split's classes."""
    plt = pyplot()
    import numpy as np

    conf = row.result["confusion"]
    counts = np.asarray(conf["counts"], dtype=float)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(conf["classes"])
    fig, ax = plt.subplots(figsize=(max(6, n * 0.32), max(5, n * 0.3)))
    im = ax.imshow(norm * 100, cmap="viridis", vmin=0)
    ax.set_xticks(range(n), conf["classes"], rotation=90, fontsize=6)
    ax.set_yticks(range(n), conf["classes"], fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title=f"{row.label}\n{row.result['way']}-way {row.result['shot']}-shot test queries (% of row)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return save(fig, out)


def plot_reversal(rows: list[Row], out: Path) -> Path | None:
    """Accuracy on time-reversed class pairs against the other classes, and on 2-way pair episodes."""
    plt = pyplot()
    import numpy as np

    rs = [r for r in rows if "reversal_pair_2way" in r.result]
    if not rs:
        return None
    labels = [r.label for r in rs]
    way = rs[0].result["way"]
    pair = [r.result["accuracy_reversal_pair_classes"] for r in rs]
    other = [r.result["accuracy_other_classes"] if r.result["accuracy_other_classes"] is not None else np.nan for r in rs]  # none: no bar, not a 0
    two = [r.result["reversal_pair_2way"]["accuracy"] for r in rs]
    x = np.arange(len(rs))
    fig, ax = plt.subplots(figsize=(max(7, len(rs) * 1.1), 4.5))
    ax.bar(x - 0.27, pair, 0.27, label=f"{way}-way: queries of reversal-pair classes")
    ax.bar(x, other, 0.27, label=f"{way}-way: queries of the other classes" + ("" if any(v == v for v in other) else " (none in this split)"))
    ax.bar(x + 0.27, two, 0.27, label="2-way episodes of a class and its reversal")
    chance_line(ax, way)
    chance_line(ax, 2, "--")
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=f"time-reversed classes, {rs[0].result['shot']}-shot")
    legend_outside(ax)
    return save(fig, out)


def _timing_table(timings: dict) -> list[str]:
    stages = timings.get("stages", {})
    if not stages:
        return ["No stage timings recorded (timings.json is missing or empty)."]
    lines = ["| stage | time | work | throughput |", "|---|---:|---|---|"]
    for name, t in stages.items():
        work = ", ".join(f"{v:,} {k}" for k, v in t.items() if k not in ("seconds", "machine", "finished_at") and not k.endswith("_per_second") and v)
        rate = ", ".join(f"{v:,.1f} {k.replace('_per_second', '')}/s" for k, v in t.items() if k.endswith("_per_second"))
        lines.append(f"| {name} | {_secs(t['seconds'])} | {work or '–'} | {rate or '–'} |")
    return lines


def _machine_line(timings: dict) -> str:
    machines = {json.dumps(t["machine"], sort_keys=True) for t in timings.get("stages", {}).values() if "machine" in t}
    if not machines:
        return "Machine: not recorded."
    out = []
    for m in sorted(machines):
        m = json.loads(m)
        gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ", no GPU"
        out.append(f"{m['cpu']} ({m['cpus']} CPUs, {m.get('memory_gib')} GiB){gpu}; {m['os']}, Python {m['python']}, torch {m['torch']}")
    return "Machine" + ("s" if len(out) > 1 else "") + ": " + "; ".join(out) + "."


def dataset_title(name: str, root: str | None = None) -> str:
    """How the report's title names a dataset: its name and what papers call it, or for a folder
    of the user's own videos, where they are."""
    from fsar.pipeline.datasets import DATASETS

    if name == "folder":
        return f"your videos under {root}" if root else "a folder of your videos"
    if name == "synth":
        return "synth, the built-in synthetic benchmark"
    spec = DATASETS.get(name)
    return f"{name}, {spec.title}" if spec is not None else name


def _run_dataset(rows: list[Row]) -> str | None:
    """The dataset a run's config names (evaluations written before they recorded their dataset)."""
    for r in rows:
        if r.run_dir is not None and (r.run_dir / "config.json").exists():
            return json.loads((r.run_dir / "config.json").read_text()).get("dataset")
    return None


def _settings_section(rows: list[Row]) -> list[str]:
    """Which settings of each trained run are the paper's, and which are ours."""
    from fsar.train.config import TrainConfig
    from fsar.train.configs import departures

    runs = sorted({r.run_dir for r in rows if r.run_dir is not None and (r.run_dir / "config.json").exists()})
    if not runs:
        return []
    md = ["## Settings: the paper's and ours", "", "Each trained run against its method's official code (the `paper` settings each method declares on its head, and for the paper's benchmarks the official schedule). Every setting not listed is the paper's. Selection is on val for every run (ours: the official code keeps the checkpoint best on its test episodes; rows marked so show that choice).", ""]
    md += ["| run | departs from the paper in (this run → the paper's) |", "|---|---|"]
    for run in runs:
        cfg = TrainConfig.from_json((run / "config.json").read_text())
        d = departures(cfg)
        text = "; ".join(f"{k}: {v!r} → {p!r}" for k, (v, p) in d.items()) or "nothing: the paper's settings"
        md.append(f"| {run.name} | {text} |")
    md.append("")
    return md


def _regimes_section(rows: list[Row], setting: tuple[int, int] | None) -> list[str]:
    """Accuracy on the classes named by appearance and on those named by motion (the synthetic
    benchmark), in the first few-shot setting and in zero-shot classification."""
    few = [(r, f"{setting[0]}-way {setting[1]}-shot") for r in _few_shot(rows, *setting)] if setting else []
    cls = [(r, "zero-shot, all test classes") for r in sorted((r for r in rows if r.result.get("protocol") == "zero-shot"), key=lambda r: (r.mode != "frozen", r.label))]
    sel = [(r, how) for r, how in few + cls if "accuracy_by_regime" in r.result]
    if not sel:
        return []
    md = ["## Classes named by appearance and by motion", "",
          "The test classes named by what a frame shows (\"a red circle spinning\", as in Kinetics) and those named only by how things move (as in SSv2, time-reversal pairs included): accuracy over the test queries (few-shot) or videos (zero-shot) of each. The paper's ablations show here: prototype modulation against a run without it, text fusion against none.", "",
          "| method | mode | protocol | all (%) | named by appearance (%) | named by motion (%) |", "|---|---|---|---:|---:|---:|"]
    for r, how in sel:
        g = r.result["accuracy_by_regime"]
        md.append(f"| {r.label} | {r.mode} | {how} | {r.result['accuracy']:.2f} | {g['appearance']:.2f} | {g['motion']:.2f} |")
    return md + [""]


def paper_number(method: str, dataset: str, shot: int) -> float | None:
    """The published 5-way accuracy of `method` on `dataset` at `shot` (`MethodSpec.paper_numbers`), or None."""
    from fsar.train.heads import HEADS

    head = HEADS.get(method)
    return head.spec.paper_numbers.get(dataset, {}).get(shot) if head is not None else None


def paper_source(method: str) -> str:
    from fsar.train.heads import HEADS

    return HEADS[method].spec.paper_source


def write_report(results: str | Path) -> Path:
    """Write RESULTS/REPORT.md and RESULTS/plots/*.png from the outputs under RESULTS (a results
    folder of `fsar-reproduce`, or one run's folder with its evaluations)."""
    results = Path(results)
    rows = load_rows(results)
    if not rows:
        if is_run_dir(results):
            raise FileNotFoundError(f"no evaluation results in the run {results}: evaluate it first with `fsar-eval {results}`")
        raise FileNotFoundError(f"no evaluation results under {results}/baselines or {results}/runs/*: run `make reproduce` first, or pass one run's folder")
    plots = results / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    setup = json.loads((results / "reproduce.json").read_text()) if (results / "reproduce.json").exists() else {}
    timings = json.loads((results / "timings.json").read_text()) if (results / "timings.json").exists() else {}
    dataset = setup.get("dataset") or next((r.result.get("dataset") for r in rows if r.result.get("dataset")), None) or _run_dataset(rows) or "unknown"
    backbones = {r.result.get("backbone") for r in rows if r.result.get("backbone")}
    random_init = any(r.result.get("random_init_backbone") for r in rows)
    single = is_run_dir(results)

    md = [f"# fsar results: {dataset_title(dataset, setup.get('root') or next((r.result['dataset_root'] for r in rows if r.result.get('dataset_root')), None))}", ""]
    if single:
        md += [f"One training run: `{results.resolve()}`.", ""]
    md.append(f"Backbone: {', '.join(sorted(map(str, backbones))) or 'unknown'}" + (" with **random (untrained) weights**: these numbers test the pipeline, not CLIP." if random_init else "."))
    md.append("")
    pretrain = json.loads((results / "pretrain.json").read_text()) if (results / "pretrain.json").exists() else None
    if pretrain and not random_init:
        r = pretrain["held_out"]
        md.append(
            f"Its weights were pretrained here (`fsar-data pretrain`, `{pretrain['weights']}`, sha256 {pretrain['sha256'][:12]}…): "
            f"{pretrain['config']['steps']} steps of open_clip's contrastive loss on {pretrain['train_clips']} captioned clips of the synthetic "
            f"world (`fsar-data captions`, none of them a benchmark video, and no caption naming an appearance class). "
            f"Held-out retrieval over {r['clips']} clips: {r['image_to_text_top1']:.1f}% clip→caption and {r['text_to_image_top1']:.1f}% "
            f"caption→clip top-1 (chance {r['chance_top1']:.1f}%)."
        )
        from fsar.pipeline.pretrain import describe_attributes

        if attributes := describe_attributes(r):
            md[-1] += f" One attribute at a time (a held-out clip's caption against those that differ from it in that attribute alone): {attributes}."
        md.append("")
    md.append("All methods are scored on the same fixed test episodes (seed 0, 1 query per class); ± is the 95% confidence interval (1.96 × std of per-episode accuracy / √episodes). Frozen baselines have no trained parameters; trained methods use adapter mode (the cached frozen embeddings) or peft mode (the shards through the frozen backbone, the method's prompts or adapters training), and the checkpoint best on val.")
    md.append("")
    if timings or not single:
        md += [_machine_line(timings), ""]

    settings = _settings(rows)
    # The best method at the smallest shot: its confusion matrix is plotted.
    first = _few_shot(rows, *settings[0]) if settings else []
    main = [r for r in first if r.result.get("checkpoint", "best") == "best"] or first  # selected on val, as every main row
    best_row = max(main, key=lambda r: r.result["accuracy"]) if main else None
    for way, shot in settings:
        sel = _few_shot(rows, way, shot)
        if not sel:
            continue
        numbers = {r.method: n for r in sel if (n := paper_number(r.method, dataset, shot)) is not None}
        paper = way == 5 and bool(numbers)
        md += [f"## {way}-way {shot}-shot ({sel[0].result['episodes']:,} test episodes)", ""]
        head = "| method | mode | trainable parameters | accuracy (%) | train time | eval time |" + (" paper (%) |" if paper else "")
        md += [head, "|---|---|---:|---:|---:|---:|" + ("---:|" if paper else "")]
        for r in sel:
            cell = ""
            if paper:
                cell = f" {numbers[r.method]} |" if r.method in numbers and r.result.get("fusion_beta") is None else " |"
            md.append(f"| {r.label} | {r.mode} | {r.trainable:,} | {_acc(r.result)} | {_secs(r.train_seconds)} | {_secs(r.result.get('seconds'))} |{cell}")
        if paper:
            md += [""] + [f"Paper: {paper_source(m)}." for m in numbers]
        md.append("")

    md += _settings_section(rows)
    md += _regimes_section(rows, settings[0] if settings else None)

    cls = [r for r in rows if r.result.get("protocol") in ("zero-shot", "supervised")]
    if cls:
        md += ["## Zero-shot and supervised classification", "", "Every video of the split classified among all of its classes by video-text similarity (zero-shot: the unseen test classes; supervised: training videos the run held out, among the training classes).", ""]
        md += ["| method | protocol | split | classes | videos | top-1 (%) | top-5 (%) |", "|---|---|---|---:|---:|---:|---:|"]
        for r in sorted(cls, key=lambda r: (r.result["protocol"], r.mode != "frozen", r.label)):
            x = r.result
            k = min(5, x["classes"])
            md.append(f"| {r.label} | {x['protocol']} | {x['split']} | {x['classes']} | {x['videos']} | {_acc(x)} | {x[f'top{k}_accuracy']:.2f} ± {x[f'top{k}_ci95']:.2f} |")
        md.append("")

    md += ["## Plots", ""]
    made = []
    for name, fn, caption in (
        ("curves.png", lambda p: plot_curves(rows, p), "Training curves: validation accuracy and training loss of every run."),
        ("shots.png", lambda p: plot_shots(rows, p), "Test accuracy against shots, per method."),
        ("confusion.png", lambda p: plot_confusion(best_row, p) if best_row is not None and "confusion" in best_row.result else None, f"Confusion matrix of the best method at {best_row.result['shot'] if best_row else '?'} shot ({best_row.label if best_row else 'none'}) on the test classes."),
        ("reversal.png", lambda p: plot_reversal([r for r in rows if r.result.get("shot") == (best_row.result["shot"] if best_row else 1)], p), "Time-reversed class pairs against the other classes (the synthetic benchmark's classes come in pairs that differ only in the direction of time)."),
    ):
        if fn(plots / name) is not None:
            made.append(name)
            md += [f"![{name}](plots/{name})", "", caption, ""]
    if not made:
        md += ["No plots: not enough results yet.", ""]

    rev = [r for r in rows if "reversal_pair_2way" in r.result and r.result.get("shot") == 1]
    if rev:
        md += ["## Time-reversed class pairs (1-shot)", "", "| method | pair classes (%) | other classes (%) | 2-way pair episodes (%) |", "|---|---:|---:|---:|"]
        for r in sorted(rev, key=lambda r: (r.mode != "frozen", r.label)):
            x = r.result
            other = f"{x['accuracy_other_classes']:.2f}" if x.get("accuracy_other_classes") is not None else "–"
            md.append(f"| {r.label} | {x['accuracy_reversal_pair_classes']:.2f} | {other} | {_acc(x['reversal_pair_2way'])} |")
        md.append("")

    if timings or not single:
        md += ["## Stage timings", ""] + _timing_table(timings) + [""]
    if (results / "commands.sh").exists():
        md += ["## How to reproduce", "", "`make reproduce` ran the equivalent of the CLI commands in [commands.sh](commands.sh); `fsar-report " + str(results) + "` regenerates this report from the JSON outputs.", ""]
    path = results / "REPORT.md"
    write_text_atomic(path, "\n".join(md))
    return path
