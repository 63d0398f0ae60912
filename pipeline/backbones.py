"""Frozen open_clip backbones: names, weights, and the model's own eval preprocessing on tensors.

Any open_clip model works, under its open_clip name (`ViT-B-16`) or OpenAI's spelling
(`ViT-B/16`). Two tiny configs are registered for tests and CPU runs: `fsar-tiny-vit`
(width 128, 2 layers, patch 32, 224 px) and `fsar-micro-vit` (width 64, 1 layer, 64 px).

Weights: a pretrained tag (default `openai`, as the papers use) through open_clip's own
download and cache, a local checkpoint file (`.safetensors`, or a `.pt`/`.bin` read with
`weights_only=True`), or `none` for a random initialisation from a fixed seed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.atomic import atomic_path

CONFIG_DIR = Path(__file__).parent / "backbone_configs"
_registered = False


def _open_clip():
    global _registered
    import open_clip

    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


def known_backbones() -> list[str]:
    return _open_clip().list_models()


def resolve_name(name: str) -> str:
    """An open_clip model name for `name`, accepting OpenAI spellings ('ViT-B/16' -> 'ViT-B-16')."""
    models = known_backbones()
    for candidate in (name, name.replace("/", "-")):
        if candidate in models:
            return candidate
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(models)}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BackboneSpec:
    """Which model and which weights; `pretrained` is a tag, a file path or 'none'."""

    name: str
    pretrained: str
    seed: int = 0


def default_pretrained(name: str) -> str:
    tags = _open_clip().list_pretrained_tags_by_model(resolve_name(name))
    return "openai" if "openai" in tags else (tags[0] if tags else "none")


def create_backbone(spec: BackboneSpec, device: str | torch.device = "cpu"):
    """Build the model in eval mode with frozen weights; returns (model, description of the weights).

    Raises:
        ValueError: unknown model or tag.
        RuntimeError: the weights could not be obtained (e.g. no network), with what to do.
    """
    oc = _open_clip()
    name = resolve_name(spec.name)
    source: dict
    if spec.pretrained == "none":
        # Random weights from a fixed seed, without disturbing the caller's RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = oc.create_model(name, pretrained=None)
        source = {"pretrained": "none", "random_init": True, "seed": spec.seed}
    elif Path(spec.pretrained).is_file():
        model = oc.create_model(name, pretrained=str(spec.pretrained), weights_only=True)
        source = {"pretrained": str(Path(spec.pretrained).resolve()), "sha256": sha256_file(spec.pretrained), "random_init": False}
    else:
        tags = oc.list_pretrained_tags_by_model(name)
        if spec.pretrained not in tags:
            raise ValueError(
                f"{spec.pretrained!r} is neither a checkpoint file nor a pretrained tag of {name}; "
                f"tags: {', '.join(tags) or 'none (pass a checkpoint file, or none for random weights)'}"
            )
        try:
            model = oc.create_model(name, pretrained=spec.pretrained, weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f"could not obtain the {name} '{spec.pretrained}' weights ({type(e).__name__}: {str(e)[:200]}). "
                f"Without network access, download them on another machine (open_clip.create_model('{name}', "
                f"pretrained='{spec.pretrained}') caches them under ~/.cache/huggingface) and pass the file with "
                "--pretrained /path/to/checkpoint; --pretrained none gives random weights"
            ) from None
        source = {"pretrained": spec.pretrained, "random_init": False}
    model.eval().requires_grad_(False)
    source["state_sha256"] = state_sha256(model)
    return model.to(device), {"backbone": name, **source}


def state_sha256(model) -> str:
    """Checksum of a model's weights (names, dtypes, shapes and values), whatever their source."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(model, path: Path) -> str:
    """Save a model's weights as safetensors (atomically); returns the file's sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return sha256_file(path)


class Preprocess:
    """The model's eval transform (resize shortest side, centre crop, normalise) on uint8 tensors.

    Same steps as open_clip's PIL transform, done on batches on the model's device.
    """

    def __init__(self, model) -> None:
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", model.visual.image_size)
        self.size = size if isinstance(size, int) else int(size[0])
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.interpolation = cfg.get("interpolation", "bicubic")
        self._affine: dict = {}  # device -> (255 * mean, 255 * std) as (1, 3, 1, 1) tensors

    def describe(self) -> dict:
        return {"resize_shortest": self.size, "center_crop": self.size, "interpolation": self.interpolation, "mean": self.mean, "std": self.std}

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, size, size), normalised."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = frames.permute(0, 3, 1, 2)  # (N, 3, H, W)
        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        x = TF.resize(x, [self.size], interpolation=mode, antialias=True)  # shortest side, uint8 as PIL does
        x = TF.center_crop(x, [self.size, self.size]).float()
        if x.device not in self._affine:
            self._affine[x.device] = tuple(
                torch.tensor(v, device=x.device).mul_(255.0).view(1, 3, 1, 1) for v in (self.mean, self.std)
            )
        mean255, std255 = self._affine[x.device]
        return x.sub_(mean255).div_(std255)  # (x / 255 - mean) / std, in place
