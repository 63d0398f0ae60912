"""Wheels for a GPU machine with no network: download here, carry in parts, join and install there.

    python -m tools.gpu_check.wheels download   # here: pip download the wheels (cp312, manylinux x86-64)
    python -m tools.gpu_check.wheels pack       # here: split, build the decode corpus, lay out carry batches
    python -m tools.gpu_check.wheels install    # there: join the parts that arrived, check, pip install

The GPU machine (see tools/gpu_check/README.md) has Python 3.12, torch, h5py, typer, rich,
safetensors, matplotlib and opencv, but none of the packages in `WHEELS`. A device call carries at
most 64 MiB with the working tree, so `pack` lays everything that must travel (the decode
benchmark's corpus, the real clips, the wheels) into folders `build/gpu-check/carry/bN`, each
filled to what one call carries: a wheel that does not fit travels as parts (`WHEEL.partNNN`),
cut where a batch is full. Ignored files stay on a warm machine between calls, so the batches
arrive one call after another and `install` joins and installs each wheel once it is whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "gpu-check"  # build/ is ignored by git: nothing here is committed
DOWNLOADS = BUILD / "wheels"
CARRY = BUILD / "carry"
CORPUS = BUILD / "corpus"
CORPUS_SCALE = 0.1  # the GPU run's decode corpora: 2 to 12 clips each, repeated as often as a timed pass needs
REAL_CLIPS = ROOT.parent / "shared" / "data" / "real-clips"

# (name, version, why). Versions are those the tests pass with here; each is one the GPU machine
# lacks (its own packages, such as numpy, pyyaml, attrs, six, click or requests, are not carried).
WHEELS: list[tuple[str, str, str]] = [
    ("nvidia-dali-cuda130", "2.4.0", "--decoder dali (NVDEC)"),
    ("astunparse", "1.6.3", "DALI"),
    ("gast", "0.7.0", "DALI"),
    ("libcst", "1.9.0", "DALI"),
    ("makefun", "1.16.0", "DALI"),
    ("nvtx", "0.2.17", "DALI"),
    ("optree", "0.20.0", "DALI"),
    ("open_clip_torch", "3.3.0", "backbones"),
    ("ftfy", "6.3.1", "open_clip"),
    ("wcwidth", "0.9.4", "ftfy"),
    ("webdataset", "1.0.2", "shards"),
    ("braceexpand", "0.1.7", "webdataset"),
    ("av", "18.1.0", "PyAV decoder"),
    ("simplejpeg", "1.9.0", "JPEG frames"),
    ("ray", "2.60.0", "shard and embed workers"),
    ("jsonschema", "4.26.0", "ray"),
    ("jsonschema-specifications", "2025.9.1", "jsonschema"),
    ("referencing", "0.37.0", "jsonschema"),
    ("rpds-py", "2026.9.1", "referencing"),
]

# Not carried: DALI's requirements nvidia-nvimgcodec-cu13 (24 MiB) and nvidia-libnvcomp-cu13 (27 MiB).
# libdali opens libnvimgcodec for its image decoders and libnvcomp for `inflate` only when those
# operators run (neither is a link-time dependency), and its video decoder ran here with both blocked.

PYTHON_VERSION = "3.12"
# pip matches manylinux_2_N exactly: every N a wheel may name, up to the GPU machine's glibc (2.39).
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(5, 40)]
CALL_BYTES = 64 * 2**20  # what one device call carries: the working tree and the named paths


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(dest: Path = DOWNLOADS) -> list[Path]:
    """pip download every wheel of `WHEELS` for CPython 3.12 on manylinux x86-64 into `dest` (once).

    Returns:
        The wheel files, in `WHEELS` order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
        *platform_args, "-d", str(dest), *(f"{name}=={version}" for name, version, _ in WHEELS),
    ]
    subprocess.run(cmd, check=True)
    return [wheel_file(dest, name, version) for name, version, _ in WHEELS]


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def wheel_file(folder: Path, name: str, version: str) -> Path:
    """The wheel of `name`=`version` in `folder` (wheel names spell the project with underscores)."""
    for p in folder.glob("*.whl"):
        dist, ver = p.name.split("-")[:2]
        if _normal(dist) == _normal(name) and ver == version:
            return p
    raise FileNotFoundError(f"no wheel of {name}=={version} in {folder}: run python -m tools.gpu_check.wheels download")


