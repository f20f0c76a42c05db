"""Parameter refinement by differentiable rendering against the photo.

Starting from the landmark regression, we jointly optimise pose, identity, expression,
spherical-harmonics light and a low-resolution skin albedo so that the shaded render matches the
photo on visible skin (robust photometric loss), while the dense landmarks and Gaussian priors
keep the fit anchored. ICT-FaceKit has no albedo model, so the albedo is a free but very coarse
UV image: fine enough for skin tone and lips, too coarse to absorb shading, which leaves the
shading cues (nose, cheeks, brow ridge) to the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..appearance.identity import FaceRecognitionNet, chip_transform, embed, five_points
from ..appearance.skin_mask import holdout_checkerboard, skin_mask
from ..geometry.face_model import SKIN_POLYGONS, VERTEX_REGIONS, FaceModel
from ..geometry.params import MODEL_TO_CAMERA, Camera, FaceParams, rotation_matrix
from ..geometry.rendering import (
    ambient_sh,
    cpu_threads,
    interpolate,
    interpolate_corners,
    project,
    rasterize,
    sample_texture,
    select_device,
    shade,
    vertex_normals,
)
from ..progress import Progress
from .detection import FaceDetection
from .losses import photometric_loss
from .regression import LandmarkTarget, SurfacePoints

SKIN_VERTICES = VERTEX_REGIONS["head_neck"][1]  # skin polygons only use vertices below this
ALBEDO_SHAPE = (16, 32)  # coarse skin-atlas albedo (rows, cols): tone, not detail
CROP_MARGIN = 1.6  # crop side / face box side


@dataclass
class RefinementSettings:
    iterations: int = 100
    resolution: int = 224
    photometric_weight: float = 20.0
    landmark_weight: float = 1.0
    identity_weight: float = 1.0
    expression_weight: float = 3.0  # as the regression's (core.fitting.regression.RegressionSettings)
    landmark_sigma: float = 0.012
    lr_pose: float = 3e-3
    lr_translation: float = 5e-4
    lr_shape: float = 3e-2
    lr_light: float = 2e-2
    optimise_geometry: bool = True  # False fits only light and albedo (the ablation baseline)
    holdout: bool = False  # leave a checkerboard of skin pixels out of the loss; report error on it
    # The likeness pass (after the texture stage, with its albedo): this many more steps with an
    # identity loss on the geometry, the face-recognition distance of the textured render to the
    # photo at the photo's view and with the head turned by likeness_yaws (0 switches it off).
    likeness_iterations: int = 0
    likeness_weight: float = 3.0
    likeness_yaws: tuple[float, ...] = (-20.0, 20.0)


@dataclass
class View:
    """One photo to refine against: the image, its landmark targets and its detection."""

    rgb: np.ndarray
    target: LandmarkTarget
    detection: FaceDetection


@dataclass
class RefinementResult:
    params: FaceParams
    metrics: dict[str, float]


@dataclass
class Crop:
    """Square crop of the photo around the face, resampled to ``size`` pixels."""

    x0: float
    y0: float
    scale: float  # crop pixels per photo pixel
    size: int

    @staticmethod
    def around(box: np.ndarray, size: int, margin: float = CROP_MARGIN) -> Crop:
        side = margin * max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return Crop(cx - side / 2, cy - side / 2, size / side, size)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        s = self.scale
        # cv2 maps pixel indices (centres at integers); ours have centres at +0.5.
        m = np.array([[s, 0, 0.5 * s - s * self.x0 - 0.5], [0, s, 0.5 * s - s * self.y0 - 0.5]])
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        return cv2.warpAffine(rgb, m, (self.size, self.size), flags=interp, borderMode=cv2.BORDER_REPLICATE)

    def points(self, pts: np.ndarray) -> np.ndarray:
        return (pts - [self.x0, self.y0]) * self.scale

    def camera(self, cam: Camera) -> Camera:
        s = self.scale
        return Camera(cam.focal * s, (cam.cx - self.x0) * s, (cam.cy - self.y0) * s, self.size, self.size)


class _SkinModel:
    """Torch copy of the skin part of the model (the bases of vertices below SKIN_VERTICES)."""

    def __init__(self, model: FaceModel, device: torch.device):
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.neutral = t(model.neutral[:SKIN_VERTICES])
        self.identity = t(model.identity_basis[:, :SKIN_VERTICES].reshape(len(model.identity_basis), -1))
        n_exp = len(model.expression_basis)
        self.expression = t(model.expression_basis[:, :SKIN_VERTICES].reshape(n_exp, -1))
        faces, uv_faces = model.triangles(SKIN_POLYGONS)
        self.faces = t(faces.astype(np.int64))
        self.uv_corners = t(model.atlas_uvs[uv_faces])

    def vertices(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        offsets = identity @ self.identity + expression @ self.expression
        return self.neutral + offsets.view(-1, 3)


def axis_angle_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues in torch, smooth at zero (series for small angles) so jacobians are finite."""
    theta2 = (v * v).sum()
    theta = torch.sqrt(theta2 + 1e-24)
    small = theta2 < 1e-12
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-24))
    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    K = torch.stack([
        torch.stack([zero, -v[2], v[1]]),
        torch.stack([v[2], zero, -v[0]]),
        torch.stack([-v[1], v[0], zero]),
    ])
    return torch.eye(3, dtype=v.dtype, device=v.device) + a * K + b * (K @ K)


