"""Landmarks -> morphable-model parameters by damped Gauss-Newton with priors.

The 478 MediaPipe landmarks are 2D projections of a dense 3D face mesh, so each one has a fixed
surface point on the ICT face (core.correspondence). We solve for head pose, translation,
identity and ARKit expression weights so that those surface points project onto the landmarks,
with Gaussian priors on identity (coefficients are in standard deviations) and a small L2 pull
on expressions kept inside [0, 1] by projection. Jacobians on a
~500-point subset of the model are analytic, so a fit takes tens of milliseconds on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from .face_model import FaceModel
from .params import MODEL_TO_CAMERA, Camera, FaceParams, rotation_matrix

if TYPE_CHECKING:
    from .correspondence import Correspondence

# Typical distance between the outer eye corners of an adult head, for the initial depth.
EYE_CORNER_DISTANCE_M = 0.095


@dataclass
class RegressionSettings:
    num_identity: int = 60  # leading PCA modes to fit; the rest carry little signal from landmarks
    landmark_sigma: float = 0.012  # landmark noise as a fraction of face size
    identity_weight: float = 1.0  # prior strength in standard deviations
    expression_weight: float = 0.3
    iterations: int = 12
    fov_deg: float = 20.0


@dataclass
class LandmarkTarget:
    """2D targets of model surface points, in pixels."""

    points: np.ndarray  # (N, 2) pixels
    weights: np.ndarray  # (N,) >= 0
    face_size: float  # pixels, sets the scale of residuals


class SurfacePoints:
    """Model surface points (mesh points at fixed barycentric positions) as a linear model:
    points = base + identity @ B_id + expression @ B_exp."""

    def __init__(self, model: FaceModel, tri_vertices: np.ndarray, bary: np.ndarray, num_identity: int):
        def interp(arr: np.ndarray) -> np.ndarray:  # (..., V, 3) -> (..., N, 3)
            return (arr[..., tri_vertices, :] * bary[..., None]).sum(-2)

        self.base = torch.from_numpy(interp(model.neutral).astype(np.float64))
        self.identity = torch.from_numpy(interp(model.identity_basis[:num_identity]).astype(np.float64))
        self.expression = torch.from_numpy(interp(model.expression_basis).astype(np.float64))

    def __call__(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        return (self.base + torch.tensordot(identity, self.identity, 1)
                + torch.tensordot(expression, self.expression, 1))


def surface_points_for(model: FaceModel, corr: Correspondence, num_identity: int) -> SurfacePoints:
    return SurfacePoints(model, corr.tri_vertices, corr.bary, num_identity)


def initial_params(target: LandmarkTarget, corners: tuple[int, int], camera: Camera) -> FaceParams:
    """Frontal pose at the depth where the eye corners are as far apart as in the photo."""
    left, right = target.points[corners[0]], target.points[corners[1]]
    eye_px = max(float(np.linalg.norm(left - right)), 1.0)
    depth = camera.focal * EYE_CORNER_DISTANCE_M / eye_px
    centre = target.points[target.weights > 0].mean(0)
    t = np.array([(centre[0] - camera.cx) * depth / camera.focal,
                  (centre[1] - camera.cy) * depth / camera.focal, depth])
    return FaceParams(np.zeros(100), np.zeros(53), np.zeros(3), t, camera)


def _skew(v: np.ndarray) -> np.ndarray:
    """(N, 3) vectors -> (N, 3, 3) cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1),
                     np.stack([v[:, 2], z, -v[:, 0]], -1),
                     np.stack([-v[:, 1], v[:, 0], z], -1)], 1)


