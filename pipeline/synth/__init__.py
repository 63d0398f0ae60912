"""A procedural few-shot action benchmark in which temporal order matters.

Each class is a motion pattern with a natural-language name; many classes come in
time-reversal pairs (the same frames in reverse order), so a model that ignores
frame order cannot tell them apart.
"""

from fsar.pipeline.synth.catalogue import CATALOGUE, ClassSpec, catalogue_by_name
from fsar.pipeline.synth.generate import SynthConfig, generate
from fsar.pipeline.synth.render import VideoParams, render_video

__all__ = [
    "CATALOGUE",
    "ClassSpec",
    "catalogue_by_name",
    "SynthConfig",
    "generate",
    "VideoParams",
    "render_video",
]
