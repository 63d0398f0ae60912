"""Prompt sets for class-name text embeddings, and their encoding with a CLIP text tower
(the embed stage's cache and a finetune run's class texts both come from here)."""

from __future__ import annotations

import numpy as np

PROMPT_SETS: dict[str, tuple[str, ...]] = {
    # The class name alone.
    "raw": ("{}",),
    # CLIP-FSAR's prompt.
    "clip-fsar": ("a photo of {}",),
    # ActionCLIP's 16-template ensemble.
    "actionclip": (
        "a photo of action {}",
        "a picture of action {}",
        "Human action of {}",
        "{}, an action",
        "{} this is an action",
        "{}, a video of action",
        "Playing action of {}",
        "{}",
        "Playing a kind of action, {}",
        "Doing a kind of action, {}",
        "Look, the human is {}",
        "Can you recognize the action of {}?",
        "Video classification of {}",
        "A video of {}",
        "The man is {}",
        "The woman is {}",
    ),
}


def prompt_set(name: str) -> tuple[str, ...]:
    try:
        return PROMPT_SETS[name]
    except KeyError:
        raise ValueError(f"unknown prompt set {name!r}; known: {', '.join(PROMPT_SETS)}") from None


def encode_prompts(model, tokenizer, names: list[str], templates: tuple[str, ...], device: str) -> np.ndarray:
    """encode_text of every (class, template) prompt: float32 (C, K, D)."""
    import torch

    prompts = [t.format(n) for n in names for t in templates]
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), 256):
            out.append(model.encode_text(tokenizer(prompts[i : i + 256]).to(device)).float().cpu())
    return torch.cat(out).view(len(names), len(templates), -1).numpy()


def ensemble(per_template: np.ndarray) -> np.ndarray:
    """(C, K, D) -> (C, D): mean of L2-normalised template embeddings, normalised again."""
    x = per_template / np.linalg.norm(per_template, axis=-1, keepdims=True)
    m = x.mean(axis=1)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)
