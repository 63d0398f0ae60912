"""The evaluation protocol: fixed seeded episodes, mean accuracy with a 95% confidence interval.

Frozen-backbone baselines run straight from the embedding cache: `protonet` (cosine
to mean prototypes of frame-averaged embeddings), `otam` (ordered temporal alignment)
and `zero-shot` (video-text cosine against the episode's class names).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.embed.reader import CachedSplit, load_split
from pipeline.sampling import train_candidates
from train.episodes import EpisodeConfig, Episodes, sample_episodes, sample_pair_episodes
from train.metrics import otam_logits, prototype_logits, text_logits

METHODS = ("protonet", "otam", "zero-shot")


def eval_frames(data: CachedSplit) -> torch.Tensor:
    """[N, T, D] float32 frames for evaluation: a training split's extra stored frames are thinned
    to the middle candidate of each of the T segments (as val/test store them)."""
    manifest = json.loads(data.attrs["shard_manifest"])
    T = manifest["sampling"]["frames"]
    x = torch.from_numpy(data.frames.astype(np.float32))
    if x.shape[1] != T:
        x = x[:, [c[len(c) // 2] for c in train_candidates(x.shape[1], T)]]
    return x


def episode_logits(method: str, frames: torch.Tensor, eps: Episodes, text: torch.Tensor | None, lam: float = 0.5) -> torch.Tensor:
    """Logits [E, way * query, way] of a method on a batch of episodes (all in one pass)."""
    E, W, K = eps.support.shape
    Q = eps.query.shape[2]
    sup = frames[torch.from_numpy(eps.support.reshape(E, W * K))]  # [E, W*K, T, D]
    qry = frames[torch.from_numpy(eps.query.reshape(E, W * Q))]  # [E, W*Q, T, D]
    if method == "otam":
        return otam_logits(qry, sup, W, lam)
    if method == "protonet":
        return prototype_logits(qry, sup, W)
    if method == "zero-shot":
        if text is None:
            raise ValueError("zero-shot needs class-name embeddings")
        return text_logits(qry, text[torch.from_numpy(eps.classes)])
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def predict_with(logits_fn, eps: Episodes, chunk: int = 2000) -> np.ndarray:
    """Predicted episode-level class [E, way * query] of every query, given
    `logits_fn(episodes) -> [e, way * query, way]`, computed `chunk` episodes at a time."""
    out = []
    E = eps.support.shape[0]
    with torch.no_grad():
        for s in range(0, E, chunk):
            part = Episodes(eps.classes[s : s + chunk], eps.support[s : s + chunk], eps.query[s : s + chunk])
            out.append(logits_fn(part).argmax(-1).cpu().numpy())
    return np.concatenate(out)


def score_with(logits_fn, eps: Episodes, chunk: int = 2000) -> np.ndarray:
    """Correctness [E, way * query] (bool) of every query (see `predict_with`)."""
    W, Q = eps.support.shape[1], eps.query.shape[2]
    return predict_with(logits_fn, eps, chunk) == np.repeat(np.arange(W), Q)  # query order: class by class


def score(method, frames, eps: Episodes, text=None, chunk: int = 2000) -> np.ndarray:
    """Correctness [E, way * query] of a frozen-backbone baseline on every query."""
    return score_with(lambda part: episode_logits(method, frames, part, text), eps, chunk)


def summarise(correct: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and 95% CI half-width (1.96 x std of per-episode accuracy / sqrt(episodes)), in %."""
    per_episode = correct.mean(axis=1)
    return float(per_episode.mean() * 100), float(1.96 * per_episode.std() / np.sqrt(len(per_episode)) * 100)


def reversal_pairs(class_names: list[str]) -> list[tuple[int, int]]:
    """Index pairs of classes that are exact time reversals of each other (synthetic benchmark classes)."""
    from pipeline.synth import catalogue_by_name

    cat = catalogue_by_name()
    idx = {n: i for i, n in enumerate(class_names)}
    return sorted({tuple(sorted((i, idx[cat[n].partner]))) for n, i in idx.items() if n in cat and cat[n].partner in idx})


