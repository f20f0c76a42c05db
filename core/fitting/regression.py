"""Landmarks -> morphable-model parameters by damped Gauss-Newton with priors.

The 478 MediaPipe landmarks are 2D projections of a dense 3D face mesh, so each one has a fixed
surface point on the ICT face (core.geometry.correspondence). We solve for head pose, translation,
identity and ARKit expression weights so that those surface points project onto the landmarks,
with Gaussian priors on identity (coefficients are in standard deviations) and a small L2 pull
on expressions kept inside [0, 1] by projection. Jacobians on a
~500-point subset of the model are analytic, so a fit takes tens of milliseconds on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..geometry.face_model import FaceModel
from ..geometry.params import MODEL_TO_CAMERA, Camera, FaceParams, rotation_matrix

if TYPE_CHECKING:
    from ..geometry.correspondence import Correspondence

# Typical distance between the outer eye corners of an adult head, for the initial depth.
EYE_CORNER_DISTANCE_M = 0.095
# A detector's keypoints (SCRFD 5, BlazeFace 6) against the dense mesh's ~470 landmarks.
MAX_KEYPOINTS = 6


@dataclass
class RegressionSettings:
    num_identity: int = 60  # leading PCA modes to fit; the rest carry little signal from landmarks
    landmark_sigma: float = 0.012  # landmark noise as a fraction of face size
    identity_weight: float = 1.0  # prior strength in standard deviations
    # Against ~470 landmarks a weak expression prior lets weakly observed blendshapes soak up the
    # landmarks' systematic misfit: at 0.3 every fit of 12 neutral deepface photos held eyeWide at 1
    # (with eyeBlink against it) and synthetic ICT heads of known expression came out with raised
    # brows and wide eyes (L1 error of the 53 weights 11.5 -> 6.8 at 3). AFLW2000-3D: 4.86 either way.
    expression_weight: float = 3.0
    iterations: int = 12
    fov_deg: float = 20.0


@dataclass
class LandmarkTarget:
    """2D targets of model surface points, in pixels."""

    points: np.ndarray  # (N, 2) pixels
    weights: np.ndarray  # (N,) >= 0
    face_size: float  # pixels, sets the scale of residuals
    # this photo's expression prior in place of the settings' (a few keypoints need a strong one, also
    # in a several-photo fit, where the settings' weak prior let them bend the expression to its limits)
    expression_weight: float | None = None

    @property
    def keypoints_only(self) -> bool:
        """Only a detector's few keypoints carry weight (a turned face: core.fitting.profile.fit_turned)."""
        return np.count_nonzero(self.weights) <= MAX_KEYPOINTS


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
    """Weighted reprojection residuals of one photo and their analytic Jacobian.

    The state of a photo is (H, t, e): head rotation H (camera axes), translation t and its
    expression weights e; the identity coefficients may be shared with other photos. Rotation
    steps are small left-multiplied rotations, so the Jacobian w.r.t. a step delta at
    X = H M P + t is -[H M P]x.
    """

    def __init__(self, points: SurfacePoints, target: LandmarkTarget, camera: Camera,
                 settings: RegressionSettings):
        self.camera, self.settings = camera, settings
        self.k = points.identity.shape[0]
        self.base = points.base.numpy()
        self.basis = np.concatenate([points.identity.numpy(), points.expression.numpy()]).transpose(1, 2, 0)
        self.target = target.points
        self.scale = np.sqrt(target.weights) / (settings.landmark_sigma * target.face_size)
        self.expression_weight = (settings.expression_weight if target.expression_weight is None
                                  else target.expression_weight)

    def evaluate(self, H: np.ndarray, t: np.ndarray, c: np.ndarray, jacobian: bool = True):
        """Landmark residuals (2N,) and, with ``jacobian``, their derivative by
        (rotation step, t, c): (2N, 6 + len(c))."""
        R = H @ MODEL_TO_CAMERA
        model_pts = self.base + self.basis @ c
        rotated = model_pts @ R.T
        X = rotated + t
        f, z = self.camera.focal, X[:, 2]
        uv = f * X[:, :2] / z[:, None] + [self.camera.cx, self.camera.cy]
        r = ((uv - self.target) * self.scale[:, None]).reshape(-1)
        if not jacobian:
            return r, None
        # d(uv)/dX: f/z [[1, 0, -x/z], [0, 1, -y/z]], scaled per point
        dpi = np.zeros((len(X), 2, 3))
        dpi[:, 0, 0] = dpi[:, 1, 1] = f / z
        dpi[:, :, 2] = -f * X[:, :2] / z[:, None] ** 2
        dpi *= self.scale[:, None, None]
        J = np.concatenate([dpi @ -_skew(rotated), dpi, dpi @ (R @ self.basis)], axis=2)
        return r, J.reshape(len(X) * 2, -1)


@dataclass
class _State:
    """Per photo rotation, translation and expression; one identity shared by all photos."""

    H: list[np.ndarray]
    t: list[np.ndarray]
    expression: list[np.ndarray]
    identity: np.ndarray  # (k,)


