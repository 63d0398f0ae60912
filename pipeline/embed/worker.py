"""The embed worker: one shard's JPEG frames -> frozen image embeddings in an HDF5 part file.

`setup()` loads the backbone once; `process()` embeds a whole shard. JPEG decoding
and preprocessing run in a background thread that stays ahead of the forward passes.
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from fsar.pipeline.backbones import BackboneSpec, create_backbone
from fsar.pipeline.embed.cache import write_part
from fsar.pipeline.shard.format import iter_sample_data
from fsar.pipeline.views import build_view


def autocast_for(device: str, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


class EmbedWorker:
    """Embeds whole shards with one frozen backbone."""

    def __init__(self, backbone: BackboneSpec, device: str, precision: str, batch: int, threads: int, view: str = "clip") -> None:
        self.spec, self.device, self.precision, self.batch, self.threads = backbone, device, precision, batch, threads
        self.view = view  # the image view frames are prepared with (`pipeline.views`)
        self.model = None

    def setup(self, model=None) -> None:
        """Load the backbone (or adopt an already loaded one)."""
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        self.model = model if model is not None else create_backbone(self.spec, self.device)[0]
        self.preprocess = build_view(self.view, self.model).test

    @torch.no_grad()
    def embed_videos(self, videos):
        """Embed an iterable of uint8 frame arrays (F, H, W, 3); yields float16 arrays (F, D) in order.

        A producer thread decodes ahead while the model runs; preprocessing runs here on
        whole batches, so torch's thread pool serves one caller at a time.
        """
        q: queue.Queue = queue.Queue(maxsize=max(2, 2 * self.batch // 8))
        DONE = object()
        failure: list[BaseException] = []

        def produce():
            try:
                for frames in videos:
                    q.put(torch.from_numpy(frames))
            except BaseException as e:  # surfaced in the consumer
                failure.append(e)
            finally:
                q.put(DONE)

        threading.Thread(target=produce, daemon=True).start()
        pending: list[torch.Tensor] = []
        n_pending = 0
        while True:
            item = q.get()
            if item is not DONE:
                pending.append(item)
                n_pending += item.shape[0]
            if pending and (n_pending >= self.batch or item is DONE):
                # Videos may differ in frame size: resize each to the model's input, then batch.
                x = torch.cat([self.preprocess(p.to(self.device, non_blocking=True)) for p in pending])  # (sum F, 3, S, S)
                with autocast_for(self.device, self.precision):
                    emb = self.model.encode_image(x)
                emb = emb.float().cpu().numpy().astype(np.float16)
                start = 0
                for p in pending:
                    yield emb[start : start + p.shape[0]]
                    start += p.shape[0]
                pending, n_pending = [], 0
            if item is DONE:
                break
        if failure:
            raise failure[0]

    def process(self, shard: Path, part: Path) -> dict:
        """Embed every sample of `shard` into the part file `part` (written atomically)."""
        import simplejpeg

        if self.model is None:
            self.setup()
        metas: list[tuple[str, str, int]] = []

        def videos():
            for key, meta, jpgs, cls in iter_sample_data(shard):
                metas.append((key, meta["id"], cls))
                yield np.stack([simplejpeg.decode_jpeg(b, colorspace="RGB") for b in jpgs])

        embs = list(self.embed_videos(videos()))
        write_part(part, embs, [m[2] for m in metas], [m[0] for m in metas], [m[1] for m in metas])
        return {"shard": str(shard), "part": str(part), "videos": len(metas), "frames": int(sum(e.shape[0] for e in embs))}
