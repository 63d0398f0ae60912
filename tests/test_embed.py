"""The embed stage: cached embeddings equal encode_image / encode_text, read-back, resume, bad shards."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import simplejpeg
import torch
import webdataset as wds

from fsar.pipeline.backbones import BackboneSpec, Preprocess, create_backbone, resolve_name
from fsar.pipeline.embed.config import EmbedConfig
from fsar.pipeline.embed.cache import LazySplit, load_split
from fsar.pipeline.embed.run import run_embed_stage
from fsar.pipeline.prompts import PROMPT_SETS
from fsar.pipeline.shard.config import ShardConfig
from fsar.pipeline.shard.run import run_shard_stage
from fsar.pipeline.synth import SynthConfig, generate

BACKBONE = "fsar-micro-vit"


def cache_content(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file, for equality checks."""
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tobytes() if obj.dtype.kind != "O" else [x for x in obj[()]]

        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    generate(SynthConfig(out=root / "synth", classes=6, videos_per_class=3, size=(96, 64), frames=(10, 14), workers=1))
    summary = run_shard_stage(ShardConfig(dataset="synth", root=root / "synth", out=root / "shards", workers=1, shard_size=4, short_side=64))
    assert summary["failed"] == 0
    return root / "shards"


def embed_config(shards: Path, cache: Path, **kw) -> EmbedConfig:
    return EmbedConfig(**{"shards": shards, "cache": cache, "backbone": BACKBONE, "pretrained": "none", "batch": 32, "threads": 1, **kw})


@pytest.fixture(scope="module")
def cache(shards, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "cache.h5"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        run_embed_stage(embed_config(shards, path))
    return path


def test_cached_embeddings_equal_encode_image_on_the_same_frames(cache, shards):
    with h5py.File(cache, "r") as f:
        weights = cache.with_name(f.attrs["weights_file"])
        assert f.attrs["random_init"] and f.attrs["pretrained"] == "none"
    model, _ = create_backbone(BackboneSpec(BACKBONE, str(weights)))
    pre = Preprocess(model)
    for split in ("train", "test"):
        data = load_split(cache, split, verbose=False)
        row = {k: i for i, k in enumerate(data.keys)}
        urls = sorted(str(p) for p in (shards / split).glob("*.tar"))
        n = 0
        for s in wds.WebDataset(urls, shardshuffle=False):
            jpgs = [s[k] for k in sorted(k for k in s if k.endswith(".jpg"))]
            frames = torch.from_numpy(np.stack([simplejpeg.decode_jpeg(b) for b in jpgs]))
            with torch.no_grad():
                ref = model.encode_image(pre(frames)).numpy()
            got = data.frames[row[s["__key__"]]].astype(np.float32)
            np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)  # float16 storage
            assert data.labels[row[s["__key__"]]] == int(s["cls"])
            n += 1
        assert n == len(data.keys) > 0


def test_text_embeddings_equal_encode_text_of_the_prompts(cache):
    import open_clip

    with h5py.File(cache, "r") as f:
        model, _ = create_backbone(BackboneSpec(BACKBONE, str(cache.with_name(f.attrs["weights_file"]))))
        tok = open_clip.get_tokenizer(BACKBONE)
        for split in ("train", "val", "test"):
            names = [n.decode() for n in f[split]["class_names"][()]]
            for set_name, templates in PROMPT_SETS.items():
                per = f[split]["text"][f"{set_name}_templates"][()]
                assert per.shape[:2] == (len(names), len(templates))
                with torch.no_grad():
                    ref = model.encode_text(tok([templates[-1].format(n) for n in names])).numpy()
                np.testing.assert_allclose(per[:, -1], ref, rtol=1e-4, atol=1e-5)
                ens = f[split]["text"][set_name][()]
                np.testing.assert_allclose(np.linalg.norm(ens, axis=1), 1.0, rtol=1e-5)
    assert len(PROMPT_SETS["actionclip"]) == 16 and PROMPT_SETS["clip-fsar"] == ("a photo of {}",)


