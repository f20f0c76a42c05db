"""Before/after overlays of large-pose AFLW2000-3D fits (core.fitting.profile.fit_turned).

Per image: ground-truth 68 landmarks (green), the fit to MediaPipe's dense landmarks (red, before)
and the fit as the pipeline makes it now (blue: from SCRFD's keypoints where they put the head
beyond 60 deg); jaw points circled. Needs LIKENESS_INSIGHTFACE_MODEL (an SCRFD model).

    python benchmarks/aflw2000_overlay.py --out docs/aflw2000_large_pose.jpg image00088.jpg ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aflw2000 import nme  # noqa: E402

from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

GREEN, RED, BLUE = (0, 255, 0), (255, 40, 40), (40, 140, 255)
TILE = 300


def _draw(rgb: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], scale: float) -> None:
    for k, (x, y) in enumerate(points * scale):
        cv2.circle(rgb, (int(x), int(y)), 2, colour, -1)
        if k < 17:
            cv2.circle(rgb, (int(x), int(y)), 5, colour, 1)


def tile(pipeline: Pipeline, image: Path, gt: np.ndarray, yaw: float) -> np.ndarray:
    rgb = load_image(image).rgb
    face = pipeline.detect(rgb)
    settings = preset_settings("fast").regression
    out = cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_AREA)
    scale = TILE / rgb.shape[1]
    _draw(out, gt, GREEN, scale)
    text = [f"{image.name} yaw {yaw:.0f}"]
    for det, colour, label in ((replace(face, keypoints=None), RED, "before"), (face, BLUE, "after")):
        fit, _ = pipeline.fit_landmarks(det, rgb.shape[1], rgb.shape[0], settings)
        lm = fit.project(pipeline.model.vertices(fit.identity, fit.expression)[pipeline.landmarks68])
        _draw(out, lm, colour, scale)
        text.append(f"{label} {fit.euler_degrees()[0]:.0f} deg NME {nme(lm, gt):.1f}")
    for row, line in enumerate(text):
        cv2.putText(out, line, (4, 16 + 16 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1,
                    cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("images", nargs="+")
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "aflw2000-3d-dev")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--columns", type=int, default=3)
    args = parser.parse_args()
    gt = np.load(args.data / "ground_truth.npz")
    names = list(gt["names"])
    pipeline = Pipeline()
    tiles = [tile(pipeline, args.data / "images" / name, gt["pts68"][names.index(name), :2].T,
                  float(gt["yaw_deg"][names.index(name)])) for name in args.images]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % args.columns)
    rows = [np.hstack(tiles[i:i + args.columns]) for i in range(0, len(tiles), args.columns)]
    grid = cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(args.out), grid, [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main()
