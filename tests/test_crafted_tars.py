"""Shard tars holding a `../` member, an absolute member or a symlink, read by every command that
reads shards (embed, finetune and peft training): each refused in one line naming the tar, exit 2,
nothing written outside the output and nothing scored."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
from typer.testing import CliRunner

KINDS = {"dotdot": "../evil.jpg", "absolute": "/tmp/fsar-crafted-evil.jpg", "symlink": "zz.000.jpg"}


def craft(tar_path, kind: str) -> None:
    """Rewrite `tar_path` as its own samples followed by one crafted member."""
    raw = tar_path.read_bytes()
    info = tarfile.TarInfo(KINDS[kind])
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        info.size = 3
    with tarfile.open(tar_path, "w") as tar, tarfile.open(fileobj=io.BytesIO(raw)) as good:
        for m in good.getmembers():
            tar.addfile(m, good.extractfile(m))
        tar.addfile(info, io.BytesIO(b"bad") if kind != "symlink" else None)


@pytest.mark.parametrize("command", ["embed", "finetune", "peft"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_crafted_tar_is_refused_in_one_line_by_every_shard_reader(tiny_chain, tmp_path, kind, command):
    from fsar.cli.data import app as data_app
    from fsar.cli.train import app as train_app

    shards = tmp_path / "shards"
    shutil.copytree(tiny_chain["shards"], shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    tar = shards / "train" / manifest["splits"]["train"]["shards"][0]
    craft(tar, kind)
    out = tmp_path / "out"
    app, args = {
        "embed": (data_app, ["embed", "--shards", str(shards), "--cache", str(out / "c.h5"), "--backbone", "fsar-micro-vit", "--pretrained", "none"]),
        "finetune": (train_app, ["--out", str(out), "--mode", "finetune", "--shards", str(shards), "--config", "tiny", "--way", "3",
                                 "--set", "backbone=fsar-micro-vit", "--set", "pretrained=none", "--set", "iterations=2"]),
        "peft": (train_app, ["--out", str(out), "--mode", "peft", "--method", "ma-clip", "--shards", str(shards), "--config", "tiny", "--way", "3",
                             "--set", "backbone=fsar-micro-vit", "--set", "pretrained=none", "--set", "iterations=2"]),
    }[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert str(tar) in " ".join(result.output.split()) and "is not a sample's file" in " ".join(result.output.split())
    assert not (tmp_path / "evil.jpg").exists() and not (shards.parent / "evil.jpg").exists()
    scored = list(out.rglob("*.h5")) + list(out.rglob("*metrics*.csv")) + list(out.rglob("eval*.json")) if out.exists() else []
    assert not scored, scored
