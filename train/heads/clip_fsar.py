"""CLIP-FSAR (Wang et al., IJCV 2023): video-text contrastive adaptation plus text-modulated
prototypes matched with OTAM.

- A video-text loss: frame-averaged video embeddings against the class-name embeddings of
  every training class, scaled by a learnable logit scale. The paper applies it to the
  backbone's frame embeddings, which it fine-tunes; so do we in every mode. Where the backbone
  is frozen (adapter mode) it trains only the scale, and the text side is CLIP's own
  zero-shot. `text_loss_features=adapted` (ours) applies it to the temporal transformer's
  output on the query path instead, which the few-shot loss can collapse (docs/findings.md).
- Prototype modulation: a class's support frames, with its class-text token appended, pass a
  one-layer pre-norm temporal transformer; queries pass the same transformer without text.
  With several shots the support frame embeddings are averaged per class *before* the
  transformer, one (T+1)-token sequence per class, as every official 5-shot config
  (`prototype_merge="before"`, `TRAIN.MERGE_BEFORE`); `prototype_merge="after"` (ours) encodes
  each support and averages the outputs. `text_modulation=False` drops the text token
  (supports pass the transformer as queries do): the paper's ablation without prototype
  modulation.
- Few-shot logits: the negative two-direction OTAM distance from a query to each prototype;
  the training loss multiplies them by `fewshot_scale` (1 in the paper; a larger value is a
  temperature for embeddings whose frames are all nearly alike, where the distances differ
  too little for the cross-entropy to train).
- Optional test-time fusion p = p_text^beta * p_fewshot^(1 - beta), where
  p_fewshot = softmax(logits / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsar.train.heads.base import EpisodeBatch, Head
from fsar.train.heads.dropout import EpisodeDropout
from fsar.train.heads.spec import MethodSpec
from fsar.train.metrics import otam_prototype_logits


class SelfAttention(nn.Module):
    """Multi-head self-attention with dropout on the output projection."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), EpisodeDropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, D/h)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, D/h)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class TemporalTransformer(nn.Module):
    """One pre-norm self-attention layer and a feed-forward block, both residual; no positional
    encoding (order enters through OTAM), as in CLIP-FSAR."""

    def __init__(self, dim: int, heads: int = 8, ffn_dim: int = 2048, attn_dropout: float = 0.2, ffn_dropout: float = 0.05) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, attn_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), EpisodeDropout(ffn_dropout), nn.Linear(ffn_dim, dim), EpisodeDropout(ffn_dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))  # (B, L, D)
        return x + self.ffn(x)


