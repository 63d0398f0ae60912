"""RESULTS/BENCH.md from the JSON each benchmark writes: every figure beside its in-run baseline.

    python -m pipeline.bench.report [--results results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.atomic import write_text_atomic


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _decode(r: dict) -> list[str]:
    md = ["## Decoding: the shard stage against raw decoders (`make bench-decode`)", "", f"Machine: {r.get('machine')}" + (f", the process pinned to core {r['pinned_to_core']}" if "pinned_to_core" in r else "") + "; one thread per decoder, 8 frames per video, resize included; videos/s.", ""]
    raws = sorted({k for row in r["corpora"].values() for k in row if k not in ("clips", "fsar shard stage (1 worker)", "fastest raw") and not k.endswith("/ fastest raw")})
    own = ("decode+resize / fastest raw", "decode+resize+JPEG / fastest raw")
    md += ["| corpus | clips | " + " | ".join(raws) + " | fsar shard stage (1 worker) | stage / fastest raw | " + " | ".join(own) + " |", "|---|---:|" + "---:|" * (len(raws) + 2 + len(own))]
    for name, row in r["corpora"].items():
        cells = [f"{row[k]:.1f}" if isinstance(row.get(k), (int, float)) else str(row.get(k, "–")) for k in raws]
        md.append(f"| {name} | {row['clips']} | " + " | ".join(cells) + f" | {row['fsar shard stage (1 worker)']:.1f} | {row['stage / fastest raw']:.2f}x ({row['fastest raw']}) | "
                  + " | ".join(f"{row[k]:.2f}x" if k in row else "–" for k in own) + " |")
    s = r.get("scaling")
    if s:
        md += ["", f"Ray scaling on {s['corpus']}: 1 worker {s['1 worker']['videos_per_second']:.1f} videos/s, 2 workers {s['2 workers (Ray)']['videos_per_second']:.1f} videos/s: {s['ratio']:.2f}x."]
    return md + [""]


def _embed(r: dict) -> list[str]:
    return [
        "## Embedding: the embed stage against a bare `encode_image` loop (`make bench-embed`)", "",
        "| backbone | device | precision | threads | bare encode_image (frames/s) | embed stage (frames/s) | stage / bare |", "|---|---|---|---:|---:|---:|---:|",
        f"| {r['backbone']} | {r['device']} | {r['precision']} | {r['threads']} | {r['bare_encode_image_frames_per_s']:.1f} | {r['embed_stage_frames_per_s']:.1f} | {r['ratio']:.2f} |", "",
    ]


def _evaluate(r: dict) -> list[str]:
    return [
        "## Evaluation: batched OTAM episodes against per-episode loops (`make bench-evaluate`)", "",
        f"{r['episodes']:,} episodes, {r['way']}-way {r['shot']}-shot, T = {r['frames']}, D = {r['dim']}, {r['threads']} threads; largest logit difference {r['max_abs_logit_difference']:.1e}.", "",
        "| batched | loop over (query, support) pairs | speedup | loop over episodes | speedup |", "|---:|---:|---:|---:|---:|",
        f"| {r['batched_seconds']:.2f} s | {r['loop_seconds_scaled']:.0f} s | {r['speedup']:.0f}x | {r['episode_loop_seconds_scaled']:.1f} s | {r['speedup_vs_episode_loop']:.1f}x |", "",
        f"Loop times are scaled from {r['loop_episodes_timed']} timed episodes.", "",
    ]


def _train(r: dict) -> list[str]:
    return [
        "## Training: one episode in adapter mode against finetune mode (`make bench-train`)", "",
        f"{r['episode']}; {r['backbone']}; {r['threads']} threads.", "",
        "| adapter (ms/episode) | finetune (ms/episode) | of which reading frames | finetune / adapter | trainable: adapter | trainable: finetune |", "|---:|---:|---:|---:|---:|---:|",
        f"| {r['adapter_ms_per_episode']:.1f} | {r['finetune_ms_per_episode']:.1f} | {r['finetune_data_ms_per_episode']:.1f} | {r['finetune_over_adapter']}x | {r['adapter_trainable_parameters']:,} | {r['finetune_trainable_parameters']:,} |", "",
    ]


SECTIONS = (
    ("bench-decode/bench-decode.json", _decode),
    ("bench-embed/bench-embed.json", _embed),
    ("bench-evaluate/bench-evaluate.json", _evaluate),
    ("bench-train/train_step.json", _train),
)


def write_bench_report(results: str | Path) -> Path:
    """Write RESULTS/BENCH.md from whichever benchmark JSONs exist; missing ones are listed."""
    from pipeline.machine import machine_info

    results = Path(results)
    md = ["# fsar benchmarks", "", "Each figure is measured beside its baseline in the same run; regenerate with `make bench`.", ""]
    m = machine_info()
    md += [f"Report written on: {m['cpu']} ({m['cpus']} CPUs){', GPU ' + m['gpu']['name'] if m['gpu'] else ', no GPU'}; torch {m['torch']}.", ""]
    missing = []
    for rel, fn in SECTIONS:
        r = _load(results / rel)
        if r is None:
            missing.append(rel)
        else:
            md += fn(r)
    if missing:
        md += ["Not run: " + ", ".join(f"`{x}`" for x in missing) + ".", ""]
    path = results / "BENCH.md"
    write_text_atomic(path, "\n".join(md))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write RESULTS/BENCH.md from the benchmark JSONs.")
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args(argv)
    print(f"benchmark report: {write_bench_report(args.results)}")


if __name__ == "__main__":
    main()
