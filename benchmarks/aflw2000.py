"""AFLW2000-3D landmark benchmark (protocol of 3DDFA / 3DDFA-V2 / SynergyNet).

NME of the fitted model's 68 iBUG landmarks (x, y) = mean point-to-point distance divided by
sqrt(w * h) of the ground-truth landmarks' bounding box, in percent; averaged per |yaw| bin
([0, 30], (30, 60], (60, 90]) and then over the bins (balanced mean). Reported for the landmark
regression alone and after refinement.

    python benchmarks/aflw2000.py [--data ../shared/aflw2000-3d-dev] [--limit N] [--iterations 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.detection import detect_face  # noqa: E402
from core.errors import LikenessError  # noqa: E402
from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402
from core.refinement import refine  # noqa: E402

BINS = ((0, 30), (30, 60), (60, 90))


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    w, h = np.ptp(gt[:, 0]), np.ptp(gt[:, 1])
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(w * h) * 100)


def binned(errors: np.ndarray, yaw: np.ndarray) -> tuple[list[float], float]:
    means = []
    for lo, hi in BINS:
        above = np.abs(yaw) >= lo if lo == 0 else np.abs(yaw) > lo
        sel = above & (np.abs(yaw) <= hi)
        means.append(float(np.nanmean(errors[sel])) if np.any(sel) else float("nan"))
    return means, float(np.mean(means))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "aflw2000-3d-dev")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--iterations", type=int, default=None, help="refinement iterations")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    gt = np.load(args.data / "ground_truth.npz")
    names, pts68, yaw = gt["names"], gt["pts68"], gt["yaw_deg"]
    if args.limit:
        names, pts68, yaw = names[: args.limit], pts68[: args.limit], yaw[: args.limit]
    settings = preset_settings(args.preset, device=args.device)
    if args.iterations is not None:
        settings.refinement.iterations = args.iterations
    pipeline = Pipeline()
    model = pipeline.model
    errors = {"regression": np.full(len(names), np.nan), "refined": np.full(len(names), np.nan)}
    failures, times = [], {"detect": [], "regress": [], "refine": []}
    for i in tqdm(range(len(names)), desc="AFLW2000-3D", disable=None):
        rgb = load_image(args.data / "images" / str(names[i])).rgb
        try:
            t0 = time.perf_counter()
            det = detect_face(rgb, detector=pipeline.detector)
            t1 = time.perf_counter()
            coarse, target = pipeline.fit_landmarks(det, rgb.shape[1], rgb.shape[0], settings.regression)
            t2 = time.perf_counter()
            refined = refine(model, rgb, coarse, target, det, pipeline.surface_points(100),
                             settings.refinement, settings.device).params
            t3 = time.perf_counter()
        except LikenessError as exc:
            failures.append((str(names[i]), str(exc)))
            continue
        times["detect"].append(t1 - t0)
        times["regress"].append(t2 - t1)
        times["refine"].append(t3 - t2)
        gt2d = pts68[i, :2].T
        for key, params in (("regression", coarse), ("refined", refined)):
            verts = model.vertices(params.identity, params.expression)
            errors[key][i] = nme(params.project(verts[model.landmarks68]), gt2d)

    print(f"\nAFLW2000-3D dev subset: {len(names)} images, {len(failures)} without a detected face")
    print(f"{'stage':<12} {'[0,30]':>8} {'(30,60]':>8} {'(60,90]':>8} {'balanced':>9}")
    for key, err in errors.items():
        bins, balanced = binned(err, yaw)
        print(f"{key:<12} " + " ".join(f"{b:8.2f}" for b in bins) + f" {balanced:9.2f}")
    print("mean seconds per image: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in times.items() if v))
    for name, reason in failures:
        print(f"  no face: {name}: {reason}")


if __name__ == "__main__":
    main()
