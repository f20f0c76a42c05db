"""Binary glTF 2.0 of a reconstruction that animates in any glTF viewer or engine.

Nodes: the head (skin, mouth and eye sockets) with the eyes (node origin at the eyeball's
rotation centre, so engines can turn them) and the teeth as child nodes. Every mesh carries the
53 ARKit-named expressions as morph targets: names in ``mesh.extras.targetNames`` (the
convention three.js, Babylon.js and Blender read), default ``weights`` the fitted ones, so the
file shows the photo's expression and ``weights = 0`` the neutral face. The base shape is the
fitted identity. Targets are sparse accessors (an expression moves a small part of the head) and
zero-filled accessors without data where an expression does not move a part at all.

Materials: the skin with the de-lit albedo and, when there is detail, the tangent-space normal
map; the eyes with a sclera/iris/pupil texture in the photo's iris colour; plain teeth and gums.
Model space: metres, y up, z towards the viewer, which is glTF's frame.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..geometry.face_model import triangulate
from ..geometry.parts import (
    EYE_REGIONS,
    PARTS,
    PLAIN_COLOURS,
    cut_part,
    eye_centre,
    eye_textures,
    tile_uvs,
)
from ..reconstruction import Reconstruction

FLOAT, UINT32 = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
CLAMP_TO_EDGE, LINEAR = 33071, 9729
TRIANGLES = 4
# Offsets below this (metres) count as "does not move": keeps the sparse targets small.
MORPH_EPSILON = 1e-6
ROUGHNESS = {"skin": 0.5, "eye": 0.1}


@dataclass
class _Builder:
    """glTF JSON and its one binary buffer, filled part by part."""

    gltf: dict = field(default_factory=lambda: {
        "asset": {"version": "2.0", "generator": "Likeness"}, "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [], "meshes": [], "materials": [], "accessors": [], "bufferViews": [], "buffers": [],
        "textures": [], "images": [], "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR,
                                                      "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}]})
    data: bytearray = field(default_factory=bytearray)

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data += b"\0" * (-len(self.data) % 4)  # every view starts 4-byte aligned
        entry = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            entry["target"] = target
        self.data += payload
        return _append(self.gltf["bufferViews"], entry)

    def accessor(self, array: np.ndarray, kind: str, target: int | None = ARRAY_BUFFER,
                 bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        entry = {"bufferView": self.view(array.tobytes(), target), "componentType": _component(array),
                 "count": len(array), "type": kind}
        if bounds:
            entry["min"], entry["max"] = array.min(0).tolist(), array.max(0).tolist()
        return _append(self.gltf["accessors"], entry)

    def morph_accessor(self, offsets: np.ndarray) -> int:
        """A (N, 3) float32 POSITION displacement as a sparse accessor of the rows that move."""
        offsets = offsets.astype(np.float32)
        moving = np.flatnonzero(np.abs(offsets).max(1) > MORPH_EPSILON).astype(np.uint32)
        kept = np.zeros_like(offsets)
        kept[moving] = offsets[moving]
        entry = {"componentType": FLOAT, "count": len(offsets), "type": "VEC3",
                 "min": kept.min(0).tolist(), "max": kept.max(0).tolist()}
        if len(moving):
            entry["sparse"] = {
                "count": len(moving),
                "indices": {"bufferView": self.view(moving.tobytes()), "componentType": UINT32},
                "values": {"bufferView": self.view(np.ascontiguousarray(offsets[moving]).tobytes())}}
        return _append(self.gltf["accessors"], entry)

    def texture(self, image: np.ndarray) -> int:
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        image_entry = {"bufferView": self.view(png.getvalue()), "mimeType": "image/png"}
        source = _append(self.gltf["images"], image_entry)
        return _append(self.gltf["textures"], {"sampler": 0, "source": source})

    def glb(self) -> bytes:
        self.data += b"\0" * (-len(self.data) % 4)
        self.gltf["buffers"] = [{"byteLength": len(self.data)}]
        text = json.dumps({k: v for k, v in self.gltf.items() if v != []}, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(self.data)
        return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
                + struct.pack("<I4s", len(self.data), b"BIN\0") + bytes(self.data))


def _append(items: list, item: dict) -> int:
    items.append(item)
    return len(items) - 1


def _component(array: np.ndarray) -> int:
    return {np.dtype(np.float32): FLOAT, np.dtype(np.uint32): UINT32}[array.dtype]


def _material(builder: _Builder, name: str, roughness: float, *, texture: int | None = None,
              colour=(1.0, 1.0, 1.0), **extra) -> int:
    pbr = {"baseColorFactor": [*colour, 1.0], "metallicFactor": 0.0, "roughnessFactor": roughness}
    if texture is not None:
        pbr["baseColorTexture"] = {"index": texture}
    return _append(builder.gltf["materials"], {"name": name, "pbrMetallicRoughness": pbr, **extra})


def _materials(builder: _Builder, rec: Reconstruction, eyes: dict[str, np.ndarray]) -> dict[str, int]:
    """Material index per kind; eyes get one per side (each eye has its own UV layout)."""
    extra = {}
    if rec.detail is not None:
        extra["normalTexture"] = {"index": builder.texture(rec.detail.normal_map)}
    albedo = builder.texture(rec.albedo)
    out = {"skin": _material(builder, "skin", ROUGHNESS["skin"], texture=albedo, **extra)}
    for side, image in eyes.items():
        texture = builder.texture(image)
        out[f"eye.{side}"] = _material(builder, f"eye.{side}", ROUGHNESS["eye"], texture=texture)
    for kind, (colour, roughness) in PLAIN_COLOURS.items():
        out[kind] = _material(builder, kind, roughness, colour=colour)
    return out


def split_uv_seams(faces: np.ndarray, face_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """glTF needs one uv per vertex while OBJ has one per corner: make a vertex per distinct
    (vertex, uv) pair. Returns (vertex ids (N,), uv ids (N,), faces (F, 3) into the N new ones)."""
    pairs = np.stack([np.asarray(faces).ravel(), np.asarray(face_uvs).ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(np.shape(faces)).astype(np.int64)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of triangles ``faces``; zero for unused vertices."""
    corners = vertices[faces].astype(np.float64)
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    summed = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(summed, faces[:, k], face_normals)
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    return (summed / np.where(length > 0, length, 1)).astype(np.float32)


