"""The head as separate parts with materials, shared by every output (GLB, OBJ, preview, Blender).

Parts: the head (skin, mouth and eye sockets), each eyeball and the teeth with gums. Left out
everywhere: the eyelash strips and ICT's lacrimal fluid, eye blend and eye occlusion shells; they
are made for alpha-blended textures that the model does not ship, and drawn opaque they cover
the eyes (black eye openings).

ICT's eyeball is an outer shell ("sclera", with the cornea bulge) around an inner sphere
("iris"), made for textures ICT does not ship: sclera, iris and pupil are painted on the opaque
outer shell by the angle from the eye's axis, with the iris colour measured in the photo, and
the inner sphere stays hidden behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_model import FaceModel, triangulate

HEAD_REGIONS = ("face", "head_neck", "mouth_socket", "eye_socket_left", "eye_socket_right")
TEETH_REGIONS = ("gums_tongue", "teeth")
EYE_REGIONS = {"L": "eyeball_left", "R": "eyeball_right"}
# Part name suffix -> regions, in the order the outputs list them.
PARTS = {"": HEAD_REGIONS, "_eye.L": (EYE_REGIONS["L"],), "_eye.R": (EYE_REGIONS["R"],),
         "_teeth": TEETH_REGIONS}

# ICT material -> our material kind. The skin (face, back of the head, sockets) shares the
# reconstructed skin-atlas textures.
MATERIAL_KINDS = {
    "M_Face": "skin", "M_BackHead": "skin", "M_GumsTongue": "gums", "M_Teeth": "teeth",
    "M_ScleraLeft": "eye", "M_ScleraRight": "eye", "M_IrisLeft": "eye_inner", "M_IrisRight": "eye_inner",
}
PLAIN_COLOURS = {  # linear RGB, roughness
    "gums": ((0.45, 0.12, 0.12), 0.4), "teeth": ((0.75, 0.72, 0.62), 0.3),
    "eye_inner": ((0.02, 0.02, 0.02), 0.5),
}
SCLERA_COLOUR = (0.75, 0.72, 0.68)  # linear RGB
PUPIL_COLOUR = (0.005, 0.005, 0.005)
DEFAULT_IRIS_COLOUR = (0.08, 0.045, 0.02)
# Cosines of the angles from the eye's axis where the iris (~11.8 mm across on a ~12 mm radius
# eyeball: 29 degrees) and the pupil (~3.5 mm: 8.5 degrees) begin.
IRIS_COS, PUPIL_COS = 0.875, 0.989
# MediaPipe iris landmarks: centre, then four points on the iris outline, for each eye.
MEDIAPIPE_IRISES = ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477)))
EYE_TEXTURE_SIZE = 256


@dataclass
class Part:
    """A mesh cut out of the full ICT topology: local vertex ids and the polygons that use them."""

    vertex_ids: np.ndarray  # (n,) into the model's vertices
    polygons: np.ndarray  # (p, 4) local vertex ids, -1 pads triangles
    polygon_uvs: np.ndarray  # (p, 4) uv ids into model.uvs
    kinds: list[str]  # material kind per slot
    material_index: np.ndarray  # (p,) slot per polygon


def part_polygons(model: FaceModel, regions: tuple[str, ...]) -> np.ndarray:
    """(P,) bool: the polygons whose vertices all lie in ``regions``."""
    mask = model.region_mask(*regions)
    polygons = model.polygons
    return np.where(polygons >= 0, mask[np.maximum(polygons, 0)], True).all(axis=1)


def cut_part(model: FaceModel, regions: tuple[str, ...]) -> Part:
    """The polygons of ``model`` whose vertices all lie in ``regions``, re-indexed."""
    mask = model.region_mask(*regions)
    vertex_ids = np.flatnonzero(mask)
    inside = part_polygons(model, regions)
    polygons = model.polygons[inside]
    local = np.full(len(mask), -1, np.int64)
    local[vertex_ids] = np.arange(len(vertex_ids))
    part_polygons_ = np.where(polygons >= 0, local[np.maximum(polygons, 0)], -1)
    all_kinds = sorted(set(MATERIAL_KINDS.values()))
    kind_ids = np.array([all_kinds.index(k) for k in polygon_kinds(model)[inside]], np.int64)
    used, first = np.unique(kind_ids, return_index=True)
    used = used[np.argsort(first)]  # slots in order of first use
    slot_of_kind = np.zeros(len(all_kinds), np.int32)
    slot_of_kind[used] = np.arange(len(used))
    return Part(vertex_ids, part_polygons_, model.polygon_uvs[inside], [all_kinds[k] for k in used],
                slot_of_kind[kind_ids])


def polygon_kinds(model: FaceModel) -> np.ndarray:
    """(P,) material kind of every polygon of the model."""
    kind_of_material = np.array([MATERIAL_KINDS.get(name, "skin") for name in model.material_names])
    return kind_of_material[model.polygon_materials]


def shown_polygons(model: FaceModel) -> np.ndarray:
    """(P,) bool: the polygons of every part (no helper shells)."""
    return np.any([part_polygons(model, regions) for regions in PARTS.values()], axis=0)


def eye_centre(model: FaceModel, vertices: np.ndarray, region: str) -> np.ndarray:
    """Rotation centre of an eyeball (model space): the centre of the sphere behind the cornea,
    found from its extent (the cornea bulges forward, so the vertex mean would not do)."""
    start, stop = model.regions[region]
    points = vertices[start:stop]
    low, high = points.min(0), points.max(0)
    radius = 0.5 * (high[0] - low[0])
    return np.array([0.5 * (low[0] + high[0]), 0.5 * (low[1] + high[1]), low[2] + radius], np.float32)


def tile_uvs(model: FaceModel) -> np.ndarray:
    """UVs within each part's own UDIM tile (u and v in [0, 1]): what the textures of the parts
    other than the skin use (the skin uses ``model.atlas_uvs``)."""
    return (model.uvs - np.floor(model.uvs)).astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c, upper: float = 1.0) -> np.ndarray:
    """sRGB-encoded values of linear ones clipped to [0, ``upper``] (above 1: the power segment
    continued)."""
    c = np.clip(np.asarray(c, np.float64), 0.0, upper)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def linear_to_srgb8(c) -> np.ndarray:
    return np.rint(linear_to_srgb(c) * 255).astype(np.uint8)


def iris_colour(image: np.ndarray, landmarks: np.ndarray | None) -> tuple[float, float, float]:
    """Linear RGB of the irises in the photo: the median of a ring between pupil and iris outline
    around MediaPipe's iris landmarks, without its top (often under the upper lid) and without the
    brightest pixels (reflections)."""
    if landmarks is None or len(landmarks) < 478:
        return DEFAULT_IRIS_COLOUR
    height, width = image.shape[:2]
    samples = []
    for centre_id, outline_ids in MEDIAPIPE_IRISES:
        centre = landmarks[centre_id]
        radius = float(np.linalg.norm(landmarks[list(outline_ids)] - centre, axis=1).mean())
        if radius < 2.0:  # too few pixels to tell a colour
            continue
        x0, y0 = np.maximum(np.floor(centre - radius).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(centre + radius).astype(int) + 1, (width, height))
        ys, xs = np.mgrid[y0:y1, x0:x1]
        dx, dy = (xs + 0.5 - centre[0]) / radius, (ys + 0.5 - centre[1]) / radius
        ring = (np.hypot(dx, dy) > 0.4) & (np.hypot(dx, dy) < 0.75) & (dy > -0.3)  # the lid covers the top
        pixels = image[y0:y1, x0:x1][ring].astype(np.float32)
        if len(pixels):
            brightness = pixels.sum(1)
            samples.append(pixels[brightness <= np.percentile(brightness, 80)])
    if not samples:
        return DEFAULT_IRIS_COLOUR
    return tuple(float(c) for c in srgb_to_linear(np.median(np.concatenate(samples), axis=0) / 255.0))


def eye_stops(iris: tuple[float, float, float]) -> tuple[tuple[float, tuple[float, float, float]], ...]:
    """(cosine from the eye's axis, linear RGB) stops of an eyeball's colour: sclera, a thin dark
    limbus into the iris, the iris darkening towards the pupil, the pupil (also Blender's ramp)."""
    return ((IRIS_COS - 0.004, SCLERA_COLOUR), (IRIS_COS, iris),
            (PUPIL_COS - 0.003, tuple(0.6 * c for c in iris)), (PUPIL_COS, PUPIL_COLOUR))


def eye_colours(cosines: np.ndarray, iris: tuple[float, float, float]) -> np.ndarray:
    """Linear RGB (..., 3) for cosines of the angle from the eye's axis (``eye_stops``)."""
    stops = np.array([position for position, _ in eye_stops(iris)])
    colours = np.array([colour for _, colour in eye_stops(iris)])
    return np.stack([np.interp(cosines, stops, colours[:, k]) for k in range(3)], axis=-1)


def eyeball_vertex_colours(model: FaceModel, iris: tuple[float, float, float],
                           rest: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Linear RGB (n, 3) per vertex of each eyeball region (sclera, iris, pupil by the vertex's angle
    from its eye's axis in the ``rest`` pose, default the neutral model): the eyes of the preview and
    of the texture refinement's renders."""
    rest = model.neutral if rest is None else rest
    colours = {}
    for region in EYE_REGIONS.values():
        start, stop = model.regions[region]
        directions = rest[start:stop] - eye_centre(model, rest, region)
        cosines = directions[:, 2] / np.maximum(np.linalg.norm(directions, axis=1), 1e-9)
        colours[region] = eye_colours(cosines, iris)
    return colours


def eye_texture(model: FaceModel, vertices: np.ndarray, region: str, iris: tuple[float, float, float],
                size: int = EYE_TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 sRGB texture for the outer shell of eyeball ``region`` in its UV
    tile (``tile_uvs``): every texel coloured by its point's angle from the eye's axis
    (+z, straight ahead in model space) around ``eye_centre``."""
    import torch  # here: the Blender add-on imports this module before PyTorch may be installed

    from .rendering import interpolate_corners, rasterize_uv

    inside = part_polygons(model, (region,)) & (polygon_kinds(model) == "eye")
    faces = triangulate(model.polygons[inside])
    uv_faces = triangulate(model.polygon_uvs[inside])
    directions = vertices - eye_centre(model, vertices, region)
    cosines = directions[:, 2] / np.maximum(np.linalg.norm(directions, axis=1), 1e-9)
    fragments = rasterize_uv(torch.from_numpy(tile_uvs(model)[uv_faces]), size)
    texel_cos = interpolate_corners(fragments, torch.from_numpy(cosines[faces][..., None].astype(np.float32)))
    texel_cos = np.where(fragments.mask.numpy(), texel_cos[..., 0].numpy(), -1.0)  # unused texels: sclera
    return linear_to_srgb8(eye_colours(texel_cos, iris))


def eye_textures(rec) -> dict[str, np.ndarray]:
    """Both eyes' textures (``eye_texture``) for a reconstruction, by side ("L", "R")."""
    return {side: eye_texture(rec.model, rec.identity_vertices, region, rec.iris_colour)
            for side, region in EYE_REGIONS.items()}