def _rotation(rot: torch.Tensor) -> torch.Tensor:
    return axis_angle_matrix(rot) @ torch.as_tensor(MODEL_TO_CAMERA, dtype=rot.dtype, device=rot.device)


class _Objective:
    """The refinement energy for one photo, evaluated on a crop."""

    def __init__(self, skin: _SkinModel, view: View, points: SurfacePoints, camera: Camera,
                 settings: RefinementSettings, device: torch.device, identity_share: float = 1.0,
                 identity_net: FaceRecognitionNet | None = None):
        self.settings, self.device = settings, device
        rgb, target, detection = view.rgb, view.target, view.detection
        self.identity_share = identity_share  # the identity prior counts once across all photos
        self.crop = Crop.around(detection.box, settings.resolution)
        self.camera = self.crop.camera(camera)
        self.skin = skin
        self.photo = torch.from_numpy(self.crop.image(rgb).astype(np.float32) / 255).to(device)
        mask = skin_mask(self.crop.points(detection.landmarks), self.crop.size, self.crop.size, margin=0.02)
        held_out = holdout_checkerboard(self.crop.size) if settings.holdout else np.zeros_like(mask)
        self.skin_mask = torch.from_numpy(mask & ~held_out).to(device)
        self.heldout_mask = torch.from_numpy(mask & held_out).to(device) if settings.holdout else None
        self.points = points
        self.lm_target = torch.from_numpy(self.crop.points(target.points)).float().to(device)
        self.lm_weight = torch.from_numpy(target.weights).float().to(device)
        self.lm_scale = target.face_size * self.crop.scale * settings.landmark_sigma
        self.lm_base = points.base.float().to(device)
        self.lm_identity = points.identity.float().to(device)
        self.lm_expression = points.expression.float().to(device)
        self.net = identity_net  # the likeness pass's identity loss (None: off)
        if identity_net is not None:
            with torch.no_grad():
                transform = chip_transform(five_points(self.crop.points(detection.landmarks)))
                self.target = embed(identity_net, self.photo.cpu(), transform)

    def _landmarks_camera(self, rot, t, identity, expression) -> torch.Tensor:
        k = self.lm_identity.shape[0]
        p = (self.lm_base + torch.tensordot(identity[:k], self.lm_identity, 1)
             + torch.tensordot(expression, self.lm_expression, 1))
        return p @ _rotation(rot).T + t

    def render(self, rot, t, identity, expression, sh, albedo):
        return self._draw(self.skin.vertices(identity, expression) @ _rotation(rot).T + t, sh, albedo)

    def _draw(self, verts: torch.Tensor, sh, albedo):
        screen = project(verts, self.camera)
        frags = rasterize(screen, self.skin.faces, self.crop.size, self.crop.size)
        normals = torch.nn.functional.normalize(
            interpolate(frags, vertex_normals(verts, self.skin.faces), self.skin.faces), dim=-1)
        uv = interpolate_corners(frags, self.skin.uv_corners)
        colour = sample_texture(albedo, uv) * shade(normals, sh)
        return colour, frags.mask

    def energy(self, rot, t, identity, expression, sh, albedo) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        verts = self.skin.vertices(identity, expression) @ _rotation(rot).T + t
        marks = self._landmarks_camera(rot, t, identity, expression)
        image, frag_mask = self._draw(verts, sh, albedo)

        def photometric(mask: torch.Tensor) -> torch.Tensor:
            return photometric_loss(image.permute(2, 0, 1)[None], self.photo.permute(2, 0, 1)[None],
                                    (frag_mask & mask)[None, None].float())

        photo = photometric(self.skin_mask)
        lm_res = (project(marks, self.camera)[:, :2] - self.lm_target) / self.lm_scale
        lm = (self.lm_weight * (lm_res ** 2).sum(-1)).mean()
        n = len(self.lm_weight)
        prior = (self.identity_share * ((s.identity_weight * identity) ** 2).sum()
                 + ((s.expression_weight * expression) ** 2).sum())
        total = s.photometric_weight * photo + s.landmark_weight * lm + prior / n
        terms = {"photometric": photo.item(), "landmark": lm.item(), "prior": (prior / n).item()}
        if self.net is not None:
            likeness = self._likeness(verts, marks, sh, albedo, image, frag_mask)
            total = total + s.likeness_weight * likeness
            terms["likeness"] = likeness.item()
        if self.heldout_mask is not None:
            terms["heldout_photometric"] = photometric(self.heldout_mask).item()
        return total, terms

    def _likeness(self, verts, marks, sh, albedo, image, mask) -> torch.Tensor:
        """Mean face-recognition distance of the render (the head on grey) to the photo, at the
        photo's view and turned by ``likeness_yaws`` about the vertical axis through the head; each
        render's chip is aligned by the model's own five landmarks there."""
        centre = verts.mean(0).detach()
        distances = []
        for yaw in (0.0, *self.settings.likeness_yaws):
            if yaw:
                turn = torch.as_tensor(rotation_matrix(np.radians([0.0, yaw, 0.0]))).to(verts)
                image, mask = self._draw((verts - centre) @ turn.T + centre, sh, albedo)
                points = project((marks - centre) @ turn.T + centre, self.camera)[:, :2]
            else:
                points = project(marks, self.camera)[:, :2]
            shown = torch.where(mask[..., None], image.clamp(0, 1), torch.full_like(image, 0.5)).cpu()
            transform = chip_transform(five_points(points.detach().cpu().numpy()))
            distances.append(1 - embed(self.net, shown, transform) @ self.target)
        return torch.stack(distances).mean()


