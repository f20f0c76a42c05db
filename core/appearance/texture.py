"""UV albedo from the photo: unwrap by the fitted projection, de-light, complete what was unseen.

Two steps, kept apart so that several photos can be fused between them:

``unwrap`` (one photo): every texel of the skin atlas (core.geometry.face_model.FaceModel.atlas_uvs) gets
a 3D point on the fitted head; projecting it into the photo gives its colour. Its weight is the
product of the geometric visibility (z-buffer, angle to the camera) and the photo's skin trust
(core.appearance.skin_trust): a texel seen only through hair, background, glasses or clothes counts as
unseen. The light is a robust luminance SH fit on trusted skin only; dividing by it removes the
shading, and texels far brighter or darker than the diffuse model (specular highlights, cast
shadows) are clamped to it and lose weight instead of being baked in.

``complete`` (any number of photos' evidence): unseen texels take the mirrored texel where that
was seen (the ICT mesh and its UVs are left/right symmetric: mirroring is a horizontal flip within
each UV tile); the rest gets a smooth colour field solved on the mesh vertices (data where seen,
the person's skin tone far from it, plus a low-frequency 3D variation), so it is continuous
across UV island borders by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import cv2
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..errors import LikenessError
from ..geometry.face_model import SKIN_POLYGONS, FaceModel, boundary_edges
from ..geometry.params import FaceParams
from ..geometry.rendering import rasterize, sh_basis, vertex_normals
from .clipping import unclip_skin
from .skin_trust import SkinTrust
from .white_balance import Illuminant, estimate_illuminant, remove_illuminant

# Visibility weight ramps up between these cosines of the angle between normal and view ray.
GRAZING_COS = (0.15, 0.5)
DEPTH_TOLERANCE_M = 0.004
MIN_SHADING = 0.15  # do not divide dark, badly-lit texels into noise
SHADING_TRUST = (0.25, 0.5)  # relative shading: texels darker than this are trusted less (noise)
OUTLIER_BAND = 0.12  # least relative deviation from the diffuse model that counts as an outlier
FEATHER = 1 / 256  # of the atlas height: seen data fades into the fill over about this distance
OPAQUE_WEIGHT = 0.3  # evidence weight (visibility x trust x inlier) from which a texel is its own colour
SMOOTHNESS = 2.0  # mesh-Laplacian weight of the fill (larger: smoother, reaches further)
TONE_PULL = 0.02  # pull of the fill towards the skin tone far from seen texels
VARIATION_SPACINGS_M = (0.04, 0.015)  # lattice spacings of the fill's variation (two octaves)
SCALP_MODES = ("skin", "hair")
FACIAL_HAIR_MODES = ("hair", "skin")
WHITE_BALANCE_MODES = ("auto", "off")
DEFAULT_TONE = np.array([0.75, 0.57, 0.48])  # only when not one skin texel was seen
# Lash lines: the skin atlas's lid margins (the rims of the skin mesh's eye openings) are darkened
# to the lashes' colour, so the eyes read as eyes whatever the fitted lids' alignment to the photo.
# Widths (upper, lower lid; metres on the neutral head) and opacities at the margin.
LASH_WIDTH_M = (0.0015, 0.0007)
LASH_OPACITY = (0.9, 0.5)
LASH_SOFT = 0.4
LASH_SAMPLE_M = 0.003  # the lashes' colour is the darkest LASH_DARKEST of the seen texels this near
LASH_DARKEST = 0.1
LASH_DEFAULT = 0.3  # times the skin tone: the lashes' colour when the photo showed none
# A cap (TextureSettings.scalp "hair"): the hair zone's line on the neutral head (metres: at the
# sides just over the ears, rising towards the forehead to 1 cm over the brows)
HAIR_ZONE_SIDE = 0.045
HAIR_ZONE_RISE = 0.02
HAIR_LIFT = 0.015  # metres: how far hair stands off the skull
SCALP_GRAZING = 0.25  # visibility at which a texel's hair-or-skin evidence counts fully
CAP_SEEN = 0.5  # hair + skin evidence (splatted per vertex) at which the photo alone says cap or not
CAP_SOFT = 1.0  # mesh-smoothing strength of that evidence: the hairline is soft over a few mm
BALD = 0.4  # a photo showing less hair than this share of its seen default scalp shows a bald head
HAIR_SMOOTHNESS = 20.0  # the hair colour keeps only its low-frequency variation


@dataclass
class TextureSettings:
    # "skin": the skin tone on the scalp; "hair": a cap in the photo's hair colour, down to the
    # hairline the photo shows (the model's default line where it showed none; a bald head stays skin)
    scalp: str = "skin"
    # "auto": the photo's light colour is estimated and divided out of the albedo
    # (core.appearance.white_balance); "off": the albedo keeps the photo's white balance
    white_balance: str = "auto"
    # "hair": beard, moustache and stubble seen in the photo stay in the albedo, texture of their
    # own (a bearded person without the beard is not the person); "skin": they are occluders and
    # the skin under them is filled in (a clean-shaven base, e.g. for groomed hair)
    facial_hair: str = "hair"

    def __post_init__(self):  # checked when made, before any photo is fitted
        for name, modes in (("scalp", SCALP_MODES), ("white balance", WHITE_BALANCE_MODES),
                            ("facial hair", FACIAL_HAIR_MODES)):
            value = getattr(self, name.replace(" ", "_"))
            if value not in modes:
                raise LikenessError(f"Unknown {name} setting {value!r}: choose one of {', '.join(modes)}.")


@dataclass
class Unwrap:
    """One photo's evidence in the skin atlas, before completion: what a fusion of several photos
    combines per texel (core.appearance.fusion)."""

    albedo: np.ndarray  # (S, 2S, 3) float32 de-lit colour in [0, 1], 0 where weight is 0
    weight: np.ndarray  # (S, 2S) float32 in [0, 1]: visibility x skin trust x de-light inlier
    visibility: np.ndarray  # (S, 2S) float32 geometric visibility in [0, 1]
    observed: np.ndarray  # (S, 2S, 3) float32 photo colours before de-lighting (0 where unseen)
    parts: np.ndarray  # (S, 2S) float32: seen through eyes, brows, lips, nostrils
    pixels_per_metre: np.ndarray  # (S, 2S) float32 photo resolution at the texel (focal / depth)
    # the head above the brows, only when asked for (TextureSettings.scalp "hair"; SkinTrust.hair,
    # bare): visibility x its hair pixels, x its bare skin pixels, and the hair's colour divided by
    # the light's level at the texel (0 where unseen)
    hair_weight: np.ndarray | None = None  # (S, 2S) float32 in [0, 1]
    bare_weight: np.ndarray | None = None  # (S, 2S) float32 in [0, 1]
    hair_albedo: np.ndarray | None = None  # (S, 2S, 3) float32
    hair: np.ndarray | None = None  # (3,) the median colour of all the photo's hair pixels, white-balanced


@dataclass
class TextureResult:
    albedo: np.ndarray  # (S, 2S, 3) uint8 skin atlas
    visibility: np.ndarray  # (S, 2S) float32 in [0, 1]: geometric visibility
    observed: np.ndarray  # (S, 2S, 3) float32 photo colours before de-lighting (0 where unseen)
    trust: np.ndarray  # (S, 2S) float32 in [0, 1]: how much the photo coloured each texel


@dataclass
class UVSurface:
    """Per texel of the skin atlas of ``model``: the triangle under it and its barycentrics; what
    depends only on the model and the atlas size is derived once per surface (cached properties)."""

    face_id: np.ndarray  # (S, 2S) int, -1 outside the UV islands
    bary: np.ndarray  # (S, 2S, 3)
    faces: np.ndarray  # (F, 3) skin triangles (vertex ids)
    model: FaceModel = field(repr=False, compare=False)

    @cached_property
    def laplacian(self) -> scipy.sparse.csr_matrix:
        """Uniform graph Laplacian (V, V) of the skin triangles' edges."""
        return _mesh_laplacian(self.faces, int(self.faces.max()) + 1)

    @cached_property
    def lid_margins(self) -> tuple[np.ndarray, np.ndarray]:
        """``lid_margin_distances`` of this atlas (upper, lower lid)."""
        return lid_margin_distances(self.model, self)

    @cached_property
    def covered(self) -> np.ndarray:
        """(S, 2S) bool: texels inside the UV islands."""
        return self.face_id >= 0

    @cached_property
    def corner_vertices(self) -> np.ndarray:
        """(N, 3) vertex ids of the triangle under each covered texel (row-major order)."""
        return self.faces[self.face_id[self.covered]]

    @cached_property
    def corner_weights(self) -> np.ndarray:
        """(N, 3) float32 barycentrics of each covered texel."""
        return self.bary[self.covered].astype(np.float32)

    def splat(self, per_texel: np.ndarray, num_vertices: int) -> np.ndarray:
        """Transpose of ``interpolate``: (S, 2S, C) texel values summed onto (V, C) vertices with
        the barycentric weights."""
        corners, bary = self.corner_vertices, self.corner_weights
        values = per_texel[self.covered]
        return np.stack([sum(np.bincount(corners[:, k], bary[:, k] * values[:, c], num_vertices)
                             for k in range(3)) for c in range(values.shape[1])], 1)

    def interpolate(self, per_vertex: np.ndarray) -> np.ndarray:
        """(V, C) vertex attribute at each covered texel -> (S, 2S, C), zeros elsewhere."""
        out = np.zeros(self.face_id.shape + (per_vertex.shape[1],), per_vertex.dtype)
        weights = self.corner_weights.astype(per_vertex.dtype, copy=False)
        out[self.covered] = np.einsum("nkc,nk->nc", per_vertex[self.corner_vertices], weights)
        return out


