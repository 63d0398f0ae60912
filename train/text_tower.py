"""A trainable copy of CLIP's text tower with a prompt ensemble: ActionCLIP in finetune mode.

The official ActionCLIP trains its text encoder with the visual one, each video of a batch
paired with its class name in a template drawn at random every step (`train.py:158`). This
module holds the text tower (its own parameters, which train), tokenises every (template,
class) prompt once, and encodes:

- `per_video(labels, templates)`: one prompt per video, differentiable (the training pairs);
- `templates(names)`: every template of every class [K, C, D] (the official zero-shot);
- `forward(names)` / `encode_names(names)`: the ensemble [C, D], the mean of normalised
  template embeddings, normalised again, as the embed stage computes it for the cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptText(nn.Module):
    """CLIP's text tower (trainable) over a fixed prompt set, for a set of training classes."""

    def __init__(self, clip_model: nn.Module, class_names: list[str], templates: tuple[str, ...], tokenizer) -> None:
        super().__init__()
        if not hasattr(clip_model, "token_embedding"):
            raise ValueError(f"expected an open_clip CLIP with its text tower on the model, got {type(clip_model).__name__}")
        self.token_embedding, self.transformer, self.ln_final = clip_model.token_embedding, clip_model.transformer, clip_model.ln_final
        self.positional_embedding, self.text_projection = clip_model.positional_embedding, clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.text_pool_type = getattr(clip_model, "text_pool_type", "argmax")
        if self.text_pool_type != "argmax":
            raise ValueError(f"only argmax (EOT) pooling is supported, got text_pool_type={self.text_pool_type!r}")
        self.requires_grad_(True)
        self.tokenizer, self.prompts = tokenizer, tuple(templates)
        self.class_names = list(class_names)
        self.register_buffer("ids", self._ids(self.class_names), persistent=False)  # (K, C, n_ctx)

    def _ids(self, names: list[str]) -> torch.Tensor:
        tokens = self.tokenizer([t.format(n) for t in self.prompts for n in names]).long()
        return tokens.view(len(self.prompts), len(names), -1).to(self.token_embedding.weight.device)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [..., n_ctx] -> projected EOT features [..., D], as open_clip's `encode_text`."""
        lead = ids.shape[:-1]
        ids = ids.reshape(-1, ids.shape[-1])
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(ids).to(cast) + self.positional_embedding.to(cast)  # (n, n_ctx, width)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]  # (n, width) at EOT
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return x.view(*lead, -1)

    def per_video(self, labels: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """Text [B, D] of each video's class (`labels`, indices into the training classes) in its template."""
        return self.encode(self.ids[templates.to(self.ids.device), labels.to(self.ids.device)])

    def templates(self, names: list[str] | None = None) -> torch.Tensor:
        """Every template's text [K, C, D] of `names` (default: the training classes)."""
        ids = self.ids if names is None or list(names) == self.class_names else self._ids(list(names))
        return self.encode(ids)

    def encode_names(self, names: list[str]) -> torch.Tensor:
        """The ensemble [C, D]: mean over templates of normalised embeddings, normalised again."""
        per = F.normalize(self.templates(names).float(), dim=-1)  # (K, C, D)
        return F.normalize(per.mean(dim=0), dim=-1)

    def forward(self) -> torch.Tensor:
        return self.encode_names(self.class_names)
