"""docs/benchmarks.md from the JSON each benchmark writes: every figure beside its in-run
baseline, and each table with the date, commit, machine and command of its run.

    python -m tools.bench.report [--results results] [--out docs/benchmarks.md] [--run decode,embed,evaluate,train]

`--run` runs the named benchmarks (`make bench-NAME`) one after the other and records where
and when each ran in RESULTS/bench-NAME/provenance.json; `make bench` runs them all that way.
The page is then written from whatever JSON is under RESULTS. A benchmark with no JSON there
keeps its section of the page as it was, so the page always holds the last measurement of
each benchmark, with that measurement's own provenance.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fsar.pipeline.atomic import write_json_atomic, write_text_atomic

PAGE = Path("docs/benchmarks.md")
PROVENANCE = "provenance.json"


def _decode(r: dict) -> list[str]:
    md = [f"One thread per decoder, the process pinned to one core ({r.get('machine')}); 8 frames per video, resized to a 256-pixel short side; videos/s, each the best of {r.get('repeats', '?')} interleaved passes.", ""]
    raws = sorted({k for row in r["corpora"].values() for k in row if k not in ("clips", "fsar shard stage (1 worker)", "fastest raw") and not k.endswith("/ fastest raw")})
    own = ("decode+resize / fastest raw", "decode+resize+JPEG / fastest raw")
    md += ["| corpus | clips | " + " | ".join(raws) + " | fsar shard stage (1 worker) | stage / fastest raw | " + " | ".join(own) + " |", "|---|---:|" + "---:|" * (len(raws) + 2 + len(own))]
    for name, row in r["corpora"].items():
        cells = [f"{row[k]:.1f}" if isinstance(row.get(k), (int, float)) else str(row.get(k, "–")) for k in raws]
        md.append(f"| {name} | {row['clips']} | " + " | ".join(cells) + f" | {row['fsar shard stage (1 worker)']:.1f} | {row['stage / fastest raw']:.2f}x ({row['fastest raw']}) | "
                  + " | ".join(f"{row[k]:.2f}x" if k in row else "–" for k in own) + " |")
    s = r.get("scaling")
    if s:
        md += ["", f"Ray scaling on {s['corpus']}: 1 worker {s['1 worker']['videos_per_second']:.1f} videos/s, 2 workers {s['2 workers (Ray)']['videos_per_second']:.1f} videos/s once started: {s['ratio']:.2f}x."]
    return md


def _embed(r: dict) -> list[str]:
    return [
        "| backbone | device | precision | batch | threads | bare encode_image (frames/s) | embed stage (frames/s) | stage / bare |", "|---|---|---|---:|---:|---:|---:|---:|",
        f"| {r['backbone']} | {r['device']} | {r['precision']} | {r.get('batch', '–')} | {r['threads']} | {r['bare_encode_image_frames_per_s']:.1f} | {r['embed_stage_frames_per_s']:.1f} | {r['ratio']:.2f} |",
    ]


def _evaluate(r: dict) -> list[str]:
    return [
        f"{r['episodes']:,} episodes, {r['way']}-way {r['shot']}-shot, T = {r['frames']}, D = {r['dim']}, {r['threads']} threads; largest logit difference from the batched scores {r['max_abs_logit_difference']:.1e}. Loop times are scaled from {r['loop_episodes_timed']} timed episodes.", "",
        "| batched | loop over (query, support) pairs | speedup | loop over episodes | speedup |", "|---:|---:|---:|---:|---:|",
        f"| {r['batched_seconds']:.2f} s | {r['loop_seconds_scaled']:.0f} s | {r['speedup']:.0f}x | {r['episode_loop_seconds_scaled']:.1f} s | {r['speedup_vs_episode_loop']:.1f}x |",
    ]


def _train(r: dict) -> list[str]:
    return [
        f"{r['episode']}; {r['backbone']}; {r['threads']} threads; median of the timed steps after a warm-up.", "",
        "| adapter (ms/episode) | finetune (ms/episode) | of which reading frames | finetune / adapter | trainable: adapter | trainable: finetune |", "|---:|---:|---:|---:|---:|---:|",
        f"| {r['adapter_ms_per_episode']:.1f} | {r['finetune_ms_per_episode']:.1f} | {r['finetune_data_ms_per_episode']:.1f} | {r['finetune_over_adapter']}x | {r['adapter_trainable_parameters']:,} | {r['finetune_trainable_parameters']:,} |",
        *(_workers(r["workers"]) if "workers" in r else []),
    ]


def _workers(w: dict) -> list[str]:
    n = w["workers"]
    return [
        "",
        f"Finetune steps on Ray Train workers (DDP over gloo), one CPU thread per worker: {w['episode']}, {w['episodes_per_step']} episodes a step, "
        f"{w['backbone']}; steps/s from rank 0's median step time over {w['steps_timed']} steps. This process alone with {w['here_threads']} threads, no Ray, for reference.", "",
        f"| 1 worker (steps/s) | {n} workers (steps/s) | speedup | this process, {w['here_threads']} threads (steps/s) |", "|---:|---:|---:|---:|",
        f"| {w['workers_1_steps_per_second']:.3f} | {w[f'workers_{n}_steps_per_second']:.3f} | {w['speedup']}x | {w['here_steps_per_second']:.3f} |",
    ]


@dataclass(frozen=True)
class Bench:
    """One benchmark: where its JSON lies under RESULTS, how it is run, how its table reads."""

    name: str
    result: str  # the JSON it writes, relative to RESULTS
    title: str
    render: Callable[[dict], list[str]]

    @property
    def target(self) -> str:
        return f"bench-{self.name}"


BENCHMARKS = (
    Bench("decode", "bench-decode/bench-decode.json", "Decoding: the shard stage against raw decoders", _decode),
    Bench("embed", "bench-embed/bench-embed.json", "Embedding: the embed stage against a bare `encode_image` loop", _embed),
    Bench("evaluate", "bench-evaluate/bench-evaluate.json", "Evaluation: batched OTAM episodes against per-episode loops", _evaluate),
    Bench("train", "bench-train/train_step.json", "Training: one episode in adapter mode against finetune mode", _train),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def describe_machine() -> str:
    """CPU, memory, GPU and torch version in one line, with the load when the run started."""
    from fsar.pipeline.machine import machine_info

    m = machine_info()
    gpu = f"{m['gpu']['count']}x {m['gpu']['name']}" if m["gpu"] else "no GPU"
    memory = f", {m['memory_gib']} GiB" if m["memory_gib"] else ""
    load = f"; load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{m['cpu']} ({m['cpus']} CPUs{memory}), {gpu}; torch {m['torch']}{load}"


def provenance(command: str) -> dict:
    """When, at which commit and on which machine `command` is run, taken before it runs."""
    commit = _git("rev-parse", "--short=7", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else False
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit + (" with uncommitted changes" if dirty else "")) if commit else "unknown (not a git checkout)",
        "machine": describe_machine(),
        "command": command,
    }


def read_provenance(results: Path, bench: Bench) -> dict:
    """The provenance recorded for RESULTS' JSON of `bench`; for a JSON written by another run
    (no record, or a record of other bytes) the file's date and what is not known."""
    result = results / bench.result
    path = result.parent / PROVENANCE
    if path.exists():
        p = json.loads(path.read_text())
        if p.get("result_sha256") == _sha256(result):
            return p
    mtime = datetime.datetime.fromtimestamp(result.stat().st_mtime, datetime.timezone.utc)
    machine = json.loads(result.read_text()).get("machine")
    return {
        "date": mtime.strftime("%Y-%m-%d %H:%M UTC") + " (the file's date)",
        "commit": "not recorded",
        "machine": (machine + "; nothing more recorded") if machine else "not recorded",
        "command": f"make {bench.target}, not through make bench, which records the commit and machine",
    }


