"""Blender objects from a core ``Reconstruction``.

One head object (skin, mouth and eye sockets) with the fitted expression as shape keys,
child objects for the eyes and the teeth, materials with the de-lit albedo and (when present) the
detail maps, and optionally a camera that sees the head as the photo did. Meshes are filled with
``foreach_set`` from numpy arrays; nothing here loops over vertices in Python.

Everything is created in the main thread from a finished ``Reconstruction``; on failure the
datablocks made so far are removed again, so the file is left as it was.
"""

from __future__ import annotations

from contextlib import contextmanager

import bpy
import numpy as np
from mathutils import Matrix

from ..core.geometry.parts import (
    HEAD_REGIONS,
    PLAIN_COLOURS,
    SCLERA_COLOUR,
    TEETH_REGIONS,
    Part,
    cut_part,
    eye_centre,
    eye_stops,
)
from ..core.progress import Progress

# ICT model space (y up, z towards the viewer) -> Blender (z up, -y towards the viewer).
MODEL_TO_BLENDER = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32)
# OpenCV camera axes (y down, z forward) -> Blender camera axes (y up, looking along -z).
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])

# Expressions that move a child part by less than this (metres) get no shape key on it.
CHILD_KEY_MIN_OFFSET = 5e-4
BACKGROUND_MAX_SIDE = 1024


def to_blender(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float32) @ MODEL_TO_BLENDER.T


# --------------------------------------------------------------------------------------------
# Datablocks


# The datablock types a build creates; shape keys and node trees belong to meshes and materials.
_CREATED_TYPES = ("objects", "meshes", "materials", "images", "cameras")


@contextmanager
def _removed_on_failure():
    """Remove every datablock created inside the block when it raises (the file stays as it was)."""
    before = {kind: {d.session_uid for d in getattr(bpy.data, kind)} for kind in _CREATED_TYPES}
    try:
        yield
    except BaseException:
        new = [d for kind in _CREATED_TYPES for d in getattr(bpy.data, kind)
               if d.session_uid not in before[kind]]
        if new:
            bpy.data.batch_remove(new)
        raise


def make_mesh(name: str, vertices: np.ndarray, part: Part, uvs: np.ndarray) -> bpy.types.Mesh:
    """A smooth-shaded mesh with one UV layer from padded (p, 4) polygons."""
    sizes = 3 + (part.polygons[:, 3] >= 0)
    loop_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    valid = part.polygons >= 0  # row-major boolean indexing keeps each polygon's corner order
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, np.float32).ravel())
    mesh.loops.add(int(sizes.sum()))
    mesh.loops.foreach_set("vertex_index", part.polygons[valid].astype(np.int32))
    mesh.polygons.add(len(part.polygons))
    mesh.polygons.foreach_set("loop_start", loop_starts)
    mesh.polygons.foreach_set("material_index", part.material_index)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(part.polygons), bool))
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.uv.foreach_set("vector", np.ascontiguousarray(uvs[part.polygon_uvs[valid]], np.float32).ravel())
    mesh.update()
    return mesh


def image_from_array(name: str, pixels: np.ndarray, *, data: bool = False) -> bpy.types.Image:
    """A packed image from an (H, W, 3) uint8 or (H, W) float array whose row 0 is the top.

    ``data`` marks non-colour data (normals, heights): no colour management is applied."""
    pixels = np.asarray(pixels)
    height, width = pixels.shape[:2]
    is_float = pixels.dtype.kind == "f"
    image = bpy.data.images.new(name, width, height, alpha=False, float_buffer=is_float, is_data=data)
    rgba = np.ones((height, width, 4), np.float32)
    if pixels.ndim == 2:
        rgba[..., :3] = pixels[..., None]
    else:
        rgba[..., :3] = pixels[..., :3] / 255.0 if pixels.dtype == np.uint8 else pixels[..., :3]
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender's row 0 is the bottom
    image.file_format = "OPEN_EXR" if is_float else "PNG"
    image.pack()
    return image


def _principled(material: bpy.types.Material):
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True  # from 5.0 every material has its node tree
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    output = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    return tree, bsdf, output


