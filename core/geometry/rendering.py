"""Differentiable mesh rendering: rasterise, interpolate, spherical-harmonics shading.

Visibility (which triangle covers each pixel) is found without gradients: on CPU by a numba
z-buffer rasteriser (PyTorch3D's CPU rasteriser is brute force, ~1000x slower for a face
mesh), on CUDA by PyTorch3D's ``rasterize_meshes``. Barycentric coordinates and depth are then
recomputed in torch from the projected vertices, so gradients flow to vertex positions the
same way on both devices.

Conventions (docs/ARCHITECTURE.md): screen vertices are ``[u, v, z_cam]`` with OpenCV axes
(x right, y down, z forward); pixel (row i, col j) is sampled at its centre ``(j + 0.5, i + 0.5)``.
A triangle faces the camera when its screen winding ``(p1 - p0) x (p2 - p0)`` is negative, which
is the case for ICT-FaceKit's outward (counter-clockwise in OpenGL terms) polygons.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SettingsError
from .params import Camera


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``."""
    if name not in ("auto", "cpu", "cuda"):
        raise SettingsError(f"Unknown device {name!r}: use 'auto', 'cpu' or 'cuda'.")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingsError(
            "CUDA was requested but PyTorch sees no CUDA GPU: choose device 'auto' or 'cpu', "
            "or install a CUDA build of PyTorch and an NVIDIA driver."
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextmanager
def cpu_threads(count: int, device: torch.device) -> Iterator[None]:
    """Run a CPU optimisation loop on ``count`` torch threads, then restore the setting.

    Rendering losses are many small tensor ops; torch's intra-op threads spin-wait between them,
    so on a 2-core machine one thread was 4-13x faster per refinement step than two (measured,
    docs/BENCHMARKS.md), and much less sensitive to other processes."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Fragments:
    """Per-pixel rasterisation result. ``bary`` and ``depth`` are differentiable w.r.t. the
    screen vertices; both are 0 where ``face_id`` is -1 (no triangle)."""

    face_id: Tensor  # (H, W) long, -1 where empty
    bary: Tensor  # (H, W, 3) perspective-correct barycentrics of the face's corners
    depth: Tensor  # (H, W) z_cam of the surface
    mask: Tensor  # (H, W) bool, face_id >= 0


@dataclass
class RenderOutput:
    image: Tensor  # (H, W, 3) albedo * shading, 0 outside the mesh
    mask: Tensor  # (H, W) bool
    albedo: Tensor  # (H, W, 3)
    shading: Tensor  # (H, W, 3), ones when no SH lighting was given
    normals: Tensor  # (H, W, 3) unit normals in camera axes, 0 outside the mesh
    fragments: Fragments
    verts_screen: Tensor  # (V, 3) [u, v, z_cam]


# --------------------------------------------------------------------------------------------
# Visibility
#
# No numba on-disk cache: it is keyed by source path but records the module's import name, and
# the same files are imported as ``core`` (CLI, tests) and as ``<extension>.core`` (Blender), which
# would load each other's cache and fail. Compiling takes ~1-2 s once per process.


@numba.njit
def _triangle_boxes(verts, faces, height, width, cull_backfaces):
    """Per triangle the inclusive pixel range (x0, x1, y0, y1) whose centres it may cover;
    x1 < x0 marks triangles to skip (degenerate, behind the camera, culled)."""
    nf = faces.shape[0]
    box = np.empty((nf, 4), np.int64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        xa, ya = verts[a, 0], verts[a, 1]
        xb, yb = verts[b, 0], verts[b, 1]
        xc, yc = verts[c, 0], verts[c, 1]
        area = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
        box[f, 0], box[f, 1], box[f, 2], box[f, 3] = 0, -1, 0, -1
        if min(verts[a, 2], verts[b, 2], verts[c, 2]) <= 0 or abs(area) < 1e-12:
            continue
        if cull_backfaces and area > 0:
            continue
        box[f, 0] = max(int(np.ceil(min(xa, xb, xc) - 0.5)), 0)
        box[f, 1] = min(int(np.floor(max(xa, xb, xc) - 0.5)), width - 1)
        box[f, 2] = max(int(np.ceil(min(ya, yb, yc) - 0.5)), 0)
        box[f, 3] = min(int(np.floor(max(ya, yb, yc) - 0.5)), height - 1)
    return box


@numba.njit
def _rasterize_numba(verts, faces, height, width, cull_backfaces):
    """Z-buffer: inclusive edge test at pixel centres, nearest perspective-correct depth wins,
    ties keep the lower face id. Serial on purpose: a parallel version (prange over bands of
    rows) was only faster at 512^2 (6 vs 10 ms on 2 cores), slower at 224^2, and its OpenMP
    threads spin and compete with torch's own pool during the interpolation that follows."""
    box = _triangle_boxes(verts, faces, height, width, cull_backfaces)
    face_id = np.full((height, width), -1, np.int64)
    zbuf = np.full((height, width), np.inf)
    for f in range(faces.shape[0]):
        if box[f, 1] < box[f, 0] or box[f, 3] < box[f, 2]:
            continue
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        xa, ya, za = verts[a, 0], verts[a, 1], verts[a, 2]
        xb, yb, zb = verts[b, 0], verts[b, 1], verts[b, 2]
        xc, yc, zc = verts[c, 0], verts[c, 1], verts[c, 2]
        inv_area = 1.0 / ((xb - xa) * (yc - ya) - (yb - ya) * (xc - xa))
        for i in range(box[f, 2], box[f, 3] + 1):
            py = i + 0.5
            for j in range(box[f, 0], box[f, 1] + 1):
                px = j + 0.5
                w0 = ((xc - xb) * (py - yb) - (yc - yb) * (px - xb)) * inv_area
                w1 = ((xa - xc) * (py - yc) - (ya - yc) * (px - xc)) * inv_area
                w2 = 1.0 - w0 - w1
                if w0 < 0 or w1 < 0 or w2 < 0:
                    continue
                z = 1.0 / (w0 / za + w1 / zb + w2 / zc)
                if z < zbuf[i, j]:
                    zbuf[i, j] = z
                    face_id[i, j] = f
    return face_id


def _face_ids_numba(verts_screen: Tensor, faces: Tensor, height: int, width: int, cull: bool) -> Tensor:
    verts = np.ascontiguousarray(verts_screen.detach().cpu().double().numpy())
    tris = np.ascontiguousarray(faces.detach().cpu().long().numpy())
    face_id = _rasterize_numba(verts, tris, height, width, cull)
    return torch.from_numpy(face_id).to(verts_screen.device)


def _face_ids_pytorch3d(verts_screen: Tensor, faces: Tensor, height: int, width: int, cull: bool) -> Tensor:
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    # PyTorch3D NDC: +x left, +y up, the shorter image side spans [-1, 1], pixel centres as ours.
    verts = verts_screen.detach().float()
    scale = 2.0 / min(height, width)
    ndc = torch.stack(
        [(width / 2 - verts[:, 0]) * scale, (height / 2 - verts[:, 1]) * scale, verts[:, 2]], dim=1
    )
    pix_to_face, _, _, _ = rasterize_meshes(
        Meshes(verts=[ndc], faces=[faces.long()]),
        image_size=(height, width),
        blur_radius=0.0,
        faces_per_pixel=1,
        perspective_correct=True,  # z-buffer on the same perspective-correct depth as ours
        cull_backfaces=cull,
    )
    return pix_to_face[0, :, :, 0].long()


def _use_pytorch3d(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import pytorch3d.renderer.mesh.rasterize_meshes  # noqa: F401
    except ImportError:
        return False  # no CUDA PyTorch3D: rasterise on CPU, interpolate on the GPU
    return True


def rasterize(
    verts_screen: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
    backend: str = "auto",
) -> Fragments:
    """Rasterise ``verts_screen`` (V, 3) ``[u, v, z_cam]`` with triangles ``faces`` (F, 3)."""
    face_id = visible_faces(verts_screen, faces, height, width, cull_backfaces, backend)
    return fragments_from_face_ids(face_id, verts_screen, faces)


def visible_faces(
    verts_screen: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
    backend: str = "auto",
) -> Tensor:
    """The nearest triangle's id at every pixel centre, (H, W) long, -1 where empty (no gradient).

    ``backend``: ``"auto"`` (PyTorch3D for CUDA tensors, numba otherwise), ``"numba"`` or
    ``"pytorch3d"``. Triangles with a vertex at ``z_cam <= 0`` are dropped (no near clipping).
    """
    if backend == "auto":
        backend = "pytorch3d" if _use_pytorch3d(verts_screen.device) else "numba"
    if backend == "pytorch3d":
        return _face_ids_pytorch3d(verts_screen, faces, height, width, cull_backfaces)
    if backend == "numba":
        return _face_ids_numba(verts_screen, faces, height, width, cull_backfaces)
    raise ValueError(f"Unknown rasteriser backend {backend!r}: use 'auto', 'numba' or 'pytorch3d'.")


def fragments_from_face_ids(face_id: Tensor, verts_screen: Tensor, faces: Tensor) -> Fragments:
    """Differentiable barycentrics and depth at pixel centres for given per-pixel face ids."""
    height, width = face_id.shape
    mask = face_id >= 0
    pixels = mask.reshape(-1).nonzero().squeeze(1)
    corners = verts_screen[faces[face_id.reshape(-1)[pixels]]]  # (N, 3 corners, 3)
    x, y, z = corners.unbind(-1)
    px = (pixels % width).to(verts_screen.dtype) + 0.5
    py = torch.div(pixels, width, rounding_mode="floor").to(verts_screen.dtype) + 0.5

    def edge(k: int, m: int) -> Tensor:  # signed area of (corner k, corner m, pixel)
        return (x[:, m] - x[:, k]) * (py - y[:, k]) - (y[:, m] - y[:, k]) * (px - x[:, k])

    screen_bary = torch.stack([edge(1, 2), edge(2, 0), edge(0, 1)], dim=1)
    screen_bary = screen_bary / screen_bary.sum(dim=1, keepdim=True)
    # Perspective correction: attributes are linear in 1/z across the screen.
    weighted = screen_bary / z
    inv_depth = weighted.sum(dim=1, keepdim=True)
    bary = verts_screen.new_zeros(height * width, 3).index_put((pixels,), weighted / inv_depth)
    depth = verts_screen.new_zeros(height * width).index_put((pixels,), 1.0 / inv_depth[:, 0])
    return Fragments(face_id, bary.view(height, width, 3), depth.view(height, width), mask)


def rasterize_uv(uv_corners: Tensor, size: int) -> Fragments:
    """Rasterise triangles in UV space onto a ``size`` x ``size`` texture: per texel the
    triangle id and (affine) barycentrics. ``uv_corners`` (F, 3, 2) use the OBJ convention
    (v = 0 at the bottom, texture row 0 at the top). Texels outside every triangle get -1, and
    triangles outside the unit square are clipped away (ICT's head/neck UVs lie in u = 1..2)."""
    uv = uv_corners.reshape(-1, 2)
    texels = torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size, torch.ones_like(uv[:, 0])], dim=1)
    faces = torch.arange(uv.shape[0], device=uv.device).view(-1, 3)
    return rasterize(texels, faces, size, size)


