"""core.fitting.losses: zero for identical inputs, positive otherwise, differentiable, masks respected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import face_photo
from PIL import Image
from scipy.spatial import cKDTree

from core.fitting.losses import (
    clip_consistency_loss,
    frequency_band_losses,
    frequency_wing_loss,
    landmark_loss,
    magnitude_loss,
    photometric_loss,
    symmetry_loss,
    wing_loss,
)
from core.geometry.face_model import FACE_POLYGONS


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real face photo, (1, 3, 128, 128) in [0, 1]."""
    img = Image.open(face_photo("emma.jpg")).convert("RGB").resize((128, 128), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def face_mask() -> torch.Tensor:
    """An elliptic face-like mask (1, 1, 128, 128), soft at the border."""
    y, x = torch.meshgrid(torch.arange(128.0) + 0.5, torch.arange(128.0) + 0.5, indexing="ij")
    r = ((x - 64) / 40) ** 2 + ((y - 66) / 52) ** 2
    return (1.5 - r).clamp(0, 1)[None, None]


def outside_changed(x: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(mask > 0, x, noise)


def assert_differentiable(loss_fn, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    loss = loss_fn(x)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_clip_consistency(kind):
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 16, 8, 8, generator=gen), torch.randn(2, 32, 4, 4, generator=gen)]
    other = [f + 0.5 * torch.randn(f.shape, generator=gen) for f in feats]
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., :, :32] = 1.0  # left half: token columns [0, 4) and [0, 2) are covered
    assert clip_consistency_loss(feats, feats, mask, kind=kind).item() == pytest.approx(0.0, abs=1e-6)
    loss = clip_consistency_loss(other, feats, mask, kind=kind)
    assert loss.item() > 0.01
    # Tokens with no mask coverage do not count.
    moved = [f.clone() for f in other]
    moved[0][..., 4:] += 3.0
    moved[1][..., 2:] -= 3.0
    assert clip_consistency_loss(moved, feats, mask, kind=kind).item() == pytest.approx(loss.item(), rel=1e-6)
    assert clip_consistency_loss(moved, feats, kind=kind).item() > loss.item()
    # Layer weights: only the first layer.
    first = clip_consistency_loss(other[:1], feats[:1], mask, kind=kind)
    assert clip_consistency_loss(other, feats, mask, weights=[1.0, 0.0], kind=kind).item() == pytest.approx(
        first.item()
    )
    assert_differentiable(lambda f0: clip_consistency_loss([f0, other[1]], feats, mask, kind=kind), other[0])


def test_wing_loss_shape():
    x = torch.tensor([0.0, 1.0, 9.999, 10.001, 30.0])
    y = torch.zeros(5)
    assert wing_loss(y, y).item() == 0.0
    per = [wing_loss(x[i : i + 1], y[i : i + 1]).item() for i in range(5)]
    assert per[1] == pytest.approx(10 * np.log1p(0.5))
    assert per[2] == pytest.approx(per[3], abs=1e-2)  # continuous at |x| = w
    assert per[4] - per[3] == pytest.approx(30.0 - 10.001, rel=1e-4)  # linear beyond w
    weights = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    assert wing_loss(x, y, weights=weights).item() == pytest.approx((per[0] + per[1]) / 2)
    assert_differentiable(lambda v: wing_loss(v, y), x)


def test_frequency_wing_loss_basics(photo, face_mask):
    assert frequency_wing_loss(photo, photo, face_mask).item() == pytest.approx(0.0, abs=1e-7)
    render = photo * 0.8 + 0.05
    loss = frequency_wing_loss(render, photo, face_mask)
    assert loss.item() > 0
    changed = frequency_wing_loss(
        outside_changed(render, face_mask), outside_changed(photo, face_mask, 1), face_mask
    )
    assert changed.item() == pytest.approx(loss.item(), rel=1e-5)
    assert_differentiable(lambda r: frequency_wing_loss(r, photo, face_mask), render)
    # At the optimum the gradient is 0, not NaN.
    same = photo.clone().requires_grad_(True)
    frequency_wing_loss(same, photo, face_mask).backward()
    assert torch.isfinite(same.grad).all()


def test_frequency_bands_separate_perturbations(photo, face_mask):
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    fine = 0.03 * torch.cos(np.pi * 0.8 * x) * torch.cos(np.pi * 0.7 * y)  # ~0.75 Nyquist radius
    coarse = 0.15 * torch.sin(2 * np.pi * x / 128)  # one period over the image
    high = frequency_band_losses(photo + fine, photo, face_mask)
    low = frequency_band_losses(photo + coarse, photo, face_mask)
    assert high[2] > 5 * high[0] and high[2] > 5 * high[1]
    assert low[0] > 5 * low[2]
    # Per-band normalisation: a slight blur, weak in absolute energy, shows up in the high band.
    blur = frequency_band_losses(torch.nn.functional.avg_pool2d(photo, 3, 1, 1), photo, face_mask)
    assert blur[2] > 10 * blur[0]
    # Band weights pick the terms.
    only_high = frequency_wing_loss(photo + fine, photo, face_mask, band_weights=(0.0, 0.0, 1.0))
    assert only_high.item() == pytest.approx(high[2].item(), rel=1e-5)


