"""A decoder is an interface: every backend implements `Decoder`, and `make_decoder` (the one
place that chooses) builds any backend registered in `DECODERS`."""

from __future__ import annotations

import numpy as np

from fsar.pipeline.video import decode
from fsar.pipeline.video.decode import DECODERS, Decoder, OnePassDecoder, make_decoder, read_sampled


def test_every_backend_implements_the_protocol():
    for name, factory in DECODERS.items():
        backend = factory(1)
        assert isinstance(backend, Decoder) and backend.name == name
    assert isinstance(make_decoder("pyav"), OnePassDecoder)  # the backend that reads damaged files
    assert not isinstance(make_decoder("dali-cpu"), OnePassDecoder)


class GreyDecoder:
    """A toy backend: every frame mid-grey, its index in the first pixel."""

    name, planar = "grey", False

    def setup(self) -> None:
        pass

    def supports(self, info) -> bool:
        return True

    def decode(self, info, indices, size=None, **kw) -> np.ndarray:
        w, h = size or info.display_size
        frames = np.full((len(indices), h, w, 3), 128, np.uint8)
        frames[:, 0, 0, 0] = indices
        return frames


def test_a_new_backend_needs_only_its_class_and_its_entry(monkeypatch, tmp_path):
    from fsar.pipeline.video.encode import write_video

    clip = write_video(tmp_path / "c.webm", np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3), np.uint8), 25, "vp9")
    monkeypatch.setitem(DECODERS, "grey", lambda threads: GreyDecoder())
    backend = make_decoder("grey")
    assert isinstance(backend, Decoder) and not isinstance(backend, OnePassDecoder)
    got = read_sampled(backend, clip, lambda n: [0, n // 2, n - 1], lambda w, h: (32, 24))
    assert got.backend == "grey" and got.frames.shape == (3, 24, 32, 3)
    assert list(got.frames[:, 0, 0, 0]) == got.indices and got.indices[-1] == got.info.num_frames - 1
    assert decode.BACKENDS[0] == "auto"
