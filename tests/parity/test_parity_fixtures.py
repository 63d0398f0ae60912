"""The fixture files are what tools/parity/make_fixtures.py wrote, from the pinned commits.

make_fixtures.py records in manifest.json the sha256 of each file and of its seeded part
(inputs and weights), the official repository and commit, and the sha256 of its own Python
files. A fixture edited by hand, written by another script revision, or made from another
commit fails here; regenerate them (see tools/parity/README.md).
"""

from __future__ import annotations

import pytest

from parity_io import FIXTURES, SEEDED, file_sha256, load_fixture, read_manifest, script_sha256, tensors_sha256

PINNED = {
    "alibaba-mmai-research/CLIP-FSAR": "30cf0a8cf5287a56a9f37bfceb28e82be776fc5d",
    "sallymmx/ActionCLIP": "31c34df17dce917d67127b7fb155922c4744f680",
    "TalalWasim/Vita-CLIP": "c85829935b4ff73f7e92f0b956f59a5a944a6569",
}
MANIFEST = read_manifest()
NAMES = sorted(MANIFEST["fixtures"])


def test_every_fixture_file_is_in_the_manifest():
    assert sorted(p.stem for p in FIXTURES.glob("*.safetensors")) == NAMES
    assert {"otam", "clip_fsar", "schedule", "actionclip", "vita_vision", "vita_text", "vita_counts"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_what_the_script_wrote(name):
    entry = MANIFEST["fixtures"][name]
    assert file_sha256(FIXTURES / f"{name}.safetensors") == entry["file_sha256"]
    fx = load_fixture(name)
    raw = {k: v for k, v in fx.tensors.items() if k.startswith(SEEDED)}
    # the seeded part, back in its stored dtype (float16 for floats)
    stored = {k: v.half() if v.is_floating_point() else v for k, v in raw.items()}
    assert tensors_sha256(stored) == entry["seeded_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_comes_from_the_pinned_commit(name):
    entry, meta = MANIFEST["fixtures"][name], load_fixture(name).meta
    assert PINNED[entry["repository"]] == entry["commit"] == meta["commit"]
    assert meta["repository"] == entry["repository"] and meta["seed"] == MANIFEST["seed"]


def test_script_is_the_revision_that_wrote_the_fixtures():
    assert script_sha256() == MANIFEST["script_sha256"], "tools/parity changed since the fixtures were written: regenerate them (tools/parity/README.md)"


def test_fixtures_stay_small():
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 1_000_000, f"fixtures take {total} bytes"
