"""Embedding: the backbone's encode_image frames/s in fp32 and bf16, how far bf16 moves the
embeddings, model FLOP utilisation against the GPU's bf16 peak, and the embed stage against a
bare encode_image loop (`tools.bench.embed`)."""

from __future__ import annotations

import time

from tools.gpu_check.config import CheckConfig
from tools.gpu_check.peaks import bf16_peak
from tools.gpu_check.record import Recorder, Skip

MFU_GOAL = 0.40  # of the bf16 peak, in the embed stage's precision
STAGE_GOAL = 0.90  # the stage's frames/s over the bare loop's


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def frames_per_second(model, x, device: str, precision: str, seconds: float) -> float:
    """encode_image on the batch `x` call after call for at least `seconds`, after one warm-up call."""
    import torch

    from fsar.pipeline.embed.worker import autocast_for

    sync = _sync(device)
    with torch.no_grad(), autocast_for(device, precision):
        model.encode_image(x)
        sync()
        t, frames = time.perf_counter(), 0
        while frames == 0 or time.perf_counter() - t < seconds:
            model.encode_image(x)
            sync()
            frames += x.shape[0]
    return frames / (time.perf_counter() - t)


def matmul_tflops(device: str, n: int, seconds: float) -> float:
    """Measured bf16 TFLOP/s of an n x n x n matrix product: what this GPU reaches outside the model."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g) for _ in range(2))
    sync = _sync(device)
    a @ b
    sync()
    t, products = time.perf_counter(), 0
    while products == 0 or time.perf_counter() - t < seconds:
        a @ b
        sync()
        products += 1
    return 2 * n**3 * products / (time.perf_counter() - t) / 1e12


def run(cfg: CheckConfig, rec: Recorder) -> None:
    import torch
    import torch.nn.functional as F

    from fsar.pipeline.backbones import BackboneSpec, Preprocess, activation_of_model, create_backbone
    from tools.bench.embed import flops_per_frame
    from fsar.pipeline.embed.worker import autocast_for

    dev = cfg.device
    model, source = create_backbone(BackboneSpec(cfg.backbone, "none", activation=cfg.activation), dev)
    size = Preprocess(model).size
    rec.set("backbone", {"name": source["backbone"], "weights": f"random (seed {source['seed']})", "activation": activation_of_model(model), "image_size": size})
    rec.set("batch", cfg.embed_batch)
    x = torch.randn(cfg.embed_batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)  # (B, 3, S, S), as preprocessed frames
    rates: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        with rec.part(f"encode_image {precision}", precision=precision) as part:
            rates[precision] = part["frames_per_s"] = round(frames_per_second(model, x, dev, precision, cfg.seconds), 1)
    with rec.part("bf16 against fp32") as part:
        with torch.no_grad():
            ref = model.encode_image(x).float()
            with autocast_for(dev, "bf16"):
                low = model.encode_image(x).float()
        cos = F.cosine_similarity(ref, low, dim=-1)  # (B,): each frame's embedding in both precisions
        part.update(cosine_mean=round(cos.mean().item(), 6), cosine_min=round(cos.min().item(), 6), frames=len(cos))
    flops = None
    with rec.part("FLOPs per frame") as part:
        flops = flops_per_frame(model, size)
        if flops is None:
            raise RuntimeError("torch.utils.flop_counter could not count encode_image")
        part["gflops"] = round(flops / 1e9, 3)
    matmul = None
    with rec.part("bf16 matrix product") as part:
        n = 8192 if dev == "cuda" else 512
        matmul = part["tflops"] = round(matmul_tflops(dev, n, cfg.seconds), 3)
        part["size"] = f"{n}x{n}x{n}"
    with rec.part("model FLOP utilisation (bf16)") as part:
        if flops is None or "bf16" not in rates:
            raise RuntimeError("needs the FLOPs and the bf16 rate, which failed")
        achieved = flops * rates["bf16"] / 1e12
        part["achieved_tflops"] = round(achieved, 4)
        if matmul:
            part["of_measured_matmul"] = round(achieved / matmul, 3)
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "CPU"
        peak = bf16_peak(name)
        if peak is None:
            raise Skip(f"no bf16 peak known for {name!r} (tools/gpu_check/peaks.py)")
        part.update(gpu=peak[0], peak_tflops=peak[1], mfu=round(achieved / peak[1], 3), goal=MFU_GOAL, meets_goal=achieved / peak[1] >= MFU_GOAL)
    del model, x
    if dev == "cuda":
        torch.cuda.empty_cache()
    with rec.part("embed stage vs bare encode_image") as part:
        from tools.bench.embed import main as bench_embed
        from tools.gpu_check.sections.data import shards

        out = bench_embed([
            "--shards", str(shards(cfg)), "--split", "train", "--backbone", cfg.backbone, "--pretrained", "none",
            "--device", dev, "--batch", str(cfg.embed_batch), "--min-seconds", str(cfg.seconds), "--out", str(cfg.work / "bench-embed"),
        ])
        part.update(out)
        part.update(goal=STAGE_GOAL, meets_goal=out["ratio"] >= STAGE_GOAL)
