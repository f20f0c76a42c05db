"""Faces the dense landmark network rejects: fit the model to a face detector's keypoints.

MediaPipe's FaceMesh network is not trained on profiles: beyond ~70 deg of yaw its face-presence
score falls below any useful threshold and, forced, its landmarks are far off (AFLW2000-3D dev:
7 of 8 missed faces are such profiles; their forced meshes have NME 14-70%). BlazeFace still finds
most of them, with six keypoints (eyes, nose tip, mouth centre, ear tragions) that stay within
~2-15% of the face size. So when no face gets dense landmarks, the most confident keypoint
proposal is fitted rigidly (identity and expression held near the mean by strong priors) to those
keypoints, from several starting yaws, keeping the best. An InsightFace SCRFD model, when one is
installed (research-only licence, core.fitting.detection.default_insightface_model), proposes it with
five keypoints: those fit profiles better (AFLW2000-3D dev, the 7 profiles both detectors find:
NME 8.4 against 13.1) and find faces BlazeFace does not (a hand over a profile's chin,
image01591). Without SCRFD, BlazeFace's proposal is fitted. The result is coarse but it is a face
where there used to be none; the pipeline marks it with a warning and skips the photometric
refinement, whose skin mask needs the dense landmarks.

Faces FaceMesh does accept can be turned further than its landmarks say: beyond ~60 deg of yaw
they saturate (AFLW2000-3D dev: dense fits at 41-61 deg for 60-81 deg heads, 17.8 deg short on
average, and MediaPipe's own 3D landmarks give the same pose), while a fit to SCRFD's five
keypoints is 7.3 deg off there. So when SCRFD is installed and its keypoints of the same face put
it beyond ``TURNED_YAW_DEG``, that keypoint fit replaces the dense one (``fit_turned``). Nearer
frontal the dense fit stays: on 30-60 deg faces its yaw is as good (4.5 vs 4.2 deg off) and its
landmarks better (NME 7.65 vs 7.90). Refinement then keeps such a face's geometry and fits only its
light and albedo (``LandmarkTarget.keypoints_only``, core.fitting.refinement).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..geometry.correspondence import IRIS_LEFT, IRIS_RIGHT, Correspondence
from ..geometry.face_model import VERTEX_REGIONS, FaceModel
from ..geometry.params import Camera, FaceParams
from .detection import FaceDetection
from .regression import LandmarkTarget, RegressionSettings, SurfacePoints, regress


@dataclass(frozen=True)
class KeypointLayout:
    """A detector's keypoints: the MediaPipe landmarks (with an ICT correspondence) they stand for,
    in order, then, with ``ears``, the two ear tragions; fitting weights; which keypoints average to
    the mouth centre."""

    mp: tuple[int, ...]
    ears: bool
    weights: tuple[float, ...]
    mouth: tuple[int, ...]


# BlazeFace: subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion (iris
# centres, nose tip 4, upper-lip centre 13). Its ear keypoints are the least accurate and, on
# profiles, one of them is a guess.
BLAZEFACE = KeypointLayout((IRIS_RIGHT, IRIS_LEFT, 4, 13), True, (1.0, 1.0, 1.0, 1.0, 0.3, 0.3), (3,))
# SCRFD: image-left eye, other eye, nose tip, image-left and other mouth corner (61, 291).
SCRFD = KeypointLayout((IRIS_RIGHT, IRIS_LEFT, 4, 61, 291), False, (1.0,) * 5, (3, 4))
LAYOUTS = {"blazeface": BLAZEFACE, "insightface": SCRFD}

# The tragion (front of the ear at about eye height) on the neutral ICT head, model space metres
# (x is the subject's left); the nearest face vertex stands for it.
_TRAGION_M = np.array([0.078, 0.02, 0.0])
_EYES_TO_MOUTH_M = 0.072  # iris-centre midpoint to mouth on the neutral ICT face
_MIN_SCORE = 0.6  # detector score a box needs to be fitted without dense landmarks
_YAW_STARTS_DEG = (-70.0, 0.0, 70.0)
# A dense face whose keypoint fit is turned further than this is fitted from its keypoints.
# AFLW2000-3D dev ((60, 90] bin, regression NME): 55 / 60 / 65 / 70 deg: 8.22 / 8.35 / 8.36 / 8.80
# against 11.72 for the dense fits; no face of the [0, 30] bin passes 55 deg.
TURNED_YAW_DEG = 60.0
# A keypoint detector's box of the same face: SCRFD's boxes are ~1.2 times the dense landmarks' box,
# whose IoU with them is then ~0.5-0.7.
KEYPOINTS_IOU = 0.3
_PRIOR_WEIGHT = 5.0  # a handful of points cannot carry identity or expression


def keypoint_surface_points(model: FaceModel, corr: Correspondence, num_identity: int,
                            layout: KeypointLayout) -> SurfacePoints:
    """The ICT points of a detector's keypoints, in keypoint order."""
    rows = corr.rows(layout.mp)
    tri, bary = corr.tri_vertices[rows], corr.bary[rows]
    if layout.ears:
        start, stop = VERTEX_REGIONS["face"]
        face = model.neutral[start:stop]
        ears = [start + int(np.argmin(np.linalg.norm(face - _TRAGION_M * [side, 1, 1], axis=1)))
                for side in (-1, 1)]
        tri = np.concatenate([tri, np.repeat(np.array(ears)[:, None], 3, 1)])
        bary = np.concatenate([bary, np.tile([1.0, 0.0, 0.0], (2, 1))])
    return SurfacePoints(model, tri, bary, num_identity)


