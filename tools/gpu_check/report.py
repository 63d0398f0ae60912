"""GPU.json (everything measured, as recorded) and GPU.md (the same for a reader) in the output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

JSON_NAME, MD_NAME = "GPU.json", "GPU.md"


def read_results(out: Path) -> dict | None:
    """The last results written to `out`, or None."""
    path = Path(out) / JSON_NAME
    return json.loads(path.read_text()) if path.exists() else None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(out: Path, results: dict) -> tuple[Path, Path]:
    """Write GPU.json and GPU.md into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / JSON_NAME, json.dumps(results, indent=1, default=str) + "\n")
    _atomic_write(out / MD_NAME, markdown(results))
    return out / JSON_NAME, out / MD_NAME


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _cell(part: dict, key: str) -> str:
    """A measurement, or the part's status and reason where it has none."""
    if part.get("status") == "ok" or key in part:
        return _fmt(part.get(key))
    return f"{part.get('status', '?')}: {part.get('reason', '')}".replace("|", "/")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(str(c).replace("\n", " ") for c in r) + " |" for r in rows)]


def _parts_table(section: dict, keys: list[str]) -> list[str]:
    rows = [[name, p.get("status", "?"), *(_cell(p, k) for k in keys), p.get("reason", "")] for name, p in section.get("parts", {}).items()]
    return _table(["part", "status", *keys, "reason"], rows)


def _values_table(section: dict, first: str = "part", hide: tuple[str, ...] = ()) -> list[str]:
    """One row per part: its status, its measurements as `key value`, its reason."""
    rows = []
    for name, p in section.get("parts", {}).items():
        shown = {k: x for k, x in p.items() if k not in ("status", "reason", *hide)}
        rows.append([name, p.get("status", "?"), "; ".join(f"{k} {_fmt(x)}" for k, x in shown.items()), p.get("reason", "")])
    return _table([first, "status", "values", "reason"], rows)


def _environment(s: dict) -> list[str]:
    values = s.get("values", {})
    gpu = s.get("parts", {}).get("CUDA GPU", {})
    smi = gpu.get("nvidia_smi") if isinstance(gpu.get("nvidia_smi"), dict) else {}
    machine = values.get("machine", {})
    lines = []
    if gpu.get("status") == "ok":
        lines.append(f"GPU: **{gpu['name']}**, {gpu['memory_gib']} GiB, {gpu['multiprocessors']} SMs, compute capability {gpu['capability']}; "
                     f"driver {smi.get('driver_version', '?')}, CUDA {gpu['cuda']} (torch's), cuDNN {gpu['cudnn']}, power limit {smi.get('power.limit', '?')}.")
    else:
        lines.append(f"GPU: none ({gpu.get('status', '?')}: {gpu.get('reason', '')}).")
    if machine:
        lines.append(f"Machine: {machine.get('cpus')} x {machine.get('cpu')}, {machine.get('memory_gib')} GiB, {machine.get('os')}, Python {machine.get('python')}.")
    versions = values.get("versions", {})
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + "; not installed: " + (", ".join(k for k, v in versions.items() if not v) or "none") + ".")
    imports = s.get("parts", {}).get("packages import", {})
    if imports.get("status") == "failed":
        lines.append(f"Missing: {imports.get('reason')}")
    return lines


def _decode(s: dict) -> list[str]:
    parts = s.get("parts", {})
    corpora = list(dict.fromkeys(p["corpus"] for p in parts.values() if "corpus" in p))
    methods = list(dict.fromkeys(p["method"] for p in parts.values() if "method" in p))
    rows = []
    for c in corpora:
        mine = {p["method"]: p for p in parts.values() if p.get("corpus") == c}
        clips = next(iter(mine.values())).get("clips", "")
        rates = {m: p.get("videos_per_s") for m, p in mine.items() if isinstance(p.get("videos_per_s"), (int, float))}
        pyav = next((v for m, v in rates.items() if m.startswith("pyav")), None)
        dali = max((v for m, v in rates.items() if m.startswith("dali")), default=None)
        ratio = f"{dali / pyav:.2f}" if pyav and dali else ""
        rows.append([c, clips, *(_cell(mine[m], "videos_per_s") if m in mine else "" for m in methods), ratio])
    frames = s.get("values", {}).get("frames_per_video", "")
    return [f"Videos/s on one GPU, {frames} frames per video resized to a 256-pixel short side (same sampling for every reader):", "",
            *_table(["corpus", "clips", *methods, "best DALI / PyAV all cores"], rows)]


def _embed(s: dict) -> list[str]:
    v = s.get("values", {})
    b = v.get("backbone", {})
    lines = [f"{b.get('name', '?')}, {b.get('weights', '?')}, {b.get('activation', '?')}, {b.get('image_size', '?')} px, batch {v.get('batch', '?')}.", ""]
    return lines + _values_table(s, "measurement", hide=("precision",))


def _train(s: dict) -> list[str]:
    v = s.get("values", {})
    lines = [f"One optimiser step, {v.get('episode', '?')}, {v.get('backbone', '?')}, fp32:", ""]
    keys = ["episodes_per_step", "seconds_per_step", "peak_memory_gib", "peak_reserved_gib", "trainable_parameters"]
    return lines + _parts_table(s, keys)


def _chain(s: dict) -> list[str]:
    rows = []
    for name, p in s.get("parts", {}).items():
        shown = {k: p[k] for k in ("decoders", "workers", "videos_per_s", "activation", "precision", "accuracy", "ci95") if k in p}
        if "summary" in p:
            shown.update({k: p["summary"][k] for k in ("steps", "best_val_accuracy", "train_seconds") if k in p["summary"]})
        rows.append([name, p.get("status", "?"), "; ".join(f"{k} {_fmt(x)}" for k, x in shown.items()), p.get("reason", "")])
    return _table(["step", "status", "values", "reason"], rows)


DETAIL = {"environment": _environment, "decode": _decode, "embed": _embed, "train": _train, "chain": _chain}


def markdown(results: dict) -> str:
    """GPU.md: what ran where, each section's status, then each section's figures."""
    sections = results.get("sections", {})
    lines = ["# GPU check", ""]
    if results.get("dry_run"):
        lines += ["**Dry run on a CPU**: tiny sizes, GPU-only parts skipped; nothing here measures a GPU.", ""]
    lines += [f"{results.get('date', '?')}, commit {results.get('commit', '?')}, `{results.get('command', '')}`: "
              f"{results.get('seconds', 0):.0f} s (section budgets {results.get('budget_seconds', 0):.0f} s).", ""]
    env = sections.get("environment")
    if env:
        lines += _environment(env) + [""]
    rows = [[name, s.get("status", "?"), f"{s.get('seconds', 0):.0f} / {s.get('budget_seconds', 0):.0f}", s.get("run_at", ""), s.get("reason", "")] for name, s in sections.items()]
    lines += _table(["section", "status", "seconds / budget", "run at", "reason"], rows) + [""]
    for name, s in sections.items():
        if name == "environment":
            continue
        lines += [f"## {name}", ""]
        lines += (DETAIL[name](s) if name in DETAIL else _values_table(s)) + [""]
        lines += [f"Log: `{s.get('log', '')}`.", ""]
    return "\n".join(lines)
