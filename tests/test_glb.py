"""The GLB that animates anywhere (core.output.gltf) from a real reconstruction: read back from its JSON
and binary chunk, checked by the Khronos glTF validator (node + tests/gltf, installed by
scripts/test.sh) and loaded by Blender's own glTF importer."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO
from scipy.spatial import cKDTree

from core.geometry.parts import EYE_REGIONS, eye_centre
from core.output.gltf import MORPH_EPSILON, head_glb, tangents
from core.reconstruction import DetailMaps

VALIDATOR = REPO / "tests" / "gltf"
COMPONENTS = {5126: np.float32, 5125: np.uint32}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}


@pytest.fixture(scope="module")
def rec(fast_reconstruction):
    """A real fast-preset result, with a normal map as the detail stage would add."""
    height, width = fast_reconstruction.albedo.shape[:2]
    normal = np.zeros((height, width, 3), np.uint8) + np.array([128, 128, 255], np.uint8)
    maps = DetailMaps(np.zeros((height, width), np.float32), normal)
    return replace(fast_reconstruction, detail=maps)


@pytest.fixture(scope="module")
def glb(rec, tmp_path_factory):
    path = tmp_path_factory.mktemp("glb") / "head.glb"
    path.write_bytes(head_glb(rec))
    return path


def read_glb(path):
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data)
    assert (magic, version, total) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<I4s", data, 12)
    bin_start = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<I4s", data, bin_start)
    assert (json_type, bin_type) == (b"JSON", b"BIN\0")
    return json.loads(data[20:bin_start]), data[bin_start + 8:bin_start + 8 + bin_length]


def accessor(gltf, binary, index) -> np.ndarray:
    """An accessor as a dense array (zeros when it has no data, sparse values applied)."""
    entry = gltf["accessors"][index]
    width = WIDTHS[entry["type"]]

    def values(view: int, dtype, count: int) -> np.ndarray:
        return np.frombuffer(binary, dtype, count, gltf["bufferViews"][view]["byteOffset"])

    dtype = COMPONENTS[entry["componentType"]]
    out = np.zeros((entry["count"], width), dtype)
    if "bufferView" in entry:
        out[:] = values(entry["bufferView"], dtype, entry["count"] * width).reshape(-1, width)
    sparse = entry.get("sparse")
    if sparse:
        ids = values(sparse["indices"]["bufferView"], np.uint32, sparse["count"])
        out[ids] = values(sparse["values"]["bufferView"], dtype, sparse["count"] * width).reshape(-1, width)
    return out


def test_nodes_morph_targets_and_materials(rec, glb):
    gltf, binary = read_glb(glb)
    model = rec.model
    nodes = gltf["nodes"]
    name = rec.name
    assert [n["name"] for n in nodes] == [name, f"{name}_eye.L", f"{name}_eye.R", f"{name}_teeth"]
    assert nodes[0]["children"] == [1, 2, 3]
    for side, node in zip(EYE_REGIONS, nodes[1:3], strict=True):  # eyes turn about their centre
        centre = eye_centre(model, rec.identity_vertices, EYE_REGIONS[side])
        np.testing.assert_allclose(node["translation"], centre, atol=1e-6)
    for mesh in gltf["meshes"]:
        assert mesh["extras"]["targetNames"] == list(model.expression_names)
        assert len(model.expression_names) == 53
        np.testing.assert_allclose(mesh["weights"], rec.params.expression, atol=1e-6)
        assert all(len(p["targets"]) == 53 for p in mesh["primitives"])
    materials = {m["name"]: m for m in gltf["materials"]}
    assert {"skin", "eye.L", "eye.R", "teeth", "gums", "eye_inner"} == set(materials)
    assert "baseColorTexture" in materials["skin"]["pbrMetallicRoughness"]
    assert "normalTexture" in materials["skin"]
    assert all("baseColorTexture" in materials[f"eye.{s}"]["pbrMetallicRoughness"] for s in "LR")

    # The head at its default weights is the fitted head; at zero weights the fitted identity.
    primitive = gltf["meshes"][nodes[0]["mesh"]]["primitives"][0]
    base = accessor(gltf, binary, primitive["attributes"]["POSITION"])
    posed = base + sum(w * accessor(gltf, binary, t["POSITION"])
                       for w, t in zip(rec.params.expression, primitive["targets"], strict=True))
    distance, ids = cKDTree(rec.identity_vertices).query(base)
    assert distance.max() < 1e-6
    # each target drops offsets up to MORPH_EPSILON (sparse accessors): at most that per target
    np.testing.assert_allclose(posed, rec.vertices[ids], atol=MORPH_EPSILON * len(primitive["targets"]))
    assert np.abs(posed - base).max() > 1e-3  # the fitted expression moves the face


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed")
def test_khronos_validator_finds_no_errors(glb):
    if not (VALIDATOR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("gltf-validator is not installed: scripts/test.sh runs npm install in tests/gltf "
                    "(needs the npm registry once)")
    result = subprocess.run(["node", str(VALIDATOR / "validate.js"), str(glb)], capture_output=True,
                            text=True, timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]
    assert report["info"]["hasMorphTargets"] and report["info"]["hasTextures"]


def test_blender_importer_loads_the_shape_keys(rec, glb):
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    assert bpy.ops.import_scene.gltf(filepath=str(glb)) == {"FINISHED"}
    head = bpy.data.objects[rec.name]
    keys = head.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", *rec.model.expression_names]
    np.testing.assert_allclose([k.value for k in keys[1:]], rec.params.expression, atol=1e-5)
    assert {c.name for c in head.children} == {f"{rec.name}_eye.L", f"{rec.name}_eye.R", f"{rec.name}_teeth"}
    assert all(len(c.data.shape_keys.key_blocks) == 54 for c in head.children)
    # Blender evaluates the keys at the fitted weights: the fitted head (glTF y up -> Blender z up).
    evaluated = head.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    fitted = rec.vertices @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32).T
    assert cKDTree(fitted).query(co.reshape(-1, 3))[0].max() < 2e-5


def test_tangents_follow_u_and_sign_follows_v():
    positions = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    normals = np.tile(np.float32([0, 0, 1]), (4, 1))
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = positions[:, :2]
    expected = np.tile([1, 0, 0, 1], (4, 1))
    np.testing.assert_allclose(tangents(positions, normals, uvs, faces), expected, atol=1e-6)
    mirrored = uvs * [1, -1]  # v runs down the surface: the bitangent flips
    np.testing.assert_allclose(tangents(positions, normals, mirrored, faces)[:, 3], -1)