def test_cache_reads_back_with_plain_h5py(cache, shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    with h5py.File(cache, "r") as f:
        assert f.attrs["backbone"] == BACKBONE and f.attrs["tool_version"] and len(f.attrs["weights_state_sha256"]) == 64
        assert f.attrs["activation"] == "gelu" and f.attrs["activation_from"] == "recorded in the file by fsar"  # the saved random weights
        assert json.loads(f.attrs["shard_manifest"])["splits"] == manifest["splits"]
        assert json.loads(f.attrs["preprocess"])["resize_shortest"] == 64 and json.loads(f.attrs["preprocess"])["name"] == "clip"  # synth: open_clip's view
        for split, info in manifest["splits"].items():
            g = f[split]
            n = info["videos"]
            assert g["frames"].shape == (n, info["frames_per_video"], 64) and g["frames"].dtype == np.float16
            assert g["labels"].shape == (n,) and len(g["keys"]) == len(g["ids"]) == n
            assert [c.decode() for c in g["class_names"][()]] == [c["name"] for c in info["classes"]]
            assert set(g["text"]) == {s for t in PROMPT_SETS for s in (t, f"{t}_templates")}


def test_random_weights_are_seeded_saved_and_reused(shards, cache, tmp_path):
    other = tmp_path / "again.h5"
    with pytest.warns(UserWarning):
        run_embed_stage(embed_config(shards, other))
    assert other.with_name("again.backbone.safetensors").read_bytes() == cache.with_name("cache.backbone.safetensors").read_bytes()
    a, b = cache_content(cache), cache_content(other)
    a["attrs"].pop("weights_file"), b["attrs"].pop("weights_file")
    assert a == b
    # Embedding again from that file of random weights still says they are random.
    again = tmp_path / "from-file.h5"
    run_embed_stage(embed_config(shards, again, pretrained=str(cache.with_name("cache.backbone.safetensors"))))
    with h5py.File(again, "r") as f, h5py.File(cache, "r") as g:
        assert f.attrs["random_init"] and f.attrs["seed"] == 0 and f.attrs["weights_state_sha256"] == g.attrs["weights_state_sha256"]


def test_lazy_reader_opens_its_own_handle_after_fork(cache):
    lazy = LazySplit(cache, "test")
    first = lazy[0][0]  # opened in the parent
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply(_read_row, (lazy, 0))
    assert np.array_equal(child, first) and len(lazy) == load_split(cache, "test", verbose=False).frames.shape[0]


def _read_row(lazy, i):
    return lazy[i][0]


def test_killed_run_resumes_to_the_same_cache(shards, tmp_path):
    # One video a shard; the sixth training shard is a FIFO that nothing writes, so the run
    # blocks there with exactly five parts done, however fast the machine, and is killed.
    fine = tmp_path / "shards"
    run_shard_stage(ShardConfig(dataset="synth", root=shards.parent / "synth", out=fine, workers=1, shard_size=1, short_side=64))
    reference = tmp_path / "reference.h5"
    with pytest.warns(UserWarning):
        run_embed_stage(embed_config(fine, reference))
    blocked = tmp_path / "blocked"
    shutil.copytree(fine, blocked)
    victim = blocked / "train" / "shard-000005.tar"
    victim.unlink()
    os.mkfifo(victim)
    out = tmp_path / "killed.h5"
    parts = out.with_name("killed.h5.parts")
    cmd = [sys.executable, "-m", "fsar.cli.data", "embed", "--shards", str(blocked), "--cache", str(out), "--backbone", BACKBONE,
           "--pretrained", "none", "--batch", "32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("train/*.h5"))) < 5:
        time.sleep(0.05)
    with pytest.raises(RuntimeError, match=rf"^{re.escape(str(parts))} is in use by fsar-data embed \(pid {proc.pid} on .*\): let it end"):
        run_embed_stage(embed_config(blocked, out))  # a second run meanwhile is refused; the killed one leaves no lock
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in parts.rglob("*.h5")) == [f"shard-{i:06d}.h5" for i in range(5)]
    assert not out.exists()
    victim.unlink()
    shutil.copy(fine / "train" / victim.name, victim)
    with pytest.warns(UserWarning):
        summary = run_embed_stage(embed_config(blocked, out))
    videos = {split: v["videos"] for split, v in json.loads((fine / "manifest.json").read_text())["splits"].items()}
    assert summary["this_run"]["frames"] == (videos["train"] - 5) * 16 + (videos["val"] + videos["test"]) * 8  # only what was left
    a, b = cache_content(out), cache_content(reference)
    a["attrs"].pop("weights_file"), b["attrs"].pop("weights_file")
    assert a == b


def test_unreadable_shard_is_reported_and_skipped_or_fails(shards, tmp_path):
    bad = tmp_path / "shards"
    shutil.copytree(shards, bad)
    victim = sorted((bad / "train").glob("*.tar"))[1]
    victim.write_bytes(victim.read_bytes()[:700])  # truncated mid-member
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=victim.name):
        run_embed_stage(embed_config(bad, tmp_path / "strict.h5"))
    assert not (tmp_path / "strict.h5").exists()
    with pytest.warns(UserWarning):
        summary = run_embed_stage(embed_config(bad, tmp_path / "lenient.h5", max_failure_rate=0.5))
    assert list(summary["failed_shards"]) == [str(victim)]
    with h5py.File(tmp_path / "lenient.h5", "r") as f:
        assert str(victim) in json.loads(f.attrs["skipped_shards"])
        expected = json.loads((bad / "manifest.json").read_text())["splits"]["train"]["videos"] - 4
        assert f["train"]["frames"].shape[0] == expected


@pytest.mark.cluster
def test_ray_workers_give_the_same_cache(shards, cache, tmp_path):
    """Three workers, more than this machine's two cores (where a local cluster of its cores
    could place only two, and setting up waited for the third for ever): all start, sharing them."""
    pytest.importorskip("ray")
    out = tmp_path / "ray.h5"
    with pytest.warns(UserWarning):
        summary = run_embed_stage(embed_config(shards, out, workers=3))
    run = summary["this_run"]
    assert (run["workers"], run["threads_per_worker"]) == (3, max(1, os.cpu_count() // 3))
    assert run["startup_seconds"] > 0 and run["seconds"] + run["startup_seconds"] <= summary["seconds"]  # the rate leaves Ray's start out
    a, b = cache_content(out), cache_content(cache)
    a["attrs"].pop("weights_file"), b["attrs"].pop("weights_file")
    assert a == b


@pytest.mark.cluster
@pytest.mark.parametrize("ray_cluster", [6], indirect=True)
def test_address_joins_a_running_cluster_for_the_same_cache(shards, cache, tmp_path, ray_cluster, monkeypatch):
    """Relative paths from another cwd; the workers' threads come from the cluster's 6 CPUs, not this
    machine's; a Ray Client address ("ray://host:port") gives the same cache."""
    monkeypatch.chdir(tmp_path)  # relative paths: the cluster's workers do not share the driver's cwd
    out = tmp_path / "joined.h5"
    with pytest.warns(UserWarning):
        summary = run_embed_stage(embed_config(Path(os.path.relpath(shards)), Path("joined.h5"), workers=2, address=ray_cluster.address))
    assert (summary["this_run"]["workers"], summary["this_run"]["threads_per_worker"]) == (2, 3)
    # the same through Ray Client, as from a machine outside the cluster, from the CLI
    from typer.testing import CliRunner

    from fsar.cli.data import app

    args = ["embed", "--shards", os.path.relpath(shards), "--cache", "client.h5", "--backbone", BACKBONE, "--pretrained", "none", "--batch", "32"]
    result = CliRunner().invoke(app, [*args, "--workers", "2", "--address", ray_cluster.client], env={"RAY_ADDRESS": None})
    assert result.exit_code == 0, result.output
    assert f"by 2 workers of 3 threads each on the Ray cluster at {ray_cluster.client} (" in " ".join(result.output.split())
    a, b, c = cache_content(out), cache_content(cache), cache_content(tmp_path / "client.h5")
    for d in (a, b, c):
        d["attrs"].pop("weights_file")
    assert a == b == c


def test_cli_shows_each_warning_once_as_it_comes(shards, tmp_path):
    from typer.testing import CliRunner

    from fsar.cli.data import app

    result = CliRunner().invoke(app, ["embed", "--shards", str(shards), "--cache", str(tmp_path / "c.h5"), "--backbone", BACKBONE, "--pretrained", "none", "--batch", "32"])
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())  # as wrapped to any width
    assert text.count("WARNING:fsar-micro-vitwithRANDOMweights(--pretrainednone,seed0)") == 1, result.output
    assert "UserWarning" not in text and text.index("RANDOMweights(--pretrained") < text.index("embedding:") < text.index("cachewrittento")
    assert f"sby1workerof{os.cpu_count()}thread" in text  # the CLI's default: every core, in this process


@pytest.mark.cluster
def test_a_shard_whose_ray_worker_dies_goes_to_a_fresh_one_then_counts_as_failed(shards, cache, tmp_path):
    """A worker killed once on a shard (as by the OOM killer) is replaced and the shard
    embedded by the new one: the cache equals the in-process one. A shard that kills every
    worker fails after the second, alone: the shards after it on that worker are embedded,
    and a truncated shard is reported with its read error, as in-process."""
    ray = pytest.importorskip("ray")
    from crashing import CRASH_ENV, CrashingEmbedWorker, write_crash_plan

    trains = sorted(p.name for p in (shards / "train").glob("*.tar"))
    plan = write_crash_plan(tmp_path / "plan.json", embed={f"train/{trains[0]}": "once"})
    env = {CRASH_ENV: str(plan), "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, runtime_env={"env_vars": env})
    try:
        with pytest.warns(UserWarning):
            run_embed_stage(embed_config(shards, tmp_path / "once.h5", workers=2), worker_cls=CrashingEmbedWorker)
        assert (tmp_path / f"died-train-{trains[0]}").exists()  # it did die, once
        a, b = cache_content(tmp_path / "once.h5"), cache_content(cache)
        a["attrs"].pop("weights_file"), b["attrs"].pop("weights_file")
        assert a == b

        bad = tmp_path / "shards"  # beside a shard that kills every worker, a truncated one
        shutil.copytree(shards, bad)
        truncated = bad / "train" / trains[2]
        truncated.write_bytes(truncated.read_bytes()[:700])
        write_crash_plan(plan, embed={f"train/{trains[1]}": "always"})
        with pytest.warns(UserWarning):
            summary = run_embed_stage(embed_config(bad, tmp_path / "always.h5", workers=2, max_failure_rate=0.5), worker_cls=CrashingEmbedWorker)
        victim = str(bad / "train" / trains[1])
        assert sorted(summary["failed_shards"]) == [victim, str(truncated)]
        assert summary["failed_shards"][victim].startswith(f"{victim}: a worker's process died on it")
        assert summary["failed_shards"][str(truncated)].startswith(f"{truncated}: ReadError")  # unwrapped from Ray's error
        with h5py.File(tmp_path / "always.h5", "r") as f:
            expected = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["videos"] - 8
            assert f["train"]["frames"].shape[0] == expected  # every other shard embedded
    finally:
        ray.shutdown()


# -- backbones ----------------------------------------------------------------------------------
def test_openai_spellings_and_unknown_names():
    assert resolve_name("ViT-B/16") == "ViT-B-16" and resolve_name("ViT-B/32") == "ViT-B-32" and resolve_name("RN50") == "RN50"
    with pytest.raises(ValueError, match=r"unknown backbone 'ViT-B/61': did you mean ViT-B-16, .*\(open_clip knows \d+ models"):
        resolve_name("ViT-B/61")
    with pytest.raises(ValueError, match=r"unknown backbone 'zzzz': no close name"):
        resolve_name("zzzz")


def test_missing_weights_say_how_to_supply_a_file(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):  # what a download attempt without network ends in
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="could not obtain the ViT-B-32 'openai' weights.*--pretrained /path/to/checkpoint"):
        create_backbone(BackboneSpec("ViT-B/32", "openai"))
    with pytest.raises(ValueError, match="tags: "):
        create_backbone(BackboneSpec("ViT-B-32", "no-such-tag"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_files_load(tmp_path, suffix):
    from safetensors.torch import save_file

    model, _ = create_backbone(BackboneSpec(BACKBONE, "none", seed=7))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded, source = create_backbone(BackboneSpec(BACKBONE, str(path)))
    assert source["sha256"] and not source["random_init"]
    assert source["state_sha256"] == create_backbone(BackboneSpec(BACKBONE, "none", seed=7))[1]["state_sha256"]
    assert source["state_sha256"] != create_backbone(BackboneSpec(BACKBONE, "none", seed=8))[1]["state_sha256"]
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_preprocessing_matches_open_clip_eval_transform():
    import open_clip
    from PIL import Image

    model, _ = create_backbone(BackboneSpec("fsar-tiny-vit", "none"))
    _, _, ref_transform = open_clip.create_model_and_transforms("fsar-tiny-vit")
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128, 60, (144, 256, 3)), 0, 255).astype(np.uint8) for _ in range(3)]
    frames[1] = np.full((300, 200, 3), 77, np.uint8)
    for f in frames:
        ours = Preprocess(model)(torch.from_numpy(f[None]))[0]
        ref = ref_transform(Image.fromarray(f))
        assert ours.shape == ref.shape == (3, 224, 224)
        assert (ours - ref).abs().mean() < 0.01 and (ours - ref).abs().max() < 0.1


def test_bad_embed_arguments_name_the_value(shards, tmp_path):
    with pytest.raises(ValueError, match="unknown prompt sets"):
        embed_config(shards, tmp_path / "c.h5", templates=("clip-fsar", "emoji"))
    with pytest.raises(ValueError, match="no manifest.json"):
        embed_config(tmp_path, tmp_path / "c.h5")
    with pytest.raises(ValueError, match="precision"):
        embed_config(shards, tmp_path / "c.h5", precision="int8")
