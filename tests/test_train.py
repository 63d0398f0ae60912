"""fsar-train: configs, the CLIP-FSAR head, checkpoints and exact resume, and train + eval end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fsar.train.checkpoint import load_checkpoint, save_checkpoint
from fsar.train.config import TrainConfig, apply_overrides
from fsar.train.configs import CONFIGS, get_config
from fsar.train.episodes import EpisodeConfig, sample_episodes
from fsar.train.heads import EpisodeBatch, build_head
from fsar.train.model import build_model
from fsar.train.trainer import encode_split, episode_batch, head_logits_fn, train


def tiny(cache, **changes) -> TrainConfig:
    """3-way 1-shot on the miniature chain (its val split has 3 classes of 3 videos)."""
    base = dataclasses.replace(get_config("tiny"), cache=str(cache), way=3, shot=1, query=1, frames=8, threads=1)
    return dataclasses.replace(base, **changes)


# --- configs ---------------------------------------------------------------------------------

def test_named_configs_are_valid_and_follow_the_published_alphas():
    for name in CONFIGS:
        assert isinstance(get_config(name), TrainConfig)
    assert get_config("ssv2").alpha == 3.0 and get_config("ssv2-small").alpha == 3.0
    assert get_config("kinetics100").alpha == 1.5 and get_config("ucf101").alpha == 1.5 and get_config("hmdb51").alpha == 1.2
    assert all(get_config(n).fusion_beta is None and get_config(n).episodes_per_step == 16 for n in ("ssv2", "kinetics100", "hmdb51"))  # OTAM alone, as the official test
    with pytest.raises(ValueError, match="known: synth"):
        get_config("nope")


def test_overrides_are_typed_and_unknown_keys_fail():
    c = apply_overrides(get_config("synth"), ["lr=0.01", "shot=5", "fusion_beta=none", "lr_decay_at=10,20", "grad_clip=1.5"])
    assert (c.lr, c.shot, c.fusion_beta, c.lr_decay_at, c.grad_clip) == (0.01, 5, None, (10, 20), 1.5)
    with pytest.raises(ValueError, match="unknown config key 'lrr'"):
        apply_overrides(c, ["lrr=1"])
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(c, ["shot=five"])
    with pytest.raises(ValueError, match=r"fusion_beta must be in \[0, 1\]"):
        apply_overrides(c, ["fusion_beta=2"])
    with pytest.raises(ValueError, match="unknown method 'x'"):
        TrainConfig(method="x")


def test_learning_rate_schedule_warms_up_then_steps_down():
    c = TrainConfig(lr=1e-3, warmup_start_lr=1e-4, warmup_iterations=10, lr_decay_at=(20, 30), lr_decay=0.1)
    assert c.learning_rate(0) == pytest.approx(1e-4) and c.learning_rate(5) == pytest.approx(5.5e-4)
    assert c.learning_rate(10) == pytest.approx(1e-3) and c.learning_rate(25) == pytest.approx(1e-4) and c.learning_rate(35) == pytest.approx(1e-5)


# --- the head --------------------------------------------------------------------------------

def test_eval_fast_path_matches_per_episode_training_path(tiny_chain):
    """Encoding every video once and scoring episodes from the encodings gives the per-episode forward's logits."""
    cfg = tiny(tiny_chain["cache"])
    model, data = build_model(cfg)
    model.eval()
    src = data.split("test")
    eps = sample_episodes(src.info.labels, EpisodeConfig(3, 1, 1, 12, seed=5))
    enc = encode_split(model, src, data.text["test"], "cpu")
    fast = head_logits_fn(model, enc, None)(eps)
    with torch.no_grad():
        b = episode_batch(model, src, data.text["test"], eps, None, "cpu")
        E, Ns, T, D = b.support.shape
        s = model.head.encode_support(b.support.reshape(-1, T, D), b.support_text.reshape(-1, D)).view(E, Ns, T, -1)
        q = model.head.encode_query(b.query.reshape(-1, T, D)).view(E, -1, T, D)
        slow = model.head.episode_logits(q, s, 3)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_support_text_modulates_prototypes_but_not_queries():
    head = build_head(TrainConfig(ffn_dim=32, heads=2), 16).eval()
    frames, t1, t2 = torch.randn(4, 8, 16), torch.randn(4, 16), torch.randn(4, 16)
    assert not torch.allclose(head.encode_support(frames, t1), head.encode_support(frames, t2))
    assert head.encode_query(frames).shape == (4, 8, 16)