def uv_surface(model: FaceModel, size: int) -> UVSurface:
    """Rasterise the skin triangles into the (size, 2*size) atlas."""
    faces, uv_faces = model.triangles(SKIN_POLYGONS)
    uv = torch.from_numpy(model.atlas_uvs[uv_faces].reshape(-1, 2).astype(np.float64))
    texels = torch.stack([uv[:, 0] * 2 * size, (1 - uv[:, 1]) * size, torch.ones_like(uv[:, 0])], 1)
    corner_faces = torch.arange(len(texels)).view(-1, 3)
    frags = rasterize(texels, corner_faces, size, 2 * size)
    return UVSurface(frags.face_id.numpy(), frags.bary.numpy(), faces.astype(np.int64), model)


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


def sample_bilinear(image: np.ndarray, pixels: np.ndarray, outside: float | None = None) -> np.ndarray:
    """Bilinear float32 samples of an (H, W) or (H, W, C) image at continuous pixel coordinates
    (..., 2) (pixel centres at +0.5); beyond its border the edge's value, or ``outside``."""
    map_x = (pixels[..., 0] - 0.5).astype(np.float32)
    map_y = (pixels[..., 1] - 0.5).astype(np.float32)
    border = cv2.BORDER_REPLICATE if outside is None else cv2.BORDER_CONSTANT
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=border,
                     borderValue=0.0 if outside is None else outside)


