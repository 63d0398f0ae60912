"""Fixtures from sallymmx/ActionCLIP: the "Transf" fusion, the training loss and the zero-shot scores.

What runs is theirs, unmodified: `visual_prompt` (modules/Visual_Prompt.py) with sim_header
"Transf"; `KLLoss` (utils/KLLoss.py), `gen_label` and `create_logits` (utils/tools.py) combined
as train.py:173-179 combines them; `validate` from test.py for the template-averaged zero-shot
scores (read from its locals: it returns only top-1).

What is replaced, and why:
- `visual_prompt` reads only shapes from CLIP's state dict: a stand-in dict gives embed width 64,
  77 positions and a text width of 512 (so 512 // 64 = 8 attention heads, as at ViT-B).
- The fusion transformer is cut to its first 2 of 6 residual blocks after construction, to
  keep the fixture small; the layer count the constructor builds is recorded (`layers_built`).
- Weights are seeded random values (not their N(0, 0.02) init, which leaves every LayerNorm at
  1 and 0, so a swapped LayerNorm would not show).
- `validate` gets a stand-in CLIP whose `encode_image` returns our seeded frame embeddings and
  `encode_text` our seeded template x class text embeddings; the loader is one batch; wandb and
  the data pipeline imports are stand-ins (never called for scores).
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import torch

from official import capture_locals, imported_from, load_file_as, on_cpu, randomize, seeded, standard_stubs, state
from parity_io import round_fp16

T, D, N, KEPT_LAYERS = 8, 64, 10, 2
TEMPLATES, CLASSES = 4, 6
LABELS = [0, 1, 2, 0, 3, 1, 4, 2, 0, 5]  # N videos of a batch; repeated classes make several positives per row


def _stubs() -> dict:
    stubs = standard_stubs()
    # test.py imports the data pipeline (pandas, cv2, RandAugment) and augmentations; validate uses neither.
    for name, attrs in (("datasets", {"Action_DATASETS": None}), ("utils.Augmentation", {"get_augmentation": None})):
        stubs[name] = types.ModuleType(name)
        stubs[name].__dict__.update(attrs, __parity_stub__=True)
    return stubs


class _FakeCLIP:
    """What test.py's validate calls on CLIP: eval, encode_text, encode_image."""

    def __init__(self, frames: torch.Tensor, text: torch.Tensor) -> None:
        self.frames, self.text = frames, text

    def eval(self):
        return self

    def encode_text(self, tokens):
        if len(tokens) != len(self.text):
            raise RuntimeError(f"expected {len(self.text)} prompts, got {len(tokens)}")
        return self.text.clone()

    def encode_image(self, images):
        if images.shape[0] != self.frames.shape[0] * self.frames.shape[1]:
            raise RuntimeError(f"expected {self.frames.shape[0] * self.frames.shape[1]} frames, got {images.shape[0]}")
        return self.frames.reshape(-1, self.frames.shape[-1]).clone()


def generate(root: Path, seed: int) -> dict[str, tuple[dict, dict]]:
    gen = seeded(seed + 2)
    with imported_from(root, stubs=_stubs()), on_cpu():
        from modules.Visual_Prompt import visual_prompt
        from utils.KLLoss import KLLoss
        from utils.tools import create_logits, gen_label

        clip_shapes = {
            "text_projection": torch.empty(1, D),
            "positional_embedding": torch.empty(77, 1),
            "token_embedding.weight": torch.empty(1, 1),
            "ln_final.weight": torch.empty(512),
        }
        fusion = visual_prompt("Transf", clip_shapes, T)
        layers_built = len(fusion.transformer.resblocks)
        fusion.transformer.resblocks = fusion.transformer.resblocks[:KEPT_LAYERS]
        randomize(fusion, gen)
        fusion.eval()

        frames = round_fp16(torch.randn(N, T, D, generator=gen, dtype=torch.float64))
        class_text = round_fp16(torch.randn(CLASSES, D, generator=gen, dtype=torch.float64))
        video_text = round_fp16(torch.randn(N, D, generator=gen, dtype=torch.float64))  # a random template per video
        template_text = round_fp16(torch.randn(TEMPLATES * CLASSES, D, generator=gen, dtype=torch.float64))  # template-major, as text_prompt builds it
        logit_scale = torch.tensor(math.log(100.0), dtype=torch.float64)  # CLIP's trained value, clamped at 100
        labels = torch.tensor(LABELS)

        out = {}
        with torch.no_grad():
            video = fusion(frames)
            out["output.video"] = video
            # train.py:173-179, for two choices of each video's text
            for key, text in (("class_text", class_text[labels]), ("video_text", video_text)):
                logits_per_image, logits_per_text = create_logits(video, text, logit_scale.exp())
                ground_truth = torch.tensor(gen_label(labels.tolist()), dtype=video.dtype)
                loss_imgs, loss_texts = KLLoss()(logits_per_image, ground_truth), KLLoss()(logits_per_text, ground_truth)
                out[f"output.{key}.logits_per_image"] = logits_per_image
                out[f"output.{key}.loss_imgs"] = loss_imgs
                out[f"output.{key}.loss_texts"] = loss_texts
                out[f"output.{key}.total_loss"] = (loss_imgs + loss_texts) / 2

            test = load_file_as("actionclip_test", root / "test.py")
            config = types.SimpleNamespace(data=types.SimpleNamespace(num_segments=T), solver=types.SimpleNamespace(epochs=1))
            batch = [(torch.zeros(N, T * 3, 1, 1), labels % CLASSES)]  # pixels unused: encode_image returns our frames
            with capture_locals(test.validate) as seen:
                test.validate(0, batch, torch.zeros(TEMPLATES * CLASSES, 77, dtype=torch.long), "cpu", _FakeCLIP(frames, template_text), fusion, config, TEMPLATES)
            out["output.zero_shot_scores"] = seen["similarity"]

        tensors = {
            "input.frames": frames,
            "input.class_text": class_text,
            "input.video_text": video_text,
            "input.template_text": template_text,
            "input.labels": labels,
            **state(fusion),
            **out,
        }
        meta = {
            "module": "modules/Visual_Prompt.py:visual_prompt('Transf')",
            "loss": "train.py:173-179 with utils/KLLoss.py:KLLoss, utils/tools.py:gen_label, create_logits",
            "zero_shot": "test.py:validate (similarity after its line 61)",
            "frames": T, "dim": D, "heads": 512 // 64, "layers_built": layers_built, "layers_kept": KEPT_LAYERS,
            "templates": TEMPLATES, "classes": CLASSES, "logit_scale": logit_scale.item(), "zero_shot_scale": 100.0,
        }
    return {"actionclip": (tensors, meta)}
