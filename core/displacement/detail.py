"""Mid-frequency detail: a displacement map over the face UV tile, optimised against the photo(s).

The fitted head explains the face's shape; folds (nasolabial, forehead, crow's feet, under the
eyes) are left to this stage. A displacement along the coarse mesh's normals is parametrised as
an (R, R) map over the face UV tile (bounded by tanh), multiplied by a falloff that is exactly 0 on
the face region's boundary (where the face meets the neck and the eye and mouth sockets), so the
head stays watertight. The face triangles are densified by midpoint subdivision; every dense
vertex is a fixed barycentric combination of coarse vertices, so the dense mesh follows the fitted
one exactly and only the displacement is optimised.

The map is high-passed on the UV island (``highpass_mm``): shape larger than that is the coarse
fit's. The data term compares the high-passed log-luminance of the photo with that of the
displaced face's shading (a polynomial of the normal fitted to the photo), in a square face crop:
low-frequency misfit of shape, light or albedo cannot leak in. Pixels whose high-passed
chromaticity moves (freckles, moles, blotches, make-up, sheen: a white light's shading changes
brightness, not chromaticity) are weighted out and filled from the skin around them first; a
Cauchy loss keeps cast shadows and leftover misfit from growing lumps; the residual is averaged
along the skin's fold directions first, where a fold's shading is constant and a blob's is not.
Guidance ``clip`` adds CLIP feature consistency of a shaded render (the fitted albedo low-passed
over skin, the fitted SH light) with the photo; both modes add a spectrum-weighted frequency Wing
term on the high-passed images, and smoothness (curvature, cheap across the skin's fold
directions), magnitude and left/right symmetry of the map. With several photos of the person,
each photo is a ``DetailView`` (its own pose, camera, light, crop and masks) and the one map is
optimised against the sum of their data terms. Measured against synthetic ground truth by
benchmarks/synthetic_detail.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.spatial import cKDTree

from ..appearance.skin_mask import holdout_checkerboard, skin_mask
from ..appearance.texture import fit_sh, uv_surface
from ..fitting.losses import (
    clip_consistency_loss,
    frequency_wing_loss,
    magnitude_loss,
    masked_mean,
    photometric_loss,
    symmetry_loss,
)
from ..fitting.refinement import CROP_MARGIN, Crop
from ..geometry.face_model import FACE_POLYGONS, SKIN_POLYGONS, VERTEX_REGIONS, FaceModel, boundary_edges
from ..geometry.rendering import (
    Fragments,
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
from ..reconstruction import DetailMaps, Reconstruction
from .clip_features import ClipFeatureExtractor, ClipSettings
from .fold_directions import AlongFoldFilter, FoldCurvaturePrior, FoldField, bulge_support, fold_field

FACE_VERTICES = VERTEX_REGIONS["face"][1]
NARROW_FACE_VERTICES = VERTEX_REGIONS["narrow_face"][1]
SKIN_VERTICES = VERTEX_REGIONS["head_neck"][1]
MIN_FACE_PX = 80.0  # face box side below which the photo has no mid-frequency detail to give
RANDOM_CLIP_WARNING = (
    "CLIP weights are random (pretrained=None): detail is not CLIP-guided in any meaningful sense"
)
GUIDANCE_MODES = ("clip", "photometric")  # clip: CLIP + photometric + frequency; photometric: no CLIP
# Low, mid, high radial bands (core.fitting.losses.DEFAULT_BANDS): the high band is mostly pores, hair and
# JPEG noise, which a displacement should not chase.
FREQUENCY_BAND_WEIGHTS = (1.0, 1.0, 0.25)
PARAMETER_BLUR_TEXELS = 1.0  # Gaussian sigma, see DetailObjective.field
GRAZING_COS = 0.3  # pixels seen more obliquely than this are left out of the data terms
SKIN_MARGIN = 0.03  # skin-mask dilation of eyes, brows and mouth, fraction of the face size
MASK_EROSION = 0.03  # erosion of the data mask's outline, fraction of the face box
SKIN_CHROMA_SIGMAS = 4.0  # 3 already drops the shadowed side of deep folds
CHROMA_FLOOR = 0.003
SHADING_RATIO = (0.6, 1.8)  # photo / coarse render brightness outside this: an occluder, not a fold
OCCLUDER_GROWTH = 0.01  # dilation of those occluders, fraction of the crop side
LUMINANCE = (0.299, 0.587, 0.114)
LOG_FLOOR = 1e-3  # of luminance in [0, 1], before the log
# A white light's shading changes a pixel's brightness, not its chromaticity; albedo marks (melanin,
# blood, make-up) and specular sheen change both. Pixels whose high-passed log-chromaticity moves by
# more than this are (softly) left out of the shading term.
CHROMA_TAU = 0.08
# Log-shading as a polynomial of the normal up to this degree (35 terms), fitted to the photo: the
# fitted 2nd-order SH light cannot reproduce area lights and a coloured sky on a nose or an eye
# socket, and that misfit is mid-frequency, exactly where folds are.
SHADING_DEGREE = 4
SHADING_RIDGE = 1e-3


@dataclass
class DetailSettings:
    iterations: int = 80
    resolution: int = 256  # side of the displacement map over the face UV tile
    render_resolution: int = 256  # side of the square face crop the losses compare
    max_displacement_mm: float = 3.0  # |displacement| < this (tanh)
    strength: float = 1.0  # scales the result (maps and mesh) after the optimisation
    guidance: str = "clip"  # one of GUIDANCE_MODES
    # Loss weights; 0 switches a term off (ablations).
    clip_weight: float = 1.0
    photometric_weight: float = 1.0
    frequency_weight: float = 0.1
    # Curvature of the map along the skin's fold directions (core.displacement.fold_directions; the
    # thin-plate energy where they have none); across them it costs ``fold_across_ratio`` as much.
    # The isotropic prior (200) that kept out what the shading model cannot explain also charged
    # the true folds 5-15x their data gain and removed the narrow ones. Along the directions a
    # fold costs ~1/4 of that and a blob 3/8, so the weight can be 5x: blobs cost ~2x what they did
    # (held-out heads: corr 0.13 -> 0.17, oracle_albedo 0.32 -> 0.37; 1000 isotropic: 0.11).
    smoothness_weight: float = 1000.0
    fold_across_ratio: float = 0.06
    magnitude_weight: float = 2.0
    # Left/right symmetry of the map. What the shading model cannot explain (cast shadows, sheen,
    # albedo marks' residue, a one-sided key light) is mostly one-sided, folds mostly come in pairs;
    # the data term alone prefers explaining that residual to finding folds (synthetic set: the
    # solution from zero lowers it 3x more than the true map does). 10 keeps about half of a clearly
    # one-sided fold pattern (measured on held-out heads with asymmetric folds); 50 and more erase it.
    # With the ridge cap below rejecting much of that residual, 3 (held-out heads, on the fitted
    # surface: corr 0.344 at 10, 0.358 at 3, 0.361 at 1).
    symmetry_weight: float = 3.0
    # Wrinkles are furrows: outside the lower lids (fold_directions.bulge_support) the map, before
    # its high-pass, rises at most this far above the skin (mm, a soft cap; 0: no cap). The truth's
    # mid band has 2/3 of its energy below zero (forehead lines 0.75, crow's feet and nasolabial
    # folds 0.9), the residual-driven detail half: the cap rejects the ridges that cast shadows'
    # edges, sheen and marks' residue would buy (held-out heads: corr 0.171 -> 0.207, on the fitted
    # surface 0.311 -> 0.358).
    ridge_mm: float = 0.017
    # Folds are sparse: the delivered map keeps what stands out of its own level, soft-thresholded at
    # this many times its rms over the face (0: off). Most of the map's small values are the residual
    # the shading model cannot explain, spread over skin that has no fold; each costs its full slope
    # in the normals, where only a right fold can pay (held-out heads: normal error 1.351 -> 1.111
    # deg, coarse 1.091; corr 0.208 -> 0.203, on the fitted surface 0.358 -> 0.361; six heads
    # 1.195 -> 0.990 deg, coarse 0.991, corr 0.276 -> 0.285). The kept folds are shallower by it.
    sparsity: float = 1.5
    clip: ClipSettings = field(default_factory=ClipSettings)
    clip_every: int = 0  # CLIP forward/backward every k-th iteration; 0: 1 on CUDA, 2 on CPU
    subdivision: int = 1  # midpoint subdivision levels of the face triangles
    learning_rate: float = 0.03
    device: str = "auto"
    holdout: bool = False  # leave a checkerboard of face pixels out of the data terms (evaluation)
    falloff_width: float = 0.04  # face-tile UV units (~1 cm) over which displacement ramps up
    # Gaussian sigma (mm) of the high-pass applied to the photo's log-luminance, the render's and
    # the displacement: shape larger than this is the coarse fit's, and its misfit (or the light's,
    # or the albedo's low frequencies) cannot leak into the detail. Folds are 1-4 mm wide; at 3 mm
    # the map also carried few-mm lumps driven by what the model cannot explain (cast shadows,
    # sheen, marks' residue). Synthetic set: 2 mm halves false detail, same correlation.
    highpass_mm: float = 2.0
    # Divide the photo by the fitted albedo before the high-pass. Only for an albedo known to be
    # free of shading (benchmarks' true-albedo oracle): the texture stage's de-lit albedo still
    # holds the folds' shading, which would cancel what the detail must explain.
    use_albedo: bool = False
    shading_scale: float = 0.02  # Cauchy scale of the log-luminance residual (folds: a few percent)
    # Gaussian sigma (mm) along the fold directions over which the shading residual is averaged before
    # the Cauchy loss (core.displacement.fold_directions.AlongFoldFilter; 0: off). A fold's shading is
    # constant along it, a cast shadow's edge, a highlight or a mark's residue mostly is not, so the
    # latter buy less displacement (held-out heads: corr 0.184 -> 0.188; six heads 0.216 -> 0.232).
    fold_residual_mm: float = 4.0
    # Local detail-band shading of the coarse render (log units) above which pixels count less, see
    # DetailObjective._init_shading_target.
    structure_scale: float = 0.015
    albedo_blur_mm: float = 4.0  # low-pass of the albedo, see the module docstring

    @staticmethod
    def from_pipeline(settings) -> DetailSettings:
        """From ``core.pipeline.Settings``' detail fields (iterations, resolution, strength, CLIP)."""
        return DetailSettings(
            iterations=settings.detail_iterations,
            resolution=settings.detail_resolution,
            strength=settings.detail_strength,
            guidance=settings.detail_guidance if settings.detail_guidance in GUIDANCE_MODES else "clip",
            clip=ClipSettings(settings.clip_model, settings.clip_pretrained),
            device=settings.device,
        )

    @property
    def uses_clip(self) -> bool:
        return self.guidance == "clip" and self.clip_weight > 0


