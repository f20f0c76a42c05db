"""Does refinement improve the geometry? Held-out photometric error and landmark NME.

For photos of ../shared/faces (and AFLW2000-3D images with ground truth), run the refinement
twice from the same landmark regression: once fitting only light and albedo on the regressed
geometry (the baseline), once also refining pose, identity and expression. Both leave the same
checkerboard of skin pixels out of the loss; the photometric error on those held-out pixels
says which geometry explains the photo better.

    python benchmarks/refinement_ablation.py [--limit N] [--preset balanced]
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
from core.pipeline import Pipeline, preset_settings  # noqa: E402


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    pipeline = Pipeline()
    settings = preset_settings(args.preset)
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


if __name__ == "__main__":
    main()
