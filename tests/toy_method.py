"""A toy method, written as a new method's author would: one head file, registered with
`fsar.train.heads.register`. Prototypes are the class means of linearly projected,
frame-averaged videos; logits are scaled cosines; the loss is the episodes' cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsar.train.heads import EpisodeBatch, Head, MethodSpec


class ToyProto(Head):
    """A linear map of the frame-averaged embedding, matched to class-mean prototypes by cosine."""

    spec = MethodSpec(
        "toy-proto",
        modes=("adapter",),
        reproduce_mode=None,  # trained by fsar-reproduce only when listed in --methods
        defaults={"fusion_beta": None, "lr": 1e-3},
        paper={"episodes_per_step": 4},
    )

    def __init__(self, dim: int, config) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.scale = 10.0

    def encode_support(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.encode_query(frames)

    def encode_query(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(frames.mean(dim=1, keepdim=True))  # (N, 1, D): one token per video

    def episode_logits(self, query_enc: torch.Tensor, support_enc: torch.Tensor, way: int) -> torch.Tensor:
        E, Ns = support_enc.shape[:2]
        protos = support_enc[:, :, 0].view(E, way, Ns // way, -1).mean(dim=2)  # (E, way, D)
        q = F.normalize(query_enc[:, :, 0], dim=-1)  # (E, Nq, D)
        return self.scale * torch.einsum("eqd,ewd->eqw", q, F.normalize(protos, dim=-1))

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        s, q = self.encode_episodes(batch)
        logits = self.episode_logits(q, s, batch.way)  # (E, Nq, way)
        target = batch.target.expand(logits.shape[0], -1)
        loss = F.cross_entropy(logits.reshape(-1, batch.way), target.reshape(-1))
        acc = (logits.argmax(-1) == target).float().mean().item() * 100
        return loss, {"loss": loss.item(), "accuracy": acc}
