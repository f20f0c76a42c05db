"""core.displacement.fold_directions: the fold direction field on the ICT face tile (anatomy at a few
places, mirror symmetry) and the curvature prior it weights (folds along it cheap, blobs not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.displacement import detail as D
from core.displacement.fold_directions import (
    AlongFoldFilter,
    FoldCurvaturePrior,
    FoldField,
    bulge_support,
    fold_field,
)

SIZE = 128


@pytest.fixture(scope="module")
def landmarks_uv(face_model):
    return D.dense_face_mesh(face_model, 0, 0.04).tile_uvs[face_model.landmarks68]


@pytest.fixture(scope="module")
def tile(face_model, landmarks_uv):
    face_id, uv = D.face_tile(face_model, SIZE)
    return face_id >= 0, uv, fold_field(landmarks_uv, uv)


def axis_angle_deg(along: np.ndarray, expected: np.ndarray) -> float:
    """Angle between two axes (directions up to sign)."""
    cos = abs(float(along @ expected)) / np.linalg.norm(expected)
    return float(np.degrees(np.arccos(min(cos, 1.0))))


def test_folds_run_where_anatomy_says(landmarks_uv):
    lm = landmarks_uv
    eye_distance = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    brow_top = lm[17:27, 1].max()
    outer_eye = lm[36]
    points = {
        "forehead": (np.array([0.5 - 0.3 * eye_distance, brow_top + 0.25 * eye_distance]), [1, 0]),
        "glabella": (lm[[21, 22]].mean(0) + [0, 0.05 * eye_distance], [0, 1]),
        "crow's feet": (outer_eye + [-0.2 * eye_distance, 0.1 * eye_distance], [-2, 1]),
        "lower lid": (lm[36:42].mean(0) - [0, 0.2 * eye_distance], [1, 0]),
        "nasolabial": (0.5 * (lm[31] + lm[48]) - [0.08 * eye_distance, 0],
                       lm[48] - lm[31] - [0, 0.25 * eye_distance]),
        "upper lip": (lm[51] + [0, 0.1 * eye_distance], [0, 1]),
    }
    field = fold_field(lm, np.array([p for p, _ in points.values()]))
    for i, (name, (_, expected)) in enumerate(points.items()):
        assert axis_angle_deg(field.along[i], np.array(expected, float)) < 15, name
        assert field.anisotropy[i] > 0.5, name
    cheek = fold_field(lm, (0.5 * (lm[2] + lm[31]))[None])  # mid-cheek, chin: no preferred direction
    chin = fold_field(lm, (0.5 * (lm[8] + lm[57]))[None])
    assert cheek.anisotropy[0] < 0.2 and chin.anisotropy[0] < 0.3


def test_field_is_mirror_symmetric(tile):
    # The ICT face tile is left/right symmetric (u -> 1 - u: tests/test_losses.py), so the field must be.
    island, _, field = tile
    both = island & island[:, ::-1]
    mirrored = field.along[:, ::-1] * [-1, 1]
    cos = np.abs((field.along * mirrored).sum(-1))
    weight = field.anisotropy * field.anisotropy[:, ::-1]
    assert np.average(cos[both], weights=weight[both]) > 0.99
    np.testing.assert_allclose(field.anisotropy[both], field.anisotropy[:, ::-1][both], atol=0.05)
    assert 0.2 < field.anisotropy[island].mean() < 0.7  # directions in places, not everywhere


def groove(direction: np.ndarray, centre: np.ndarray, uv: np.ndarray, width: float = 0.012,
           length: float = 0.05) -> torch.Tensor:
    """A narrow (3 mm), long Gaussian groove (1 mm deep) at ``centre`` along ``direction`` (tile uv)."""
    d = direction / np.linalg.norm(direction)
    offset = uv - centre
    along, across = offset @ d, offset @ np.array([-d[1], d[0]])
    depth = -np.exp(-0.5 * (across / width) ** 2 - 0.5 * (along / length) ** 2)
    return torch.from_numpy(depth.astype(np.float32))[None, None]


def test_prior_makes_folds_along_the_field_cheap(tile, landmarks_uv):
    island, uv, field = tile
    mask = torch.from_numpy(island.astype(np.float32))[None, None]
    centre = np.array([0.5 - 0.15, landmarks_uv[17:27, 1].max() + 0.08])  # forehead: folds run horizontally
    horizontal, vertical = groove(np.array([1.0, 0]), centre, uv), groove(np.array([0, 1.0]), centre, uv)
    blob = groove(np.array([1.0, 0]), centre, uv, width=0.03, length=0.03)
    folded = FoldCurvaturePrior(field, mask, across_ratio=0.03)
    isotropic = FoldCurvaturePrior(field, mask, across_ratio=1.0)
    # Isotropic: the thin-plate energy does not care about the direction.
    assert float(isotropic(horizontal)) == pytest.approx(float(isotropic(vertical)), rel=0.05)
    assert float(folded(horizontal)) < 0.15 * float(isotropic(horizontal))
    assert float(folded(vertical)) > 0.8 * float(isotropic(vertical))
    # A round blob is curved along the field too: it keeps the along part of its cost (3/8 of it).
    assert float(folded(blob)) > 0.35 * float(isotropic(blob))
    values = horizontal.clone().requires_grad_(True)
    folded(values).backward()
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0


def test_prior_ignores_planes_and_what_lies_outside_the_mask(tile):
    island, uv, field = tile
    mask = torch.from_numpy(island.astype(np.float32))[None, None]
    prior = FoldCurvaturePrior(field, mask, across_ratio=0.06)
    plane = torch.from_numpy((0.3 * uv[..., 0] - 0.2 * uv[..., 1] + 0.1).astype(np.float32))[None, None]
    assert float(prior(plane)) == pytest.approx(0.0, abs=1e-9)
    bumpy = plane + 0.01 * torch.sin(torch.arange(float(SIZE)) / 2)[None, None, None]
    outside = torch.where(mask > 0, bumpy, torch.full_like(bumpy, 5.0))
    assert float(prior(bumpy)) > 0
    assert float(prior(outside)) == pytest.approx(float(prior(bumpy)), rel=1e-6)



def test_along_fold_filter_keeps_folds_and_shrinks_blobs():
    # Pixels map to uv by a shear, so a direction in uv is another one in the image: the filter must
    # carry the field through the uv Jacobian. Folds run along v where v > 0.5 (the image's top half).
    size, grid = 64, 128
    y, x = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    uv = torch.tensor(np.stack([(x + 0.5 * y) / (2 * size), 0.75 - y / (2 * size)], -1), dtype=torch.float32)
    tile_v = 1 - (np.arange(grid) + 0.5) / grid
    directed = np.broadcast_to((tile_v > 0.5)[:, None], (grid, grid)).astype(float)
    field = FoldField(np.broadcast_to(np.array([0.0, 1.0]), (grid, grid, 2)).copy(), directed)
    filt = AlongFoldFilter(field, uv, torch.ones(size, size, dtype=torch.bool), 3.0,
                           torch.ones(1, 1, size, size))
    fold = torch.tensor(np.cos(2 * np.pi * (x + 0.5 * y) / 8), dtype=torch.float32)[None, None]  # u only
    kept = filt(fold)
    inner = (slice(12, 26), slice(12, 52))
    assert torch.allclose(kept[0, 0][inner], fold[0, 0][inner], atol=0.05)
    blob = torch.zeros(1, 1, size, size)
    blob[..., 16:19, 30:33] = 1.0
    assert filt(blob).max() < 0.5
    below = blob.roll(32, -2)  # the undirected half: left as it is
    assert torch.allclose(filt(below), below, atol=1e-4)


def test_bulge_support_is_below_the_eyes_only(landmarks_uv):
    lm = landmarks_uv
    eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
    d = np.linalg.norm(eyes[1] - eyes[0])
    below = np.array([eye - [0, 0.2 * d] for eye in eyes])
    forehead = np.array([0.5, lm[17:27, 1].max() + 0.1 * d])
    nasolabial = lm[31] + [-0.1 * d, -0.2 * d]
    support = bulge_support(lm, np.array([*below, forehead, nasolabial]))
    assert support[:2].min() > 0.9 and support[2:].max() < 0.05