def tangents(positions: np.ndarray, normals: np.ndarray, uvs: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 4) glTF tangents: xyz along +u (per-triangle UV gradients summed per vertex, made
    orthogonal to the normal), w the sign that makes cross(normal, xyz) * w point along +v
    (``uvs`` in OBJ convention, v up: the baked normal maps' green axis)."""
    p = positions[faces].astype(np.float64)
    t = uvs[faces].astype(np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(det) > 1e-12, 1.0 / np.where(det == 0, 1, det), 0.0)[:, None]
    du = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) * r
    dv = (e2 * d1[:, :1] - e1 * d2[:, :1]) * r
    tangent, bitangent = np.zeros((len(positions), 3)), np.zeros((len(positions), 3))
    for k in range(3):
        np.add.at(tangent, faces[:, k], du)
        np.add.at(bitangent, faces[:, k], dv)
    tangent -= normals * (normals * tangent).sum(1, keepdims=True)
    length = np.linalg.norm(tangent, axis=1, keepdims=True)
    fallback = np.cross(normals, [0.0, 1.0, 0.0])  # degenerate UVs: any unit vector across the normal
    tangent = np.where(length > 1e-12, tangent / np.where(length > 0, length, 1), fallback)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    sign = np.where((np.cross(normals, tangent) * bitangent).sum(1) < 0, -1.0, 1.0)
    return np.concatenate([tangent, sign[:, None]], 1).astype(np.float32)


def _mesh(builder: _Builder, rec: Reconstruction, name: str, regions, origin: np.ndarray,
          materials: dict[str, int], side: str | None) -> int:
    """One part as a mesh: a vertex per distinct (vertex, uv) pair, one primitive per material,
    all sharing the attributes and the 53 morph targets."""
    model = rec.model
    part = cut_part(model, regions)
    faces, uv_faces = triangulate(part.polygons), triangulate(part.polygon_uvs)
    slots = np.repeat(part.material_index, 1 + (part.polygons[:, 3] >= 0))  # per triangle
    local, uv_ids, corners = split_uv_seams(faces, uv_faces)
    corners = corners.astype(np.uint32)
    ids = part.vertex_ids[local]
    positions = (rec.identity_vertices[ids] - origin).astype(np.float32)
    normals = vertex_normals(rec.identity_vertices[part.vertex_ids], faces)[local]
    skin = part.kinds == ["skin"]
    uvs = (model.atlas_uvs if skin else tile_uvs(model))[uv_ids] * [1, -1] + [0, 1]  # glTF: v down
    attributes = {"POSITION": builder.accessor(positions, "VEC3", bounds=True),
                  "NORMAL": builder.accessor(normals, "VEC3"),
                  "TEXCOORD_0": builder.accessor(uvs.astype(np.float32), "VEC2")}
    if skin and rec.detail is not None:  # the normal map needs a portable tangent space
        obj_uvs = model.atlas_uvs[uv_ids]
        attributes["TANGENT"] = builder.accessor(tangents(positions, normals, obj_uvs, corners), "VEC4")
    targets = [{"POSITION": builder.morph_accessor(offsets[ids])} for offsets in model.expression_basis]
    primitives = []
    for slot, kind in enumerate(part.kinds):
        indices = builder.accessor(corners[slots == slot].ravel(), "SCALAR", ELEMENT_ARRAY_BUFFER)
        material = materials[f"eye.{side}" if kind == "eye" else kind]
        primitives.append({"attributes": attributes, "indices": indices, "material": material,
                           "mode": TRIANGLES, "targets": targets})
    names = list(model.expression_names)
    return _append(builder.gltf["meshes"], {
        "name": name, "primitives": primitives, "weights": [float(w) for w in rec.params.expression],
        "extras": {"targetNames": names}})


def head_glb(rec: Reconstruction, eyes: dict[str, np.ndarray] | None = None) -> bytes:
    """The GLB file's bytes (see the module docstring); ``eyes``: ``core.geometry.parts.eye_textures(rec)``
    when the caller has them already."""
    builder = _Builder()
    materials = _materials(builder, rec, eyes if eyes is not None else eye_textures(rec))
    nodes = builder.gltf["nodes"]
    name = rec.name
    head = _append(nodes, {"name": name})
    children = []
    for suffix, regions in PARTS.items():
        side = next((s for s, r in EYE_REGIONS.items() if regions == (r,)), None)
        origin = (eye_centre(rec.model, rec.identity_vertices, regions[0]) if side
                  else np.zeros(3, np.float32))
        mesh = _mesh(builder, rec, name + suffix, regions, origin, materials, side)
        if not suffix:
            nodes[head]["mesh"] = mesh
            continue
        children.append(_append(nodes, {"name": name + suffix, "mesh": mesh,
                                        "translation": [float(c) for c in origin]}))
    nodes[head]["children"] = children
    return builder.glb()