def _initial_albedo(objs: list[_Objective]) -> torch.Tensor:
    skin = [obj.photo[obj.skin_mask] for obj in objs if obj.skin_mask.any()]
    mean = torch.cat(skin).mean(0) if skin else objs[0].photo.new_full((3,), 0.5)
    return mean.expand(*ALBEDO_SHAPE, 3).clone()


def refine(model: FaceModel, rgb: np.ndarray, coarse: FaceParams, target: LandmarkTarget,
           detection: FaceDetection, points: SurfacePoints, settings: RefinementSettings,
           device: str = "auto", progress: Progress | None = None) -> RefinementResult:
    """Refine ``coarse`` parameters against the photo; returns the lowest-energy state seen."""
    view = View(rgb, target, detection)
    return refine_joint(model, [view], [coarse], points, settings, device, progress)[0]


def refine_joint(model: FaceModel, views: list[View], coarse: list[FaceParams], points: SurfacePoints,
                 settings: RefinementSettings, device: str = "auto", progress: Progress | None = None,
                 fixed_identity: bool = False, fixed_albedo: np.ndarray | None = None,
                 identity_net: FaceRecognitionNet | None = None) -> list[RefinementResult]:
    """Refine several photos of one face together: one identity (and coarse skin albedo) shared
    by all, pose, expression and light per photo. ``coarse`` must share its identity; with
    ``fixed_identity`` it stays as given, and a ``fixed_albedo`` (a uint8 skin-atlas texture) is
    rendered as it is instead of fitting the coarse one: a new photo of an already fitted person.
    With ``identity_net`` (and a ``fixed_albedo``: the texture stage's), this is the likeness pass:
    ``likeness_iterations`` steps from ``coarse``'s fit, its light included, with the identity loss.
    Returns one result per photo (lowest joint energy seen)."""
    dev = select_device(device)
    with cpu_threads(1, dev):
        return _refine(model, views, coarse, points, settings, dev, progress or Progress(), fixed_identity,
                       fixed_albedo, identity_net)


