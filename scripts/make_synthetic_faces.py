"""Synthetic faces with known detail: ICT heads carrying a displacement map in millimetres and a
skin albedo with marks that are *not* geometry, rendered by Cycles (``bpy``), saved with their truth.

    python scripts/make_synthetic_faces.py --output out/synthetic [--cases 6] [--size 512] [--samples 24]
        [--light-tint R G B] [--off displacement shadows occlusion specular world subdivision marks]
    python scripts/make_synthetic_faces.py --output out/heldout --heldout  # heads not in the set

``--heldout`` renders HELDOUT_CASES (new seeds, expressions, yaws and key lights; folds deeper on
one side, or on one side only) to check a change chosen on the set.

``--light-tint`` colours the whole illumination (the three lights and the world) by linear RGB
factors, as a tinted room would: the albedo truth stays the same (for white-balance checks).
``--off`` renders a variant without some of the image's parts (the displacement truth stays the
full head's; the albedo is the one rendered), to measure how much of the photo each part makes:
``displacement`` (no folds), ``shadows`` (the lights cast no shadows), ``occlusion`` (the head
blocks no light at all: neither cast shadows nor the sky's occlusion), ``specular`` (no specular
reflection), ``world`` (no sky), ``subdivision`` (the ICT mesh as it is, smooth-shaded; with
``displacement`` only), ``marks`` (the albedo without freckles, moles, blotches, make-up, stubble).

Per case ``<output>/<name>/``: ``photo.png`` (the Cycles render) and ``truth.npz``:
``displacement_mm`` (N, N) over the face UV tile (outwards along the head's smooth normals, row 0 =
v 1, the layout of
``core.displacement.detail``'s maps), ``normal_map`` (N, N, 3) its tangent-space normal map,
``folds`` / ``marks`` (N, N) bool (where the folds are; where albedo-only marks are, away from
folds), ``albedo`` (S, 2S, 3) the skin-atlas albedo (sRGB), ``roughness`` (S, 2S), the head's
``identity`` / ``expression`` / ``rotation`` / ``translation`` (``core.geometry.params.FaceParams``
conventions) and ``camera`` (focal, cx, cy, width, height); ``case.json`` the recipe.

The geometry: the ICT head, Catmull-Clark subdivided twice in Blender (~1 mm apart on the face)
and displaced by Blender's Displace modifier along its normals; eyes, teeth and lashes with plain
materials. Folds: forehead lines, crow's feet, nasolabial folds, under-eye bags
with tear troughs, a chin dimple (0.2-1.5 mm deep, 1-4 mm wide), deepened by the expression that
makes them. Marks: freckles, moles, red blotches, stubble, a contour make-up line, and an oily
T-zone (lower roughness: a specular sheen). Light: three area lights and a sky-to-ground gradient
world. Nothing of the pipeline's own renderer is used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.displacement.detail import atlas_metres, bake_normal_map, dense_face_mesh, face_tile  # noqa: E402
from core.geometry.face_model import FACE_POLYGONS, VERTEX_REGIONS, FaceModel, load_face_model  # noqa: E402
from core.geometry.params import MODEL_TO_CAMERA, rotation_matrix  # noqa: E402

MM_PER_UV = 240.0  # face-tile UV unit -> mm near the eyes (outer eye corners: 0.37 uv, 89 mm)
TRUTH_SIZE = 512  # displacement truth over the face tile
ALBEDO_SIZE = 1024  # skin atlas (S, 2S)
HEAD_HEIGHT_M = 0.22
DISP_MID, DISP_RANGE_MM = 0.5, 8.0  # displacement texture value = mid + mm / range
VARIANT_PARTS = ("displacement", "shadows", "occlusion", "specular", "world", "subdivision", "marks")
FACE_VERTICES = VERTEX_REGIONS["face"][1]
SKIN_VERTICES = VERTEX_REGIONS["head_neck"][1]
# ICT materials (FaceModel.material_names order): linear base colour, None = not rendered.
PART_COLOURS = {"M_GumsTongue": (0.45, 0.12, 0.12), "M_Teeth": (0.75, 0.72, 0.62),
                "M_ScleraLeft": (0.72, 0.68, 0.64), "M_ScleraRight": (0.72, 0.68, 0.64),
                "M_IrisLeft": (0.025, 0.015, 0.01), "M_IrisRight": (0.025, 0.015, 0.01),
                "M_EyeLashes": (0.01, 0.01, 0.01), "M_LacrimalFluid": None, "M_EyeBlend": None,
                "M_EyeOcclusion": None}


@dataclass
class Case:
    name: str
    seed: int
    expression: dict[str, float] = field(default_factory=dict)
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    fov_deg: float = 20.0
    skin: tuple[float, float, float] = (0.80, 0.58, 0.47)  # sRGB base tone
    stubble: bool = False
    key_azimuth_deg: float = -35.0  # key light around the head, 0 = the camera's side
    # Folds on the face's u > 0.5 side scaled by 1 + a, on the other by 1 - a (1: one side only).
    fold_asymmetry: float = 0.0


CASES = [
    Case("neutral_front", 1, {}, 0, 0, 20, (0.82, 0.62, 0.52), False, -35),
    Case("smile_yaw20", 2, {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8, "cheekSquint_L": 0.4,
                            "cheekSquint_R": 0.4}, 20, 0, 26, (0.72, 0.52, 0.40), True, 40),
    Case("browsup_yaw-15", 3, {"browInnerUp_L": 0.8, "browInnerUp_R": 0.8, "browOuterUp_L": 0.7,
                               "browOuterUp_R": 0.7, "eyeWide_L": 0.3, "eyeWide_R": 0.3}, -15, 5, 15,
         (0.86, 0.68, 0.58), False, -20),
    Case("squint_front", 4, {"eyeSquint_L": 0.7, "eyeSquint_R": 0.7, "cheekSquint_L": 0.6,
                             "cheekSquint_R": 0.6, "noseSneer_L": 0.2, "noseSneer_R": 0.2}, 5, -5, 20,
         (0.52, 0.36, 0.27), True, 30),
    Case("smile_yaw-30", 5, {"mouthSmile_L": 0.6, "mouthSmile_R": 0.6, "eyeSquint_L": 0.3,
                             "eyeSquint_R": 0.3}, -30, 0, 22, (0.78, 0.56, 0.44), False, -45),
    Case("neutral_wide_yaw10", 6, {"browInnerUp_L": 0.3, "browInnerUp_R": 0.3}, 10, 0, 38,
         (0.66, 0.47, 0.36), True, 25),
]
# Not in the set: checks of a change chosen on CASES (new seeds, expressions, yaws, key lights,
# asymmetric folds).
HELDOUT_CASES = [
    Case("heldout_smirk_yaw12", 21, {"mouthSmile_L": 0.7, "mouthSmile_R": 0.3, "browInnerUp_L": 0.5,
                                     "browInnerUp_R": 0.5, "eyeSquint_L": 0.3}, 12, 3, 24,
         (0.76, 0.55, 0.43), False, -55, 0.4),
    Case("heldout_brows_yaw-22", 22, {"browOuterUp_L": 0.6, "browOuterUp_R": 0.9, "browInnerUp_L": 0.6,
                                      "browInnerUp_R": 0.6, "cheekSquint_L": 0.3, "cheekSquint_R": 0.3},
         -22, -3, 30, (0.60, 0.42, 0.32), True, 50, 0.4),
    Case("heldout_onesided_yaw8", 23, {"mouthSmile_L": 0.8, "cheekSquint_L": 0.5, "browOuterUp_L": 0.7,
                                       "eyeSquint_L": 0.4}, 8, 2, 22, (0.70, 0.50, 0.40), False, -40, 1.0),
]


# --------------------------------------------------------------------------------------------
# Ground truth in the face UV tile


def tile_grid(size: int) -> np.ndarray:
    """(size, size, 2) tile UVs of texel centres, row 0 = v 1 (detail.face_tile's layout)."""
    centres = (np.arange(size) + 0.5) / size
    return np.stack(np.meshgrid(centres, 1 - centres, indexing="xy"), -1)


def landmark_uvs(model: FaceModel) -> np.ndarray:
    """(68, 2) face-tile UVs of the iBUG-68 landmark vertices (identity-independent)."""
    faces, uv_faces = model.triangles(FACE_POLYGONS)
    uvs = np.zeros((FACE_VERTICES, 2))
    uvs[faces.ravel()] = model.atlas_uvs[uv_faces.ravel()] * [2.0, 1.0]
    return uvs[np.minimum(model.landmarks68, FACE_VERTICES - 1)]


def polyline(points, samples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Densely sampled polyline (samples, 2) through ``points`` and its arc parameter in [0, 1]."""
    points = np.asarray(points, float)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)]) / seg.sum()
    s = np.linspace(0, 1, samples)
    return np.stack([np.interp(s, t, points[:, 0]), np.interp(s, t, points[:, 1])], 1), s


def line_profile(grid: np.ndarray, points, sigma_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian ridge of unit height along a polyline, tapered to 0 at its ends; and the distance
    (mm) of every texel to the line."""
    line, s = polyline(points)
    dist, idx = cKDTree(line).query(grid.reshape(-1, 2))
    dist_mm = (dist * MM_PER_UV).reshape(grid.shape[:2])
    taper = np.sin(np.pi * s[idx]).reshape(grid.shape[:2]) ** 0.5
    return taper * np.exp(-0.5 * (dist_mm / sigma_mm) ** 2), dist_mm


def blob(grid: np.ndarray, centre, sigma_mm) -> np.ndarray:
    sx, sy = (sigma_mm, sigma_mm) if np.isscalar(sigma_mm) else sigma_mm
    d = (grid - np.asarray(centre)) * MM_PER_UV
    return np.exp(-0.5 * ((d[..., 0] / sx) ** 2 + (d[..., 1] / sy) ** 2))


def mirrored(points) -> list:
    return [(1 - u, v) for u, v in points]


FEATURES = ("forehead", "crows_feet", "nasolabial", "bags", "dimple")


def displacement_truth(case: Case, lm: np.ndarray, size: int, parts: dict | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) displacement in mm (negative = groove) and the fold-distance map (mm).
    ``parts``, when given, receives each of FEATURES' own map (they sum to the displacement)."""
    g = tile_grid(size)
    e = case.expression
    brows = 0.5 * (e.get("browInnerUp_L", 0) + e.get("browOuterUp_L", 0) + e.get("browInnerUp_R", 0)
                   + e.get("browOuterUp_R", 0)) / 2
    smile = (e.get("mouthSmile_L", 0) + e.get("mouthSmile_R", 0)) / 2
    squint = (e.get("eyeSquint_L", 0) + e.get("eyeSquint_R", 0) + e.get("cheekSquint_L", 0)
              + e.get("cheekSquint_R", 0)) / 4
    rng = np.random.default_rng(case.seed)
    maps = {name: np.zeros(g.shape[:2]) for name in FEATURES}
    dist = np.full(g.shape[:2], np.inf)

    def add(feature, profile_dist, depth):
        nonlocal dist
        profile, d = profile_dist
        maps[feature] += depth * profile
        dist = np.minimum(dist, d)

    brow_v = lm[19, 1]
    for k, (dv, depth) in enumerate(((0.040, 0.45), (0.068, 0.6), (0.096, 0.5))):  # forehead lines
        depth *= (1 + 1.2 * brows) * rng.uniform(0.8, 1.2)
        arc = [(u, brow_v + dv + 0.012 * (1 - ((u - 0.5) / 0.17) ** 2) + 0.003 * k * np.sin(9 * u))
               for u in np.linspace(0.33 + 0.02 * k, 0.67 - 0.02 * k, 9)]
        add("forehead", line_profile(g, arc, 1.0), -depth)
    for side in (lm[36], (1 - lm[45, 0], lm[45, 1])):  # crow's feet, built on the left, mirrored
        for angle in (-28, 0, 25):
            a = np.radians(180 + angle)
            start = np.array(side) + 0.018 * np.array([np.cos(a), np.sin(a)])
            end = start + 0.045 * np.array([np.cos(a), np.sin(a)])
            depth = 0.3 * (1 + 1.5 * max(smile, squint)) * rng.uniform(0.8, 1.2)
            for pts in ([start, end], mirrored([start, end])):
                add("crows_feet", line_profile(g, pts, 0.9), -depth)
    wing, corner = lm[31], lm[48]
    fold = [(wing[0] - 0.035, wing[1] + 0.005), (wing[0] - 0.045, wing[1] - 0.045),
            (corner[0] - 0.035, corner[1] - 0.005), (corner[0] - 0.03, corner[1] - 0.06)]
    depth = 0.9 * (1 + 0.7 * smile)
    for pts in (fold, mirrored(fold)):  # nasolabial: a groove and the cheek's bulge beside it
        add("nasolabial", line_profile(g, pts, 1.8), -depth)
        bulge = [(u - 0.02, v + 0.005) for u, v in pts] if pts is fold else [(u + 0.02, v + 0.005)
                                                                             for u, v in pts]
        maps["nasolabial"] += 0.35 * depth * line_profile(g, bulge, 4.0)[0]
    for eye in (0.5 * (lm[36] + lm[39]), 0.5 * (lm[42] + lm[45])):  # bags and tear troughs
        bag = (eye[0], eye[1] - 0.045)
        maps["bags"] += 0.55 * blob(g, bag, (7.0, 2.8))
        trough = [(eye[0] - 0.04, eye[1] - 0.06), (eye[0], eye[1] - 0.07), (eye[0] + 0.04, eye[1] - 0.062)]
        add("bags", line_profile(g, trough, 1.5), -0.4)
        dist = np.minimum(dist, np.hypot(*((g - bag) * MM_PER_UV / [2.5, 1]).transpose(2, 0, 1)))
    chin = (0.5, lm[8, 1] + 0.035)
    maps["dimple"] -= 0.8 * blob(g, chin, 2.0)
    dist = np.minimum(dist, np.linalg.norm((g - chin) * MM_PER_UV, axis=-1))
    side = 1 + case.fold_asymmetry * np.tanh((g[..., 0] - 0.5) / 0.03)
    maps = {name: m * side for name, m in maps.items()}
    if parts is not None:
        parts.update({name: m.astype(np.float32) for name, m in maps.items()})
    return sum(maps.values()).astype(np.float32), dist.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Albedo and roughness of the skin atlas


def stamp(image: np.ndarray, mask: np.ndarray, uv, radius_mm: float, colour, soft: float = 0.6) -> None:
    """Multiply a round soft spot into the face tile of ``image`` (S, 2S, 3) at tile ``uv``; mark it."""
    size = image.shape[0]
    r = radius_mm / MM_PER_UV * size
    x, y = uv[0] * size, (1 - uv[1]) * size
    reach = 2 * r + 2
    x0, x1 = int(max(0, x - reach)), int(min(size, x + reach + 1))
    y0, y1 = int(max(0, y - reach)), int(min(size, y + reach + 1))
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    d = np.hypot(xx - x, yy - y) / r
    alpha = np.clip((1 + soft - d) / soft, 0, 1)[..., None] if soft > 0 else (d < 1)[..., None]
    image[y0:y1, x0:x1] *= 1 - alpha * (1 - np.asarray(colour))
    mask[y0:y1, x0:x1] |= alpha[..., 0] > 0.05


def smooth_noise(rng, shape, sigma_px: float) -> np.ndarray:
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma_px)
    return n / (n.std() + 1e-9)


def albedo_maps(case: Case, lm: np.ndarray, fold_dist_mm: np.ndarray, with_marks: bool = True):
    """sRGB albedo (S, 2S, 3) float, roughness (S, 2S), the albedo-only marks over the face tile
    (S, S) bool, and the T-zone (S, S) bool. ``with_marks=False``: the albedo without the marks
    (the same marks mask)."""
    s = ALBEDO_SIZE
    rng = np.random.default_rng(100 + case.seed)
    albedo = np.ones((s, 2 * s, 3), np.float32) * np.asarray(case.skin, np.float32)
    albedo *= (1 + 0.035 * smooth_noise(rng, (s, 2 * s), 40))[..., None]
    marks = np.zeros((s, s), bool)
    g = tile_grid(s)
    face = albedo[:, :s]
    near_fold = cv2.resize(fold_dist_mm, (s, s), interpolation=cv2.INTER_LINEAR) < 4.0
    plain = face.copy()

    def cheek_point():
        while True:
            uv = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.72)])
            nose = abs(uv[0] - 0.5) < 0.05
            if (abs(uv[0] - 0.5) > 0.11 or nose) and not (0.66 < uv[1] and abs(uv[0] - 0.5) > 0.09):
                return uv

    for _ in range(70):  # freckles
        stamp(face, marks, cheek_point(), rng.uniform(0.5, 1.1), (0.86, 0.74, 0.64))
    for _ in range(2):  # moles
        stamp(face, marks, cheek_point(), rng.uniform(1.4, 2.0), (0.45, 0.34, 0.30), soft=0.3)
    for uv in (cheek_point(), (rng.uniform(0.42, 0.58), rng.uniform(0.84, 0.9))):  # blotches
        stamp(face, marks, uv, rng.uniform(6, 9), (1.0, 0.86, 0.86), soft=1.0)
    contour = [(0.30, 0.60), (0.34, 0.575), (0.39, 0.57)]  # a make-up line along the cheekbone
    ridge = line_profile(g, contour, 0.9)[0]
    face *= 1 - (0.16 * ridge)[..., None] * np.array([0.6, 1.0, 1.1], np.float32)
    marks |= ridge > 0.05
    if case.stubble:
        jaw = blob(g, (0.5, lm[8, 1] + 0.05), (38, 14)) + blob(g, (0.5, lm[51, 1] + 0.035), (14, 3.5))
        region = (jaw > 0.35) & ~(blob(g, (0.5, lm[57, 1] + 0.005), (12, 4)) > 0.3)  # not the lips
        dots = (rng.random((s, s)) < 0.10) & region
        face[dots] *= np.array([0.62, 0.60, 0.60], np.float32)
        marks |= region
    if not with_marks:
        face[:] = plain
    lips = blob(g, (0.5, 0.5 * (lm[51, 1] + lm[57, 1])), (22, 5.5))
    face *= (1 - 0.25 * np.clip(lips * 1.5, 0, 1)[..., None] * np.array([0.0, 0.5, 0.45], np.float32))
    for a, b in ((17, 21), (22, 26)):  # brows: hair, not skin
        brow = np.clip(line_profile(g, lm[a:b + 1] + [0, 0.008], 2.6)[0] * 1.6, 0, 1)
        face *= 1 - 0.65 * brow[..., None]
    albedo[:, :s] = face
    tzone = (blob(g, (0.5, lm[19, 1] + 0.09), (45, 20)) + blob(g, (0.5, 0.62), (6, 22))) > 0.4
    roughness = np.full((s, 2 * s), 0.5, np.float32)
    roughness[:, :s] -= 0.22 * cv2.GaussianBlur(tzone.astype(np.float32), (0, 0), 12)
    return np.clip(albedo, 0, 1), roughness, marks & ~near_fold, tzone


