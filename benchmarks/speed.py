"""Seconds per stage and per photo for each preset, on this machine's CPU or GPU.

    python benchmarks/speed.py [--limit 5] [--device auto] [--clip-pretrained none] [--json out.json]

``--clip-pretrained none`` runs the quality preset's CLIP detail with random weights (the time is
the same as with real weights; the result is not CLIP-guided). The first photo of each preset is
a warm-up (JIT compilation, model loading) and is not counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.geometry.rendering import select_device  # noqa: E402
from core.image_io import list_images  # noqa: E402
from core.pipeline import PRESET_NAMES, Pipeline, preset_settings  # noqa: E402


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-pretrained", default="openai", help="tag, checkpoint path, or 'none'")
    parser.add_argument("--presets", nargs="+", default=list(PRESET_NAMES), choices=PRESET_NAMES)
    parser.add_argument("--json", type=Path, help="also write mean seconds per preset and stage here")
    args = parser.parse_args()
    clip = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained

    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({name}), torch threads {torch.get_num_threads()}")
    photos = list_images([args.faces])[: args.limit + 1]
    pipeline = Pipeline()
    report = {"device": str(device), "name": name, "photos": len(photos) - 1, "presets": {}}
    for preset in args.presets:
        settings = preset_settings(preset, device=args.device, clip_pretrained=clip)
        timings = [pipeline.run(photo, settings).timings for photo in photos][1:]
        means = {k: float(np.mean([t.get(k, 0.0) for t in timings])) for k in timings[0]}
        worst = float(np.max([t["total"] for t in timings]))
        report["presets"][preset] = means | {"max_total": worst}
        per_stage = ", ".join(f"{k} {v:.2f}" for k, v in means.items() if k != "total")
        print(f"| {preset} | {means['total']:.1f} | {worst:.1f} | {per_stage} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