# --------------------------------------------------------------------------------------------
# Dense face mesh and falloff


class UVFalloff:
    """Smoothstep of the UV distance to the face island's boundary: 0 on it, 1 from ``width`` on.

    Distances are to points sampled along the boundary edges, endpoints included, so that
    boundary vertices get exactly 0."""

    def __init__(self, segments: np.ndarray, width: float, samples: int = 8):
        t = np.linspace(0.0, 1.0, samples + 1)[None, :, None]
        points = segments[:, :1] * (1 - t) + segments[:, 1:] * t
        self._tree = cKDTree(points.reshape(-1, 2))
        self.width = width

    def __call__(self, tile_uv: np.ndarray) -> np.ndarray:
        dist, _ = self._tree.query(tile_uv.reshape(-1, 2))
        x = np.clip(dist / self.width, 0.0, 1.0)
        return (x * x * (3 - 2 * x)).reshape(tile_uv.shape[:-1]).astype(np.float32)


@dataclass
class DenseFaceMesh:
    """The face-region triangles after midpoint subdivision."""

    faces: np.ndarray  # (Fd, 3) int64
    uvs: np.ndarray  # (Vd, 2) float64 skin-atlas uv (the face tile is u in [0, 0.5])
    weights: sparse.csr_matrix  # (Vd, FACE_VERTICES) barycentric weights of the coarse vertices
    falloff: UVFalloff
    vertex_falloff: np.ndarray  # (Vd,) float32, exactly 0 on the boundary

    @property
    def tile_uvs(self) -> np.ndarray:
        """UVs in the face tile's own [0, 1] square."""
        return self.uvs * np.array([2.0, 1.0])

    def follow(self, per_vertex: np.ndarray) -> np.ndarray:
        """A (V, C) attribute of the coarse mesh (e.g. fitted vertices) at the dense vertices."""
        return self.weights @ per_vertex[:FACE_VERTICES].astype(np.float64)


