"""Reconstruct a head from the photo chosen in the Likeness panel, without blocking Blender."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..blender_addon import deps
from ..blender_addon.build import build_reconstruction, place_beside_objects, use_photo_camera
from ..blender_addon.jobs import run_reconstruction
from ..blender_addon.modal import JobOperator, job_state
from ..blender_addon.preferences import OFFLINE_HINT, model_status, options_from_preferences
from ..core.errors import AssetError, ImageError


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """An image datablock's pixels as (H, W, 3) uint8 sRGB, row 0 at the top (the core's layout)."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"The image '{image.name}' has no pixels: is its file missing?")
    flat = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(flat)
    rgb = flat.reshape(height, width, image.channels)[::-1, :, :3]  # Blender's row 0 is the bottom
    if rgb.shape[2] < 3:  # grey (and alpha)
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    if image.is_float:  # float buffers hold linear values; the core expects sRGB like a photo file
        rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.maximum(rgb, 0) ** (1 / 2.4) - 0.055)
    return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def photo_input(settings, which: str = "") -> tuple[object, str]:
    """(what core.reconstruct reads, object name) from the panel settings or a list entry."""
    if settings.source == "IMAGE":
        if settings.image is None:
            raise ImageError(f"Choose an image{which} in the Likeness panel first.")
        return image_pixels(settings.image), Path(settings.image.name).stem
    if not settings.filepath:
        raise ImageError(f"Choose a photo{which} in the Likeness panel first.")
    path = Path(bpy.path.abspath(settings.filepath))
    return str(path), path.stem


def photo_inputs(settings) -> tuple[object, str]:
    """The panel's photo, or it and the list's more photos of the same person (one head from all),
    and the object name (the first photo's)."""
    image, name = photo_input(settings)
    if not len(settings.more_photos):
        return image, name
    more = [photo_input(entry, f" for entry {i} of More Photos (or remove it)")[0]
            for i, entry in enumerate(settings.more_photos, 1)]
    return [image, *more], name


def frame_selected(context) -> None:
    """Frame the selection in every 3D viewport of the window (nothing to frame in background)."""
    for area in context.window.screen.areas if context.window else ():
        if area.type != "VIEW_3D":
            continue
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        if region is not None:
            with context.temp_override(area=area, region=region):
                bpy.ops.view3d.view_selected()


class ReconstructHead:
    """The Task of Reconstruct: the panel's photo and settings -> a head beside the 3D cursor."""

    label = "Reconstruct Head"
    dependency_hint = True

    def prepare(self, context):
        settings = context.scene.likeness
        image, self.name = photo_inputs(settings)
        face_index = settings.face_index - 1 if settings.face_index else None  # the panel's 0: automatic
        options = options_from_preferences(
            context, preset=settings.preset, device=settings.device, face_index=face_index,
            detail_strength=settings.detail_strength, detail_guidance=settings.detail_guidance,
            facial_hair=settings.facial_hair, scalp=settings.scalp)
        if not options.allow_download and not model_status(context)[0]:
            raise AssetError("The ICT-FaceKit head model is missing and cannot be downloaded: "
                             f"{OFFLINE_HINT}, or set a local copy in the add-on preferences.")
        return lambda progress: run_reconstruction(image, options, progress)

    def finish(self, context, rec, progress):
        """Build ``rec`` beside what is at the 3D cursor, select and frame it. When the build fails
        or ``progress`` is cancelled during it, the scene is left as it was."""
        scene = context.scene
        settings = scene.likeness
        collection = context.collection or scene.collection
        head = build_reconstruction(rec, collection, name=self.name, camera=settings.add_camera,
                                    progress=progress)
        head["likeness_source"] = rec.source or self.name
        head["likeness_preset"] = settings.preset
        place_beside_objects(head, scene, context.view_layer)
        if settings.add_camera:
            use_photo_camera(scene, head, rec)
        for obj in context.view_layer.objects:
            obj.select_set(False)
        head.select_set(True)
        context.view_layer.objects.active = head
        frame_selected(context)
        total = rec.timings.get("total", 0.0)
        return [("WARNING", w) for w in rec.warnings] + [
            ("INFO", f"Likeness: {head.name} reconstructed in {total:.1f} s")]


class LIKENESS_OT_reconstruct(JobOperator, bpy.types.Operator):
    """Reconstruct a textured, animatable 3D head from the face photo (Esc cancels)"""

    bl_idname = "likeness.reconstruct"
    bl_label = ReconstructHead.label
    bl_options = {"UNDO"}  # no REGISTER: Repeat Last would rerun the whole job synchronously
    task_type = ReconstructHead

    @classmethod
    def poll(cls, context):
        if job_state(context).running:
            cls.poll_message_set("A Likeness job is running")
            return False
        if deps.missing(deps.read_requirements()):
            cls.poll_message_set("Install the Python dependencies first (Likeness panel)")
            return False
        return True


class LIKENESS_OT_cancel(bpy.types.Operator):
    """Stop the running Likeness job"""

    bl_idname = "likeness.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return job_state(context).running

    def execute(self, context):
        job_state(context).cancel_requested = True
        return {"FINISHED"}


CLASSES = (LIKENESS_OT_reconstruct, LIKENESS_OT_cancel)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
