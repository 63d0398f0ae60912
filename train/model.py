"""A head, behind cached embeddings (adapter mode), a trainable visual encoder (finetune mode), or a
frozen one with the method's trainable adapters (peft mode)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fsar.train.config import TrainConfig
from fsar.train.data import CacheSource, ShardSource
from fsar.train.heads import Head, build_head, head_class, method_spec, methods_with


class FewShotModel(nn.Module):
    """`embed` maps a source batch to frame embeddings [..., T, D]; the head does the rest.

    In adapter mode the batch already is embeddings and `visual` is None; in finetune mode
    `visual` is an open_clip visual tower applied to every frame. `text`, when set, is a
    trainable text prompt (Vita-CLIP's `VitaTextPrompt`) that replaces the frozen class-name
    embeddings: see `class_text`.
    """

    def __init__(self, head: Head, visual: nn.Module | None = None, text: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.visual = visual
        self.text = text

    def class_text(self, names: list[str], fixed: torch.Tensor) -> torch.Tensor:
        """Class-text embeddings [C, D] of `names`: `fixed` (the frozen prompt-ensemble embeddings)
        unless the model learns its text. A learnt prompt gives the classes it was built for
        their own context (differentiable, so training calls this every step) and any other
        names the mean context."""
        if self.text is None:
            return fixed
        if list(names) == self.text.class_names:
            return self.text().float()
        return self.text.encode_names(list(names)).float()

    @property
    def text_per_video(self) -> bool:
        """Whether training pairs each video with its own prompt through a trained text tower (ActionCLIP, finetune)."""
        return hasattr(self.text, "per_video")

    @property
    def text_conditioned(self) -> bool:
        """Whether a support's frame embeddings depend on its class text (MA-CLIP's multimodal adapter)."""
        return getattr(self.visual, "takes_text", False)

    def embed(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Frame embeddings [..., T, D] of a batch; `text` [..., D] is each video's class text, used
        only by text-conditioned encoders (supports in peft MA-CLIP)."""
        if self.visual is None:
            return x
        lead, T = x.shape[:-4], x.shape[-4]  # (..., T, 3, S, S)
        if getattr(self.visual, "takes_video", False):
            t = text.reshape(-1, text.shape[-1]) if (text is not None and self.text_conditioned) else None
            e = self.visual(x.reshape(-1, *x.shape[-4:]), t)  # (n, T, D)
            return e.view(*lead, T, -1)
        e = self.visual(x.reshape(-1, *x.shape[-3:]))  # (n * T, D)
        return e.view(*lead, T, -1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but no GPU is visible: use --set device=cpu or install a CUDA build of torch")
    return torch.device(name)


class RunData:
    """The splits and class-name embeddings a run trains and validates on."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, visual_model=None, write: bool = True) -> None:
        self.config = config
        self.sources: dict[str, CacheSource | ShardSource] = {}
        self.text: dict[str, torch.Tensor] = {}
        self._visual_model = visual_model  # finetune: the full open_clip model, whose text encoder embeds class names
        self.preprocess_model = visual_model  # finetune: the model whose eval transform prepares frames
        self._text_file = run_dir / "text.safetensors" if run_dir is not None else None
        self._write = write  # whether text computed here is kept in _text_file

    def split(self, name: str):
        """The source of split `name` (opened on first use)."""
        if name not in self.sources and name != "train-holdout":
            c = self.config
            if c.mode == "adapter":
                if not c.cache:
                    raise ValueError("adapter mode needs --cache")
                src = CacheSource(c.cache, name, c.frames, c.prompts)
                self.text[name] = src.text
            else:
                from fsar.pipeline.views import build_view

                if not c.shards:
                    raise ValueError(f"{c.mode} mode needs --shards")
                view = build_view(c.image_view, self.preprocess_model)
                src = ShardSource(c.shards, name, c.frames, view, c.train_augment if name == "train" else "none")
                self.text[name] = self._finetune_text(name, src.info.class_names)
            self.sources[name] = src
            if name == "train" and c.holdout > 0:
                from fsar.train.data import SubsetSource, holdout_rows

                held = holdout_rows(src.info, c.holdout)
                self.sources["train"] = SubsetSource(src, np.flatnonzero(~held))
                self.sources["train-holdout"] = SubsetSource(src, np.flatnonzero(held))
                self.text["train-holdout"] = self.text["train"]
        if name == "train-holdout" and name not in self.sources:
            self.split("train")
            if name not in self.sources:
                raise ValueError("this run holds no videos out of training (holdout 0): the supervised protocol has nothing unseen to score")
        return self.sources[name]

    def _finetune_text(self, split: str, names: list[str]) -> torch.Tensor:
        """Class-name embeddings from the frozen text encoder, computed once and kept in the run directory."""
        from safetensors.torch import load_file, save_file

        from fsar.pipeline.atomic import atomic_path

        stored = load_file(str(self._text_file)) if self._text_file and self._text_file.exists() else {}
        if split in stored:
            return stored[split]
        if self._visual_model is None or not hasattr(self._visual_model, "encode_text"):
            raise RuntimeError(f"no text embeddings for split {split!r} in {self._text_file} and no text encoder to compute them")
        from fsar.pipeline.backbones import tokenizer
        from fsar.pipeline.prompts import PROMPT_SETS, encode_prompts, ensemble

        tok = tokenizer(self.config.backbone)
        per = encode_prompts(self._visual_model, tok, names, PROMPT_SETS[self.config.prompts], "cpu")
        text = torch.from_numpy(ensemble(per).astype(np.float32))
        if self._text_file is not None and self._write:
            stored[split] = text
            with atomic_path(self._text_file) as tmp:
                save_file(stored, str(tmp))
        return text


def peft_visual(config: TrainConfig, clip_model) -> nn.Module:
    """The frozen visual tower wrapped with `config.method`'s trainable adapters or prompts (peft mode)."""
    spec = method_spec(config.method)
    if "peft" not in spec.modes:
        raise ValueError(f"peft mode wraps the frozen backbone with a method's own adapters; {config.method!r} has none (peft methods: {', '.join(methods_with('peft'))})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return head_class(config.method).peft_visual(config, clip_model)


def build_model(config: TrainConfig, run_dir: Path | None = None, for_eval: bool = False, write: bool = True) -> tuple[FewShotModel, RunData]:
    """The model (head; the visual encoder in finetune and peft modes; Vita-CLIP's text prompt) and its data, on CPU.

    Parameters are initialised from `config.seed`. In finetune mode the class-name
    embeddings of every split are computed with the frozen text encoder and kept in
    RUN_DIR/text.safetensors (read, not written, without `write`: a worker other than rank 0,
    after the driver wrote it); with `for_eval` the backbone is only built (its weights
    come from the checkpoint) and the text is read from that file.
    """
    visual, full, text = None, None, None
    spec = method_spec(config.method)
    if config.mode not in spec.modes:
        if spec.modes == ("peft",):
            raise ValueError(f"{config.method} trains prompts inside the frozen backbone and its text tower, so it runs in peft mode only (--mode peft --shards DIR), not {config.mode}")
        if config.mode == "peft":
            raise ValueError(f"peft mode wraps the frozen backbone with a method's own adapters; {config.method!r} has none (peft methods: {', '.join(methods_with('peft'))})")
        raise ValueError(f"{config.method} trains in {' or '.join(spec.modes)} mode, not {config.mode}")
    if config.mode in ("finetune", "peft"):
        from fsar.pipeline.backbones import BackboneSpec, _no_random_init_warning, create_backbone

        activation = config.activation
        if for_eval:  # the weights come from the checkpoint: build the activation the run trained with
            activation = recorded_backbone(run_dir).get("activation", activation) if run_dir is not None else activation
        # with for_eval the model is built only to take the checkpoint's weights: open_clip's
        # "initialized randomly" would be wrong there
        with _no_random_init_warning() if for_eval else contextlib.nullcontext():
            full, source = create_backbone(BackboneSpec(config.backbone, "none" if for_eval else config.pretrained, config.seed, activation))
        if not for_eval and run_dir is not None and write:
            record_backbone(run_dir, source)
        if config.mode == "finetune":
            visual = full.visual
            visual.requires_grad_(True)
        else:
            visual = peft_visual(config, full)
        dim = full.visual.output_dim
    data = RunData(config, run_dir, None if for_eval else full, write)
    if full is not None:
        data.preprocess_model = full
        if not for_eval:
            for split in json.loads((Path(config.shards) / "manifest.json").read_text())["splits"]:
                data.split(split)
    if config.mode == "adapter":
        train_split = data.split("train")
        dim = train_split.dim
        if not for_eval and run_dir is not None and write:
            a = train_split.attrs
            record_backbone(run_dir, {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items() if k in BACKBONE_ATTRS} | {"from_cache": str(config.cache)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = build_head(config, dim)
    if full is not None:  # the method's trainable text over the backbone's text tower, if any
        text = head_class(config.method).trainable_text(config, full, data.split("train").info.class_names)
    if text is not None and hasattr(full, "logit_scale"):
        with torch.no_grad():
            head.logit_scale.copy_(full.logit_scale)  # Vita-CLIP's and ActionCLIP's scale starts at CLIP's own
    return FewShotModel(head, visual, text), data


BACKBONE_ATTRS = ("backbone", "pretrained", "random_init", "activation", "activation_from", "weights_sha256", "weights_state_sha256", "preprocess", "seed")


def record_backbone(run_dir: Path, source: dict) -> None:
    """Write RUN_DIR/backbone.json: which backbone, weights and activation the run used (for
    finetune and peft modes the weights it started from; for adapter mode the cache's)."""
    from fsar.pipeline.atomic import write_json_atomic

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / "backbone.json", {k: v for k, v in source.items()})


def recorded_backbone(run_dir: Path) -> dict:
    """RUN_DIR/backbone.json, or {} for a run from before runs recorded it."""
    path = Path(run_dir) / "backbone.json"
    return json.loads(path.read_text()) if path.exists() else {}
