"""Kill every stage with SIGKILL at random points, resume it, and compare with an uninterrupted run.

    python -m tools.chaos [--kills N] [--stages shard-1,shard-2,embed,train,eval,reproduce] [--work DIR] [--seed S]

For each stage: one uninterrupted run gives the reference output and its duration; then N
times the stage is started, its driver is killed (`kill -9`) at a random point of that
duration, every process it started must be gone within a grace period (they carry a tag in
their environment, so orphans are found however they were spawned), and the same command is
run again to the end. A kill is survived when the rerun exits 0, its output equals the
reference (what each stage compares: `STAGES`) and no process outlived the kill. Prints
`<stage>: kills survived k/n` per stage and writes WORK/chaos.json; exits 1 if any kill was not
survived. `make chaos` runs it with 5 kills per stage; the default tests run one per stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BIN = Path(sys.executable).parent
TAG = "FSAR_CHAOS_TAG"
# Ray's dashboard and runtime-env agents outlive their raylet by up to about a minute, after a
# clean ray.shutdown() too, and then end on their own: only a process alive after this many
# seconds counts as an orphan.
GRACE = 150.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root` by relative path, names in `skip` and hidden files left out."""
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}


def cache_digest(path: Path) -> dict[str, str]:
    """Every dataset and attribute of an HDF5 cache, by name (the file's bytes hold no times, but
    compare what a reader sees)."""
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": str(v) for k, v in f.attrs.items()})

        def add(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                raw = b"\0".join(bytes(x) for x in data) if data.dtype.kind == "O" else np.ascontiguousarray(data).tobytes()
                out[name] = hashlib.sha256(raw).hexdigest()

        f.visititems(add)
    return out


def evals(root: Path) -> dict[str, str]:
    """Every evaluation under `root` (JSON without its timings, paths relative to the stage's
    output folder, and the per-episode CSV)."""
    out = {}
    for p in sorted(root.rglob("eval-*")):
        if p.suffix == ".json":
            d = json.loads(p.read_text().replace(str(root.parent.resolve()), "OUT").replace(str(root.parent), "OUT"))
            d = {k: v for k, v in d.items() if not k.endswith("seconds")}  # timings
            out[p.relative_to(root).as_posix()] = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
        elif p.suffix == ".csv":
            out[p.relative_to(root).as_posix()] = _sha(p)
    return out


@dataclass
class Stage:
    """A stage: its command given (work folder, output folder), and what of its output must match."""

    command: Callable[[Path, Path], list[str]]
    digest: Callable[[Path], dict]
    prepare: Callable[[Path, Path], None] = lambda work, out: None  # before each run, on a fresh output
    resume: Callable[[Path, Path], list[str]] | None = None  # the rerun's command, if not the same


def _train_cmd(work: Path, out: Path) -> list[str]:
    return [str(BIN / "fsar-train"), "--out", str(out / "run"), "--cache", str(work / "ref-cache.h5"), "--config", "tiny", "--way", "3",
            "--set", "query=1", "--set", "threads=1", "--set", "iterations=40", "--set", "val_every=5", "--set", "log_every=3"]


def _train_resume(work: Path, out: Path) -> list[str]:
    started = (out / "run" / "checkpoints" / "last.json").exists()
    return _train_cmd(work, out) + (["--resume"] if started else [])


def _train_digest(out: Path) -> dict:
    run = out / "run"
    return {n: _sha(run / n) for n in ("train_metrics.csv", "val_metrics.csv", "checkpoints/last.safetensors", "checkpoints/best.safetensors")}


def _eval_prepare(work: Path, out: Path) -> None:
    shutil.copytree(work / "ref-run", out / "run", ignore=shutil.ignore_patterns("eval-*", ".fsar-lock.json"))


STAGES: dict[str, Stage] = {
    "shard-1": Stage(lambda w, o: [str(BIN / "fsar-data"), "shard", "synth", "--root", str(w / "synth"), "--out", str(o / "shards"), "--workers", "1",
                                   "--short-side", "48", "--shard-size", "4"],
                     lambda o: tree(o / "shards", ("summary.json",))),
    "shard-2": Stage(lambda w, o: [str(BIN / "fsar-data"), "shard", "synth", "--root", str(w / "synth"), "--out", str(o / "shards"), "--workers", "2",
                                   "--short-side", "48", "--shard-size", "4"],
                     lambda o: tree(o / "shards", ("summary.json",))),
    "embed": Stage(lambda w, o: [str(BIN / "fsar-data"), "embed", "--shards", str(w / "ref-shards"), "--cache", str(o / "c.h5"), "--backbone", "fsar-micro-vit",
                                 "--pretrained", "none", "--workers", "1", "--batch", "8"],
                   lambda o: cache_digest(o / "c.h5")),
    "train": Stage(_train_cmd, _train_digest, resume=_train_resume),
    "eval": Stage(lambda w, o: [str(BIN / "fsar-eval"), str(o / "run"), "--way", "3", "--episodes", "3000"], lambda o: evals(o / "run"), prepare=_eval_prepare),
    "reproduce": Stage(lambda w, o: [str(BIN / "fsar-reproduce"), "--dataset", "folder", "--root", str(w / "synth"), "--splits", str(w / "synth" / "splits"),
                                     "--data", str(o / "data"), "--results", str(o / "results"), "--backbone", "fsar-micro-vit", "--config", "tiny",
                                     "--peft-methods", "", "--shots", "1", "--episodes", "300", "--workers", "1", "--short-side", "48"],
                       lambda o: evals(o / "results")),
}


def build_inputs(work: Path) -> None:
    """The small synthetic dataset, and the reference shards, cache and run the later stages read."""
    fsar_data = str(BIN / "fsar-data")
    if not (work / "synth" / "videos.jsonl").exists():
        _run([fsar_data, "synth", str(work / "synth"), "--classes", "16", "--videos-per-class", "4", "--splits", "6,5,5",
              "--size", "64x48", "--frames", "8-12", "--workers", "1"])
    if not (work / "ref-shards" / "summary.json").exists():
        _run([fsar_data, "shard", "synth", "--root", str(work / "synth"), "--out", str(work / "ref-shards"), "--workers", "1", "--short-side", "48"])
    if not (work / "ref-cache.h5").exists():
        _run([fsar_data, "embed", "--shards", str(work / "ref-shards"), "--cache", str(work / "ref-cache.h5"), "--backbone", "fsar-micro-vit",
              "--pretrained", "none", "--workers", "1"])
    if not (work / "ref-run" / "summary.json").exists():
        shutil.rmtree(work / "ref-run", ignore_errors=True)
        cmd = _train_cmd(work, work)
        cmd[cmd.index("--out") + 1] = str(work / "ref-run")
        _run(cmd)


def _run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0 and env is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    return done


def tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment carries `tag`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if f"{TAG}={tag}".encode() in (d / "environ").read_bytes().split(b"\0"):
                stat = (d / "stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z":  # not a zombie waiting for its parent
                    found.append(int(d.name))
        except OSError:
            continue
    return found


def reap(tag: str, grace: float) -> list[str]:
    """Wait up to `grace` seconds for every tagged process to end; kill and return those that did not."""
    deadline = time.time() + grace
    while time.time() < deadline and tagged(tag):
        time.sleep(0.2)
    left = []
    for pid in tagged(tag):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120].strip()
            left.append(f"{pid} {command}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


@dataclass
class Trial:
    kill_at: float
    killed: bool = False
    rerun_exit: int | None = None
    same: bool = False
    orphans: list[str] = field(default_factory=list)  # "pid command" of processes that outlived the kill
    detail: str = ""

    @property
    def survived(self) -> bool:
        return self.killed and self.rerun_exit == 0 and self.same and not self.orphans


def chaos(name: str, work: Path, kills: int, rng: random.Random, grace: float = GRACE, log=print) -> dict:
    """Reference run, then `kills` kill-and-resume trials of stage `name`."""
    stage = STAGES[name]
    ref_out = work / f"{name}-reference"
    shutil.rmtree(ref_out, ignore_errors=True)
    ref_out.mkdir(parents=True)
    stage.prepare(work, ref_out)
    t0 = time.perf_counter()
    _run(stage.command(work, ref_out))
    duration = time.perf_counter() - t0
    reference = stage.digest(ref_out)
    trials = []
    for k in range(kills):
        out = work / f"{name}-kill-{k}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        stage.prepare(work, out)
        trial = Trial(kill_at=round(rng.uniform(0.05, 0.9) * duration, 2))
        tag = uuid.uuid4().hex
        env = {**os.environ, TAG: tag}
        for _ in range(4):  # a run that ends before its kill point (a faster machine than the reference's) starts again, killed sooner
            proc = subprocess.Popen(stage.command(work, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            try:
                proc.wait(timeout=trial.kill_at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                trial.killed = True
                break
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            stage.prepare(work, out)
            trial.kill_at = round(trial.kill_at / 2, 2)
        if not trial.killed:
            trial.detail = "ended before every kill point"
        trial.orphans = reap(tag, grace)
        rerun = _run((stage.resume or stage.command)(work, out), env={**os.environ, TAG: tag})
        trial.rerun_exit = rerun.returncode
        if rerun.returncode == 0:
            got = stage.digest(out)
            trial.same = got == reference
            if not trial.same:
                trial.detail = "differs: " + ", ".join(sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k)))[:300]
        else:
            trial.detail = (rerun.stdout + rerun.stderr).strip().splitlines()[-1][:300] if (rerun.stdout + rerun.stderr).strip() else ""
        trial.orphans += reap(tag, grace)
        trials.append(trial)
        log(f"  {name} kill {k + 1}/{kills} at {trial.kill_at:.1f} s of {duration:.1f}: {'survived' if trial.survived else 'NOT survived'}"
            + (f" ({trial.detail})" if trial.detail else "") + (f", orphans {trial.orphans}" if trial.orphans else ""))
        if trial.survived:  # a failed trial's output is kept to look at
            shutil.rmtree(out, ignore_errors=True)
    survived = sum(t.survived for t in trials)
    return {"stage": name, "reference_seconds": round(duration, 2), "kills": kills, "survived": survived,
            "trials": [{**t.__dict__, "survived": t.survived} for t in trials]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per stage")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    ap.add_argument("--work", type=Path, default=Path("results/chaos"), help="where inputs and runs go")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    ap.add_argument("--grace", type=float, default=GRACE, help="seconds a killed stage's processes have to end")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or args.kills < 1:
        print(f"error: unknown stages {unknown} (known: {', '.join(STAGES)}) or --kills < 1", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    build_inputs(args.work)
    rng = random.Random(args.seed)
    results = [chaos(s, args.work, args.kills, rng, args.grace) for s in stages]
    for r in results:
        print(f"{r['stage']}: kills survived {r['survived']}/{r['kills']}")
    (args.work / "chaos.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["survived"] == r["kills"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
