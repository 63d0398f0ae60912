"""The synthetic benchmark's classes: a name, a motion family, and whether it plays reversed.

Classes listed as a pair are exact time reversals of each other: the second renders
the first's frames in reverse order, so only a model that uses frame order can
separate them. Unpaired classes are symmetric in time (shaking, bouncing,
spinning either way ...): reversing one of their clips gives the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fsar.pipeline.synth.captions import APPEARANCE_SIZE, SHAPE_WORDS, appearance_combos


@dataclass(frozen=True)
class ClassSpec:
    """One synthetic action class.

    Attributes:
        name: natural-language class name, as in SSv2 ("pushing something from left to right").
        family: motion family in `pipeline.synth.motions.FAMILIES`.
        kwargs: the family's arguments, as sorted (key, value) pairs.
        reverse: play the family's frames backwards.
        partner: name of the class whose exact time reversal this is, or None.
    """

    name: str
    family: str
    kwargs: tuple = field(default_factory=tuple)
    reverse: bool = False
    partner: str | None = None


def _pair(forward: str, backward: str, family: str, **kw) -> list[ClassSpec]:
    args = tuple(sorted(kw.items()))
    return [
        ClassSpec(forward, family, args, False, backward),
        ClassSpec(backward, family, args, True, forward),
    ]


def _one(name: str, family: str, **kw) -> list[ClassSpec]:
    return [ClassSpec(name, family, tuple(sorted(kw.items())))]


# Ordered so that any prefix mixes families, pairs and time-symmetric classes.
CATALOGUE: tuple[ClassSpec, ...] = tuple(
    _pair("moving something from left to right", "moving something from right to left", "move", direction="right")
    + _pair("something falling", "throwing something upwards", "fall")
    + _one("shaking something", "oscillate", axis="horizontal", amp=0.04, cycles=4.0)
    + _pair("two things moving away from each other", "two things moving towards each other", "apart", axis="horizontal")
    + _pair("rotating something clockwise", "rotating something counterclockwise", "rotate")
    + _one("something bouncing", "bounce")
    + _pair("something getting closer to the camera", "something moving away from the camera", "zoom")
    + _pair("pushing something from left to right", "pulling something from right to left", "push", direction="right")
    + _one("spinning something", "rotate", turns=1.5)
    + _pair("something appearing", "something disappearing", "fade")
    + _pair("something circling clockwise", "something circling counterclockwise", "orbit")
    + _one("something changing colour", "colour_change")
    + _pair("covering something with something", "uncovering something", "cover")
    + _pair("moving something down", "moving something up", "move", direction="down")
    + _one("something swinging like a pendulum", "pendulum")
    + _pair("something starting to move from left to right", "something moving from right to left and stopping", "start_move", direction="right")
    + _pair("stretching something", "squashing something", "stretch")
    + _one("two things swapping places", "swap")
    + _pair("putting something next to something", "taking something away from something", "place_next")
    + _pair("dropping something onto something", "lifting something off something", "drop_onto")
    + _one("something pulsing", "pulse")
    + _pair("something lighting up", "something dimming", "light_up")
    + _pair("something zigzagging from left to right", "something zigzagging from right to left", "zigzag", direction="right")
    + _one("turning something upside down", "flip")
    + _pair("something sliding down a slope", "pushing something up a slope", "slope")
    + _pair("something passing behind something from left to right", "something passing behind something from right to left", "pass_by", behind=True)
    + _one("something blinking", "blink")
    + _pair("something rolling from left to right", "something rolling from right to left", "roll")
    + _pair("stacking something on something", "taking something off a stack", "stack")
    + _one("something bobbing up and down", "oscillate", axis="vertical", amp=0.15, cycles=1.0)
    + _pair("moving something diagonally from top left to bottom right", "moving something diagonally from bottom right to top left", "move", direction="down-right")
    + _pair("something tipping over", "standing something up", "tip_over")
    + _one("something bouncing off a wall", "wall_bounce")
    + _pair("pushing something from right to left", "pulling something from left to right", "push", direction="left")
    + _pair("filling something", "emptying something", "fill")
    + _one("something moving in a figure of eight", "figure_eight")
    + _pair("something growing out of the ground", "something sinking into the ground", "grow")
    + _pair("two things moving apart vertically", "two things coming together vertically", "apart", axis="vertical")
    + _pair("something passing in front of something from left to right", "something passing in front of something from right to left", "pass_by", behind=False)
    + _pair("moving something towards something", "moving something away from something", "approach")
    + _pair("something splitting in two", "two things merging into one", "apart", axis="horizontal", same=True)
    + _pair("something circling clockwise around something", "something circling counterclockwise around something", "orbit", around=True)
    + _pair("something spiralling inwards", "something spiralling outwards", "spiral")
    + _pair("something hitting something from left to right", "something hitting something from right to left", "hit")
    + _pair("opening a curtain", "closing a curtain", "curtains")
    + _pair("lifting something up", "putting something down", "lift")
    + _pair("pushing something upwards", "pulling something downwards", "push", direction="up")
    + _pair("pushing something downwards", "pulling something upwards", "push", direction="down")
    + _pair("moving something diagonally from bottom left to top right", "moving something diagonally from top right to bottom left", "move", direction="up-right")
    + _pair("something starting to move from right to left", "something moving from left to right and stopping", "start_move", direction="left")
    + _pair("something zigzagging upwards", "something zigzagging downwards", "zigzag", direction="up")
    + _pair("something moving along a wave from left to right", "something moving along a wave from right to left", "zigzag", direction="right", wave="sine")
    + _pair("something going round a square clockwise", "something going round a square counterclockwise", "square_path")
    + _pair("something jumping over something from left to right", "something jumping over something from right to left", "jump_over")
    + _pair("something following something from left to right", "something following something from right to left", "follow")
    + _pair("throwing something from left to right", "throwing something from right to left", "throw_arc")
)


def catalogue_by_name() -> dict[str, ClassSpec]:
    return {c.name: c for c in CATALOGUE + APPEARANCE}


def _appearance() -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {SHAPE_WORDS[shape]} {motion}", "look", (("colour", colour), ("motion", motion), ("shape", shape)))
        for colour, shape, motion in appearance_combos(APPEARANCE_SIZE)
    )


# Classes named by what a frame shows, as in Kinetics ("a red circle spinning"): a colour, a shape
# and a motion in words the caption corpus (`fsar-data captions`) teaches, in combinations it never
# shows. Added to a benchmark with `fsar-data synth --appearance N`.
APPEARANCE: tuple[ClassSpec, ...] = _appearance()
