"""Training steps on the GPU: CLIP-FSAR fine-tuning and MA-CLIP and Vita-CLIP peft, each one
optimiser step of the official batch (5-way 1-shot, 5 queries, 16 episodes), built with the
trainer's own functions: seconds per step and peak GPU memory. Where the batch does not fit, the
largest number of episodes per step that does is measured too."""

from __future__ import annotations

import dataclasses
import gc
import time

import numpy as np

from tools.gpu_check.config import CheckConfig
from tools.gpu_check.record import Failed, Recorder

RUNS = (("clip-fsar", "finetune"), ("ma-clip", "peft"), ("vita-clip", "peft"))


def step_config(cfg: CheckConfig, method: str, mode: str, shards: str):
    """The method's official settings (the SSv2 schedule's, as `fsar-train --config ssv2`) on the
    check's backbone, batch and device."""
    from fsar.train.configs import get_config

    return dataclasses.replace(
        get_config("ssv2", method), mode=mode, shards=shards, backbone=cfg.backbone, pretrained="none", activation=cfg.activation,
        way=cfg.way, shot=cfg.shot, query=cfg.query, episodes_per_step=cfg.episodes_per_step, device=cfg.device,
    )


class Stepper:
    """One optimiser step as `train.trainer` takes it (seeded episodes, the method's class text,
    `TrainStep`: its episodes, the head's loss; then Adam), for any number of episodes."""

    def __init__(self, config) -> None:
        import torch

        from fsar.train.model import build_model, resolve_device
        from fsar.train.trainer import make_optimizer

        self.config = config
        self.device = resolve_device(config.device)
        self.model, data = build_model(config)
        self.model.to(self.device)
        self.source = data.split("train")
        self.frozen = data.text["train"].to(self.device)
        self.optimizer = make_optimizer(self.model, config)
        self.model.train()
        self.cuda = self.device.type == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def step(self, k: int, episodes: int) -> None:
        import torch

        from fsar.train.episodes import EpisodeConfig, sample_episodes
        from fsar.train.trainer import TrainStep, step_seed

        c, model = self.config, self.model
        torch.manual_seed(step_seed(c.seed + 1, k))
        eps = sample_episodes(self.source.info.labels, EpisodeConfig(c.way, c.shot, c.query, episodes, step_seed(c.seed, k)))
        loss, _ = TrainStep(model, c, self.source, self.frozen, self.device)(eps, np.arange(episodes), k, 1.0)  # the trainer's forward
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.sync()

    def measure(self, episodes: int, seconds: float) -> dict:
        """Seconds per step (median of the steps taken in at least `seconds`, after a warm-up step) and peak GPU memory."""
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.step(0, episodes)
        times, t0 = [], time.perf_counter()
        while not times or time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            self.step(len(times) + 1, episodes)
            times.append(time.perf_counter() - t)
        out = {"episodes_per_step": episodes, "seconds_per_step": round(float(np.median(times)), 3), "steps_timed": len(times)}
        if self.cuda:
            out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        return out


def _free(device_is_cuda: bool) -> None:
    import torch

    gc.collect()
    if device_is_cuda:
        torch.cuda.empty_cache()


def run(cfg: CheckConfig, rec: Recorder) -> None:
    import torch

    from tools.gpu_check.sections.data import shards

    folder = str(shards(cfg))
    rec.set("episode", f"{cfg.way}-way {cfg.shot}-shot, {cfg.query} queries per class, {cfg.episodes_per_step} episodes per step")
    rec.set("backbone", f"{cfg.backbone} (random weights, {cfg.activation})")
    for method, mode in RUNS:
        with rec.part(f"{method} {mode}", method=method, mode=mode) as part:
            stepper = Stepper(step_config(cfg, method, mode, folder))
            trainable = sum(p.numel() for p in stepper.model.parameters() if p.requires_grad)
            part["trainable_parameters"] = trainable
            episodes, oom = cfg.episodes_per_step, None
            while episodes >= 1:
                try:
                    part.update(stepper.measure(episodes, cfg.seconds))
                    break
                except torch.OutOfMemoryError as e:
                    oom = oom or f"CUDA out of memory at {episodes} episodes per step ({str(e).splitlines()[0][:160]})"
                # Out of the except block, the error's frames (holding the step's tensors) are gone.
                stepper.optimizer.zero_grad(set_to_none=True)
                _free(stepper.cuda)
                episodes //= 2  # the largest batch that fits, to say what this GPU can train
            del stepper
            _free(torch.cuda.is_available())
            if oom:
                part["out_of_memory"] = oom
                raise Failed(oom + (f"; {episodes} episodes per step fit" if episodes else "; not even 1 episode fits"))
