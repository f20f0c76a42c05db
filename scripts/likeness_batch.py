"""Headless batch: photos -> one .blend (plus the core's OBJ/GLB/PNG files) per photo.

    blender --background --python scripts/likeness_batch.py -- --input PHOTOS... --output DIR
    python scripts/likeness_batch.py --input PHOTOS... --output DIR      (with the bpy module)

``--input`` takes image files and folders (searched recursively): one head per photo.
``--person FOLDER`` (repeatable) makes one head from all photos in the folder, ``--people ROOT``
one head per subfolder of ROOT (one person each); a person is written to ``DIR/<folder name>/``
and photos left out of it (no face, another person) are listed. Each photo is written to
``DIR/<photo name>/``: ``<name>.blend`` with the head built exactly as the add-on's Reconstruct
button builds it (textures packed into the file), and the core files (``rec.save``), replaced
together as one folder. Photos are isolated as in the CLI (core/batch.py): a failed photo is
reported and skipped; the exit status is 1 when any failed, 2 for bad arguments, 130 when stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_USAGE = 2


def load_extension():
    """The repository root (the extension folder) as the package ``likeness``: its subpackages
    import ``core`` relatively, exactly as inside an installed extension."""
    if "likeness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("likeness", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["likeness"] = module
        spec.loader.exec_module(module)
    return sys.modules["likeness"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    load_extension()
    from likeness.core.cli import face_index

    parser = argparse.ArgumentParser(prog="likeness_batch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", type=Path, default=[], help="image files or folders")
    parser.add_argument("--person", action="append", type=Path, default=[], metavar="FOLDER",
                        help="a folder of photos of one person: one head from all of them (repeatable)")
    parser.add_argument("--people", type=Path, metavar="ROOT",
                        help="a folder with one subfolder of photos per person: one head per person")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--preset", choices=("fast", "balanced", "quality"), default="fast")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--face-index", type=face_index, default=None,
                        help="which face (0 = largest; default: the subject)")
    parser.add_argument("--facial-hair", choices=("hair", "skin"), default="hair",
                        help="beard, moustache and stubble: as the photo shows them, or skin")
    parser.add_argument("--scalp", choices=("skin", "hair"), default="skin",
                        help="the scalp: skin tone, or a cap in the photo's hair colour down to its hairline")
    parser.add_argument("--no-camera", action="store_true", help="do not add the photo's camera")
    parser.add_argument("--detail", choices=("auto", "clip", "photometric"), default="auto",
                        help="detail guidance of the quality preset (auto: clip when CLIP weights exist)")
    return parser.parse_args(argv)


def script_argv(argv: list[str]) -> list[str]:
    """Blender passes the script's own arguments after ``--``; plain Python passes them directly."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def blend_writer(rec, name: str, add_camera: bool):
    """The extra writer for ``rec.save``: the head in a fresh .blend inside the result's staging
    folder, so that the .blend and the core files are replaced together or not at all."""
    import bpy
    from likeness.core.errors import LikenessError

    def write(folder: Path) -> dict[str, str]:
        build_scene(rec, name, add_camera)
        file_name = f"{name}.blend"
        path = folder / file_name
        bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, compress=True)
        if not path.is_file():  # Blender reports some failures (e.g. a path over its limit) only in its log
            raise LikenessError(f"Blender could not save {path}: use a shorter output path.")
        return {"blend": file_name}

    return write


def build_scene(rec, name: str, add_camera: bool) -> None:
    """A fresh empty file (the user's preferences stay) with the head, framed for rendering."""
    import bpy
    from likeness.blender_addon.build import build_reconstruction, use_photo_camera

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    head = build_reconstruction(rec, scene.collection, name=name, camera=add_camera)
    head["likeness_source"] = rec.source or name
    if add_camera:
        use_photo_camera(scene, head, rec)


def run(args: argparse.Namespace) -> int:
    load_extension()
    from likeness.blender_addon.jobs import (
        ReconstructOptions,
        make_pipeline,
        reconstruction_settings,
        run_reconstruction,
        stage_printer,
    )
    from likeness.core.batch import PhotoDone, run_batch
    from likeness.core.errors import LikenessError
    from likeness.core.image_io import person_folders, scan_images
    from likeness.core.progress import Progress

    try:
        folders = args.person + (person_folders(args.people) if args.people else [])
    except LikenessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    scans = [scan_images(args.input, exclude=args.output)]
    scans += [scan_images(folder, exclude=args.output) for folder in folders]
    for path, reason in (skip for scan in scans for skip in scan.skipped):
        print(f"skipped {path}: {reason}", file=sys.stderr)
    # (name, what to reconstruct): a photo path, or a person's list of photo paths
    jobs: list[tuple[str, object]] = [(photo.name, str(photo)) for photo in scans[0].files]
    jobs += [(folder.name, [str(p) for p in scan.files]) for folder, scan in zip(folders, scans[1:])]
    if not jobs:
        print("error: no image files found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    options = ReconstructOptions(preset=args.preset, device=args.device, face_index=args.face_index,
                                 detail_guidance=args.detail, facial_hair=args.facial_hair, scalp=args.scalp)

    def setup():
        pipeline = make_pipeline(options)  # the model, detector and weights load once for all photos
        pipeline.prepare(reconstruction_settings(options))

        def work(name: str, item, folder: Path, label: str) -> PhotoDone:
            rec = run_reconstruction(item, options, Progress(callback=stage_printer(label)), pipeline)
            if isinstance(item, list):
                rec.person = folder.name
            written = rec.save(folder, extra=blend_writer(rec, folder.name, not args.no_camera))
            note = f" from {len(rec.photos)} photo(s)" if isinstance(item, list) else ""
            return PhotoDone(written[0].parent, rec.timings.get("total", 0.0), rec.warnings, note)

        return work

    return run_batch(jobs, args.output, setup, "head(s)" if folders else "photo(s)")


def main(argv: list[str]) -> int:
    try:
        args = parse_args(script_argv(argv))
    except SystemExit as exc:  # argparse exits on --help or bad arguments
        return 0 if exc.code == 0 else EXIT_USAGE
    return run(args)


if __name__ == "__main__":
    # ``sys.exit`` also ends ``blender --background --python`` with this status.
    sys.exit(main(sys.argv))
