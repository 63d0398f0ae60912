"""Video-text losses shared by the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_positive_target(video_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """[Nv, Nt] target distribution: row i is uniform over the texts whose label equals video i's.

    With one text per video of a batch (ActionCLIP), several videos of one class make several
    positives per row; with one text per class it is the one-hot target of cross-entropy.
    """
    match = (video_labels[:, None] == text_labels[None, :]).float()  # (Nv, Nt)
    if (match.sum(dim=1) == 0).any():
        raise ValueError("a video has no matching text in the batch")
    return match / match.sum(dim=1, keepdim=True)


def kl_to_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(target || softmax(logits)); rows of `target` sum to 1."""
    return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="batchmean")


def symmetric_video_text_kl(logits: torch.Tensor, video_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """ActionCLIP's loss: the mean of the video->text and text->video KL divergences of
    `logits` [Nv, Nt] (scaled cosines) against their multi-positive targets."""
    v2t = kl_to_target(logits, multi_positive_target(video_labels, text_labels))
    t2v = kl_to_target(logits.T, multi_positive_target(text_labels, video_labels))
    return (v2t + t2v) / 2
