"""blender_addon.build with the bpy module: a hand-built Reconstruction of the real ICT-FaceKit
model (a few expression weights, frontal camera, real photo, generated albedo and detail maps)
turned into Blender objects, checked through Blender's own evaluation, saved, reopened, rendered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import face_photo, load_extension_package
from PIL import Image

from core.errors import Cancelled
from core.geometry.params import Camera, FaceParams
from core.progress import Progress
from core.reconstruction import DetailMaps, Reconstruction

bpy = pytest.importorskip("bpy")

EXPRESSIONS = {"jawOpen": 0.4, "mouthSmile_L": 0.7, "eyeBlink_R": 0.25}
PHOTO = "000031.jpg"


load_extension_package()
from likeness.blender_addon import build  # noqa: E402


def make_reconstruction(model, *, detail: bool) -> Reconstruction:
    photo = np.asarray(Image.open(face_photo(PHOTO)).convert("RGB"))
    height, width = photo.shape[:2]
    expression = np.zeros(53, np.float32)
    for name, weight in EXPRESSIONS.items():
        expression[model.expression_names.index(name)] = weight
    identity = np.zeros(100, np.float32)
    identity[:3] = (1.0, -0.5, 0.8)
    params = FaceParams(identity=identity, expression=expression, rotation=np.zeros(3),
                        translation=np.array([0.0, 0.0, 1.0]), camera=Camera.default_for(width, height))
    size = 64
    v, u = np.mgrid[0:size, 0:2 * size] / size
    albedo = (np.stack([0.75 + 0.1 * u, 0.55 + 0.2 * v, 0.45 + 0.05 * u], -1) * 255).astype(np.uint8)
    maps = None
    if detail:
        maps = DetailMaps(displacement_mm=(0.4 * np.sin(20 * u) * np.sin(20 * v)).astype(np.float32),
                          normal_map=np.full((size, 2 * size, 3), (128, 128, 255), np.uint8))
    vertices = model.vertices(identity, expression)
    return Reconstruction(
        image=photo, model=model, params=params, coarse_params=params.copy(), vertices=vertices,
        identity_vertices=model.vertices(identity), albedo=albedo,
        albedo_visibility=np.ones((size, 2 * size), np.float32),
        landmarks68_2d=params.project(vertices[model.landmarks68]), face_box=np.array([0, 0, width, height]),
        source=str(face_photo(PHOTO)), detail=maps)


@pytest.fixture(scope="module")
def rec(face_model):
    return make_reconstruction(face_model, detail=True)


@pytest.fixture
def empty_scene():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    return bpy.context.scene


@pytest.fixture
def head(rec, empty_scene):
    return build.build_reconstruction(rec, empty_scene.collection, camera=True)


def evaluated_coordinates(obj) -> np.ndarray:
    """World-space vertex positions after shape keys (and drivers), as Blender evaluates them."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]


def expected_coordinates(rec, regions) -> np.ndarray:
    part = build.cut_part(rec.model, regions)
    return build.to_blender(rec.vertices[part.vertex_ids])


def test_head_geometry_and_shape_keys_reproduce_the_fit(rec, head):
    model = rec.model
    part = build.cut_part(model, build.HEAD_REGIONS)
    assert head.name == Path(PHOTO).stem
    assert len(head.data.vertices) == len(part.vertex_ids) == 14062
    assert len(head.data.polygons) == 14034
    assert head.data.uv_layers.active is not None and head.data.uv_layers.active.name == "UVMap"
    keys = head.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", *model.expression_names]
    for name, weight in EXPRESSIONS.items():
        assert keys[name].value == pytest.approx(weight)
        assert (keys[name].slider_min, keys[name].slider_max) == (0.0, 1.0)
    assert sum(k.value for k in keys[1:]) == pytest.approx(sum(EXPRESSIONS.values()))
    # Blender's evaluation of basis + keys is the fitted mesh, in Blender axes (z up, -y front).
    np.testing.assert_allclose(evaluated_coordinates(head), expected_coordinates(rec, build.HEAD_REGIONS),
                               atol=1e-6)
    co = evaluated_coordinates(head)
    chin, top = co[:, 2].argmin(), co[:, 2].argmax()
    assert co[top, 2] - co[chin, 2] > 0.2  # upright: the head spans its height along z
    nose_tip = co[:, 1].argmin()
    assert abs(co[nose_tip, 0]) < 0.01  # the most frontal (-y) point is on the midline


def test_uvs_are_the_reconstruction_atlas_uvs(rec, head):
    part = build.cut_part(rec.model, build.HEAD_REGIONS)
    uv = np.empty(len(head.data.loops) * 2, np.float32)
    head.data.uv_layers["UVMap"].uv.foreach_get("vector", uv)
    expected = rec.uvs[part.polygon_uvs[part.polygons >= 0]]
    np.testing.assert_allclose(uv.reshape(-1, 2), expected, atol=1e-6)
    loops = np.empty(len(head.data.loops), np.int32)
    head.data.loops.foreach_get("vertex_index", loops)
    np.testing.assert_array_equal(loops, part.polygons[part.polygons >= 0])


