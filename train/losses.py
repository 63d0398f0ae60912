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


def same_class_target(video_labels: torch.Tensor, text_labels: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """ActionCLIP's target [Nv, Nt]: softmax over each row of `sharpness` x the 0/1 same-class
    matrix (`utils/KLLoss.py`: `softmax(label * 10)`), so a non-matching text keeps a little mass."""
    match = (video_labels[:, None] == text_labels[None, :]).float()  # (Nv, Nt)
    return F.softmax(sharpness * match, dim=1)


def symmetric_video_text_kl(logits: torch.Tensor, video_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """ActionCLIP's loss: the mean of the video->text and text->video KL divergences of
    `logits` [Nv, Nt] (scaled cosines) against `same_class_target`, each averaged over rows
    (the official KLDivLoss mean times the batch size)."""
    v2t = kl_to_target(logits, same_class_target(video_labels, text_labels))
    t2v = kl_to_target(logits.T, same_class_target(text_labels, video_labels))
    return (v2t + t2v) / 2
