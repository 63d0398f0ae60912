"""`make gpu-check`: run every GPU path once, measure it, and write GPU.md and GPU.json.

    python -m tools.gpu_check [--out results] [--only decode,train] [--corpus DIR]
    python -m tools.gpu_check --dry-run [--out results/gpu-check-dry-run]

Each section runs in its own process, forked from this one before anything touches CUDA, in
its own process group, with a time budget: a section that crashes, runs out of GPU memory or
outlasts its budget is recorded as failed with the reason, and the next one runs. `--only`
reruns some sections and keeps the others' results from the last GPU.json in --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from fsar.pipeline.child import describe_exit
from tools.gpu_check.config import SECTIONS, CheckConfig, dry_run_config, gpu_config
from tools.gpu_check.record import Recorder, Skip, reason_of, section_status, stopped

ROOT = Path(__file__).resolve().parents[2]
NEEDS_DATA = {"embed", "train"}  # sections that read the synthetic shards of `data`


def _section_module(name: str):
    import importlib

    return importlib.import_module(f"tools.gpu_check.sections.{name.replace('-', '_')}")


def _child(name: str, cfg: CheckConfig, path: Path, log: Path) -> None:
    """The section's process: its own group (stopped with all it started), output to its log."""
    os.setpgrp()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    rec = Recorder(path)
    try:
        _section_module(name).run(cfg, rec)
        rec.finish(*section_status(rec.data))
    except Skip as e:
        rec.finish("skipped", str(e))
    except BaseException as e:  # noqa: BLE001 - recorded; the next section runs
        traceback.print_exc()
        rec.finish("failed", reason_of(e))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no atexit handlers inherited from the parent


def run_section(name: str, cfg: CheckConfig) -> dict:
    """Run section `name` in a forked process within its budget; returns its record with its
    status, reason, seconds and budget."""
    path = cfg.work / "sections" / f"{name}.json"
    log = cfg.out / "gpu-check-logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    budget = cfg.budgets[name]
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(name, cfg, path, log), name=f"gpu-check {name}")
    t0 = time.perf_counter()
    proc.start()
    proc.join(budget)
    why = ""
    if proc.is_alive():
        why = f"stopped at its budget of {budget:.0f} s"
    elif proc.exitcode:
        why = f"its process died ({describe_exit(proc.exitcode)})"
    try:  # everything it started (Ray, pools, pytest) goes with it
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.join()
    record = json.loads(path.read_text()) if path.exists() else {"values": {}, "parts": {}}
    if why or "status" not in record:
        record = stopped(record, why or "it ended without a result")
        last = _last_line(log)
        if last:
            record["reason"] += f"; its log ends: {last}"
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["budget_seconds"] = budget
    record["log"] = str(log.relative_to(cfg.out))
    return record


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _gpu_visible() -> bool:
    """Whether the CUDA driver shows a GPU, asked in a throwaway process: CUDA initialised here
    would be unusable in the forked sections."""
    def probe() -> None:
        from fsar.pipeline.video.dali import cuda_available

        os._exit(0 if cuda_available() else 1)

    p = multiprocessing.get_context("fork").Process(target=probe)
    p.start()
    p.join(60)
    return p.exitcode == 0


def _preload() -> None:
    """Import the heavy modules once here, so that each forked section starts with them (none of
    them initialises CUDA); one that fails to import is left to the section that needs it."""
    import importlib

    for module in ("numpy", "torch", "torchvision", "open_clip", "pipeline.backbones", "train.trainer", "cli.data", "cli.train"):
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the sections report it
            pass


def _commit() -> str:
    """The checkout's commit (+changes when tracked files differ); where there is no git repository
    (the GPU machine gets a copy of the tree), FSAR_COMMIT as the command line set it."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is None or out.returncode:
        return os.environ.get("FSAR_COMMIT", "unknown")
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def run_check(cfg: CheckConfig, only: list[str] | None = None, command: str = "") -> dict:
    """Run the sections (all, or `only` those, keeping the others from the last GPU.json in
    cfg.out), write GPU.md and GPU.json there, and return the results; `command` is recorded."""
    from tools.gpu_check.report import read_results, write_results

    previous = read_results(cfg.out) if only else None
    wanted = set(SECTIONS if only is None else only)
    needs_data = NEEDS_DATA | ({"decode"} if cfg.corpus is None else set())  # the dry run decodes the synthetic videos
    if needs_data & wanted and not (cfg.work / "data.json").exists():
        wanted.add("data")  # a rerun whose shards are gone makes them again
    names = [s for s in SECTIONS if s in wanted]
    if only is None and cfg.work.exists():
        shutil.rmtree(cfg.work)
    cfg.work.mkdir(parents=True, exist_ok=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    _preload()
    t0 = time.perf_counter()
    sections = dict(previous["sections"]) if previous else {}
    for name in names:
        print(f"[gpu-check] {name} (budget {cfg.budgets[name]:.0f} s) ...", flush=True)
        record = run_section(name, cfg)
        record["run_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        sections[name] = record
        print(f"[gpu-check] {name}: {record['status']} in {record['seconds']:.1f} s" + (f": {record['reason']}" if record.get("reason") else ""), flush=True)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "dry_run": cfg.dry_run,
        "command": command,
        "seconds": round(time.perf_counter() - t0, 1),  # of this invocation; each section has its own
        "budget_seconds": cfg.total_budget,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items() if k not in ("out", "work")},
        "sections": {s: sections[s] for s in SECTIONS if s in sections},
    }
    write_results(cfg.out, results)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="on a CPU: tiny sizes, GPU-only steps skipped")
    ap.add_argument("--out", type=Path, default=None, help="folder of GPU.md and GPU.json (default: results, or results/gpu-check-dry-run)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: build/gpu-check/work, or work-dry-run)")
    ap.add_argument("--corpus", type=Path, default=ROOT / "build" / "gpu-check" / "corpus",
                    help="the decode benchmark's corpus (python -m tools.gpu_check.wheels pack builds it; carried to the GPU machine)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections to rerun: {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    unknown = sorted(set(only or []) - set(SECTIONS))
    if unknown:
        print(f"gpu-check: unknown section(s) {', '.join(unknown)}: choose among {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    # pytest and Ray's workers import fsar from this checkout too, also where it is not pip-installed (the GPU machine).
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    build = ROOT / "build" / "gpu-check"
    if args.dry_run:
        cfg = dry_run_config(args.out or ROOT / "results" / "gpu-check-dry-run", args.work or build / "work-dry-run")
    else:
        if not _gpu_visible():
            print("gpu-check: no CUDA GPU visible here (the driver shows none): run `make gpu-check DRY_RUN=1` on a CPU machine", file=sys.stderr)
            return 2
        cfg = gpu_config(args.out or ROOT / "results", args.work or build / "work", args.corpus)
    results = run_check(cfg, only, " ".join(["python -m tools.gpu_check", *(sys.argv[1:] if argv is None else argv)]))
    failed = [n for n, s in results["sections"].items() if s["status"] == "failed"]
    print(f"[gpu-check] {cfg.out / 'GPU.md'} written in {results['seconds']:.0f} s; " + (f"failed: {', '.join(failed)}" if failed else "no section failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
