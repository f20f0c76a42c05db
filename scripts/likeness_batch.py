"""Headless batch: photos -> one .blend (plus the core's OBJ/GLB/PNG files) per photo.

    blender --background --python scripts/likeness_batch.py -- --input PHOTOS... --output DIR
    python scripts/likeness_batch.py --input PHOTOS... --output DIR      (with the bpy module)

``--input`` takes image files and folders (searched recursively): one head per photo.
``--person FOLDER`` (repeatable) makes one head from all photos in the folder, ``--people ROOT``
one head per subfolder of ROOT (one person each); a person is written to ``DIR/<folder name>/``
and photos left out of it (no face, another person) are listed. Each photo is written to
``DIR/<photo name>/``: ``<name>.blend`` with the head built exactly as the add-on's Reconstruct
button builds it (textures packed into the file), and the core files (``rec.save``). A failed
photo is reported and skipped; the exit status is 1 when any failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    parser = argparse.ArgumentParser(prog="likeness_batch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", type=Path, default=[], help="image files or folders")
    parser.add_argument("--person", action="append", type=Path, default=[], metavar="FOLDER",
                        help="a folder of photos of one person: one head from all of them (repeatable)")
    parser.add_argument("--people", type=Path, metavar="ROOT",
                        help="a folder with one subfolder of photos per person: one head per person")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--preset", choices=("fast", "balanced", "quality"), default="fast")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--face-index", type=int, default=None, help="which face (0 = largest)")
    parser.add_argument("--no-camera", action="store_true", help="do not add the photo's camera")
    return parser.parse_args(argv)


def script_argv(argv: list[str]) -> list[str]:
    """Blender passes the script's own arguments after ``--``; plain Python passes them directly."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def save_blend(path: Path) -> None:
    """Save the current file as ``path`` atomically: a temporary copy, then a rename."""
    import bpy

    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.blend")
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(temp), copy=True, compress=True)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


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
        error_message,
        make_pipeline,
        run_reconstruction,
        stage_printer,
    )
    from likeness.core.errors import LikenessError
    from likeness.core.image_io import list_images, person_folders
    from likeness.core.progress import Progress

    try:
        folders = args.person + (person_folders(args.people) if args.people else [])
    except LikenessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # (label, output name, what to reconstruct): a photo path, or a person's list of photo paths
    jobs = [(photo.name, photo.stem, str(photo)) for photo in list_images(args.input)]
    jobs += [(folder.name, folder.name, [str(p) for p in list_images(folder)]) for folder in folders]
    if not jobs:
        print("error: no image files found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    options = ReconstructOptions(preset=args.preset, device=args.device, face_index=args.face_index)
    try:
        pipeline = make_pipeline(options)  # the model and detector load once for all photos
    except (LikenessError, ImportError) as exc:
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED
    failures: list[tuple[str, str]] = []
    used: set[str] = set()
    start = time.perf_counter()
    for i, (item_name, stem, item) in enumerate(jobs, 1):
        label = f"[{i}/{len(jobs)}] {item_name}"
        name = _unique_name(stem, used)
        try:
            rec = run_reconstruction(item, options, Progress(callback=stage_printer(label)), pipeline)
            if isinstance(item, list):
                rec.person = name
            folder = args.output / name
            rec.save(folder)
            build_scene(rec, name, not args.no_camera)
            save_blend(folder / f"{name}.blend")
            extra = f" from {len(rec.photos)} photo(s)" if isinstance(item, list) else ""
            print(f"{label}: ok{extra} in {rec.timings.get('total', 0.0):.1f} s -> {folder}", flush=True)
            for warning in rec.warnings:
                print(f"    warning: {warning}")
        except Exception as exc:  # one bad photo must not stop the batch
            print(f"{label}: FAILED: {error_message(exc)}", flush=True)
            failures.append((item_name, error_message(exc)))
    unit = "head(s)" if folders else "photo(s)"
    print(f"\n{len(jobs) - len(failures)} of {len(jobs)} {unit} done in "
          f"{time.perf_counter() - start:.1f} s, {len(failures)} failed; results in {args.output}")
    for name, reason in failures:
        print(f"  {name}: {reason}")
    return EXIT_FAILED if failures else EXIT_OK


def _unique_name(stem: str, used: set[str]) -> str:
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def main(argv: list[str]) -> int:
    try:
        args = parse_args(script_argv(argv))
    except SystemExit as exc:  # argparse exits on --help or bad arguments
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    return run(args)


if __name__ == "__main__":
    # ``sys.exit`` also ends ``blender --background --python`` with this status.
    sys.exit(main(sys.argv))
