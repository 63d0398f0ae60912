"""ActionCLIP against sallymmx/ActionCLIP's own code (fixture: actionclip).

- The "Transf" fusion (modules/Visual_Prompt.py `visual_prompt`): frame positions, residual
  blocks with QuickGELU and LayerNorm eps 1e-12, the skip connection and the frame mean.
  Their weights map name for name: `frame_position_embeddings.weight[:T]` -> `frame_position`,
  `transformer.resblocks.{i}.*` -> `blocks.{i}.*`.
- The training loss of train.py:173-179: KLLoss (utils/KLLoss.py) both ways against
  softmax(10 x gen_label), averaged.
- Zero-shot (test.py:validate): softmax(100 cos) per template, averaged over templates.
"""

from __future__ import annotations

import pytest
import torch

from parity_io import load_fixture
from fsar.train.config import TrainConfig
from fsar.train.heads import EpisodeBatch

TOL = dict(rtol=1e-5, atol=1e-5, check_dtype=False)


@pytest.fixture(scope="module")
def fx():
    return load_fixture("actionclip")


def build_head(fx):
    """Our ActionCLIP head at the fixture's shapes with their weights, float64, eval mode."""
    from fsar.train.heads.actionclip import ActionCLIP

    m = fx.meta
    cfg = TrainConfig(method="actionclip", heads=m["heads"], temporal_layers=m["layers_kept"], frames=m["frames"], temporal_fusion="transformer")
    head = ActionCLIP(m["dim"], cfg).double()
    ours = {"frame_position.weight": fx["weight.frame_position_embeddings.weight"][: m["frames"]]}
    for name, value in fx.weights("transformer.resblocks.").items():
        ours[f"blocks.{name}"] = value
    ours["logit_scale"] = torch.tensor(m["logit_scale"], dtype=torch.float64)
    head.load_state_dict(ours, strict=True)
    return head.eval()


def test_fusion_matches_official(fx):
    with torch.no_grad():
        video = build_head(fx).video(fx["input.frames"])  # (N, D)
    torch.testing.assert_close(video, fx["output.video"], **TOL)


def test_default_fusion_has_the_official_depth(fx):
    """The dataset configs' ActionCLIP builds as many blocks as their constructor (the fixture keeps 2 of them)."""
    from fsar.train.configs import get_config
    from fsar.train.heads.actionclip import ActionCLIP

    head = ActionCLIP(fx.meta["dim"], get_config("kinetics100", "actionclip"))
    assert len(head.blocks) == fx.meta["layers_built"]


@pytest.mark.parametrize("text", ["class_text", "video_text"])
def test_symmetric_kl_matches_official_loss(fx, text):
    """On their logits (one text per video: its class's, or a random template's), our loss
    equals (loss_imgs + loss_texts) / 2 with their softmax(10 x ground truth) target."""
    from fsar.train.losses import symmetric_video_text_kl

    labels = fx["input.labels"]
    loss = symmetric_video_text_kl(fx[f"output.{text}.logits_per_image"], labels, labels)
    torch.testing.assert_close(loss, fx[f"output.{text}.total_loss"], **TOL)


def test_head_loss_matches_official(fx):
    """Our head's training loss on the fixture's videos (supports then queries) with each
    video's class text equals theirs: fusion, scaled cosine and the symmetric KL together."""
    frames, labels = fx["input.frames"], fx["input.labels"]
    half = frames.shape[0] // 2
    batch = EpisodeBatch(
        support=frames[None, :half], query=frames[None, half:], support_text=None, class_text=None,
        support_labels=labels[None, :half], query_labels=labels[None, half:], way=half,
    )
    loss, _ = build_head(fx).loss(batch, fx["input.class_text"])
    torch.testing.assert_close(loss, fx["output.class_text.total_loss"], **TOL)


def test_zero_shot_scores_match_official(fx):
    from fsar.train.heads.actionclip import template_ensemble_scores

    m = fx.meta
    head = build_head(fx)
    text = fx["input.template_text"].view(m["templates"], m["classes"], -1)  # (K, C, D), template-major as their text_prompt
    with torch.no_grad():
        scores = template_ensemble_scores(head.video(fx["input.frames"]), text, m["zero_shot_scale"])
    torch.testing.assert_close(scores, fx["output.zero_shot_scores"], **TOL)
