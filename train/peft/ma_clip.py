"""MA-CLIP's adapters inside a frozen open_clip ViT (Xing et al., 2023, arXiv 2308.01532)."""

from __future__ import annotations

import torch
from torch import nn

from fsar.train.peft.vit import _FrozenBackbone, _split_frames, attend, check_visual, embed_tokens, pool_class_token

# ---------------------------------------------------------------------------------------------
# MA-CLIP


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Bottleneck(nn.Module):
    """x -> up(GELU(down(x))), `up` zero-initialised so the output starts at 0."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.down, self.act, self.up = nn.Linear(width, hidden), nn.GELU(), _zero_linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class MultimodalAdapter(nn.Module):
    """Bottleneck whose hidden tokens attend to each other and, when given, to a projected text token.

    Visual tokens (N, L, W) and text (N, text_dim) are projected to the bottleneck, the text is
    appended as one extra token, a pre-norm trainable self-attention mixes them, the text token
    is dropped and the rest is projected back with a zero-initialised `up`: (N, L, W).
    """

    def __init__(self, width: int, hidden: int, text_dim: int) -> None:
        super().__init__()
        heads = max(h for h in range(1, max(1, hidden // 64) + 1) if hidden % h == 0)  # head width >= 64 where possible
        self.down, self.text_down = nn.Linear(width, hidden), nn.Linear(text_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.act, self.up = nn.GELU(), _zero_linear(hidden, width)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        L = x.shape[1]
        z = self.down(x)  # (N, L, r)
        if text is not None:
            z = torch.cat([z, self.text_down(text.to(z.dtype))[:, None]], dim=1)  # (N, L + 1, r)
        n = self.norm(z)
        z = z + self.attn(n, n, n, need_weights=False)[0]
        return self.up(self.act(z[:, :L]))


class MABlockAdapters(nn.Module):
    """The three adapters of one ViT block."""

    def __init__(self, width: int, hidden: int, text_dim: int, joint_scale: float) -> None:
        super().__init__()
        self.temporal = Bottleneck(width, hidden)
        self.multimodal = MultimodalAdapter(width, hidden, text_dim)
        self.joint = Bottleneck(width, hidden)
        self.joint_scale = joint_scale


class MAAdaptedViT(_FrozenBackbone):
    """A frozen CLIP ViT with MA-CLIP adapters in every block; per-frame embeddings out.

    Each block computes, on tokens x of the B * T frames (class token x_c):

        x_c <- x_c + TA(T-MSA(ln_1(x_c)))                  # the T class tokens of a clip attend to each other
        h   <- S-MSA(ln_1(x));  x <- x + ls_1(h + MA(h, text))
        x   <- x + ls_2(MLP(ln_2(x))) + s * JA(ln_2(x))    # s = joint_scale

    T-MSA and S-MSA are the same frozen attention weights (the block's own `attn`), applied
    across frames and across patches: the "shared attention weights" of MA-CLIP (after AIM).
    TA and JA are bottlenecks; MA is `MultimodalAdapter`, which appends the clip's text feature
    (the support class's text embedding) as an extra token. Every adapter's up-projection is
    zero-initialised, so at construction the output equals frozen CLIP per frame. At the first
    block every frame's class token is the same vector (class embedding plus its position), so
    TA carries information between frames from the second block on.

    Choices where the paper leaves details open: the text is projected to MA's bottleneck by a
    per-block linear map and joins the bottleneck tokens as one more token of a trainable
    self-attention; without text (queries) MA runs on the visual tokens alone
    (`multimodal_without_text="visual"`, the same adapter for both branches) or is skipped
    (`"skip"`). The text-guided prototype module is a head (`train.heads.ma_clip`).

    Args:
        clip_model: an open_clip CLIP with a ViT tower; its visual weights are frozen in place.
        frames: T, the frames per clip.
        text_dim: width of the text feature passed to `forward` (default: the CLIP embedding width).
        bottleneck_ratio: adapter hidden width as a fraction of the ViT width.
        joint_scale: s, the weight of the joint adapter.
    """

    _frozen = ("visual",)

    def __init__(
        self,
        clip_model: nn.Module,
        frames: int,
        text_dim: int | None = None,
        bottleneck_ratio: float = 0.25,
        joint_scale: float = 0.5,
        multimodal_without_text: str = "visual",
    ) -> None:
        super().__init__()
        visual = clip_model.visual
        check_visual(visual)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if not 0 < bottleneck_ratio <= 1:
            raise ValueError(f"bottleneck_ratio must be in (0, 1], got {bottleneck_ratio}")
        if multimodal_without_text not in ("visual", "skip"):
            raise ValueError(f"multimodal_without_text must be 'visual' or 'skip', got {multimodal_without_text!r}")
        self.visual = visual.requires_grad_(False).eval()
        self.frames, self.multimodal_without_text = frames, multimodal_without_text
        width = visual.conv1.out_channels
        hidden = max(1, int(width * bottleneck_ratio))
        self.text_dim = text_dim if text_dim is not None else visual.output_dim
        w = visual.conv1.weight
        self.adapters = nn.ModuleList(
            MABlockAdapters(width, hidden, self.text_dim, joint_scale) for _ in visual.transformer.resblocks
        ).to(device=w.device, dtype=w.dtype)

    def forward(self, frames: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T, 3, S, S) and optional text (B, text_dim) -> per-frame embeddings (B, T, D)."""
        B, T, images = _split_frames(self.visual, frames, self.frames)
        if text is not None and tuple(text.shape) != (B, self.text_dim):
            raise ValueError(f"expected text of shape ({B}, {self.text_dim}), got {tuple(text.shape)}")
        text_bt = text.repeat_interleave(T, dim=0) if text is not None else None  # (B * T, text_dim)
        x = embed_tokens(self.visual, images)  # (B * T, L, W)
        for block, ad in zip(self.visual.transformer.resblocks, self.adapters):
            x = self._block(block, ad, x, B, T, text_bt)
        return pool_class_token(self.visual, x).view(B, T, -1)

    def _block(self, block: nn.Module, ad: MABlockAdapters, x: torch.Tensor, B: int, T: int, text: torch.Tensor | None) -> torch.Tensor:
        W = x.shape[-1]
        cls = x[:, 0].reshape(B, T, W)  # (B, T, W): a clip's class tokens as one sequence
        cls = cls + ad.temporal(attend(block.attn, block.ln_1(cls)))
        x = torch.cat([cls.reshape(B * T, 1, W), x[:, 1:]], dim=1)
        h = attend(block.attn, block.ln_1(x))
        if text is not None or self.multimodal_without_text == "visual":
            h = h + ad.multimodal(h, text)
        x = x + block.ls_1(h)
        y = block.ln_2(x)
        return x + block.ls_2(block.mlp(y)) + ad.joint_scale * ad.joint(y)
