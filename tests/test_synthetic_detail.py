"""The synthetic detail set (scripts/make_synthetic_faces.py): one small head rendered by Cycles,
its ground truth, and the benchmark's measures on it (benchmarks/synthetic_detail.py)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

pytest.importorskip("bpy")

import make_synthetic_faces as M  # noqa: E402
import synthetic_detail as S  # noqa: E402


@pytest.fixture(scope="module")
def case(face_model, tmp_path_factory):
    return M.make_case(M.CASES[1], face_model, tmp_path_factory.mktemp("synthetic"), size=128, samples=4)


def test_a_rendered_head_with_its_truth(case):
    photo = np.asarray(Image.open(case / "photo.png").convert("RGB"))
    assert photo.shape == (128, 128, 3)
    centre, corner = photo[48:80, 48:80].mean(), photo[:8, :8].mean()
    assert abs(centre - corner) > 10  # a head in front of the background
    truth = S.load_truth(case)
    disp = truth.displacement_mm
    assert disp.shape == truth.island.shape == (M.TRUTH_SIZE, M.TRUTH_SIZE)
    assert -1.6 < disp.min() < -0.3 and 0.1 < disp.max() < 1.6  # grooves and bulges, 0.1-1.5 mm
    assert np.all(disp[~truth.island] == 0)
    assert truth.folds.sum() > 1000 and truth.marks.sum() > 200 and not (truth.folds & truth.marks).any()
    assert truth.albedo.shape == (M.ALBEDO_SIZE, 2 * M.ALBEDO_SIZE, 3)
    assert truth.params.camera.width == 128 and truth.params.camera.focal > 0


def test_measures_score_the_truth_perfectly_and_zero_as_nothing(case, face_model):
    truth = S.load_truth(case)
    n = truth.displacement_mm.shape[0]
    rec = SimpleNamespace(model=face_model, vertices=face_model.vertices(truth.params.identity,
                                                                        truth.params.expression))
    metres = S.texel_metres(rec, n)
    region = truth.island
    perfect = S.measure(truth.displacement_mm, truth, region, metres)
    assert perfect["rmse_mm"] < 1e-9 and perfect["corr"] > 0.999 and perfect["normal_deg"] < 0.5
    assert perfect["false_marks"] < 0.1  # the marks lie away from the folds
    zero = S.measure(np.zeros((n, n)), truth, region, metres)
    assert zero["corr"] == 0 and zero["false_flat"] == 0 and zero["rmse_mm"] > 0.03
    bumps = S.measure(np.where(truth.marks, 1.0, 0.0), truth, region, metres)  # marks turned into bumps
    assert bumps["false_marks"] > 1.0


def test_the_truth_is_the_sum_of_its_features(face_model):
    parts = {}
    disp, _ = M.displacement_truth(M.CASES[2], M.landmark_uvs(face_model), 128, parts)
    assert set(parts) == set(M.FEATURES) and all(np.abs(p).max() > 0.2 for p in parts.values())
    np.testing.assert_allclose(sum(parts.values()), disp, atol=1e-5)
    one_sided = M.HELDOUT_CASES[2]
    assert one_sided.fold_asymmetry == 1.0
    disp, _ = M.displacement_truth(one_sided, M.landmark_uvs(face_model), 128)
    u = (np.arange(128) + 0.5) / 128
    assert np.abs(disp[:, u < 0.4]).max() < 0.01 < 0.3 < np.abs(disp[:, u > 0.6]).max()


def test_variants_leave_parts_out(case, face_model, tmp_path):
    """--off: the albedo without marks differs from the full one only at the marks (same marks
    mask); a render without displacement, marks, shadows and specular is still the same head."""
    model_lm = M.landmark_uvs(face_model)
    disp, fold_dist = M.displacement_truth(M.CASES[1], model_lm, M.TRUTH_SIZE)
    full, _, marks, _ = M.albedo_maps(M.CASES[1], model_lm, fold_dist)
    plain, _, same_marks, _ = M.albedo_maps(M.CASES[1], model_lm, fold_dist, with_marks=False)
    assert np.array_equal(marks, same_marks)
    changed = np.abs(full - plain).max(-1) > 0.01
    assert changed[:, :M.ALBEDO_SIZE][marks].mean() > 0.3 and not changed[:, M.ALBEDO_SIZE:].any()
    off = frozenset({"displacement", "marks", "shadows", "specular"})
    variant = M.make_case(M.CASES[1], face_model, tmp_path, size=128, samples=4, off=off)
    photo = np.asarray(Image.open(variant / "photo.png").convert("RGB")).astype(float)
    reference = np.asarray(Image.open(case / "photo.png").convert("RGB")).astype(float)
    difference = np.abs(photo - reference).mean(-1)
    assert 0.5 < difference.mean() < 20  # the same head, without its parts


def test_the_truth_carried_to_a_misregistered_fit(case, face_model):
    """Carried through the true head itself, the truth is the truth; through a head moved 3 mm
    sideways in the photo, the texels show other points of the true face, so the carried truth no
    longer correlates with the truth, and a map equal to the carried truth scores 1 "on fit"."""
    from core.reconstruction import Reconstruction

    truth = S.load_truth(case)
    params = truth.params
    vertices = face_model.vertices(params.identity, params.expression).astype(np.float32)
    corners = params.project(vertices[face_model.landmarks68])
    rec = Reconstruction(
        image=np.asarray(Image.open(case / "photo.png").convert("RGB")), model=face_model, params=params,
        coarse_params=params, vertices=vertices, identity_vertices=vertices,
        albedo=np.zeros((64, 128, 3), np.uint8), albedo_visibility=np.ones((64, 128), np.float32),
        landmarks68_2d=corners, face_box=np.concatenate([corners.min(0), corners.max(0)]))
    mesh = S.D.dense_face_mesh(face_model, 1, 0.04)
    n = truth.displacement_mm.shape[0]
    region = truth.island & (truth.displacement_mm != 0)
    same = S.carried_truth(rec, truth, mesh)
    defined = region & np.isfinite(same)
    assert defined.sum() > 0.5 * region.sum()
    assert np.corrcoef(same[defined], truth.displacement_mm[defined])[0, 1] > 0.95
    moved = params.copy()
    moved.translation = params.translation + np.array([0.003, 0.0, 0.0])
    shifted = S.carried_truth(S.replace(rec, params=moved), truth, mesh)
    defined = region & np.isfinite(shifted)
    assert np.corrcoef(shifted[defined], truth.displacement_mm[defined])[0, 1] < 0.6
    metres = S.texel_metres(rec, n)
    scores = S.measure(np.nan_to_num(shifted), truth, truth.island, metres, shifted)
    assert scores["corr_fit"] > 0.99 and scores["corr"] < 0.6
