"""The Likeness tab of the 3D viewport's sidebar (N panel)."""

from __future__ import annotations

import bpy

from .preferences import draw_job, draw_status


class LIKENESS_PT_main(bpy.types.Panel):
    bl_idname = "LIKENESS_PT_main"
    bl_label = "Likeness"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Likeness"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.likeness
        layout.use_property_split = True
        layout.use_property_decorate = False

        layout.prop(settings, "source", expand=True)
        if settings.source == "FILE":
            layout.prop(settings, "filepath")
        else:
            layout.template_ID(settings, "image", open="image.open")
        col = layout.column()
        col.prop(settings, "preset")
        if settings.preset == "quality":
            col.prop(settings, "detail_strength")
        col.prop(settings, "device")
        col.prop(settings, "face_index")
        col.prop(settings, "add_camera")

        if not draw_job(layout, context):
            row = layout.row()
            row.scale_y = 1.5
            row.operator("likeness.reconstruct", icon="USER")
        draw_status(layout, context)


CLASSES = (LIKENESS_PT_main,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
