"""Profiles the dense landmark network rejects are still found and fitted (core.fitting.profile)."""

import numpy as np
import pytest
from conftest import AFLW, SHARED

from core.image_io import load_image
from core.pipeline import Pipeline, preset_settings

# AFLW2000-3D dev: yaw 75 deg; BlazeFace finds it, FaceMesh rejects it (a miss before core.fitting.profile).
PROFILE = "image01657.jpg"


def _nme(pred: np.ndarray, gt: np.ndarray) -> float:
    w, h = np.ptp(gt[:, 0]), np.ptp(gt[:, 1])
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(w * h) * 100)


@pytest.fixture(scope="module")
def profile():
    gt = np.load(AFLW / "ground_truth.npz")
    i = list(gt["names"]).index(PROFILE)
    return load_image(AFLW / "images" / PROFILE).rgb, gt["pts68"][i, :2].T, float(gt["yaw_deg"][i])


def test_missed_profile_is_found_and_fitted(pipeline, profile):
    rgb, gt, yaw = profile
    rec = pipeline.run(rgb, preset_settings("fast"))
    assert any("profile" in w for w in rec.warnings)
    fitted_yaw = rec.params.euler_degrees()[0]
    assert abs(abs(fitted_yaw) - abs(yaw)) < 15 and np.sign(fitted_yaw) == np.sign(yaw)
    assert _nme(rec.landmarks68_2d, gt) < 13  # percent; dense fits of such profiles score 9-16



def test_scrfd_proposes_what_blazeface_misses(face_model, monkeypatch):
    # image01591 (yaw 68 deg, a hand on the chin): no BlazeFace box at all; SCRFD, when installed, has one.
    gt = np.load(AFLW / "ground_truth.npz")
    i = list(gt["names"]).index("image01591.jpg")
    rgb = load_image(AFLW / "images" / "image01591.jpg").rgb
    monkeypatch.setenv("LIKENESS_INSIGHTFACE_MODEL",
                       str(SHARED / "insightface-scrfd" / "scrfd_2.5g_bnkps_shape320x320.onnx"))
    pipe = Pipeline(model=face_model)
    try:
        face = pipe.detect(rgb)
        assert face.backend == "insightface" and not face.is_dense
        fit, _ = pipe.fit_landmarks(face, rgb.shape[1], rgb.shape[0], preset_settings("fast").regression)
    finally:
        pipe.close()
    verts = face_model.vertices(fit.identity, fit.expression)
    assert _nme(fit.project(verts[face_model.landmarks68]), gt["pts68"][i, :2].T) < 13
