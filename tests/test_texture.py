"""UV unwrapping, symmetry completion and hole filling of the skin atlas."""

import numpy as np

from core.texture import mirror_atlas, push_pull_fill, uv_surface


def test_push_pull_keeps_known_and_fills_smoothly():
    rng = np.random.default_rng(0)
    values = np.zeros((64, 128, 3), np.float32)
    weights = np.zeros((64, 128), np.float32)
    values[:, :40] = [0.8, 0.5, 0.4]
    weights[:, :40] = 1
    values[:, 100:] = [0.2, 0.3, 0.4]
    weights[:, 100:] = 1
    weights[rng.random(weights.shape) < 0.05] = 0  # scattered holes inside the known parts too
    filled = push_pull_fill(values * weights[..., None], weights)
    known = weights > 0
    assert np.allclose(filled[known], values[known], atol=1e-5)
    gap = filled[:, 40:100]
    assert np.all(np.isfinite(gap)) and gap.min() >= 0.19 and gap.max() <= 0.81
    # The fill runs from one side's colour to the other's.
    assert filled[32, 42, 0] > filled[32, 70, 0] > filled[32, 98, 0]


def test_uv_surface_covers_face_and_mirrors(face_model):
    surface = uv_surface(face_model, 128)
    covered = surface.face_id >= 0
    assert covered[:, :128].mean() > 0.85  # the face island fills most of its tile
    assert covered[:, 128:].mean() > 0.3
    # The ICT face is left/right symmetric in 3D and in UV: mirrored texels hold mirrored points.
    pos = surface.interpolate(face_model.neutral.astype(np.float64))
    mirrored = mirror_atlas(pos)
    both = covered & mirror_atlas(covered)
    tile = both.copy()
    tile[:, 128:] = False
    err = np.abs(pos[tile][:, 0] + mirrored[tile][:, 0])
    assert np.median(err) < 1e-3  # metres
    assert np.allclose(surface.bary[covered].sum(-1), 1, atol=1e-6)