@pytest.mark.parametrize("features", ["backbone", "adapted"])
def test_fusion_beta_endpoints_are_text_only_and_few_shot_only(features):
    torch.manual_seed(0)
    head = build_head(TrainConfig(ffn_dim=32, heads=2, text_loss_features=features, cosine_eps=0.0), 16).eval()
    E, W, T, D = 6, 4, 8, 16
    sup, qry, text = torch.randn(E, W, T, D), torch.randn(E, W, T, D), torch.randn(E, W, D)
    batch = EpisodeBatch(sup, qry, text, text, None, None, W)
    s = head.encode_support(sup.view(-1, T, D), text.reshape(-1, D)).view(E, W, T, D)
    q = head.encode_query(qry.view(-1, T, D)).view(E, W, T, D)
    few = head.episode_logits(q, s, W)
    v = torch.nn.functional.normalize((q if features == "adapted" else qry).mean(2), dim=-1)
    txt = torch.einsum("eqd,ewd->eqw", v, torch.nn.functional.normalize(text, dim=-1))
    with torch.no_grad():
        # The zero-shot scores and the fused text term see the same video features.
        assert torch.allclose(head.video_text_scores(qry.view(-1, T, D), text[0]), head.text_scale * v.view(-1, D) @ torch.nn.functional.normalize(text[0], dim=-1).T, atol=1e-5)
        assert torch.equal(head.predict(batch, q, s, 0.0).argmax(-1), few.argmax(-1))
        assert torch.equal(head.predict(batch, q, s, 1.0).argmax(-1), txt.argmax(-1))
        assert torch.equal(head.predict(batch, q, s, None), few)


