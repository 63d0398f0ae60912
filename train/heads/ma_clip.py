"""MA-CLIP's text-guided prototype construction and loss (Xing et al., 2023), on frame embeddings.

The module that runs on cached embeddings (adapter mode); the adapters inside the frozen
ViT live in `train.peft`.

- Text-guided prototype construction: for a support video with frames F [T, D] and class text
  t [D], the tokens C = [F; t] (T + 1) attend, by cross-attention, to R = F + t (T, the text
  added to every frame); a self-attention layer follows; the first T outputs are the support's
  features. Queries have no text and pass the same layers with C = R = F. Class prototypes
  are the mean over a class's supports, matched with OTAM.
- Loss: alpha * (L_S2T + L_Q2T) / 2 + (1 - alpha) * L_Q2S, where L_S2T and L_Q2T are KL
  divergences of the support / query video-text scores (over the episode's class texts)
  against their targets, and L_Q2S is the cross-entropy of the OTAM few-shot logits.
- Prediction: alpha * p_Q2T + (1 - alpha) * p_Q2S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fsar.train.heads.base import EpisodeBatch, Head
from fsar.train.heads.dropout import EpisodeDropout
from fsar.train.heads.spec import MethodSpec
from fsar.train.losses import kl_to_target, multi_positive_target
from fsar.train.metrics import otam_prototype_logits


class CrossAttentionBlock(nn.Module):
    """Pre-norm multi-head attention of `x` over `context` and a feed-forward block, both residual."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_x, self.norm_c = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)  # its projections; attention is computed in `attend`
        self.attn_drop = EpisodeDropout(dropout)  # on the attention weights, as nn.MultiheadAttention's dropout
        self.norm_f = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), EpisodeDropout(dropout), nn.Linear(ffn_dim, dim))

    def attend(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """nn.MultiheadAttention of queries `x` (N, Lx, D) over keys and values `c` (N, Lc, D),
        written out so that its dropout draws per-episode masks (`EpisodeDropout`)."""
        N, L, D = x.shape
        h, w, b = self.attn.num_heads, self.attn.in_proj_weight, self.attn.in_proj_bias
        heads = lambda t: t.view(N, t.shape[1], h, D // h).transpose(1, 2)  # noqa: E731  (N, h, L, D/h)
        q = heads(F.linear(x, w[:D], b[:D]))
        k, v = heads(F.linear(c, w[D : 2 * D], b[D : 2 * D])), heads(F.linear(c, w[2 * D :], b[2 * D :]))
        weights = (q @ k.transpose(-2, -1) / math.sqrt(D // h)).softmax(-1)  # (N, h, Lx, Lc)
        y = self.attn_drop(weights) @ v  # (N, h, Lx, D/h)
        return self.attn.out_proj(y.transpose(1, 2).reshape(N, L, D))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        c = self.norm_c(context)
        x = x + self.attend(self.norm_x(x), c)
        return x + self.ffn(self.norm_f(x))


class TextGuidedPrototype(nn.Module):
    """Text-guided prototype construction on [N, T, D] frames and optional [N, D] class texts."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.cross = CrossAttentionBlock(dim, heads, ffn_dim, dropout)
        self.self_attn = CrossAttentionBlock(dim, heads, ffn_dim, dropout)

    def forward(self, frames: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        T = frames.shape[1]
        if text is None:
            c, r = frames, frames
        else:
            t = text[:, None, :].to(frames.dtype)  # (N, 1, D)
            c, r = torch.cat([frames, t], dim=1), frames + t  # (N, T + 1, D), (N, T, D)
        x = self.cross(c, r)
        return self.self_attn(x, x)[:, :T]


class MACLIP(Head):
    """MA-CLIP's prototype module, losses and prediction on frame embeddings of width `dim`."""

    spec = MethodSpec(
        "ma-clip",
        modes=("adapter", "finetune", "peft"),
        # alpha weighs the video-text terms in loss and prediction; its prediction already
        # mixes text and few-shot probabilities, so no separate fusion
        defaults={"alpha": 0.5, "fusion_beta": None},
        paper={"mode": "peft", "episodes_per_step": 16, "query": 5},
    )

    @classmethod
    def peft_visual(cls, config, clip_model) -> nn.Module:
        from fsar.train.peft import MAAdaptedViT

        visual = MAAdaptedViT(clip_model, config.frames, clip_model.visual.output_dim)
        visual.takes_video, visual.takes_text = True, True  # the multimodal adapter reads each support's class text
        return visual

    def __init__(self, dim: int, config) -> None:
        super().__init__()
        if not 0 <= config.alpha <= 1:
            raise ValueError(f"ma-clip's alpha weighs video-text against few-shot terms and must be in [0, 1], got {config.alpha}")
        self.prototype = TextGuidedPrototype(dim, config.heads, config.ffn_dim, config.attn_dropout)
        self.text_scale = nn.Parameter(torch.tensor(float(config.text_scale_init)))
        self.alpha, self.lam = config.alpha, config.lam
        self.fewshot_scale = config.fewshot_scale

    def encode_support(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.prototype(frames, text)

    def encode_query(self, frames: torch.Tensor) -> torch.Tensor:
        return self.prototype(frames)

    def episode_logits(self, query_enc: torch.Tensor, support_enc: torch.Tensor, way: int) -> torch.Tensor:
        return otam_prototype_logits(query_enc, support_enc, way, self.lam)

    def _text_logits(self, frames: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
        """[E, N, T, D] videos and [E, way, D] texts -> scaled cosines [E, N, way]."""
        v = F.normalize(frames.mean(dim=2), dim=-1)
        return self.text_scale * torch.einsum("end,ewd->enw", v, F.normalize(class_text.to(v.dtype), dim=-1))

    def video_text_scores(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scaled cosines [N, C] of videos [N, T, D] with class texts [C, D]."""
        return self._text_logits(frames[None], text[None])[0]

    def predict(self, batch: EpisodeBatch, query_enc: torch.Tensor, support_enc: torch.Tensor, fusion_beta: float | None) -> torch.Tensor:
        """alpha * p_Q2T + (1 - alpha) * p_Q2S (as probabilities, p_Q2S = softmax(fewshot_scale x
        few-shot logits)); `fusion_beta`, when given, replaces alpha."""
        few = self.episode_logits(query_enc, support_enc, batch.way)
        a = self.alpha if fusion_beta is None else fusion_beta
        if a == 0:
            return few
        p = a * F.softmax(self._text_logits(batch.query, batch.class_text), dim=-1) + (1 - a) * F.softmax(self.fewshot_scale * few, dim=-1)
        return p

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        s, q = self.encode_episodes(batch)
        E, Ns, Nq = batch.support.shape[0], batch.support.shape[1], batch.query.shape[1]
        few = self.episode_logits(q, s, batch.way)  # (E, Nq, way)
        target = batch.target.repeat(E)
        q2s = F.cross_entropy(self.fewshot_scale * few.reshape(E * Nq, -1), target)
        way_ids = torch.arange(batch.way, device=few.device)
        s_target = multi_positive_target(way_ids.repeat_interleave(Ns // batch.way), way_ids)  # (Ns, way) one-hot
        q_target = multi_positive_target(batch.target, way_ids)
        s2t = kl_to_target(self._text_logits(batch.support, batch.class_text).reshape(E * Ns, -1), s_target.repeat(E, 1))
        q2t = kl_to_target(self._text_logits(batch.query, batch.class_text).reshape(E * Nq, -1), q_target.repeat(E, 1))
        loss = self.alpha * (s2t + q2t) / 2 + (1 - self.alpha) * q2s
        with torch.no_grad():
            acc = (few.reshape(E * Nq, -1).argmax(-1) == target).float().mean().item()
        return loss, {"loss": loss.item(), "q2s_loss": q2s.item(), "s2t_loss": s2t.item(), "q2t_loss": q2t.item(), "accuracy": acc * 100, "text_scale": self.text_scale.item()}
