"""Running the authors' code from a user's checkout, untouched, on CPU.

- `check_checkout`: the checkout exists, has the files we run and (when .git is there) is at
  the pinned commit.
- `imported_from`: puts a checkout on sys.path for a `with` block, with minimal stand-ins for
  imports that the code under test never uses (debuggers, cloud storage, loggers) and that are
  not installed, then removes every module it loaded, so the three repositories (which all
  have top-level `utils`, `models`, `modules`, ...) never see each other's modules.
- `on_cpu`: `.cuda()` calls return the tensor or module unchanged (their constructors and
  loops call it unconditionally); float64 as the default dtype, so the tensors their code
  allocates itself (`torch.zeros(...)`) are float64 too.
- `capture_locals`: the local variables of one of their functions when it returns, for values
  their code computes but does not return (a loss it logs, the scores it ranks).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import torch
from torch import nn

PINNED = {
    "clip-fsar": ("alibaba-mmai-research/CLIP-FSAR", "30cf0a8cf5287a56a9f37bfceb28e82be776fc5d", "models/base/few_shot.py"),
    "actionclip": ("sallymmx/ActionCLIP", "31c34df17dce917d67127b7fb155922c4744f680", "modules/Visual_Prompt.py"),
    "vita-clip": ("TalalWasim/Vita-CLIP", "c85829935b4ff73f7e92f0b956f59a5a944a6569", "training/VitaCLIP_model.py"),
}


class CheckoutError(Exception):
    """A checkout that is missing, incomplete or at another commit (a user error)."""


def check_checkout(key: str, path: Path) -> str:
    """Validate the checkout of PINNED[key] at `path`; returns how its commit was established.

    Raises:
        CheckoutError: one line naming the path and the remedy.
    """
    repo, commit, probe = PINNED[key]
    clone = f"git clone https://github.com/{repo} {path} && git -C {path} checkout {commit[:7]}"
    if not (path / probe).is_file():
        raise CheckoutError(f"{path}: no {probe}; expected a checkout of {repo} at {commit[:7]} ({clone})")
    if not (path / ".git").exists():
        return "unverified (no .git)"
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise CheckoutError(f"{path}: git rev-parse HEAD failed ({e}); run it from a checkout of {repo}") from None
    if head != commit:
        raise CheckoutError(f"{path}: at commit {head[:7]}, expected {commit[:7]} of {repo}; run: git -C {path} checkout {commit[:7]}")
    return "verified"


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__parity_stub__ = True
    return module


def _noop(*args, **kwargs):
    return None


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def standard_stubs() -> dict[str, types.ModuleType]:
    """Stand-ins for third-party imports the code under test never calls, used when not installed.

    - ipdb (`set_trace`, imported at the top of few_shot.py and the training loop);
    - pkg_resources (only `packaging.version` to compare torch versions);
    - oss2, simplejson, psutil (cloud checkpoints, the JSON logger, memory stats);
    - wandb, dotmap (ActionCLIP's logging and config wrapper).
    """
    import packaging.version

    stubs = {
        "ipdb": _stub("ipdb", set_trace=_noop),
        "pkg_resources": _stub("pkg_resources", packaging=packaging),
        "oss2": _stub("oss2"),
        "simplejson": _stub("simplejson"),
        "psutil": _stub("psutil"),
        "wandb": _stub("wandb", log=_noop, init=_noop, watch=_noop),
        "dotmap": _stub("dotmap", DotMap=dict),
    }
    return {name: module for name, module in stubs.items() if not _installed(name)}


@contextlib.contextmanager
def imported_from(root: Path, subdirs: tuple[str, ...] = (".",), stubs: dict[str, types.ModuleType] | None = None):
    """sys.path gets root/<subdir> for each subdir; `stubs` fill sys.modules; all undone on exit.

    Modules imported from `root` (and the stubs) are dropped from sys.modules on exit. Python
    writes no bytecode into the checkout meanwhile.
    """
    root = Path(root).resolve()
    paths = [str((root / s).resolve()) for s in subdirs]
    before = set(sys.modules)
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path[:0] = paths
    added = {}
    for name, module in (stubs or {}).items():
        if name not in sys.modules:
            sys.modules[name] = added[name] = module
    try:
        yield
    finally:
        for p in paths:
            sys.path.remove(p)
        new = {name: sys.modules[name] for name in set(sys.modules) - before}
        drop = [name for name, module in new.items() if name in added or getattr(module, "__parity_stub__", False) or _origin(module).startswith(str(root))]
        for name in drop:
            sys.modules.pop(name, None)
        sys.dont_write_bytecode = bytecode


def _origin(module: types.ModuleType) -> str:
    """Where a module came from: its file, or a namespace package's first folder."""
    try:
        return str(getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), ""))
    except (KeyError, TypeError):
        return ""


def load_file_as(name: str, path: Path) -> types.ModuleType:
    """Import the file `path` as module `name` (for scripts whose names clash, like test.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def on_cpu(dtype: torch.dtype = torch.float64):
    """`.cuda()` is the identity on tensors and modules; `dtype` is the default float dtype."""
    saved = torch.Tensor.cuda, nn.Module.cuda, torch.get_default_dtype()
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved[0], saved[1]
        torch.set_default_dtype(saved[2])


@contextlib.contextmanager
def working_directory(path: Path):
    """Run inside `path` (CLIP-FSAR's config loader reads ./configs/pool/base.yaml)."""
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


@contextlib.contextmanager
def capture_locals(function):
    """Yields a dict that, after the block, holds `function`'s locals at its last return."""
    code = function.__code__
    seen: dict = {}
    previous = sys.getprofile()

    def hook(frame, event, arg):
        if event == "return" and frame.f_code is code:
            seen.clear()
            seen.update(frame.f_locals)

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(module: nn.Module, gen: torch.Generator, skip: tuple[str, ...] = ()) -> None:
    """Seeded float16-representable values for every parameter of `module` (names in `skip` kept).

    Matrices get N(0, 1/fan_in), LayerNorm-style weights (1-D, named *weight) 1 + N(0, 0.1^2),
    other vectors N(0, 0.1^2): every parameter differs from its default, so a weight mapped to
    the wrong place changes the output.
    """
    from parity_io import round_fp16

    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name.startswith(s) for s in skip):
                continue
            if p.ndim >= 2:
                fan_in = p[0].numel()
                value = torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in**0.5
            elif name.endswith("weight"):
                value = 1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            else:
                value = 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.copy_(round_fp16(value).to(p.dtype))


def state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """`module`'s parameters as fixture weights: weight.<prefix><official name>."""
    return {f"weight.{prefix}{k}": v.detach().clone() for k, v in module.named_parameters()}
