"""The machine: GPU model, driver, CUDA, and the versions of every package the GPU paths use."""

from __future__ import annotations

import importlib
import subprocess
from importlib import metadata

from tools.gpu_check.config import CheckConfig
from tools.gpu_check.record import Recorder, Skip

PACKAGES = ("torch", "torchvision", "open_clip_torch", "nvidia-dali-cuda130", "av", "ray", "webdataset", "simplejpeg",
            "numpy", "h5py", "opencv-python-headless", "torchcodec", "pytest")
# What the GPU paths import (fsar's own dependencies), and the package that brings each: what to carry when one is missing.
MODULES = {"open_clip": "open_clip_torch", "webdataset": "webdataset", "av": "av", "simplejpeg": "simplejpeg",
           "ray": "ray", "nvidia.dali": "nvidia-dali-cuda130", "h5py": "h5py", "safetensors": "safetensors", "typer": "typer"}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> dict:
    """Name, driver, memory, power limit and top SM clock as nvidia-smi reports them for GPU 0."""
    fields = ("name", "driver_version", "memory.total", "power.limit", "clocks.max.sm")
    out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    if out.returncode:
        raise RuntimeError(f"nvidia-smi failed: {out.stderr.strip()[:200]}")
    return dict(zip(fields, (v.strip() for v in out.stdout.splitlines()[0].split(","))))


def run(cfg: CheckConfig, rec: Recorder) -> None:
    import torch

    from fsar.pipeline.machine import machine_info

    rec.set("machine", machine_info())
    rec.set("versions", {p: _version(p) for p in PACKAGES})
    with rec.part("packages import") as part:
        missing = {}
        for module, package in MODULES.items():
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - ImportError, or a library that fails to load
                missing[module] = f"{package}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        part["missing"] = missing
        if missing:
            raise RuntimeError("cannot import " + "; ".join(f"{m} ({why})" for m, why in missing.items()))
    with rec.part("CUDA GPU") as part:
        if cfg.dry_run:
            raise Skip("dry run: CPU only")
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no GPU (built for CUDA {torch.version.cuda})")
        p = torch.cuda.get_device_properties(0)
        part.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), count=torch.cuda.device_count())
        try:
            part["nvidia_smi"] = nvidia_smi()
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            part["nvidia_smi"] = f"unavailable: {e}"