def _subdivide(faces: np.ndarray, weights: sparse.csr_matrix, uvs: np.ndarray):
    """One midpoint subdivision: a new vertex per edge, each triangle into four (same winding)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = len(uvs) + inverse.reshape(3, -1).T  # new vertex of edges (0, 1), (1, 2), (2, 0)
    a, b, c = faces.T
    ab, bc, ca = mid.T
    children = ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))
    new_faces = np.concatenate([np.stack(child, 1) for child in children])
    halves = 0.5 * (weights[unique[:, 0]] + weights[unique[:, 1]])
    new_uvs = np.concatenate([uvs, 0.5 * (uvs[unique[:, 0]] + uvs[unique[:, 1]])])
    return new_faces, sparse.vstack([weights, halves]).tocsr(), new_uvs


def dense_face_mesh(model: FaceModel, levels: int, falloff_width: float) -> DenseFaceMesh:
    """Subdivide the face-region triangles ``levels`` times, carrying UVs and weights."""
    faces, uv_faces = model.triangles(FACE_POLYGONS)
    uvs = np.zeros((FACE_VERTICES, 2))
    # The face region has no UV seams: duplicated uv ids of a vertex share coordinates (tested).
    uvs[faces.ravel()] = model.atlas_uvs[uv_faces.ravel()]
    weights = sparse.identity(FACE_VERTICES, format="csr")
    faces = faces.astype(np.int64)
    for _ in range(levels):
        faces, weights, uvs = _subdivide(faces, weights, uvs)
    tile_uvs = uvs * np.array([2.0, 1.0])
    falloff = UVFalloff(tile_uvs[boundary_edges(faces)], falloff_width)
    return DenseFaceMesh(faces, uvs, weights, falloff, falloff(tile_uvs))


def face_tile(model: FaceModel, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per texel of a (size, size) face-tile map: the coarse face triangle under it (-1 outside
    the face island) and the texel centres' tile UVs (size, size, 2)."""
    surface = uv_surface(model, size)
    num_face = len(model.triangles(FACE_POLYGONS)[0])  # skin triangles start with the face's
    face_id = surface.face_id[:, :size]
    face_id = np.where(face_id < num_face, face_id, -1)
    centres = (np.arange(size) + 0.5) / size
    uv = np.stack(np.meshgrid(centres, 1 - centres, indexing="xy"), -1)
    return face_id, uv


def uv_stretch(vertices: np.ndarray, model: FaceModel) -> np.ndarray:
    """(F, 2) metres of surface per unit of face-tile u and v for each coarse face triangle."""
    faces, uv_faces = model.triangles(FACE_POLYGONS)
    corners = vertices[faces].astype(np.float64)
    uv = model.atlas_uvs[uv_faces].astype(np.float64) * [2.0, 1.0]
    edges = (corners[:, 1:] - corners[:, :1]).transpose(0, 2, 1)  # (F, 3, 2)
    duv = (uv[:, 1:] - uv[:, :1]).transpose(0, 2, 1)  # (F, 2, 2)
    det = np.linalg.det(duv)
    ok = np.abs(det) > 1e-12
    jac = np.full((len(faces), 3, 2), np.nan)
    jac[ok] = edges[ok] @ np.linalg.inv(duv[ok])  # d(position) / d(u, v)
    stretch = np.linalg.norm(jac, axis=1)
    return np.where(np.isfinite(stretch), stretch, np.nanmedian(stretch, axis=0))


def atlas_metres(vertices: np.ndarray, model: FaceModel, face_id: np.ndarray) -> np.ndarray:
    """(S, 2S, 2) metres of surface per skin-atlas texel along u and v, for the face tile's triangle
    map ``face_id`` (S, S): each face triangle's own stretch there, the median elsewhere."""
    size = face_id.shape[0]
    stretch = uv_stretch(vertices, model) / size
    metres = np.broadcast_to(np.median(stretch, axis=0), (size, 2 * size, 2)).copy()
    island = face_id >= 0
    metres[:, :size][island] = stretch[face_id[island]]
    return metres


# --------------------------------------------------------------------------------------------
# Rendering the displaced face


@dataclass
class DetailRender:
    image: torch.Tensor  # (H, W, 3) albedo x shading, 0 outside the face
    normals: torch.Tensor  # (H, W, 3) unit shading normals, camera axes
    mask: torch.Tensor  # (H, W) bool, the face region covers the pixel
    fragments: Fragments


class DetailScene:
    """The fitted face as a dense mesh seen through a square crop of the photo.

    Shading normals are the coarse mesh's smooth normals plus what the displacement changes in
    the dense mesh's normals (displaced minus undisplaced): zero displacement renders exactly like
    the smooth coarse face, not like the faceted flat subdivision."""

    def __init__(self, rec: Reconstruction, mesh: DenseFaceMesh, resolution: int, device: torch.device):
        self.device = device
        self.size = resolution
        self.crop = Crop.around(rec.face_box, resolution)
        self.camera = self.crop.camera(rec.params.camera)

        def t(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)

        positions, normals = dense_frame(rec, mesh)
        rotation = rec.params.rotation_matrix()
        positions = positions @ rotation.T + rec.params.translation
        normals = normals @ rotation.T
        self.faces = t(mesh.faces, torch.int64)
        self.positions = t(positions)
        self.normals = t(normals)  # displacement directions and smooth shading normals
        self.flat_normals = vertex_normals(self.positions, self.faces)
        self.uv_corners = t(mesh.uvs[mesh.faces])
        narrow = mesh.follow((np.arange(FACE_VERTICES) < NARROW_FACE_VERTICES)[:, None].astype(float))
        self.narrow = t(narrow)
        self.albedo = t(rec.albedo.astype(np.float32) / 255)  # (S, 2S, 3); DetailObjective smooths it
        self.sh = t(rec.params.sh)
        self.photo = t(self.crop.image(rec.image).astype(np.float32) / 255)

    def vertices(self, displacement_mm: torch.Tensor) -> torch.Tensor:
        """Camera-space dense vertices for a per-vertex displacement (Vd,) in millimetres."""
        return self.positions + self.normals * (displacement_mm * 1e-3)[:, None]

    def render(self, displacement_mm: torch.Tensor, albedo: torch.Tensor | None = None,
               sh: torch.Tensor | None = None) -> DetailRender:
        """Shaded render; ``albedo`` (S, 2S, 3) defaults to the skin-smoothed fitted one, ``sh`` to
        the fitted light (camera axes)."""
        verts = self.vertices(displacement_mm)
        # Visibility and barycentrics without gradients: a few millimetres barely move the
        # silhouette, and the shading normals carry the signal (half the backward's cost).
        frags = rasterize(project(verts.detach(), self.camera), self.faces, self.size, self.size)
        detail = vertex_normals(verts, self.faces) - self.flat_normals
        shading_normals = F.normalize(self.normals + detail, dim=-1)
        normals = F.normalize(interpolate(frags, shading_normals, self.faces), dim=-1)
        texture = self.albedo if albedo is None else albedo
        colour = sample_texture(texture, interpolate_corners(frags, self.uv_corners))
        image = colour * shade(normals, self.sh if sh is None else sh) * frags.mask[..., None]
        return DetailRender(image, normals, frags.mask, frags)