def plain_material(name: str, colour, roughness: float) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    _, bsdf, _ = _principled(material)
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    material.diffuse_color = (*colour, 1.0)  # what Workbench and the solid viewport show
    return material


def skin_material(name: str, albedo: bpy.types.Image, normal: bpy.types.Image | None,
                  displacement: bpy.types.Image | None) -> bpy.types.Material:
    """Principled BSDF with the albedo; with detail maps, a displacement (true displacement plus
    bump for what the mesh cannot carry) and the baked normal map next to it.

    The Normal Map node is left unlinked when the displacement is linked: the bump that Cycles and
    EEVEE derive from the displacement already shades the same detail, and both together would
    count it twice. Link it for engines or exports that ignore displacement."""
    material = bpy.data.materials.new(name)
    tree, bsdf, output = _principled(material)
    bsdf.inputs["Roughness"].default_value = 0.5
    texture = _image_node(tree, albedo, (-600, 300))
    tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    if normal is not None:
        normal_map = tree.nodes.new("ShaderNodeNormalMap")
        normal_map.location = (-300, -250)
        tree.links.new(_image_node(tree, normal, (-600, -250)).outputs["Color"], normal_map.inputs["Color"])
    if displacement is not None:
        node = tree.nodes.new("ShaderNodeDisplacement")
        node.location = (0, -450)
        node.inputs["Midlevel"].default_value = 0.0
        node.inputs["Scale"].default_value = 0.001  # the map is in millimetres (the core scaled it)
        tree.links.new(_image_node(tree, displacement, (-600, -550)).outputs["Color"], node.inputs["Height"])
        tree.links.new(node.outputs["Displacement"], output.inputs["Displacement"])
        material.displacement_method = "BOTH"
    return material


def eye_material(name: str, iris_colour) -> bpy.types.Material:
    """Sclera, iris and pupil by the angle between a point's direction from the eye object's
    origin (the eyeball centre) and the eye's axis (-y in object space, towards the viewer)."""
    material = bpy.data.materials.new(name)
    tree, bsdf, _ = _principled(material)
    bsdf.inputs["Roughness"].default_value = 0.1
    coords = tree.nodes.new("ShaderNodeTexCoord")
    direction = tree.nodes.new("ShaderNodeVectorMath")
    direction.operation = "NORMALIZE"
    tree.links.new(coords.outputs["Object"], direction.inputs[0])
    forward = tree.nodes.new("ShaderNodeVectorMath")
    forward.operation = "DOT_PRODUCT"
    forward.inputs[1].default_value = (0.0, -1.0, 0.0)
    tree.links.new(direction.outputs["Vector"], forward.inputs[0])
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.interpolation = "LINEAR"
    stops = eye_stops(iris_colour)
    elements = ramp.color_ramp.elements
    while len(elements) < len(stops):
        elements.new(0.5)
    for element, (position, colour) in zip(elements, stops, strict=True):
        element.position, element.color = position, (*colour, 1.0)
    tree.links.new(forward.outputs["Value"], ramp.inputs["Fac"])
    tree.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    for node, x in ((coords, -900), (direction, -700), (forward, -500), (ramp, -300)):
        node.location = (x, 300)
    material.diffuse_color = (*SCLERA_COLOUR, 1.0)
    return material


def _image_node(tree, image: bpy.types.Image, location):
    node = tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    node.extension = "EXTEND"  # no wrapping across the atlas border
    node.location = location
    return node


# --------------------------------------------------------------------------------------------
# Objects


def _add_shape_keys(obj, basis: np.ndarray, offsets: np.ndarray, names, weights) -> None:
    """Basis plus one key per expression (Blender coordinates), set to the fitted weights."""
    obj.shape_key_add(name="Basis", from_mix=False).data.foreach_set("co", basis.ravel())
    for name, offset, weight in zip(names, offsets, weights, strict=True):
        key = obj.shape_key_add(name=name, from_mix=False)
        key.data.foreach_set("co", (basis + offset).ravel())
        key.slider_min = min(0.0, float(weight))
        key.slider_max = max(1.0, float(weight))
        key.value = float(weight)


