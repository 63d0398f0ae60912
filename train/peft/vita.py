"""Vita-CLIP's video and text prompts on a frozen open_clip CLIP (Wasim et al., CVPR 2023)."""

from __future__ import annotations

import math

import torch
from torch import nn

from fsar.train.peft.vit import _FrozenBackbone, _split_frames, check_visual, embed_tokens, pool_class_token, run_block

# ---------------------------------------------------------------------------------------------
# Vita-CLIP, video side


class VitaLayerPrompts(nn.Module):
    """One layer's extra tokens: global prompts, frame-conditioned local prompts, summary token."""

    def __init__(self, width: int, heads: int, frames: int, global_prompts: int, local_prompts: bool, summary_token: bool, bound: float) -> None:
        super().__init__()
        self.global_prompts = nn.Parameter(torch.empty(global_prompts, width).uniform_(-bound, bound)) if global_prompts else None
        self.local_prompts = nn.Parameter(torch.empty(frames, width).uniform_(-bound, bound)) if local_prompts else None
        # Frozen at PyTorch's default random init, as in the official code, whose freezing rule keeps
        # only names with summary/local/global/time_embed trainable (VitaCLIP_model.py:128-133).
        self.cls_proj = nn.Linear(width, width).requires_grad_(False) if local_prompts or summary_token else None
        self.summary_norm = nn.LayerNorm(width) if summary_token else None
        self.summary_attn = nn.MultiheadAttention(width, heads, batch_first=True) if summary_token else None
        if self.summary_attn is not None:  # the official Attention: xavier-uniform q, k, v and out projections, zero biases
            for w in self.summary_attn.in_proj_weight.data.chunk(3):
                nn.init.xavier_uniform_(w)
            nn.init.xavier_uniform_(self.summary_attn.out_proj.weight)
            nn.init.zeros_(self.summary_attn.in_proj_bias)
            nn.init.zeros_(self.summary_attn.out_proj.bias)

    def forward(self, x: torch.Tensor, B: int, T: int) -> torch.Tensor | None:
        """Tokens (B * T, L, W) -> the tokens to append to every frame (B * T, E, W), or None."""
        W, extra = x.shape[-1], []
        if self.global_prompts is not None:
            extra.append(self.global_prompts.expand(B * T, -1, -1))  # the same for every frame
        if self.cls_proj is not None:
            c = self.cls_proj(x[:, 0].reshape(B, T, W))  # (B, T, W), from this layer's input class tokens
        if self.local_prompts is not None:
            local = self.local_prompts + c  # (B, T, W): prompt t conditioned on frame t
            extra.append(local[:, None].expand(B, T, T, W).reshape(B * T, T, W))  # every frame sees all T
        if self.summary_attn is not None:
            n = self.summary_norm(c)
            summary = c + self.summary_attn(n, n, n, need_weights=False)[0]  # (B, T, W), attends across frames
            extra.append(summary.reshape(B * T, 1, W))
        return torch.cat(extra, dim=1).to(x.dtype) if extra else None


class VitaPromptedViT(_FrozenBackbone):
    """A frozen CLIP ViT with Vita-CLIP's video prompts; video (or per-frame) embeddings out.

    At every layer, tokens are appended to each frame's sequence and dropped after the block
    (deep prompts): `global_prompts` learnable tokens shared by all frames and clips; if
    `local_prompts`, T tokens, the t-th a learnable vector plus a linear map of frame t's class
    token at the layer's input, all T given to every frame so each frame sees the whole clip;
    if `summary_token`, one token per frame, the projected class tokens after a trainable
    self-attention across the T frames (residual), which condenses the clip. As in the official
    code the summary token is not pooled: the video embedding is the mean of the per-frame
    class-token embeddings. A learnable temporal embedding (T, W) is added before ln_pre if
    `temporal_embedding`, as in the official code. Extra tokens are appended after the patches
    rather than after the class token; attention is permutation-equivariant and the prompts
    carry no position, so the result is the same. At the first block the class tokens of all
    frames are identical, so local prompts and the summary token mix frames from the second on.

    Trainable, as in the official code: the prompts, the summary token's norm and attention, and
    the temporal embedding; the projection of the class tokens (`cls_proj`) stays frozen at its
    random init (the official name filter misses it). Initialised as the official code does:
    prompts xavier-uniform, the summary attention's projections xavier-uniform with zero biases,
    the temporal embedding N(0, 0.02). So at construction the output does not equal frozen CLIP,
    except with global_prompts=0, local_prompts=False, summary_token=False and no (or a zeroed)
    temporal embedding.
    """

    _frozen = ("visual",)

    def __init__(
        self,
        clip_model: nn.Module,
        frames: int,
        global_prompts: int = 8,
        local_prompts: bool = True,
        summary_token: bool = True,
        temporal_embedding: bool = True,
    ) -> None:
        super().__init__()
        visual = clip_model.visual
        check_visual(visual)
        if frames < 1 or global_prompts < 0:
            raise ValueError(f"need frames >= 1 and global_prompts >= 0, got frames={frames}, global_prompts={global_prompts}")
        self.visual = visual.requires_grad_(False).eval()
        self.frames = frames
        width, blocks = visual.conv1.out_channels, visual.transformer.resblocks
        ph, pw = visual.conv1.kernel_size
        bound = math.sqrt(6.0 / (3 * ph * pw + width))  # xavier-uniform bound used by the official prompts
        w = visual.conv1.weight
        self.layers = nn.ModuleList(
            VitaLayerPrompts(width, blocks[0].attn.num_heads, frames, global_prompts, local_prompts, summary_token, bound)
            for _ in blocks
        ).to(device=w.device, dtype=w.dtype)
        self.temporal_embedding = nn.Parameter(0.02 * torch.randn(frames, width, device=w.device, dtype=w.dtype)) if temporal_embedding else None

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, S, S) -> per-frame embeddings (B, T, D)."""
        B, T, images = _split_frames(self.visual, frames, self.frames)
        add = self.temporal_embedding.repeat(B, 1)[:, None] if self.temporal_embedding is not None else None  # (B * T, 1, W)
        x = embed_tokens(self.visual, images, add)  # (B * T, L, W)
        L = x.shape[1]
        for block, prompts in zip(self.visual.transformer.resblocks, self.layers):
            extra = prompts(x, B, T)
            x = run_block(block, x if extra is None else torch.cat([x, extra], dim=1))[:, :L]
        return pool_class_token(self.visual, x).view(B, T, -1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, S, S) -> video embeddings (B, D), the mean over frames."""
        return self.encode_frames(frames).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# Vita-CLIP, text side


