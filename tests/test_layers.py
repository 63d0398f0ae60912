"""The package's shape: one installed package `fsar`, layers that point down
(cli -> train -> pipeline), no import cycles, tools outside the package, and commands that
work from a folder holding its own train.py and pipeline/."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"pipeline": 0, "train": 1, "cli": 2}  # a module may import its own layer and those below


def package_modules() -> dict[str, Path]:
    """{fsar.<layer>.<module>: file} of every module of the installed package."""
    out = {"fsar": ROOT / "fsar" / "__init__.py"}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("fsar", *(parts[:-1] if parts[-1] == "__init__" else parts)))
            out[name] = path
    return out


def imports_of(path: Path, name: str) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement in `path`, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.append((base, node.lineno))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]  # `from pkg import module`
    return out


def resolve(imported: str, modules: dict[str, Path]) -> str | None:
    """The package module `imported` refers to (its longest known prefix), or None if outside fsar."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else -1


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for imported, _ in imports_of(path, name):
            target = resolve(imported, modules)
            if target and target != name and not name.startswith(target + "."):  # a module's own package runs first anyway
                edges[name].add(target)
    return edges


def test_layers_point_down_and_only_fsar_names_are_imported():
    modules = package_modules()
    bad = []
    for name, path in modules.items():
        for imported, line in imports_of(path, name):
            top = imported.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top in (*LAYERS, "tools", "tests"):
                bad.append(f"{where} imports {imported!r}: the package imports only fsar.* names, and never tools or tests")
                continue
            target = resolve(imported, modules)
            if target and layer(target) > layer(name) >= 0:
                bad.append(f"{where}: {name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not bad, "\n".join(dict.fromkeys(bad))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_through_lazy_imports():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_layer_test_catches_an_upward_import_and_a_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from fsar.train.heads import HEADS\n")
    assert resolve(imports_of(probe, "fsar.pipeline.probe")[0][0], package_modules()) == "fsar.train.heads"
    assert layer("fsar.train.heads") > layer("fsar.pipeline.probe")


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(("fsar", *p.parent.relative_to(ROOT).parts)) for lay in LAYERS for p in (ROOT / lay).rglob("__init__.py")}
    assert folders | {"fsar"} == declared
    missing = [str(d.relative_to(ROOT)) for lay in LAYERS for d in [ROOT / lay, *(ROOT / lay).rglob("*")]
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert not missing, f"folders of modules without __init__.py (not installed): {missing}"


@pytest.fixture
def hostile_dir(tmp_path) -> Path:
    """A user's working folder with its own train.py, pipeline/ and cli.py, each failing loudly if imported."""
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")
    (tmp_path / "cli.py").write_text("raise SystemExit('the user cli.py was imported')\n")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("raise SystemExit('the user pipeline/ was imported')\n")
    return tmp_path


def test_commands_run_from_a_folder_with_its_own_train_py_and_pipeline(hostile_dir, tiny_chain):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(hostile_dir)}  # as if the user's folder were on the path too
    for cmd in (["fsar-data", "--help"], ["fsar-train", "--help"], ["fsar-reproduce", "--help"], ["fsar-report", "--help"],
                ["fsar-eval", "out", "--cache", str(tiny_chain["cache"]), "--method", "protonet", "--episodes", "20"]):
        done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=hostile_dir, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}: {done.stdout[-400:]} {done.stderr[-800:]}"
    for module in ("fsar.cli.data", "fsar.train.reproduce"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=hostile_dir, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-800:]


def test_tools_run_from_the_checkout_whose_folders_share_those_names(tiny_chain):
    done = subprocess.run([sys.executable, "-m", "tools.findings.feature_stats", "--cache", str(tiny_chain["cache"]), "--split", "test"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert "cosine" in done.stdout


def test_the_package_imports_as_fsar_only():
    done = subprocess.run([sys.executable, "-c", "import fsar, fsar.pipeline, fsar.train, fsar.cli; import train"], cwd="/", capture_output=True, text=True)
    assert done.returncode != 0 and "No module named 'train'" in done.stderr
