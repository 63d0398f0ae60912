"""Fixtures from alibaba-mmai-research/CLIP-FSAR: OTAM, the CLIP-FSAR head, and the executed schedule.

What runs is theirs, unmodified: `OTAM_cum_dist_v2`, `BaseVideoModel` around
`CNN_OTAM_CLIPFSAR` (models/base/few_shot.py), configs read by their `Config` class
(utils/config.py) along each file's _BASE chain, `construct_optimizer` and `get_epoch_lr`
(models/utils/), and one or many iterations of `train_epoch` (runs/train_net_few_shot.py).

What is replaced, and why:
- few_shot.load (downloads CLIP and builds it): returns a stand-in CLIP whose `visual` is an
  nn.Identity, so the head's "backbone" passes the frame features we feed it; `encode_text`
  returns zeros and the class-text tables (`text_features_train/test`) are then set to seeded
  features. For the weight-decay record `visual` is their own `VisionTransformer` at ViT-B/16
  shapes (names only matter there).
- `context2` is rebuilt with their `Transformer_v1` at width 64, MLP 128 and dropout 0 (the
  constructor hard-codes width 512 for ViT-B/16 and MLP 2048; dropout 0 so train-mode outputs
  are deterministic). Its forward is theirs.
- For the OTAM-only logits `context2` passes the query through (`PassQuery`), so the head's
  logits are OTAM on the raw features.
- In `train_epoch`: `eval_epoch` and `save_checkpoint` (every VAL_FRE_ITER) do nothing; the
  meters are no-ops; NUM_GPUS is 1 (it only decides whether the loop all-reduces its logged
  loss across processes); the loader repeats one episode. For the schedule the network is a
  one-parameter stand-in (the loop only needs logits to back-propagate) and the optimiser's
  `step` records the learning rate of every parameter group. The loop runs once per distinct
  set of the values it and the LR policy read (`_loop_settings`): each 5-shot config repeats its
  1-shot twin's.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import torch
from torch import nn

from official import capture_locals, imported_from, on_cpu, randomize, seeded, standard_stubs, state, working_directory
from parity_io import round_fp16

WAY, SHOT, QUERY, T, D, FFN = 5, 5, 5, 8, 64, 128
TRAIN_CLASSES, TEST_CLASSES = 10, 5
CONFIG_DIR = "configs/projects/CLIPFSAR"
DATASETS = {"ssv2": "ssv2_full/CLIPFSAR_SSv2_Full", "ssv2-small": "ssv2_small/CLIPFSAR_SSv2_Small", "kinetics100": "kinetics100/CLIPFSAR_K100", "ucf101": "ucf101/CLIPFSAR_UCF101", "hmdb51": "hmdb51/CLIPFSAR_HMDB51"}


def _stubs() -> dict:
    stubs = standard_stubs()
    # The training script imports the data pipeline (decord, cv2, ...) that the loop body never calls.
    stubs["datasets.base.builder"] = types.ModuleType("datasets.base.builder")
    stubs["datasets.base.builder"].__dict__.update(build_loader=None, shuffle_dataset=None, __parity_stub__=True)
    stubs["datasets.utils.mixup"] = types.ModuleType("datasets.utils.mixup")
    stubs["datasets.utils.mixup"].__dict__.update(Mixup=None, label_smoothing=None, __parity_stub__=True)
    return stubs


class _Anything:
    """A meter: every method call does nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


class _Loader:
    """Repeats one episode (batch dimension 1, as their loader yields it)."""

    batch_size = 1

    def __init__(self, task: dict, length: int) -> None:
        self.task, self.length = task, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self.length):
            yield {k: v[None].clone() for k, v in self.task.items()}


class PassQuery(nn.Module):
    """Stands in for context2 where only OTAM is wanted: returns its query unchanged."""

    def forward(self, q, k, v):
        return q


class _FakeCLIP:
    def __init__(self, visual: nn.Module) -> None:
        self.visual = visual

    def encode_text(self, tokens):
        return torch.zeros(len(tokens), D)


def _config(name: str):
    """Their Config for configs/projects/CLIPFSAR/<name>.yaml, read as their entry point reads it."""
    import utils.checkpoint
    from utils.config import Config

    utils.checkpoint.make_checkpoint_dir = lambda path: None  # it would create OUTPUT_DIR in the checkout
    argv = sys.argv
    sys.argv = ["train_net_few_shot.py", "--cfg", f"{CONFIG_DIR}/{name}.yaml"]
    try:
        return Config(load=True)
    finally:
        sys.argv = argv


def _build(cfg, visual: nn.Module):
    import models.base.few_shot as few_shot
    from models.base.models import BaseVideoModel

    few_shot.load = lambda *a, **k: (_FakeCLIP(visual), None)
    return BaseVideoModel(cfg)


