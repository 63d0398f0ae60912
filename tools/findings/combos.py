"""Is a pretrained CLIP's zero-shot on appearance names limited by their novelty or by what it sees?

Renders corpus-style clips (`captions.render_truth`, the caption corpus's renderer) of two sets of
(colour, shape, motion) combinations: the 48 the corpus holds back for the benchmark's appearance
classes, and 48 it shows. Each clip is scored zero-shot among its set's names ("a photo of a red
circle spinning"), then among the single words of one attribute ("a photo of a circle"). Equal
accuracy on the two sets means the names are not hard for being new combinations; low accuracy on
an attribute's words means the model barely sees that attribute. Runs on the CPU in seconds.

    python -m tools.findings.combos WEIGHTS [--backbone fsar-micro-vit] [--clips 16]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fsar.pipeline.backbones import Preprocess, _open_clip
from fsar.pipeline.pretrain import encode_clips
from fsar.pipeline.synth.captions import APPEARANCE_SIZE, COLOURS, MOTIONS, SHAPE_WORDS, CaptionedClip, appearance_combos, render_truth, vocabulary

# A single attribute's words in a prompt; the corpus's captions always name every attribute.
SINGLE = {"colour": "a photo of a {} object", "shape": "a photo of a {}", "motion": "a photo of a shape {}"}


def combo_sets(n: int = APPEARANCE_SIZE, seed: int = 5) -> dict[str, list[tuple[str, str, str]]]:
    """The `n` held-back combinations, and `n` others drawn from those the corpus shows."""
    never_shown = set(appearance_combos(APPEARANCE_SIZE))
    shown = [(c, s, m) for c in COLOURS for s in SHAPE_WORDS for m in MOTIONS if (c, s, m) not in never_shown]
    rng = np.random.default_rng(seed)
    return {"held back": appearance_combos(n), "shown": [shown[i] for i in rng.choice(len(shown), n, replace=False)]}


def render(combos: list[tuple[str, str, str]], clips: int, seed: int = 11) -> tuple[np.ndarray, list[CaptionedClip]]:
    """`clips` corpus-style clips of each combination, count, texture, place and background drawn: uint8 [N, 4, 64, 64, 3]."""
    frames, truths = [], []
    for k, (colour, shape, motion) in enumerate(combos):
        for v in range(clips):
            rng = np.random.default_rng([seed, k, v])
            truth = CaptionedClip(int(rng.integers(1, 4)), colour, str(rng.choice(vocabulary("pattern"))), shape,
                                  str(rng.choice(vocabulary("region"))), motion, str(rng.choice(vocabulary("background"))))
            frames.append(render_truth(truth, rng, 64, 64, 4))
            truths.append(truth)
    return np.stack(frames), truths


@torch.no_grad()
def score(model, tokenizer, combos: list[tuple[str, str, str]], clips: int) -> dict[str, float]:
    """Zero-shot top-1 (%) among the combinations' names, and among each attribute's words."""
    frames, truths = render(combos, clips)
    img = encode_clips(model, Preprocess(model), frames)  # (N, D)

    def top1(texts: list[str], right: list[int]) -> float:
        pred = (img @ model.encode_text(tokenizer(texts), normalize=True).T).argmax(1)
        return float(100 * (pred == torch.tensor(right)).float().mean())

    out = {"names": top1([f"a photo of a {c} {SHAPE_WORDS[s]} {m}" for c, s, m in combos], list(np.repeat(np.arange(len(combos)), clips)))}
    for attr, template in SINGLE.items():
        values = vocabulary(attr)
        words = [SHAPE_WORDS[v] if attr == "shape" else v for v in values]
        out[attr] = top1([template.format(w) for w in words], [values.index(getattr(t, attr)) for t in truths])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--backbone", default="fsar-micro-vit")
    ap.add_argument("--clips", type=int, default=16, help="clips per combination")
    args = ap.parse_args(argv)
    oc = _open_clip()
    model = oc.create_model(args.backbone, pretrained=args.weights).eval()
    tokenizer = oc.get_tokenizer(args.backbone)
    for name, combos in combo_sets().items():
        r = score(model, tokenizer, combos, args.clips)
        chance = {"names": 100 / len(combos), **{a: 100 / len(vocabulary(a)) for a in SINGLE}}
        print(f"{name:>9} combinations: " + "; ".join(f"{k} {v:.1f}% (chance {chance[k]:.1f}%)" for k, v in r.items()))


if __name__ == "__main__":
    main()
