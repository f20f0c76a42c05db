"""Landmark regression recovers known parameters of the real ICT-FaceKit model."""

import numpy as np
import pytest

from core.fitting.regression import (
    LandmarkTarget,
    RegressionSettings,
    SurfacePoints,
    initial_params,
    regress,
    regress_joint,
)
from core.geometry.params import Camera, FaceParams


@pytest.fixture(scope="module")
def dense_points(face_model):
    # A dense set of face-region surface points (vertex positions), like the MediaPipe correspondence.
    rng = np.random.default_rng(0)
    verts = rng.choice(9409, 500, replace=False)
    tri = np.stack([verts, verts, verts], 1)
    bary = np.tile([1.0, 0.0, 0.0], (500, 1))
    return SurfacePoints(face_model, tri, bary, 60), verts


@pytest.mark.parametrize("yaw_deg", [0.0, 35.0, -60.0])
def test_recovers_pose_and_shape(face_model, dense_points, yaw_deg):
    points, verts = dense_points
    rng = np.random.default_rng(1)
    camera = Camera.default_for(640, 480)
    truth = FaceParams(
        identity=np.concatenate([rng.normal(0, 1, 60), np.zeros(40)]),
        expression=np.clip(rng.normal(0, 0.15, 53), 0, 1),
        rotation=np.radians([5.0, yaw_deg, -4.0]),
        translation=np.array([0.02, -0.01, 0.9]),
        camera=camera,
    )
    mesh = face_model.vertices(truth.identity, truth.expression)
    target = LandmarkTarget(truth.project(mesh[verts]), np.ones(500), face_size=150.0)
    corners = (int(np.argmin(target.points[:, 0])), int(np.argmax(target.points[:, 0])))
    init = initial_params(target, corners, camera)
    fit = regress(points, target, camera, init, RegressionSettings())

    fitted = face_model.vertices(fit.identity, fit.expression)
    reproj = np.linalg.norm(fit.project(fitted[verts]) - target.points, axis=1)
    assert reproj.mean() < 0.5  # pixels, on a 150 px face
    yaw, pitch, roll = fit.euler_degrees()
    assert abs(yaw - truth.euler_degrees()[0]) < 3.0
    assert abs(roll - truth.euler_degrees()[2]) < 3.0
    # Depth is only weakly observed through perspective; the shape must still be close in 3D.
    shape_err = np.linalg.norm((fitted - fitted.mean(0)) - (mesh - mesh.mean(0)), axis=1)[:9409]
    assert np.median(shape_err) < 0.004  # metres
    assert np.all((fit.expression >= 0) & (fit.expression <= 1))


def test_a_profile_view_constrains_depth(face_model, dense_points):
    """Landmarks of a frontal photo leave depth a guess; the same face seen also at 70 degrees of
    yaw, fitted jointly with one identity, recovers its 3D shape better."""
    points, verts = dense_points
    rng = np.random.default_rng(2)
    camera = Camera.default_for(640, 480)
    identity = np.concatenate([rng.normal(0, 1.5, 60), np.zeros(40)])
    mesh = face_model.vertices(identity)
    targets, inits = [], []
    for yaw in (0.0, 70.0):
        pose = np.radians([0.0, yaw, 0.0])
        truth = FaceParams(identity, np.zeros(53), pose, np.array([0.0, 0.0, 0.9]), camera)
        projected = truth.project(mesh[verts]) + rng.normal(0, 1.0, (500, 2))  # 1 px landmark noise
        facing = truth.to_camera(face_model.vertices(identity))[verts][:, 2] < 0.9 + 0.03  # near side only
        target = LandmarkTarget(projected, facing.astype(float), face_size=150.0)
        corners = (int(np.argmin(projected[:, 0])), int(np.argmax(projected[:, 0])))
        targets.append(target)
        inits.append(regress(points, target, camera, initial_params(target, corners, camera)))

    def shape_error(fit: FaceParams) -> float:
        fitted = face_model.vertices(fit.identity)[:9409]
        truth = mesh[:9409]
        return float(np.median(np.linalg.norm((fitted - fitted.mean(0)) - (truth - truth.mean(0)), axis=1)))

    frontal_only = inits[0]
    joint = regress_joint([points, points], targets, inits)
    assert np.array_equal(joint[0].identity, joint[1].identity)
    assert abs(joint[1].euler_degrees()[0] - 70.0) < 3.0
    assert shape_error(joint[0]) < 0.8 * shape_error(frontal_only)
