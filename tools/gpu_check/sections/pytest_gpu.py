"""`pytest -m gpu`: DALI against PyAV on the real clips and synthetic videos, and the GPU views; one part per test."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tools.gpu_check.config import CheckConfig
from tools.gpu_check.record import Recorder, Skip

ROOT = Path(__file__).resolve().parents[3]


def junit_cases(xml: Path) -> list[tuple[str, str, str]]:
    """(test id, ok | failed | skipped, reason) of each test case in a JUnit XML report."""
    out = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        status, reason = "ok", ""
        for tag, st in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                status, reason = st, (node.get("message") or node.text or tag).strip().splitlines()[0][:300]
                break
        out.append((test, status, reason))
    return out


def run(cfg: CheckConfig, rec: Recorder) -> None:
    if cfg.dry_run:
        raise Skip("dry run: the gpu tests need a CUDA GPU")
    xml = cfg.work / "pytest-gpu.xml"
    # addopts deselects the gpu marker by default; -o addopts= drops it, and -m gpu selects them.
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-m", "gpu", "-ra", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    done = subprocess.run(cmd, cwd=ROOT, timeout=max(10.0, cfg.budgets["pytest-gpu"] - 10))
    rec.set("exit_code", done.returncode)
    if not xml.exists():
        raise RuntimeError(f"pytest wrote no report (exit code {done.returncode}); see the log")
    cases = junit_cases(xml)
    if not cases:
        raise RuntimeError(f"no test carries the gpu marker (pytest exit code {done.returncode})")
    for test, status, reason in cases:
        entry = rec.data["parts"].setdefault(test, {})
        entry.update(status=status, **({"reason": reason} if reason else {}))
    rec.write()