def _refine(model: FaceModel, views: list[View], coarse: list[FaceParams], points: SurfacePoints,
            settings: RefinementSettings, dev: torch.device, progress: Progress,
            fixed_identity: bool, fixed_albedo: np.ndarray | None,
            identity_net: FaceRecognitionNet | None) -> list[RefinementResult]:
    skin = _SkinModel(model, dev)
    objs = [_Objective(skin, view, points, c.camera, settings, dev, 1 / len(views), identity_net)
            for view, c in zip(views, coarse)]
    iterations = settings.iterations if identity_net is None else settings.likeness_iterations

    def param(a, free: bool = True) -> torch.Tensor:
        return torch.tensor(np.asarray(a), dtype=torch.float32, device=dev, requires_grad=free)

    geometry = settings.optimise_geometry
    # A turned face's landmark term holds only a detector's keypoints: against its shading the
    # photometric term then bends its shape off the face (AFLW2000-3D dev, the 18 such faces,
    # balanced: NME 6.41 -> 6.82 refined; 6.81 with the pose frozen, 6.66 with 10x the landmark
    # weight). Its pose and expression stay the keypoint fit's; its light and albedo are refined.
    moves = [geometry and not view.target.keypoints_only for view in views]
    identity = param(coarse[0].identity, any(moves) and not fixed_identity)
    rots = [param(c.rotation, free) for c, free in zip(coarse, moves)]
    ts = [param(c.translation, free) for c, free in zip(coarse, moves)]
    expressions = [param(c.expression, free) for c, free in zip(coarse, moves)]
    shs = [param(c.sh if np.any(c.sh) else ambient_sh(1.0)) for c in coarse]  # a fitted light goes on
    if fixed_albedo is None:
        albedo = _initial_albedo(objs).requires_grad_(True)
    else:
        albedo = torch.from_numpy(fixed_albedo.astype(np.float32) / 255).to(dev)
    groups = [([*shs, albedo], settings.lr_light), (rots, settings.lr_pose), (ts, settings.lr_translation),
              ([*expressions, identity], settings.lr_shape)]
    opt = torch.optim.Adam([{"params": free, "lr": lr} for group, lr in groups
                            if (free := [p for p in group if p.requires_grad])])
    variables = [identity, albedo, *rots, *ts, *expressions, *shs]
    n = len(objs)

    def energy(values: list[torch.Tensor]) -> tuple[torch.Tensor, list[dict[str, float]]]:
        ident, alb = values[:2]
        per = [values[2 + i::n][:4] for i in range(n)]  # rot, t, expression, sh of photo i
        results = [obj.energy(rot, t, ident, exp, sh, alb) for obj, (rot, t, exp, sh) in zip(objs, per)]
        return sum(e for e, _ in results), [terms for _, terms in results]

    best, best_energy, first = None, float("inf"), None
    progress.stage("refine" if identity_net is None else "refine likeness", iterations)
    for _ in range(iterations):
        opt.zero_grad()
        total, terms = energy(variables)
        if not torch.isfinite(total):
            break  # diverged: keep the best state so far
        if first is None:
            first = terms
        if total.item() < best_energy:
            best_energy, best = total.item(), [v.detach().clone() for v in variables]
        total.backward()
        opt.step()
        with torch.no_grad():
            for exp in expressions:
                exp.clamp_(0.0, 1.0)
            albedo.clamp_(0.0, 1.0)
        progress.advance()
    if best is None:
        return [RefinementResult(c.copy(), {}) for c in coarse]
    with torch.no_grad():
        _, final_terms = energy(best)
    values = [v.cpu().double().numpy() for v in best]
    results = []
    for i, c in enumerate(coarse):
        rot, t, exp, sh = values[2 + i::n][:4]
        params = FaceParams(values[0], exp, rot, t, c.camera, sh)
        metrics = ({f"{k}_before": v for k, v in first[i].items()}
                   | {f"{k}_after": v for k, v in final_terms[i].items()})
        results.append(RefinementResult(params, metrics))
    return results


def render_fit(model: FaceModel, view: View, params: FaceParams, albedo: np.ndarray, points: SurfacePoints,
               resolution: int, device: str = "auto") -> tuple[np.ndarray, np.ndarray, Crop]:
    """The fitted skin with a uint8 skin-atlas ``albedo`` under ``params``' light, over the photo,
    on the refinement's square crop of ``resolution`` pixels: (uint8 image, skin mask, crop)."""
    dev = select_device(device)
    settings = RefinementSettings(resolution=resolution)
    obj = _Objective(_SkinModel(model, dev), view, points, params.camera, settings, dev)
    with torch.no_grad():
        values = [torch.as_tensor(np.asarray(v), dtype=torch.float32, device=dev) for v in
                  (params.rotation, params.translation, params.identity, params.expression, params.sh)]
        image, mask = obj.render(*values, torch.from_numpy(albedo.astype(np.float32) / 255).to(dev))
        out = torch.where(mask[..., None], image.clamp(0, 1), obj.photo)
    return (out.cpu().numpy() * 255 + 0.5).astype(np.uint8), mask.cpu().numpy(), obj.crop