def tree_bytes() -> int:
    """Bytes of the working tree a device call sends without carry: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / n).stat().st_size for n in out.decode().split("\0") if n and (ROOT / n).is_file())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


Piece = tuple[str, int, int]  # (item name, offset, bytes): a whole item, or a part of a file


def plan_batches(folders: list[tuple[str, int]], files: list[tuple[str, int]], capacity: int) -> list[list[Piece]]:
    """Fill batches of at most `capacity` bytes: each folder whole (first fit, largest first),
    then `files` as one stream, a file cut where a batch is full and continued in the next, so
    that no call carries less than it could: ceil(total / capacity) batches where the folders
    leave no gaps.

    Raises:
        ValueError: a folder larger than `capacity`.
    """
    batches: list[list[Piece]] = []
    room: list[int] = []
    for name, size in sorted(folders, key=lambda f: -f[1]):
        if size > capacity:
            raise ValueError(f"{name} is {size / 2**20:.1f} MiB, more than one call carries beside the working tree ({capacity / 2**20:.1f} MiB)")
        k = next((i for i, r in enumerate(room) if r >= size), None)
        if k is None:
            batches.append([])
            room.append(capacity)
            k = len(batches) - 1
        batches[k].append((name, 0, size))
        room[k] -= size

    def stream(name: str, size: int) -> None:  # into the first batch with room, on into the next ones
        offset = 0
        while offset < size:
            k = next((i for i, r in enumerate(room) if r > 0), None)
            if k is None:
                batches.append([])
                room.append(capacity)
                k = len(batches) - 1
            n = min(room[k], size - offset)
            batches[k].append((name, offset, n))
            room[k] -= n
            offset += n

    for name, size in files:
        stream(name, size)
    return batches


def pack(downloads: Path = DOWNLOADS, carry: Path = CARRY, margin: int = 2 * 2**20) -> dict:
    """Lay out the carry batches `carry/b1`, `b2`, ...: the decode corpus and the real clips whole,
    then the wheels (`plan_batches`), each batch plus the working tree under one call's 64 MiB less
    `margin`. A wheel cut across batches travels as `WHEEL.partNNN` files. Writes carry/plan.json
    and, in every batch, wheels.json (each wheel's name, size, sha256 and parts, for `install`).

    Returns:
        The plan: the batches with their files and bytes, the wheels, the tree's bytes.
    """
    wheels = {w.name: w for w in (wheel_file(downloads, name, version) for name, version, _ in WHEELS)}
    folders = {label: folder for folder, label in ((CORPUS, "corpus"), (REAL_CLIPS, "real-clips")) if folder.is_dir()}
    tree = tree_bytes()
    capacity = CALL_BYTES - tree - margin
    sizes = sorted(((n, p.stat().st_size) for n, p in wheels.items()), key=lambda i: -i[1])
    batches = plan_batches([(n, _folder_bytes(p)) for n, p in folders.items()], sizes, capacity)
    pieces: dict[str, list[Piece]] = {}
    for batch in batches:
        for piece in batch:
            pieces.setdefault(piece[0], []).append(piece)
    index = []
    for name, path in wheels.items():
        split = len(pieces[name]) > 1
        parts = [f"{name}.part{k:03d}" if split else name for k in range(len(pieces[name]))]
        index.append({"wheel": name, "bytes": path.stat().st_size, "sha256": sha256(path), "parts": parts})
    part_of = {(w["wheel"], k): part for w in index for k, part in enumerate(w["parts"])}
    if carry.exists():
        shutil.rmtree(carry)
    plan = {"tree_bytes": tree, "capacity_bytes": capacity, "wheels": index, "batches": []}
    for k, batch in enumerate(batches, 1):
        bdir = carry / f"b{k}"
        (bdir / "wheels").mkdir(parents=True)
        files = []
        for name, offset, size in batch:
            if name in folders:
                shutil.copytree(folders[name], bdir / name)
                files.append(name + "/")
                continue
            part = part_of[(name, [p[1] for p in pieces[name]].index(offset))]
            with open(wheels[name], "rb") as src, open(bdir / "wheels" / part, "wb") as dst:
                src.seek(offset)
                dst.write(src.read(size))
            files.append(part)
        (bdir / "wheels.json").write_text(json.dumps(index, indent=1))
        plan["batches"].append({"path": str(bdir.relative_to(ROOT)), "bytes": sum(p[2] for p in batch), "files": files})
    (carry / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


def join_parts(wheel: dict, found: dict[str, Path], dest: Path) -> Path:
    """Join `wheel`'s parts (`found`: part name -> file) into dest/WHEEL and check its sha256.

    Raises:
        ValueError: the joined file is not the wheel that was packed.
    """
    whl = dest / wheel["wheel"]
    with open(whl, "wb") as f:
        for part in wheel["parts"]:
            with open(found[part], "rb") as src:
                shutil.copyfileobj(src, f)
    if sha256(whl) != wheel["sha256"]:
        whl.unlink()
        raise ValueError(f"{wheel['wheel']}: sha256 differs after joining {len(wheel['parts'])} parts: carry its batches again")
    return whl


def join_arrived(carry: Path, joined: Path) -> dict:
    """Join every wheel whose parts have all arrived under `carry/b*` into `joined`, each checked
    against its sha256; wheels marked installed there (WHEEL.installed) are left alone.

    Returns:
        {"joined": [paths], "already": [...], "waiting": {wheel: missing parts}, "failed": {wheel: reason}}.
    """
    index = {}
    for manifest in sorted(carry.glob("b*/wheels.json")):
        for w in json.loads(manifest.read_text()):
            index[w["wheel"]] = w
    found = {p.name: p for p in carry.glob("b*/wheels/*")}
    joined.mkdir(parents=True, exist_ok=True)
    out: dict = {"joined": [], "already": [], "waiting": {}, "failed": {}}
    for name, w in index.items():
        if (joined / (name + ".installed")).exists():
            out["already"].append(name)
            continue
        missing = [p for p in w["parts"] if p not in found]
        if missing:
            out["waiting"][name] = missing
            continue
        try:
            out["joined"].append(join_parts(w, found, joined))
        except ValueError as e:
            out["failed"][name] = str(e)
    return out


def install(carry: Path = CARRY, joined: Path = Path("/tmp/gpu-check-wheels"), python: str = sys.executable) -> dict:
    """Join the wheels that have arrived (`join_arrived`) and pip install them with no index and
    no dependencies (the machine's own packages stand); each installed one is marked so that a
    later call on this machine leaves it alone.

    Returns:
        {"installed": [...], "already": [...], "waiting": {wheel: missing parts}, "failed": {wheel: reason}}.
    """
    out = join_arrived(carry, joined)
    ready = out.pop("joined")
    out["installed"] = []
    if ready:
        cmd = [python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(joined), "--no-deps",
               "--no-compile", "--disable-pip-version-check", "--root-user-action=ignore", *map(str, ready)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            reason = (r.stderr.strip().splitlines() or ["no message"])[-1][:300]
            out["failed"].update({whl.name: f"pip install failed: {reason}" for whl in ready})
        else:
            for whl in ready:
                (joined / (whl.name + ".installed")).touch()
                whl.unlink()  # installed: no second copy on the disk
                out["installed"].append(whl.name)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("download", "pack", "install", "list"))
    args = ap.parse_args(argv)
    if args.command == "download":
        for w in download():
            print(f"{w.stat().st_size / 2**20:8.1f} MiB  {w.name}")
    elif args.command == "list":
        for name, version, why in WHEELS:
            try:
                w = wheel_file(DOWNLOADS, name, version)
                size = f"{w.stat().st_size / 2**20:8.1f} MiB"
            except FileNotFoundError:
                size = "   (not downloaded)"
            print(f"{size}  {name}=={version}  ({why})")
    elif args.command == "pack":
        if not CORPUS.is_dir() or not any(CORPUS.glob("corpus*.spec.json")):
            print(f"building the decode corpus (scale {CORPUS_SCALE}) in {CORPUS}: minutes, once ...", flush=True)
        from tools.bench.decode import build_corpus

        build_corpus(CORPUS, CORPUS_SCALE)  # reused when already there: the GPU run finds it whole
        plan = pack()
        print(f"working tree {plan['tree_bytes'] / 2**20:.1f} MiB; each call may carry {plan['capacity_bytes'] / 2**20:.1f} MiB more")
        for b in plan["batches"]:
            print(f"{b['path']}: {b['bytes'] / 2**20:.1f} MiB: {', '.join(b['files'])}")
    else:
        result = install()
        print(json.dumps(result, indent=1))
        if result["failed"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
