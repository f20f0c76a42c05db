"""Several photos of one person: leave one photo out, fit it with the person frozen.

People with at least three photos: ``../shared/faces/deepface`` (``identities.csv``) and the
three views of ``../shared/faces/hrn/assets/examples/multi_view_images``. For each person and
each of their photos L: reconstruct the person from all the other photos (several-photo
identity and fused albedo), and, as the baseline, from each other photo alone (one-photo
identity and albedo). Then fit L with identity and albedo frozen (only pose, expression, camera
and light move; light on half of the skin) and report on L:

- ``nme``: 68-landmark error of the fitted model against the detected landmarks (MediaPipe's
  iBUG-68 subset), in percent of sqrt(w * h) of the detected landmarks' bounding box (AFLW-style
  normalisation, by the detected landmarks: L has no ground truth);
- ``photo``: photometric error (mean absolute RGB, 0..1) on the held-out checkerboard half of the
  skin, which the light fit never saw;
- ``likeness``: cosine similarity of the faceres descriptors (benchmarks/judge.py: a face-recognition
  network no loss of Likeness uses) of the render (frozen albedo, fitted light, over the photo) and
  of photo L, both cropped alike from L's landmarks.

A person counts as "better with several photos" when the several-photo identity wins on the
mean over their left-out photos against the mean one-photo identity, for each number.

    python benchmarks/multiphoto.py [--preset fast] [--people person01,hrn] [--gallery docs/images]
                                    [--faceres .faceres]
    python benchmarks/multiphoto.py --speed      # balanced, 1, 2, 3 photos of one person: seconds
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from aflw2000 import nme  # benchmarks/, the script's folder
from judge import CROP_SIDE, FACERES, aligned_crop, faceres_embeddings
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.fitting.refinement import View, render_fit  # noqa: E402
from core.geometry.correspondence import MP68  # noqa: E402
from core.output.export import preview_image  # noqa: E402
from core.pipeline import Pipeline, landmark_target, preset_settings  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
HRN = "hrn/assets/examples/multi_view_images"


def people(faces: Path) -> dict[str, list[Path]]:
    by_person: dict[str, list[Path]] = {}
    with open(faces / "deepface" / "identities.csv") as f:
        for row in csv.DictReader(f):
            by_person.setdefault(row["person"], []).append(faces / "deepface" / row["file"])
    by_person["hrn"] = sorted((faces / HRN).glob("*.jpg"))
    return {k: v for k, v in by_person.items() if len(v) >= 3}


@dataclass
class Score:
    nme: float
    photo: float
    likeness: float


@dataclass
class Fit:
    """A left-out photo fitted with a person frozen: its scores but likeness, and the judge's crops
    of the photo and of the render (judged together, one node run per person)."""
    nme: float
    photo: float
    crops: tuple[np.ndarray, np.ndarray]


def evaluate(pipeline: Pipeline, photo: Path, identity: np.ndarray, albedo: np.ndarray, settings) -> Fit:
    """Fit ``photo`` with identity and albedo frozen: landmark and held-out skin scores, the judge's crops."""
    fit = pipeline.fit_photo(photo, settings, identity, albedo)
    # ICT's own 68 (the ones MP68 was matched to), not the read-out in annotated photos' convention
    own = fit.params.project(fit.vertices[pipeline.model.landmarks68])
    landmark_nme = nme(own, fit.detected_landmarks[MP68])
    detection = pipeline.detect(fit.image)
    view = View(fit.image, landmark_target(detection, pipeline.correspondence), detection)
    render, _, crop = render_fit(pipeline.model, view, fit.params, albedo, pipeline.surface_points(100),
                                 CROP_SIDE, settings.device)
    landmarks = crop.points(detection.landmarks)
    crops = aligned_crop(crop.image(fit.image), landmarks), aligned_crop(render, landmarks)
    return Fit(landmark_nme, fit.metrics.get("heldout_photometric_after", np.nan), crops)


def likeness(fits: list[Fit], faceres: Path) -> list[float]:
    """Per fit, the judge's cosine similarity of the render to the photo."""
    with tempfile.TemporaryDirectory() as work:
        emb = faceres_embeddings([c for fit in fits for c in fit.crops], faceres, Path(work))
    return [float(real @ render) for real, render in zip(emb[0::2], emb[1::2])]


def mean(scores: list[Score]) -> Score:
    return Score(*(float(np.mean([getattr(s, k) for s in scores])) for k in ("nme", "photo", "likeness")))