class CLIPFSAR(Head):
    """The CLIP-FSAR head on frame embeddings of width `dim`."""

    spec = MethodSpec(
        "clip-fsar",
        modes=("adapter", "finetune"),
        official_schedules=True,  # the named dataset configs are CLIP-FSAR's official ones
        fused_row=True,
        # What the official code does, for each setting a run may change ("mode": how the backbone trains).
        paper={
            "mode": "finetune",  # the official configs fine-tune the whole visual encoder
            "shot": 1,  # 5-shot numbers come from 1-shot training (SHOT: 1, SHOT_TEST: 5)
            "prototype_merge": "before",  # MERGE_BEFORE in every 5-shot config
            "cosine_eps": 0.01,  # cos_sim's + 0.01 (models/base/few_shot.py:1115-1124)
            "fusion_beta": None,  # TRAIN.COMBINE is never on: OTAM alone at test
            "text_modulation": True,
            "frame_positions": False,
            "fewshot_scale": 1.0,
            "text_loss_features": "backbone",
            "episodes_per_step": 16,
            "query": 5,
        },
        # The paper's ablation of prototype modulation: support prototypes without the class-text token.
        ablations={"without prototype modulation": {"text_modulation": False}},
        # ViT-B/16, 5-way, as reported in the paper (Wang et al., IJCV 2023, Tables 1 and 2): the
        # rows without text fusion (OTAM alone, the official configs' test).
        paper_numbers={
            "ssv2": {1: 61.9, 5: 72.1},
            "ssv2-small": {1: 54.5, 5: 61.8},
            "kinetics100": {1: 89.7, 5: 95.0},
            "ucf101": {1: 96.6, 5: 99.0},
            "hmdb51": {1: 75.8, 5: 87.7},
        },
        paper_source="CLIP-FSAR ViT-B/16, 5-way, without text fusion (the official configs' test), as reported by Wang et al. (IJCV 2023, Tables 1 and 2); its numbers fine-tune the backbone on real data and select the checkpoint on the test episodes",
    )

    def __init__(self, dim: int, config) -> None:
        super().__init__()
        self.temporal = TemporalTransformer(dim, config.heads, config.ffn_dim, config.attn_dropout, config.ffn_dropout)
        self.text_scale = nn.Parameter(torch.tensor(float(config.text_scale_init)))
        self.alpha, self.lam = config.alpha, config.lam
        self.text_modulation = config.text_modulation
        self.merge_before = config.prototype_merge == "before"
        self.cosine_eps = config.cosine_eps  # official cos_sim: x.y / (|x||y| + 0.01)
        self.fewshot_scale = config.fewshot_scale
        # Learned frame positions before the transformer (not in the paper, whose order enters through OTAM only).
        self.position = nn.Parameter(torch.randn(config.frames, dim) * 0.02) if config.frame_positions else None
        where = config.text_loss_features
        self.text_on_adapted = where == "adapted" or (where == "auto" and config.mode != "finetune")

    def encode_support(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if not self.text_modulation:
            return self.encode_query(frames)
        T = frames.shape[1]
        x = torch.cat([self._place(frames), text[:, None, :].to(frames.dtype)], dim=1)  # (N, T + 1, D): frames then the text token
        return self.temporal(x)[:, :T]

    def encode_query(self, frames: torch.Tensor) -> torch.Tensor:
        return self.temporal(self._place(frames))

    def _place(self, frames: torch.Tensor) -> torch.Tensor:
        return frames if self.position is None else frames + self.position[: frames.shape[1]].to(frames.dtype)

    def episode_logits(self, query_enc: torch.Tensor, support_enc: torch.Tensor, way: int) -> torch.Tensor:
        return otam_prototype_logits(query_enc, support_enc, way, self.lam, self.cosine_eps)

    def prototypes(self, support: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
        """Merge-before prototypes [E, way, T, D] from raw support frames [E, way * shot, T, D]
        (class by class) and class texts [E, way, D]: the mean of a class's support frames (and
        of its text tokens, one text per class) passes the transformer as one sequence."""
        E, Ns, T, D = support.shape
        way = class_text.shape[1]
        merged = support.view(E, way, Ns // way, T, D).mean(dim=2).reshape(E * way, T, D)  # (E*way, T, D)
        return self.encode_support(merged, class_text.reshape(E * way, -1)).view(E, way, T, -1)

    def _support_prototypes(self, batch: EpisodeBatch, support_enc: torch.Tensor | None) -> torch.Tensor:
        """What OTAM compares queries with: merged prototypes [E, way, T, D'] where merging happens
        before the transformer over several shots, else per-support encodings [E, way * shot, T, D']
        (averaged per class by `episode_logits`; at one shot both are the same)."""
        if self.merge_before and batch.support.shape[1] > batch.way:
            return self.prototypes(batch.support, batch.class_text)
        if support_enc is None:
            E, Ns, T, D = batch.support.shape
            support_enc = self.encode_support(batch.support.reshape(E * Ns, T, D), batch.support_text.reshape(E * Ns, D)).view(E, Ns, T, -1)
        return support_enc

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        """Video embeddings [..., D] of frames [..., T, D] for the video-text terms: the mean of
        the frames, or of their query-path encodings when the loss is on adapted features."""
        if self.text_on_adapted:
            frames = self.encode_query(frames.reshape(-1, *frames.shape[-2:])).view(frames.shape)
        return frames.mean(dim=-2)

    def video_text_logits(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scaled cosine of videos [..., T, D] (see `video`) with class texts [C, D] -> [..., C]."""
        v, t = self.video(frames), text.to(frames.dtype)
        cos = v @ t.T / (v.norm(dim=-1, keepdim=True) * t.norm(dim=-1)[None] + self.cosine_eps)  # (..., C); exact at eps 0
        return self.text_scale * cos

    def video_text_scores(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.video_text_logits(frames, text)

    def predict(self, batch: EpisodeBatch, query_enc: torch.Tensor, support_enc: torch.Tensor, fusion_beta: float | None) -> torch.Tensor:
        few = self.episode_logits(query_enc, self._support_prototypes(batch, support_enc), batch.way)  # (E, Nq, way)
        if fusion_beta is None:
            return few
        T = query_enc.shape[2]
        v = F.normalize((query_enc if self.text_on_adapted else batch.query).mean(dim=2), dim=-1)  # (E, Nq, D)
        text = self.text_scale * torch.einsum("eqd,ewd->eqw", v, F.normalize(batch.class_text.to(v.dtype), dim=-1))
        return fusion_beta * F.log_softmax(text, dim=-1) + (1 - fusion_beta) * F.log_softmax(few / T, dim=-1)

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        E, Nq, T, D = batch.query.shape
        q = self.encode_query(batch.query.reshape(E * Nq, T, D)).view(E, Nq, T, -1)
        logits = self.episode_logits(q, self._support_prototypes(batch, None), batch.way)  # (E, Nq, way)
        target = batch.target.repeat(E)
        few_loss = F.cross_entropy(self.fewshot_scale * logits.reshape(E * Nq, -1), target)
        # Video-text loss over all training classes, on supports and queries alike.
        videos = torch.cat([batch.support, batch.query], dim=1)  # (E, Ns + Nq, T, D)
        labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)
        vt_logits = self.video_text_logits(videos, base_text).reshape(labels.shape[0], -1)
        vt_loss = F.cross_entropy(vt_logits, labels)
        loss = few_loss + self.alpha * vt_loss
        with torch.no_grad():
            acc = (logits.reshape(E * Nq, -1).argmax(-1) == target).float().mean().item()
            vt_acc = (vt_logits.argmax(-1) == labels).float().mean().item()
        return loss, {
            "loss": loss.item(),
            "fewshot_loss": few_loss.item(),
            "video_text_loss": vt_loss.item(),
            "accuracy": acc * 100,
            "video_text_accuracy": vt_acc * 100,
            "text_scale": self.text_scale.item(),
        }
