"""What every head provides: episode logits from frame embeddings, and a training loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fsar.train.heads.spec import MethodSpec


@dataclass
class EpisodeBatch:
    """A batch of E episodes of frame embeddings, supports and queries ordered class by class.

    Attributes:
        support: [E, way * shot, T, D]
        query: [E, way * query, T, D]
        support_text: [E, way * shot, D] class-name embedding of each support's class.
        class_text: [E, way, D] class-name embeddings of each episode's classes.
        support_labels / query_labels: [E, way * shot] / [E, way * query] split-level class indices.
        way: classes per episode.
    """

    support: torch.Tensor
    query: torch.Tensor
    support_text: torch.Tensor
    class_text: torch.Tensor
    support_labels: torch.Tensor
    query_labels: torch.Tensor
    way: int

    @property
    def target(self) -> torch.Tensor:
        """[way * query] episode-level target of each query (the same for every episode)."""
        q = self.query.shape[1] // self.way
        return torch.arange(self.way, device=self.query.device).repeat_interleave(q)


class Head(nn.Module):
    """Interface of a few-shot head.

    Support and query encodings depend on one video each (and, for supports, its class
    text), so evaluation encodes every video of a split once and scores any number of
    episodes from those encodings.

    A method is a subclass with a `spec` (what it declares about itself), registered with
    `fsar.train.heads.register`. Methods with peft in their modes implement `peft_visual`;
    methods that train text through the backbone's text tower implement `trainable_text`.
    """

    spec: ClassVar[MethodSpec]

    @classmethod
    def peft_visual(cls, config, clip_model) -> nn.Module:
        """The frozen visual tower of `clip_model` wrapped with this method's trainable adapters
        or prompts (peft mode), built under the caller's seed. It maps frames (n, T, 3, S, S) and,
        where `takes_text`, each video's class text (n, D) to frame embeddings (n, T, D)."""
        raise NotImplementedError(f"{cls.spec.name} declares no peft mode")

    @classmethod
    def trainable_text(cls, config, clip_model, class_names: list[str]) -> nn.Module | None:
        """A trainable text module over `clip_model`'s text tower for the training classes
        `class_names` in `config.mode`, replacing the frozen class-name embeddings, or None
        (the default: the class text is the frozen prompt-ensemble embedding)."""
        return None

    def encode_support(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[N, T, D] frames and [N, D] class text -> [N, T, D'] support encodings."""
        raise NotImplementedError

    def encode_query(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, T, D] frames -> [N, T, D'] query encodings."""
        raise NotImplementedError

    def encode_episodes(self, batch: "EpisodeBatch") -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query encodings [E, Ns, T, D'] and [E, Nq, T, D'] of a batch of episodes."""
        E, Ns, T, D = batch.support.shape
        Nq = batch.query.shape[1]
        s = self.encode_support(batch.support.reshape(E * Ns, T, D), batch.support_text.reshape(E * Ns, D))
        q = self.encode_query(batch.query.reshape(E * Nq, T, D))
        s, q = s.view(E, Ns, *s.shape[1:]), q.view(E, Nq, *q.shape[1:])  # an encoding may have fewer tokens than frames
        return s, q

    def episode_logits(self, query_enc: torch.Tensor, support_enc: torch.Tensor, way: int) -> torch.Tensor:
        """[E, Nq, T, D'] and [E, way * shot, T, D'] encodings -> few-shot logits [E, Nq, way]."""
        raise NotImplementedError

    def predict(self, batch: EpisodeBatch, query_enc: torch.Tensor, support_enc: torch.Tensor, fusion_beta: float | None) -> torch.Tensor:
        """Scores [E, Nq, way] whose argmax is the prediction (log-probabilities where fused)."""
        return self.episode_logits(query_enc, support_enc, batch.way)

    def video_text_scores(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Video-text scores [N, C] of videos [N, T, D] against class texts [C, D], for the
        zero-shot and supervised protocols."""
        raise NotImplementedError(f"{type(self).__name__} does not score videos against class texts")

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch of episodes; `base_text` [C, D] holds every training class's text.

        Returns:
            (scalar loss, metrics to log such as accuracy and loss terms).
        """
        raise NotImplementedError
