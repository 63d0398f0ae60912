"""Few-shot metrics: OTAM (ordered temporal alignment), mean-prototype cosine, and a text classifier.

All functions work on whole batches of episodes at once; loops run only over frame
positions (the alignment recurrence), never over episodes, queries or classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def otam_distance(dists: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """One direction of OTAM's cumulative alignment distance (Cao et al. 2020, as in TRX and CLIP-FSAR).

    The support axis is padded with one zero column on each side; the first row is a
    plain running sum; every other cell adds its frame distance to a soft minimum
    (temperature `lam`) of its predecessors: three (left, up, up-left) in the first
    and last real columns, where the path may also enter or leave along the padding,
    two (left, up-left) in between.

    Args:
        dists: frame distances (1 - cosine) of shape [..., Tq, Ts].
        lam: soft-minimum temperature.

    Returns:
        The distance of the best soft path to the bottom-right corner, shape [...].
    """
    d = F.pad(dists, (1, 1))  # [..., Tq, Ts + 2]
    Tq, W = d.shape[-2], d.shape[-1]

    def softmin(*xs: torch.Tensor) -> torch.Tensor:
        return -lam * torch.logsumexp(torch.stack([-x / lam for x in xs]), dim=0)

    prev = torch.cumsum(d[..., 0, :], dim=-1)  # first row: running sum, [..., W]
    for row in range(1, Tq):
        cur = [torch.zeros_like(prev[..., 0])]  # the left padding column stays zero
        cur.append(d[..., row, 1] + softmin(prev[..., 0], prev[..., 1], cur[0]))
        for m in range(2, W - 1):
            cur.append(d[..., row, m] + softmin(prev[..., m - 1], cur[m - 1]))
        cur.append(d[..., row, W - 1] + softmin(prev[..., W - 2], prev[..., W - 1], cur[W - 2]))
        prev = torch.stack(cur, dim=-1)
    return prev[..., -1]


def frame_distances(queries: torch.Tensor, supports: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """1 - cosine between every query and support frame.

    Args:
        queries: [E, Nq, T, D]; supports: [E, Ns, T, D].
        eps: added to the product of the norms, x.y / (|x||y| + eps): 0 is the exact cosine;
            CLIP-FSAR's official `cos_sim` uses 0.01 (`models/base/few_shot.py:1115-1124`).

    Returns:
        [E, Nq, Ns, T, T].
    """
    E, Nq, T, D = queries.shape
    Ns, U = supports.shape[1], supports.shape[2]
    q, s = queries.float().reshape(E, Nq * T, D), supports.float().reshape(E, Ns * U, D)
    if eps == 0:
        q, s = F.normalize(q, dim=-1), F.normalize(s, dim=-1)
    # One batched matmul (4x faster here than the equivalent einsum): [E, Nq*T, Ns*U]
    cos = torch.bmm(q, s.transpose(1, 2))
    if eps:
        cos = cos / (q.norm(dim=-1)[:, :, None] * s.norm(dim=-1)[:, None, :] + eps)
    return 1.0 - cos.view(E, Nq, T, Ns, U).permute(0, 1, 3, 2, 4)


def otam_logits(queries: torch.Tensor, supports: torch.Tensor, way: int, lam: float = 0.5, eps: float = 0.0) -> torch.Tensor:
    """Negative mean OTAM distance (both directions) to each class's supports.

    Args:
        queries: [E, Nq, T, D]; supports: [E, way * shot, T, D] ordered class by class.
        eps: the cosine's epsilon (see `frame_distances`).

    Returns:
        logits [E, Nq, way].
    """
    dists = frame_distances(queries, supports, eps)  # [E, Nq, Ns, T, T]
    score = otam_distance(dists, lam) + otam_distance(dists.transpose(-1, -2), lam)  # [E, Nq, Ns]
    E, Nq, Ns = score.shape
    return -score.view(E, Nq, way, Ns // way).mean(dim=-1)


def otam_prototype_logits(query_enc: torch.Tensor, support_enc: torch.Tensor, way: int, lam: float = 0.5, eps: float = 0.0) -> torch.Tensor:
    """OTAM logits against class prototypes, each the frame-wise mean of a class's supports.

    Args:
        query_enc: [E, Nq, T, D]; support_enc: [E, way * shot, T, D] ordered class by class.

    Returns:
        logits [E, Nq, way].
    """
    E, Ns, T, D = support_enc.shape
    protos = support_enc.view(E, way, Ns // way, T, D).mean(dim=2)  # (E, way, T, D)
    return otam_logits(query_enc, protos, way, lam, eps)


def prototype_logits(queries: torch.Tensor, supports: torch.Tensor, way: int) -> torch.Tensor:
    """Cosine to class prototypes (ProtoNet on frame-averaged video embeddings).

    Args:
        queries: [E, Nq, T, D]; supports: [E, way * shot, T, D] ordered class by class.

    Returns:
        logits [E, Nq, way].
    """
    q = F.normalize(queries.float().mean(dim=2), dim=-1)  # [E, Nq, D]
    s = F.normalize(supports.float().mean(dim=2), dim=-1)
    E, Ns, D = s.shape
    protos = F.normalize(s.view(E, way, Ns // way, D).mean(dim=2), dim=-1)  # [E, way, D]
    return torch.einsum("eqd,ewd->eqw", q, protos)


def text_logits(queries: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
    """Video-text cosine: frame-averaged query embeddings against class-name embeddings.

    Args:
        queries: [E, Nq, T, D]; class_text: [E, way, D].

    Returns:
        logits [E, Nq, way].
    """
    q = F.normalize(queries.float().mean(dim=2), dim=-1)
    return torch.einsum("eqd,ewd->eqw", q, F.normalize(class_text.float(), dim=-1))
