"""The parity fixtures' on-disk format: its one writer (used by tools/parity/make_fixtures.py) and reader.

A fixture is one safetensors file in `fixtures/` whose tensors are named by role:

- `input.<name>`: seeded inputs fed to the authors' code;
- `weight.<official parameter name>`: the official module's state dict, under its own names;
- `output.<name>`: what the authors' code computed from them.

Inputs and weights hold float16-representable values and are stored as float16 (half the
bytes; both sides compute from the very same numbers, upcast to float64). Outputs are stored
as float64. The file's metadata entry "parity" is a JSON object: the official repository and
commit, the seed, shapes and settings the tests need.

`manifest.json` records, per fixture, the sha256 of the file and of its seeded part (inputs and
weights) with the commit, plus the sha256 of the generating script, so a test can tell whether
the files are what the script at this revision writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MANIFEST = FIXTURES / "manifest.json"
SCRIPT_DIR = Path(__file__).resolve().parents[2] / "tools" / "parity"
SEEDED = ("input.", "weight.")


def round_fp16(t: torch.Tensor) -> torch.Tensor:
    """`t` rounded to float16 values, returned as float64 (what both sides compute from)."""
    return t.detach().to(torch.float16).to(torch.float64)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of `tensors`, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def script_sha256(script_dir: Path = SCRIPT_DIR) -> str:
    """sha256 over the generating script's Python files (name and content, in name order)."""
    h = hashlib.sha256()
    for path in sorted(Path(script_dir).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def write_fixture(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, str]:
    """Write one fixture file; returns its manifest entry (file and seeded-part sha256).

    Raises:
        ValueError: a tensor name without a role prefix, or a seeded tensor whose values are
            not float16-representable (it would not be what the official code saw).
    """
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if name.startswith(SEEDED):
            half = t.to(torch.float16)
            if t.is_floating_point() and not torch.equal(half.to(t.dtype), t):
                raise ValueError(f"{name}: values are not float16-representable; round them with round_fp16 before use")
            out[name] = half if t.is_floating_point() else t
        elif name.startswith("output."):
            out[name] = t.to(torch.float64) if t.is_floating_point() else t
        else:
            raise ValueError(f"{name}: tensor names start with input., weight. or output.")
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"parity": json.dumps(meta, sort_keys=True)})
    return {"file_sha256": file_sha256(path), "seeded_sha256": tensors_sha256({k: v for k, v in out.items() if k.startswith(SEEDED)})}


@dataclass
class Fixture:
    """A loaded fixture: its tensors (floats upcast to float64) and metadata."""

    name: str
    tensors: dict[str, torch.Tensor]
    meta: dict

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise KeyError(f"{self.name} has no tensor {key!r}; it has {sorted(self.tensors)}")
        return self.tensors[key]

    def weights(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Official weights whose names start with `prefix`, keyed by the rest of the name."""
        start = "weight." + prefix
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}


def load_fixture(name: str) -> Fixture:
    """Read fixtures/<name>.safetensors; float tensors come back as float64."""
    from safetensors import safe_open

    path = FIXTURES / f"{name}.safetensors"
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["parity"])
        for key in f.keys():
            t = f.get_tensor(key)
            tensors[key] = t.to(torch.float64) if t.is_floating_point() else t
    return Fixture(name, tensors, meta)


def read_manifest() -> dict:
    return json.loads(MANIFEST.read_text())