# --------------------------------------------------------------------------------------------
# Geometry and camera


def head_params(case: Case, vertices: np.ndarray, width: int) -> dict:
    """Pose (FaceParams conventions) and camera putting the head's face centre on the optical axis."""
    focal = 0.5 * width / math.tan(math.radians(case.fov_deg) / 2)
    distance = focal * HEAD_HEIGHT_M / (0.75 * width)
    head = Rotation.from_euler("yx", [case.yaw_deg, case.pitch_deg], degrees=True).as_matrix()
    model_to_cam = MODEL_TO_CAMERA @ head
    centre = vertices[:FACE_VERTICES].mean(0)
    translation = np.array([0.0, 0.0, distance]) - model_to_cam @ centre
    rot = Rotation.from_matrix(model_to_cam @ MODEL_TO_CAMERA.T).as_rotvec()
    assert np.allclose(rotation_matrix(rot) @ MODEL_TO_CAMERA, model_to_cam, atol=1e-9)
    return {"rotation": rot, "translation": translation,
            "camera": np.array([focal, width / 2, width / 2, width, width], float)}


def head_mesh(model: FaceModel, vertices: np.ndarray):
    """Polygons (lists of vertex ids), per-corner atlas UVs and per-polygon material of the head."""
    polys, corner_uvs = [], []
    for ids, uv_ids in zip(model.polygons, model.polygon_uvs):
        polys.append([int(i) for i in ids[ids >= 0]])
        corner_uvs.append(model.atlas_uvs[uv_ids[uv_ids >= 0]])
    return vertices, polys, corner_uvs, model.polygon_materials.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Cycles