def section(bench: Bench, result: dict, prov: dict) -> list[str]:
    """The page's section for one benchmark run: heading, provenance, table."""
    return [
        f"<!-- bench:{bench.name} -->",
        f"## {bench.title}",
        "",
        f"- date: {prov['date']}",
        f"- commit: {prov['commit']}",
        f"- machine: {prov['machine']}",
        f"- command: `{prov['command']}`",
        "",
        *bench.render(result),
        f"<!-- /bench:{bench.name} -->",
    ]


def kept_sections(page: Path) -> dict[str, str]:
    """The sections of an existing page, by benchmark name, as written."""
    if not page.exists():
        return {}
    text = page.read_text()
    return {m.group(1): m.group(0) for m in re.finditer(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", text, re.S)}


def write_bench_page(results: str | Path, out: str | Path = PAGE) -> Path:
    """Write the benchmark page: a fresh section for each benchmark with a JSON under RESULTS,
    the page's previous section for the others, a line saying which have never run."""
    results, out = Path(results), Path(out)
    old = kept_sections(out)
    md = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`tools/bench/report.py`) from the JSON each benchmark leaves under `results/bench-*/`. "
        "Each figure is measured beside its baseline in the same run. A benchmark that has not run since keeps its last section, "
        "with the date, commit, machine and command of that run. What the figures mean and how each benchmark works: "
        "[shard](shard.md#speed), [embed](embed.md#speed), [eval](eval.md#speed), [train](train.md#speed).",
        "",
    ]
    never = []
    for bench in BENCHMARKS:
        path = results / bench.result
        if path.exists():
            md += section(bench, json.loads(path.read_text()), read_provenance(results, bench))
        elif bench.name in old:
            md.append(old[bench.name])
        else:
            never.append(bench.target)
            continue
        md.append("")
    if never:
        md += ["Never run: " + ", ".join(f"`make {t}`" for t in never) + ".", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(md))
    return out


