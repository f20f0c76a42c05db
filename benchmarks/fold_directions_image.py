"""The fold direction field of core.displacement.fold_directions over the ICT face UV tile.

    python benchmarks/fold_directions_image.py [--out docs/fold_directions.png]

Red strokes run along the folds (their length and the blue tint: anisotropy); green dots are the 68
landmarks that place the rules; grey: no preferred direction; white: outside the face island.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.displacement import detail as D  # noqa: E402
from core.displacement.fold_directions import fold_field  # noqa: E402
from core.geometry.face_model import load_face_model  # noqa: E402

SIZE = 512
STEP = 10  # px between strokes


def field_image(size: int = SIZE) -> np.ndarray:
    model = load_face_model()
    landmarks_uv = D.dense_face_mesh(model, 0, 0.04).tile_uvs[model.landmarks68]
    face_id, uv = D.face_tile(model, size)
    field = fold_field(landmarks_uv, uv)
    island = face_id >= 0
    image = np.full((size, size, 3), 255, np.uint8)
    image[island] = 235
    tint = (235 * (1 - 0.6 * field.anisotropy)).astype(np.uint8)
    image[island, 0] = tint[island]
    image[island, 1] = tint[island]
    for row in range(STEP // 2, size, STEP):
        for col in range(STEP // 2, size, STEP):
            a = field.anisotropy[row, col]
            if island[row, col] and a > 0.15:
                half = field.along[row, col] * [1, -1] * 0.5 * STEP * (0.3 + 0.7 * a)
                centre = np.array([col, row], float)
                cv2.line(image, tuple((centre - half).astype(int)), tuple((centre + half).astype(int)),
                         (160, 0, 0), 1, cv2.LINE_AA)
    for u, v in landmarks_uv:
        cv2.circle(image, (int(u * size), int((1 - v) * size)), 2, (0, 160, 0), -1)
    return image


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=repo / "docs" / "fold_directions.png")
    args = parser.parse_args()
    cv2.imwrite(str(args.out), field_image()[..., ::-1])
    print(args.out)


if __name__ == "__main__":
    main()
