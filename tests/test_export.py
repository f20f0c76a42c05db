"""core.output.export: writers read back by independent readers (trimesh, OpenEXR, Pillow), and a
whole Reconstruction of the real ICT-FaceKit model saved atomically."""

from __future__ import annotations

import json

import numpy as np
import OpenEXR
import pytest
import trimesh
from conftest import face_photo
from PIL import Image

from core.errors import LikenessError
from core.geometry.face_model import triangulate
from core.geometry.params import Camera, FaceParams
from core.output import export, gltf
from core.reconstruction import DetailMaps, Reconstruction


@pytest.fixture(scope="module")
def rec(face_model) -> Reconstruction:
    """The neutral ICT head (all parameters zero) looking straight at the camera, 1 m away,
    over a real photo; a plain albedo and a known displacement ramp."""
    photo = np.asarray(Image.open(face_photo("00016.png")).convert("RGB"))
    height, width = photo.shape[:2]
    vertices = face_model.vertices()
    params = FaceParams(
        identity=np.zeros(100, np.float32),
        expression=np.zeros(53, np.float32),
        rotation=np.zeros(3),
        translation=np.zeros(3),
        camera=Camera.default_for(width, height),
    )
    face = vertices[face_model.region_mask("face")]
    params.translation = np.array([0.0, 0.0, 1.0]) - params.rotation_matrix() @ face.mean(axis=0)
    landmarks = params.project(vertices[face_model.landmarks68])
    displacement = np.linspace(-2.0, 2.0, 128 * 128, dtype=np.float32).reshape(128, 128)
    normal_map = np.zeros((128, 128, 3), np.uint8) + np.array([128, 128, 255], np.uint8)
    return Reconstruction(
        image=photo,
        model=face_model,
        params=params,
        coarse_params=params.copy(),
        vertices=vertices,
        identity_vertices=vertices.copy(),
        albedo=np.full((256, 256, 3), (200, 160, 140), np.uint8),
        albedo_visibility=np.ones((256, 256), np.float32),
        landmarks68_2d=landmarks,
        face_box=np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)]),  # as a detector's
        source="/photos/portrait 1.png",
        detail=DetailMaps(displacement, normal_map),
        timings={"total": 1.5},
        metrics={"landmark_px": 2.0, "undefined": float("nan")},
        warnings=["just a test"],
    )


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), export.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and not tmp.exists()
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]

    with pytest.raises(ValueError):
        export.write_png(tmp_path / "bad.png", np.zeros((4, 4), np.float32))
    assert sorted(tmp_path.iterdir()) == [target]

    with export.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_png_16bit_mid_level(tmp_path):
    mm = np.array([[0.0, 1.0, -1.0, 0.0005], [-32.768, 32.767, 40.0, -40.0]], np.float32)
    encoded = export.displacement_to_uint16(mm)
    np.testing.assert_array_equal(encoded, [[32768, 33768, 31768, 32769], [0, 65535, 65535, 0]])

    export.write_png(tmp_path / "d.png", encoded)
    with Image.open(tmp_path / "d.png") as image:
        assert image.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(image), encoded)


def test_png_8bit_roundtrip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    export.write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), rgb)


def test_exr_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    single = rng.normal(0, 3, (40, 30)).astype(np.float32)
    export.write_exr(tmp_path / "y.exr", single)
    with OpenEXR.File(str(tmp_path / "y.exr")) as exr:
        channels = exr.channels()
        assert list(channels) == ["Y"]
        np.testing.assert_array_equal(channels["Y"].pixels, single)

    rgb = rng.random((20, 10, 3), dtype=np.float32)
    export.write_exr(tmp_path / "rgb.exr", rgb)
    with OpenEXR.File(str(tmp_path / "rgb.exr")) as exr:
        np.testing.assert_array_equal(exr.channels()["RGB"].pixels, rgb)