class VitaTextPrompt(_FrozenBackbone):
    """Class-specific learnable text context (CoOp style) through CLIP's frozen text tower.

    Each class's prompt is [SOT] ctx_1 .. ctx_n <class name> . [EOT]: the n context vectors are
    learnt per class (N(0, 0.02), in the token embedding's dtype), the other tokens are
    the frozen token embeddings; the sequence runs through the frozen text transformer with its
    causal mask and is pooled at the EOT position, as `encode_text` does.

    Unseen classes have no context of their own: `encode_names` gives them the mean of the
    learnt class contexts, a generic context that needs no extra parameters or loss. (The official
    training script learns class-specific context and its zero-shot evaluation reads text
    features from a file, so it defines no context for new names.)
    For the frozen hand-made prompt instead, use `clip_model.encode_text(tokenizer(prompts))`.
    """

    _frozen = ("token_embedding", "transformer", "ln_final")

    def __init__(self, clip_model: nn.Module, class_names: list[str], tokenizer, context: int = 8) -> None:
        super().__init__()
        if not hasattr(clip_model, "token_embedding"):
            raise ValueError(f"expected an open_clip CLIP with its text tower on the model, got {type(clip_model).__name__}")
        if getattr(clip_model, "text_pool_type", "argmax") != "argmax":
            raise ValueError(f"only argmax (EOT) pooling is supported, got text_pool_type={clip_model.text_pool_type!r}")
        if context < 1 or not class_names:
            raise ValueError(f"need context >= 1 and at least one class name, got context={context}, {len(class_names)} names")
        self.token_embedding, self.transformer, self.ln_final = clip_model.token_embedding, clip_model.transformer, clip_model.ln_final
        self.positional_embedding, self.text_projection = clip_model.positional_embedding, clip_model.text_projection
        for name in self._frozen:
            getattr(self, name).requires_grad_(False).eval()
        self.positional_embedding.requires_grad_(False)
        if self.text_projection is not None:
            self.text_projection.requires_grad_(False)
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.tokenizer, self.n_context = tokenizer, context
        self.class_names = list(class_names)
        self.register_buffer("token_ids", self._prompt_ids(self.class_names), persistent=False)  # (C, n_ctx)
        emb = self.token_embedding.weight
        self.context = nn.Parameter(0.02 * torch.randn(len(class_names), context, emb.shape[1], device=emb.device, dtype=emb.dtype))

    def _prompt_ids(self, names: list[str]) -> torch.Tensor:
        """Token ids (C, n_ctx): SOT, n placeholders (replaced by context), the name and '.', EOT."""
        tokens = self.tokenizer([f"{n.replace('_', ' ')}." for n in names]).long()  # (C, n_ctx): SOT name . EOT 0...
        n, length = self.n_context, tokens.shape[1]
        eot = tokens.argmax(dim=-1)
        too_long = [name for name, e in zip(names, eot.tolist()) if e + n >= length]
        if too_long:
            raise ValueError(f"{too_long} do not fit in {length} tokens with {n} context tokens; use shorter names or less context")
        placeholder = torch.zeros(len(names), n, dtype=tokens.dtype)  # any id below EOT's: embeddings are replaced
        ids = torch.cat([tokens[:, :1], placeholder, tokens[:, 1 : length - n]], dim=1)
        return ids.to(self.token_embedding.weight.device)

    def _encode(self, ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Ids (C, n_ctx) and context (C, n, width) -> projected EOT features (C, D)."""
        cast = self.transformer.get_cast_dtype()
        emb = self.token_embedding(ids).to(cast)  # (C, n_ctx, width)
        x = torch.cat([emb[:, :1], context.to(cast), emb[:, 1 + self.n_context :]], dim=1)
        x = self.transformer(x + self.positional_embedding.to(cast), attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]  # (C, width) at EOT
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x

    def forward(self) -> torch.Tensor:
        """Text embeddings of the constructor's classes with their own context: (C, D)."""
        return self._encode(self.token_ids, self.context)

    def encode_names(self, class_names: list[str]) -> torch.Tensor:
        """Text embeddings (len(class_names), D) of any names, with the mean learnt context."""
        ids = self._prompt_ids(list(class_names)).to(self.token_ids.device)
        generic = self.context.mean(dim=0, keepdim=True).expand(len(class_names), -1, -1)
        return self._encode(ids, generic)
