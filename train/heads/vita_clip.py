"""Vita-CLIP (Wasim et al., CVPR 2023): video and text prompt learning on a frozen CLIP.

The prompts live in the backbone (`train.peft.VitaPromptedViT`, the video side) and in the
text tower (`train.peft.VitaTextPrompt`, learnable class-specific context), so the method
runs in peft mode only. This head is what follows them:

- the video embedding is the mean of the per-frame class-token embeddings (as the official
  code pools);
- training is supervised: cross-entropy of every video of the batch against the prompted text
  of all training classes, scaled by a learnable logit scale that starts at CLIP's own (the
  official model keeps `logit_scale` outside the frozen encoders, so it trains);
- the zero-shot and supervised protocols score videos against class texts; new classes get
  the mean learnt context (see `VitaTextPrompt.encode_names`);
- few-shot episodes are scored by cosine to mean prototypes of the video embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fsar.train.heads.actionclip import ActionCLIP
from fsar.train.heads.base import EpisodeBatch, Head
from fsar.train.heads.spec import MethodSpec
from fsar.train.peft.vita import VitaPromptedViT


class VitaFrames(VitaPromptedViT):
    """Vita-CLIP's prompted ViT giving per-frame embeddings (B, T, D); the head pools them."""

    takes_video, takes_text = True, False

    def forward(self, frames: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_frames(frames)


class VitaCLIP(ActionCLIP):
    """Mean-pooled video embeddings against prompted class text, with a learnable logit scale.

    `logit_scale` (log space) starts at log(1 / 0.07); `train.model.build_model` replaces that
    with the backbone's own CLIP logit scale.
    """

    spec = MethodSpec(
        "vita-clip",
        modes=("peft",),  # its prompts live inside the frozen backbone and its text tower
        reproduce_mode="peft",
        # no fusion at test (its prediction is video-text already), and a 20% holdout of the
        # training videos for the supervised protocol
        defaults={"mode": "peft", "fusion_beta": None, "holdout": 0.2},
        paper={"mode": "peft", "global_prompts": 8, "text_context": 8},
        shot_free=True,
    )

    @classmethod
    def peft_visual(cls, config, clip_model) -> nn.Module:
        return VitaFrames(clip_model, config.frames, global_prompts=config.global_prompts)

    @classmethod
    def trainable_text(cls, config, clip_model, class_names: list[str]) -> nn.Module | None:
        """The learnable class-specific text context (`VitaTextPrompt`), seeded apart from the video prompts."""
        from fsar.pipeline.backbones import tokenizer
        from fsar.train.peft.vita import VitaTextPrompt

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            return VitaTextPrompt(clip_model, class_names, tokenizer(config.backbone), config.text_context)

    def __init__(self, dim: int, config) -> None:
        Head.__init__(self)
        self.fusion = "mean"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        videos = torch.cat([batch.support, batch.query], dim=1)  # (E, Ns + Nq, T, D)
        labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)  # (B,)
        v = F.normalize(self.video(videos.reshape(-1, *videos.shape[2:])), dim=-1)  # (B, D)
        logits = self.logit_scale.exp() * v @ F.normalize(base_text.to(v.dtype), dim=-1).T  # (B, C)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean().item() * 100
        return loss, {"loss": loss.item(), "video_text_accuracy": acc, "accuracy": acc, "logit_scale": self.logit_scale.exp().item()}