def evaluate_frozen(cache: str | Path, method: str, split: str = "test", config: EpisodeConfig = EpisodeConfig(), prompts: str = "clip-fsar") -> tuple[dict, np.ndarray]:
    """Score a frozen-backbone baseline on seeded episodes of a cached split.

    Returns:
        (result, correctness [E, way * query]); the result holds accuracy, ci95, the
        protocol, per-class accuracy and, on the synthetic benchmark, accuracy on
        time-reversal-pair classes, on the other classes, and on 2-way reversal-pair episodes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    data = load_split(cache, split, verbose=False)
    frames = eval_frames(data)
    text = None
    if method == "zero-shot":
        if prompts not in data.text:
            raise ValueError(f"{cache} has no {prompts!r} text embeddings; it has: {', '.join(data.text)}")
        text = torch.from_numpy(data.text[prompts])
    eps = sample_episodes(data.labels, config)
    result, correct = protocol_result(lambda part: episode_logits(method, frames, part, text), eps, config, data.labels, data.class_names, json.loads(data.attrs["shard_manifest"]).get("dataset"))
    result = {
        "method": method,
        "split": split,
        **result,
        "cache": str(cache),
        "backbone": str(data.attrs.get("backbone")),
        "random_init_backbone": bool(data.attrs.get("random_init", False)),
    }
    if method == "zero-shot":
        result["prompts"] = prompts
    return result, correct


def protocol_result(logits_fn, eps: Episodes, config: EpisodeConfig, labels: np.ndarray, class_names: list[str], dataset: str | None) -> tuple[dict, np.ndarray]:
    """Score seeded episodes with `logits_fn`: accuracy, CI, per-class accuracy and, on the synthetic
    benchmark, accuracy on time-reversal-pair classes, on the rest, and on 2-way pair episodes."""
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


def classification_result(scores: torch.Tensor, labels: np.ndarray, class_names: list[str], protocol: str) -> tuple[dict, np.ndarray]:
    """Classify every video among all of a split's classes by its scores [N, C] (the zero-shot
    and supervised protocols): top-1 and top-5 accuracy with 95% CIs (1.96 x std of per-video
    correctness / sqrt(N)), per-class top-1 and the confusion matrix.

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
    return result, top1[:, None]


def evaluate_frozen_classification(cache: str | Path, split: str = "test", prompts: str = "clip-fsar") -> tuple[dict, np.ndarray]:
    """Frozen-backbone zero-shot classification of every video of `split` among all its classes."""
    data = load_split(cache, split, verbose=False)
    if prompts not in data.text:
        raise ValueError(f"{cache} has no {prompts!r} text embeddings; it has: {', '.join(data.text)}")
    frames = eval_frames(data)
    scores = torch.nn.functional.normalize(frames.mean(dim=1), dim=-1) @ torch.nn.functional.normalize(torch.from_numpy(data.text[prompts]).float(), dim=-1).T
    result, correct = classification_result(scores, data.labels, data.class_names, "zero-shot")
    return {
        "method": "zero-shot",
        "split": split,
        **result,
        "prompts": prompts,
        "cache": str(cache),
        "backbone": str(data.attrs.get("backbone")),
        "random_init_backbone": bool(data.attrs.get("random_init", False)),
    }, correct


def write_eval(run_dir: str | Path, result: dict, correct: np.ndarray, suffix: str = "") -> Path:
    """Write RUN_DIR/eval-<split>-<way>w<shot>s[-<baseline>][<suffix>].json and the per-episode accuracies beside it (CSV)."""
    from pipeline.atomic import write_text_atomic

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    protocol = result.get("protocol", "few-shot")
    if protocol == "few-shot":
        stem = f"eval-{result['split']}-{result['way']}w{result['shot']}s"
    else:
        stem = f"eval-{result['split']}-{protocol}"
    if result["method"] in METHODS:
        stem += f"-{result['method']}"
    stem += suffix
    per_episode = correct.mean(axis=1)
    unit = "episode" if protocol == "few-shot" else "video"
    rows = ["%s,accuracy,correct,queries" % unit] + [f"{e},{a:.6f},{int(c)},{correct.shape[1]}" for e, (a, c) in enumerate(zip(per_episode, correct.sum(axis=1)))]
    write_text_atomic(run_dir / f"{stem}-{unit}s.csv", "\n".join(rows) + "\n")
    path = run_dir / f"{stem}.json"
    write_text_atomic(path, json.dumps({**result, f"per_{unit}_file": f"{stem}-{unit}s.csv"}, indent=1) + "\n")
    return path
