"""Texture gallery: what the photo may colour, the albedo atlas, and the textured head turned around.

One row per photo: the photo around the face | the same with the estimated light colour divided
out (core.appearance.white_balance: the albedo's white balance) | the trusted skin pixels (the rest
darkened) | the
albedo atlas (face tile | back-of-head tile) | the unlit textured head from the photo's camera |
the same head frontal, at +-60 degrees yaw and from behind, lit by a head light (eyeballs with
the person's balanced iris colour, teeth and mouth socket in plain colours, as the outputs show
them). Prints the
texture stage's time per photo and a few numbers about the albedo (share of the atlas the photo
coloured, distance of the completed scalp to the skin tone).

    python benchmarks/texture_gallery.py [--preset fast] [--white-balance off] [--facial-hair skin]
        [--out docs/texture_gallery.jpg] [photos...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.appearance.texture import TextureSettings, scalp_weight  # noqa: E402
from core.appearance.white_balance import Illuminant, remove_illuminant  # noqa: E402
from core.geometry.face_model import SKIN_POLYGONS, triangulate  # noqa: E402
from core.geometry.params import Camera, FaceParams  # noqa: E402
from core.geometry.parts import (  # noqa: E402
    PLAIN_COLOURS,
    eyeball_vertex_colours,
    linear_to_srgb8,
    polygon_kinds,
    shown_polygons,
)
from core.geometry.rendering import render  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402
from core.reconstruction import Reconstruction  # noqa: E402

DEFAULT_PHOTOS = ("astronaut", "3ddfa_v3/examples/1.jpg", "deep3d/datasets/examples/vd026.png",
                  "deepface/img16.jpg", "deep3d/datasets/examples/000037.jpg",
                  "deep3d/datasets/examples/015384.jpg", "hrn/assets/examples/single_view_image/00034.png",
                  "synergynet/img/sample_2.jpg")
VIEW_YAWS = (None, 0.0, 60.0, -60.0, 180.0)  # None: the photo's own camera


def load(name: str, faces: Path):
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    return faces / name


def _inner_parts(rec: Reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """Triangles and sRGB vertex colours of what shows through the skin's openings: eyeballs
    (sclera, iris in the person's balanced colour, pupil; core.geometry.parts), teeth, gums and the
    mouth socket."""
    model = rec.model
    kinds = polygon_kinds(model)
    shown = shown_polygons(model) & (np.arange(len(model.polygons)) >= SKIN_POLYGONS)
    shown &= (kinds == "eye") | (kinds == "teeth") | (kinds == "gums") | (kinds == "skin")
    colours = np.zeros((model.num_vertices, 3))
    colours[:] = linear_to_srgb8(np.array([0.04, 0.02, 0.02])) / 255  # sockets: dark
    for kind in ("teeth", "gums"):
        used = np.unique(model.polygons[kinds == kind])
        colours[used[used >= 0]] = linear_to_srgb8(np.array(PLAIN_COLOURS[kind][0])) / 255
    # in the rest pose: the colours turn with the eyeball
    for region, linear in eyeball_vertex_colours(model, rec.iris_colour, rec.identity_vertices).items():
        colours[slice(*model.regions[region])] = linear_to_srgb8(linear) / 255
    return triangulate(model.polygons[shown]), colours


def head_render(rec: Reconstruction, cell: int, yaw: float | None) -> np.ndarray:
    """(cell, cell, 3) uint8: the textured skin with eyes and teeth, unlit from the photo camera
    (``yaw`` None) or lit by a head light from a canonical camera at ``yaw`` degrees."""
    faces, uv_faces = rec.model.triangles(SKIN_POLYGONS)
    texture = torch.from_numpy(rec.albedo.astype(np.float32) / 255)
    uv_corners = torch.from_numpy(rec.model.atlas_uvs[uv_faces])
    if yaw is None:
        x0, y0, x1, y1 = rec.face_box
        side = 2 * max(x1 - x0, y1 - y0)
        s = cell / side
        cam = rec.params.camera
        params = rec.params.copy()
        params.camera = Camera(cam.focal * s, (cam.cx - (x0 + x1 - side) / 2) * s,
                               (cam.cy - (y0 + y1 - side) / 2) * s, cell, cell)
        verts = rec.vertices
    else:
        verts = rec.vertices - rec.vertices[:11248].mean(0)
        params = FaceParams(rec.params.identity, rec.params.expression, np.radians([0.0, yaw, 0.0]),
                            np.array([0.0, 0.0, 0.85]), Camera(cell * 2.4, cell / 2, cell / 2, cell, cell))
    verts_cam = torch.from_numpy(params.to_camera(verts).astype(np.float32))
    inner_faces, inner_colours = _inner_parts(rec)
    with torch.no_grad():
        skin = render(verts_cam, torch.from_numpy(faces.astype(np.int64)), params.camera,
                      uv_corners=uv_corners, texture=texture, cull_backfaces=True)
        inner = render(verts_cam, torch.from_numpy(inner_faces.astype(np.int64)), params.camera,
                       vertex_colors=torch.from_numpy(inner_colours.astype(np.float32)), cull_backfaces=True)
    skin_depth = torch.where(skin.mask, skin.fragments.depth, torch.tensor(np.inf))
    use_inner = inner.mask & (inner.fragments.depth < skin_depth)
    colour = torch.where(use_inner[..., None], inner.albedo, skin.albedo)
    normals = torch.where(use_inner[..., None], inner.normals, skin.normals)
    if yaw is not None:
        colour = colour * (0.35 + 0.65 * (-normals[..., 2:]).clamp(0, 1))
    img = torch.where((skin.mask | inner.mask)[..., None], colour, torch.tensor([0.55, 0.6, 0.65]))
    return (img.numpy() * 255).clip(0, 255).astype(np.uint8)


def light_of(rec: Reconstruction) -> np.ndarray:
    """The light colour divided out of the albedo (ones when white balance was off)."""
    return np.array([rec.metrics.get(f"illuminant_{c}", 1.0) for c in "rgb"])


def photo_cells(rec: Reconstruction, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo around the face, the same white-balanced, and with untrusted pixels darkened and
    tinted."""
    x0, y0, x1, y1 = rec.face_box
    side = 2 * max(x1 - x0, y1 - y0)
    box = ((x0 + x1 - side) / 2, (y0 + y1 - side) / 2, (x0 + x1 + side) / 2, (y0 + y1 + side) / 2)
    photo = Image.fromarray(rec.image).crop(tuple(map(round, box))).resize((cell, cell))
    trust = rec.skin_trust if rec.skin_trust is not None else np.ones(rec.image.shape[:2], np.float32)
    mask = Image.fromarray((trust * 255).astype(np.uint8)).crop(tuple(map(round, box))).resize((cell, cell))
    t = np.asarray(mask, np.float32)[..., None] / 255
    shown = np.asarray(photo, np.float32) * (0.2 + 0.8 * t) + (1 - t) * np.array([60.0, 0, 60.0])
    balanced = remove_illuminant(np.asarray(photo, np.float32) / 255, Illuminant(light_of(rec), 1.0))
    return np.asarray(photo), (balanced * 255 + 0.5).astype(np.uint8), shown.clip(0, 255).astype(np.uint8)


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", default=list(DEFAULT_PHOTOS),
                        help="'astronaut' or paths relative to --faces")
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--scalp", choices=("skin", "hair"), default="skin")
    parser.add_argument("--white-balance", choices=("auto", "off"), default="auto")
    parser.add_argument("--facial-hair", choices=("hair", "skin"), default="hair")
    parser.add_argument("--cell", type=int, default=150)
    parser.add_argument("--out", type=Path, default=repo / "docs" / "texture_gallery.jpg")
    args = parser.parse_args()

    pipeline = Pipeline()
    settings = preset_settings(args.preset, texture=TextureSettings(
        scalp=args.scalp, white_balance=args.white_balance, facial_hair=args.facial_hair))
    rows = []
    for name in args.photos:
        start = time.perf_counter()
        rec = pipeline.run(load(name, args.faces), settings)
        total = time.perf_counter() - start
        photo, balanced, trusted = photo_cells(rec, args.cell)
        atlas = np.asarray(Image.fromarray(rec.albedo).resize((2 * args.cell, args.cell), Image.LANCZOS))
        views = [head_render(rec, args.cell, yaw) for yaw in VIEW_YAWS]
        rows.append(np.concatenate([photo, balanced, trusted, atlas, *views], axis=1))
        scalp = scalp_weight(rec.model, pipeline.uv_surface(settings.texture_size)) > 0.9
        seen = rec.albedo_trust > 0.5
        tone = np.median(rec.albedo[seen], 0)
        scalp_dist = np.abs(np.median(rec.albedo[scalp], 0) - tone).max()
        print(f"{Path(name).name}: total {total:.1f} s, texture {rec.timings['texture']:.2f} s, "
              f"trusted texels {seen.mean():.1%}, skin tone {tone.tolist()}, "
              f"light {light_of(rec).round(3).tolist()} "
              f"(confidence {rec.metrics.get('illuminant_confidence', 0):.2f}), "
              f"scalp median - tone (max channel) {scalp_dist:.0f}/255")
    grid = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out, quality=85)
    print(f"gallery: {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
