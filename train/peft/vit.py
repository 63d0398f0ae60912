"""The frozen open_clip ViT, step by step, for the parameter-efficient wrappers of this package.

`encode_frozen_images` runs the ViT token pipeline step by step (patch embedding, class token and
positions, ln_pre, blocks, ln_post on the class token, proj); the wrappers hook into it.

Only the class-token pooling path of open_clip's `VisionTransformer` is supported. The wrappers
freeze the CLIP weights they use in place (`requires_grad_(False)`) and keep them in eval mode
whatever `.train()` is called with, so dropout and patch dropout in the backbone stay off.
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of `module`, each shared parameter counted once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------
# The frozen ViT, step by step


def check_visual(visual: nn.Module) -> None:
    """Raise ValueError unless `visual` is an open_clip ViT pooled by its class token."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not hasattr(visual, "conv1") or blocks is None:
        raise ValueError(f"expected an open_clip VisionTransformer, got {type(visual).__name__} (ResNet and timm towers are not supported)")
    pool_type, attn_pool = getattr(visual, "pool_type", "tok"), getattr(visual, "attn_pool", None)
    if attn_pool is not None or pool_type != "tok":
        raise ValueError(
            f"only class-token pooling is supported, got pool_type={pool_type!r} with "
            f"attn_pool={'set' if attn_pool is not None else 'None'}; use a CLIP ViT (e.g. ViT-B-16)"
        )
    for i, block in enumerate(blocks):
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
            raise ValueError(f"block {i} is a {type(block).__name__} without nn.MultiheadAttention; only ResidualAttentionBlock is supported")


def embed_tokens(visual: nn.Module, images: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """Images (N, 3, S, S) -> ln_pre'd tokens (N, 1 + P, W), class token first.

    `add`, broadcastable to (N, 1 + P, W), is added with the positional embedding (before ln_pre).
    """
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (N, W, g, g)
    x = x.flatten(2).transpose(1, 2)  # (N, P, W)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (N, 1 + P, W)
    if add is not None:
        x = x + add.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def attend(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Unmasked self-attention of batch-first `x` (N, L, W), whatever the layout `attn` expects."""
    if attn.batch_first:
        return attn(x, x, x, need_weights=False)[0]
    xt = x.transpose(0, 1)  # (L, N, W)
    return attn(xt, xt, xt, need_weights=False)[0].transpose(0, 1)


def run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One frozen ResidualAttentionBlock on batch-first tokens (N, L, W)."""
    if block.attn.batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


def pool_class_token(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Tokens (N, L, W) -> ln_post'd class token, projected: (N, D)."""
    pooled = visual.ln_post(x[:, 0])  # LayerNorm is per token: same as ln_post before pooling
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_frozen_images(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, D): `visual(images)` recomputed step by step."""
    check_visual(visual)
    x = embed_tokens(visual, images)
    for block in visual.transformer.resblocks:
        x = run_block(block, x)
    return pool_class_token(visual, x)


def _split_frames(visual: nn.Module, frames: torch.Tensor, expected: int) -> tuple[int, int, torch.Tensor]:
    """(B, T, 3, S, S) -> B, T and the frames as images (B * T, 3, S, S)."""
    S = tuple(visual.image_size)
    if frames.ndim != 5 or frames.shape[2] != 3 or tuple(frames.shape[3:]) != S:
        raise ValueError(f"expected frames of shape (B, T, 3, {S[0]}, {S[1]}), got {tuple(frames.shape)}")
    B, T = frames.shape[:2]
    if T != expected:
        raise ValueError(f"expected {expected} frames per clip (set at construction), got {T}")
    return B, T, frames.flatten(0, 1)


class _FrozenBackbone(nn.Module):
    """Keeps the frozen CLIP modules in eval mode whatever `.train()` is called with."""

    _frozen: tuple[str, ...] = ()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen:
            getattr(self, name).eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (the adapters or prompts)."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, the frozen CLIP weights included in total."""
        return count_parameters(self)