def _drive_keys_from(child, head) -> None:
    """Child shape keys follow the head's key of the same name (no Python: an AVERAGE driver)."""
    for key in child.data.shape_keys.key_blocks[1:]:
        driver = key.driver_add("value").driver
        driver.type = "AVERAGE"
        variable = driver.variables.new()
        variable.type = "SINGLE_PROP"
        variable.targets[0].id_type = "KEY"
        variable.targets[0].id = head.data.shape_keys
        variable.targets[0].data_path = f'key_blocks["{key.name}"].value'


def _part_object(rec, name: str, regions, materials: dict, *, origin=None, all_keys: bool = False):
    """An object for ``regions`` with its materials and shape keys: every expression when
    ``all_keys``, else those that move the part. ``origin`` (Blender coordinates) becomes the
    object's location, with the mesh around it."""
    part = cut_part(rec.model, regions)
    origin = np.zeros(3, np.float32) if origin is None else origin
    basis = to_blender(rec.identity_vertices[part.vertex_ids]) - origin
    mesh = make_mesh(name, basis, part, rec.uvs)
    for kind in part.kinds:
        mesh.materials.append(materials[kind])
    obj = bpy.data.objects.new(name, mesh)
    obj.location = tuple(float(c) for c in origin)
    offsets = to_blender(rec.model.expression_basis[:, part.vertex_ids])
    keep = (np.arange(len(offsets)) if all_keys
            else np.flatnonzero(np.abs(offsets).max(axis=(1, 2)) >= CHILD_KEY_MIN_OFFSET))
    if len(keep):
        names = [rec.model.expression_names[i] for i in keep]
        _add_shape_keys(obj, basis, offsets[keep], names, rec.params.expression[keep])
    return obj


def _eye_centre(rec, region: str) -> np.ndarray:
    return to_blender(eye_centre(rec.model, rec.identity_vertices, region)[None])[0]


def _materials(rec, name: str) -> dict:
    albedo = image_from_array(f"{name}_albedo", rec.albedo)
    normal = displacement = None
    if rec.detail is not None:
        normal = image_from_array(f"{name}_normal", rec.detail.normal_map, data=True)
        displacement = image_from_array(f"{name}_displacement",
                                        np.asarray(rec.detail.displacement_mm, np.float32), data=True)
    materials = {"skin": skin_material(f"{name}_skin", albedo, normal, displacement),
                 "eye": eye_material(f"{name}_eye", rec.iris_colour)}
    for kind, (colour, roughness) in PLAIN_COLOURS.items():
        materials[kind] = plain_material(f"{name}_{kind}", colour, roughness)
    return materials


def build_camera(view, name: str) -> bpy.types.Object:
    """A camera that sees the head (at the world origin, unrotated) as the photo does, with the
    photo as its background image; ``view`` is a Reconstruction or one of its ``photos``. Blender's
    render size must be the photo's for the framing."""
    params = view.params
    cam = params.camera
    rotation = params.rotation_matrix()  # model -> OpenCV camera
    centre = to_blender((-rotation.T @ params.translation)[None])[0]
    matrix = np.eye(4)
    matrix[:3, :3] = MODEL_TO_BLENDER @ rotation.T @ OPENCV_TO_BLENDER_CAMERA
    matrix[:3, 3] = centre
    data = bpy.data.cameras.new(name)
    longest = max(cam.width, cam.height)
    data.sensor_fit = "HORIZONTAL" if cam.width >= cam.height else "VERTICAL"
    data.sensor_width = data.sensor_height = 36.0
    data.lens = cam.focal * 36.0 / longest
    data.shift_x = (0.5 * cam.width - cam.cx) / longest
    data.shift_y = (cam.cy - 0.5 * cam.height) / longest
    data.clip_start, data.clip_end = 0.01, 100.0
    step = max(1, int(np.ceil(max(view.image.shape[:2]) / BACKGROUND_MAX_SIDE)))
    background = data.background_images.new()
    background.image = image_from_array(f"{name}_photo", view.image[::step, ::step])
    background.alpha = 0.5
    data.show_background_images = True
    obj = bpy.data.objects.new(name, data)
    obj.matrix_world = Matrix(matrix.tolist())
    return obj


