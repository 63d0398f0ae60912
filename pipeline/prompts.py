"""Prompt sets for class-name text embeddings."""

from __future__ import annotations

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
