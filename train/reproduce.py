"""The whole chain, end to end: data -> shards -> embedding cache -> baselines and trained
methods -> evaluation on fixed episodes -> `results/REPORT.md`.

Every stage is resumable and skipped when its output is complete, so re-running reuses
finished work. Each stage that does work records its wall time, its units of work and the
machine in `RESULTS/timings.json`; `RESULTS/commands.sh` lists the equivalent CLI commands.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fsar.pipeline.atomic import write_json_atomic, write_text_atomic
from fsar.train.results import BASELINES, BASELINES_DIR, eval_path, run_dir, write_eval


def _default_methods(reproduce_mode: str) -> Callable[[], tuple[str, ...]]:
    """The registered methods that reproduce trains in `reproduce_mode` by default (`MethodSpec.reproduce_mode`)."""

    def factory() -> tuple[str, ...]:
        from fsar.train.heads import methods_with

        return methods_with(reproduce_mode=reproduce_mode)

    return factory


def _shot_free(method: str) -> bool:
    """Trained once whatever the shot (`MethodSpec.shot_free`); evaluated at every shot."""
    from fsar.train.heads import method_spec

    return method_spec(method).shot_free


@dataclass
class ReproduceConfig:
    """What `make reproduce` runs; the defaults are the built-in synthetic benchmark on a CPU."""

    dataset: str = "synth"
    """synth (rendered here), or ssv2, ssv2-small, kinetics100, ucf101, hmdb51 with `root`."""
    root: Path | None = None
    """Video root of a real dataset; for synth, where the benchmark is rendered (default data/synth)."""
    splits: Path | None = None
    """Split lists of a real dataset (default: downloaded once from their public source)."""
    data: Path = Path("data")
    """Where shards and the cache go."""
    shards: Path | None = None
    """Shard folder (default DATA/<dataset>-shards)."""
    cache: Path | None = None
    """Embedding cache (default DATA/<dataset>-cache.h5)."""
    results: Path = Path("results")
    """Where evaluations, runs, timings and the report go."""
    backbone: str = "fsar-tiny-vit"
    """open_clip model of the embedding cache."""
    pretrained: str = "none"
    """Its weights: a tag, a checkpoint file, none (seeded random init), or corpus (synth only:
    pretrained here by `fsar-data pretrain` on a caption corpus rendered by `fsar-data captions`)."""
    activation: str = "auto"
    """The backbone's MLP activation: auto (what the weights were trained with), gelu or quick_gelu."""
    short_side: int = 144
    """Frames are stored with this shorter side."""
    synth_classes: int = 100
    """Classes of the rendered synthetic benchmark."""
    synth_videos_per_class: int = 24
    """Videos per class of the synthetic benchmark."""
    synth_size: tuple[int, int] = (192, 144)
    """Largest frame size of the synthetic benchmark."""
    synth_frames: tuple[int, int] = (24, 40)
    """Frames per synthetic video (a range)."""
    synth_appearance: int = 0
    """Appearance-named classes added to the synthetic benchmark ("a red circle spinning")."""
    corpus_samples: int = 20000
    """Captioned clips of the pretraining corpus (`pretrained` corpus)."""
    pretrain_steps: int = 2000
    """Steps of the pretraining (`pretrained` corpus)."""
    methods: tuple[str, ...] = field(default_factory=_default_methods("adapter"))
    """Trained methods (adapter mode, on the cache)."""
    peft_methods: tuple[str, ...] = field(default_factory=_default_methods("peft"))
    """Methods trained in peft mode, on the shards through the frozen backbone (with `backbone`
    and `pretrained`), their prompts or adapters training."""
    baselines: tuple[str, ...] = BASELINES
    """Frozen-backbone baselines."""
    way: int = 5
    """Classes per test episode."""
    shots: tuple[int, ...] = (1, 2, 5)
    """Shots to evaluate. Each method trains once, on episodes of the first, and is scored at
    every shot from that run, as the paper's 5-shot numbers come from 1-shot training (the
    official 5-shot configs: `SHOT: 1`, `SHOT_TEST: 5`)."""
    per_shot_training: bool = False
    """Ours: train the episodic methods (clip-fsar, ma-clip) once per shot instead."""
    track_test: bool = True
    """Also keep each run's checkpoint best on the test episodes (`track_test`) and score it,
    so the report can set beside the paper's numbers a score selected as the official code
    selects (clearly labelled; the main rows stay selected on val)."""
    episodes: int = 10000
    """Test episodes per setting (fixed by seed 0)."""
    train_config: str | None = None
    """Named training config (default: the dataset's)."""
    peft_config: str | None = None
    """Named training config of the peft methods (default: `<train_config>-peft` where there is
    one, as for synth, whose CPU budget is smaller in peft mode; else `train_config`)."""
    train_overrides: tuple[str, ...] = ()
    """`key=value` overrides of every training config."""
    ablations: bool = True
    """Also train each method's paper ablations (`MethodSpec.ablations`, e.g. CLIP-FSAR without
    prototype modulation) once at the first shot, scored at that shot."""
    fused_beta: float | None = 0.9
    """Also evaluate the methods that fuse with text (`MethodSpec.fused_row`: CLIP-FSAR) at this beta (None: skip)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Ray workers of the shard stage."""
    threads: int = 0
    """CPU threads of embedding and training (0: all)."""

    def __post_init__(self) -> None:
        from fsar.pipeline.datasets import DATASETS

        if self.dataset != "synth" and self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: synth, {', '.join(d for d in DATASETS if d != 'synth')}")
        if self.pretrained == "corpus" and self.dataset != "synth":
            raise ValueError(f"--pretrained corpus pretrains on the synthetic world, for the synthetic benchmark; for {self.dataset} pass a tag or a weights file")
        if self.dataset not in ("synth", "folder") and self.root is None:
            raise ValueError(f"dataset {self.dataset} needs the folder of its videos (ROOT=/path)")
        from fsar.train.heads import method_spec, methods_with

        for m in self.methods:
            if "adapter" not in method_spec(m).modes:
                raise ValueError(f"{m} runs in {' or '.join(method_spec(m).modes)} mode only: list it in peft_methods (--peft-methods)")
        for m in self.peft_methods:
            if "peft" not in method_spec(m).modes:
                raise ValueError(f"{m!r} has no peft mode; peft methods: {', '.join(methods_with('peft'))}")
        for b in self.baselines:
            if b not in BASELINES:
                raise ValueError(f"unknown baseline {b!r}; known: {', '.join(BASELINES)}")
        if not self.shots or min(self.shots) < 1 or self.way < 2 or self.episodes < 1:
            raise ValueError(f"need shots >= 1, way >= 2 and episodes >= 1; got {self.shots}, {self.way}, {self.episodes}")
        self.data, self.results = Path(self.data), Path(self.results)
        if self.root is None:
            self.root = self.data / "synth"
        self.root = Path(self.root)
        self.shards = Path(self.shards or self.data / f"{self.dataset}-shards")
        self.cache = Path(self.cache or self.data / f"{self.dataset}-cache.h5")
        if self.train_config is None:
            self.train_config = self.dataset
        if self.peft_config is None:
            from fsar.train.configs import CONFIGS

            self.peft_config = f"{self.train_config}-peft" if f"{self.train_config}-peft" in CONFIGS else self.train_config

    def train_shots(self, method: str) -> list[int]:
        """The shots `method` trains at: the first only, unless `per_shot_training` (episodic methods)."""
        return list(self.shots) if self.per_shot_training and not _shot_free(method) else [self.shots[0]]

    def run_dir(self, method: str, shot: int, mode: str = "adapter", ablation: str | None = None) -> Path:
        """The run that scores `method` at `shot` (shot-free methods train once; the others
        once at the first shot, unless trained per shot), or its ablation labelled `ablation`."""
        if _shot_free(method):
            return run_dir(self.results, method, mode, ablation=ablation)
        trained = shot if self.per_shot_training else self.shots[0]
        return run_dir(self.results, method, mode, self.way, trained, ablation)