def test_eyes_and_teeth_are_children_that_follow_the_jaw(rec, head):
    children = {c.name.removeprefix(head.name): c for c in head.children}
    assert set(children) == {"_eye.L", "_eye.R", "_teeth", "_camera"}
    eye_l, eye_r, teeth = children["_eye.L"], children["_eye.R"], children["_teeth"]
    assert len(eye_l.data.vertices) == len(eye_r.data.vertices) == 1570
    assert len(teeth.data.vertices) == (21451 - 14062)
    assert eye_l.location.x > 0.02 and eye_r.location.x < -0.02  # the subject's left is +x
    # Keys for expressions that move a part by less than CHILD_KEY_MIN_OFFSET are left out.
    for obj, regions in ((eye_l, ("eyeball_left",)), (teeth, build.TEETH_REGIONS)):
        np.testing.assert_allclose(evaluated_coordinates(obj), expected_coordinates(rec, regions),
                                   atol=build.CHILD_KEY_MIN_OFFSET)
    assert eye_l.data.shape_keys is None  # no expression moves the eyeballs
    assert [k.name for k in teeth.data.shape_keys.key_blocks] == ["Basis", "jawForward", "jawLeft", "jawOpen",
                                                                  "jawRight"]
    # The teeth's keys are driven by the head's: opening the jaw moves the lower teeth along.
    before = evaluated_coordinates(teeth)
    head.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    bpy.context.view_layer.update()
    assert teeth.data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(1.0)
    assert np.abs(evaluated_coordinates(teeth) - before).max() > 0.01


def test_materials_images_and_detail(rec, head):
    skin = head.data.materials[0]
    tree = skin.node_tree
    bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    base_link = bsdf.inputs["Base Color"].links[0]
    assert base_link.from_node.bl_idname == "ShaderNodeTexImage"
    albedo = base_link.from_node.image
    assert albedo.packed_file is not None and tuple(albedo.size) == (128, 64)
    # Row 0 of the reconstruction's texture is the top; Blender's row 0 is the bottom.
    pixels = np.empty(128 * 64 * 4, np.float32)
    albedo.pixels.foreach_get(pixels)
    np.testing.assert_allclose(pixels.reshape(64, 128, 4)[::-1, :, :3] * 255, rec.albedo, atol=0.51)
    output = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    displacement = output.inputs["Displacement"].links[0].from_node
    assert displacement.bl_idname == "ShaderNodeDisplacement"
    assert displacement.inputs["Scale"].default_value == pytest.approx(0.001)
    assert displacement.inputs["Midlevel"].default_value == 0.0
    height_image = displacement.inputs["Height"].links[0].from_node.image
    assert height_image.is_float and height_image.packed_file is not None
    assert height_image.colorspace_settings.is_data
    heights = np.empty(128 * 64 * 4, np.float32)
    height_image.pixels.foreach_get(heights)
    np.testing.assert_allclose(heights.reshape(64, 128, 4)[::-1, :, 0], rec.detail.displacement_mm, atol=1e-6)
    assert skin.displacement_method == "BOTH"
    normal_map = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeNormalMap")
    assert normal_map.inputs["Color"].links[0].from_node.image.colorspace_settings.is_data
    eye = bpy.data.objects[f"{head.name}_eye.L"]
    assert [m.name for m in eye.data.materials] == [f"{head.name}_eye", f"{head.name}_eye_inner"]


def test_without_detail_there_is_no_displacement(face_model, empty_scene):
    rec = make_reconstruction(face_model, detail=False)
    head = build.build_reconstruction(rec, empty_scene.collection)
    nodes = head.data.materials[0].node_tree.nodes
    output = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    assert not output.inputs["Displacement"].is_linked
    assert not any(c.type == "CAMERA" for c in head.children)


def test_camera_sees_the_head_as_the_photo_does(rec, head):
    """Project the head's landmarks with Blender's camera and compare with the core's projection."""
    from bpy_extras.object_utils import world_to_camera_view

    scene = bpy.context.scene
    build.use_photo_camera(scene, head, rec)
    camera = scene.camera
    assert camera.parent == head
    assert camera.data.background_images[0].image.packed_file is not None
    co = evaluated_coordinates(head)
    part = build.cut_part(rec.model, build.HEAD_REGIONS)
    local = np.searchsorted(part.vertex_ids, rec.model.landmarks68)
    height, width = rec.image.shape[:2]
    from mathutils import Vector

    projected = np.array([tuple(world_to_camera_view(scene, camera, Vector(p)))[:2] for p in co[local]])
    pixels = np.stack([projected[:, 0] * width, (1 - projected[:, 1]) * height], 1)
    np.testing.assert_allclose(pixels, rec.landmarks68_2d, atol=0.05)


