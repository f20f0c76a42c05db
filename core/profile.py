"""Faces the dense landmark network rejects: fit the model to BlazeFace's six keypoints.

MediaPipe's FaceMesh network is not trained on profiles: beyond ~70 deg of yaw its face-presence
score falls below any useful threshold and, forced, its landmarks are far off (AFLW2000-3D dev:
7 of 8 missed faces are such profiles; their forced meshes have NME 14-70%). BlazeFace still finds
most of them, with six keypoints (eyes, nose tip, mouth centre, ear tragions) that stay within
~2-15% of the face size. So when no face gets dense landmarks, the most confident BlazeFace
proposal is fitted rigidly (identity and expression held near the mean by strong priors) to those
keypoints, from several starting yaws, keeping the best. The result is coarse but it is a face
where there used to be none; the pipeline marks it with a warning and skips the photometric
refinement, whose skin mask needs the dense landmarks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .correspondence import IRIS_LEFT, IRIS_RIGHT, Correspondence
from .detection import FaceDetection
from .face_model import VERTEX_REGIONS, FaceModel
from .params import Camera, FaceParams
from .regression import LandmarkTarget, RegressionSettings, SurfacePoints, regress

# BlazeFace keypoints in order: subject's right eye, left eye, nose tip, mouth centre, right ear
# tragion, left ear tragion. The first four are MediaPipe landmarks with an ICT correspondence
# (iris centres, nose tip 4, upper-lip centre 13).
_KEYPOINT_MP = (IRIS_RIGHT, IRIS_LEFT, 4, 13)
# The tragion (front of the ear at about eye height) on the neutral ICT head, model space metres
# (x is the subject's left); the nearest face vertex stands for it.
_TRAGION_M = np.array([0.078, 0.02, 0.0])
# Ear keypoints are BlazeFace's least accurate and, on profiles, one of them is a guess.
_KEYPOINT_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 0.3, 0.3])
_EYES_TO_MOUTH_M = 0.072  # iris-centre midpoint to upper-lip centre on the neutral ICT face
_MIN_SCORE = 0.6  # BlazeFace score a proposal needs to be fitted without dense landmarks
_YAW_STARTS_DEG = (-70.0, 0.0, 70.0)
_PRIOR_WEIGHT = 5.0  # six points cannot carry identity or expression


def keypoint_surface_points(model: FaceModel, corr: Correspondence, num_identity: int) -> SurfacePoints:
    """The ICT points of BlazeFace's six keypoints, in keypoint order."""
    rows = corr.rows(_KEYPOINT_MP)
    start, stop = VERTEX_REGIONS["face"]
    face = model.neutral[start:stop]
    ears = [start + int(np.argmin(np.linalg.norm(face - _TRAGION_M * [side, 1, 1], axis=1)))
            for side in (-1, 1)]
    tri = np.concatenate([corr.tri_vertices[rows], np.repeat(np.array(ears)[:, None], 3, 1)])
    bary = np.concatenate([corr.bary[rows], np.tile([1.0, 0.0, 0.0], (2, 1))])
    return SurfacePoints(model, tri, bary, num_identity)


def profile_proposal(proposals: list[FaceDetection]) -> FaceDetection | None:
    """The most confident BlazeFace proposal good enough to fit from its keypoints, or None."""
    usable = [p for p in proposals
              if p.score >= _MIN_SCORE and p.landmarks.shape[0] == len(_KEYPOINT_WEIGHTS)]
    return max(usable, key=lambda p: p.score) if usable else None


def _initial(keypoints: np.ndarray, camera: Camera, yaw_deg: float) -> FaceParams:
    """Mean face at the depth where eyes-to-mouth spans as many pixels as in the photo."""
    eyes_to_mouth = max(float(np.linalg.norm(keypoints[:2].mean(0) - keypoints[3])), 1.0)
    depth = camera.focal * _EYES_TO_MOUTH_M / eyes_to_mouth
    centre = keypoints[:4].mean(0)
    t = np.array([*((centre - [camera.cx, camera.cy]) * depth / camera.focal), depth])
    return FaceParams(np.zeros(100), np.zeros(53), np.radians([0.0, yaw_deg, 0.0]), t, camera)


def fit_keypoints(points: SurfacePoints, detection: FaceDetection, camera: Camera,
                  settings: RegressionSettings) -> tuple[FaceParams, LandmarkTarget]:
    """Pose (and a little shape) from the six keypoints: the best of fits from several starting yaws."""
    box = detection.box
    face_size = float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
    target = LandmarkTarget(detection.landmarks.astype(np.float64), _KEYPOINT_WEIGHTS, face_size)
    strong = replace(settings, identity_weight=_PRIOR_WEIGHT, expression_weight=_PRIOR_WEIGHT)
    k = points.identity.shape[0]
    best, best_cost = None, np.inf
    for yaw in _YAW_STARTS_DEG:
        fit = regress(points, target, camera, _initial(target.points, camera, yaw), strong)
        model_pts = points(torch.as_tensor(fit.identity[:k]), torch.as_tensor(fit.expression)).numpy()
        cost = float((target.weights * ((fit.project(model_pts) - target.points) ** 2).sum(1)).sum())
        if cost < best_cost:
            best, best_cost = fit, cost
    return best, target