def fit_sh(colors: np.ndarray, normals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Least-squares SH lighting (9, 3) explaining ``colors`` (N, 3) at ``normals`` (N, 3) for a
    constant unit albedo: used when refinement did not estimate the light."""
    return _solve_sh(sh_basis(torch.from_numpy(normals)).numpy(), colors, weights)


def _solve_sh(basis: np.ndarray, colors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``fit_sh`` on an (N, 9) SH ``basis`` already evaluated at the normals."""
    sw = np.sqrt(weights)[:, None]
    reg = 1e-2 * np.eye(9)
    reg[0, 0] = 0
    sh = np.linalg.solve((basis * sw).T @ (basis * sw) + reg * len(basis), (basis * sw).T @ (colors * sw))
    return sh


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], rgb.dtype)


def delight(observed: np.ndarray, normals: np.ndarray, weight: np.ndarray,
            parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """De-lit albedo (N, 3), inlier weight (N,) in [0, 1] and relative shading (N,) of N seen texels.

    The light is a luminance SH fit on trusted skin (``weight`` without the face parts), made
    robust by re-weighting: texels whose brightness departs from the diffuse model by more than
    ~2.5 robust standard deviations (specular highlights, cast shadows) stop pulling the fit, get
    clamped to the edge of the model's band and lose weight. The shading is normalised so that the
    mean albedo of trusted skin equals its mean photo colour: the person's tone (under the
    photo's white balance) is kept, only the variation of the light is removed. Face parts keep
    their own colour (divided by the shading, never clamped).
    """
    luma = _luminance(observed)
    fit_w = weight * (1 - parts)
    sel = fit_w > 0.05
    if sel.sum() < 50:
        return observed.copy(), (luma > 0).astype(np.float32), np.ones(len(luma), np.float32)
    basis = sh_basis(torch.from_numpy(normals.astype(np.float64))).numpy()
    y, w, fit_basis = luma[sel].astype(np.float64), fit_w[sel].astype(np.float64), basis[sel]
    robust = np.ones_like(w)
    band = OUTLIER_BAND
    for _ in range(4):
        coeff = _solve_sh(fit_basis, y[:, None], w * robust)
        model = np.maximum(fit_basis @ coeff[:, 0], 1e-3)
        log_ratio = np.log(np.maximum(y, 1e-3) / model)
        sigma = 1.4826 * np.median(np.abs(log_ratio[robust > 0.5]))
        band = max(OUTLIER_BAND, 2.5 * sigma)
        robust = np.clip(2 - np.abs(log_ratio) / band, 0, 1)  # 1 inside the band, 0 at twice it
    full = np.maximum(basis @ coeff[:, 0], 1e-3)
    level = np.sum(w * y) / np.sum(w * y / model)  # mean trusted albedo = mean trusted photo
    shading = full / level
    log_ratio = np.log(np.maximum(luma, 1e-3) / full)
    own = parts > 0.5
    inlier = np.where(own, 1.0, np.clip(2 - np.abs(log_ratio) / band, 0, 1))
    clamp = np.where(own, 1.0, np.exp(np.clip(log_ratio, -band, band) - log_ratio))
    albedo = observed * (clamp / np.maximum(shading, MIN_SHADING))[:, None]
    lo, hi = SHADING_TRUST
    inlier = inlier * np.clip((shading - lo) / (hi - lo), 0, 1)
    return np.clip(albedo, 0, 1).astype(np.float32), inlier.astype(np.float32), shading.astype(np.float32)


def scalp_weight(model: FaceModel, surface: UVSurface) -> np.ndarray:
    """(S, 2S) float in [0, 1]: how much each texel is scalp by the model's default hairline (see
    ``_default_scalp``)."""
    return surface.interpolate(_default_scalp(model.neutral)[:, None])[..., 0]


def _default_scalp(neutral: np.ndarray) -> np.ndarray:
    """(V,) float32 in [0, 1] per vertex of the neutral head: above a hairline that runs from about
    5 cm over the brows at the front, over the ears, down to the nape (1.5 cm soft)."""
    y, z = neutral[:, 1], neutral[:, 2]
    hairline = np.where(z > 0, 0.11 + 0.45 * (z - 0.09), 0.0695 + z)
    return np.clip((y - hairline) / 0.015 + 0.5, 0, 1).astype(np.float32)


def _hair_zone(neutral: np.ndarray) -> np.ndarray:
    """(V,) float32 in [0, 1] per vertex of the neutral head: where the photo's hair may make a cap:
    above a line 1 cm over the brows at the front, just over the ears at the sides, below the nape
    at the back (1 cm soft). Long hair seen beside the face and over the neck makes none."""
    y, z = neutral[:, 1], neutral[:, 2]
    rise = HAIR_ZONE_RISE * np.clip((z - 0.06) / 0.03, 0, 1)
    line = np.where(z > 0, HAIR_ZONE_SIDE + rise, HAIR_ZONE_SIDE + z)
    return np.clip((y - line) / 0.01 + 0.5, 0, 1).astype(np.float32)


def photo_illuminant(rgb: np.ndarray, landmarks: np.ndarray | None, skin: SkinTrust | None,
                     settings: TextureSettings) -> Illuminant | None:
    """The light colour to divide out of this photo's albedo (core.appearance.white_balance); None when white
    balance is off or the photo has no skin trust (no dense landmarks)."""
    if settings.white_balance == "off" or skin is None or landmarks is None:
        return None
    return estimate_illuminant(rgb, landmarks, skin)


def unwrap(model: FaceModel, rgb: np.ndarray, params: FaceParams, surface: UVSurface,
           skin: SkinTrust | None = None, illuminant: Illuminant | None = None) -> Unwrap:
    """One photo's de-lit colour and trust weight per texel (see the module docstring). Without
    ``skin`` every visible pixel is trusted (no segmentation available); with it, a red channel
    clipped on the bright skin is given back first (core.appearance.clipping); with ``illuminant`` the
    light's colour is divided out of the albedo (von Kries)."""
    verts = model.vertices(params.identity, params.expression).astype(np.float64)
    verts_cam = params.to_camera(verts)
    normals = vertex_normals(torch.from_numpy(verts_cam), torch.from_numpy(surface.faces)).numpy()
    texel_pos = surface.interpolate(verts_cam.astype(np.float32))
    texel_normal = surface.interpolate(normals.astype(np.float32))
    texel_normal /= np.maximum(np.linalg.norm(texel_normal, axis=-1, keepdims=True), 1e-9)

    visibility = _visibility(model, params, verts_cam, surface, texel_pos, texel_normal, rgb.shape[:2])
    pixels = _project(params, texel_pos)
    seen = visibility > 0
    photo = unclip_skin(rgb, skin, None if illuminant is None else illuminant.rgb)
    observed = sample_bilinear(photo, pixels) * seen[..., None]
    if skin is None:
        trust, parts = seen.astype(np.float32), np.zeros_like(visibility)
    else:
        trust = sample_bilinear(skin.trust, pixels, outside=0.0)
        parts = sample_bilinear(skin.parts, pixels, outside=0.0) * seen
    albedo = np.zeros_like(observed)
    inlier = np.zeros_like(visibility)
    albedo[seen], inlier[seen], shading = delight(observed[seen], texel_normal[seen],
                                                  (visibility * trust)[seen], parts[seen])
    if illuminant is not None:
        albedo[seen] = remove_illuminant(albedo[seen], illuminant)
    weight = (visibility * trust * inlier).astype(np.float32)
    albedo = (albedo * (weight > 0)[..., None]).astype(np.float32)
    density = params.camera.focal / np.maximum(texel_pos[..., 2], 1e-6) * seen
    evidence = Unwrap(albedo, weight, visibility.astype(np.float32), observed.astype(np.float32),
                      parts.astype(np.float32), density.astype(np.float32))
    if skin is not None and skin.hair is not None:
        fit = (visibility * trust * (1 - parts))[seen] > 0.05
        # Hair stands off the skull: what covers a scalp texel seen at a grazing angle is seen up to
        # HAIR_LIFT out along its normal, beyond the head's outline (where it faces the camera, in
        # place: a hairline is no thicker than the skin). The head's top is seen at grazing angles in
        # most photos: what shows there still counts.
        facing = -(texel_normal * texel_pos).sum(-1, keepdims=True) / np.maximum(
            np.linalg.norm(texel_pos, axis=-1, keepdims=True), 1e-9)
        lifted = _project(params, texel_pos + HAIR_LIFT * np.clip(1 - facing, 0, 1) * texel_normal)
        near = np.clip(visibility / SCALP_GRAZING, 0, 1)
        evidence.hair_weight, evidence.bare_weight = (
            (near * sample_bilinear(m, lifted, outside=0.0)).astype(np.float32)
            for m in (skin.hair, skin.bare))
        hair_seen = sample_bilinear(photo, lifted) * seen[..., None]
        evidence.hair_albedo = _hair_albedo(hair_seen, seen, shading, fit, illuminant)
        if (skin.hair > 0.5).sum() >= 20:  # the light's level is the skin's (delight keeps it)
            colour = np.median(rgb[skin.hair > 0.5], 0)[None] / 255
            evidence.hair = (colour if illuminant is None else remove_illuminant(colour, illuminant))[0]
    return evidence


def _project(params: FaceParams, points: np.ndarray) -> np.ndarray:
    """(S, 2S, 2) photo pixel coordinates of (S, 2S, 3) camera-space points (behind the camera: any)."""
    pixels = params.camera.project(np.where(points[..., 2:] > 0, points, 1).reshape(-1, 3))
    return pixels.reshape(points.shape[:2] + (2,))


def _hair_albedo(observed: np.ndarray, seen: np.ndarray, shading: np.ndarray, fit: np.ndarray,
                 illuminant: Illuminant | None) -> np.ndarray:
    """(S, 2S, 3) the photo's colour divided by the light at each seen texel (``shading`` of the
    ``seen`` ones), the light held within the range it takes on the skin it was fitted on (``fit``):
    hair stands off the head and is no diffuse surface, so the light model's extrapolation to the
    scalp's normals (dark, and divided into noise) is not trusted."""
    lo, hi = np.quantile(shading[fit], (0.1, 0.9)) if fit.sum() >= 50 else (1.0, 1.0)
    hair = np.zeros_like(observed)
    hair[seen] = np.clip(observed[seen] / np.clip(shading, lo, hi)[:, None], 0, 1)
    if illuminant is not None:
        hair[seen] = remove_illuminant(hair[seen], illuminant)
    return hair.astype(np.float32)


def _mesh_laplacian(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """Uniform graph Laplacian (V, V) of the triangle edges."""
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    adj = scipy.sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(num_vertices,) * 2).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    return scipy.sparse.diags(np.asarray(adj.sum(1)).ravel()) - adj


def _variation(positions: np.ndarray, amplitude: float, seed: int = 0) -> np.ndarray:
    """Smooth multiplicative variation (V, 3) around 1 at 3D ``positions`` (metres): cubic
    value noise on lattices of VARIATION_SPACINGS_M, mostly brightness, a little redness.
    Being a function of the 3D point, it is continuous across UV seams."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(seed)
    lo = positions.min(0)
    field = np.zeros((len(positions), 2))
    for spacing, gain in zip(VARIATION_SPACINGS_M, (1.0, 0.5), strict=True):
        coords = ((positions - lo) / spacing + 2).T
        shape = tuple(int(n) + 5 for n in coords.max(1))
        for c in range(2):
            lattice = rng.normal(size=shape)
            field[:, c] += gain * map_coordinates(lattice, coords, order=3, mode="nearest")
    field /= field.std(0) + 1e-9
    return 1 + amplitude * (field[:, :1] + 0.3 * field[:, 1:] * np.array([[1.0, -0.3, -0.5]]))


def complete(model: FaceModel, surface: UVSurface, evidence: Unwrap,
             settings: TextureSettings | None = None) -> np.ndarray:
    """Full skin-atlas albedo (S, 2S, 3) float in [0, 1] from one (or several fused) ``Unwrap``:
    seen texels keep their colour, their mirror images fill in where only those were seen, and a
    mesh-smooth skin field covers the rest; with ``settings.scalp`` "hair" a cap of the seen hair's
    smooth colour covers the scalp down to the photo's hairline (``_cap``)."""
    settings = settings or TextureSettings()
    # A texel seen with a fair weight shows its own colour: blended with the fill in proportion to
    # its weight (grazing view, soft trust), the face's own detail washed out into a smooth, blotchy
    # average (docs/BENCHMARKS.md, likeness fifth session: +0.03 likeness ratio, 25 of 28 photos better).
    evidence = replace(evidence, weight=np.clip(evidence.weight / OPAQUE_WEIGHT, 0, 1).astype(np.float32))
    albedo, known = _with_mirror(evidence.albedo, evidence.weight)
    skin = known * (1 - np.maximum(evidence.parts, mirror_atlas(evidence.parts)))
    tone = _weighted_median(albedo, skin) if skin.sum() > 1 else DEFAULT_TONE
    fill = surface.interpolate(_fill_field(model, surface, albedo, known, tone))

    alpha = np.minimum(known, cv2.GaussianBlur(known, (0, 0), max(1.0, FEATHER * known.shape[0])))
    cap = _cap(model, surface, evidence) if settings.scalp == "hair" else None
    if cap is not None:
        under, hair = (surface.interpolate(v) for v in cap)
        alpha = alpha * (1 - under[..., 0])
        fill = fill * (1 - under) + hair * under
    out = alpha[..., None] * albedo + (1 - alpha[..., None]) * fill
    out = _lash_lines(surface, out, evidence, tone)
    covered = surface.covered.astype(np.float32)
    return np.clip(push_pull_fill(out * covered[..., None], covered), 0, 1)  # gutter for filtering


def _lash_lines(surface: UVSurface, albedo: np.ndarray, evidence: Unwrap, tone: np.ndarray) -> np.ndarray:
    """``albedo`` with each lid margin darkened to the lashes' colour (LASH_WIDTH_M, LASH_OPACITY):
    the darkest seen texels near the margins (the photo's lash line, wherever the fitted lid put
    it), or LASH_DEFAULT times the skin ``tone`` when none was seen."""
    upper, lower = surface.lid_margins
    near = np.minimum(upper, lower) < LASH_SAMPLE_M
    seen = near & (evidence.weight > 0.3)
    colour = LASH_DEFAULT * tone
    if seen.sum() >= 10:
        values = evidence.albedo[seen]
        luma = _luminance(values)
        colour = values[luma <= np.quantile(luma, LASH_DARKEST)].mean(0)
    # full opacity over most of the width, fading over its outer LASH_SOFT
    opacity = np.maximum(*(strength * np.clip((width - d) / (LASH_SOFT * width), 0, 1) for d, width, strength
                           in zip((upper, lower), LASH_WIDTH_M, LASH_OPACITY, strict=True)))
    return albedo * (1 - opacity[..., None]) + colour * opacity[..., None]


def lid_margin_distances(model: FaceModel, surface: UVSurface) -> tuple[np.ndarray, np.ndarray]:
    """(S, 2S) distances (metres, on the neutral head; inf outside the islands) of each texel to the
    upper and to the lower lid margins: the rims of the skin mesh's two eye openings, split at
    the eye corners."""
    faces = surface.faces
    rim = np.unique(boundary_edges(faces))  # the skin mesh's open borders: eyes, mouth, neck
    neutral = model.neutral[: int(faces.max()) + 1]
    corners, weights = surface.corner_vertices, surface.corner_weights
    upper = np.full(len(corners), np.inf, np.float32)
    lower = upper.copy()
    for eye in ("eyeball_left", "eyeball_right"):
        centre = model.neutral[model.region_mask(eye)].mean(0)
        loop = neutral[rim[np.linalg.norm(neutral[rim] - centre, axis=1) < 0.025]]
        left, right = loop[np.argmin(loop[:, 0])], loop[np.argmax(loop[:, 0])]
        line = left[1] + (loop[:, 0] - left[0]) * (right[1] - left[1]) / max(right[0] - left[0], 1e-9)
        close = (np.linalg.norm(neutral - centre, axis=1) < 0.03)[corners[:, 0]]  # texels near this eye
        points = np.einsum("nkc,nk->nc", neutral[corners[close]], weights[close])
        for out, side in ((upper, loop[:, 1] >= line), (lower, loop[:, 1] <= line)):
            lid = loop[side][np.argsort(loop[side][:, 0])]
            out[close] = np.minimum(out[close], _polyline_distance(points, lid))
    maps = []
    for per_texel in (upper, lower):
        atlas = np.full(surface.face_id.shape, np.inf, np.float32)
        atlas[surface.covered] = per_texel
        maps.append(atlas)
    return maps[0], maps[1]


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(N,) distance of each of (N, 3) ``points`` to the polyline through (M, 3) ``line``."""
    start, seg = line[:-1], np.diff(line, axis=0)
    t = np.einsum("nmk,mk->nm", points[:, None] - start, seg) / np.maximum((seg * seg).sum(1), 1e-12)
    nearest = start + np.clip(t, 0, 1)[..., None] * seg
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def _with_mirror(albedo: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texels seen (``weight``) or whose mirror image was: the colour (S, 2S, 3) and weight (S, 2S)."""
    gain = np.clip(mirror_atlas(weight) - weight, 0, 1)
    known = np.clip(weight + gain, 0, 1).astype(np.float32)
    weighted = albedo * weight[..., None] + mirror_atlas(albedo) * gain[..., None]
    return weighted / np.maximum(known, 1e-8)[..., None], known


def _per_vertex(surface: UVSurface, per_texel: np.ndarray, num_vertices: int) -> np.ndarray:
    """(S, 2S, C) texel values -> (V, C) area-weighted means over the texels around each vertex."""
    area = surface.splat(np.ones(per_texel.shape[:2] + (1,), np.float32), num_vertices)
    return surface.splat(per_texel, num_vertices) / np.maximum(area, 1e-8)


def _cap(model: FaceModel, surface: UVSurface, evidence: Unwrap) -> tuple[np.ndarray, np.ndarray] | None:
    """Per vertex, how much a cap covers it (V, 1) and the cap's colour (V, 3); None without hair
    evidence or when the photo shows a bald head (its seen hair zone is mostly skin).

    Inside the hair zone (``_hair_zone``) each vertex is cap where the photo (or its mirror image)
    showed hair, not where it showed bare skin, and the model's default scalp
    (``_default_scalp``) where it showed neither: the hairline is the person's where it was seen.
    The colour is the seen hair's, smoothed on the mesh to its low-frequency variation, and the
    photo's hair colour (``Unwrap.hair``: the hair beyond the head's outline too) where none was
    seen."""
    if evidence.hair is None:
        return None
    num_vertices = surface.laplacian.shape[0]
    hair_albedo, hair_known = _with_mirror(evidence.hair_albedo, evidence.hair_weight)
    bare = np.maximum(evidence.bare_weight, mirror_atlas(evidence.bare_weight))
    seen = _per_vertex(surface, np.stack([hair_known, bare], -1), num_vertices)
    smooth = scipy.sparse.identity(num_vertices) + CAP_SOFT * surface.laplacian
    seen = scipy.sparse.linalg.spsolve(smooth.tocsc(), seen)
    hair_seen, skin_seen = seen[:, 0], seen[:, 1]
    neutral = model.neutral[:num_vertices]
    zone, scalp = _hair_zone(neutral), _default_scalp(neutral)
    if hair_known.sum() < 20 or (scalp * hair_seen).sum() < BALD * (scalp * (hair_seen + skin_seen)).sum():
        return None  # (judged above the default hairline: a high forehead is no bald head)
    said = np.clip((hair_seen + skin_seen) / CAP_SEEN, 0, 1)
    share = hair_seen / np.maximum(hair_seen + skin_seen, 1e-6)
    under = zone * (said * share + (1 - said) * scalp)
    colour = _fill_field(model, surface, hair_albedo, hair_known, evidence.hair, HAIR_SMOOTHNESS)
    return under[:, None].astype(np.float32), colour


def _fill_field(model: FaceModel, surface: UVSurface, albedo: np.ndarray, known: np.ndarray, tone: np.ndarray,
                smoothness: float = SMOOTHNESS) -> np.ndarray:
    """Per-vertex colour (V, 3) for unseen texels: minimises the misfit to the seen texels (splatted
    onto the vertices) plus ``smoothness`` times the mesh Laplacian energy plus a weak pull to the
    ``tone``, times a low-frequency variation. Solved on the mesh, so it does not know UV seams."""
    num_vertices = surface.laplacian.shape[0]
    data_w = _per_vertex(surface, known[..., None], num_vertices)[:, 0]
    data = _per_vertex(surface, albedo * known[..., None], num_vertices)
    prior = np.tile(tone, (num_vertices, 1))
    pull = np.full(num_vertices, TONE_PULL)
    system = scipy.sparse.diags(data_w + pull) + smoothness * surface.laplacian
    field = scipy.sparse.linalg.spsolve(system.tocsc(), data + pull[:, None] * prior)
    seen = data_w > 0.8
    spread = 0.0
    if seen.sum() > 10:
        spread = float(np.std(np.log(np.maximum(_luminance(data[seen] / data_w[seen, None]), 1e-3))))
    variation = _variation(model.neutral[:num_vertices], float(np.clip(0.5 * spread, 0.01, 0.03)))
    return (field * variation).astype(np.float32)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-channel weighted median of (..., C) ``values``."""
    w = weights.ravel()
    sel = w > 0
    flat = values.reshape(-1, values.shape[-1])[sel]
    w = w[sel]
    out = []
    for c in range(flat.shape[1]):
        order = np.argsort(flat[:, c])
        cum = np.cumsum(w[order])
        out.append(flat[order[np.searchsorted(cum, cum[-1] / 2)], c])
    return np.array(out)


def build_texture(model: FaceModel, rgb: np.ndarray, params: FaceParams, size: int,
                  surface: UVSurface | None = None, skin: SkinTrust | None = None,
                  settings: TextureSettings | None = None,
                  illuminant: Illuminant | None = None) -> TextureResult:
    """De-lit, completed skin-atlas albedo (size, 2*size) for fitted ``params`` on photo ``rgb``;
    ``skin`` says which photo pixels may colour skin (core.appearance.skin_trust), ``illuminant``
    the light colour to divide out (``photo_illuminant``). Pass the ``uv_surface`` of this model
    and size to reuse it across photos."""
    surface = surface or uv_surface(model, size)
    evidence = unwrap(model, rgb, params, surface, skin, illuminant)
    albedo = complete(model, surface, evidence, settings)
    albedo8 = np.clip(albedo * 255 + 0.5, 0, 255).astype(np.uint8)
    return TextureResult(albedo8, evidence.visibility, evidence.observed, evidence.weight)