def _pretrain(c: ReproduceConfig, timings, commands, progress, train_progress, log) -> Path:
    """Render the caption corpus and pretrain `c.backbone` on it (both resumable); returns the
    weights file, and copies the pretraining summary to RESULTS/pretrain.json for the report."""
    from fsar.pipeline.pretrain import PretrainConfig, describe_attributes, run_pretrain
    from fsar.pipeline.synth.captions import CorpusConfig, render_corpus

    corpus, out = c.data / "captions", c.data / "pretrain"
    ccfg = CorpusConfig(out=corpus, samples=c.corpus_samples, held_out=max(1, c.corpus_samples // 20))
    commands.add("fsar-data", "captions", corpus, "--samples", ccfg.samples, "--held-out", ccfg.held_out)
    with progress("captions", "clips") as on_progress:
        s = render_corpus(ccfg, on_progress=on_progress)
    if s["rendered"]:
        timings.record("captions", s["seconds"], clips=s["rendered"])
    pcfg = PretrainConfig(corpus=corpus, out=out, backbone=c.backbone, steps=c.pretrain_steps, **({"threads": c.threads} if c.threads else {}))
    commands.add("fsar-data", "pretrain", "--corpus", corpus, "--out", out, "--backbone", c.backbone, "--steps", c.pretrain_steps)
    with train_progress(c.pretrain_steps) as on_step:
        p = run_pretrain(pcfg, on_step=on_step)
    if p["this_run"]["steps"]:
        timings.record("pretrain", p["this_run"]["seconds"], steps=p["this_run"]["steps"])
    write_json_atomic(c.results / "pretrain.json", p)
    r = p["held_out"]
    _say(log, f"pretrain: {p['backbone']} on {p['train_clips']} captioned clips; held-out retrieval {r['image_to_text_top1']:.1f}% "
              f"clip->caption, {r['text_to_image_top1']:.1f}% caption->clip (chance {r['chance_top1']:.1f}%)")
    if attributes := describe_attributes(r):
        _say(log, f"pretrain: told apart one attribute at a time: {attributes}")
    return Path(p["weights"])


class Timings:
    """RESULTS/timings.json: per stage, the wall time and work of the last run that did work."""

    def __init__(self, results: Path) -> None:
        from fsar.pipeline.machine import machine_info

        self.path = results / "timings.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}
        self.machine = machine_info()

    def record(self, stage: str, seconds: float, **work) -> None:
        rates = {}
        for unit, n in work.items():
            if isinstance(n, (int, float)) and n and seconds > 0:
                rates[f"{unit}_per_second"] = round(n / seconds, 2)
        self.data["stages"][stage] = {"seconds": round(seconds, 3), **work, **rates, "machine": self.machine, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(self.path, self.data)


class Commands:
    """RESULTS/commands.sh: the CLI commands equivalent to each stage, in order."""

    def __init__(self, results: Path) -> None:
        self.path, self.lines = results / "commands.sh", ["#!/bin/sh", "# The CLI commands equivalent to `make reproduce` (written by it).", "set -e"]

    def add(self, *argv) -> None:
        self.lines.append(" ".join(shlex.quote(str(a)) for a in argv))
        write_text_atomic(self.path, "\n".join(self.lines) + "\n")


def _say(log: Callable[[str], None] | None, text: str) -> None:
    if log is not None:
        log(text)


def reproduce(config: ReproduceConfig, progress=None, train_progress=None, log: Callable[[str], None] | None = print) -> Path:
    """Run the chain described by `config`; returns the path of the report.

    Args:
        progress: `progress(description, unit)` -> context manager yielding `on_progress(done, total[, failures])`.
        train_progress: `train_progress(total_steps)` -> context manager yielding `on_step(done, metrics)`.
        log: where stage messages go (None: silent).
    """
    from contextlib import nullcontext

    from fsar.pipeline.lock import hold

    progress = progress or (lambda *a: nullcontext(None))
    train_progress = train_progress or (lambda *a: nullcontext(None))
    with hold(config.results, "fsar-reproduce"):
        return _reproduce(config, progress, train_progress, log)


def _reproduce(config: ReproduceConfig, progress, train_progress, log) -> Path:
    c = config
    c.results.mkdir(parents=True, exist_ok=True)
    timings, commands = Timings(c.results), Commands(c.results)
    write_json_atomic(c.results / "reproduce.json", {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(c).items()})

    # 1. Data.
    if c.dataset == "synth":
        from fsar.pipeline.synth.generate import SynthConfig, generate

        scfg = SynthConfig(out=c.root, classes=c.synth_classes, videos_per_class=c.synth_videos_per_class, size=c.synth_size, frames=c.synth_frames, workers=c.workers,
                           appearance=c.synth_appearance)
        commands.add("fsar-data", "synth", c.root, "--classes", c.synth_classes, "--videos-per-class", c.synth_videos_per_class, "--size", "%dx%d" % c.synth_size, "--frames", "%d-%d" % c.synth_frames,
                     *(["--appearance", c.synth_appearance] if c.synth_appearance else []))
        with progress("synth", "videos") as on_progress:
            s = generate(scfg, on_progress=on_progress)
        if s.rendered:
            timings.record("synth", s.seconds, videos=s.rendered)
        _say(log, f"synth: {s.videos} videos ({s.rendered} rendered) in {s.seconds:.1f} s")

    # 1b. A CLIP pretrained here, on captioned clips of the same synthetic world (never its videos).
    if c.pretrained == "corpus":
        c = dataclasses.replace(c, pretrained=str(_pretrain(c, timings, commands, progress, train_progress, log)))

    # 2. Shards.
    from fsar.pipeline.shard.config import ShardConfig
    from fsar.pipeline.shard.run import run_shard_stage

    shard_cfg = ShardConfig(dataset=c.dataset, root=c.root, out=c.shards, splits_dir=c.splits, short_side=c.short_side, workers=c.workers)
    commands.add("fsar-data", "shard", c.dataset, "--root", c.root, "--out", c.shards, "--short-side", c.short_side, *(["--splits", c.splits] if c.splits else []))
    with progress("shard", "videos") as on_progress:
        s = run_shard_stage(shard_cfg, on_progress=on_progress)
    run = s["this_run"]
    if run["videos_processed"]:
        frames = sum(v["frames"] for v in s["splits"].values())
        timings.record("shard", run["seconds"], videos=run["videos_processed"], frames=frames if run["videos_processed"] == s["videos"] else None)
    _say(log, f"shard: {s['ok']} of {s['videos']} videos ok, {s['failed']} failed")
    if not s["passed"]:
        raise RuntimeError(f"the shard stage's failure rate {s['failure_rate']:.2%} exceeds {s['max_failure_rate']:.2%}; see {c.shards}/summary.json")

    # 3. Embedding cache.
    from fsar.pipeline.embed.config import EmbedConfig
    from fsar.pipeline.embed.run import run_embed_stage

    act = [] if c.activation == "auto" else ["--activation", c.activation]
    commands.add("fsar-data", "embed", "--shards", c.shards, "--cache", c.cache, "--backbone", c.backbone, "--pretrained", c.pretrained, *act)
    if not c.cache.exists():
        ecfg = EmbedConfig(shards=c.shards, cache=c.cache, backbone=c.backbone, pretrained=c.pretrained, activation=c.activation, **({"threads": c.threads} if c.threads else {}))
        with progress("embed", "shards") as on_progress:
            e = run_embed_stage(ecfg, on_progress=on_progress)
        r = e["this_run"]
        timings.record("embed", r["seconds"], frames=r["frames"])
        _say(log, f"embed: {r['frames']} frames in {r['seconds']:.1f} s")

    # 4. Frozen-backbone baselines.
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.baselines import evaluate_frozen, evaluate_frozen_classification

    base_dir = c.results / BASELINES_DIR
    for shot in c.shots:
        ep = EpisodeConfig(way=c.way, shot=shot, query=1, episodes=c.episodes, seed=0)
        for m in c.baselines:
            commands.add("fsar-eval", base_dir, "--cache", c.cache, "--method", m, "--shot", shot, "--way", c.way, "--episodes", c.episodes)
            if eval_path(base_dir, "test", way=c.way, shot=shot, baseline=m).exists():
                continue
            t0 = time.perf_counter()
            result, correct = evaluate_frozen(c.cache, m, "test", ep)
            seconds = time.perf_counter() - t0
            write_eval(base_dir, {**result, "seconds": round(seconds, 3)}, correct)
            timings.record(f"eval {m} {c.way}w{shot}s", seconds, episodes=c.episodes)
            _say(log, f"{m} {c.way}-way {shot}-shot: {result['accuracy']:.2f} +- {result['ci95']:.2f}%")
    if "zero-shot" in c.baselines:
        commands.add("fsar-eval", base_dir, "--cache", c.cache, "--method", "zero-shot", "--protocol", "zero-shot")
        if not eval_path(base_dir, "test", "zero-shot", baseline="zero-shot").exists():
            result, correct = evaluate_frozen_classification(c.cache, "test")
            write_eval(base_dir, result, correct)

    # 5. Trained methods, then their evaluation.
    from fsar.train.evaluate_run import evaluate_run
    from fsar.train.heads import method_spec

    for method, mode in [(m, "adapter") for m in c.methods] + [(m, "peft") for m in c.peft_methods]:
        for shot in c.train_shots(method):
            _train_run(c, method, mode, shot, c.run_dir(method, shot, mode), {}, commands, timings, train_progress, log)
        for shot in c.shots:
            _score_run(c, method, c.run_dir(method, shot, mode), shot, commands, timings, log)
        run = c.run_dir(method, c.shots[0], mode)
        protocols = ["zero-shot"] + (["supervised"] if json.loads((run / "config.json").read_text()).get("holdout", 0) > 0 else [])
        for protocol in protocols:
            commands.add("fsar-eval", run, "--protocol", protocol)
            split = "test" if protocol == "zero-shot" else "train-holdout"
            if not eval_path(run, split, protocol).exists():
                result, correct = evaluate_run(run, "test", protocol=protocol)
                write_eval(run, result, correct)
        if c.ablations:  # the paper's ablations: one run each, at the first shot
            for label, values in method_spec(method).ablations.items():
                run = c.run_dir(method, c.shots[0], mode, ablation=label)
                _train_run(c, method, mode, c.shots[0], run, values, commands, timings, train_progress, log)
                _score_run(c, method, run, c.shots[0], commands, timings, log)

    # 6. The report.
    from fsar.train.report import write_report

    commands.add("fsar-report", c.results)
    path = write_report(c.results)
    _say(log, f"report written to {path}")
    return path


def _set_value(v: object) -> str:
    """A config value as `--set key=value` writes it."""
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _train_run(c: ReproduceConfig, method: str, mode: str, shot: int, run: Path, values: dict, commands, timings, train_progress, log) -> None:
    """Train `method` in `mode` on `shot`-shot episodes into `run` (resumed if begun, skipped if
    done), its named config with `values` (an ablation's settings) set last, through `--set`."""
    from fsar.train.config import apply_overrides
    from fsar.train.configs import get_config
    from fsar.train.trainer import train

    if mode == "adapter":
        named, data_args = c.train_config, {"cache": str(c.cache)}
        argv = ["--mode", "adapter", "--cache", c.cache]
    else:
        named, data_args = c.peft_config, {"shards": str(c.shards), "backbone": c.backbone, "pretrained": c.pretrained, "activation": c.activation}
        argv = ["--mode", "peft", "--shards", c.shards, "--set", f"backbone={c.backbone}", "--set", f"pretrained={c.pretrained}", *(["--set", f"activation={c.activation}"] if c.activation != "auto" else [])]
    ablation = [f"{k}={_set_value(v)}" for k, v in values.items()]  # as --set writes them, so commands.sh gives this run
    cfg = dataclasses.replace(get_config(named, method), mode=mode, way=c.way, shot=shot, track_test=c.track_test, **data_args)
    cfg = apply_overrides(cfg, [*c.train_overrides, *([f"threads={c.threads}"] if c.threads else []), *ablation])
    track = ["--set", "track_test=true"] if c.track_test else []
    sets = [a for o in [*c.train_overrides, *ablation] for a in ("--set", o)]
    commands.add("fsar-train", *argv, "--method", method, "--config", named, "--way", c.way, "--shot", shot, "--out", run, *track, *sets)
    if (run / "summary.json").exists():
        _say(log, f"{run} is trained already")
        return
    resume = (run / "config.json").exists()
    with train_progress(cfg.iterations) as on_step:
        summary = train(cfg, run, resume=resume, on_step=on_step)
    timings.record(f"train {run.name}", summary["train_seconds"], episodes=cfg.episodes_per_step * cfg.iterations)
    _say(log, f"{run.name}: best val {summary['best_val_accuracy']:.2f}% at step {summary['best_step']}, {summary['train_seconds']:.0f} s")


def _score_run(c: ReproduceConfig, method: str, run: Path, shot: int, commands, timings, log) -> None:
    """Score `run` on the fixed `shot`-shot test episodes: its best checkpoint, the other of (no
    fusion, fusion at `fused_beta`) for methods with a fused row, and its checkpoint best on test
    where it kept one. Evaluations already written are skipped."""
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.evaluate_run import KEEP, evaluate_run
    from fsar.train.heads import method_spec

    ep = EpisodeConfig(way=c.way, shot=shot, query=1, episodes=c.episodes, seed=0)
    variants = [(KEEP, "", "best")]
    if method_spec(method).fused_row and c.fused_beta is not None:
        # The run's own setting, and the other of (no fusion, fusion at fused_beta).
        own = json.loads((run / "config.json").read_text())["fusion_beta"]
        variants.append((None, "-nofusion", "best") if own is not None else (c.fused_beta, f"-beta{c.fused_beta:g}", "best"))
    if (run / "checkpoints" / "best-on-test.json").exists():
        variants.append((KEEP, "-best-on-test", "best-on-test"))
    for beta, suffix, checkpoint in variants:
        flag = [] if beta is KEEP else ["--fusion-beta", "none" if beta is None else beta]
        flag += [] if checkpoint == "best" else ["--checkpoint", checkpoint]
        commands.add("fsar-eval", run, "--shot", shot, "--way", c.way, "--episodes", c.episodes, *flag)
        if eval_path(run, "test", way=c.way, shot=shot, suffix=suffix).exists():
            continue
        t0 = time.perf_counter()
        result, correct = evaluate_run(run, "test", ep, beta, checkpoint)
        seconds = time.perf_counter() - t0
        write_eval(run, {**result, "seconds": round(seconds, 3)}, correct, suffix)
        timings.record(f"eval {run.name} {c.way}w{shot}s{suffix}", seconds, episodes=c.episodes)
        _say(log, f"{run.name}{suffix} {c.way}-way {shot}-shot: {result['accuracy']:.2f} +- {result['ci95']:.2f}%")
