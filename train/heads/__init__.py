"""Few-shot heads (methods), looked up by name. Each works on frame embeddings [.., T, D],
so the same head trains on the embedding cache (adapter mode) or behind a trainable
visual encoder (finetune mode)."""

from __future__ import annotations

from train.heads.base import EpisodeBatch, Head
from train.heads.actionclip import ActionCLIP
from train.heads.clip_fsar import CLIPFSAR
from train.heads.ma_clip import MACLIP
from train.heads.vita_clip import VitaCLIP

HEADS: dict[str, type[Head]] = {"clip-fsar": CLIPFSAR, "ma-clip": MACLIP, "actionclip": ActionCLIP, "vita-clip": VitaCLIP}


def build_head(config, dim: int) -> Head:
    """The head named by `config.method`, for embeddings of width `dim`."""
    if config.method not in HEADS:
        raise ValueError(f"unknown method {config.method!r}; known: {', '.join(HEADS)}")
    return HEADS[config.method](dim, config)


__all__ = ["HEADS", "EpisodeBatch", "Head", "build_head"]