def _train_epoch(cfg, model, task: dict, iterations: int, optimizer, keep_locals: bool = False) -> dict:
    """Run their train_epoch for `iterations` iterations; returns its locals at return if asked
    (watching them slows every Python call, so long runs do without)."""
    import runs.train_net_few_shot as loop

    loop.eval_epoch = lambda *a, **k: None
    loop.cu = types.SimpleNamespace(save_checkpoint=lambda *a, **k: None)
    cfg.NUM_GPUS, cfg.TRAIN.NUM_TRAIN_TASKS = 1, iterations
    args = (_Loader(task, iterations), model, None, optimizer, _Anything(), 0, None, cfg, None, _Anything(), None)
    if not keep_locals:
        loop.train_epoch(*args)
        return {}
    with capture_locals(loop.train_epoch) as seen:
        loop.train_epoch(*args)
    return seen


# ---------------------------------------------------------------------------------------------


def otam(gen: torch.Generator) -> tuple[dict, dict]:
    """OTAM_cum_dist_v2 on seeded distances (square and rectangular, two temperatures)."""
    from models.base.few_shot import OTAM_cum_dist_v2

    tensors = {}
    for shape_name, shape in (("square", (3, 4, 8, 8)), ("rect", (3, 4, 8, 6))):
        dists = round_fp16(2 * torch.rand(shape, generator=gen, dtype=torch.float64))  # 1 - cosine lies in [0, 2]
        tensors[f"input.dists_{shape_name}"] = dists
        for lam in (0.5, 0.1):
            tensors[f"output.cum_dist_{shape_name}_lam{lam}"] = OTAM_cum_dist_v2(dists.clone(), lbda=lam)
    return tensors, {"function": "models/base/few_shot.py:OTAM_cum_dist_v2", "lams": [0.5, 0.1]}


