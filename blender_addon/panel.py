"""The Likeness tab of the 3D viewport's sidebar (N panel).

Made for the default sidebar width: labels above fields or short labels beside them, one status
line, the running stage as "Refine 42%". Each block is its own function so that more (e.g. a
list of photos) slots in without touching the others.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from .preferences import draw_job, draw_setup_line


def draw_source(layout, settings) -> None:
    layout.row().prop(settings, "source", expand=True)
    if settings.source == "FILE":
        layout.prop(settings, "filepath", text="")
    else:
        layout.template_ID(settings, "image", open="image.open")


class LIKENESS_UL_photos(bpy.types.UIList):
    """The list of more photos of the same person."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        if item.source == "IMAGE":
            text = item.image.name if item.image else "(choose an image)"
        else:
            text = Path(bpy.path.abspath(item.filepath)).name if item.filepath else "(choose a file)"
        layout.label(text=text, icon="IMAGE_DATA" if item.source == "IMAGE" else "FILE_IMAGE")


def draw_more_photos(layout, settings) -> None:
    """More photos of the same person: a list with add/remove, the selected entry's source below."""
    layout.label(text="More Photos of This Person")
    row = layout.row()
    row.template_list("LIKENESS_UL_photos", "", settings, "more_photos", settings, "more_index", rows=2)
    buttons = row.column(align=True)
    buttons.operator("likeness.photo_add", icon="ADD", text="")
    buttons.operator("likeness.photo_remove", icon="REMOVE", text="")
    if 0 <= settings.more_index < len(settings.more_photos):
        draw_source(layout, settings.more_photos[settings.more_index])


def draw_options(layout, settings) -> None:
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    col.prop(settings, "preset")
    if settings.preset == "quality":
        col.prop(settings, "detail_strength", text="Detail")
        col.prop(settings, "detail_guidance", text="Guidance")
    col.prop(settings, "facial_hair")
    col.prop(settings, "scalp")
    col.prop(settings, "device")
    col.prop(settings, "face_index")
    layout.prop(settings, "add_camera")  # a checkbox with its label beside it, full width


def draw_run(layout, context) -> None:
    if not draw_job(layout, context):
        row = layout.row()
        row.scale_y = 1.5
        row.operator("likeness.reconstruct", text="Reconstruct", icon="USER")
    draw_setup_line(layout, context)


class LIKENESS_PT_main(bpy.types.Panel):
    bl_idname = "LIKENESS_PT_main"
    bl_label = "Likeness"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Likeness"

    def draw(self, context):
        settings = context.scene.likeness
        draw_source(self.layout, settings)
        draw_more_photos(self.layout, settings)
        draw_options(self.layout, settings)
        draw_run(self.layout, context)


CLASSES = (LIKENESS_UL_photos, LIKENESS_PT_main)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