def render_cycles(case: Case, verts, polys, corner_uvs, materials, model: FaceModel, albedo: np.ndarray,
                  roughness: np.ndarray, disp_mm: np.ndarray, params: dict, size: int, samples: int,
                  path: Path, tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  off: frozenset[str] = frozenset()) -> None:
    """Catmull-Clark subdivision (2 levels: ~1 mm apart on the face, and smooth, unlike a flat
    midpoint subdivision whose facets would shade like the coarse mesh), then Blender's Displace
    modifier along the subdivided surface's normals from the face tile's displacement. ``off``: parts
    of VARIANT_PARTS left out."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.data.meshes.new("head")
    # Blender is z-up: model (x, y, z) -> (x, -z, y); the head looks towards -y.
    b_verts = np.stack([verts[:, 0], -verts[:, 2], verts[:, 1]], 1)
    mesh.from_pydata(b_verts.tolist(), [], polys)
    layer = mesh.uv_layers.new(name="UVMap")
    layer.data.foreach_set("uv", np.concatenate(corner_uvs).astype(np.float32).ravel())
    mesh.polygons.foreach_set("material_index", np.asarray(materials, np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(polys), bool))
    mesh.update()
    obj = bpy.data.objects.new("head", mesh)
    scene.collection.objects.link(obj)
    subsurf = obj.modifiers.new("subdivision", "SUBSURF")
    subsurf.levels = subsurf.render_levels = 0 if "subdivision" in off else 2
    n = disp_mm.shape[0]
    atlas = np.full((n, 2 * n), DISP_MID, np.float32)
    atlas[:, :n] = DISP_MID + disp_mm / DISP_RANGE_MM
    texture = bpy.data.textures.new("displacement", "IMAGE")
    texture.image = _image("displacement", np.repeat(atlas[..., None], 3, -1), "Non-Color")
    texture.extension = "EXTEND"
    displace = obj.modifiers.new("displace", "DISPLACE")
    displace.texture, displace.texture_coords, displace.uv_layer = texture, "UV", "UVMap"
    displace.direction, displace.mid_level = "NORMAL", DISP_MID
    displace.strength = 0.0 if "displacement" in off else DISP_RANGE_MM * 1e-3  # metres per texture unit
    obj.visible_shadow = "occlusion" not in off
    for name in model.material_names:
        mesh.materials.append(_material(name, albedo, roughness, "specular" in off))

    # The camera: OpenCV axes (x right, y down, z forward) = Blender (x, -z, y) from its location.
    rot, t = rotation_matrix(params["rotation"]) @ MODEL_TO_CAMERA, params["translation"]
    to_blender = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # model -> Blender
    # x_cam = rot @ x_model + t, and the object sits in Blender at identity: camera pose in Blender.
    world_from_cam = to_blender @ rot.T  # camera axes -> Blender directions
    location = to_blender @ (-rot.T @ t)
    cam_data = bpy.data.cameras.new("camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = params["camera"][0] * 36.0 / size
    cam_data.clip_start, cam_data.clip_end = 0.01, 20.0
    camera = bpy.data.objects.new("camera", cam_data)
    # Blender cameras look down -z with +y up: OpenCV (x, y, z) = Blender camera (x, -y, -z).
    blender_cam_axes = world_from_cam @ np.diag([1.0, -1.0, -1.0])
    import mathutils

    camera.matrix_world = mathutils.Matrix.Translation(location.tolist()) @ mathutils.Matrix(
        blender_cam_axes.tolist()).to_4x4()
    scene.collection.objects.link(camera)
    scene.camera = camera

    distance = float(np.linalg.norm(location))
    key = case.key_azimuth_deg
    for name, energy, azimuth, elevation, light_size in (
            ("key", 28.0, key, 35.0, 0.25), ("fill", 7.0, -key * 1.6, 5.0, 0.6),
            ("top", 9.0, 180.0 + key, 65.0, 0.4)):
        light = bpy.data.lights.new(name, "AREA")
        light.energy = energy * (distance / 1.0) ** 2
        light.size = light_size * distance
        light.color = tint
        az, el = math.radians(azimuth), math.radians(elevation)
        # Around the camera's viewing direction (azimuth 0 = from the camera's side).
        forward = world_from_cam[:, 2]
        right, up = world_from_cam[:, 0], -world_from_cam[:, 1]
        target = np.asarray(obj.location) + to_blender @ verts[:FACE_VERTICES].mean(0)
        position = target + distance * (-forward * math.cos(el) * math.cos(az) + right * math.cos(el)
                                        * math.sin(az) + up * math.sin(el))
        light.use_shadow = "shadows" not in off
        lamp = bpy.data.objects.new(name, light)
        lamp.location = position.tolist()
        aim = mathutils.Vector((target - position).tolist())
        lamp.rotation_euler = aim.to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(lamp)

    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    background = nodes["Background"]
    coords = nodes.new("ShaderNodeTexCoord")
    sep = nodes.new("ShaderNodeSeparateXYZ")
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].position, ramp.color_ramp.elements[1].position = 0.35, 0.75
    ramp.color_ramp.elements[0].color = (*(np.multiply((0.12, 0.09, 0.07), tint)), 1)  # ground
    ramp.color_ramp.elements[1].color = (*(np.multiply((0.55, 0.62, 0.75), tint)), 1)  # sky
    maprange = nodes.new("ShaderNodeMapRange")
    maprange.inputs["From Min"].default_value = -1.0
    links.new(coords.outputs["Generated"], sep.inputs[0])
    links.new(sep.outputs["Z"], maprange.inputs["Value"])
    links.new(maprange.outputs["Result"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], background.inputs["Color"])
    background.inputs["Strength"].default_value = 0.0 if "world" in off else 0.3
    scene.world = world

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def _material(name: str, albedo: np.ndarray, roughness: np.ndarray, no_specular: bool = False):
    import bpy

    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    if name in ("M_Face", "M_BackHead"):
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = _image(f"albedo_{name}", albedo, "sRGB")
        rough = nodes.new("ShaderNodeTexImage")
        rough.image = _image(f"rough_{name}", np.repeat(roughness[..., None], 3, -1), "Non-Color")
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        links.new(rough.outputs["Color"], bsdf.inputs["Roughness"])
        bsdf.inputs["Specular IOR Level"].default_value = 0.0 if no_specular else 0.45
        return mat
    colour = PART_COLOURS.get(name)
    if colour is None:
        bsdf.inputs["Alpha"].default_value = 0.0
        return mat
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.15 if "Sclera" in name or "Iris" in name else 0.5
    return mat


def _image(name: str, rgb: np.ndarray, colourspace: str):
    import bpy

    h, w = rgb.shape[:2]
    image = bpy.data.images.new(name, w, h, alpha=False, float_buffer=colourspace != "sRGB")
    image.colorspace_settings.name = colourspace
    pixels = np.concatenate([rgb[::-1], np.ones((h, w, 1), np.float32)], -1)
    image.pixels.foreach_set(pixels.astype(np.float32).ravel())
    image.pack()
    return image


# --------------------------------------------------------------------------------------------


def make_case(case: Case, model: FaceModel, out: Path, size: int, samples: int,
              tint: tuple[float, float, float] = (1.0, 1.0, 1.0), off: frozenset[str] = frozenset()) -> Path:
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(case.seed)
    identity = np.zeros(100, np.float32)
    identity[:12] = rng.normal(0, 0.8, 12)
    expression = np.zeros(len(model.expression_names), np.float32)
    for name, weight in case.expression.items():
        expression[model.expression_names.index(name)] = weight
    vertices = model.vertices(identity, expression)
    lm = landmark_uvs(model)
    disp, fold_dist = displacement_truth(case, lm, TRUTH_SIZE)
    face_id, tile_uv = face_tile(model, TRUTH_SIZE)
    island = face_id >= 0
    mesh_falloff = dense_face_mesh(model, 0, 0.04).falloff
    falloff = np.zeros_like(disp)
    falloff[island] = mesh_falloff(tile_uv[island])
    disp = disp * falloff
    albedo, roughness, marks, tzone = albedo_maps(case, lm, fold_dist, "marks" not in off)
    params = head_params(case, vertices, size)
    start = time.perf_counter()
    render_cycles(case, *head_mesh(model, vertices), model, albedo, roughness, disp, params, size, samples,
                  folder / "photo.png", tint, off)
    seconds = time.perf_counter() - start

    metres = atlas_metres(vertices, model, face_id)[:, :TRUTH_SIZE]
    small = lambda m: cv2.resize(m.astype(np.float32), (TRUTH_SIZE,) * 2, interpolation=cv2.INTER_AREA) > 0  # noqa: E731
    np.savez_compressed(
        folder / "truth.npz", displacement_mm=disp, normal_map=bake_normal_map(disp, metres),
        folds=(fold_dist < 3.0) & island, marks=small(marks) & island & (fold_dist > 4.0), tzone=small(tzone),
        island=island, albedo=(albedo * 255 + 0.5).astype(np.uint8), roughness=roughness,
        identity=identity, expression=expression, rotation=params["rotation"],
        translation=params["translation"], camera=params["camera"])
    recipe = {**asdict(case), "size": size, "samples": samples, "light_tint": list(tint),
              "off": sorted(off), "render_seconds": round(seconds, 1)}
    (folder / "case.json").write_text(json.dumps(recipe, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=len(CASES), help="the first N of the built-in cases")
    parser.add_argument("--only", nargs="*", default=None, help="case names")
    parser.add_argument("--heldout", action="store_true", help="render HELDOUT_CASES instead of the set")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--light-tint", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("R", "G", "B"),
                        help="linear RGB factors of every light and the world (a tinted room)")
    parser.add_argument("--off", nargs="*", default=[], choices=VARIANT_PARTS,
                        help="render a variant without these parts (see the module docstring)")
    args = parser.parse_args(argv)
    model = load_face_model()
    for case in HELDOUT_CASES if args.heldout else CASES[:args.cases]:
        if args.only and case.name not in args.only:
            continue
        start = time.perf_counter()
        folder = make_case(case, model, args.output, args.size, args.samples, tuple(args.light_tint),
                           frozenset(args.off))
        print(f"{case.name}: {time.perf_counter() - start:.1f} s -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
