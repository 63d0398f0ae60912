"""Weights files that need pickle code (four kinds of payload) are refused before any code in
them runs: one line saying how to convert a trusted file, exit 2."""

from __future__ import annotations

import os
import pickle

import pytest
import torch


class Payload:
    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self):
        return (os.mkdir, (self.flag,))  # a harmless side effect that shows the code ran


def write_payload(kind: str, path, flag: str):
    d = {"state_dict": {"w": torch.zeros(2)}, "payload": Payload(flag)}
    if kind == "zip":
        torch.save(d, path)
    elif kind == "legacy":
        torch.save(d, path, _use_new_zipfile_serialization=False)
    elif kind == "bin":
        torch.save(d, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(d, f)
    return path


@pytest.mark.parametrize("kind,name", [("zip", "w.pt"), ("legacy", "w.pt"), ("bin", "pytorch_model.bin"), ("raw", "w.pkl")])
def test_a_pickle_payload_as_pretrained_is_one_line_exit_2_and_never_runs(tiny_chain, tmp_path, kind, name):
    from typer.testing import CliRunner

    from fsar.cli.data import app

    flag = str(tmp_path / "RAN")
    weights = write_payload(kind, tmp_path / name, flag)
    out = CliRunner().invoke(app, ["embed", "--shards", str(tiny_chain["shards"]), "--cache", str(tmp_path / "c.h5"),
                                   "--backbone", "fsar-micro-vit", "--pretrained", str(weights), "--activation", "gelu"])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "needs Python pickle code to load" in lines[-1] and "safetensors" in lines[-1]
    assert "Traceback" not in out.output
    assert not os.path.exists(flag) and not (tmp_path / "c.h5").exists()
