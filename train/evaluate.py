"""The evaluation protocol: fixed seeded episodes, mean accuracy with a 95% confidence interval,
shared by the frozen baselines (`fsar.train.baselines`) and trained runs (`fsar.train.evaluate_run`).
Where results are written: `fsar.train.results`."""

from __future__ import annotations

import numpy as np
import torch

from fsar.train.episodes import EpisodeConfig, Episodes, sample_pair_episodes


SCORE_CHUNK = 2000  # episodes scored at a time


def predict_with(logits_fn, eps: Episodes, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Predicted episode-level class [E, way * query] of every query, given
    `logits_fn(episodes) -> [e, way * query, way]`, computed `chunk` episodes at a time (in a
    group of workers, each computes its chunks and every worker gets all predictions)."""
    from fsar.train import parallel

    group = parallel.current()
    mine = {}
    with torch.no_grad():
        for s, e in parallel.my_chunks(eps.support.shape[0], chunk, group):  # in a group of workers: this one's chunks
            part = Episodes(eps.classes[s:e], eps.support[s:e], eps.query[s:e])
            mine[s] = logits_fn(part).argmax(-1).cpu().numpy()
    return np.concatenate(parallel.gather_chunks(mine, group))


def score_with(logits_fn, eps: Episodes, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Correctness [E, way * query] (bool) of every query (see `predict_with`)."""
    W, Q = eps.support.shape[1], eps.query.shape[2]
    return predict_with(logits_fn, eps, chunk) == np.repeat(np.arange(W), Q)  # query order: class by class


def summarise(correct: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and 95% CI half-width (1.96 x std of per-episode accuracy / sqrt(episodes)), in %."""
    per_episode = correct.mean(axis=1)
    return float(per_episode.mean() * 100), float(1.96 * per_episode.std() / np.sqrt(len(per_episode)) * 100)


def reversal_pairs(class_names: list[str]) -> list[tuple[int, int]]:
    """Index pairs of classes that are exact time reversals of each other (synthetic benchmark classes)."""
    from fsar.pipeline.synth import catalogue_by_name

    cat = catalogue_by_name()
    idx = {n: i for i, n in enumerate(class_names)}
    return sorted({tuple(sorted((i, idx[cat[n].partner]))) for n, i in idx.items() if n in cat and cat[n].partner in idx})


def appearance_classes(class_names: list[str], dataset: str | None) -> np.ndarray | None:
    """[C] bool: which of a split's classes are named by appearance ("a red circle spinning", as
    in Kinetics) rather than by motion (as in SSv2), on the synthetic benchmark when its split
    has both; else None."""
    if dataset != "synth":
        return None
    from fsar.pipeline.synth import catalogue_by_name

    cat = catalogue_by_name()
    look = np.array([n in cat and cat[n].family == "look" for n in class_names])
    return look if look.any() and not look.all() else None


def by_regime(correct: np.ndarray, truth: np.ndarray, look: np.ndarray | None) -> dict | None:
    """Accuracy (%) over the queries (or videos) of the appearance-named and of the motion-named
    classes, given each one's correctness and true split-level class (same shapes); None where
    the split has one regime, or the queries only one (a few small episodes)."""
    if look is None:
        return None
    on = look[truth]
    if on.all() or not on.any():
        return None
    return {"appearance": float(correct[on].mean() * 100), "motion": float(correct[~on].mean() * 100)}


def protocol_result(logits_fn, eps: Episodes, config: EpisodeConfig, labels: np.ndarray, class_names: list[str], dataset: str | None) -> tuple[dict, np.ndarray]:
    """Score seeded episodes with `logits_fn`: accuracy, CI, per-class accuracy and, on the synthetic
    benchmark, accuracy on time-reversal-pair classes, on the rest, and on 2-way pair episodes, and
    on the appearance-named and the motion-named classes (`by_regime`)."""
    pred = predict_with(logits_fn, eps)  # [E, W*Q] episode-level
    correct = pred == np.repeat(np.arange(config.way), config.query)
    acc, ci = summarise(correct)
    # Per class: every query of that class, over all episodes.
    truth = np.repeat(eps.classes, config.query, axis=1)  # [E, W*Q] true class of each query
    per_class = {class_names[c]: float(correct[truth == c].mean() * 100) for c in np.unique(truth)}
    predicted = np.take_along_axis(eps.classes, pred, axis=1)  # [E, W*Q] split-level
    result = {
        "protocol": "few-shot",
        "accuracy": acc,
        "ci95": ci,
        "episodes": config.episodes,
        "way": config.way,
        "shot": config.shot,
        "query": config.query,
        "seed": config.seed,
        "per_class_accuracy": per_class,
        "confusion": confusion(truth.ravel(), predicted.ravel(), class_names),
    }
    if (regimes := by_regime(correct, truth, appearance_classes(class_names, dataset))) is not None:
        result["accuracy_by_regime"] = regimes
    pairs = reversal_pairs(class_names) if dataset == "synth" else []
    if pairs:
        in_pair = np.isin(truth, np.asarray(pairs).ravel())
        result["accuracy_reversal_pair_classes"] = float(correct[in_pair].mean() * 100)
        result["accuracy_other_classes"] = float(correct[~in_pair].mean() * 100) if (~in_pair).any() else None
        pair_eps = sample_pair_episodes(labels, pairs, EpisodeConfig(2, config.shot, config.query, min(config.episodes, 2000), config.seed))
        pa, pci = summarise(score_with(logits_fn, pair_eps))
        result["reversal_pair_2way"] = {"accuracy": pa, "ci95": pci, "episodes": len(pair_eps.classes), "pairs": len(pairs)}
    return result, correct


def confusion(truth: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict:
    """Counts [C, C] of (true class, predicted class) over a split's C classes, rows = truth."""
    C = len(class_names)
    counts = np.bincount(truth * C + predicted, minlength=C * C).reshape(C, C)
    return {"classes": list(class_names), "counts": counts.tolist()}


def classification_result(scores: torch.Tensor, labels: np.ndarray, class_names: list[str], protocol: str, dataset: str | None = None) -> tuple[dict, np.ndarray]:
    """Classify every video among all of a split's classes by its scores [N, C] (the zero-shot
    and supervised protocols): top-1 and top-5 accuracy with 95% CIs (1.96 x std of per-video
    correctness / sqrt(N)), per-class top-1, the confusion matrix and, on the synthetic benchmark,
    top-1 over the appearance-named and the motion-named classes.

    Returns:
        (result, top-1 correctness [N, 1]).
    """
    labels = np.asarray(labels)
    C = scores.shape[1]
    k = min(5, C)
    top = scores.topk(k, dim=1).indices.cpu().numpy()  # (N, k)
    top1 = top[:, 0] == labels
    topk = (top == labels[:, None]).any(axis=1)
    ci = lambda c: float(1.96 * c.std() / np.sqrt(len(c)) * 100)  # noqa: E731
    result = {
        "protocol": protocol,
        "accuracy": float(top1.mean() * 100),
        "ci95": ci(top1),
        f"top{k}_accuracy": float(topk.mean() * 100),
        f"top{k}_ci95": ci(topk),
        "videos": int(len(labels)),
        "classes": C,
        "per_class_accuracy": {class_names[c]: float(top1[labels == c].mean() * 100) for c in np.unique(labels)},
        "confusion": confusion(labels, top[:, 0], class_names),
    }
    if (regimes := by_regime(top1, labels, appearance_classes(class_names, dataset))) is not None:
        result["accuracy_by_regime"] = regimes
    return result, top1[:, None]
