"""Scene settings of the Likeness panel and the runtime state of the running job."""

from __future__ import annotations

import bpy

PRESETS = [
    ("fast", "Fast", "Landmark fit and a short photometric refinement (seconds)"),
    ("balanced", "Balanced", "Longer refinement at a higher resolution"),
    ("quality", "Quality", "Balanced plus mid-frequency skin detail (displacement and normal maps)"),
]
DETAIL_GUIDANCE = [
    ("auto", "Auto", "CLIP-guided when CLIP weights are available, else photometric (said once)"),
    ("clip", "CLIP", "CLIP feature consistency + photometric + frequency (needs CLIP weights)"),
    ("photometric", "Photometric", "Shading and frequency terms only: works offline, no CLIP weights"),
]
FACIAL_HAIR = [
    ("hair", "Keep", "Beard, moustache and stubble as the photo shows them"),
    ("skin", "Skin", "Skin where the photo shows facial hair (a clean-shaven head)"),
]
SCALP = [
    ("skin", "Skin", "The skin tone on the scalp (a bald head to groom hair on)"),
    ("hair", "Hair Cap", "A cap in the photo's hair colour, down to the hairline the photo shows"),
]
DEVICES = [
    ("auto", "Auto", "CUDA when available, else CPU"),
    ("cpu", "CPU", "Always the CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU (fails when none is usable)"),
]


SOURCES = [("FILE", "File", "A photo on disk"), ("IMAGE", "Image", "An image already in this file")]


class LikenessPhoto(bpy.types.PropertyGroup):
    """One more photo of the same person, from the panel's list: all photos make one head."""

    source: bpy.props.EnumProperty(name="Source", items=SOURCES, default="FILE")
    filepath: bpy.props.StringProperty(name="Photo", subtype="FILE_PATH",
                                       description="Another photo of the same person")
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image,
                                     description="An image datablock with another photo of the same person")


class LikenessSettings(bpy.types.PropertyGroup):
    source: bpy.props.EnumProperty(name="Source", items=SOURCES, default="FILE")
    filepath: bpy.props.StringProperty(name="Photo", subtype="FILE_PATH",
                                       description="The face photo (JPEG, PNG, ...)")
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image,
                                     description="An image datablock holding the face photo")
    preset: bpy.props.EnumProperty(name="Preset", items=PRESETS, default="balanced")
    device: bpy.props.EnumProperty(name="Device", items=DEVICES, default="auto")
    face_index: bpy.props.IntProperty(
        name="Face", min=0, default=0,
        description="Which face to use when the photo shows several: 0 picks the subject (upright, "
                    "confident, large, inside the photo), 1 is the largest face, 2 the next")
    detail_strength: bpy.props.FloatProperty(
        name="Detail Strength", min=0.0, soft_max=2.0, default=1.0,
        description="Scale of the reconstructed skin detail (Quality preset)")
    more_photos: bpy.props.CollectionProperty(
        type=LikenessPhoto, name="More Photos",
        description="More photos of the same person (other angles): one head from all of them")
    more_index: bpy.props.IntProperty(name="Selected Photo", default=0)
    detail_guidance: bpy.props.EnumProperty(
        name="Detail Guidance", items=DETAIL_GUIDANCE, default="auto",
        description="What guides the skin detail (Quality preset)")
    facial_hair: bpy.props.EnumProperty(
        name="Facial Hair", items=FACIAL_HAIR, default="hair",
        description="What the texture shows where the photo shows a beard, moustache or stubble")
    scalp: bpy.props.EnumProperty(
        name="Scalp", items=SCALP, default="skin",
        description="What the texture shows on the scalp: skin, or the photo's hair colour as a cap")
    add_camera: bpy.props.BoolProperty(
        name="Camera from Photo", default=True,
        description="Also add a camera per photo that sees the head as that photo does, with the photo "
                    "as its background (sets the render size to the first photo's)")


class LikenessJobState(bpy.types.PropertyGroup):
    """Runtime only: window-manager properties are not saved in .blend files."""

    running: bpy.props.BoolProperty()
    cancel_requested: bpy.props.BoolProperty()
    label: bpy.props.StringProperty()
    text: bpy.props.StringProperty()  # "Refine 42%": the current stage and how far it is
    fraction: bpy.props.FloatProperty(default=-1.0)  # -1: no measurable progress in this stage


CLASSES = (LikenessPhoto, LikenessSettings, LikenessJobState)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.likeness = bpy.props.PointerProperty(type=LikenessSettings)
    bpy.types.WindowManager.likeness_job = bpy.props.PointerProperty(type=LikenessJobState)


def unregister() -> None:
    del bpy.types.WindowManager.likeness_job
    del bpy.types.Scene.likeness
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
