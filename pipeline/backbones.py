"""Frozen open_clip backbones: names, weights, and the model's own eval preprocessing on tensors.

Any open_clip model works, under its open_clip name (`ViT-B-16`) or OpenAI's spelling
(`ViT-B/16`). Two tiny configs are registered for tests and CPU runs: `fsar-tiny-vit`
(width 128, 2 layers, patch 32, 224 px) and `fsar-micro-vit` (width 64, 1 layer, 64 px).

Weights: a pretrained tag (default `openai`, as the papers use) through open_clip's own
download and cache, a local checkpoint file (`.safetensors`, a `.pt`/`.bin` read with
`weights_only=True`, or OpenAI's own TorchScript archive such as `ViT-B-16.pt`), or `none` for a
random initialisation from a fixed seed.

Activation: the model is built with the activation its weights were trained with. OpenAI's
CLIP weights (and a few others) need QuickGELU, which open_clip's plain `ViT-B-16` config does
not use; see `resolve_activation` for how it is decided for tags and files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from fsar.pipeline.atomic import atomic_path

CONFIG_DIR = Path(__file__).parent / "backbone_configs"
_registered = False


def _open_clip():
    global _registered
    import open_clip

    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


@contextmanager
def _no_random_init_warning():
    """Silence open_clip's "No pretrained weights loaded ... initialized randomly" while a model is
    built to have a file's weights loaded into it (or to be trained): that line would be wrong."""
    quiet = _QuietRandomInit()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuietRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def known_backbones() -> list[str]:
    return _open_clip().list_models()


def tokenizer(name: str):
    """open_clip's tokenizer of backbone `name` (OpenAI spellings accepted)."""
    return _open_clip().get_tokenizer(resolve_name(name))


def resolve_name(name: str) -> str:
    """An open_clip model name for `name`, accepting OpenAI spellings ('ViT-B/16' -> 'ViT-B-16').

    Raises:
        ValueError: unknown name, with the closest known names.
    """
    import difflib

    models = known_backbones()
    for candidate in (name, name.replace("/", "-")):
        if candidate in models:
            return candidate
    lowered = {m.lower(): m for m in models}
    close = difflib.get_close_matches(name.replace("/", "-").lower(), list(lowered), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(lowered[c] for c in close)}?" if close else "no close name"
    raise ValueError(f"unknown backbone {name!r}: {hint} (open_clip knows {len(models)} models: python -c 'import open_clip; print(open_clip.list_models())')")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


ACTIVATIONS = ("auto", "gelu", "quick_gelu")


@dataclass(frozen=True)
class BackboneSpec:
    """Which model and which weights; `pretrained` is a tag, a file path or 'none'.

    `activation` is `auto` (decided from the weights, see `resolve_activation`), `gelu` or
    `quick_gelu` (stated; an error where the weights are known to need the other).
    """

    name: str
    pretrained: str
    seed: int = 0
    activation: str = "auto"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")


def default_pretrained(name: str) -> str:
    tags = _open_clip().list_pretrained_tags_by_model(resolve_name(name))
    return "openai" if "openai" in tags else (tags[0] if tags else "none")


def _activation_of(cfg: dict) -> str:
    return "quick_gelu" if cfg.get("quick_gelu") else "gelu"


def model_activation(name: str) -> str:
    """The activation open_clip's config of `name` builds (`ViT-B-16`: gelu; `ViT-B-16-quickgelu`: quick_gelu)."""
    return _activation_of(_open_clip().get_model_config(name) or {})


def tag_activation(name: str, tag: str) -> str:
    """The activation the weights of pretrained `tag` were trained with, from open_clip's
    pretrained config (no download)."""
    return _activation_of(_open_clip().get_pretrained_cfg(name, tag))


