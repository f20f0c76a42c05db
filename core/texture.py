"""UV albedo from the photo: unwrap by the fitted projection, de-light, complete what was unseen.

Every texel of the skin atlas (core.face_model.FaceModel.atlas_uvs) gets a 3D point on the fitted
head; projecting it into the photo gives its colour, a z-buffer test and the angle to the camera
give how much to trust it. Dividing by the fitted spherical-harmonics shading removes the light.
Unseen texels are taken from the mirrored texel (the ICT mesh and its UVs are left/right
symmetric: mirroring is a horizontal flip within each UV tile), and what remains is filled by
a push-pull (pyramid) interpolation from the seen skin, which is smooth by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .face_model import SKIN_POLYGONS, FaceModel
from .params import FaceParams
from .rendering import rasterize, shade, vertex_normals

# Visibility weight ramps up between these cosines of the angle between normal and view ray.
GRAZING_COS = (0.15, 0.5)
DEPTH_TOLERANCE_M = 0.004
MIN_SHADING = 0.15  # do not divide dark, badly-lit texels into noise


@dataclass
class TextureResult:
    albedo: np.ndarray  # (S, 2S, 3) uint8 skin atlas
    visibility: np.ndarray  # (S, 2S) float32 in [0, 1]
    observed: np.ndarray  # (S, 2S, 3) float32 photo colours before de-lighting (0 where unseen)


@dataclass
class UVSurface:
    """Per texel of the skin atlas: the triangle under it and its barycentrics."""

    face_id: np.ndarray  # (S, 2S) int, -1 outside the UV islands
    bary: np.ndarray  # (S, 2S, 3)
    faces: np.ndarray  # (F, 3) skin triangles (vertex ids)

    def interpolate(self, per_vertex: np.ndarray) -> np.ndarray:
        """(V, C) vertex attribute at each covered texel -> (S, 2S, C), zeros elsewhere."""
        out = np.zeros(self.face_id.shape + (per_vertex.shape[1],), per_vertex.dtype)
        covered = self.face_id >= 0
        corners = per_vertex[self.faces[self.face_id[covered]]]
        out[covered] = (corners * self.bary[covered][..., None]).sum(1)
        return out


def uv_surface(model: FaceModel, size: int) -> UVSurface:
    """Rasterise the skin triangles into the (size, 2*size) atlas."""
    faces, uv_faces = model.triangles(SKIN_POLYGONS)
    uv = torch.from_numpy(model.atlas_uvs[uv_faces].reshape(-1, 2).astype(np.float64))
    texels = torch.stack([uv[:, 0] * 2 * size, (1 - uv[:, 1]) * size, torch.ones_like(uv[:, 0])], 1)
    corner_faces = torch.arange(len(texels)).view(-1, 3)
    frags = rasterize(texels, corner_faces, size, 2 * size)
    return UVSurface(frags.face_id.numpy(), frags.bary.numpy(), faces.astype(np.int64))


def mirror_atlas(image: np.ndarray) -> np.ndarray:
    """Left/right mirror of a skin-atlas image: flip each of the two tiles horizontally."""
    size = image.shape[0]
    return np.concatenate([image[:, :size][:, ::-1], image[:, size:][:, ::-1]], axis=1)


def push_pull_fill(values: np.ndarray, weights: np.ndarray, levels: int = 12) -> np.ndarray:
    """Fill low-weight texels with a smooth interpolation of high-weight ones (pyramid
    push-pull): each coarser level averages the weighted values, finer levels take over
    wherever they have data."""
    if levels == 0 or min(values.shape[:2]) < 2:
        return values / np.maximum(weights[..., None], 1e-8)
    w = weights[..., None].astype(np.float32)
    small_v = cv2.resize(values * w, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    small_w = cv2.resize(w[..., 0], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    small_v = small_v.reshape(small_w.shape + (-1,))
    coarse = push_pull_fill(small_v / np.maximum(small_w[..., None], 1e-8), np.minimum(small_w * 4, 1),
                            levels - 1)
    coarse = cv2.resize(coarse, (values.shape[1], values.shape[0]), interpolation=cv2.INTER_LINEAR)
    coarse = coarse.reshape(values.shape)
    alpha = np.clip(w, 0, 1)
    return alpha * values + (1 - alpha) * coarse


def _visibility(model: FaceModel, params: FaceParams, verts_cam: np.ndarray, surface: UVSurface,
                texel_pos: np.ndarray, texel_normal: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Weight in [0, 1] per texel: in front in the z-buffer, facing the camera, inside the photo."""
    height, width = image_shape
    screen = torch.from_numpy(np.concatenate([params.camera.project(verts_cam), verts_cam[:, 2:]], 1))
    faces = torch.from_numpy(surface.faces)
    zbuf = rasterize(screen, faces, height, width).depth.numpy()
    uv = params.camera.project(np.where(texel_pos[..., 2:] > 0, texel_pos, 1).reshape(-1, 3))
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, width - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, height - 1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    z_front = zbuf[row, col]
    depth_ok = inside & (z_front > 0) & (texel_pos.reshape(-1, 3)[:, 2] <= z_front + DEPTH_TOLERANCE_M)
    view = texel_pos / np.maximum(np.linalg.norm(texel_pos, axis=-1, keepdims=True), 1e-9)
    cos = -(texel_normal * view).sum(-1)
    lo, hi = GRAZING_COS
    facing = np.clip((cos - lo) / (hi - lo), 0, 1)
    covered = surface.face_id >= 0
    return (depth_ok.reshape(covered.shape) & covered) * facing


