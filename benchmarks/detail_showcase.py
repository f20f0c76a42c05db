"""Clay renders of real photos under a grazing light: photo | coarse fit | with detail.

    python benchmarks/detail_showcase.py [--photos vd092.png ...] [--out docs/detail_showcase.png]

Each photo goes through ``quality`` as the pipeline runs it (``--detail`` guidance; without CLIP
weights ``auto`` runs photometric). The face is rendered by the core renderer through the photo's
camera with a grey albedo and one light low from the side, where folds and lumps show most.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.displacement import detail as D  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

DEFAULT_PHOTOS = ("vd092.png", "015259.jpg", "JianzhuGuo.jpg", "000006.jpg", "sample_2.jpg")
SIZE = 320


def grazing_light() -> torch.Tensor:
    """SH (9, 3) of a white light from the upper left, 65 degrees off the view axis (camera axes)."""
    sh = torch.zeros(9, 3)
    direction = torch.tensor([-0.75, -0.55, -0.35])
    sh[0] = 0.45 / 0.886
    sh[1:4] = 0.75 * (direction / direction.norm())[:, None]
    return sh


def clay_row(rec) -> np.ndarray:
    """photo crop | coarse clay | detailed clay, SIZE px each."""
    settings = D.DetailSettings()
    mesh = D.dense_face_mesh(rec.model, settings.subdivision, settings.falloff_width)
    scene = D.DetailScene(rec, mesh, SIZE, torch.device("cpu"))
    positions, directions = D.dense_frame(rec, mesh)
    offsets = ((rec.detail.detail_vertices - positions) * directions).sum(1) * 1e3
    grey = torch.full((4, 8, 3), 0.8)
    sh = grazing_light()
    with torch.no_grad():
        coarse = scene.render(torch.zeros(len(positions)), grey, sh).image
        detailed = scene.render(torch.from_numpy(offsets).float(), grey, sh).image
    row = torch.cat([scene.photo, coarse, detailed], dim=1).clamp(0, 1).numpy()
    return (row * 255 + 0.5).astype(np.uint8)


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--photos", nargs="+", default=list(DEFAULT_PHOTOS))
    parser.add_argument("--detail", choices=("auto", "clip", "photometric"), default="auto")
    parser.add_argument("--out", type=Path, default=repo / "docs" / "detail_showcase.png")
    args = parser.parse_args()
    pipeline = Pipeline()
    rows = []
    for name in args.photos:
        path = next(iter(sorted(args.faces.rglob(name))), None)
        if path is None:
            print(f"{name}: not found under {args.faces}")
            continue
        rec = pipeline.run(path, preset_settings("quality", device="cpu", detail_guidance=args.detail))
        print(f"{name}: {rec.timings['total']:.1f} s (detail {rec.timings.get('detail', 0):.1f} s), "
              f"guidance {rec.detail.guidance}, rms {rec.metrics['detail_rms_mm']:.3f} mm", flush=True)
        rows.append(clay_row(rec))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
