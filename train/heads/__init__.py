"""Few-shot heads (methods), looked up by name. Each works on frame embeddings [.., T, D],
so the same head trains on the embedding cache (adapter mode) or behind a trainable
visual encoder (finetune mode). Each declares itself in `spec` (`MethodSpec`); `register`
adds one to the registry that the trainer, configs, reproduce and the CLI read."""

from __future__ import annotations

from fsar.train.heads.base import EpisodeBatch, Head
from fsar.train.heads.spec import MODES, MethodSpec

HEADS: dict[str, type[Head]] = {}


def register(head: type[Head]) -> type[Head]:
    """Add `head` to the registry under `head.spec.name` (usable as a class decorator)."""
    spec = getattr(head, "spec", None)
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"{head.__name__} has no `spec = MethodSpec(...)`: a method declares its name, modes and defaults")
    if "peft" in spec.modes and head.peft_visual.__func__ is Head.peft_visual.__func__:
        raise TypeError(f"{spec.name} declares peft mode but does not implement peft_visual")
    if spec.name in HEADS and HEADS[spec.name] is not head:
        raise ValueError(f"method {spec.name!r} is registered already ({HEADS[spec.name].__name__})")
    HEADS[spec.name] = head
    return head


def unregister(name: str) -> None:
    """Remove method `name` (tests that register a toy method)."""
    HEADS.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    """The declaration of method `name`; unknown names list the known ones."""
    if name not in HEADS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name].spec


def head_class(name: str) -> type[Head]:
    """The head class of method `name`; unknown names list the known ones."""
    method_spec(name)
    return HEADS[name]


def methods_with(mode: str | None = None, reproduce_mode: str | None = None) -> tuple[str, ...]:
    """Registered methods that train in `mode`, or that `fsar-reproduce` trains in `reproduce_mode` by default."""
    return tuple(n for n, h in HEADS.items()
                 if (mode is None or mode in h.spec.modes) and (reproduce_mode is None or h.spec.reproduce_mode == reproduce_mode))


def build_head(config, dim: int) -> Head:
    """The head named by `config.method`, for embeddings of width `dim`."""
    return head_class(config.method)(dim, config)


from fsar.train.heads.actionclip import ActionCLIP  # noqa: E402  (the built-in methods register below)
from fsar.train.heads.clip_fsar import CLIPFSAR  # noqa: E402
from fsar.train.heads.ma_clip import MACLIP  # noqa: E402
from fsar.train.heads.vita_clip import VitaCLIP  # noqa: E402

for _head in (CLIPFSAR, MACLIP, ActionCLIP, VitaCLIP):
    register(_head)

__all__ = ["HEADS", "MODES", "EpisodeBatch", "Head", "MethodSpec", "build_head", "head_class", "method_spec", "methods_with", "register", "unregister"]