class _Joint:
    """Residuals and Jacobian of several photos of one face: the identity columns are shared,
    the pose (and, unless rigid, expression) columns are per photo; Gaussian priors on identity
    (once) and expression (per photo)."""

    def __init__(self, problems: list[_Problem], settings: RegressionSettings, rigid: bool,
                 free_identity: bool):
        self.problems, self.settings, self.rigid = problems, settings, rigid
        self.free_identity = free_identity and not rigid
        self.k = problems[0].k
        self.n_exp = problems[0].basis.shape[2] - self.k
        self.per_photo = 6 + (0 if rigid else self.n_exp)

    @property
    def size(self) -> int:
        return len(self.problems) * self.per_photo + (self.k if self.free_identity else 0)

    def evaluate(self, s: _State, jacobian: bool = True):
        rows, blocks = [], []
        id_col = len(self.problems) * self.per_photo
        for i, (problem, H, t, e) in enumerate(zip(self.problems, s.H, s.t, s.expression)):
            r, J = problem.evaluate(H, t, np.concatenate([s.identity, e]), jacobian)
            rows.append(r)
            if not self.rigid:
                rows.append(problem.expression_weight * e)
            if jacobian:
                block = np.zeros((len(r), self.size))
                block[:, i * self.per_photo: i * self.per_photo + 6] = J[:, :6]
                if not self.rigid:
                    block[:, i * self.per_photo + 6: (i + 1) * self.per_photo] = J[:, 6 + self.k:]
                if self.free_identity:
                    block[:, id_col:] = J[:, 6: 6 + self.k]
                blocks.append(block)
                if not self.rigid:
                    prior = np.zeros((self.n_exp, self.size))
                    cols = np.arange(self.n_exp) + i * self.per_photo + 6
                    prior[np.arange(self.n_exp), cols] = problem.expression_weight
                    blocks.append(prior)
        if self.free_identity:
            rows.append(self.settings.identity_weight * s.identity)
            if jacobian:
                prior = np.zeros((self.k, self.size))
                prior[:, id_col:] = np.eye(self.k) * self.settings.identity_weight
                blocks.append(prior)
        return np.concatenate(rows), (np.concatenate(blocks) if jacobian else None)

    def step(self, s: _State, delta: np.ndarray) -> _State:
        H, t, expression = [], [], []
        for i in range(len(self.problems)):
            d = delta[i * self.per_photo: (i + 1) * self.per_photo]
            H.append(rotation_matrix(d[:3]) @ s.H[i])
            t.append(s.t[i] + d[3:6])
            e = s.expression[i] if self.rigid else np.clip(s.expression[i] + d[6:], 0.0, 1.0)
            expression.append(e)
        identity = s.identity
        if self.free_identity:
            identity = identity + delta[len(self.problems) * self.per_photo:]
        return _State(H, t, expression, identity)


def _gauss_newton(problem: _Joint, s: _State, iterations: int) -> _State:
    """Levenberg-Marquardt over the joint state."""
    lam = 1e-3
    r, J = problem.evaluate(s)
    cost = float(r @ r)
    for _ in range(iterations):
        JtJ, Jtr = J.T @ J, J.T @ r
        for _ in range(8):  # raise damping until the step lowers the cost
            delta = np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-9), -Jtr)
            candidate = problem.step(s, delta)
            r_new, _ = problem.evaluate(candidate, jacobian=False)
            new_cost = float(r_new @ r_new)
            if new_cost < cost:
                improvement = (cost - new_cost) / cost
                s, cost, lam = candidate, new_cost, max(lam / 3, 1e-7)
                break
            lam *= 4
        else:
            break  # no step helps: converged
        if improvement < 1e-6:
            break
        r, J = problem.evaluate(s)
    return s


def regress_joint(points: list[SurfacePoints], targets: list[LandmarkTarget], inits: list[FaceParams],
                  settings: RegressionSettings | None = None,
                  identity: np.ndarray | None = None) -> list[FaceParams]:
    """Fit one identity and per-photo pose, translation and expression to the landmarks of
    several photos of one face (per photo: the surface points its targets belong to, and the
    camera of its init). With ``identity`` given, it is kept fixed and only the per-photo
    parameters move (a new photo of an already fitted person)."""
    settings = settings or RegressionSettings()
    problems = [_Problem(pts, target, init.camera, settings)
                for pts, target, init in zip(points, targets, inits)]
    k = problems[0].k
    fixed = identity is not None
    start = np.asarray(identity if fixed else np.mean([p.identity for p in inits], 0), np.float64)[:k]
    s = _State([rotation_matrix(p.rotation) for p in inits],
               [p.translation.astype(np.float64) for p in inits],
               [p.expression.astype(np.float64) for p in inits], start)
    s = _gauss_newton(_Joint(problems, settings, True, free_identity=False), s, 10)
    s = _gauss_newton(_Joint(problems, settings, False, free_identity=not fixed), s, settings.iterations)
    full = np.zeros(100)
    full[:k] = s.identity
    if fixed:
        full[k:] = np.asarray(identity)[k:]
    return [FaceParams(full.copy(), e.copy(), Rotation.from_matrix(H).as_rotvec(), t, init.camera,
                       init.sh.copy()) for H, t, e, init in zip(s.H, s.t, s.expression, inits)]


def regress(points: SurfacePoints, target: LandmarkTarget, camera: Camera, init: FaceParams,
            settings: RegressionSettings | None = None) -> FaceParams:
    """Fit pose, translation, identity and expression to the landmark targets of one photo."""
    return regress_joint([points], [target], [replace(init, camera=camera)], settings)[0]


def landmark_error(points: SurfacePoints, target: LandmarkTarget, params: FaceParams) -> float:
    """RMS distance of the fitted surface points to their weighted targets, in face sizes."""
    k = points.identity.shape[0]
    with torch.no_grad():
        model_pts = points(torch.from_numpy(params.identity[:k]), torch.from_numpy(params.expression)).numpy()
    err = np.linalg.norm(params.project(model_pts) - target.points, axis=1)
    w = target.weights
    return float(np.sqrt((w * err ** 2).sum() / max(w.sum(), 1e-9)) / target.face_size)
