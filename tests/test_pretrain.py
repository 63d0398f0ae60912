"""The captioned corpus and contrastive pretraining (`fsar-data captions`, `fsar-data pretrain`):
captions say what the renderer drew, the corpus is deterministic and resumable, a killed
pretraining run resumes to the same weights, and the weights load into plain open_clip and
into the embed stage, which records them."""

from __future__ import annotations

import colorsys
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fsar.pipeline.synth.captions import COLOURS, CorpusConfig, load_corpus, render_captioned, render_corpus


def test_a_caption_says_what_the_clip_shows():
    for i in range(40):
        frames, truth = render_captioned(0, i, 64, 64, 4)
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
        words = truth.caption.split()
        assert words[0] == {1: "one", 2: "two", 3: "three"}[truth.count] and truth.colour in words
        # the object's colour is in the frame: some pixels near its named hue, saturated and bright
        hsv = np.array([colorsys.rgb_to_hsv(*(p / 255)) for p in frames[0].reshape(-1, 3)[::3]])
        d = np.abs((hsv[:, 0] - COLOURS[truth.colour] + 0.5) % 1.0 - 0.5)
        assert ((d < 0.05) & (hsv[:, 1] > 0.5) & (hsv[:, 2] > 0.5)).sum() >= 5, truth
        if truth.motion in ("moving left", "moving right"):  # the colour's centre of mass moves that way
            xs = []
            for f in (frames[0], frames[-1]):
                h = np.array([colorsys.rgb_to_hsv(*(p / 255)) for p in f.reshape(-1, 3)])
                near = (np.abs((h[:, 0] - COLOURS[truth.colour] + 0.5) % 1.0 - 0.5) < 0.05) & (h[:, 1] > 0.5) & (h[:, 2] > 0.5)
                xs.append((np.nonzero(near)[0] % 64).mean())
            assert (xs[1] - xs[0]) * (1 if truth.motion == "moving right" else -1) > 3, (truth, xs)


def test_the_corpus_is_deterministic_and_a_rerun_keeps_finished_parts(tmp_path):
    a = CorpusConfig(out=tmp_path / "a", samples=30, held_out=5, part_size=8)
    render_corpus(a)
    b = CorpusConfig(out=tmp_path / "b", samples=30, held_out=5, part_size=8)
    render_corpus(b)
    (b.out / "part-000002.npz").unlink()  # as if killed there
    assert render_corpus(b)["rendered"] == 8
    for part in sorted(a.out.glob("part-*.npz")):
        assert part.read_bytes() == (b.out / part.name).read_bytes()
    # the part size does not change the clips
    _, frames, captions = load_corpus(a.out)
    c = CorpusConfig(out=tmp_path / "c", samples=30, held_out=5, part_size=30)
    render_corpus(c)
    _, frames_c, captions_c = load_corpus(c.out)
    assert np.array_equal(frames, frames_c) and captions == captions_c
    with pytest.raises(ValueError, match="other settings"):
        render_corpus(CorpusConfig(out=a.out, samples=30, held_out=5, part_size=8, seed=1))


def test_the_corpus_is_not_the_benchmark():
    """Clip i of the corpus and the benchmark's scenes are drawn from different seeds."""
    from fsar.pipeline.synth.captions import CORPUS_TAG

    seeds = {tuple(np.random.default_rng([0, CORPUS_TAG, i]).integers(2**63, size=2)) for i in range(50)}
    bench = {tuple(np.random.default_rng([0, c, v]).integers(2**63, size=2)) for c in range(100) for v in range(24)}
    assert not seeds & bench


PRETRAIN = ["--steps", "12", "--batch", "8", "--save-every", "3", "--warmup", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    render_corpus(CorpusConfig(out=out, samples=60, held_out=12, part_size=20))
    return out


def _pretrain(corpus, out, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fsar.cli.data", "pretrain", "--corpus", str(corpus), "--out", str(out), *PRETRAIN, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_pretraining_resumes_to_the_same_weights(corpus, tmp_path):
    whole = _pretrain(corpus, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    killed = _pretrain(corpus, tmp_path / "killed")
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "killed" / "state.pt").exists():
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "open_clip_model.safetensors").exists(), "finished before the kill"
    again = _pretrain(corpus, tmp_path / "killed")
    assert again.wait(timeout=300) == 0, again.stdout.read()
    for name in ("open_clip_model.safetensors", "pretrain_metrics.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name
    summary = json.loads((tmp_path / "whole" / "pretrain.json").read_text())
    assert summary["finished"] and summary["held_out"]["clips"] == 12
    assert len((tmp_path / "whole" / "pretrain_metrics.csv").read_text().splitlines()) == 13


@pytest.fixture(scope="module")
def weights(corpus, tmp_path_factory) -> Path:
    from fsar.pipeline.pretrain import PretrainConfig, run_pretrain

    out = tmp_path_factory.mktemp("pretrained")
    return Path(run_pretrain(PretrainConfig(corpus=corpus, out=out, steps=4, batch=8, warmup=1, threads=1))["weights"])


def test_plain_open_clip_loads_the_weights(weights):
    import open_clip
    from safetensors.torch import load_file

    from fsar.pipeline.backbones import CONFIG_DIR

    open_clip.add_model_config(CONFIG_DIR)  # fsar's tiny model configs
    model = open_clip.create_model("fsar-micro-vit", pretrained=str(weights))
    state = load_file(str(weights))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_embedding_with_the_weights_records_them(weights, tiny_chain, tmp_path):
    import h5py

    from fsar.pipeline.embed.config import EmbedConfig
    from fsar.pipeline.embed.run import run_embed_stage

    summary = run_embed_stage(EmbedConfig(shards=tiny_chain["shards"], cache=tmp_path / "c.h5", backbone="fsar-micro-vit", pretrained=str(weights), threads=1))
    assert summary["pretrained"] == str(weights.resolve()) and not summary["random_init"]
    with h5py.File(tmp_path / "c.h5") as f:
        assert f.attrs["pretrained"] == str(weights.resolve()) and f.attrs["activation"] == "gelu"


def test_weights_of_another_shape_are_refused(weights):
    from fsar.pipeline.backbones import BackboneSpec, create_backbone

    with pytest.raises(ValueError, match="another architecture"):
        create_backbone(BackboneSpec("fsar-tiny-vit", str(weights)))
