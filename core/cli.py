"""Command line: ``python -m core reconstruct <files or folders> -o <dir>`` and ``python -m core demo``.

Each photo is written to ``<out>/<photo name>/``. ``--person FOLDER`` makes one head from all
photos in the folder (``<out>/<folder name>/``), ``--people ROOT`` one head per subfolder of ROOT.
A failed photo or person is reported and skipped, the others are still done, and the exit status
is 1 when any failed (2 for bad arguments). Photos left out of a person are listed as warnings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import Cancelled, LikenessError
from .progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        p.add_argument("--preset", choices=("fast", "balanced", "quality"), default="balanced")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument("--face-index", type=int, default=None,
                       help="which face when there are several (0 = largest); default the largest")
        p.add_argument("--detector", choices=("mediapipe", "insightface"), default="mediapipe")
        p.add_argument("--no-glb", action="store_true", help="write OBJ only")
        p.add_argument("--scalp", choices=("skin", "hair"), default="skin",
                       help="scalp colour: the skin tone (default) or the photo's hair colour (a cap)")

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


def _unique_dir(out: Path, name: str, used: set[str]) -> Path:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return out / candidate


def run(inputs: list, names: list[str], args: argparse.Namespace, people: int = 0) -> int:
    """Reconstruct each input (a photo, or a list of one person's photos) into ``<out>/<name>/``;
    the last ``people`` inputs are people, named after their folder."""
    from .pipeline import Pipeline, preset_settings
    from .texture import TextureSettings

    settings = preset_settings(args.preset, device=args.device, face_index=args.face_index,
                               detector=args.detector, texture=TextureSettings(scalp=args.scalp))
    formats = ("obj",) if args.no_glb else ("obj", "glb")
    pipeline = Pipeline(detector_backend=args.detector)
    failures: list[tuple[str, str]] = []
    used: set[str] = set()
    start = time.perf_counter()
    for i, (item, name) in enumerate(zip(inputs, names), 1):
        bar = _Bar(f"[{i}/{len(inputs)}] {name}")
        progress = Progress(callback=bar)
        try:
            rec = pipeline.run(item, settings, progress)
            rec.source = rec.source or name  # arrays (the demo photo) are named by the caller
            if i > len(inputs) - people:
                rec.person = name
            folder = _unique_dir(args.output, Path(name).stem, used)
            written = rec.save(folder, formats=formats, progress=progress)
            bar.close()
            seconds = rec.timings.get("total", 0)
            extra = f" from {len(rec.photos)} photo(s)" if isinstance(item, list) else ""
            print(f"[{i}/{len(inputs)}] {name}: ok{extra} in {seconds:.1f} s -> {written[0].parent}")
            for warning in rec.warnings:
                print(f"    warning: {warning}")
        except KeyboardInterrupt:
            bar.close()
            print(f"[{i}/{len(inputs)}] {name}: cancelled; nothing written for it. Stopping.")
            failures.append((name, "cancelled"))
            break
        except (LikenessError, Cancelled) as exc:
            bar.close()
            print(f"[{i}/{len(inputs)}] {name}: FAILED: {exc}")
            failures.append((name, str(exc)))
    ok = len(inputs) - len(failures)
    unit = "head(s)" if people else "photo(s)"
    print(f"\n{ok} of {len(inputs)} {unit} done in {time.perf_counter() - start:.1f} s, "
          f"{len(failures)} failed; results in {args.output}")
    for name, reason in failures:
        print(f"  {name}: {reason}")
    return EXIT_FAILED if failures else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run([example_photo()], ["astronaut"], args)
        from .image_io import list_images, person_folders

        files = list_images(args.inputs)
        folders = args.person + (person_folders(args.people) if args.people else [])
    except LikenessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not files and not folders:
        print("error: no image files found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    people = [list_images(folder) for folder in folders]
    return run(files + people, [f.name for f in files] + [f.name for f in folders], args, len(folders))