def test_split_uv_seams():
    faces = np.array([[0, 1, 2], [2, 1, 3]])
    face_uvs = np.array([[0, 1, 2], [4, 1, 3]])  # vertex 2 has uv 2 in one face and uv 4 in the other
    vertex_ids, uv_ids, split = gltf.split_uv_seams(faces, face_uvs)
    assert len(vertex_ids) == 5
    np.testing.assert_array_equal(vertex_ids[split], faces)
    np.testing.assert_array_equal(uv_ids[split], face_uvs)


def test_obj_roundtrip(tmp_path, face_model):
    vertices = face_model.neutral
    export.write_obj(
        tmp_path / "head.obj", vertices, face_model.polygons, face_model.uvs, face_model.polygon_uvs,
        "head.mtl", "skin",
    )
    mesh = trimesh.load(tmp_path / "head.obj", process=False, maintain_order=True)
    assert mesh.vertices.shape == vertices.shape
    assert len(mesh.faces) == len(triangulate(face_model.polygons))
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-6)

    lines = (tmp_path / "head.obj").read_text().splitlines()
    faces = [line.split()[1:] for line in lines if line.startswith("f ")]
    assert len(faces) == len(face_model.polygons) and "mtllib head.mtl" in lines and "usemtl skin" in lines
    quad = int(np.argmax(face_model.polygons[:, 3] >= 0))
    tri = int(np.argmax(face_model.polygons[:, 3] < 0))
    v, t = face_model.polygons[quad], face_model.polygon_uvs[quad]
    assert faces[quad] == [f"{v[k] + 1}/{t[k] + 1}" for k in range(4)]
    assert len(faces[tri]) == 3


