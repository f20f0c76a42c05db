"""Seconds per stage and per photo for each preset, on this machine's CPU or GPU.

    python benchmarks/speed.py [--limit 5] [--device auto] [--clip-pretrained none]

``--clip-pretrained none`` runs the quality preset's CLIP detail with random weights (the time is
the same as with real weights; the result is not CLIP-guided). The first photo of each preset is
a warm-up (JIT compilation, model loading) and is not counted.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.image_io import list_images  # noqa: E402
from core.pipeline import PRESET_NAMES, Pipeline, preset_settings  # noqa: E402
from core.rendering import select_device  # noqa: E402


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-pretrained", default="openai", help="tag, checkpoint path, or 'none'")
    args = parser.parse_args()
    clip = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained

    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({name}), torch threads {torch.get_num_threads()}")
    photos = list_images([args.faces])[: args.limit + 1]
    pipeline = Pipeline()
    for preset in PRESET_NAMES:
        settings = preset_settings(preset, device=args.device, clip_pretrained=clip)
        timings = [pipeline.run(photo, settings).timings for photo in photos][1:]
        keys = [k for k in timings[0] if k != "total"]
        per_stage = ", ".join(f"{k} {np.mean([t.get(k, 0) for t in timings]):.2f}" for k in keys)
        totals = [t["total"] for t in timings]
        print(f"| {preset} | {np.mean(totals):.1f} | {np.max(totals):.1f} | {per_stage} |")


if __name__ == "__main__":
    main()