# --------------------------------------------------------------------------------------------
# Interpolation and texturing


def interpolate(fragments: Fragments, attributes: Tensor, faces: Tensor) -> Tensor:
    """Per-vertex ``attributes`` (V, C) at every pixel -> (H, W, C); zeros where empty."""
    return interpolate_corners(fragments, attributes[faces])


def interpolate_corners(fragments: Fragments, corner_attributes: Tensor) -> Tensor:
    """Per-face-corner ``corner_attributes`` (F, 3, C), e.g. UVs -> (H, W, C); zeros where empty."""
    height, width = fragments.face_id.shape
    pixels = fragments.mask.reshape(-1).nonzero().squeeze(1)
    corners = corner_attributes[fragments.face_id.reshape(-1)[pixels]]  # (N, 3, C)
    bary = fragments.bary.reshape(-1, 3)[pixels]
    values = (bary.unsqueeze(-1) * corners).sum(dim=1)
    out = values.new_zeros(height * width, corner_attributes.shape[-1]).index_put((pixels,), values)
    return out.view(height, width, -1)


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of ``texture`` ((C, S, S) or (S, S, C)) at ``uv`` (H, W, 2) -> (H, W, C).
    OBJ convention: v = 0 is the bottom row, so texel row = (1 - v) * S."""
    if texture.shape[1] == texture.shape[2] and texture.shape[0] != texture.shape[1]:
        chw = texture
    else:
        chw = texture.permute(2, 0, 1)
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1).to(chw.dtype)
    sampled = F.grid_sample(
        chw.unsqueeze(0), grid.unsqueeze(0), mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0].permute(1, 2, 0)


# --------------------------------------------------------------------------------------------
# Normals and spherical-harmonics lighting

# Band 0-2 real SH, each convolved with the Lambertian kernel (A0 = pi, A1 = 2pi/3, A2 = pi/4),
# in DECA's order [1, x, y, z, xy, xz, yz, x^2 - y^2, 3z^2 - 1]. DECA omits the pi of the DC
# term; keeping it makes ``ambient_sh(1)`` an exact unit shading.
SH_CONSTANTS = (
    np.pi * 0.5 / np.sqrt(np.pi),
    *[2 * np.pi / 3 * np.sqrt(3 / (4 * np.pi))] * 3,
    *[np.pi / 4 * 3 * np.sqrt(5 / (12 * np.pi))] * 3,
    np.pi / 4 * 1.5 * np.sqrt(5 / (12 * np.pi)),
    np.pi / 4 * 0.5 * np.sqrt(5 / (4 * np.pi)),
)


def sh_basis(normals: Tensor) -> Tensor:
    """Lambertian-convolved SH basis at unit ``normals`` (..., 3) -> (..., 9)."""
    x, y, z = normals.unbind(-1)
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim=-1
    )
    return basis * basis.new_tensor(SH_CONSTANTS)


def shade(normals: Tensor, sh_coeffs: Tensor | np.ndarray) -> Tensor:
    """RGB irradiance (..., 3) at ``normals`` (..., 3) under SH lighting ``sh_coeffs`` (9, 3)."""
    return sh_basis(normals) @ torch.as_tensor(sh_coeffs).to(normals)


def ambient_sh(intensity: float = 1.0) -> np.ndarray:
    """(9, 3) SH coefficients of uniform white light whose shading is ``intensity`` everywhere."""
    sh = np.zeros((9, 3))
    sh[0] = intensity / SH_CONSTANTS[0]
    return sh


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals (V, 3); zero for vertices no face uses."""
    v0, v1, v2 = verts[faces].unbind(1)
    face_normals = torch.linalg.cross(v1 - v0, v2 - v0)  # length = twice the area: area weighting
    corners = face_normals.repeat_interleave(3, 0)
    summed = verts.new_zeros(verts.shape).index_add(0, faces.reshape(-1), corners)
    return F.normalize(summed, dim=-1)


