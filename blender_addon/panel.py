"""The Likeness tab of the 3D viewport's sidebar (N panel).

Made for the default sidebar width: labels above fields or short labels beside them, one status
line, the running stage as "Refine 42%". Each block is its own function so that more (e.g. a
list of photos) slots in without touching the others.
"""

from __future__ import annotations

import bpy

from .preferences import draw_job, draw_setup_line


def draw_source(layout, settings) -> None:
    layout.row().prop(settings, "source", expand=True)
    if settings.source == "FILE":
        layout.prop(settings, "filepath", text="")
    else:
        layout.template_ID(settings, "image", open="image.open")


def draw_options(layout, settings) -> None:
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    col.prop(settings, "preset")
    if settings.preset == "quality":
        col.prop(settings, "detail_strength", text="Detail")
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
        draw_options(self.layout, settings)
        draw_run(self.layout, context)


CLASSES = (LIKENESS_PT_main,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