def _sample_photo(rgb: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear photo colours in [0, 1] at continuous pixel coordinates (..., 2)."""
    map_x = (pixels[..., 0] - 0.5).astype(np.float32)
    map_y = (pixels[..., 1] - 0.5).astype(np.float32)
    photo = rgb.astype(np.float32) / 255
    return cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def fit_sh(colors: np.ndarray, normals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Least-squares SH lighting (9, 3) explaining ``colors`` (N, 3) at ``normals`` (N, 3) for a
    constant unit albedo: used when refinement did not estimate the light."""
    from .rendering import sh_basis

    basis = sh_basis(torch.from_numpy(normals)).numpy()
    sw = np.sqrt(weights)[:, None]
    reg = 1e-2 * np.eye(9)
    reg[0, 0] = 0
    sh = np.linalg.solve((basis * sw).T @ (basis * sw) + reg * len(basis), (basis * sw).T @ (colors * sw))
    return sh


@dataclass
class Unwrap:
    """One photo's view of the skin atlas, before completion: what a fusion of several photos
    combines per texel."""

    albedo: np.ndarray  # (S, 2S, 3) float32 de-lit colour, 0 where unseen
    weight: np.ndarray  # (S, 2S) float32 trust in [0, 1]: in front, facing the camera, in the photo
    observed: np.ndarray  # (S, 2S, 3) float32 photo colours before de-lighting (0 where unseen)
    pixels_per_metre: np.ndarray  # (S, 2S) float32 photo resolution at the texel (focal / depth)


def unwrap(model: FaceModel, rgb: np.ndarray, params: FaceParams, surface: UVSurface) -> Unwrap:
    """Project the skin atlas of fitted ``params`` into photo ``rgb`` and divide out the light."""
    verts = model.vertices(params.identity, params.expression).astype(np.float64)
    verts_cam = params.to_camera(verts)
    normals = vertex_normals(torch.from_numpy(verts_cam), torch.from_numpy(surface.faces)).numpy()
    texel_pos = surface.interpolate(verts_cam)
    texel_normal = surface.interpolate(normals)
    texel_normal /= np.maximum(np.linalg.norm(texel_normal, axis=-1, keepdims=True), 1e-9)

    visibility = _visibility(model, params, verts_cam, surface, texel_pos, texel_normal, rgb.shape[:2])
    pixels = params.camera.project(np.where(texel_pos[..., 2:] > 0, texel_pos, 1).reshape(-1, 3))
    observed = _sample_photo(rgb, pixels.reshape(texel_pos.shape[:2] + (2,))) * (visibility[..., None] > 0)

    seen = visibility > 0
    sh = params.sh
    if not np.any(sh):
        sh = fit_sh(observed[seen].astype(np.float64), texel_normal[seen], visibility[seen])
    shading = shade(torch.from_numpy(texel_normal), torch.from_numpy(sh)).numpy()
    albedo = observed / np.maximum(shading, MIN_SHADING)
    density = params.camera.focal / np.maximum(texel_pos[..., 2], 1e-6) * seen
    return Unwrap(albedo.astype(np.float32), visibility.astype(np.float32), observed.astype(np.float32),
                  density.astype(np.float32))


def complete(albedo: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """uint8 albedo with every texel filled: symmetry first (the other side of the same face),
    then a smooth fill from all skin seen."""
    mirrored = mirror_atlas(weight)
    gain = np.clip(mirrored - weight, 0, 1)
    albedo = (albedo * weight[..., None] + mirror_atlas(albedo) * gain[..., None]) / np.maximum(
        weight + gain, 1e-8)[..., None]
    known = np.clip(weight + gain, 0, 1).astype(np.float32)
    filled = push_pull_fill(albedo.astype(np.float32), known)
    return np.clip(filled * 255 + 0.5, 0, 255).astype(np.uint8)


def build_texture(model: FaceModel, rgb: np.ndarray, params: FaceParams, size: int,
                  surface: UVSurface | None = None) -> TextureResult:
    """De-lit skin-atlas albedo (size, 2*size) for fitted ``params`` on photo ``rgb``; pass the
    ``uv_surface`` of this model and size to reuse it across photos."""
    view = unwrap(model, rgb, params, surface or uv_surface(model, size))
    return TextureResult(complete(view.albedo, view.weight), view.weight, view.observed)
