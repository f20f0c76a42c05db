"""Showcase renders of one reconstruction (for the docs), with Cycles on the CPU.

    python scripts/render_showcase.py --input PHOTO --output DIR [--preset quality] [--size 640]
    blender --background --python scripts/render_showcase.py -- --input PHOTO --output DIR

Writes ``<name>_textured.png`` (three-quarter view with the reconstructed albedo),
``<name>_shaded.png`` (same view, clay material, with the detail displacement when the preset
makes one) and ``<name>_overlay.png`` (the photo beside the head rendered through the fitted
camera over the photo).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from likeness_batch import load_extension, script_argv  # noqa: E402 - this folder, just added

CLAY = (0.55, 0.52, 0.5)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="render_showcase.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="a face photo")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--preset", choices=("fast", "balanced", "quality"), default="quality")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=640, help="height of the three-quarter views, pixels")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--clip-pretrained", default="openai",
                        help="CLIP weights for detail: a tag, a checkpoint path, or 'none' (random)")
    parser.add_argument("--angle", type=float, default=30.0, help="three-quarter view angle, degrees")
    return parser.parse_args(argv)


def setup_scene(scene, samples: int) -> None:
    import bpy

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.world = bpy.data.worlds.new("showcase")
    background = next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.35, 0.35, 0.37, 1.0)
    for name, energy, rotation in (("key", 3.0, (50, 0, -40)), ("fill", 1.0, (70, 0, 50)),
                                   ("rim", 2.0, (110, 0, 170))):
        light = bpy.data.lights.new(name, "SUN")
        light.energy = energy
        light.angle = math.radians(10)
        obj = bpy.data.objects.new(name, light)
        obj.rotation_euler = tuple(math.radians(a) for a in rotation)
        scene.collection.objects.link(obj)


def three_quarter_camera(scene, head, angle_deg: float, size: int):
    """A portrait camera turned ``angle_deg`` around the head (z up), framing the head."""
    import bpy
    import numpy as np
    from mathutils import Vector

    corners = np.array([head.matrix_world @ Vector(c) for c in head.bound_box])
    centre = Vector(((corners.min(0) + corners.max(0)) / 2).tolist())
    height = float(np.ptp(corners[:, 2]))
    data = bpy.data.cameras.new("showcase")
    data.lens, data.sensor_width = 85.0, 36.0
    distance = 0.6 * height * data.lens / (0.5 * data.sensor_width)  # 1.2 x the height in view
    angle = math.radians(angle_deg)
    camera = bpy.data.objects.new("showcase", data)
    camera.location = centre + Vector((math.sin(angle), -math.cos(angle), 0.08)) * distance
    camera.rotation_euler = (centre - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100


def clay(head) -> None:
    """Grey instead of the albedo on the skin; displacement and everything else stay."""
    skin = head.data.materials[0]
    bsdf = next(n for n in skin.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    for link in list(bsdf.inputs["Base Color"].links):
        skin.node_tree.links.remove(link)
    bsdf.inputs["Base Color"].default_value = (*CLAY, 1.0)


def render(scene, path: Path) -> None:
    import bpy

    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def overlay(rec, render_path: Path, path: Path) -> None:
    """The photo, and the render through the photo's camera composited over it, side by side."""
    from PIL import Image

    photo = Image.fromarray(rec.image).convert("RGBA")
    head = Image.open(render_path).convert("RGBA").resize(photo.size)
    composite = Image.alpha_composite(photo, head)
    side = Image.new("RGB", (2 * photo.width, photo.height))
    side.paste(photo.convert("RGB"), (0, 0))
    side.paste(composite.convert("RGB"), (photo.width, 0))
    side.save(path)


def main(argv: list[str]) -> int:
    args = parse_args(script_argv(argv))
    load_extension()
    import bpy
    from likeness.blender_addon.build import build_reconstruction, use_photo_camera
    from likeness.blender_addon.jobs import ReconstructOptions, run_reconstruction, stage_printer
    from likeness.core.progress import Progress

    clip = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    options = ReconstructOptions(preset=args.preset, device=args.device, clip_pretrained=clip)
    rec = run_reconstruction(str(args.input), options, Progress(callback=stage_printer(args.input.name)))
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    setup_scene(scene, args.samples)
    head = build_reconstruction(rec, scene.collection, camera=True)
    args.output.mkdir(parents=True, exist_ok=True)
    name = head.name

    use_photo_camera(scene, head, rec)
    scale = min(1.0, 1024 / max(rec.image.shape[:2]))
    scene.render.resolution_percentage = max(1, int(100 * scale))
    with tempfile.TemporaryDirectory() as folder:
        through_photo = Path(folder) / "photo_view.png"
        render(scene, through_photo)
        overlay(rec, through_photo, args.output / f"{name}_overlay.png")

    three_quarter_camera(scene, head, args.angle, args.size)
    render(scene, args.output / f"{name}_textured.png")
    clay(head)
    render(scene, args.output / f"{name}_shaded.png")
    print(f"wrote {name}_overlay.png, {name}_textured.png, {name}_shaded.png to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