def test_photometric_loss(photo, face_mask):
    assert photometric_loss(photo, photo, face_mask).item() == pytest.approx(0.0, abs=1e-7)
    render = photo.flip(-1)
    for robust in (True, False):
        loss = photometric_loss(render, photo, face_mask, robust=robust)
        assert loss.item() > 0
        changed = photometric_loss(outside_changed(render, face_mask), photo, face_mask, robust=robust)
        assert changed.item() == pytest.approx(loss.item(), rel=1e-6)
        assert_differentiable(lambda r, robust=robust: photometric_loss(r, photo, face_mask, robust), render)
    # The robust norm grows linearly with a uniform error, the squared one quadratically.
    ratio = photometric_loss(photo + 0.2, photo, face_mask) / photometric_loss(photo + 0.1, photo, face_mask)
    assert ratio.item() == pytest.approx(2.0, rel=0.01)


def test_landmark_loss():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(68, 2, generator=gen) * 200 + 50
    assert landmark_loss(target, target, scale=200.0).item() == 0.0
    pred = target + torch.randn(68, 2, generator=gen)
    loss = landmark_loss(pred, target, scale=200.0)
    assert loss.item() > 0
    # Normalised by face size: the same face twice as large gives the same loss.
    assert landmark_loss(pred * 2, target * 2, scale=400.0).item() == pytest.approx(loss.item(), rel=1e-5)
    # Batched, with a per-image scale and per-landmark weights (zero weight ignores a landmark).
    weights = torch.ones(2, 68)
    weights[:, 0] = 0
    wild = pred.clone()
    wild[0] += 500
    batched = landmark_loss(torch.stack([pred, wild * 2]), torch.stack([target, target * 2]), weights,
                            scale=torch.tensor([200.0, 400.0]))
    assert batched.item() == pytest.approx(landmark_loss(pred, target, weights[0], 200.0).item(), rel=1e-5)
    # Robust: a gross outlier grows the loss linearly, not quadratically.
    far, farther = target.clone(), target.clone()
    far[0] += 100
    farther[0] += 200
    ratio = landmark_loss(farther, target, scale=200.0) / landmark_loss(far, target, scale=200.0)
    assert ratio.item() < 2.2
    assert_differentiable(lambda p: landmark_loss(p, target, scale=200.0), pred)


def test_symmetry_loss(face_mask):
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    symmetric = (torch.cos((x - 63.5) / 10) * torch.sin(y / 7))[None, None]
    assert symmetry_loss(symmetric, face_mask).item() == pytest.approx(0.0, abs=1e-10)
    lopsided = symmetric + 0.1 * (x / 128)[None, None]
    loss = symmetry_loss(lopsided, face_mask)
    assert loss.item() > 0
    changed = symmetry_loss(outside_changed(lopsided, face_mask), face_mask)
    assert changed.item() == pytest.approx(loss.item(), rel=1e-6)
    assert_differentiable(lambda m: symmetry_loss(m, face_mask), lopsided)


def test_magnitude_loss(face_mask):
    assert magnitude_loss(torch.zeros(1, 1, 128, 128), face_mask).item() == 0.0
    values = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(3))
    loss = magnitude_loss(values, face_mask)
    assert loss.item() > 0
    changed = magnitude_loss(outside_changed(values, face_mask), face_mask)
    assert changed.item() == pytest.approx(loss.item(), rel=1e-6)
    assert_differentiable(lambda m: magnitude_loss(m, face_mask), values)


def test_ict_face_uv_tile_is_mirror_symmetric(face_model):
    """symmetry_loss mirrors UV maps by a column flip: valid because the mirror (x -> -x) of every
    face vertex sits at uv (1 - u, v) in the ICT-FaceKit face tile."""
    polygons = face_model.polygons[:FACE_POLYGONS]
    polygon_uvs = face_model.polygon_uvs[:FACE_POLYGONS]
    used = polygons >= 0
    corners = np.unique(np.stack([polygons[used], polygon_uvs[used]], axis=1), axis=0)  # (vertex, uv) pairs
    ids = np.unique(corners[:, 0])
    positions = face_model.neutral[ids]
    dist, nearest = cKDTree(positions).query(positions * np.array([-1.0, 1.0, 1.0]))
    assert dist.max() < 1e-4  # the mesh itself is symmetric (metres)
    mirror = np.zeros(ids.max() + 1, np.int64)
    mirror[ids] = ids[nearest]
    uv = face_model.uvs[corners[:, 1]]
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    # Every corner's mirror vertex has a corner at (1 - u, v); seam vertices carry several uvs, so
    # search (vertex id, u, v) points with ids spread far apart.
    keys = np.column_stack([corners[:, 0] * 10.0, uv])
    queries = np.column_stack([mirror[corners[:, 0]] * 10.0, 1.0 - uv[:, 0], uv[:, 1]])
    error, _ = cKDTree(keys).query(queries)
    assert error.max() < 1e-4