def head(gen: torch.Generator) -> tuple[dict, dict]:
    """CNN_OTAM_CLIPFSAR on frame features: eval logits (1-shot, 5-shot merge before/after,
    text fusion), OTAM-only logits, and one training iteration of their loop."""
    from models.base.few_shot import Transformer_v1

    cfg = _config(DATASETS["ssv2"] + "_1shot_v1")
    cfg.VIDEO.HEAD.BACKBONE_NAME = "ViT-B/16"
    cfg.TRAIN.CLASS_NAME = [f"train class {i}" for i in range(TRAIN_CLASSES)]
    cfg.TEST.CLASS_NAME = [f"test class {i}" for i in range(TEST_CLASSES)]
    model = _build(cfg, nn.Identity())
    model.head.context2 = Transformer_v1(dim=D, heads=8, dim_head_k=D // 8, dropout_atte=0.0, mlp_dim=FFN, dropout_ffn=0.0)
    randomize(model.head.context2, gen)
    with torch.no_grad():
        model.head.scale.fill_(2.5)  # not the init 1.0, so a misplaced scale shows
    text_train = round_fp16(torch.randn(TRAIN_CLASSES, D, generator=gen, dtype=torch.float64))
    text_test = round_fp16(torch.randn(TEST_CLASSES, D, generator=gen, dtype=torch.float64))
    model.head.text_features_train, model.head.text_features_test = text_train, text_test

    support = round_fp16(torch.randn(WAY, SHOT, T, D, generator=gen, dtype=torch.float64))  # class by class
    query = round_fp16(torch.randn(WAY, QUERY, T, D, generator=gen, dtype=torch.float64))
    test_class = torch.randperm(TEST_CLASSES, generator=gen)[:WAY]  # episode class c is test class test_class[c]
    train_class = torch.randperm(TRAIN_CLASSES, generator=gen)[:WAY]
    labels = torch.arange(WAY)

    def task(shot: int, real: torch.Tensor) -> dict:
        return {
            "support_set": support[:, :shot].reshape(-1, D),  # (way * shot * T, D): the identity backbone's frames
            "support_labels": labels.repeat_interleave(shot),
            "target_set": query.reshape(-1, D),
            "target_labels": labels.repeat_interleave(QUERY),
            "real_support_labels": real.repeat_interleave(shot),
            "real_target_labels": real.repeat_interleave(QUERY),
        }

    out = {}
    model.eval()
    with torch.no_grad():
        for key, shot, merge, combine in (
            ("eval_1shot", 1, False, False),
            ("eval_5shot_merge_before", 5, True, False),
            ("eval_5shot_merge_after", 5, False, False),
            ("combine_1shot", 1, False, True),
            ("combine_5shot_merge_before", 5, True, True),
        ):
            cfg.TRAIN.MERGE_BEFORE, cfg.TRAIN.COMBINE = merge, combine
            out[f"output.{key}"] = model(task(shot, test_class))["logits"]
        cfg.TRAIN.MERGE_BEFORE, cfg.TRAIN.COMBINE = False, False
        context2, model.head.context2 = model.head.context2, PassQuery()
        out["output.otam_1shot"] = model(task(1, test_class))["logits"]
        out["output.otam_5shot_mean_prototype"] = model(task(5, test_class))["logits"]
        model.head.context2 = context2

    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # set_lr is called; no step within one iteration
    seen = _train_epoch(cfg, model, task(1, train_class), 1, optimizer, keep_locals=True)
    out["output.train_logits"] = seen["model_dict"]["logits"].detach()
    out["output.train_class_logits"] = seen["model_dict"]["class_logits"].detach()
    out["output.train_loss"] = torch.tensor(seen["loss"], dtype=torch.float64)

    tensors = {
        "input.support": support,
        "input.query": query,
        "input.text_train": text_train,
        "input.text_test": text_test,
        "input.test_class": test_class,
        "input.train_class": train_class,
        **state(model.head.context2, "context2."),
        "weight.scale": model.head.scale.detach().clone(),
        **out,
    }
    meta = {
        "module": "models/base/few_shot.py:CNN_OTAM_CLIPFSAR in models/base/models.py:BaseVideoModel",
        "config": f"{CONFIG_DIR}/{DATASETS['ssv2']}_1shot_v1.yaml",
        "way": WAY, "shot": SHOT, "query_per_class": QUERY, "frames": T, "dim": D, "ffn_dim": FFN, "heads": 8,
        "batch_size": cfg.TRAIN.BATCH_SIZE,
        "use_classification_value": cfg.TRAIN.USE_CLASSIFICATION_VALUE,
        "text_coff": 0.9,
        "loss": "runs/train_net_few_shot.py:134 (CE(logits) + USE_CLASSIFICATION_VALUE * CE(class_logits)) / BATCH_SIZE",
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------------


def _chosen_steps(lrs: list[float]) -> list[int]:
    """Steps worth recording: both ends and the middle of every run of changes (the warm-up) and
    of every plateau, each side of every jump, the last step."""
    n = len(lrs)
    changes = [k for k in range(1, n) if lrs[k] != lrs[k - 1]]
    keep = {0, 1, 2, n - 1}
    runs, start = [], None
    for i, k in enumerate(changes):
        start = k if start is None else start
        if i + 1 == len(changes) or changes[i + 1] != k + 1:
            runs.append((start, k))
            start = None
    for a, b in runs:
        keep |= {a - 1, a, (a + b) // 2, b, min(b + 1, n - 1)}
    edges = [0] + [b for _, b in runs] + [n - 1]
    keep |= {(edges[i] + edges[i + 1]) // 2 for i in range(len(edges) - 1)}
    return sorted(k for k in keep if 0 <= k < n)


class _LoopNet(nn.Module):
    """The network for the schedule run: logits from one parameter (named like the head's)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.head = nn.Module()
        self.head.scale = nn.Parameter(torch.zeros(1))
        self.classes = classes

    def forward(self, task: dict) -> dict:
        nq, ns = task["target_labels"].shape[0], task["real_support_labels"].shape[0]
        return {"logits": self.head.scale.expand(nq, WAY), "class_logits": self.head.scale.expand(ns + nq, self.classes)}


def _loop_settings(cfg) -> dict:
    """Every value that train_epoch, get_epoch_lr and the optimiser's learning rates read."""
    solver = ("BASE_LR", "LR_POLICY", "STEPS_ITER", "STEPS", "LRS", "MAX_EPOCH", "WARMUP_EPOCHS", "WARMUP_START_LR")
    train = ("NUM_TRAIN_TASKS", "BATCH_SIZE_PER_TASK", "NUM_FOLDS", "LR_REDUCE", "FINE_TUNE")
    return {
        **{f"SOLVER.{k}": getattr(cfg.SOLVER, k) for k in solver},
        **{f"TRAIN.{k}": getattr(cfg.TRAIN, k) for k in train},
        "OPTIMIZER.OPTIM_METHOD": cfg.OPTIMIZER.OPTIM_METHOD,
    }


def _learning_rates(cfg, name: str) -> list[float]:
    """The learning rate of every optimiser step of their loop under `cfg`."""
    import models.utils.optimizer as optim

    net = _LoopNet(len(cfg.TRAIN.CLASS_NAME))
    optimizer = optim.construct_optimizer(net, cfg)
    lrs, step = [], optimizer.step

    def record(*a, **k):
        group_lrs = {g["lr"] for g in optimizer.param_groups if g["params"]}
        if len(group_lrs) != 1:
            raise RuntimeError(f"{name}: parameter groups step with different learning rates {group_lrs}")
        lrs.append(group_lrs.pop())
        return step(*a, **k)

    optimizer.step = record
    labels = torch.arange(WAY)
    task = {"target_labels": labels.repeat_interleave(QUERY), "real_support_labels": labels, "real_target_labels": labels.repeat_interleave(QUERY)}
    _train_epoch(cfg, net, task, cfg.TRAIN.NUM_TRAIN_TASKS, optimizer)
    return lrs


def schedule() -> tuple[dict, dict]:
    """The learning rate per optimiser step of every shipped 1- and 5-shot config, as their loop
    sets it, and the weight decay their optimiser reads."""
    tensors, meta, runs = {}, {"configs": {}}, {}
    for dataset, stem in DATASETS.items():
        for shot in (1, 5):
            name = f"{stem}_{shot}shot_v1"
            cfg = _config(name)
            iterations, per_step = cfg.TRAIN.NUM_TRAIN_TASKS, cfg.TRAIN.BATCH_SIZE_PER_TASK
            settings = _loop_settings(cfg)
            signature = repr(settings)
            if signature not in runs:  # the 5-shot file repeats its 1-shot twin's schedule: run it once
                runs[signature] = _learning_rates(cfg, name)
            lrs = runs[signature]
            steps = _chosen_steps(lrs)
            plateau = cfg.SOLVER.BASE_LR * cfg.SOLVER.LRS[0]
            key = f"{dataset}_{shot}shot"
            tensors[f"output.steps.{key}"] = torch.tensor(steps, dtype=torch.int64)
            tensors[f"output.lr.{key}"] = torch.tensor([lrs[k] for k in steps], dtype=torch.float64)
            meta["configs"][key] = {
                "file": f"{CONFIG_DIR}/{name}.yaml",
                "loop_settings": settings,
                "optimizer_steps": len(lrs),
                "warmup_steps": next(k for k, lr in enumerate(lrs) if math.isclose(lr, plateau, rel_tol=1e-12)),
                "num_train_tasks": iterations,
                "batch_size_per_task": per_step,
                "steps_iter": cfg.SOLVER.STEPS_ITER,
                "solver_steps": list(cfg.SOLVER.STEPS),
                "lrs": list(cfg.SOLVER.LRS),
                "base_lr": cfg.SOLVER.BASE_LR,
                "warmup_start_lr": cfg.SOLVER.WARMUP_START_LR,
                "shot": cfg.TRAIN.SHOT,
                "shot_test": getattr(cfg.TRAIN, "SHOT_TEST", cfg.TRAIN.SHOT),
                "merge_before": bool(getattr(cfg.TRAIN, "MERGE_BEFORE", False)),
                "use_classification_value": cfg.TRAIN.USE_CLASSIFICATION_VALUE,
                "weight_decay_read": float(cfg.OPTIMIZER.WEIGHT_DECAY),
                "norm_weight_decay_read": float(cfg.BN.WEIGHT_DECAY),
                "solver_weight_decay_unread": float(cfg.SOLVER.WEIGHT_DECAY),
            }
    meta["weight_decay_by_name"] = _decay_by_name(_config(DATASETS["ssv2"] + "_1shot_v1"))
    meta["loop"] = "runs/train_net_few_shot.py:train_epoch (lr set every iteration, optimizer.step every BATCH_SIZE_PER_TASK iterations)"
    return tensors, meta


def _decay_by_name(cfg) -> dict[str, float]:
    """Weight decay per parameter of the CLIP-FSAR model with a ViT-B/16 backbone, from the
    parameter groups their construct_optimizer builds."""
    import models.utils.optimizer as optim
    from models.base.few_shot import VisionTransformer

    cfg.VIDEO.HEAD.BACKBONE_NAME = "ViT-B/16"
    cfg.TRAIN.CLASS_NAME, cfg.TEST.CLASS_NAME = ["a"], ["b"]
    with torch.device("meta"):  # names and groups only: no memory for 86M weights
        model = _build(cfg, VisionTransformer(input_resolution=224, patch_size=16, width=768, layers=12, heads=12, output_dim=512))
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {}
    for group in optim.construct_optimizer(model, cfg).param_groups:
        for p in group["params"]:
            decay[names[id(p)]] = float(group["weight_decay"])
    return decay


def generate(root: Path, seed: int) -> dict[str, tuple[dict, dict]]:
    """All CLIP-FSAR fixtures: name -> (tensors, metadata)."""
    with imported_from(root, stubs=_stubs()), working_directory(root), on_cpu():
        return {
            "otam": otam(seeded(seed)),
            "clip_fsar": head(seeded(seed + 1)),
            "schedule": schedule(),
        }
