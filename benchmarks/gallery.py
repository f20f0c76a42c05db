"""Gallery and per-stage timings over the real photos in ../shared/faces.

Writes one preview row per photo (photo | fit over photo | shaded fit) into a grid image and
prints the time of every stage per photo and on average.

    python benchmarks/gallery.py [--preset balanced] [--out docs/gallery.jpg] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import LikenessError  # noqa: E402
from core.image_io import list_images  # noqa: E402
from core.output.export import preview_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=repo / "docs" / "gallery.jpg")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--row-height", type=int, default=160)
    args = parser.parse_args()

    files = list_images([args.faces])[: args.limit]
    pipeline = Pipeline()
    settings = preset_settings(args.preset, device=args.device)
    rows, timings = [], []
    for path in files:
        try:
            rec = pipeline.run(path, settings)
        except LikenessError as exc:
            print(f"{path.name}: {exc}")
            continue
        timings.append(rec.timings)
        print(f"{path.name}: " + ", ".join(f"{k} {v:.2f}s" for k, v in rec.timings.items()))
        preview = Image.fromarray(preview_image(rec))
        scale = args.row_height / preview.height
        rows.append(preview.resize((round(preview.width * scale), args.row_height), Image.LANCZOS))
    if not rows:
        return
    cols = 3
    width = max(r.width for r in rows)
    grid = Image.new("RGB", (width * cols, args.row_height * ((len(rows) + cols - 1) // cols)), "white")
    for i, row in enumerate(rows):
        grid.paste(row, ((i % cols) * width, (i // cols) * args.row_height))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, quality=88)
    keys = sorted({k for t in timings for k in t})
    print(f"\n{len(rows)} of {len(files)} photos, preset {args.preset}; mean seconds per stage:")
    print(", ".join(f"{k} {np.mean([t.get(k, 0) for t in timings]):.2f}" for k in keys))
    print(f"gallery: {args.out}")


if __name__ == "__main__":
    main()
