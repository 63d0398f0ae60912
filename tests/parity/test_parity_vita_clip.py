"""Vita-CLIP against TalalWasim/Vita-CLIP's own code (fixtures: vita_vision, vita_text, vita_counts).

- Vision: their `CLIPVisionEncoder` with one prompted layer (8 global prompts, T local
  prompts conditioned on the class tokens, the summary token), run on seeded 8x8 frames; ours
  is `VitaPromptedViT` over an open_clip ViT of the same shapes holding their weights.
- Text: their `TextPromptLearner` (class-specific context) through their 1-layer
  `CLIPTextEncoder`; ours is `VitaTextPrompt` over an open_clip text tower with their weights.
- Counts: what their freezing leaves trainable at ViT-B/16 shapes, by name group, against ours.
"""

from __future__ import annotations

import pytest
import torch

from parity_io import load_fixture

TOL = dict(rtol=1e-5, atol=1e-5, check_dtype=False)


def tiny_clip(vision: dict, text: dict):
    """An open_clip CLIP (QuickGELU, as OpenAI's weights) at the fixtures' shapes, float64."""
    from open_clip.model import CLIP

    vision_cfg = dict(image_size=vision["image_size"], patch_size=vision["patch_size"], width=vision["width"], layers=1, head_width=vision["width"] // vision["heads"], mlp_ratio=vision["mlp_factor"])
    text_cfg = dict(context_length=text["context_length"], vocab_size=text["vocab_size"], width=text["width"], heads=text["heads"], layers=1)
    return CLIP(embed_dim=vision["width"], vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True).double().eval()


def _qkv(w: dict, prefix: str, kind: str) -> torch.Tensor:
    return torch.cat([w[f"{prefix}{p}_proj.{kind}"] for p in "qkv"])


@pytest.fixture(scope="module")
def vision():
    return load_fixture("vita_vision")


@pytest.fixture(scope="module")
def text():
    return load_fixture("vita_text")


@pytest.fixture(scope="module")
def prompted(vision, text):
    """Our VitaPromptedViT holding their vision weights."""
    from fsar.train.peft.vita import VitaPromptedViT

    model = tiny_clip(vision.meta, text.meta)
    w = vision.weights()
    assert not w["patch_embed.proj.bias"].any(), "CLIP's patch embedding has no bias; the fixture's must be zero"
    visual = {
        "conv1.weight": w["patch_embed.proj.weight"],
        "class_embedding": w["cls_token"],
        "positional_embedding": w["pos_embed"],
        "ln_pre.weight": w["ln_pre.weight"], "ln_pre.bias": w["ln_pre.bias"],
        "ln_post.weight": w["ln_post.weight"], "ln_post.bias": w["ln_post.bias"],
        "proj": w["proj"],
        "transformer.resblocks.0.ln_1.weight": w["blocks.0.norm1.weight"], "transformer.resblocks.0.ln_1.bias": w["blocks.0.norm1.bias"],
        "transformer.resblocks.0.ln_2.weight": w["blocks.0.norm2.weight"], "transformer.resblocks.0.ln_2.bias": w["blocks.0.norm2.bias"],
        "transformer.resblocks.0.attn.in_proj_weight": _qkv(w, "blocks.0.attn.", "weight"),
        "transformer.resblocks.0.attn.in_proj_bias": _qkv(w, "blocks.0.attn.", "bias"),
        "transformer.resblocks.0.attn.out_proj.weight": w["blocks.0.attn.out_proj.weight"],
        "transformer.resblocks.0.attn.out_proj.bias": w["blocks.0.attn.out_proj.bias"],
        "transformer.resblocks.0.mlp.c_fc.weight": w["blocks.0.mlp.fc1.weight"], "transformer.resblocks.0.mlp.c_fc.bias": w["blocks.0.mlp.fc1.bias"],
        "transformer.resblocks.0.mlp.c_proj.weight": w["blocks.0.mlp.fc2.weight"], "transformer.resblocks.0.mlp.c_proj.bias": w["blocks.0.mlp.fc2.bias"],
    }
    model.visual.load_state_dict(visual, strict=True)
    vit = VitaPromptedViT(model, frames=vision.meta["frames"], global_prompts=vision.meta["global_prompts"]).double()
    prompts = {
        "global_prompts": w["global_prompts"][0],
        "local_prompts": w["blocks.0.local_prompts"][0],
        "cls_proj.weight": w["blocks.0.cls_proj.weight"], "cls_proj.bias": w["blocks.0.cls_proj.bias"],
        "summary_norm.weight": w["blocks.0.summary_ln.weight"], "summary_norm.bias": w["blocks.0.summary_ln.bias"],
        "summary_attn.in_proj_weight": _qkv(w, "blocks.0.summary_attn_layer.", "weight"),
        "summary_attn.in_proj_bias": _qkv(w, "blocks.0.summary_attn_layer.", "bias"),
        "summary_attn.out_proj.weight": w["blocks.0.summary_attn_layer.out_proj.weight"],
        "summary_attn.out_proj.bias": w["blocks.0.summary_attn_layer.out_proj.bias"],
    }
    vit.layers[0].load_state_dict(prompts, strict=True)
    with torch.no_grad():
        vit.temporal_embedding.copy_(w["time_embed"])
    return vit.eval()


def _frames(vision) -> torch.Tensor:
    return vision["input.video"].permute(0, 2, 1, 3, 4)  # theirs (B, C, T, H, W) -> ours (B, T, C, H, W)


def test_prompted_layer_tokens_match_official(vision, prompted):
    """The tokens after the prompted layer (prompts dropped): global, local and summary prompts
    and the temporal embedding all enter here."""
    seen = {}
    block = prompted.visual.transformer.resblocks[0]
    handle = block.register_forward_hook(lambda module, args, out: seen.setdefault("tokens", out))
    try:
        with torch.no_grad():
            prompted.encode_frames(_frames(vision))
    finally:
        handle.remove()
    expected = vision["output.tokens"]  # (B * T, 1 + patches, W)
    torch.testing.assert_close(seen["tokens"][:, : expected.shape[1]], expected, **TOL)


def test_video_embedding_matches_official(vision, prompted):
    with torch.no_grad():
        video = prompted(_frames(vision))  # (B, D): mean over frames
    torch.testing.assert_close(video, vision["output.video_embedding"], **TOL)


def test_text_context_matches_official(vision, text):
    import open_clip

    from fsar.train.peft.vita import VitaTextPrompt

    model = tiny_clip(vision.meta, text.meta)
    w = text.weights()
    with torch.no_grad():
        model.token_embedding.weight.zero_()
        model.token_embedding.weight[text["input.token_ids"]] = text["input.token_rows"]
    tower = {k: v for k, v in w.items() if not k.startswith("prompt_learner.")}
    missing, unexpected = model.load_state_dict(tower, strict=False)
    assert not unexpected and not [k for k in missing if not k.startswith(("visual.", "token_embedding", "logit_scale"))], (missing, unexpected)
    prompt = VitaTextPrompt(model, text.meta["class_names"], open_clip.tokenize, context=text.meta["context"])
    n = text.meta["context"]
    theirs = text["input.tokenized_prompts"]
    assert torch.equal(prompt.token_ids[:, 0], theirs[:, 0]) and torch.equal(prompt.token_ids[:, 1 + n :], theirs[:, 1 + n :])
    with torch.no_grad():
        prompt.context.copy_(w["prompt_learner.ctx"])
        features = prompt()  # (C, D)
    torch.testing.assert_close(features, text["output.text_features"], **TOL)


# Our parameter names -> their group names (tools/parity/vita_clip.py GROUPS).
OUR_GROUPS = {
    "global_prompts": "global_prompts",
    "local_prompts": "local_prompts",
    "summary_": "summary",
    "temporal_embedding": "time_embed",
    "cls_proj": "cls_proj",
    "context": "prompt_learner.ctx",
    "logit_scale": "logit_scale",
}


def test_trainable_parameters_match_official_at_vit_b16():
    """Per name group, what trains in ours equals what their freezing leaves trainable
    (VitaCLIP_model.py:128-137), at ViT-B/16 shapes with 400 classes. Built on the meta device:
    shapes only."""
    import open_clip
    from open_clip.model import CLIP

    from fsar.train.config import TrainConfig
    from fsar.train.heads.vita_clip import VitaCLIP
    from fsar.train.peft.vita import VitaPromptedViT, VitaTextPrompt

    fx = load_fixture("vita_counts")
    shapes, counts = fx.meta["shapes"], fx.meta["counts"]
    assert shapes["feature_dim"] == 768 and shapes["layers"] == 12
    with torch.device("meta"):
        model = CLIP(**open_clip.get_model_config("ViT-B-16"), quick_gelu=True)
        visual = VitaPromptedViT(model, frames=shapes["frames"], global_prompts=shapes["global_prompts"])
        head = VitaCLIP(shapes["embed_dim"], TrainConfig(method="vita-clip", mode="peft"))
    # outside the meta context: the tokenizer's ids are read on the CPU; the context is made on the weights' (meta) device
    text = VitaTextPrompt(model, [f"class {i}" for i in range(shapes["classes"])], open_clip.tokenize, context=shapes["text_context"])
    parts = {"visual.": visual, "text.": text, "head.": head}
    ours = {group: 0 for group in counts}
    for prefix, module in parts.items():
        for name, p in module.named_parameters():
            if p.requires_grad:
                ours[next((g for key, g in OUR_GROUPS.items() if key in name), "other")] += p.numel()
    theirs = {group: c["trainable"] for group, c in counts.items()}
    assert ours == theirs
    assert sum(ours.values()) == fx.meta["trainable_total"]
