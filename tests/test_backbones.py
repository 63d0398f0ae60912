"""Backbones are built with the activation their weights were trained with, and weights files
that do not fit say so in one line."""

from __future__ import annotations

import pickle

import pytest
import torch

from fsar.pipeline.backbones import (
    BackboneSpec,
    activation_of_model,
    create_backbone,
    file_activation,
    resolve_activation,
    save_weights,
    sha256_file,
    tag_activation,
)

TINY = "fsar-micro-vit"


def _state(seed: int = 0, name: str = TINY) -> dict[str, torch.Tensor]:
    model, _ = create_backbone(BackboneSpec(name, "none", seed))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_open_clips_pretrained_config_decides_a_tags_activation_without_download():
    assert tag_activation("ViT-B-16", "openai") == "quick_gelu"  # OpenAI's weights were trained with QuickGELU
    assert tag_activation("ViT-B-16", "laion2b_s34b_b88k") == "gelu"
    assert resolve_activation("ViT-B-16", "openai") == ("quick_gelu", "open_clip's pretrained config of ViT-B-16 'openai'")
    assert resolve_activation("ViT-B-16", "none")[0] == "gelu"
    assert resolve_activation("ViT-B-16-quickgelu", "none")[0] == "quick_gelu"
    with pytest.raises(ValueError, match="--activation gelu contradicts the weights"):
        resolve_activation("ViT-B-16", "openai", "gelu")


@pytest.fixture
def quick_gelu_tag(monkeypatch, tmp_path):
    """A pretrained tag of the tiny model whose config says quick_gelu, as OpenAI's tags do; its
    'download' is a file of weights written here."""
    import open_clip.factory
    from open_clip import pretrained

    path = tmp_path / "downloaded.bin"
    torch.save(_state(3), path)
    cfg = pretrained._pcfg(url="https://example.invalid/tiny.pt", quick_gelu=True)
    monkeypatch.setitem(pretrained._PRETRAINED, TINY, {"test_openai": cfg})
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(path))
    return "test_openai"


def test_a_tag_with_quick_gelu_builds_a_quick_gelu_model(quick_gelu_tag):
    model, source = create_backbone(BackboneSpec(TINY, quick_gelu_tag))
    assert activation_of_model(model) == "quick_gelu" and source["activation"] == "quick_gelu"
    assert "pretrained config" in source["activation_from"]
    # The two activations give different embeddings for the same weights: the choice matters.
    gelu, _ = create_backbone(BackboneSpec(TINY, "none", 3))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert activation_of_model(gelu) == "gelu" and (model.encode_image(x) - gelu.encode_image(x)).abs().max() > 1e-4


def test_files_say_their_activation(tmp_path):
    model, _ = create_backbone(BackboneSpec(TINY, "none", 1, activation="quick_gelu"))
    ours = tmp_path / "ours.safetensors"
    save_weights(model, ours, {"backbone": TINY, "activation": "quick_gelu", "random_init": False})
    assert file_activation(ours, sha256_file(ours)) == ("quick_gelu", "recorded in the file by fsar")
    loaded, source = create_backbone(BackboneSpec(TINY, str(ours)))
    assert activation_of_model(loaded) == "quick_gelu" and source["activation"] == "quick_gelu"
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file(_state(1), str(plain))
    assert file_activation(plain, sha256_file(plain)) == (None, "the file does not say")
    # The same bytes in open_clip's own cache of OpenAI's ViT-B/16, found by its Hugging Face repository.
    hub = tmp_path / "hub" / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc" / "open_clip_model.safetensors"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(plain.read_bytes())
    act, how = file_activation(hub, sha256_file(hub))
    assert act == "quick_gelu" and "timm/vit_base_patch16_clip_224.openai" in how
    # A file of an architecture whose published weights differ (ViT-B/16: OpenAI's quick_gelu, LAION's gelu) must be stated.
    with pytest.raises(ValueError, match="Pass --activation quick_gelu \\(OpenAI weights\\) or --activation gelu"):
        resolve_activation("ViT-B-16", str(plain), "auto", sha256_file(plain))
    assert resolve_activation("ViT-B-16", str(plain), "quick_gelu", sha256_file(plain)) == ("quick_gelu", "stated")
    # The tiny test models have no published weights: their own config's activation.
    assert resolve_activation(TINY, str(plain), "auto", sha256_file(plain))[0] == "gelu"


def test_openais_torchscript_archive_loads_with_quick_gelu(tmp_path):
    model, _ = create_backbone(BackboneSpec(TINY, "none", 5, activation="quick_gelu"))

    class Holder(torch.nn.Module):  # a TorchScript archive holding the model's parameters under their names
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x)

    traced = torch.jit.trace(Holder(model), torch.zeros(1, 3, 64, 64), check_trace=False)
    path = tmp_path / "ViT-tiny.pt"
    traced.m.save(str(path))  # the model itself as the archive's root, as OpenAI's files are
    loaded, source = create_backbone(BackboneSpec(TINY, str(path)))
    assert source["activation"] == "quick_gelu" and "TorchScript" in source["activation_from"]
    assert activation_of_model(loaded) == "quick_gelu"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_random_weights_saved_by_fsar_stay_labelled_random(tmp_path):
    model, source = create_backbone(BackboneSpec(TINY, "none", 9))
    path = tmp_path / "cache.backbone.safetensors"
    save_weights(model, path, {"backbone": TINY, "activation": source["activation"], "random_init": True, "seed": 9})
    _, again = create_backbone(BackboneSpec(TINY, str(path)))
    assert again["random_init"] is True and again["seed"] == 9 and again["state_sha256"] == source["state_sha256"]


def test_weights_of_another_architecture_or_needing_pickle_are_one_line_errors(tmp_path):
    other = tmp_path / "tiny-vit.pt"
    torch.save(_state(0, "fsar-tiny-vit"), other)
    with pytest.raises(ValueError, match=r"holds weights of another architecture than fsar-micro-vit \(\d+ missing, \d+ unexpected and [1-9]\d* differently shaped tensors\): pass the --backbone it was saved for"):
        create_backbone(BackboneSpec(TINY, str(other)))

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(ValueError, match="needs Python pickle code to load, which fsar never runs") as e:
        create_backbone(BackboneSpec(TINY, str(evil)))
    assert "\n" not in str(e.value)
