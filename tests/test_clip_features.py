"""core.displacement.clip_features: tiny open_clip configs with random weights (no network), plus the weight
lookup failing fast and clearly when weights are missing."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from clip_configs import register_tiny_configs
from conftest import face_photo
from PIL import Image

from core.displacement.clip_features import ENV_CHECKPOINT, ClipFeatureExtractor, ClipSettings
from core.errors import AssetError
from core.fitting.losses import clip_consistency_loss


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory):
    """Register the tiny architectures with open_clip under their names."""
    register_tiny_configs(tmp_path_factory.mktemp("clip_configs"))


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """Two real photos, (2, 3, 96, 96) in [0, 1]."""
    out = []
    for name in ("emma.jpg", "000006.jpg"):
        img = Image.open(face_photo(name)).convert("RGB").resize((96, 96), Image.BILINEAR)
        out.append(torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out)


def tiny_vit(layers=(0, 2, 3)) -> ClipFeatureExtractor:
    return ClipFeatureExtractor(ClipSettings("likeness-tiny-vit", pretrained=None, layers=layers))


def test_vit_token_maps(faces):
    extractor = tiny_vit()
    assert extractor.pretrained is False and "random" in extractor.weights_source
    assert extractor.arch == "vit" and extractor.input_size == (64, 64)
    assert sum(extractor.layer_weights) == pytest.approx(1.0)
    feats = extractor.features(faces)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 4)] * 3  # 64 px / patch 16, CLS dropped
    assert all(torch.isfinite(f).all() for f in feats)
    assert not torch.allclose(feats[0], feats[2])  # different depths


def test_resnet_stage_outputs(faces):
    extractor = ClipFeatureExtractor(ClipSettings("likeness-tiny-rn", pretrained=None, layers=(1, 2, 3, 4)))
    assert extractor.arch == "resnet"
    shapes = [tuple(f.shape) for f in extractor.features(faces)]
    assert shapes == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]


def test_gradient_reaches_image_not_weights(faces):
    extractor = tiny_vit()
    target = [f.detach() for f in extractor.features(faces)]
    image = (faces.flip(-1) * 0.9).requires_grad_(True)
    loss = clip_consistency_loss(extractor.features(image), target, weights=extractor.layer_weights)
    loss.backward()
    assert loss.item() > 0
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in extractor.visual.parameters())


def test_mask_hides_outside_pixels(faces):
    extractor = tiny_vit()
    mask = torch.zeros(2, 1, 96, 96)
    mask[..., 20:76, 24:72] = 1.0
    changed = torch.where(mask > 0, faces, torch.rand_like(faces))
    for a, b in zip(extractor.features(faces, mask), extractor.features(changed, mask), strict=True):
        torch.testing.assert_close(a, b)
    unmasked = extractor.features(changed)
    assert not torch.allclose(unmasked[0], extractor.features(faces)[0])


def test_layers_are_validated():
    with pytest.raises(ValueError, match="0-based"):
        tiny_vit(layers=(1, 4))  # the tiny ViT has blocks 0..3
    with pytest.raises(ValueError):
        ClipFeatureExtractor(ClipSettings("likeness-tiny-vit", pretrained=None, layers=(0, 1),
                                          layer_weights=(1.0,)))


def test_local_checkpoint_is_loaded(tmp_path, faces):
    source = open_clip.create_model("likeness-tiny-vit", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    extractor = ClipFeatureExtractor(ClipSettings("likeness-tiny-vit", pretrained=str(path), layers=(3,)))
    assert extractor.pretrained is True and str(path) in extractor.weights_source
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    resized = torch.nn.functional.interpolate(faces, size=(64, 64), mode="bilinear", antialias=True)
    expected = source.visual.forward_intermediates(
        (resized - mean) / std, indices=[3], intermediates_only=True
    )["image_intermediates"][0]
    torch.testing.assert_close(extractor.features(faces)[0], expected)


def test_corrupt_checkpoint_raises_asset_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(AssetError, match="likeness-tiny-vit"):
        ClipFeatureExtractor(ClipSettings("likeness-tiny-vit", pretrained=str(path)))


def test_missing_checkpoint_path_raises_asset_error(tmp_path):
    with pytest.raises(AssetError, match="checkpoint file"):
        ClipFeatureExtractor(ClipSettings("ViT-B-32", pretrained=str(tmp_path / "missing.safetensors")))


def test_missing_env_checkpoint_raises_asset_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CHECKPOINT, str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(AssetError, match=ENV_CHECKPOINT):
        ClipFeatureExtractor(ClipSettings("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path)))


def test_uncached_tag_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError) as info:
        ClipFeatureExtractor(ClipSettings("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path)))
    message = str(info.value)
    # HF_HUB_OFFLINE in the reason: refused up front, not after huggingface_hub's network retries.
    for part in ("ViT-B-32", "openai", "HF_HUB_OFFLINE", str(tmp_path), ENV_CHECKPOINT):
        assert part in message


def test_vit_b32_architecture_with_default_layers():
    """The default settings on the real ViT-B/32 architecture (random weights: no download)."""
    extractor = ClipFeatureExtractor(ClipSettings(pretrained=None))
    assert extractor.input_size == (224, 224) and extractor.layers == (1, 4, 8, 11)
    with torch.no_grad():
        feats = extractor.features(torch.rand(1, 3, 128, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 768, 7, 7)] * 4
