"""MA-CLIP adapters and Vita-CLIP prompts around a frozen micro CLIP (train/peft.py)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from fsar.train.peft import (
    MAAdaptedViT,
    VitaPromptedViT,
    VitaTextPrompt,
    count_parameters,
    encode_frozen_images,
)

B, T = 2, 3
ATOL = 1e-5  # adapters make inputs require grad, which moves attention off its no-grad fast path


def _backbone(name: str):
    from fsar.pipeline.backbones import BackboneSpec, create_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(BackboneSpec(name, "none", 0))[0]


@pytest.fixture(scope="module")
def clip():
    return _backbone("fsar-micro-vit")  # one block


@pytest.fixture(scope="module")
def deep_clip():
    """Two blocks: at the first, every frame's class token is the same learnt vector, so
    paths that read class tokens across frames (MA's temporal adapter, Vita's local prompts
    and summary token) only carry information between frames from the second block on."""
    return _backbone("fsar-tiny-vit")


@pytest.fixture(scope="module")
def tokenizer():
    from fsar.pipeline.backbones import _open_clip, resolve_name

    return _open_clip().get_tokenizer(resolve_name("fsar-micro-vit"))


def random_frames(model, seed: int = 1) -> torch.Tensor:
    S = model.visual.image_size[0]
    return torch.randn(B, T, 3, S, S, generator=torch.Generator().manual_seed(seed))


def change_first_frame(frames: torch.Tensor) -> torch.Tensor:
    changed = frames.clone()
    changed[:, 0] = torch.randn(changed[:, 0].shape, generator=torch.Generator().manual_seed(2))
    return changed


@pytest.fixture()
def frames(clip) -> torch.Tensor:
    return random_frames(clip)


def frozen_frames(clip, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clip.visual(frames.flatten(0, 1)).view(B, T, -1)  # (B, T, D)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def perturb(param: torch.Tensor, seed: int = 0, scale: float = 0.5) -> None:
    with torch.no_grad():
        param.add_(scale * torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)))


# --- the frozen pipeline -------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
def test_stepwise_pipeline_equals_visual(clip, batch_first):
    model = clip
    if not batch_first:  # the (L, N, D) layout older open_clip configs run in
        model = copy.deepcopy(clip)
        model.visual.transformer.batch_first = False
        for block in model.visual.transformer.resblocks:
            block.attn.batch_first = False
    x = torch.randn(4, 3, *clip.visual.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (encode_frozen_images(model.visual, x) - model.visual(x)).abs().max() < 1e-5
        assert (encode_frozen_images(model.visual, x) - clip.visual(x)).abs().max() < 1e-5
    # the wrappers take the same layout into account
    frames = random_frames(clip)
    ref = frozen_frames(clip, frames)
    ma = MAAdaptedViT(model, frames=T)
    assert (ma(frames, torch.randn(B, ma.text_dim)) - ref).abs().max() < ATOL
    vita = VitaPromptedViT(model, frames=T, global_prompts=0, local_prompts=False, summary_token=False, temporal_embedding=False)
    assert (vita(frames) - ref.mean(dim=1)).abs().max() < ATOL


def test_pooling_other_than_class_token_is_refused(clip):
    model = copy.deepcopy(clip)
    model.visual.pool_type = "avg"
    with pytest.raises(ValueError, match="class-token pooling"):
        MAAdaptedViT(model, frames=T)
    with pytest.raises(ValueError, match="class-token pooling"):
        encode_frozen_images(model.visual, torch.zeros(1, 3, *clip.visual.image_size))


# --- MA-CLIP -------------------------------------------------------------------------------


@pytest.mark.parametrize("without_text", ["visual", "skip"])
def test_ma_at_init_equals_frozen_clip(clip, frames, without_text):
    ma = MAAdaptedViT(clip, frames=T, multimodal_without_text=without_text)
    text = torch.randn(B, ma.text_dim)
    ref = frozen_frames(clip, frames)
    assert ma(frames).shape == ref.shape == (B, T, clip.visual.output_dim)
    assert (ma(frames) - ref).abs().max() < ATOL
    assert (ma(frames, text) - ref).abs().max() < ATOL


def test_ma_step_trains_adapters_only(clip, frames):
    torch.manual_seed(0)
    ma = MAAdaptedViT(clip, frames=T)
    text = torch.randn(B, ma.text_dim)
    clip_before = snapshot(clip)
    before = ma(frames, text).detach()
    opt = torch.optim.SGD(ma.trainable_parameters(), lr=0.5)
    loss = (ma(frames, text) * torch.randn(B, T, before.shape[-1])).sum()
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in ma.visual.parameters())
    for ad in ma.adapters:  # zero-initialised up-projections are the first to receive gradient
        for up in (ad.temporal.up, ad.multimodal.up, ad.joint.up):
            assert up.weight.grad is not None and up.weight.grad.abs().sum() > 0
    opt.step()
    assert (ma(frames, text) - before).abs().max() > 1e-4
    assert_unchanged(clip, clip_before)


def test_ma_parameter_counts(clip):
    ma = MAAdaptedViT(clip, frames=T)
    trainable, total = ma.parameter_counts()
    adapters = sum(p.numel() for p in ma.adapters.parameters())
    backbone = sum(p.numel() for p in clip.visual.parameters())
    assert trainable == adapters == sum(p.numel() for p in ma.trainable_parameters()) > 0
    assert total == adapters + backbone
    assert trainable < 0.1 * total
    assert count_parameters(clip.visual) == (0, backbone)


def test_ma_temporal_adapter_is_the_only_path_between_frames(deep_clip):
    frames = random_frames(deep_clip)
    ma = MAAdaptedViT(deep_clip, frames=T)
    text = torch.randn(B, ma.text_dim)
    for ad in ma.adapters:  # make the within-frame adapters non-trivial
        for i, up in enumerate((ad.multimodal.up.weight, ad.joint.up.weight)):
            perturb(up, seed=i)
    changed = change_first_frame(frames)
    with torch.no_grad():
        a, b = ma(frames, text), ma(changed, text)
        assert torch.allclose(a[:, 1:], b[:, 1:], atol=ATOL)  # no temporal adapter: frames independent
        for ad in ma.adapters:
            perturb(ad.temporal.up.weight, seed=7)
        a, b = ma(frames, text), ma(changed, text)
        assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-4


def test_ma_text_enters_through_its_clip_only(clip, frames):
    ma = MAAdaptedViT(clip, frames=T)
    for ad in ma.adapters:
        perturb(ad.multimodal.up.weight)
    text = torch.randn(B, ma.text_dim)
    other = text.clone()
    perturb(other[1])  # a different class text for clip 1 only
    with torch.no_grad():
        a, b = ma(frames, text), ma(frames, other)
    assert torch.allclose(a[0], b[0], atol=ATOL)
    assert (a[1] - b[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="text of shape"):
        ma(frames, torch.randn(B, ma.text_dim + 1))


# --- Vita-CLIP, video ----------------------------------------------------------------------


def test_vita_without_prompts_equals_frozen_frame_average(clip, frames):
    for temporal in (True, False):
        vita = VitaPromptedViT(clip, frames=T, global_prompts=0, local_prompts=False, summary_token=False, temporal_embedding=temporal)
        if temporal:  # N(0, 0.02) at init, as the official code; zeroed, it adds nothing
            assert 0.01 < vita.temporal_embedding.std().item() < 0.03
            with torch.no_grad():
                vita.temporal_embedding.zero_()
        ref = frozen_frames(clip, frames)
        assert (vita.encode_frames(frames) - ref).abs().max() < ATOL
        assert (vita(frames) - ref.mean(dim=1)).abs().max() < ATOL


def test_vita_each_prompt_changes_the_embedding(clip, frames):
    vita = VitaPromptedViT(clip, frames=T)
    assert vita(frames).shape == (B, clip.visual.output_dim)
    assert torch.allclose(vita(frames), vita.encode_frames(frames).mean(dim=1))
    layer = vita.layers[0]
    params = {
        "global": layer.global_prompts,
        "local": layer.local_prompts,
        "cls_proj": layer.cls_proj.weight,
        "summary": layer.summary_attn.out_proj.weight,
        "temporal": vita.temporal_embedding,
    }
    for name, param in params.items():
        with torch.no_grad():
            before = vita(frames)
            perturb(param)
            assert (vita(frames) - before).abs().max() > 1e-4, name


@pytest.mark.parametrize("local, summary, mixes", [(False, False, False), (True, False, True), (False, True, True)])
def test_vita_local_and_summary_tokens_carry_other_frames(deep_clip, local, summary, mixes):
    frames = random_frames(deep_clip)
    vita = VitaPromptedViT(deep_clip, frames=T, global_prompts=4, local_prompts=local, summary_token=summary, temporal_embedding=False)
    changed = change_first_frame(frames)
    with torch.no_grad():
        diff = (vita.encode_frames(frames)[:, 1:] - vita.encode_frames(changed)[:, 1:]).abs().max()
    assert (diff > 1e-4) == mixes


def test_vita_gradients_reach_prompts_not_clip(clip, frames):
    vita = VitaPromptedViT(clip, frames=T).train()
    assert vita.training and not any(m.training for m in vita.visual.modules())  # the backbone stays in eval
    clip_before = snapshot(clip)
    vita(frames).square().sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in vita.visual.parameters())
    grads = {n: p.grad for n, p in vita.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    trainable, total = vita.parameter_counts()
    frozen_proj = sum(p.numel() for layer in vita.layers for p in layer.cls_proj.parameters())
    assert frozen_proj and not any(p.requires_grad for layer in vita.layers for p in layer.cls_proj.parameters())
    assert trainable == sum(p.numel() for p in vita.layers.parameters()) - frozen_proj + vita.temporal_embedding.numel()
    assert total == trainable + frozen_proj + sum(p.numel() for p in clip.visual.parameters())
    torch.optim.SGD(vita.trainable_parameters(), lr=0.1).step()
    assert_unchanged(clip, clip_before)


def test_vita_refuses_other_frame_counts(clip, frames):
    with pytest.raises(ValueError, match="expected 4 frames"):
        VitaPromptedViT(clip, frames=4)(frames)


# --- Vita-CLIP, text -----------------------------------------------------------------------

NAMES = ["jumping jack", "riding_a_bike", "run"]


def test_text_context_set_to_a_handmade_prompt_equals_encode_text(clip, tokenizer):
    prefix = "a video of a"  # 4 tokens
    text = VitaTextPrompt(clip, NAMES, tokenizer, context=4)
    with torch.no_grad():
        ids = tokenizer([prefix])[0, 1:5]
        text.context.copy_(clip.token_embedding(ids).expand(len(NAMES), -1, -1))
        ref = clip.encode_text(tokenizer([f"{prefix} {n.replace('_', ' ')}." for n in NAMES]))
        assert text().shape == (len(NAMES), ref.shape[1])
        assert (text() - ref).abs().max() < 1e-5
        # unseen names get the mean context, here the same prompt
        unseen = ["skipping rope", "waving"]
        assert (text.encode_names(unseen) - clip.encode_text(tokenizer([f"{prefix} {n}." for n in unseen]))).abs().max() < 1e-5


def test_text_context_is_class_specific(clip, tokenizer):
    text = VitaTextPrompt(clip, NAMES, tokenizer)
    assert text.context.shape == (len(NAMES), 8, clip.token_embedding.weight.shape[1])
    assert text.context.dtype == clip.token_embedding.weight.dtype
    with torch.no_grad():
        before = text()
        perturb(text.context[1])  # not a constant shift: LayerNorm would remove it
        after = text()
    assert torch.equal(before[[0, 2]], after[[0, 2]])
    assert (before[1] - after[1]).abs().max() > 1e-4


def test_text_trains_context_only(clip, tokenizer):
    text = VitaTextPrompt(clip, NAMES, tokenizer)
    clip_before = snapshot(clip)
    text().square().sum().backward()
    assert [n for n, p in text.named_parameters() if p.requires_grad] == ["context"]
    assert text.context.grad is not None and text.context.grad.abs().sum() > 0
    assert text.parameter_counts()[0] == text.context.numel()
    torch.optim.SGD(text.trainable_parameters(), lr=0.1).step()
    assert_unchanged(clip, clip_before)


def test_text_names_too_long_for_the_context_are_refused(clip, tokenizer):
    with pytest.raises(ValueError, match="do not fit"):
        VitaTextPrompt(clip, ["word " * 70], tokenizer, context=8)