def test_training_learns_what_untrained_matching_misses():
    """Classes differ only in frame order, in a 2-d subspace buried in 32-d noise: untrained OTAM is
    mediocre; training the head (which learns to project out the noise) makes them separable."""
    torch.manual_seed(0)
    head = build_head(TrainConfig(ffn_dim=64, heads=2, alpha=0.5, attn_dropout=0.0, ffn_dropout=0.0), 32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(8, 2, generator=g) @ torch.randn(2, 32, generator=g)  # (T, D), rank 2
    classes = torch.stack([basis[torch.randperm(8, generator=torch.Generator().manual_seed(c))] for c in range(6)])  # (6, T, D)
    text = torch.randn(6, 32)

    def batch(E=8, W=3):
        c = torch.stack([torch.randperm(6)[:W] for _ in range(E)])  # (E, W)
        noisy = lambda: classes[c] + 2.0 * torch.randn(E, W, 8, 32)  # noqa: E731
        return EpisodeBatch(noisy(), noisy(), text[c], text[c], c, c, W)

    accs = []
    for _ in range(200):
        loss, m = head.loss(batch(), text)
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(m["accuracy"])
    assert np.mean(accs[:10]) < 75 and np.mean(accs[-20:]) > 85


# --- checkpoints and resume -----------------------------------------------------------------

def test_checkpoint_round_trip_reads_back_with_plain_safetensors(tmp_path):
    torch.manual_seed(0)
    head = build_head(TrainConfig(ffn_dim=32, heads=2), 16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    loss = head.encode_query(torch.randn(2, 8, 16)).pow(2).mean()
    loss.backward()
    opt.step()
    save_checkpoint(tmp_path, "last", head, opt, {"step": 7})
    with safe_open(str(tmp_path / "last.safetensors"), "pt") as f:
        assert set(f.keys()) == set(head.state_dict())
        torch.testing.assert_close(f.get_tensor("text_scale"), head.text_scale.detach())
    head2 = build_head(TrainConfig(ffn_dim=32, heads=2), 16)
    opt2 = torch.optim.Adam(head2.parameters(), lr=1e-3)
    assert load_checkpoint(tmp_path, "last", head2, opt2)["step"] == 7
    for a, b in zip(head.state_dict().values(), head2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)
    (tmp_path / "last.safetensors").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(tmp_path, "last", head2)


class Interrupt(Exception):
    pass


def test_resume_continues_exactly(tiny_chain, tmp_path):
    cfg = tiny(tiny_chain["cache"], iterations=6, val_every=2)
    train(cfg, tmp_path / "whole")

    def crash_at_3(done, metrics):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", on_step=crash_at_3)
    assert json.loads((tmp_path / "cut/checkpoints/last.json").read_text())["step"] == 2
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "cut")
    train(cfg, tmp_path / "cut", resume=True)
    whole, cut = (safe_open(str(tmp_path / d / "checkpoints/last.safetensors"), "pt") for d in ("whole", "cut"))
    for k in whole.keys():
        assert torch.equal(whole.get_tensor(k), cut.get_tensor(k)), k
    rows = lambda d: (tmp_path / d / "train_metrics.csv").read_text()  # noqa: E731
    assert rows("whole") == rows("cut")  # redone steps replace, not duplicate, their rows
    with pytest.raises(ValueError, match="different config"):
        train(dataclasses.replace(cfg, lr=0.5), tmp_path / "cut", resume=True)


@pytest.mark.parametrize("val_every,log_every,cut", [(5, 10, 7), (5, 3, 11), (2, 4, 3)])
def test_resume_writes_the_same_logs_for_any_kill_point(tiny_chain, tmp_path, val_every, log_every, cut):
    """The averaging window of the train rows is part of the checkpoint: a kill at a checkpoint
    that is not a multiple of log_every resumes into byte-identical metric CSVs."""
    cfg = tiny(tiny_chain["cache"], iterations=12, val_every=val_every, log_every=log_every)
    train(cfg, tmp_path / "whole")

    def crash(done, metrics):
        if done == cut:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", on_step=crash)
    train(cfg, tmp_path / "cut", resume=True)
    for name in ("train_metrics.csv", "val_metrics.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes(), name


# --- end to end -----------------------------------------------------------------------------

def test_fsar_train_then_fsar_eval_on_the_cache(tiny_chain, tmp_path):
    from fsar.cli.eval import main as eval_main
    from fsar.cli.train import main as train_main

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train_main(["--out", str(run), "--mode", "adapter", "--cache", str(tiny_chain["cache"]), "--way", "3", "--config", "tiny", "--set", "query=1", "--set", "threads=1"])
    assert e.value.code == 0
    for name in ("config.json", "train_metrics.csv", "val_metrics.csv", "curves.png", "summary.json", "checkpoints/best.safetensors", "checkpoints/last.optim.safetensors"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(SystemExit) as e:
        eval_main([str(run), "--way", "3", "--episodes", "200"])
    assert e.value.code == 0
    out = json.loads((run / "eval-test-3w1s.json").read_text())
    assert out["method"] == "clip-fsar" and out["mode"] == "adapter" and out["episodes"] == 200 and out["fusion_beta"] is None
    for key in ("accuracy", "ci95", "way", "shot", "seed", "per_class_accuracy", "reversal_pair_2way", "checkpoint_step"):
        assert key in out
    with pytest.raises(SystemExit) as e:
        eval_main([str(run), "--way", "3", "--episodes", "200", "--fusion-beta", "0.9"])
    assert e.value.code == 0 and json.loads((run / "eval-test-3w1s-beta0.9.json").read_text())["fusion_beta"] == 0.9
    with pytest.raises(SystemExit) as e:
        eval_main([str(tmp_path / "not-a-run")])
    assert e.value.code == 2


@pytest.mark.parametrize("method", ["clip-fsar", "ma-clip", "actionclip"])
def test_finetune_mode_trains_the_visual_encoder_on_shards(tiny_chain, tmp_path, method):
    from fsar.train.configs import for_method

    cfg = dataclasses.replace(
        for_method(tiny(None), method), mode="finetune", cache=None, shards=str(tiny_chain["shards"]), backbone="fsar-micro-vit", pretrained="none", iterations=2, val_every=2
    )
    summary = train(cfg, tmp_path / "ft")
    model, _ = build_model(cfg)
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    with safe_open(str(tmp_path / "ft/checkpoints/last.safetensors"), "pt") as f:
        changed = [k for k in before if not torch.equal(before[k], f.get_tensor(f"visual.{k}"))]
    assert changed, "the visual encoder did not train"
    head_params = sum(p.numel() for p in model.head.parameters())
    text_params = sum(p.numel() for p in model.text.parameters()) if model.text is not None else 0
    assert summary["parameters"]["trainable"] == head_params + sum(p.numel() for p in model.visual.parameters()) + text_params
    if method == "actionclip":  # the official trains its text encoder too, on a random template per video
        assert text_params > 0
        with safe_open(str(tmp_path / "ft/checkpoints/last.safetensors"), "pt") as f:
            assert not torch.equal(f.get_tensor("text.ln_final.weight"), model.text.ln_final.weight)
    from fsar.train.evaluate_run import evaluate_run

    result, correct = evaluate_run(tmp_path / "ft", "test", EpisodeConfig(3, 1, 1, 50, 0))
    assert result["mode"] == "finetune" and correct.shape == (50, 3)
    # The scores come from the checkpoint's encoder: the same episodes scored twice agree.
    again, correct2 = evaluate_run(tmp_path / "ft", "test", EpisodeConfig(3, 1, 1, 50, 0))
    assert np.array_equal(correct, correct2)


def test_feature_stats_separate_static_from_moving_videos():
    from tools.findings.feature_stats import frame_cosines

    torch.manual_seed(0)
    static = torch.randn(10, 1, 32).expand(10, 8, 32)
    moving = torch.randn(10, 8, 32)
    s, m = frame_cosines(static), frame_cosines(moving)
    assert s["within_video"] == pytest.approx(1.0, abs=1e-5) and s["temporal_spread"] == pytest.approx(0.0, abs=1e-5)
    assert m["within_video"] < 0.5 and m["temporal_spread"] > 1.0
    # Two classes: videos of one class share a direction, so they are closer than videos of different classes.
    centres = torch.randn(2, 32)
    labels = np.repeat([0, 1], 5)
    grouped = centres[labels][:, None] + 0.3 * torch.randn(10, 8, 32)
    g = frame_cosines(grouped, labels)
    assert g["same_class_videos"] > 0.8 and g["different_class_videos"] < g["same_class_videos"] - 0.3


def test_clip_fsar_video_text_loss_reaches_the_transformer_only_on_adapted_features():
    torch.manual_seed(0)
    videos, text, labels = torch.randn(6, 8, 16), torch.randn(5, 16), torch.tensor([0, 1, 2, 3, 4, 0])
    for features, reaches in (("backbone", False), ("adapted", True)):
        head = build_head(TrainConfig(ffn_dim=32, heads=2, text_loss_features=features), 16)
        torch.nn.functional.cross_entropy(head.video_text_logits(videos, text), labels).backward()
        grads = [p.grad for p in head.temporal.parameters()]
        assert (any(g is not None and g.abs().sum() > 0 for g in grads)) == reaches, features
        assert head.text_scale.grad is not None
    # The default is the paper's in every mode; auto (the default before): the backbone's features
    # where the backbone trains, the adapted ones where it is frozen.
    assert not build_head(TrainConfig(mode="adapter", ffn_dim=32, heads=2), 16).text_on_adapted
    assert not build_head(TrainConfig(mode="finetune", ffn_dim=32, heads=2, text_loss_features="auto"), 16).text_on_adapted
    assert build_head(TrainConfig(mode="adapter", ffn_dim=32, heads=2, text_loss_features="auto"), 16).text_on_adapted
    # A run saved before the setting existed keeps the behaviour it was trained with.
    old = json.loads(TrainConfig().to_json())
    del old["text_loss_features"]
    assert TrainConfig.from_json(json.dumps(old)).text_loss_features == "backbone"


def test_clip_fsar_without_modulation_encodes_supports_as_queries_and_fewshot_scale_only_scales_the_loss():
    torch.manual_seed(0)
    E, W, T, D = 2, 3, 8, 16
    sup, qry, text = torch.randn(E, W, T, D), torch.randn(E, 2 * W, T, D), torch.randn(E, W, D)
    labels = torch.arange(W)
    batch = EpisodeBatch(sup, qry, text, text, labels.repeat(E, 1), labels.repeat_interleave(2).repeat(E, 1), W)
    plain = build_head(TrainConfig(ffn_dim=32, heads=2, text_modulation=False), 16).eval()
    assert torch.equal(plain.encode_support(sup[0], text[0]), plain.encode_query(sup[0]))
    modulated = build_head(TrainConfig(ffn_dim=32, heads=2), 16).eval()
    assert not torch.allclose(modulated.encode_support(sup[0], text[0]), modulated.encode_query(sup[0]))
    losses = {}
    for scale in (1.0, 7.0):
        torch.manual_seed(1)
        head = build_head(TrainConfig(ffn_dim=32, heads=2, fewshot_scale=scale, alpha=0.0), 16).eval()
        loss, metrics = head.loss(batch, torch.randn(W, D, generator=torch.Generator().manual_seed(2)))
        s = head.encode_support(sup.flatten(0, 1), text.flatten(0, 1)).view(E, W, T, D)
        q = head.encode_query(qry.flatten(0, 1)).view(E, 2 * W, T, D)
        logits = head.episode_logits(q, s, W)
        expected = torch.nn.functional.cross_entropy(scale * logits.flatten(0, 1), batch.target.repeat(E))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        losses[scale] = (loss.item(), metrics["accuracy"])
    assert losses[1.0][0] != pytest.approx(losses[7.0][0]) and losses[1.0][1] == losses[7.0][1]
    with pytest.raises(ValueError, match="fewshot_scale"):
        TrainConfig(fewshot_scale=0)


def test_probe_scores_raw_features_as_the_frozen_baselines(tiny_chain, tmp_path):
    from fsar.train.configs import get_config
    from fsar.train.baselines import evaluate_frozen
    from tools.findings.probe import probe
    from fsar.train.trainer import train

    cfg = dataclasses.replace(get_config("tiny"), cache=str(tiny_chain["cache"]), way=3, threads=1)
    train(cfg, tmp_path / "run")
    ep = EpisodeConfig(3, 1, 1, 50, 0)
    out = probe(tmp_path / "run", "last", "test", ep)
    for metric in ("protonet", "otam"):
        assert out["raw"][metric][0] == pytest.approx(evaluate_frozen(tiny_chain["cache"], metric, "test", ep)[0]["accuracy"])
    assert set(out["query-path"]) == {"protonet", "otam"}
    # the spread of the videos, against a plain computation over the cache's test embeddings
    from fsar.pipeline.embed.cache import load_split
    from fsar.train.data import frame_positions

    frames = load_split(tiny_chain["cache"], "test", verbose=False).frames.astype(np.float64)  # (N, F, D)
    v = frames[:, frame_positions(frames.shape[1], cfg.frames, 1, None)[0]].mean(axis=1)  # the test frames, pooled
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    pairs = [v[i] @ v[j] for i in range(len(v)) for j in range(len(v)) if i != j]
    assert out["mean cosine between videos"] == pytest.approx(np.mean(pairs), abs=1e-3)
    # as training started: the raw features are the cache's still, and nothing is written to the run
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    start = probe(tmp_path / "run", "init", "test", ep)
    assert start["raw"] == out["raw"] and start["query-path"] != out["query-path"]
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_clip_fsar_frame_positions_make_the_transformer_see_frame_order():
    torch.manual_seed(0)
    frames, perm = torch.randn(3, 8, 16), torch.randperm(8)
    for positions in (False, True):
        head = build_head(TrainConfig(ffn_dim=32, heads=2, frame_positions=positions), 16).eval()
        with torch.no_grad():
            shuffled_then_encoded = head.encode_query(frames[:, perm])
            encoded_then_shuffled = head.encode_query(frames)[:, perm]
        # Without positions self-attention is permutation-equivariant over frames; with them it is not.
        assert torch.allclose(shuffled_then_encoded, encoded_then_shuffled, atol=1e-5) != positions
