"""ActionCLIP (Wang et al., 2021): video-text matching on frame embeddings.

As the official code (sallymmx/ActionCLIP @31c34df) computes it:

- Temporal fusion (`modules/Visual_Prompt.py`, sim_header "Transf"): learned frame-position
  embeddings added to the frame embeddings, 6 residual attention blocks of CLIP's form
  (pre-norm, LayerNorm eps 1e-12, QuickGELU MLP of 4x width, no dropout), a residual
  connection to the input frames, then the mean over frames. Linear and embedding weights start
  at N(0, 0.02), biases at 0. `temporal_fusion="mean"` is plain mean pooling.
- Class texts from a prompt ensemble (the `actionclip` set: 16 templates).
- Training (`train.py`, `utils/KLLoss.py`): scaled cosines between every video of a batch and the
  class text of every video; the loss is the mean of the video->text and text->video KL
  divergences against softmax(10 x the 0/1 same-class matrix) (`symmetric_video_text_kl`). The
  logit scale is CLIP's (its trained value, 100, to start; learnable).
- Zero-shot (`test.py:57-61`): every template's text scored separately, softmax(100 x cosine) over
  classes averaged over the templates (`template_ensemble_scores`).

In adapter mode the text embeddings are the frozen encoder's; in finetune mode the text encoder
trains too, with a random template per video each step (see `train.model`). Few-shot episodes
are scored by cosine to mean prototypes of the fused video embeddings.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fsar.train import parallel
from fsar.train.heads.base import EpisodeBatch, Head
from fsar.train.losses import symmetric_video_text_kl
from fsar.train.heads.spec import MethodSpec

CLIP_LOGIT_SCALE = 100.0  # exp of a trained CLIP's logit_scale: ActionCLIP starts from the model's own


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation OpenAI's CLIP and ActionCLIP's fusion use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class FusionBlock(nn.Module):
    """One residual attention block of CLIP's form on (N, T, D) tokens, without dropout."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by {heads} attention heads")
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(dim, eps=1e-12)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(dim, 4 * dim)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * dim, dim))]))
        self.ln_2 = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def template_ensemble_scores(video: torch.Tensor, text: torch.Tensor, scale: float = CLIP_LOGIT_SCALE) -> torch.Tensor:
    """ActionCLIP's zero-shot scores: softmax over classes of scale x cosine, for each template,
    averaged over templates.

    Args:
        video: [N, D] video embeddings; text: [K, C, D] class texts of K templates.

    Returns:
        [N, C] class probabilities.
    """
    v = F.normalize(video.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    return (scale * torch.einsum("nd,kcd->nkc", v, t)).softmax(dim=-1).mean(dim=1)


class ActionCLIP(Head):
    """ActionCLIP's video encoder and video-text loss on frame embeddings of width `dim`."""

    spec = MethodSpec(
        "actionclip",
        modes=("adapter", "finetune"),
        # the 16-template prompt ensemble, the official 6-block fusion transformer, no fusion at
        # test, and 20% of each training class's videos held out for the supervised protocol
        defaults={"prompts": "actionclip", "fusion_beta": None, "temporal_fusion": "transformer", "temporal_layers": 6, "holdout": 0.2},
        paper={"mode": "finetune", "temporal_fusion": "transformer", "temporal_layers": 6, "prompts": "actionclip", "text_trains": True},
        shot_free=True,
        batch_loss=True,
        template_zero_shot=True,
    )

    @classmethod
    def trainable_text(cls, config, clip_model, class_names: list[str]) -> nn.Module | None:
        """In finetune mode (with `text_trains`, the official) the text tower trains too, each
        video paired with a random template of its class each step."""
        if config.mode != "finetune" or not config.text_trains:
            return None
        from fsar.pipeline.backbones import tokenizer
        from fsar.pipeline.prompts import PROMPT_SETS
        from fsar.train.text_tower import PromptText

        return PromptText(clip_model, class_names, PROMPT_SETS[config.prompts], tokenizer(config.backbone))

    def __init__(self, dim: int, config) -> None:
        super().__init__()
        self.fusion = config.temporal_fusion
        if self.fusion == "transformer":
            self.frame_position = nn.Embedding(config.frames, dim)
            self.blocks = nn.ModuleList(FusionBlock(dim, config.heads) for _ in range(config.temporal_layers))
            self.apply(_init_fusion)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(CLIP_LOGIT_SCALE)))

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, T, D] frame embeddings -> [N, D] video embeddings (not normalised)."""
        if self.fusion == "mean":
            return frames.mean(dim=1)
        x = frames + self.frame_position.weight[: frames.shape[1]].to(frames.dtype)  # (N, T, D)
        for block in self.blocks:
            x = block(x)
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
        """Scores [N, C] of videos [N, T, D] with class texts: [C, D] (one text per class: scaled
        cosines) or [K, C, D] (K templates: `template_ensemble_scores`, the official zero-shot)."""
        if text.dim() == 3:
            return template_ensemble_scores(self.video(frames), text, self.logit_scale.exp().item())
        v = F.normalize(self.video(frames), dim=-1)
        return self.logit_scale.exp() * v @ F.normalize(text.to(v.dtype), dim=-1).T

    def predict(self, batch: EpisodeBatch, query_enc: torch.Tensor, support_enc: torch.Tensor, fusion_beta: float | None) -> torch.Tensor:
        few = self.episode_logits(query_enc, support_enc, batch.way)
        if fusion_beta is None:
            return few
        q = F.normalize(query_enc[:, :, 0], dim=-1)
        text = self.logit_scale.exp() * torch.einsum("eqd,ewd->eqw", q, F.normalize(batch.class_text.to(q.dtype), dim=-1))
        return fusion_beta * F.log_softmax(text, dim=-1) + (1 - fusion_beta) * F.log_softmax(few, dim=-1)

    def loss(self, batch: EpisodeBatch, base_text: torch.Tensor, video_text: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The symmetric KL loss over the batch's videos. `video_text` [B, D], when given, is each
        video's own text (a random template per video, finetune mode); else its class's `base_text`."""
        videos = torch.cat([batch.support, batch.query], dim=1)  # (E, Ns + Nq, T, D)
        labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)  # (B,)
        v = F.normalize(self.video(videos.reshape(-1, *videos.shape[2:])), dim=-1)  # (B, D)
        t = F.normalize((base_text[labels] if video_text is None else video_text).to(v.dtype), dim=-1)  # (B, D)
        group = parallel.current()
        if group.world > 1:  # the step's videos, every worker's, in episode order (this worker's own keep their gradient)
            v, t, labels = (parallel.gather_rows(x, group) for x in (v, t, labels))
        logits = self.logit_scale.exp() * v @ t.T  # (B, B)
        loss = symmetric_video_text_kl(logits, labels, labels)
        with torch.no_grad():
            acc = ((v @ F.normalize(base_text.to(v.dtype), dim=-1).T).argmax(-1) == labels).float().mean().item()
        return loss, {"loss": loss.item(), "video_text_accuracy": acc * 100, "accuracy": acc * 100, "logit_scale": self.logit_scale.exp().item()}


def _init_fusion(module: nn.Module) -> None:
    """The official initialisation: Linear and Embedding weights N(0, 0.02), biases 0, LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
