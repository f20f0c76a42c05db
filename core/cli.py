"""Command line: ``python -m core reconstruct <files or folders> -o <dir>`` and ``python -m core demo``.

Each photo is written to ``<out>/<photo name>/``. ``--person FOLDER`` makes one head from all
photos in the folder (``<out>/<folder name>/``), ``--people ROOT`` one head per subfolder of ROOT.
A failed photo or person is reported and skipped, the others are still done (core/batch.py), and
the exit status is 1 when any failed, 2 for bad arguments, 130 when stopped by Ctrl-C or SIGTERM.
Photos left out of a person are listed as warnings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import LikenessError
from .progress import Progress

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        p.add_argument("--preset", choices=("fast", "balanced", "quality"), default="balanced")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument("--face-index", type=face_index, default=None,
                       help="which face when there are several (0 = largest); default: the subject "
                            "(upright, confident, large, inside the photo)")
        p.add_argument("--detector", choices=("mediapipe", "insightface"), default="mediapipe")
        p.add_argument("--no-glb", action="store_true", help="write OBJ only")
        p.add_argument("--scalp", choices=("skin", "hair"), default="skin",
                       help="scalp: the skin tone (default), or a cap in the photo's hair colour down to the "
                            "hairline the photo shows")
        p.add_argument("--facial-hair", choices=("hair", "skin"), default="hair",
                       help="beard, moustache and stubble: kept as the photo shows them (default) or "
                            "replaced by skin (a clean-shaven head)")
        p.add_argument("--white-balance", choices=("auto", "off"), default="auto",
                       help="auto: divide the photo's light colour out of the albedo (default); "
                            "off: keep the photo's white balance")
        p.add_argument("--detail", choices=("auto", "clip", "photometric"), default="auto",
                       help="detail guidance of the quality preset: clip (CLIP + photometric + frequency), "
                            "photometric (offline); auto: clip when CLIP weights exist, else photometric")

    rec = sub.add_parser("reconstruct", help="reconstruct heads from photos")
    rec.add_argument("inputs", nargs="*", type=Path, help="image files or folders of images: one head each")
    rec.add_argument("--person", action="append", type=Path, default=[], metavar="FOLDER",
                     help="a folder of photos of one person: one head from all of them (repeatable)")
    rec.add_argument("--people", type=Path, metavar="ROOT",
                     help="a folder with one subfolder of photos per person: one head per person")
    common(rec)
    demo = sub.add_parser("demo", help="reconstruct the built-in example photo (scikit-image's astronaut)")
    common(demo)
    return parser


def example_photo() -> np.ndarray:
    """The built-in example: scikit-image's public-domain ``astronaut`` (Eileen Collins), offline."""
    from skimage import data

    return data.astronaut()


class _Bar:
    """tqdm bar per stage of the current photo, on stderr."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self._tqdm, self.label, self.bar, self.stage = tqdm, label, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = self._tqdm(total=total or None, desc=f"{self.label}: {stage}", leave=False,
                                  unit="it", file=sys.stderr, disable=None)  # bars on terminals only
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(inputs: list, names: list[str], args: argparse.Namespace, people: int = 0) -> int:
    """Reconstruct each input (a photo, or a list of one person's photos) into ``<out>/<name>/``;
    the last ``people`` inputs are people, named after their folder."""
    from .batch import PhotoDone, run_batch

    formats = ("obj",) if args.no_glb else ("obj", "glb")

    def setup():
        from .appearance.texture import TextureSettings
        from .pipeline import Pipeline, preset_settings

        texture = TextureSettings(scalp=args.scalp, white_balance=args.white_balance,
                                  facial_hair=args.facial_hair)
        settings = preset_settings(args.preset, device=args.device, face_index=args.face_index,
                                   detector=args.detector, texture=texture,
                                   detail_guidance=args.detail)
        pipeline = Pipeline(detector_backend=args.detector)
        pipeline.prepare(settings)

        def work(name: str, item, folder: Path, label: str) -> PhotoDone:
            bar = _Bar(label)
            try:
                progress = Progress(callback=bar)
                rec = pipeline.run(item, settings, progress)
                rec.source = rec.source or name  # arrays (the demo photo) are named by the caller
                if isinstance(item, list):
                    rec.person = name
                written = rec.save(folder, formats=formats, progress=progress)
            finally:
                bar.close()
            note = f" from {len(rec.photos)} photo(s)" if isinstance(item, list) else ""
            return PhotoDone(written[0].parent, rec.timings.get("total", 0.0), rec.warnings, note)

        return work

    unit = "head(s)" if people else "photo(s)"
    return run_batch(list(zip(names, inputs, strict=True)), args.output, setup, unit)


def face_index(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a face index: use 0 (the first face) or more")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run([example_photo()], ["astronaut"], args)
        from .image_io import person_folders, scan_images

        scan = scan_images(args.inputs, exclude=args.output)
        folders = args.person + (person_folders(args.people) if args.people else [])
    except LikenessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    people = [scan_images(folder, exclude=args.output) for folder in folders]
    for skipped in [scan.skipped] + [person.skipped for person in people]:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
    if not scan.files and not folders:
        print("error: no image files found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    inputs = scan.files + [person.files for person in people]
    return run(inputs, [f.name for f in scan.files] + [f.name for f in folders], args, len(folders))