def build_reconstruction(rec, collection: bpy.types.Collection, *, name: str | None = None,
                         camera: bool = False, progress: Progress | None = None) -> bpy.types.Object:
    """Create the head in ``collection`` with eyes, teeth and (optionally) each photo's camera as
    its children, and return the head object. On failure, or when ``progress`` is cancelled
    before the objects are linked, nothing is left behind."""
    name = name or rec.name
    progress = progress or Progress()
    with _removed_on_failure():
        progress.stage("build", 5)
        materials = _materials(rec, name)
        progress.advance()
        head = _part_object(rec, name, HEAD_REGIONS, materials, all_keys=True)
        progress.advance()
        objects = [head]
        for side, region in (("L", "eyeball_left"), ("R", "eyeball_right")):
            objects.append(_part_object(rec, f"{name}_eye.{side}", (region,), materials,
                                        origin=_eye_centre(rec, region)))
        progress.advance()
        objects.append(_part_object(rec, f"{name}_teeth", TEETH_REGIONS, materials))
        for child in objects[1:]:
            child.parent = head
            if child.data.shape_keys is not None:
                _drive_keys_from(child, head)
        progress.advance()
        if camera:  # one per photo: each shows how the head fits that photo
            for i, view in enumerate(rec.photos or [rec]):
                cam = build_camera(view, f"{name}_camera" if i == 0 else f"{name}_camera_{i + 1}")
                cam["likeness_photo"] = i
                cam["likeness_source"] = view.source or ""
                cam.parent = head  # moving the head keeps the photo match
                objects.append(cam)
        progress.advance()  # the last chance to cancel: linking makes the objects part of the scene
        for obj in objects:
            collection.objects.link(obj)
    return head


# Object types whose bounding box is not where they appear (or that have none to avoid).
_NOT_OBSTACLES = {"CAMERA", "LIGHT", "EMPTY", "SPEAKER", "LIGHT_PROBE", "LIGHTPROBE"}
PLACEMENT_GAP_M = 0.1


def world_box(objects) -> np.ndarray:
    """(2, 3) world-space min and max corner over the bounding boxes of ``objects``."""
    corners = []
    for obj in objects:
        matrix = np.array(obj.matrix_world)
        local = np.array([tuple(c) for c in obj.bound_box])
        corners.append(local @ matrix[:3, :3].T + matrix[:3, 3])
    points = np.concatenate(corners)
    return np.stack([points.min(0), points.max(0)])


def free_location(box: np.ndarray, obstacles: list[np.ndarray], start, gap: float = PLACEMENT_GAP_M):
    """A location for an object whose bounding box is ``box`` (2, 3) at the origin: ``start``, or
    further along +x until the box, ``gap`` apart, overlaps none of the ``obstacles`` (2, 3)."""
    location = np.array(start, float)
    for _ in range(len(obstacles) + 1):  # each step passes every box it hits, so this ends
        low, high = box[0] + location - gap, box[1] + location + gap
        hits = [o for o in obstacles if np.all(low < o[1]) and np.all(o[0] < high)]
        if not hits:
            break
        location[0] = max(o[1][0] for o in hits) + gap - box[0][0]
    return location


def place_beside_objects(head: bpy.types.Object, scene: bpy.types.Scene, view_layer) -> None:
    """Put the head (with its children) at the 3D cursor, moved along +x beside the visible
    objects there instead of inside them (the default cube)."""
    mine = {head, *head.children}
    parts = [obj for obj in mine if obj.type == "MESH"]
    obstacles = [world_box([obj]) for obj in view_layer.objects
                 if obj not in mine and obj.type not in _NOT_OBSTACLES and obj.visible_get()]
    view_layer.update()  # matrix_world of the new objects
    box = world_box(parts) - np.array(head.matrix_world.translation)
    head.location = tuple(free_location(box, obstacles, scene.cursor.location))


def use_photo_camera(scene: bpy.types.Scene, head: bpy.types.Object, rec) -> None:
    """Render through the head's photo camera at the photo's size (the camera becomes the
    scene's camera only when the scene has none)."""
    if scene.camera is None:
        scene.camera = next(child for child in head.children
                            if child.type == "CAMERA" and child.get("likeness_photo", 0) == 0)
    scene.render.resolution_x, scene.render.resolution_y = rec.image.shape[1], rec.image.shape[0]
    scene.render.resolution_percentage = 100