def profile_proposal(proposals: list[FaceDetection]) -> FaceDetection | None:
    """The most confident keypoint proposal (BlazeFace or SCRFD) good enough to fit, or None."""
    usable = [p for p in proposals if p.score >= _MIN_SCORE and p.backend in LAYOUTS
              and p.landmarks.shape[0] == len(LAYOUTS[p.backend].weights)]
    return max(usable, key=lambda p: p.score) if usable else None


def _initial(keypoints: np.ndarray, layout: KeypointLayout, camera: Camera, yaw_deg: float) -> FaceParams:
    """Mean face at the depth where eyes-to-mouth spans as many pixels as in the photo."""
    mouth = keypoints[list(layout.mouth)].mean(0)
    eyes_to_mouth = max(float(np.linalg.norm(keypoints[:2].mean(0) - mouth)), 1.0)
    depth = camera.focal * _EYES_TO_MOUTH_M / eyes_to_mouth
    centre = (keypoints[:3].sum(0) + mouth) / 4
    t = np.array([*((centre - [camera.cx, camera.cy]) * depth / camera.focal), depth])
    return FaceParams(np.zeros(100), np.zeros(53), np.radians([0.0, yaw_deg, 0.0]), t, camera)


def fit_keypoints(points: SurfacePoints, detection: FaceDetection, camera: Camera,
                  settings: RegressionSettings) -> tuple[FaceParams, LandmarkTarget]:
    """Pose (and a little shape) from the keypoints of ``detection`` (``points``: their ICT points):
    the best of fits from several starting yaws."""
    layout = LAYOUTS[detection.backend]
    box = detection.box
    face_size = float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
    target = LandmarkTarget(detection.landmarks.astype(np.float64), np.array(layout.weights), face_size,
                            expression_weight=_PRIOR_WEIGHT)
    strong = replace(settings, identity_weight=_PRIOR_WEIGHT)
    k = points.identity.shape[0]
    best, best_cost = None, np.inf
    for yaw in _YAW_STARTS_DEG:
        fit = regress(points, target, camera, _initial(target.points, layout, camera, yaw), strong)
        model_pts = points(torch.as_tensor(fit.identity[:k]), torch.as_tensor(fit.expression)).numpy()
        cost = float((target.weights * ((fit.project(model_pts) - target.points) ** 2).sum(1)).sum())
        if cost < best_cost:
            best, best_cost = fit, cost
    return best, target


def fit_turned(points: SurfacePoints, dense: LandmarkTarget, detection: FaceDetection, corr: Correspondence,
               camera: Camera, settings: RegressionSettings) -> tuple[FaceParams, LandmarkTarget] | None:
    """For a dense ``detection`` whose ``keypoints`` (``points``: their ICT points) put the head beyond
    ``TURNED_YAW_DEG``: the keypoint fit, and ``dense`` (the target of the mesh landmarks, rows of
    ``corr``) reweighted to hold only the keypoints, for the stages that follow (refinement's landmark
    term). None when the face is nearer frontal or has no keypoints."""
    if detection.keypoints is None:
        return None
    fit, target = fit_keypoints(points, detection.keypoints, camera, settings)
    if abs(fit.euler_degrees()[0]) <= TURNED_YAW_DEG:
        return None
    rows = corr.rows(LAYOUTS[detection.keypoints.backend].mp)
    pts, weights = dense.points.copy(), np.zeros_like(dense.weights)
    # The keypoints carry the dense landmarks' total weight: refinement averages its landmark term
    # over all rows, and diluted it lets the photometric term turn the head back (AFLW2000-3D dev,
    # the 19 such faces: NME 11.20 coarse, refined 11.55 unscaled, 11.35 scaled).
    kept = target.weights[:len(rows)]
    gain = dense.weights.sum() / kept.sum()
    pts[rows], weights[rows] = target.points[:len(rows)], kept * gain
    # the expression prior grows with the residuals' scale (sqrt of the weights): the balance of the
    # keypoint fit is kept in a several-photo fit
    return fit, LandmarkTarget(pts, weights, target.face_size, _PRIOR_WEIGHT * float(np.sqrt(gain)))
