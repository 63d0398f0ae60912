"""Fixtures from TalalWasim/Vita-CLIP: the prompted vision encoder, the learnable text context,
and the trainable-parameter count at ViT-B/16 shapes.

What runs is theirs, unmodified: `CLIPVisionEncoder` (training/VitaCLIP_vision_encoder.py) with
one prompted `TransformerEncoderLayer` (global prompts, local prompts, summary token, T frames);
`CLIPTextEncoder` and `TextPromptLearner` (training/VitaCLIP_text_encoder.py, class-specific
context, their tokenizer); and the whole `VitaCLIP` model (training/VitaCLIP_model.py) at
ViT-B/16 shapes, built only to count what its freezing rule leaves trainable.

What is replaced, and why:
- Weights are seeded random values instead of a CLIP checkpoint (which their loader reads
  with strict=False). The patch embedding's bias is set to zero: CLIP's patch convolution has
  none, and their conversion of the checkpoint is not in the repository.
- Small shapes: 8x8 frames of 4x4 patches, width 64, 8 heads, MLP factor 2 for the vision
  layer; a 1-layer text transformer of width 64 (their text block's MLP is 4x, fixed).
- Of the text token embedding only the rows the prompts use are stored (the full table is
  49408 x 64); the prompt learner reads them when it is built, as in their code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from official import capture_locals, imported_from, on_cpu, randomize, seeded, standard_stubs, state
from parity_io import round_fp16

B, T, S, P, W, HEADS, MLP, GLOBAL, CONTEXT = 2, 8, 8, 4, 64, 8, 2.0, 8, 8
CLASS_NAMES = ["playing guitar", "riding a bike", "brushing_teeth"]


def vision(gen: torch.Generator) -> tuple[dict, dict]:
    from VitaCLIP_vision_encoder import CLIPVisionEncoder

    encoder = CLIPVisionEncoder(
        input_size=(S, S), num_frames=T, feature_dim=W, patch_size=(P, P), num_heads=HEADS, num_layers=1, mlp_factor=MLP,
        embed_dim=W, use_summary_token=True, use_local_prompts=True, use_global_prompts=True, num_global_prompts=GLOBAL,
    )
    randomize(encoder, gen)
    with torch.no_grad():
        encoder.patch_embed.proj.bias.zero_()
    encoder.eval()
    video = round_fp16(torch.rand(B, 3, T, S, S, generator=gen, dtype=torch.float64) * 2 - 1).float()  # their layout: B, C, T, H, W
    with torch.no_grad(), capture_locals(encoder.forward.__func__) as seen:
        out = encoder(video)
    tensors = {
        "input.video": video,
        **state(encoder),
        "output.video_embedding": out,  # (B, W): mean over frames of the projected class tokens
        "output.tokens": seen["x"],  # (B * T, 1 + patches, W) after the prompted layer, prompts removed
    }
    meta = {
        "module": "training/VitaCLIP_vision_encoder.py:CLIPVisionEncoder (1 layer)",
        "frames": T, "image_size": S, "patch_size": P, "width": W, "heads": HEADS, "mlp_factor": MLP,
        "global_prompts": GLOBAL, "batch": B, "input_layout": "B, C, T, H, W", "computed_in": "float32",
    }
    return tensors, meta


def text(gen: torch.Generator) -> tuple[dict, dict]:
    from VitaCLIP_text_encoder import CLIPTextEncoder, TextPromptLearner

    encoder = CLIPTextEncoder(embed_dim=W, context_length=77, vocab_size=49408, transformer_width=W, transformer_heads=HEADS, transformer_layers=1)
    randomize(encoder, gen)
    learner = TextPromptLearner(classnames=CLASS_NAMES, text_model=encoder, num_prompts=CONTEXT, CSC=True, ctx_pos="end")
    with torch.no_grad():
        learner.ctx.copy_(round_fp16(0.1 * torch.randn(learner.ctx.shape, generator=gen, dtype=torch.float64)).float())
        out = encoder(learner(), learner.tokenized_prompts)
    ids = torch.unique(learner.tokenized_prompts.long())
    tensors = {
        "input.tokenized_prompts": learner.tokenized_prompts.long(),
        "input.token_ids": ids,
        "input.token_rows": encoder.token_embedding.weight[ids].detach().clone(),
        **{k: v for k, v in state(encoder).items() if k != "weight.token_embedding.weight"},
        "weight.prompt_learner.ctx": learner.ctx.detach().clone(),
        "output.text_features": out,
    }
    meta = {
        "module": "training/VitaCLIP_text_encoder.py:TextPromptLearner (CSC, end) + CLIPTextEncoder (1 layer)",
        "class_names": CLASS_NAMES, "context": CONTEXT, "computed_in": "float32", "width": W, "heads": HEADS, "context_length": 77, "vocab_size": 49408,
    }
    return tensors, meta


GROUPS = ("global_prompts", "local_prompts", "summary", "time_embed", "cls_proj", "prompt_learner.ctx", "logit_scale")


def trainable_counts(root: Path) -> tuple[dict, dict]:
    """Parameter counts by name group of VitaCLIP at ViT-B/16 shapes (K400's 400 classes, the
    options of train_scripts/k400_train.sh), after its own freezing."""
    from VitaCLIP_model import VitaCLIP

    classes = root / "classes" / "k400_classes.txt"
    with torch.device("meta"):  # counting only: no memory for 150M weights
        model = VitaCLIP(
            input_size=(224, 224), num_frames=8, feature_dim=768, patch_size=(16, 16), num_heads=12, num_layers=12, mlp_factor=4.0,
            embed_dim=512, use_summary_token=True, use_local_prompts=True, use_global_prompts=True, num_global_prompts=8,
            use_text_prompt_learning=True, text_num_prompts=8, text_prompt_CSC=True, text_prompt_classes_path=str(classes),
        )
    counts = {group: {"trainable": 0, "total": 0} for group in GROUPS}
    counts["other"] = {"trainable": 0, "total": 0}
    for name, p in model.named_parameters():
        group = next((g for g in GROUPS if g in name), "other")
        counts[group]["total"] += p.numel()
        counts[group]["trainable"] += p.numel() if p.requires_grad else 0
    meta = {
        "module": "training/VitaCLIP_model.py:VitaCLIP, frozen by _freeze_visual_except_prompts_time_embed and _freeze_textual",
        "shapes": {"feature_dim": 768, "layers": 12, "heads": 12, "patch": 16, "image": 224, "frames": 8, "embed_dim": 512, "global_prompts": 8,
                   "text_width": 512, "text_layers": 12, "text_context": 8, "classes": model.prompt_learner.n_cls},
        "counts": counts,
        "trainable_total": sum(c["trainable"] for c in counts.values()),
    }
    return {}, meta


def generate(root: Path, seed: int) -> dict[str, tuple[dict, dict]]:
    # float32: their LayerNorm casts its input to float32, so it cannot run with float64 weights.
    with imported_from(root, subdirs=("training",), stubs=standard_stubs()), on_cpu(torch.float32):
        return {
            "vita_vision": vision(seeded(seed + 3)),
            "vita_text": text(seeded(seed + 4)),
            "vita_counts": trainable_counts(root),
        }