# --------------------------------------------------------------------------------------------
# Convenience renderer


def project(verts_cam: Tensor, camera: Camera) -> Tensor:
    """Camera-space vertices (V, 3) -> screen ``[u, v, z_cam]`` (V, 3)."""
    z = verts_cam[:, 2]
    u = camera.focal * verts_cam[:, 0] / z + camera.cx
    v = camera.focal * verts_cam[:, 1] / z + camera.cy
    return torch.stack([u, v, z], dim=1)


def render(
    verts_cam: Tensor,
    faces: Tensor,
    camera: Camera,
    *,
    uv_corners: Tensor | None = None,
    texture: Tensor | None = None,
    vertex_colors: Tensor | None = None,
    sh: Tensor | np.ndarray | None = None,
    height: int | None = None,
    width: int | None = None,
    cull_backfaces: bool = False,
) -> RenderOutput:
    """Project, rasterise and shade a mesh given in camera axes (metres).

    Albedo comes from ``texture`` sampled at ``uv_corners`` (F, 3, 2), else from
    ``vertex_colors`` (V, 3), else is white. ``sh`` (9, 3) lights it in camera axes (normals
    facing the camera have z < 0); without it the image is the albedo.
    """
    height = camera.height if height is None else height
    width = camera.width if width is None else width
    verts_screen = project(verts_cam, camera)
    fragments = rasterize(verts_screen, faces, height, width, cull_backfaces=cull_backfaces)
    mask = fragments.mask.unsqueeze(-1)

    if texture is not None:
        if uv_corners is None:
            raise ValueError("render(): a texture needs uv_corners.")
        albedo = sample_texture(texture, interpolate_corners(fragments, uv_corners)) * mask
    elif vertex_colors is not None:
        albedo = interpolate(fragments, vertex_colors, faces)
    else:
        albedo = mask.to(verts_cam.dtype).expand(height, width, 3)

    normals = F.normalize(interpolate(fragments, vertex_normals(verts_cam, faces), faces), dim=-1)
    shading = shade(normals, sh) * mask if sh is not None else torch.ones_like(albedo)
    return RenderOutput(albedo * shading, fragments.mask, albedo, shading, normals, fragments, verts_screen)
