"""Add and remove entries of the panel's list of more photos of the same person."""

from __future__ import annotations

import bpy


class LIKENESS_OT_photo_add(bpy.types.Operator):
    """Add another photo of the same person (choose its file or image below the list)"""

    bl_idname = "likeness.photo_add"
    bl_label = "Add Photo"
    bl_options = {"UNDO"}

    def execute(self, context):
        settings = context.scene.likeness
        settings.more_photos.add()
        settings.more_index = len(settings.more_photos) - 1
        return {"FINISHED"}


class LIKENESS_OT_photo_remove(bpy.types.Operator):
    """Remove the selected photo from the list"""

    bl_idname = "likeness.photo_remove"
    bl_label = "Remove Photo"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        settings = context.scene.likeness
        return 0 <= settings.more_index < len(settings.more_photos)

    def execute(self, context):
        settings = context.scene.likeness
        settings.more_photos.remove(settings.more_index)
        settings.more_index = min(settings.more_index, len(settings.more_photos) - 1)
        return {"FINISHED"}


CLASSES = (LIKENESS_OT_photo_add, LIKENESS_OT_photo_remove)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
