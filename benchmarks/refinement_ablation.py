"""Does refinement improve the geometry? Held-out photometric error and landmark NME.

For photos of ../shared/faces (and AFLW2000-3D images with ground truth), run the refinement
twice from the same landmark regression: once fitting only light and albedo on the regressed
geometry (the baseline), once also refining pose, identity and expression. Both leave the same
checkerboard of skin pixels out of the loss; the photometric error on those held-out pixels
says which geometry explains the photo better.

    python benchmarks/refinement_ablation.py [--limit N] [--preset balanced] [--likeness]

``--likeness``: the whole pipeline instead (texture refinement off, the held-out checkerboard in
both refinements), twice: the likeness pass with and without its identity loss. Does the identity
loss on the textured render cost fit to the photo? (The texture it renders was built from every
skin pixel, held-out ones too, so only the comparison between the two runs is meaningful.)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import LikenessError  # noqa: E402
from core.fitting.detection import detect_face  # noqa: E402
from core.fitting.refinement import refine  # noqa: E402
from core.image_io import list_images, load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings, reconstruct  # noqa: E402


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--likeness", action="store_true", help="held-out error across the likeness pass")
    args = parser.parse_args()

    pipeline = Pipeline()
    settings = preset_settings(args.preset)
    if args.likeness:
        return likeness_pass(pipeline, settings, list_images([args.faces])[: args.limit])
    full = replace(settings.refinement, holdout=True)
    light_only = replace(full, optimise_geometry=False)
    rows = []
    for path in list_images([args.faces])[: args.limit]:
        rgb = load_image(path).rgb
        try:
            det = detect_face(rgb, detector=pipeline.detector)
        except LikenessError as exc:
            print(f"{path.name}: {exc}")
            continue
        coarse, target = pipeline.fit_landmarks(det, rgb.shape[1], rgb.shape[0], settings.regression)
        points = pipeline.surface_points(100)
        base = refine(pipeline.model, rgb, coarse, target, det, points, light_only).metrics
        refined = refine(pipeline.model, rgb, coarse, target, det, points, full).metrics
        rows.append((path.name, base["heldout_photometric_after"], refined["heldout_photometric_after"]))
        print(f"{path.name}: held-out photometric {rows[-1][1]:.4f} (light only) "
              f"-> {rows[-1][2]:.4f} (refined)")
    base, ref = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    print("\n| photos | light+albedo only | full refinement | change | photos improved |")
    print("|---|---|---|---|---|")
    change = 100 * (ref.mean() / base.mean() - 1)
    print(f"| {len(rows)} | {base.mean():.4f} | {ref.mean():.4f} | {change:+.1f}% "
          f"| {(ref < base).sum()} of {len(rows)} |")


def likeness_pass(pipeline: Pipeline, settings, paths: list[Path]) -> None:
    holdout = replace(settings.refinement, holdout=True)
    runs = {name: replace(settings, refinement=replace(holdout, likeness_weight=weight),
                          texture_refinement=replace(settings.texture_refinement, iterations=0))
            for name, weight in (("without", 0.0), ("with", settings.refinement.likeness_weight))}
    rows = []
    for path in paths:
        try:
            metrics = {name: reconstruct(path, settings=run, pipeline=pipeline).metrics
                       for name, run in runs.items()}
        except LikenessError as exc:
            print(f"{path.name}: {exc}")
            continue
        rows.append([metrics[name][f"likeness_{k}"] for name in runs
                     for k in ("heldout_photometric_after", "after")])
        print(f"{path.name}: held-out photometric {rows[-1][0]:.4f} -> {rows[-1][2]:.4f}, "
              f"identity distance {rows[-1][1]:.4f} -> {rows[-1][3]:.4f}")
    a = np.array(rows)
    change = 100 * (a[:, 2].mean() / a[:, 0].mean() - 1)
    print("\n| photos | held-out, pass without identity loss | with it | change | photos worse "
          "| identity distance without -> with |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(a)} | {a[:, 0].mean():.4f} | {a[:, 2].mean():.4f} | {change:+.1f}% "
          f"| {(a[:, 2] > a[:, 0]).sum()} of {len(a)} | {a[:, 1].mean():.4f} -> {a[:, 3].mean():.4f} |")


if __name__ == "__main__":
    main()
