"""Caches are checked on open, in the one cache reader: seven broken copies of a cache, each
scored as a user would, end in one line naming the file, the dataset and the remedy, exit 2,
and nothing is scored."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


BREAKS = {
    "frames 128 wide against wider text": (lambda g: _replace(g, "frames", g["frames"][()][:, :, :-1]), "test/text/"),
    "labels one short": (lambda g: _replace(g, "labels", g["labels"][()][:-1]), "test/labels"),
    "a label of 99": (lambda g: g["labels"].__setitem__(0, 99), "test/labels hold"),
    "int8 frames": (lambda g: _replace(g, "frames", g["frames"][()].astype(np.int8)), "test/frames is int8"),
    "2-D frames": (lambda g: _replace(g, "frames", g["frames"][()][:, 0]), "test/frames is"),
    "all-NaN frames": (lambda g: _replace(g, "frames", np.full(g["frames"].shape, np.nan, np.float16)), "test/frames of video"),
    "string frames": (lambda g: _replace(g, "frames", np.array(["x"] * g["frames"].shape[0], dtype=object).astype(h5py.string_dtype())), "test/frames is"),
}


@pytest.mark.parametrize("brk", sorted(BREAKS))
@pytest.mark.parametrize("method", ["protonet", "zero-shot"])
def test_a_broken_cache_is_one_line_exit_2_and_scores_nothing(tiny_chain, tmp_path, brk, method):
    cache = tmp_path / "broken.h5"
    shutil.copy(tiny_chain["cache"], cache)
    change, says = BREAKS[brk]
    with h5py.File(cache, "r+") as f:
        change(f["test"])
    out = tmp_path / "out"
    from typer.testing import CliRunner

    from fsar.cli.eval import app

    done = CliRunner().invoke(app, [str(out), "--cache", str(cache), "--method", method, "--episodes", "20", "--way", "3"])
    errors = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert done.exit_code == 2, done.output[-1000:]
    assert "Traceback" not in done.output and len(errors) == 1
    assert str(cache) in errors[0] and says in errors[0] and "re-run `fsar-data embed`" in errors[0], errors[0]
    assert not list(out.glob("eval-*")) if out.exists() else True


def test_a_cache_without_the_record_of_how_it_was_made_is_refused(tiny_chain, tmp_path):
    from fsar.pipeline.embed.cache import load_split

    cache = tmp_path / "c.h5"
    shutil.copy(tiny_chain["cache"], cache)
    with h5py.File(cache, "r+") as f:
        del f.attrs["activation"]
    with pytest.raises(ValueError, match=r"attributes lack activation"):
        load_split(cache, "test", verbose=False)