class _Problem:
    """Weighted reprojection residuals and their analytic Jacobian.

    The state is (H, t, c): head rotation H (camera axes), translation t and the stacked
    identity/expression coefficients c. Rotation steps are small left-multiplied rotations, so
    the Jacobian w.r.t. a step delta at X = H M P + t is -[H M P]x.
    """

    def __init__(self, points: SurfacePoints, target: LandmarkTarget, camera: Camera,
                 settings: RegressionSettings):
        self.camera, self.settings = camera, settings
        self.k = points.identity.shape[0]
        self.base = points.base.numpy()
        self.basis = np.concatenate([points.identity.numpy(), points.expression.numpy()]).transpose(1, 2, 0)
        self.target = target.points
        self.scale = np.sqrt(target.weights) / (settings.landmark_sigma * target.face_size)
        self.prior = np.concatenate([np.full(self.k, settings.identity_weight),
                                     np.full(self.basis.shape[2] - self.k, settings.expression_weight)])

    def evaluate(self, H: np.ndarray, t: np.ndarray, c: np.ndarray, rigid: bool, jacobian: bool = True):
        R = H @ MODEL_TO_CAMERA
        model_pts = self.base + self.basis @ c
        rotated = model_pts @ R.T
        X = rotated + t
        f, z = self.camera.focal, X[:, 2]
        uv = f * X[:, :2] / z[:, None] + [self.camera.cx, self.camera.cy]
        r = ((uv - self.target) * self.scale[:, None]).reshape(-1)
        if not rigid:
            r = np.concatenate([r, self.prior * c])
        if not jacobian:
            return r, None
        # d(uv)/dX: f/z [[1, 0, -x/z], [0, 1, -y/z]], scaled per point
        dpi = np.zeros((len(X), 2, 3))
        dpi[:, 0, 0] = dpi[:, 1, 1] = f / z
        dpi[:, :, 2] = -f * X[:, :2] / z[:, None] ** 2
        dpi *= self.scale[:, None, None]
        blocks = [dpi @ -_skew(rotated), dpi]
        if not rigid:
            blocks.append(dpi @ (R @ self.basis))
        J = np.concatenate(blocks, axis=2).reshape(len(X) * 2, -1)
        if not rigid:
            J = np.concatenate([J, np.hstack([np.zeros((len(c), 6)), np.diag(self.prior)])])
        return r, J


def _gauss_newton(problem: _Problem, H: np.ndarray, t: np.ndarray, c: np.ndarray, iterations: int,
                  rigid: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt; in the rigid phase only rotation and translation move."""
    lam = 1e-3
    r, J = problem.evaluate(H, t, c, rigid)
    cost = float(r @ r)
    for _ in range(iterations):
        JtJ, Jtr = J.T @ J, J.T @ r
        for _ in range(8):  # raise damping until the step lowers the cost
            step = np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-9), -Jtr)
            H_new = rotation_matrix(step[:3]) @ H
            t_new = t + step[3:6]
            c_new = c if rigid else c + step[6:]
            if not rigid:
                c_new[problem.k:] = np.clip(c_new[problem.k:], 0.0, 1.0)
            r_new, _ = problem.evaluate(H_new, t_new, c_new, rigid, jacobian=False)
            new_cost = float(r_new @ r_new)
            if new_cost < cost:
                improvement = (cost - new_cost) / cost
                H, t, c, cost, lam = H_new, t_new, c_new, new_cost, max(lam / 3, 1e-7)
                break
            lam *= 4
        else:
            break  # no step helps: converged
        if improvement < 1e-6:
            break
        r, J = problem.evaluate(H, t, c, rigid)
    return H, t, c


def regress(points: SurfacePoints, target: LandmarkTarget, camera: Camera, init: FaceParams,
            settings: RegressionSettings | None = None) -> FaceParams:
    """Fit pose, translation, identity and expression to the landmark targets."""
    settings = settings or RegressionSettings()
    problem = _Problem(points, target, camera, settings)
    k = problem.k
    H, t = rotation_matrix(init.rotation), init.translation.astype(np.float64)
    c = np.concatenate([init.identity[:k], init.expression]).astype(np.float64)
    H, t, c = _gauss_newton(problem, H, t, c, 10, rigid=True)
    H, t, c = _gauss_newton(problem, H, t, c, settings.iterations, rigid=False)
    identity = np.zeros(100)
    identity[:k] = c[:k]
    rotation = Rotation.from_matrix(H).as_rotvec()
    return FaceParams(identity, c[k:].copy(), rotation, t, camera, init.sh.copy())
