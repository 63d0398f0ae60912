"""MA-CLIP and ActionCLIP heads, their losses, and the zero-shot / supervised protocols."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.train.configs import get_config
from fsar.train.data import SplitInfo, holdout_rows
from fsar.train.evaluate import classification_result
from fsar.train.heads import EpisodeBatch, build_head
from fsar.train.losses import kl_to_target, multi_positive_target, symmetric_video_text_kl
from fsar.train.metrics import otam_logits


def _batch(E=2, way=3, shot=2, query=2, T=4, D=16, seed=0) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(way)
    class_text = torch.randn(E, way, D, generator=g)
    return EpisodeBatch(
        support=torch.randn(E, way * shot, T, D, generator=g),
        query=torch.randn(E, way * query, T, D, generator=g),
        support_text=class_text.repeat_interleave(shot, dim=1),
        class_text=class_text,
        support_labels=labels.repeat_interleave(shot).repeat(E, 1),
        query_labels=labels.repeat_interleave(query).repeat(E, 1),
        way=way,
    )


def _head(method: str, **changes):
    cfg = dataclasses.replace(get_config("tiny", method), frames=4, heads=2, ffn_dim=32, **changes)
    torch.manual_seed(0)
    return build_head(cfg, 16).eval()


# --- the ActionCLIP loss ----------------------------------------------------------------------

def test_multi_positive_target_spreads_mass_over_repeated_labels():
    t = multi_positive_target(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1, 2]))
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert torch.equal(t, expected)
    with pytest.raises(ValueError, match="no matching text"):
        multi_positive_target(torch.tensor([3]), torch.tensor([0, 1]))


def test_symmetric_kl_uses_actionclips_softened_target_and_matches_the_formula():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    same = (labels[:, None] == labels[None, :]).float()
    # The official target is softmax(10 x same-class matrix): a negative keeps a little mass.
    target = torch.exp(10 * same) / torch.exp(10 * same).sum(1, keepdim=True)
    assert 0 < target[0, 2] < 1e-4 and target[0, 0] == pytest.approx(0.5 * (1 - 4 * target[0, 2].item()), rel=1e-6)
    # Each direction is a KL divergence to that target: zero where the softmax is the target.
    assert kl_to_target(torch.log(target), target).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    manual = 0.0
    for lg in (logits, logits.T):
        p = F.log_softmax(lg, dim=1)
        manual += (target * (torch.log(target) - p)).sum() / 6 / 2  # KLDivLoss mean x batch size
    assert symmetric_video_text_kl(logits, labels, labels).item() == pytest.approx(manual.item(), rel=1e-5)
    # The plain normalised target (ours before) gives a different value.
    plain = sum(F.kl_div(F.log_softmax(lg, 1), same / same.sum(1, keepdim=True), reduction="batchmean") for lg in (logits, logits.T)) / 2
    assert abs(plain.item() - manual.item()) > 1e-4  # about 1e-3 here: far above float error


def test_actionclip_zero_shot_averages_softmax_over_templates_not_embeddings():
    from fsar.train.heads.actionclip import template_ensemble_scores

    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(7, 16, generator=g), torch.randn(4, 5, 16, generator=g)  # 4 templates, 5 classes
    got = template_ensemble_scores(video, text, 100.0)
    ref = torch.zeros(7, 5)
    for k in range(4):
        cos = F.normalize(video, dim=-1) @ F.normalize(text[k], dim=-1).T
        ref += torch.softmax(100 * cos, dim=1) / 4
    assert torch.allclose(got, ref, atol=1e-6)
    mean_embedding = F.normalize(video, dim=-1) @ F.normalize(text.mean(0), dim=-1).T
    assert not torch.allclose(got, torch.softmax(100 * mean_embedding, 1), atol=1e-3)
    h = _head("actionclip", temporal_fusion="mean")
    frames = video[:, None].expand(7, 3, 16)
    assert torch.allclose(h.video_text_scores(frames, text), ref, atol=1e-5)  # a [K, C, D] text takes this path


def test_actionclip_fusion_is_the_official_transf_module():
    from fsar.train.heads.actionclip import CLIP_LOGIT_SCALE, QuickGELU

    h = _head("actionclip", temporal_fusion="transformer")
    assert len(h.blocks) == 6 and h.frame_position.weight.shape[1] == 16
    assert all(isinstance(b.mlp.gelu, QuickGELU) and b.ln_1.eps == b.ln_2.eps == 1e-12 for b in h.blocks)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in h.modules()) and h.blocks[0].attn.dropout == 0
    assert h.blocks[0].mlp.c_fc.out_features == 64  # 4 x width
    assert h.logit_scale.exp().item() == pytest.approx(CLIP_LOGIT_SCALE)
    w = torch.cat([b.mlp.c_fc.weight.reshape(-1) for b in h.blocks])
    assert w.std().item() == pytest.approx(0.02, rel=0.1) and all(b.mlp.c_fc.bias.abs().max() == 0 for b in h.blocks)


def test_actionclip_fusion_shapes_and_mean_fusion_has_no_temporal_weights():
    b = _batch()
    h = _head("actionclip")
    v = h.video(b.query[0])
    assert v.shape == (6, 16)
    # Reversing a video's frames changes the transformer fusion (learned positions) but not mean pooling.
    assert not torch.allclose(h.video(b.query[0].flip(1)), v, atol=1e-5)
    m = _head("actionclip", temporal_fusion="mean")
    assert torch.allclose(m.video(b.query[0].flip(1)), m.video(b.query[0]), atol=1e-6)
    assert sum(p.numel() for p in m.parameters()) == 1  # the logit scale alone
    loss, metrics = h.loss(b, torch.randn(3, 16))
    assert loss.item() > 0 and 0 <= metrics["accuracy"] <= 100


def test_actionclip_learns_to_match_videos_to_their_class_text():
    """Frames are noisy copies of a rotated class text: the fusion must learn the rotation."""
    torch.manual_seed(0)
    C, D, T = 6, 16, 4
    text = F.normalize(torch.randn(C, D), dim=-1)
    rot = torch.linalg.qr(torch.randn(D, D))[0]

    def videos(labels):
        return (text[labels] @ rot)[:, None, :] + 0.05 * torch.randn(len(labels), T, D)

    h = _head("actionclip", temporal_fusion="transformer")
    opt = torch.optim.Adam(h.parameters(), lr=3e-3)
    test_labels = torch.arange(C).repeat(4)
    before = (h.video_text_scores(videos(test_labels), text).argmax(1) == test_labels).float().mean().item()
    h.train()
    for _ in range(150):
        labels = torch.randint(0, C, (24,))
        v = videos(labels).view(1, 24, T, D)
        b = EpisodeBatch(v[:, :12], v[:, 12:], None, None, labels[None, :12], labels[None, 12:], C)
        loss, _ = h.loss(b, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h.eval()
    with torch.no_grad():
        after = (h.video_text_scores(videos(test_labels), text).argmax(1) == test_labels).float().mean().item()
    assert after >= 0.9 > before + 0.3


# --- MA-CLIP ---------------------------------------------------------------------------------

def test_ma_clip_text_guides_supports_only():
    b = _batch()
    h = _head("ma-clip")
    x, t = b.support[0], b.support_text[0]
    s = h.encode_support(x, t)
    assert s.shape == x.shape
    assert not torch.allclose(s, h.encode_support(x, t.roll(1, dims=0)), atol=1e-5)  # other classes' text, other features
    assert torch.allclose(h.encode_query(x), h.prototype(x, None))


def test_ma_clip_alpha_endpoints():
    b = _batch()
    for alpha in (0.0, 1.0):
        h = _head("ma-clip", alpha=alpha, fewshot_scale=50.0)
        s = h.encode_support(b.support.flatten(0, 1), b.support_text.flatten(0, 1)).view(*b.support.shape)
        q = h.encode_query(b.query.flatten(0, 1)).view(*b.query.shape)
        pred = h.predict(b, q, s, None).argmax(-1)
        few = h.episode_logits(q, s, b.way)
        if alpha == 0:
            assert torch.equal(pred, few.argmax(-1))
            loss, m = h.loss(b, None)
            assert loss.item() == pytest.approx(m["q2s_loss"], rel=1e-5)
            assert h.fewshot_scale == 50  # a temperature, in the loss and in p_Q2S
            assert m["q2s_loss"] == pytest.approx(F.cross_entropy(50 * few.flatten(0, 1), b.target.repeat(b.support.shape[0])).item(), rel=1e-4)
        else:
            text = h._text_logits(b.query, b.class_text)
            assert torch.equal(pred, text.argmax(-1))
    h = _head("ma-clip", alpha=0.5, fewshot_scale=3.0)
    s = h.encode_support(b.support.flatten(0, 1), b.support_text.flatten(0, 1)).view(*b.support.shape)
    q = h.encode_query(b.query.flatten(0, 1)).view(*b.query.shape)
    mixed = 0.5 * F.softmax(h._text_logits(b.query, b.class_text), dim=-1) + 0.5 * F.softmax(3.0 * h.episode_logits(q, s, b.way), dim=-1)
    assert torch.allclose(h.predict(b, q, s, None), mixed, atol=1e-6)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        _head("ma-clip", alpha=1.5)


def test_ma_clip_loss_uses_otam_on_text_guided_prototypes():
    b = _batch(E=1)
    h = _head("ma-clip", alpha=0.0)
    s = h.encode_support(b.support[0], b.support_text[0])[None]
    q = h.encode_query(b.query[0])[None]
    protos = s.view(1, b.way, 2, 4, 16).mean(2)
    assert torch.allclose(h.episode_logits(q, s, b.way), otam_logits(q, protos, b.way, 0.5), atol=1e-6)


# --- protocols -------------------------------------------------------------------------------

def test_classification_result_top1_top5_and_confusion():
    scores = torch.tensor([[9.0, 8, 7, 6, 5, 4, 0], [0, 9, 1, 1, 1, 1, 1], [9, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]])
    labels = np.array([1, 1, 6, 6])
    r, correct = classification_result(scores, labels, [f"c{i}" for i in range(7)], "zero-shot")
    assert r["accuracy"] == 50.0 and r["top5_accuracy"] == 100.0  # video 0: top-1 wrong, within top 5; video 2: 6 is 2nd best
    assert correct[:, 0].tolist() == [False, True, False, True]
    counts = np.array(r["confusion"]["counts"])
    assert counts.sum() == 4 and counts[1, 0] == 1 and counts[1, 1] == 1 and counts[6, 0] == 1 and counts[6, 6] == 1
    assert r["ci95"] == pytest.approx(1.96 * 0.5 / 2 * 100)


def test_holdout_is_per_class_deterministic_and_order_free():
    labels = np.repeat(np.arange(4), 10)
    keys = [f"v{i}" for i in range(40)]
    held = holdout_rows(SplitInfo(labels, list("abcd"), keys), 0.2)
    assert all(held[labels == c].sum() == 2 for c in range(4))
    perm = np.random.default_rng(0).permutation(40)
    held_perm = holdout_rows(SplitInfo(labels[perm], list("abcd"), [keys[i] for i in perm]), 0.2)
    assert {keys[i] for i in perm[held_perm]} == {keys[i] for i in np.flatnonzero(held)}
    assert not holdout_rows(SplitInfo(labels, list("abcd"), keys), 0.0).any()


@pytest.mark.parametrize("method", ["ma-clip", "actionclip"])
def test_each_method_trains_and_evaluates_through_the_cli(tiny_chain, tmp_path, method):
    from fsar.cli.eval import main as eval_main
    from fsar.cli.train import main as train_main

    run = tmp_path / method
    args = ["--mode", "adapter", "--cache", str(tiny_chain["cache"]), "--method", method, "--config", "tiny", "--way", "3", "--out", str(run), "--set", "threads=1", "--set", "query=1"]
    with pytest.raises(SystemExit) as e:
        train_main(args)
    assert e.value.code == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == method and cfg["prompts"] == ("actionclip" if method == "actionclip" else "clip-fsar")
    for extra in (["--way", "3", "--episodes", "50"], ["--protocol", "zero-shot"]):
        with pytest.raises(SystemExit) as e:
            eval_main([str(run), *extra])
        assert e.value.code == 0
    few = json.loads((run / "eval-test-3w1s.json").read_text())
    zs = json.loads((run / "eval-test-zero-shot.json").read_text())
    assert few["method"] == method and few["episodes"] == 50 and len(few["confusion"]["counts"]) == 6
    assert zs["protocol"] == "zero-shot" and zs["videos"] == 18 and zs["classes"] == 6
    if method == "actionclip":  # holds 20% of the training videos out for the supervised protocol
        with pytest.raises(SystemExit) as e:
            eval_main([str(run), "--protocol", "supervised"])
        assert e.value.code == 0
        sup = json.loads((run / "eval-train-holdout-supervised.json").read_text())
        assert sup["videos"] == 15 and sup["classes"] == 15  # 15 training classes x round(0.2 x 3) videos


def test_supervised_protocol_needs_a_holdout(tiny_chain, tmp_path):
    from fsar.cli.eval import main as eval_main
    from fsar.cli.train import main as train_main

    run = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        train_main(["--cache", str(tiny_chain["cache"]), "--config", "tiny", "--way", "3", "--out", str(run), "--set", "threads=1"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        eval_main([str(run), "--protocol", "supervised"])
    assert e.value.code == 2


def test_peft_ma_clip_trains_adapters_only_and_starts_from_frozen_clip(tiny_chain, tmp_path):
    from safetensors import safe_open

    from fsar.pipeline.backbones import BackboneSpec, create_backbone
    from fsar.train.evaluate_run import evaluate_run
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.model import build_model
    from fsar.train.trainer import train

    cfg = dataclasses.replace(
        get_config("tiny", "ma-clip"), mode="peft", shards=str(tiny_chain["shards"]), backbone="fsar-micro-vit", pretrained="none",
        way=3, query=1, iterations=2, val_every=2, threads=1,
    )
    model, data = build_model(cfg)
    frozen, _ = create_backbone(BackboneSpec("fsar-micro-vit", "none", 0))
    # Before training the adapted encoder is frozen CLIP, with or without a support's class text.
    x = data.split("train").batch(np.arange(2))  # (2, T, 3, S, S)
    text = data.text["train"][:2]
    with torch.no_grad():
        ref = frozen.visual(x.flatten(0, 1)).view(2, cfg.frames, -1)
        assert torch.allclose(model.embed(x), ref, atol=1e-5) and torch.allclose(model.embed(x, text), ref, atol=1e-5)
    summary = train(cfg, tmp_path / "peft")
    trainable, total = summary["parameters"]["trainable"], summary["parameters"]["total"]
    clip_visual = sum(p.numel() for p in frozen.visual.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    adapters = sum(p.numel() for p in model.visual.parameters() if p.requires_grad)
    assert trainable == head + adapters and total == trainable + clip_visual and 0 < adapters < clip_visual
    # The CLIP weights in the checkpoint are the frozen ones; the adapters moved.
    with safe_open(str(tmp_path / "peft/checkpoints/last.safetensors"), "pt") as f:
        for name, value in frozen.visual.state_dict().items():
            assert torch.equal(f.get_tensor(f"visual.visual.{name}"), value), name
        ups = [k for k in f.keys() if k.startswith("visual.adapters.") and k.endswith("up.weight")]
        assert len(ups) == 3 and all(f.get_tensor(k).abs().sum() > 0 for k in ups)
    result, correct = evaluate_run(tmp_path / "peft", "test", EpisodeConfig(3, 1, 1, 30, 0))
    assert result["mode"] == "peft" and correct.shape == (30, 3)
    with pytest.raises(ValueError, match="peft methods: ma-clip"):
        build_model(dataclasses.replace(cfg, method="clip-fsar"))


def test_peft_vita_clip_trains_prompts_and_text_context_only(tiny_chain, tmp_path, caplog):
    from safetensors import safe_open

    from fsar.pipeline.backbones import BackboneSpec, create_backbone
    from fsar.train.evaluate_run import evaluate_run
    from fsar.train.episodes import EpisodeConfig
    from fsar.train.model import build_model
    from fsar.train.trainer import train

    cfg = dataclasses.replace(
        get_config("tiny", "vita-clip"), shards=str(tiny_chain["shards"]), backbone="fsar-micro-vit", pretrained="none",
        way=3, query=1, iterations=3, val_every=3, lr=1e-2, threads=1,
    )
    assert cfg.mode == "peft" and cfg.holdout > 0
    model, data = build_model(cfg)
    frozen, _ = create_backbone(BackboneSpec("fsar-micro-vit", "none", 0))
    # The head's only parameter is the logit scale, which starts at CLIP's own.
    assert model.head.logit_scale.item() == pytest.approx(frozen.logit_scale.item())
    assert [n for n, _ in model.head.named_parameters()] == ["logit_scale"]
    train_names = data.split("train").info.class_names
    test_names = data.split("test").info.class_names
    with torch.no_grad():
        own = model.class_text(train_names, data.text["train"])
        generic = model.text.encode_names(train_names)
        novel = model.class_text(test_names, data.text["test"])
    # Training classes get their own context; other names the mean context, never the frozen text.
    assert own.shape == (len(train_names), 64) and not torch.allclose(own, generic, atol=1e-4)
    assert torch.allclose(novel, model.text.encode_names(test_names)) and not torch.allclose(novel, data.text["test"])
    context0 = model.text.context.detach().clone()

    summary = train(cfg, tmp_path / "vita")
    clip_total = sum(p.numel() for p in frozen.parameters()) - frozen.logit_scale.numel()
    prompts = sum(p.numel() for p in model.visual.parameters() if p.requires_grad)
    cls_proj = sum(p.numel() for layer in model.visual.layers for p in layer.cls_proj.parameters())  # frozen, as the official
    context = len(train_names) * cfg.text_context * 64
    assert summary["parameters"] == {"trainable": 1 + prompts + context, "total": clip_total + 1 + prompts + cls_proj + context}
    with safe_open(str(tmp_path / "vita/checkpoints/last.safetensors"), "pt") as f:
        for name, value in frozen.visual.state_dict().items():  # the frozen ViT is untouched
            assert torch.equal(f.get_tensor(f"visual.visual.{name}"), value), name
        assert torch.equal(f.get_tensor("text.token_embedding.weight"), frozen.token_embedding.weight)
        assert not torch.allclose(f.get_tensor("text.context"), context0)  # the class context learnt
        assert f.get_tensor("head.logit_scale").item() != pytest.approx(frozen.logit_scale.item())  # it trains
    caplog.clear()
    for protocol in ("few-shot", "zero-shot", "supervised"):
        result, correct = evaluate_run(tmp_path / "vita", "test", EpisodeConfig(3, 1, 1, 30, 0), protocol=protocol)
        assert result["method"] == "vita-clip" and result["mode"] == "peft" and result["protocol"] == protocol
    assert "initialized randomly" not in caplog.text  # the weights come from the checkpoint
    assert result["classes"] == len(train_names)  # supervised: among the training classes
    with pytest.raises(ValueError, match="peft mode only"):
        build_model(dataclasses.replace(cfg, mode="adapter", cache=str(tiny_chain["cache"])))


def test_vita_clip_loss_is_cross_entropy_over_all_training_classes():
    head = _head("vita-clip")
    batch = _batch(way=3, D=16)
    base_text = torch.randn(7, 16, generator=torch.Generator().manual_seed(1))
    batch.support_labels, batch.query_labels = batch.support_labels + 2, batch.query_labels + 2  # classes 2..4 of 7
    loss, metrics = head.loss(batch, base_text)
    videos = torch.cat([batch.support, batch.query], dim=1).flatten(0, 1).mean(dim=1)  # mean over frames
    labels = torch.cat([batch.support_labels, batch.query_labels], dim=1).reshape(-1)
    logits = head.logit_scale.exp() * F.normalize(videos, dim=-1) @ F.normalize(base_text, dim=-1).T
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert 0 <= metrics["accuracy"] <= 100


def test_vita_clip_prompts_and_context_fit_a_small_batch(tiny_chain):
    """The prompts, context and scale can learn: a fixed batch of 6 videos of 3 classes is fitted."""
    from fsar.train.model import build_model
    from fsar.train.trainer import make_optimizer

    cfg = dataclasses.replace(get_config("tiny", "vita-clip"), shards=str(tiny_chain["shards"]), backbone="fsar-micro-vit", lr=1e-2, threads=1)
    torch.manual_seed(0)
    model, data = build_model(cfg)
    src = data.split("train")
    rows = np.concatenate([np.flatnonzero(src.info.labels == c)[:2] for c in range(3)])
    x, y = src.batch(rows), torch.from_numpy(src.info.labels[rows])
    optimizer = make_optimizer(model, cfg)
    model.train()
    losses = []
    for _ in range(25):
        frames = model.embed(x)
        batch = EpisodeBatch(frames[None], frames[None, :0], None, None, y[None], y[None, :0], 3)
        loss, _ = model.head.loss(batch, model.class_text(src.info.class_names, data.text["train"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
