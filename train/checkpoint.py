"""Checkpoints without pickle: safetensors for weights and optimizer tensors, JSON for the rest.

RUN_DIR/checkpoints/<name>.safetensors   model weights
RUN_DIR/checkpoints/<name>.optim.safetensors  optimizer tensors (moments, step counts)
RUN_DIR/checkpoints/<name>.json          step, metrics, optimizer structure and both files' sha256,
                                          written last: a checkpoint counts only once its JSON exists
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fsar.pipeline.atomic import atomic_path, write_text_atomic
from fsar.pipeline.backbones import sha256_file


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, _, k = key.partition(".")
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, info: dict) -> Path:
    """Write checkpoint `name` (weights, optimizer, then the JSON that validates them); returns the JSON path."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {**info, "weights": weights.name, "weights_sha256": sha256_file(weights)}
    if optimizer is not None:
        tensors, structure = _optimizer_split(optimizer)
        optim = directory / f"{name}.optim.safetensors"
        with atomic_path(optim) as tmp:
            save_file(tensors, str(tmp))
        meta.update(optimizer=structure, optimizer_file=optim.name, optimizer_sha256=sha256_file(optim))
    path = directory / f"{name}.json"
    write_text_atomic(path, json.dumps(meta, indent=1) + "\n")
    return path


def load_checkpoint(directory: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load checkpoint `name` into `model` (and `optimizer`); returns its info.

    Raises:
        FileNotFoundError: no complete checkpoint of that name.
        ValueError: a file does not match the checksum recorded in its JSON.
    """
    from safetensors.torch import load_file

    path = directory / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}")
    meta = json.loads(path.read_text())
    weights = directory / meta["weights"]
    if sha256_file(weights) != meta["weights_sha256"]:
        raise ValueError(f"{weights} does not match the checksum in {path}: the checkpoint is damaged")
    model.load_state_dict(load_file(str(weights)))
    if optimizer is not None:
        if "optimizer_file" not in meta:
            raise ValueError(f"{path} has no optimizer state to resume from")
        optim = directory / meta["optimizer_file"]
        if sha256_file(optim) != meta["optimizer_sha256"]:
            raise ValueError(f"{optim} does not match the checksum in {path}: the checkpoint is damaged")
        optimizer.load_state_dict(_optimizer_join(load_file(str(optim)), meta["optimizer"]))
    return meta
