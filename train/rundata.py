"""The data a training run trains on: recorded when it starts, found and checked when it is used again.

RUN_DIR/data.json holds the absolute path of the run's embedding cache (adapter mode) or
shard folder (finetune and peft modes) and that data's identity:

- a cache: `pipeline.embed.cache.cache_identity` (the embedding weights' checksum, the
  shard manifest's identity, the videos of every split and a checksum of a sample of
  their frames);
- a shard folder: the manifest's identity (dataset, sampling, decoder, split lists) and,
  per shard file, its size and a sha256 of its first HEAD_BYTES bytes.

Neither reads the whole data, so checking it on every evaluation costs well under a second
however large it is. Data moved elsewhere is found by passing its new path (`--cache`,
`--shards`); it is used only if its identity is the recorded one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fsar.pipeline.atomic import write_json_atomic
from fsar.train.config import TrainConfig

DATA_FILE = "data.json"
HEAD_BYTES = 1 << 14  # of each shard file, hashed into its identity: the tar headers, the first sample's json and class, the start of its first frame


def data_kind(config: TrainConfig) -> str:
    """'cache' (adapter mode) or 'shards' (finetune and peft modes): the config field naming the run's data."""
    return "cache" if config.mode == "adapter" else "shards"


def flag(kind: str) -> str:
    return f"--{kind}"


def _what(kind: str) -> str:
    return "embedding cache" if kind == "cache" else "shard folder"


def with_absolute_data(config: TrainConfig) -> TrainConfig:
    """`config` with its cache and shard paths absolute, so that the run finds them from any directory."""
    import dataclasses

    changes = {k: str(Path(getattr(config, k)).expanduser().resolve()) for k in ("cache", "shards") if getattr(config, k)}
    return dataclasses.replace(config, **changes) if changes else config


def shard_identity(path: str | Path) -> dict:
    """The identity of a shard folder (see the module)."""
    from fsar.pipeline.shard.plan import identity

    root = Path(path)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no shard folder at {root} (no manifest.json): check the path, or write it with `fsar-data shard`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        ident = identity(manifest)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest_path} is damaged ({e}): re-run `fsar-data shard`") from None
    files = {}
    for split, info in sorted(manifest["splits"].items()):
        for name in info["shards"]:
            tar = root / split / name
            if tar.exists():  # a failed shard is absent, and stays so in the record
                with open(tar, "rb") as f:
                    files[f"{split}/{name}"] = [tar.stat().st_size, hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()]
    return {"manifest": ident, "files": files}


def identity(kind: str, path: str | Path) -> dict:
    """The identity of a cache or a shard folder."""
    if kind == "cache":
        from fsar.pipeline.embed.cache import cache_identity

        return cache_identity(path)
    return shard_identity(path)


def record(config: TrainConfig, run_dir: Path, ident: dict) -> None:
    """Write RUN_DIR/data.json for `config`'s data, whose identity is `ident`."""
    kind = data_kind(config)
    write_json_atomic(run_dir / DATA_FILE, {"kind": kind, "path": getattr(config, kind), "identity": ident})


def recorded(run_dir: Path) -> dict | None:
    """RUN_DIR/data.json, or None for a run from before runs recorded their data."""
    path = Path(run_dir) / DATA_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is damaged ({e}): delete it to use the run without checking its data") from None


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The fields in which two identities differ, said as a user reads them."""
    names = {
        "weights_state_sha256": "the weights that embedded it",
        "shards": "the shards it was embedded from",
        "manifest": "the videos, split lists or sampling of the shards",
        "frames_sample_sha256": "the embeddings",
        "videos_sha256": "the videos",
        "frames_shape": "the frames' shape",
        "files": "the shard files",
    }
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key in ("splits",):
            for split in sorted(set(a) | set(b)):
                if split not in a or split not in b:
                    out.append(f"split {split} {'added' if split not in a else 'missing'}")
                else:
                    out += differences(a[split], b[split], f"split {split}: ")
        elif key == "videos":
            out.append(f"{prefix}{b} videos, not {a}")
        else:
            out.append(prefix + names.get(key, key))
    return out


def check_same(kind: str, path: str | Path, ident: dict, expected: dict, recorded_path: str) -> None:
    """Raise unless `ident` (of the data at `path`) is `expected` (the run's record)."""
    diff = differences(expected, ident)
    if diff:
        raise ValueError(
            f"{path} is not the {_what(kind)} this run trained on (it differs in {'; '.join(diff)}): pass {flag(kind)} "
            f"with the {_what(kind)} it trained on (recorded as {recorded_path}), or train a new run on this one"
        )


def locate(run_dir: Path, config: TrainConfig, override: str | Path | None = None) -> str:
    """The absolute path of the run's data, checked to be the data it trained on: `override`
    where given (the data moved), else the path the run recorded.

    Raises:
        FileNotFoundError: the data is not there (the message says to pass --cache/--shards).
        ValueError: it is other data than the run trained on.
    """
    kind = data_kind(config)
    given = getattr(config, kind)
    if override is None and not given:
        raise ValueError(f"{run_dir}/config.json names no {kind}: pass {flag(kind)}")
    path = Path(override if override is not None else given).expanduser()
    if not path.is_absolute():  # a run from before runs recorded absolute paths: relative to where it trained, taken as here
        path = path.resolve()
    if not path.exists():
        if override is not None:
            raise FileNotFoundError(f"{flag(kind)} {path}: no such {'file' if kind == 'cache' else 'folder'}")
        raise FileNotFoundError(
            f"{path}, the {_what(kind)} this run trained on, is not there: pass {flag(kind)} PATH with where it is now "
            "(it is checked to be the same data)"
        )
    rec = recorded(run_dir)
    if rec is not None:
        check_same(kind, path, identity(kind, path), rec["identity"], rec["path"])
    return str(path.resolve())