def test_obj_with_normals(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    polygons = np.array([[0, 1, 2, 3], [1, 4, 2, -1]])
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    polygon_uvs = np.array([[0, 1, 2, 3], [1, 0, 2, -1]])
    normals = np.tile([0.0, 0.0, 1.0], (5, 1))
    export.write_obj(tmp_path / "q.obj", vertices, polygons, uvs, polygon_uvs, "q.mtl", "m", normals=normals)
    lines = (tmp_path / "q.obj").read_text().splitlines()
    faces = [line for line in lines if line.startswith("f ")]
    assert faces == ["f 1/1/1 2/2/2 3/3/3 4/4/4", "f 2/2/2 5/1/5 3/3/3"]
    mesh = trimesh.load(tmp_path / "q.obj", process=False, maintain_order=True)
    assert len(mesh.faces) == 3
    np.testing.assert_allclose(mesh.vertex_normals, normals)


def test_obj_with_several_materials(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    polygons = np.array([[0, 1, 2, 3], [1, 4, 2, -1], [0, 1, 3, -1]])
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    materials = ["a", "b", "b"]
    export.write_obj(tmp_path / "q.obj", vertices, polygons, uvs, polygons.clip(0, 3), "q.mtl", materials)
    lines = (tmp_path / "q.obj").read_text().splitlines()
    assert [line for line in lines if line.startswith(("usemtl", "f "))] == [
        "usemtl a", "f 1/1 2/2 3/3 4/4", "usemtl b", "f 2/2 5/4 3/3", "f 1/1 2/2 4/4"]
    export.write_mtl(tmp_path / "q.mtl", {"a": {"map_Kd": "a.png"}, "b": {"Kd": "1 0 0"}})
    mtl = (tmp_path / "q.mtl").read_text().split("\n\n")
    assert mtl[0].startswith("newmtl a\n") and "map_Kd a.png" in mtl[0] and "Kd 1 1 1" in mtl[0]
    assert mtl[1].startswith("newmtl b\n") and "Kd 1 0 0" in mtl[1] and "Kd 1 1 1" not in mtl[1]


def test_preview_image(rec):
    preview = export.preview_image(rec, size=256)
    assert preview.shape == (256, 1024, 3) and preview.dtype == np.uint8
    photo, overlay, alone = preview[:, :256], preview[:, 256:512], preview[:, 512:768]
    head = (alone != 40).any(axis=2)
    assert 0.1 < head.mean() < 0.9  # the head fills a good part of the frame, not all of it
    assert (overlay[head] != photo[head]).any(axis=1).mean() > 0.9
    dots = (overlay == (40, 230, 90)).all(axis=2)
    # 68 landmark dots of a few pixels each, on the head (the outer jaw points sit on its outline)
    assert dots.sum() > 68 and dots[head].sum() > 0.9 * dots.sum()
    np.testing.assert_array_equal(overlay[~head & ~dots], photo[~head & ~dots])


def test_save_reconstruction_writes_everything(rec, tmp_path):
    written = export.save_reconstruction(rec, tmp_path / "out")
    names = sorted(p.name for p in written)
    stem = "portrait 1"
    assert names == sorted(
        f"{stem}{suffix}"
        for suffix in (".obj", ".mtl", ".glb", "_albedo.png", "_preview.png", "_params.json",
                       "_displacement.exr", "_displacement.png", "_normal.png", "_eye_L.png", "_eye_R.png")
    )
    assert sorted((tmp_path / "out").iterdir()) == sorted(written)  # no staging leftovers

    out = tmp_path / "out"
    mtl = (out / f"{stem}.mtl").read_text().splitlines()
    assert f"map_Kd {stem}_albedo.png" in mtl and f"map_Bump {stem}_normal.png" in mtl
    assert f"map_Kd {stem}_eye_L.png" in mtl and f"map_Kd {stem}_eye_R.png" in mtl
    obj = (out / f"{stem}.obj").read_text().splitlines()
    vertices = np.array([line.split()[1:] for line in obj if line.startswith("v ")], float)
    np.testing.assert_allclose(vertices, rec.vertices, atol=1e-6)  # metres, every ICT vertex in order
    used = {line.split()[1] for line in obj if line.startswith("usemtl")}
    assert used == {"likeness_skin", "likeness_eye_L", "likeness_eye_R", "likeness_eye_inner",
                    "likeness_gums", "likeness_teeth"}

    params = json.loads((out / f"{stem}_params.json").read_text())
    assert len(params["params"]["expression"]) == 53 and params["params"]["expression"]["jawOpen"] == 0.0
    assert params["euler_degrees"] == {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
    assert params["params"]["camera"]["width"] == rec.image.shape[1]
    assert params["metrics"] == {"landmark_px": 2.0, "undefined": None}
    assert params["warnings"] == ["just a test"] and params["timings"] == {"total": 1.5}
    assert params["displacement"]["png_mid_level"] == 32768 and params["displacement"]["png_unit_mm"] == 0.001

    with OpenEXR.File(str(out / f"{stem}_displacement.exr")) as exr:
        np.testing.assert_array_equal(exr.channels()["Y"].pixels, rec.detail.displacement_mm)
    with Image.open(out / f"{stem}_displacement.png") as image:
        decoded = (np.asarray(image).astype(np.float64) - 32768) * 0.001
    np.testing.assert_allclose(decoded, rec.detail.displacement_mm, atol=0.0005 + 1e-6)
    assert Image.open(out / f"{stem}_preview.png").size == (4 * export.PREVIEW_SIZE, export.PREVIEW_SIZE)


def test_save_reconstruction_formats(rec, tmp_path):
    names = {p.name for p in export.save_reconstruction(rec, tmp_path, formats=("glb",))}
    assert "portrait 1.glb" in names and "portrait 1.obj" not in names and "portrait 1.mtl" not in names
    with pytest.raises(ValueError, match="fbx"):
        export.save_reconstruction(rec, tmp_path / "other", formats=("fbx",))


def test_failing_writer_leaves_nothing(rec, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "head_glb", disk_full)
    with pytest.raises(LikenessError, match="No space left"):
        export.save_reconstruction(rec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_swapping_keeps_the_old_result(rec, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export.save_reconstruction(rec, out, formats=("obj",))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = export.os.rename

    def failing_rename(src, dst):
        if str(src).endswith(".staging"):  # the new result moving in
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(export.os, "rename", failing_rename)
    with pytest.raises(LikenessError, match="Input/output error"):
        export.save_reconstruction(rec, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, lock or set-aside folder