def dense_frame(rec: Reconstruction, mesh: DenseFaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """Model-space positions (Vd, 3) of the dense mesh on the fitted head and its displacement
    directions: the coarse skin's smooth vertex normals, interpolated (unit, (Vd, 3))."""
    skin_faces, _ = rec.model.triangles(SKIN_POLYGONS)
    coarse = torch.from_numpy(rec.vertices[:SKIN_VERTICES].astype(np.float64))
    normals = mesh.follow(vertex_normals(coarse, torch.from_numpy(skin_faces.astype(np.int64))).numpy())
    return mesh.follow(rec.vertices), normals / np.linalg.norm(normals, axis=1, keepdims=True)


def skin_albedo(rec: Reconstruction, skin_uvs: np.ndarray, blur_mm: float, grid: int) -> np.ndarray:
    """The fitted skin-atlas albedo in [0, 1] with its face tile low-passed over skin only.

    A normalised convolution whose weights are the texels seen as skin (``skin_uvs``, atlas UVs of
    the skin pixels, splatted on a ``grid``-texel tile): brows, lips, eyes and hair do not bleed
    into the skin's albedo, where their halos would read as folds. Texels with no skin near them
    keep the fitted albedo."""
    albedo = rec.albedo.astype(np.float32) / 255
    size = albedo.shape[0]
    weight = np.zeros((grid, grid), np.float32)
    cols = np.clip((skin_uvs[:, 0] * 2 * grid).astype(int), 0, grid - 1)
    rows = np.clip(((1 - skin_uvs[:, 1]) * grid).astype(int), 0, grid - 1)
    weight[rows, cols] = 1
    weight = cv2.morphologyEx(weight, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    weight = cv2.resize(weight, (size, size), interpolation=cv2.INTER_LINEAR)
    sigma = blur_mm / (1e3 * float(np.median(uv_stretch(rec.vertices, rec.model))) / size)
    tile = albedo[:, :size]
    num = cv2.GaussianBlur(tile * weight[..., None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[..., None]
    albedo[:, :size] = np.where(den > 1e-2, num / np.maximum(den, 1e-2), tile)
    return albedo


def _loss_mask(rec: Reconstruction, scene: DetailScene, render: DetailRender) -> np.ndarray:
    """Bool (H, W): visible, not grazing, narrow-face skin without eyes, brows and mouth."""
    size = scene.size
    narrow = interpolate(render.fragments, scene.narrow, scene.faces)[..., 0].cpu().numpy() > 0.999
    # Misfit at the outline (jaw, hairline) is not detail: keep away from it (not from the holes).
    grow = max(1, int(round(MASK_EROSION * size / CROP_MARGIN)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
    outline = cv2.erode((render.mask.cpu().numpy() & narrow).astype(np.uint8), disk) > 0
    facing = (-(render.normals * _view_rays(scene)).sum(-1)).cpu().numpy() > GRAZING_COS
    landmarks = rec.detected_landmarks
    if landmarks is not None and len(landmarks) >= 468:
        skin = skin_mask(scene.crop.points(landmarks), size, size, margin=SKIN_MARGIN)
    else:
        skin = ~_features_mask_68(scene.crop.points(rec.landmarks68_2d), size)
    mask = outline & facing & skin
    return mask & _skin_coloured(scene.photo.cpu().numpy(), mask)


def _skin_coloured(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixels whose chromaticity is within ``SKIN_CHROMA_SIGMAS`` robust standard deviations of the
    masked pixels' median: drops caps, glasses, hands that the landmark mask lets in. Chromaticity,
    not brightness, so that the shading (what the detail explains) stays."""
    chroma = photo[..., :2] / np.maximum(photo.sum(-1, keepdims=True), 1e-3)
    values = chroma[mask]
    if len(values) < 16:
        return mask
    centre = np.median(values, axis=0)
    spread = 1.4826 * np.median(np.abs(values - centre), axis=0) + CHROMA_FLOOR
    return np.abs((chroma - centre) / spread).max(-1) < SKIN_CHROMA_SIGMAS


def _shading_inliers(photo: torch.Tensor, render: torch.Tensor) -> np.ndarray:
    """Bool (H, W): pixels whose brightness the coarse render explains within SHADING_RATIO.
    Mid-frequency shading changes brightness by tens of percent (deep folds ~25 %); glasses
    frames, hair strands and cap brims by more, and no displacement should imitate them."""
    weights = photo.new_tensor(LUMINANCE)
    ratio = ((photo @ weights).clamp_min(1e-3) / (render @ weights).clamp_min(1e-3)).cpu().numpy()
    outliers = ((ratio < SHADING_RATIO[0]) | (ratio > SHADING_RATIO[1])).astype(np.uint8)
    # Also their borders: mixed pixels, cast shadows (a frame's on the skin below it).
    grow = max(1, round(OCCLUDER_GROWTH * len(ratio)))
    return cv2.dilate(outliers, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)) == 0


def _view_rays(scene: DetailScene) -> torch.Tensor:
    """(H, W, 3) unit camera-space rays through the pixel centres of the crop."""
    cam = scene.camera
    centres = torch.arange(scene.size, dtype=torch.float32, device=scene.device) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    rays = torch.stack([(x - cam.cx) / cam.focal, (y - cam.cy) / cam.focal, torch.ones_like(x)], -1)
    return F.normalize(rays, dim=-1)


def _features_mask_68(points: np.ndarray, size: int) -> np.ndarray:
    """Eyes, brows and inner mouth from 68 iBUG landmarks (when no MediaPipe landmarks exist)."""
    mask = np.zeros((size, size), np.uint8)
    face = np.ptp(points, axis=0).max()
    grow = max(1, int(round(SKIN_MARGIN * face)))
    for loop in (range(36, 42), range(42, 48), range(60, 68)):
        cv2.fillPoly(mask, [np.round(points[list(loop)] - 0.5).astype(np.int32)], 1)
    for brow in (range(17, 22), range(22, 27)):
        cv2.polylines(mask, [np.round(points[list(brow)] - 0.5).astype(np.int32)], False, 1,
                      thickness=max(1, int(round(0.08 * face))))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)) > 0


def gaussian_taps(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1D Gaussian taps (2 ceil(3 sigma) + 1,)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    return (taps / taps.sum()).to(device)


def blur(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), channel by channel, zero padding."""
    channels = image.shape[1]
    k = len(taps)
    x = F.conv2d(image, taps.view(1, 1, 1, k).expand(channels, 1, 1, k), padding=(0, k // 2), groups=channels)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(channels, 1, k, 1), padding=(k // 2, 0), groups=channels)


class MaskedFilter:
    """Gaussian low- and high-pass normalised over a fixed ``mask`` (B, 1, H, W): nothing outside
    the mask (background, eyes, the map's off-island texels) bleeds in. The normaliser is blurred
    once, not on every optimisation step."""

    def __init__(self, mask: torch.Tensor, taps: torch.Tensor):
        self.mask, self.taps = mask, taps
        self.norm = blur(mask, taps).clamp_min(1e-6)

    def low(self, image: torch.Tensor) -> torch.Tensor:
        return blur(image * self.mask, self.taps) / self.norm

    def high(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` minus its low-pass; 0 outside the mask."""
        return (image - self.low(image)) * self.mask


def normal_basis(normals: torch.Tensor, degree: int) -> torch.Tensor:
    """(..., 3) unit normals -> (..., K) monomials x^i y^j z^k, i + j + k <= ``degree``."""
    x, y, z = normals.unbind(-1)
    terms = [x**i * y**j * z**k for i in range(degree + 1) for j in range(degree + 1 - i)
             for k in range(degree + 1 - i - j)]
    return torch.stack(terms, -1)


def log_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 1, H, W) log luminance."""
    lum = rgb @ rgb.new_tensor(LUMINANCE)
    return torch.log(lum.clamp_min(LOG_FLOOR))[None, None]


# --------------------------------------------------------------------------------------------
# The objective


class DetailView:
    """One photo's part of the objective: its render of the displaced face (own pose, camera and
    light), pixel masks, shading target and CLIP features."""

    def __init__(self, rec: Reconstruction, mesh: DenseFaceMesh, settings: DetailSettings,
                 extractor: ClipFeatureExtractor | None, device: torch.device, folds: FoldField):
        self.device, self.extractor, self.folds = device, extractor, folds
        self.fit = rec.photos[0] if rec.photos else None  # this photo's PhotoFit, for its metrics
        self.scene = DetailScene(rec, mesh, settings.render_resolution, device)
        self._init_data(rec, settings)
        self._clip_value: torch.Tensor | None = None
        self._clip_grad: torch.Tensor | None = None
        if extractor is not None:
            self.clip_mask = self.data_mask[None, None].float()
            with torch.no_grad():
                self.clip_target = [f.detach() for f in extractor.features(self.photo, self.clip_mask)]

    def _init_data(self, rec: Reconstruction, settings: DetailSettings) -> None:
        """Photo crop, pixel masks (with ``holdout``: data and held-out halves) and the skin albedo."""
        zero = torch.zeros(len(self.scene.positions), device=self.device)
        coarse = self.scene.render(zero)
        if not np.any(rec.params.sh):  # refinement was off: light from the photo, as texture did
            self._fit_light(coarse)
            coarse = self.scene.render(zero)
        mask = _loss_mask(rec, self.scene, coarse)
        # The albedo's weights use all skin pixels, held-out ones too: rec.albedo saw them anyway,
        # and coarse and detailed renders share this albedo, so held-out errors compare geometry.
        # Twice: occluders found with the first albedo must not darken the final one.
        uv = interpolate_corners(coarse.fragments, self.scene.uv_corners).cpu().numpy()
        for _ in range(2):
            albedo = skin_albedo(rec, uv[mask], settings.albedo_blur_mm, self.scene.size // 2)
            self.scene.albedo = torch.from_numpy(albedo).to(self.device)
            mask = mask & _shading_inliers(self.scene.photo, self.scene.render(zero).image)
        held_out = holdout_checkerboard(self.scene.size) if settings.holdout else np.zeros_like(mask)
        self.data_mask = torch.from_numpy(mask & ~held_out).to(self.device)
        self.eval_mask = torch.from_numpy(mask & held_out if settings.holdout else mask).to(self.device)
        self.photo = self.scene.photo.permute(2, 0, 1)[None]
        self._init_shading_target(rec, coarse, settings)

    def _init_shading_target(self, rec: Reconstruction, coarse: DetailRender, settings: DetailSettings
                              ) -> None:
        """The high-passed log-luminance of the photo (what the detail's shading must explain) and
        the per-pixel weights of that comparison (data mask x achromatic-change weight)."""
        scene = self.scene
        depth_mm = 1e3 * float(scene.positions[:, 2].median())
        sigma_px = settings.highpass_mm * scene.camera.focal / depth_mm
        photo = scene.photo
        if settings.use_albedo:
            uv = interpolate_corners(coarse.fragments, scene.uv_corners)
            albedo = sample_texture(torch.from_numpy(rec.albedo.astype(np.float32) / 255).to(self.device), uv)
            photo = photo / albedo.clamp_min(0.02)
        mask = self.data_mask[None, None].float()
        self.band = MaskedFilter(mask, gaussian_taps(sigma_px, self.device))  # the detail band of the image
        log_rgb = torch.log(photo.clamp_min(LOG_FLOOR)).permute(2, 0, 1)[None]
        log_chroma = torch.cat([log_rgb[:, :1] - log_rgb[:, 1:2], log_rgb[:, 2:] - log_rgb[:, 1:2]], 1)
        chroma = self.band.high(log_chroma)
        weight = torch.exp(-(chroma.square().sum(1, keepdim=True) / CHROMA_TAU**2))
        weight = -F.max_pool2d(-weight, 3, stride=1, padding=1)  # also a mark's blurred rim
        self.shading_weight = mask * weight
        # Marks are filled from the skin around them before the high-pass: left in, a dark freckle
        # would ring the high-passed image with a bright halo that no weight covers.
        log_photo = log_luminance(photo)
        fill_taps = gaussian_taps(sigma_px / 3, self.device)
        support = blur(self.shading_weight, fill_taps)
        fill = blur(log_photo * self.shading_weight, fill_taps) / support.clamp_min(1e-6)
        log_photo = torch.where(support > 1e-3,
                                weight * log_photo + (1 - weight) * fill, log_photo)
        self.shading_target = self.band.high(log_photo)
        # The photo's log-luminance as a function of the coarse normal, on the weighted pixels.
        pick = self.shading_weight[0, 0] > 0.5
        basis = normal_basis(coarse.normals[pick].double(), SHADING_DEGREE)
        gram = basis.T @ basis + SHADING_RIDGE * len(basis) * torch.eye(basis.shape[1], dtype=basis.dtype,
                                                                         device=basis.device)
        coeffs = torch.linalg.solve(gram, basis.T @ log_photo[0, 0][pick].double())
        self._shading_coeffs = coeffs.float()
        # Where the coarse face itself shades strongly in the detail band (nose, eye sockets, lips,
        # chin), a small misfit of its shape or of the light is as strong as any fold: trust less.
        structure = self.band.low(self.band.high(self.log_shading(coarse.normals)).abs())
        trust = torch.exp(-((structure / settings.structure_scale) ** 2))
        self.shading_weight = self.shading_weight * trust
        self.along = None
        if settings.fold_residual_mm > 0:
            uv = interpolate_corners(coarse.fragments, scene.uv_corners)
            tile_uv = uv * uv.new_tensor([2.0, 1.0])  # the face tile is u in [0, 0.5]
            self.along = AlongFoldFilter(self.folds, tile_uv, coarse.mask,
                                         settings.fold_residual_mm * scene.camera.focal / depth_mm,
                                         self.shading_weight)

    def log_shading(self, normals: torch.Tensor) -> torch.Tensor:
        """(1, 1, H, W) log-luminance of the shading at (H, W, 3) normals (the photo-fitted
        polynomial of the normal; albedo and light's level folded in)."""
        return (normal_basis(normals, SHADING_DEGREE) @ self._shading_coeffs)[None, None]

    def _fit_light(self, coarse: DetailRender) -> None:
        mask = coarse.mask
        colours, normals = (x[mask].double().cpu().numpy() for x in (self.scene.photo, coarse.normals))
        sh = fit_sh(colours, normals, np.ones(len(colours)))
        self.scene.sh = torch.from_numpy(sh).to(self.device, torch.float32)

    def data_terms(self, displacement_mm: torch.Tensor, s: DetailSettings, refresh_clip: bool
                   ) -> dict[str, torch.Tensor]:
        """This photo's unweighted data terms for a dense-vertex displacement."""
        render = self.scene.render(displacement_mm)
        shading = self.band.high(self.log_shading(render.normals))
        terms: dict[str, torch.Tensor] = {}
        if s.photometric_weight > 0:
            # Cauchy: a residual far beyond a fold's (cast shadows, misfit at the nose, a mark the
            # chroma test missed) stops pulling instead of growing a lump to explain it.
            residual = shading - self.shading_target
            if self.along is not None:
                residual = self.along(residual)
            residual = residual.square()
            cauchy = torch.log1p(residual / s.shading_scale**2)
            terms["photometric"] = masked_mean(cauchy, self.shading_weight)
        if s.frequency_weight > 0:
            terms["frequency"] = frequency_wing_loss(shading, self.shading_target, self.shading_weight,
                                                     band_weights=FREQUENCY_BAND_WEIGHTS)
        if s.uses_clip:
            terms["clip"] = self._clip_term(render.image.permute(2, 0, 1)[None], refresh_clip)
        return terms

    def _clip_term(self, image: torch.Tensor, refresh: bool) -> torch.Tensor:
        """CLIP consistency. The encoder's forward + backward is the costliest step, so it runs only
        when ``refresh``; in between, the term keeps the last value and the image-space gradient
        of that evaluation (a first-order expansion), so every step is still CLIP-guided."""
        if refresh or self._clip_grad is None:
            leaf = image.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = clip_consistency_loss(self.extractor.features(leaf, self.clip_mask), self.clip_target,
                                             masks=self.clip_mask, weights=self.extractor.layer_weights)
                (self._clip_grad,) = torch.autograd.grad(loss, leaf)
            self._clip_value = loss.detach()
        return self._clip_value + (self._clip_grad * (image - image.detach())).sum()

    def held_out_error(self, displacement_mm: torch.Tensor) -> float:
        """Photometric loss of the render on the evaluation pixels."""
        with torch.no_grad():
            render = self.scene.render(displacement_mm)
            mask = (self.eval_mask & render.mask)[None, None].float()
            return float(photometric_loss(render.image.permute(2, 0, 1)[None], self.photo, mask))


def detail_views(rec: Reconstruction) -> list[Reconstruction]:
    """``rec`` as each of its photos saw it: ``rec`` itself (its single-photo fields are the first
    photo's), then the other photos whose face is large enough for detail."""
    others = [rec.seen_from(p) for p in rec.photos[1:]]
    return [v for v in [rec, *others] if not face_too_small(v)]


def cap_ridges(field_mm: torch.Tensor, cap_mm: float) -> torch.Tensor:
    """``field_mm`` with its positive part softly capped at ``cap_mm``: x - softplus(k x) / k + cap,
    k = log(2) / cap (0 -> 0 with slope 1/2; a furrow keeps its shape, raised by the cap, which the
    map's high-pass removes). Written so that 0 maps to exactly 0: a zero map stays zero."""
    log2 = float(np.log(2))
    k = log2 / cap_mm
    return field_mm - (F.softplus(k * field_mm) - log2) / k


class DetailObjective:
    """Displacement map -> weighted losses: each photo's data terms summed, the regularisers once.
    Terms whose weight is 0 are not computed."""

    def __init__(self, rec: Reconstruction, settings: DetailSettings, extractor: ClipFeatureExtractor | None,
                 device: torch.device):
        if settings.guidance not in GUIDANCE_MODES:
            raise ValueError(f"Unknown detail guidance {settings.guidance!r}: use one of {GUIDANCE_MODES}.")
        if settings.uses_clip and extractor is None:
            raise ValueError("CLIP guidance needs a ClipFeatureExtractor.")
        extractor = extractor if settings.uses_clip else None
        self.settings, self.device, self.extractor = settings, device, extractor
        self.mesh = dense_face_mesh(rec.model, settings.subdivision, settings.falloff_width)
        self._init_uv_maps(rec)
        self.views = [DetailView(v, self.mesh, settings, extractor, device, self.folds)
                      for v in detail_views(rec)]

    def _init_uv_maps(self, rec: Reconstruction) -> None:
        """Face island, falloff map, the dense vertices' sampling grid on the (R, R) tile, and the
        blur kernels of the parameters and of the map's high-pass."""
        size = self.settings.resolution
        face_id, tile_uv = face_tile(rec.model, size)
        island = face_id >= 0
        falloff = np.zeros((size, size), np.float32)
        falloff[island] = self.mesh.falloff(tile_uv[island])
        self.island = torch.from_numpy(island.astype(np.float32)).to(self.device)[None, None]
        self.falloff_map = torch.from_numpy(falloff).to(self.device)
        self.vertex_falloff = torch.from_numpy(self.mesh.vertex_falloff).to(self.device)
        grid = self.mesh.tile_uvs * 2 - 1
        grid[:, 1] *= -1  # v = 1 is the top row
        self.vertex_grid = torch.from_numpy(grid.astype(np.float32)).to(self.device).view(1, 1, -1, 2)
        self._param_taps = gaussian_taps(PARAMETER_BLUR_TEXELS, self.device)
        texel_mm = 1e3 * float(np.median(uv_stretch(rec.vertices, rec.model))) / size
        map_taps = gaussian_taps(self.settings.highpass_mm / texel_mm, self.device)
        self._map_band = MaskedFilter(self.island, map_taps)
        landmarks_uv = self.mesh.tile_uvs[rec.model.landmarks68]  # coarse vertices come first
        self.folds = fold_field(landmarks_uv, tile_uv)
        self.curvature = FoldCurvaturePrior(self.folds, self.island, self.settings.fold_across_ratio)
        furrows = (1 - bulge_support(landmarks_uv, tile_uv)) * island
        self.furrows = torch.from_numpy(furrows.astype(np.float32)).to(self.device)

    def initial_parameters(self) -> torch.Tensor:
        size = self.settings.resolution
        return torch.zeros(size, size, device=self.device, requires_grad=True)

    def field(self, params: torch.Tensor) -> torch.Tensor:
        """(R, R) displacement in mm before the falloff, from the unbounded parameters.

        The parameters are blurred first: Adam moves every texel by about the learning rate
        whatever its gradient's size, so texels with weak, noisy gradients (between the dense
        vertices, at the mask's border) would otherwise turn into texel-scale noise."""
        blurred = blur(params[None, None], self._param_taps)
        field = self.settings.max_displacement_mm * torch.tanh(blurred)
        if self.settings.ridge_mm > 0:
            field = torch.lerp(field, cap_ridges(field, self.settings.ridge_mm), self.furrows)
        return self._map_band.high(field)[0, 0]

    def delivered_field(self, params: torch.Tensor) -> torch.Tensor:
        """``field`` as the results hold it: soft-thresholded at ``sparsity`` times its rms (a
        sparse map; the optimisation itself sees the whole field, whose small values carry the
        gradients that let a fold grow)."""
        field_mm = self.field(params)
        if self.settings.sparsity <= 0:
            return field_mm
        island = self.island[0, 0] > 0
        level = self.settings.sparsity * field_mm[island].square().mean().sqrt()
        return torch.sign(field_mm) * F.relu(field_mm.abs() - level)

    def vertex_displacement(self, field_mm: torch.Tensor) -> torch.Tensor:
        """(Vd,) mm at the dense vertices, falloff applied (exactly 0 on the boundary)."""
        sampled = F.grid_sample(field_mm[None, None], self.vertex_grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
        return sampled.view(-1) * self.vertex_falloff

    def evaluate(self, params: torch.Tensor, refresh_clip: bool = True
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and the unweighted value of each active term (data terms summed over photos)."""
        s = self.settings
        field_mm = self.field(params)
        displacement = self.vertex_displacement(field_mm)
        terms: dict[str, torch.Tensor] = {}
        for view in self.views:
            for name, value in view.data_terms(displacement, s, refresh_clip).items():
                terms[name] = terms[name] + value if name in terms else value
        # The regularisers act on the field before the falloff: where the falloff is small the data
        # barely move it, and without a pull of its own Adam's normalised steps would let it wander.
        map_ = field_mm[None, None]
        if s.smoothness_weight > 0:
            terms["smoothness"] = self.curvature(map_)
        if s.magnitude_weight > 0:
            terms["magnitude"] = magnitude_loss(map_, self.island)
        if s.symmetry_weight > 0:
            terms["symmetry"] = symmetry_loss(map_, self.island)
        weights = {"photometric": s.photometric_weight, "frequency": s.frequency_weight,
                   "clip": s.clip_weight, "smoothness": s.smoothness_weight,
                   "magnitude": s.magnitude_weight, "symmetry": s.symmetry_weight}
        total = sum(weights[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def held_out_errors(self, params: torch.Tensor | None) -> list[float]:
        """Per photo: photometric loss on the evaluation pixels (held-out squares with
        ``holdout``) of the detailed render, or of the coarse one for ``params=None``."""
        with torch.no_grad():
            disp = (torch.zeros_like(self.vertex_falloff) if params is None
                    else self.vertex_displacement(self.delivered_field(params)))
        return [view.held_out_error(disp) for view in self.views]

    def held_out_error(self, params: torch.Tensor | None) -> float:
        """``held_out_errors`` averaged over the photos."""
        return float(np.mean(self.held_out_errors(params)))


# --------------------------------------------------------------------------------------------
# Optimisation


@dataclass
class DetailResult:
    field_mm: np.ndarray  # (R, R) face-tile displacement as delivered, before the falloff, strength 1
    displacement_mm: np.ndarray  # (R, R) with the falloff
    vertex_displacement_mm: np.ndarray  # (Vd,) at the dense vertices, with the falloff
    history: list[dict[str, float]]  # per iteration: total and each active term (unweighted)
    metrics: dict[str, float]
    warnings: list[str]
    params: torch.Tensor  # (R, R) optimised parameters (for DetailObjective.held_out_error)


def clip_interval(settings: DetailSettings, device: torch.device) -> int:
    """Iterations between CLIP evaluations (``settings.clip_every``, or by device when 0)."""
    if settings.clip_every > 0:
        return settings.clip_every
    # ViT-B/32 forward + backward at 224 px takes ~0.3 s on 2 CPU cores, 4x a whole iteration
    # without it; the first-order reuse in between (DetailObjective._clip_term) keeps the guidance.
    return 1 if device.type == "cuda" else 2


def optimise_detail(objective: DetailObjective, progress: Progress | None = None,
                    initial: torch.Tensor | None = None) -> DetailResult:
    """Adam on the displacement map's parameters, from zero or from ``initial`` (R, R) parameters
    (benchmarks start from the true map to see whether the loss keeps it). A non-finite loss or
    gradient stops the run and keeps the last state whose loss was finite."""
    progress = progress or Progress()
    s = objective.settings
    params = (objective.initial_parameters() if initial is None
              else initial.detach().to(objective.device).clone().requires_grad_(True))
    opt = torch.optim.Adam([params], lr=s.learning_rate)
    every = clip_interval(s, objective.device)
    history: list[dict[str, float]] = []
    warnings: list[str] = []
    good = params.detach().clone()
    start = time.perf_counter()
    progress.stage("detail", s.iterations)
    for it in range(s.iterations + 1):  # the last evaluation scores the final state
        opt.zero_grad()
        last = it == s.iterations
        total, terms = objective.evaluate(params, refresh_clip=last or it % every == 0)
        if not torch.isfinite(total):
            warnings.append(f"Detail optimisation diverged at iteration {it}; kept the last good state.")
            break
        good = params.detach().clone()
        history.append({"total": float(total.detach()), **terms})
        if last:
            break
        total.backward()
        if not torch.isfinite(params.grad).all():
            warnings.append(f"Detail gradients were not finite at iteration {it}; kept the last good state.")
            break
        opt.step()
        progress.advance()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        field_mm = objective.delivered_field(good)
        vertex = objective.vertex_displacement(field_mm)
    displacement = (field_mm * objective.falloff_map).cpu().numpy()
    island = objective.island[0, 0].cpu().numpy() > 0
    metrics = {
        "detail_iterations": float(max(len(history) - 1, 0)),
        "detail_seconds_per_iteration": seconds / max(len(history), 1),
        "detail_rms_mm": float(np.sqrt(np.mean(displacement[island] ** 2))),
    }
    if history:
        for name in history[0]:
            metrics[f"detail_{name}_before"] = history[0][name]
            metrics[f"detail_{name}_after"] = history[-1][name]
    return DetailResult(field_mm.cpu().numpy(), displacement, vertex.cpu().numpy(), history, metrics,
                        warnings, good)


# --------------------------------------------------------------------------------------------
# Baking the outputs


def bake_normal_map(displacement_mm: np.ndarray, metres_per_texel: np.ndarray) -> np.ndarray:
    """Tangent-space normal map (H, W, 3) uint8 of a height map (H, W) in mm whose texels are
    ``metres_per_texel`` (H, W, 2) apart on the surface along u and v. OpenGL convention: red is
    +u (right), green is +v (up the texture, i.e. towards row 0), blue is the normal."""
    height = np.asarray(displacement_mm, np.float64) * 1e-3
    d_row, d_col = np.gradient(height)
    slope_u = d_col / metres_per_texel[..., 0]
    slope_v = -d_row / metres_per_texel[..., 1]  # rows go down, v goes up
    normal = np.stack([-slope_u, -slope_v, np.ones_like(slope_u)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.clip(np.rint((normal * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)


def detail_maps(rec: Reconstruction, objective: DetailObjective, result: DetailResult,
                strength: float = 1.0) -> DetailMaps:
    """Skin-atlas displacement and normal maps (the albedo's size) and the dense displaced mesh."""
    size = rec.albedo.shape[0]
    face_id, tile_uv = face_tile(rec.model, size)
    island = face_id >= 0
    falloff = np.zeros((size, size), np.float32)
    falloff[island] = objective.mesh.falloff(tile_uv[island])
    field_mm = cv2.resize(result.field_mm, (size, size), interpolation=cv2.INTER_CUBIC)
    displacement = np.zeros((size, 2 * size), np.float32)
    displacement[:, :size] = strength * field_mm * falloff

    normal_map = bake_normal_map(displacement, atlas_metres(rec.vertices, rec.model, face_id))

    mesh = objective.mesh
    positions, directions = dense_frame(rec, mesh)
    vertices = positions + (strength * 1e-3 * result.vertex_displacement_mm)[:, None] * directions
    return DetailMaps(displacement, normal_map, vertices.astype(np.float32), mesh.faces.astype(np.int32),
                      mesh.uvs.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Pipeline entry


def face_too_small(rec: Reconstruction) -> bool:
    box = rec.face_box
    return max(box[2] - box[0], box[3] - box[1]) < MIN_FACE_PX


def clip_extractor(settings: DetailSettings) -> ClipFeatureExtractor:
    """The CLIP encoder of ``settings.clip`` on ``settings.device``; ``AssetError`` when its weights
    are missing (never silently random: only ``pretrained=None`` asks for random weights)."""
    return ClipFeatureExtractor(settings.clip, select_device(settings.device))


def add_detail(rec: Reconstruction, settings, progress: Progress | None = None,
               warnings: list[str] | None = None,
               extractor: ClipFeatureExtractor | None = None) -> DetailMaps | None:
    """Optimise mid-frequency detail for ``rec`` and store it in ``rec.detail``: one displacement
    map against all of ``rec``'s photos (each rendered with its own pose, camera and light).

    ``settings``: ``DetailSettings``, or the pipeline's ``Settings`` (its detail fields are used).
    ``extractor``: a CLIP encoder to reuse (e.g. across a batch, or built early to fail fast when
    weights are missing); by default one is built from ``settings.clip``. Warnings go to
    ``warnings`` (default ``rec.warnings``), metrics to ``rec.metrics`` (and each photo's
    photometric error before/after to its ``PhotoFit.metrics``). A photo whose face is smaller
    than ``MIN_FACE_PX`` is not used; without any, the coarse result stays (a warning,
    ``rec.detail`` stays None)."""
    if not isinstance(settings, DetailSettings):
        settings = DetailSettings.from_pipeline(settings)
    notes = rec.warnings if warnings is None else warnings
    if not detail_views(rec):
        notes.append(f"The face is smaller than {MIN_FACE_PX:.0f} px across: no mid-frequency detail was "
                     "added (use a larger or closer photo of the face).")
        return None
    device = select_device(settings.device)
    if settings.uses_clip:
        extractor = extractor or clip_extractor(settings)
        if not extractor.pretrained:
            notes.append(RANDOM_CLIP_WARNING)
    else:
        extractor = None
    with cpu_threads(1, device):  # many small ops: one thread is several times faster (rendering.py)
        objective = DetailObjective(rec, settings, extractor, device)
        before = objective.held_out_errors(None)
        result = optimise_detail(objective, progress)
        after = objective.held_out_errors(result.params)
    for view, error_before, error_after in zip(objective.views, before, after):
        if view.fit is not None:  # how well the detailed face explains each photo used
            view.fit.metrics.update(detail_render_error_before=error_before,
                                    detail_render_error_after=error_after)
    notes.extend(result.warnings)
    rec.metrics.update(result.metrics)
    rec.detail = detail_maps(rec, objective, result, settings.strength)
    rec.detail.guidance = settings.guidance if extractor is not None else "photometric"
    rec.detail.clip_weights = extractor.weights_source if extractor is not None else None
    return rec.detail
