"""ActionCLIP (Wang et al., 2021): video-text matching on frame embeddings.

- Temporal fusion of a video's frame embeddings into one video embedding: `mean` pooling, or
  ActionCLIP's `transformer` fusion (learned frame-position embeddings, pre-norm transformer
  layers, a residual connection to the input frames, then mean pooling).
- Class texts from a prompt ensemble (the `actionclip` prompt set: 16 templates averaged).
- Training: scaled cosines between every video of a batch and the class text of every video of
  the batch; the loss is the mean of the video->text and text->video KL divergences against the
  multi-positive target (several videos of one class in a batch are all positives).

In adapter mode the text embeddings are the frozen encoder's (the paper also fine-tunes the
text encoder). Few-shot episodes are scored by cosine to mean prototypes of the fused video
embeddings; the method's own prediction, video-text similarity, is the zero-shot protocol
(`fsar-eval RUN_DIR --protocol zero-shot`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.heads.base import EpisodeBatch, Head
from train.losses import symmetric_video_text_kl


class ActionCLIP(Head):
    """ActionCLIP's video encoder and video-text loss on frame embeddings of width `dim`."""

    def __init__(self, dim: int, config) -> None:
        super().__init__()
        self.fusion = config.temporal_fusion
        if self.fusion == "transformer":
            self.position = nn.Parameter(torch.randn(config.frames, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, config.heads, config.ffn_dim, config.attn_dropout, activation="gelu", batch_first=True, norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)
        # CLIP's initial temperature 0.07, learnable in log space.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, T, D] frame embeddings -> [N, D] video embeddings (not normalised)."""
        if self.fusion == "mean":
            return frames.mean(dim=1)
        x = self.temporal(frames + self.position[: frames.shape[1]])  # (N, T, D)
        return (x + frames).mean(dim=1)

    def encode_support(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.video(frames)[:, None]  # (N, 1, D)

    def encode_query(self, frames: torch.Tensor) -> torch.Tensor:
        return self.video(frames)[:, None]

    def episode_logits(self, query_enc: torch.Tensor, support_enc: torch.Tensor, way: int) -> torch.Tensor:
        q = F.normalize(query_enc[:, :, 0], dim=-1)  # (E, Nq, D)
        s = F.normalize(support_enc[:, :, 0], dim=-1)
        E, Ns, D = s.shape
        protos = F.normalize(s.view(E, way, Ns // way, D).mean(dim=2), dim=-1)
        return self.logit_scale.exp() * torch.einsum("eqd,ewd->eqw", q, protos)

    def video_text_scores(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scaled cosines [N, C] of videos [N, T, D] with class texts [C, D]."""
        v = F.normalize(self.video(frames), dim=-1)
        return self.logit_scale.exp() * v @ F.normalize(text.to(v.dtype), dim=-1).T

    def predict(self, batch: EpisodeBatch, query_enc: torch.Tensor, support_enc: torch.Tensor, fusion_beta: float | None) -> torch.Tensor:
        few = self.episode_logits(query_enc, support_enc, batch.way)
        if fusion_beta is None:
            return few
        q = F.normalize(query_enc[:, :, 0], dim=-1)
        text = self.logit_scale.exp() * torch.einsum("eqd,ewd->eqw", q, F.normalize(batch.class_text.to(q.dtype), dim=-1))
        return fusion_beta * F.log_softmax(text, dim=-1) + (1 - fusion_beta) * F.log_softmax(few, dim=-1)

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        videos = torch.cat([batch.support, batch.query], dim=1)  # (E, Ns + Nq, T, D)
        labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)  # (B,)
        v = F.normalize(self.video(videos.reshape(-1, *videos.shape[2:])), dim=-1)  # (B, D)
        t = F.normalize(base_text[labels].to(v.dtype), dim=-1)  # (B, D): each video's class text
        logits = self.logit_scale.exp() * v @ t.T  # (B, B)
        loss = symmetric_video_text_kl(logits, labels, labels)
        with torch.no_grad():
            acc = ((v @ F.normalize(base_text.to(v.dtype), dim=-1).T).argmax(-1) == labels).float().mean().item()
        return loss, {"loss": loss.item(), "video_text_accuracy": acc * 100, "accuracy": acc * 100, "logit_scale": self.logit_scale.exp().item()}