def leave_one_out(pipeline: Pipeline, files: list[Path], settings, name: str, faceres: Path):
    frozen = replace(settings, refinement=replace(settings.refinement, holdout=True))
    singles = {f: pipeline.run(f, settings) for f in files}
    fitted = []
    for left in files:
        others = [f for f in files if f != left]
        start = time.perf_counter()
        several = pipeline.run(others, settings)
        seconds = time.perf_counter() - start
        multi = evaluate(pipeline, left, several.params.identity, several.albedo, frozen)
        ones = [evaluate(pipeline, left, singles[f].params.identity, singles[f].albedo, frozen)
                for f in others]
        fitted.append((left, multi, ones, len(several.photos), seconds))
        print(f"  {name} fitted {left.name} ({len(several.photos)} used, {seconds:.0f} s)", flush=True)
    sims = iter(likeness([fit for _, multi, ones, *_ in fitted for fit in (multi, *ones)], faceres))
    rows = []
    for left, multi, ones, used, seconds in fitted:
        several = Score(multi.nme, multi.photo, next(sims))
        one = mean([Score(fit.nme, fit.photo, next(sims)) for fit in ones])
        rows.append((left.name, several, one, used, seconds))
        print(f"  {name} leave out {left.name}: several nme {several.nme:.2f} photo {several.photo:.4f} "
              f"like {several.likeness:.3f} | one photo nme {one.nme:.2f} photo {one.photo:.4f} "
              f"like {one.likeness:.3f}", flush=True)
    return rows


def save_gallery(pipeline: Pipeline, rec, settings, path: Path, row_height: int = 160) -> None:
    """Per person, one row per photo used: the photo | the mesh overlaid | the shaded head | the
    skin trust (the preview's columns) | the textured head over the photo (fused albedo, light
    refitted to it on that photo); the fused albedo below."""
    preview = preview_image(rec, size=row_height)
    renders = []
    for photo in rec.photos:
        fit = pipeline.fit_photo(photo.image, settings, rec.params.identity, rec.albedo)
        detection = pipeline.detect(photo.image)
        view = View(photo.image, landmark_target(detection, pipeline.correspondence), detection)
        render, _, _ = render_fit(pipeline.model, view, fit.params, rec.albedo,
                                  pipeline.surface_points(100), 2 * row_height)
        small = Image.fromarray(render).resize((row_height, row_height), Image.Resampling.LANCZOS)
        renders.append(np.asarray(small))
    rows = Image.fromarray(np.concatenate([preview, np.concatenate(renders)], axis=1))
    albedo = Image.fromarray(rec.albedo).resize((rows.width, rows.width // 2), Image.Resampling.LANCZOS)
    sheet = Image.new("RGB", (rows.width, rows.height + albedo.height))
    sheet.paste(rows, (0, 0))
    sheet.paste(albedo, (0, rows.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=85)
    print(f"  gallery: {path}")


def speed(pipeline: Pipeline, files: list[Path]) -> None:
    settings = preset_settings("balanced", device="cpu")
    pipeline.run(files[0], preset_settings("fast", device="cpu"))  # warm up: JIT, detector, identity net
    for n in range(1, len(files) + 1):
        start = time.perf_counter()
        rec = pipeline.run(files[:n], settings)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in rec.timings.items() if k != "total")
        print(f"balanced, {n} photo(s): {time.perf_counter() - start:.1f} s ({stages})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--texture-size", type=int, default=256, help="albedo size (renders are 160-224 px)")
    parser.add_argument("--people", default="", help="comma-separated subset, e.g. person01,hrn")
    parser.add_argument("--gallery", type=Path, default=None, help="folder for the per-person gallery JPEGs")
    parser.add_argument("--gallery-only", action="store_true", help="only the galleries, no leave-one-out")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--faceres", type=Path, default=FACERES, help="the judge (benchmarks/judge.py)")
    args = parser.parse_args()
    everyone = people(args.faces)
    pipeline = Pipeline()
    if args.speed:
        speed(pipeline, everyone["hrn"])
        return
    chosen = args.people.split(",") if args.people else sorted(everyone, key=lambda k: len(everyone[k]))
    settings = preset_settings(args.preset, device="cpu", texture_size=args.texture_size)
    better = {"nme": 0, "photo": 0, "likeness": 0}
    print("person | photos | several: nme % / held-out photo / likeness | one photo: same | better")
    for name in chosen:
        if args.gallery is not None:
            gallery = args.gallery / f"multiphoto_{name}.jpg"
            save_gallery(pipeline, pipeline.run(everyone[name], settings), settings, gallery)
        if args.gallery_only:
            continue
        rows = leave_one_out(pipeline, everyone[name], settings, name, args.faceres)
        multi, one = mean([r[1] for r in rows]), mean([r[2] for r in rows])
        wins = {"nme": multi.nme < one.nme, "photo": multi.photo < one.photo,
                "likeness": multi.likeness > one.likeness}
        for key, won in wins.items():
            better[key] += won
        print(f"{name} | {len(rows)} | {multi.nme:.2f} / {multi.photo:.4f} / {multi.likeness:.3f} | "
              f"{one.nme:.2f} / {one.photo:.4f} / {one.likeness:.3f} | "
              f"{', '.join(k for k, v in wins.items() if v) or '-'}", flush=True)
    for key, count in better.items() if not args.gallery_only else ():
        print(f"several-photo identity better on the left-out photo ({key}): {count} of {len(chosen)} people")


if __name__ == "__main__":
    main()