def test_failed_build_leaves_no_datablocks(face_model, empty_scene):
    rec = make_reconstruction(face_model, detail=True)
    rec.params.camera.width = rec.params.camera.height = 0  # fails last, at the camera
    kinds = ("objects", "meshes", "materials", "images", "cameras", "shape_keys")
    before = {kind: len(getattr(bpy.data, kind)) for kind in kinds}
    with pytest.raises(ZeroDivisionError):
        build.build_reconstruction(rec, empty_scene.collection, camera=True)
    assert {kind: len(getattr(bpy.data, kind)) for kind in kinds} == before
    assert len(empty_scene.collection.objects) == 0


@pytest.mark.parametrize("step", range(5))
def test_build_cancelled_at_any_step_leaves_no_datablocks(rec, empty_scene, step):
    kinds = ("objects", "meshes", "materials", "images", "cameras", "shape_keys")
    before = {kind: len(getattr(bpy.data, kind)) for kind in kinds}
    progress = Progress()
    progress.callback = lambda stage, done, total: progress.cancel() if done == step else None
    with pytest.raises(Cancelled):
        build.build_reconstruction(rec, empty_scene.collection, camera=True, progress=progress)
    assert {kind: len(getattr(bpy.data, kind)) for kind in kinds} == before
    assert len(empty_scene.collection.objects) == 0


def test_free_location_moves_past_what_is_in_the_way():
    box = np.array([[-0.1, -0.1, -0.2], [0.1, 0.1, 0.1]])
    cube = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    beside = np.array([[1.0, -0.5, -0.5], [1.5, 0.5, 0.5]])
    assert build.free_location(box, [], (0, 0, 0)).tolist() == [0, 0, 0]
    assert build.free_location(box, [cube], (5, 0, 0)).tolist() == [5, 0, 0]
    np.testing.assert_allclose(build.free_location(box, [cube], (0, 0, 0)), [1.2, 0, 0])
    np.testing.assert_allclose(build.free_location(box, [cube, beside], (0, 0, 0)), [1.7, 0, 0])


def test_blend_file_round_trip(rec, head, tmp_path):
    path = tmp_path / "head.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    expected = evaluated_coordinates(head)
    name = head.name
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    assert name not in bpy.data.objects
    bpy.ops.wm.open_mainfile(filepath=str(path))
    reopened = bpy.data.objects[name]
    np.testing.assert_allclose(evaluated_coordinates(reopened), expected, atol=1e-6)
    keys = reopened.data.shape_keys.key_blocks
    assert keys["mouthSmile_L"].value == pytest.approx(EXPRESSIONS["mouthSmile_L"])
    assert len(reopened.children) == 4
    for image in bpy.data.images:
        assert image.packed_file is not None, image.name
        assert image.size[0] > 0 and image.has_data
    # Heights survive the file as floats (packed as EXR), signs and all.
    heights = bpy.data.images[f"{name}_displacement"]
    assert heights.is_float
    values = np.empty(heights.size[0] * heights.size[1] * 4, np.float32)
    heights.pixels.foreach_get(values)
    np.testing.assert_allclose(values.reshape(64, 128, 4)[::-1, :, 0], rec.detail.displacement_mm, atol=1e-3)


def test_render_shows_the_head(rec, head, tmp_path):
    """Cycles on the CPU through the photo camera: the head fills the face region with texture."""
    scene = bpy.context.scene
    build.use_photo_camera(scene, head, rec)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.render.resolution_percentage = 25
    scene.render.film_transparent = True
    scene.world = bpy.data.worlds.new("white")
    background = next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.rotation_euler = (0.8, 0.0, 0.3)
    scene.collection.objects.link(sun)
    scene.render.filepath = str(tmp_path / "render.png")
    bpy.ops.render.render(write_still=True)
    image = np.asarray(Image.open(tmp_path / "render.png").convert("RGBA")).astype(np.float32)
    height, width = image.shape[:2]
    box = rec.landmarks68_2d[27:] * (width / rec.image.shape[1])  # nose, eyes and mouth
    x0, y0 = box.min(0).astype(int)
    x1, y1 = box.max(0).astype(int)
    face = image[y0:y1, x0:x1]
    assert (face[..., 3] > 250).mean() > 0.99  # the head covers the inner face
    assert (image[..., 3] > 0).mean() < 0.8  # and not the whole frame
    assert face[..., :3].std() > 8  # shaded and textured, not a flat fill
    assert face[..., :3].mean() > 40  # lit