def run_benchmarks(names: list[str], results: Path, make: list[str]) -> None:
    """Run `make bench-NAME` for each name, recording its provenance beside its JSON once it succeeds.

    Raises:
        ValueError: an unknown benchmark name.
        subprocess.CalledProcessError: a benchmark failed (the ones before it keep their records).
        FileNotFoundError: a benchmark ended without writing its JSON.
    """
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    for name in names:
        bench = BY_NAME[name]
        prov = provenance(f"make {bench.target}")  # before the run: a commit made meanwhile is not the one measured
        subprocess.run([*make, bench.target, f"RESULTS={results}"], check=True)
        if hasattr(os, "getloadavg"):  # other work on the machine meanwhile shows here
            prov["machine"] += f", {os.getloadavg()[0]:.1f} at the end"
        result = results / bench.result
        if not result.exists():  # e.g. `make -n`, or a target that writes elsewhere
            raise FileNotFoundError(f"`make {bench.target}` ended without writing {result}; nothing is recorded for it")
        write_json_atomic(result.parent / PROVENANCE, {**prov, "result_sha256": _sha256(result)})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write docs/benchmarks.md from the benchmark JSONs, after running them with --run.")
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: docs/benchmarks.md)")
    ap.add_argument("--run", default="", help=f"benchmarks to run first, comma-separated: {', '.join(BY_NAME)}")
    ap.add_argument("--make", default="make", help="the make command that runs them (default: make, which takes make bench's variables from MAKEFLAGS)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.run.split(",") if n.strip()]
    try:
        run_benchmarks(names, args.results, shlex.split(args.make))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except subprocess.CalledProcessError as e:
        print(f"error: {shlex.join(e.cmd)} failed (exit {e.returncode}); the page is not rewritten", file=sys.stderr)
        raise SystemExit(1) from None
    except FileNotFoundError as e:
        print(f"error: {e}; the page is not rewritten", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"benchmark page: {write_bench_page(args.results, args.out)}")


if __name__ == "__main__":
    main()