def _is_torchscript(path: Path) -> bool:
    """OpenAI's own checkpoints (`ViT-B-16.pt`) are TorchScript archives: a zip with a code/ folder."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/")[1:2] == ["code"] for n in z.namelist())


def file_metadata(path: str | os.PathLike) -> dict[str, str]:
    """What fsar recorded in a safetensors weights file it wrote (its `fsar` metadata), else {}."""
    import json

    if not str(path).endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        return {k: str(v) for k, v in json.loads(meta.get("fsar", "{}")).items()}
    except ValueError:
        return {}


def file_activation(path: str | os.PathLike, sha256: str) -> tuple[str | None, str]:
    """The activation the weights in `path` were trained with, and how that is known.

    In order: what fsar recorded in a file it wrote; OpenAI's TorchScript archive (every
    OpenAI CLIP uses QuickGELU); a file whose sha256 names it as one of open_clip's download
    URLs (OpenAI's URLs carry it); a file in the Hugging Face cache under the hub repository of
    an open_clip tag (`models--timm--vit_base_patch16_clip_224.openai/...`). Returns (None, why)
    when the file says nothing.
    """
    path = Path(path)
    meta = file_metadata(path)
    if meta.get("activation") in ("gelu", "quick_gelu"):
        return meta["activation"], "recorded in the file by fsar"
    if _is_torchscript(path):
        return "quick_gelu", "an OpenAI TorchScript checkpoint"
    oc = _open_clip()
    hub = next((p[len("models--"):].replace("--", "/") for p in path.resolve().parts if p.startswith("models--")), None)
    for model, tag in oc.list_pretrained():
        cfg = oc.get_pretrained_cfg(model, tag)
        if sha256 in cfg.get("url", ""):
            return _activation_of(cfg), f"its sha256 is that of open_clip's {model} '{tag}' download"
        if hub and cfg.get("hf_hub", "").rstrip("/") == hub:
            return _activation_of(cfg), f"it is the Hugging Face cache's copy of {model} '{tag}' ({hub})"
    return None, "the file does not say"


def resolve_activation(name: str, pretrained: str, stated: str = "auto", sha256: str = "") -> tuple[str, str]:
    """The activation to build `name` with for these weights, and how it was decided.

    - A tag: open_clip's pretrained config says (`openai` -> quick_gelu).
    - A file: `file_activation`; failing that, the architecture's published weights when they
      all agree (or it has none, as fsar's tiny test models), else it must be stated.
    - `none` (random weights): the model config's own, unless stated.
    A stated activation that contradicts what the weights or the model name say is an error.

    Raises:
        ValueError: a contradiction, or a file whose activation cannot be told and is not stated.
    """
    implied = model_activation(name)  # the -quickgelu configs say it in their name
    known, how = None, ""
    if pretrained == "none":
        pass
    elif Path(pretrained).is_file():
        known, how = file_activation(pretrained, sha256)
    else:
        known, how = tag_activation(name, pretrained), f"open_clip's pretrained config of {name} '{pretrained}'"
    for source, value in (("the weights", known), (f"the model name {name}", implied if implied == "quick_gelu" else None)):
        if value and stated != "auto" and stated != value:
            raise ValueError(f"--activation {stated} contradicts {source} ({value}: {how or 'its open_clip config'}); drop --activation or change the backbone or weights")
    if known and implied == "quick_gelu" and known != implied:
        raise ValueError(f"{pretrained} was trained with {known} ({how}) but {name} builds quick_gelu: use the backbone without -quickgelu")
    if known:
        return known, how
    if stated != "auto":
        return stated, "stated"
    if pretrained == "none" or implied == "quick_gelu":
        return implied, f"open_clip's model config of {name}"
    oc = _open_clip()
    published = {tag_activation(name, t) for t in oc.list_pretrained_tags_by_model(name)}
    if len(published) <= 1:
        return (published.pop() if published else implied), f"every published weight of {name} uses it"
    raise ValueError(
        f"cannot tell which activation the weights in {pretrained} were trained with ({how}), and {name}'s published "
        f"weights differ: OpenAI's need QuickGELU. Pass --activation quick_gelu (OpenAI weights) or --activation gelu"
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, as open_clip reads them (safetensors, or torch.load with
    weights_only=True), or from OpenAI's TorchScript archive (no Python objects unpickled)."""
    if _is_torchscript(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's archive stores these as tensors
            state.pop(key, None)
        return state
    from open_clip.factory import load_state_dict

    return load_state_dict(str(path), weights_only=True)


def _mismatch(model, state: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(missing, unexpected, differently shaped) tensors of `state` against `model`."""
    own = model.state_dict()
    buffers = {n for n, _ in model.named_buffers()}  # non-persistent buffers a TorchScript archive may hold
    missing = sum(k not in state for k in own)
    unexpected = sum(k not in own and k not in buffers for k in state)
    shapes = sum(k in own and tuple(own[k].shape) != tuple(v.shape) for k, v in state.items())
    return missing, unexpected, shapes


def _load_file(model, name: str, path: Path) -> None:
    """Load a checkpoint file into `model`, with one-line errors for the usual mistakes."""
    oc = _open_clip()
    try:
        if _is_torchscript(path):
            state = _read_state(path)
            if any(_mismatch(model, state)):
                raise RuntimeError("Error(s) in loading state_dict")
            model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True)
        else:
            oc.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - open_clip and torch report these as several exception types
        text = f"{type(e).__name__}: {e}"
        if "weights_only" in text or "Unpickl" in text:
            raise ValueError(
                f"{path} needs Python pickle code to load, which fsar never runs (weights_only=True). Where you trust the "
                f"file, convert it: python -c \"import torch, safetensors.torch as s; d = torch.load('{path}', weights_only=False); "
                f"s.save_file({{k: v.contiguous() for k, v in d.get('state_dict', d).items()}}, '{path}.safetensors')\" and pass that file"
            ) from None
        try:
            missing, unexpected, shapes = _mismatch(model, _read_state(path))
        except Exception:  # noqa: BLE001 - unreadable: say so below
            missing = unexpected = shapes = 0
        if missing or unexpected or shapes:
            raise ValueError(
                f"{path} holds weights of another architecture than {name} ({missing} missing, {unexpected} unexpected "
                f"and {shapes} differently shaped tensors): pass the --backbone it was saved for"
            ) from None
        raise ValueError(f"{path} could not be read as weights ({text.splitlines()[0][:200]}): is it a complete checkpoint file?") from None


def create_backbone(spec: BackboneSpec, device: str | torch.device = "cpu"):
    """Build the model in eval mode with frozen weights; returns (model, description of the weights).

    The description records the activation and how it was decided (`activation`,
    `activation_from`); a file fsar wrote with random weights stays labelled random.

    Raises:
        ValueError: unknown model or tag, weights for another architecture or needing pickle
            code, an activation that cannot be told or contradicts the weights.
        RuntimeError: the weights could not be obtained (e.g. no network), with what to do.
    """
    oc = _open_clip()
    name = resolve_name(spec.name)
    source: dict
    is_file = spec.pretrained != "none" and Path(spec.pretrained).is_file()
    if not is_file and spec.pretrained != "none":
        tags = oc.list_pretrained_tags_by_model(name)
        if spec.pretrained not in tags:
            raise ValueError(
                f"{spec.pretrained!r} is neither a checkpoint file nor a pretrained tag of {name}; "
                f"tags: {', '.join(tags) or 'none (pass a checkpoint file, or none for random weights)'}"
            )
    sha = sha256_file(spec.pretrained) if is_file else ""
    activation, decided = resolve_activation(name, spec.pretrained, spec.activation, sha)
    quick = activation == "quick_gelu"
    if spec.pretrained == "none":
        # Random weights from a fixed seed, without disturbing the caller's RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = oc.create_model(name, pretrained=None, force_quick_gelu=quick)
        source = {"pretrained": "none", "random_init": True, "seed": spec.seed}
    elif is_file:
        with _no_random_init_warning():
            model = oc.create_model(name, pretrained=None, force_quick_gelu=quick)
        _load_file(model, name, Path(spec.pretrained))
        meta = file_metadata(spec.pretrained)
        source = {"pretrained": str(Path(spec.pretrained).resolve()), "sha256": sha, "random_init": meta.get("random_init") == "true"}
        if source["random_init"]:  # random weights fsar saved (e.g. CACHE.backbone.safetensors) stay labelled random
            source["seed"] = int(meta.get("seed", -1))
    else:
        try:
            model = oc.create_model(name, pretrained=spec.pretrained, weights_only=True, force_quick_gelu=quick)
        except Exception as e:
            raise RuntimeError(
                f"could not obtain the {name} '{spec.pretrained}' weights ({type(e).__name__}: {str(e)[:200]}). "
                f"Without network access, download them on another machine (open_clip.create_model('{name}', "
                f"pretrained='{spec.pretrained}') caches them under ~/.cache/huggingface) and pass the file with "
                "--pretrained /path/to/checkpoint; --pretrained none gives random weights"
            ) from None
        source = {"pretrained": spec.pretrained, "random_init": False}
    model.eval().requires_grad_(False)
    source["activation"], source["activation_from"] = activation, decided
    source["state_sha256"] = state_sha256(model)
    return model.to(device), {"backbone": name, **source}


def activation_of_model(model) -> str:
    """The activation a built open_clip model actually uses (read from its first MLP)."""
    from open_clip.transformer import QuickGELU

    blocks = model.visual.transformer.resblocks if hasattr(model.visual, "transformer") else []
    for block in blocks:
        return "quick_gelu" if any(isinstance(m, QuickGELU) for m in block.mlp.modules()) else "gelu"
    return "gelu"


def state_sha256(model) -> str:
    """Checksum of a model's weights (names, dtypes, shapes and values), whatever their source."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(model, path: Path, metadata: dict | None = None) -> str:
    """Save a model's weights as safetensors (atomically), with `metadata` (e.g. backbone,
    activation, random_init) recorded for `file_metadata`; returns the file's sha256.

    The metadata is one JSON string with sorted keys: safetensors writes a metadata map in no
    fixed order, and the same weights must give the same bytes.
    """
    import json

    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"fsar": json.dumps(meta, sort_keys=True)} if meta else None)
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
