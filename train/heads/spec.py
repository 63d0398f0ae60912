"""What a method declares about itself. The trainer, config resolution, `fsar-reproduce`, the
report and the CLI read a head's `spec` instead of branching on method names, so adding a
method that fits the existing modes takes its head file and its registration
(`fsar.train.heads.register`): see docs/adding-a-method.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

MODES = ("adapter", "finetune", "peft")


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class MethodSpec:
    """A method's declaration, kept on its head class as `spec`."""

    name: str
    """The method's name on the command line (`--method`), in run configs and results."""
    modes: tuple[str, ...] = ("adapter", "finetune")
    """Modes it trains in: adapter (the cached embeddings), finetune (the visual encoder trains)
    and peft (the head's `peft_visual` wraps the frozen encoder with its adapters or prompts)."""
    reproduce_mode: str | None = "adapter"
    """How `fsar-reproduce` trains it by default: adapter (on the cache), peft (on the shards),
    or None (only when asked for)."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """TrainConfig fields it sets over a named dataset config (`configs.for_method`)."""
    paper: Mapping[str, object] = field(default_factory=dict)
    """Its official code's value of each setting a run may change; a run's report marks every
    setting that departs from these as ours (`configs.departures`)."""
    official_schedules: bool = False
    """The paper benchmarks' named configs (ssv2, kinetics100, ...) hold this method's official
    schedules, so a run that changes one departs from the paper."""
    encodes_independently: bool = True
    """A video's encoding depends on that video alone (and a support's on its class text), so
    evaluation encodes every video of a split once and scores any number of episodes from those
    encodings. False: each episode's videos are encoded together (`Head.encode_episodes`), as
    methods that attend across an episode's videos need."""
    shot_free: bool = False
    """Its training is not episodic in nature: trained once whatever the shot, scored at every shot."""
    fused_row: bool = False
    """Its few-shot scores fuse with the zero-shot text scores (`fusion_beta`): the report gives
    the fused score a row of its own."""
    batch_loss: bool = False
    """Its training loss compares every video of a step with every other (not episode by
    episode): on several workers the head gathers the step's embeddings
    (`fsar.train.parallel.gather_rows`) so that every worker computes the step's whole loss."""
    template_zero_shot: bool = False
    """Zero-shot scores every prompt template apart and averages the probabilities, instead of
    scoring the mean prompt embedding."""
    ablations: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """The paper's ablations, {label: {TrainConfig field: value}}: `fsar-reproduce` also trains
    each (at the first shot, scored at that shot) and the report labels a run whose config holds
    those values with `label`, e.g. CLIP-FSAR "without prototype modulation"."""
    paper_numbers: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    """Published 5-way accuracy {dataset: {shot: %}} of the rows its official test computes,
    shown beside ours in the report."""
    paper_source: str = ""
    """Where `paper_numbers` come from and how they were obtained, printed under the table."""

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if not self.modes or bad:
            raise ValueError(f"method {self.name!r}: modes {self.modes} must be a non-empty subset of {MODES}")
        if self.reproduce_mode is not None and self.reproduce_mode not in self.modes:
            raise ValueError(f"method {self.name!r}: reproduce_mode {self.reproduce_mode!r} is not one of its modes {self.modes}")
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "paper", _frozen(self.paper))
        object.__setattr__(self, "ablations", _frozen({k: _frozen(v) for k, v in (self.ablations or {}).items()}))
        object.__setattr__(self, "paper_numbers", _frozen({k: _frozen(v) for k, v in (self.paper_numbers or {}).items()}))
