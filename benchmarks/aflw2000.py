"""AFLW2000-3D landmark benchmark (protocol of 3DDFA / 3DDFA-V2 / SynergyNet), misses counted.

NME of the fitted model's 68 iBUG landmarks (x, y) = mean point-to-point distance divided by
sqrt(w * h) of the ground-truth landmarks' bounding box, in percent; averaged per |yaw| bin
([0, 30], (30, 60], (60, 90]) and then over the bins (balanced mean). Reported for the landmark
regression alone and after refinement.

Every image counts. A face found only by a detector's keypoints (core.fitting.profile: BlazeFace, or SCRFD
when LIKENESS_INSIGHTFACE_MODEL names one) is scored like any other fit. An image without any face
is scored as if the mean ICT face, frontal, had been placed at the image centre with its landmarks
spanning half the image's shorter side (``miss_landmarks``): a penalty of roughly the size of a
wrong guess, not a silent omission.

    python benchmarks/aflw2000.py [--data ../shared/aflw2000-3d-dev] [--subset quick] [--preset fast]
        [--regression-only] [--no-profile-fit] [--no-keypoint-pose]

SCRFD (core.fitting.profile: proposals BlazeFace misses, and the pose of faces turned beyond 60 deg) takes
part only when LIKENESS_INSIGHTFACE_MODEL (or ~/.insightface) names a model.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import LikenessError  # noqa: E402
from core.fitting.detection import detect_face  # noqa: E402
from core.fitting.profile import TURNED_YAW_DEG  # noqa: E402
from core.fitting.refinement import refine  # noqa: E402
from core.geometry.face_model import FaceModel  # noqa: E402
from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

BINS = ((0, 30), (30, 60), (60, 90))


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    w, h = np.ptp(gt[:, 0]), np.ptp(gt[:, 1])
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(w * h) * 100)


def bin_masks(yaw: np.ndarray) -> list[np.ndarray]:
    a = np.abs(yaw)
    return [((a >= lo) if lo == 0 else (a > lo)) & (a <= hi) for lo, hi in BINS]


def binned(errors: np.ndarray, yaw: np.ndarray) -> tuple[list[float], float]:
    means = [float(np.mean(errors[sel])) if np.any(sel) else float("nan") for sel in bin_masks(yaw)]
    return means, float(np.nanmean(means))


def miss_landmarks(model: FaceModel, width: int, height: int) -> np.ndarray:
    """The score of a miss: the mean face's 68 landmarks, frontal, centred, spanning half the shorter side."""
    pts = model.neutral[model.landmarks68][:, :2] * [1.0, -1.0]  # frontal orthographic view, y down
    pts = pts - (pts.min(0) + pts.max(0)) / 2
    return pts * (0.5 * min(width, height) / np.ptp(pts, axis=0).max()) + [width / 2, height / 2]


def select(count: int, yaw: np.ndarray, subset: str) -> np.ndarray:
    """Image indices: ``all``, or ``quick`` (every 4th image plus every |yaw| > 60 deg one) for iterating."""
    if subset == "all":
        return np.arange(count)
    return np.flatnonzero((np.arange(count) % 4 == 0) | (np.abs(yaw) > 60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "aflw2000-3d-dev")
    parser.add_argument("--subset", choices=("all", "quick"), default="all")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--iterations", type=int, default=None, help="refinement iterations")
    parser.add_argument("--no-profile-fit", action="store_true",
                        help="ablation: no keypoint fit for faces the landmark network rejects")
    parser.add_argument("--no-keypoint-pose", action="store_true",
                        help="ablation: dense fits only, even where SCRFD's keypoints say the face is turned "
                             "beyond core.fitting.profile.TURNED_YAW_DEG")
    parser.add_argument("--regression-only", action="store_true", help="skip refinement (quick iterations)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    gt = np.load(args.data / "ground_truth.npz")
    keep = select(len(gt["names"]), gt["yaw_deg"], args.subset)
    names, pts68, yaw = gt["names"][keep], gt["pts68"][keep], gt["yaw_deg"][keep]
    settings = preset_settings(args.preset, device=args.device)
    if args.iterations is not None:
        settings.refinement.iterations = args.iterations
    pipeline = Pipeline()
    model = pipeline.model
    stages = ("regression",) if args.regression_only else ("regression", "refined")
    errors = {key: np.full(len(names), np.nan) for key in stages}
    misses, keypoint_only, turned, times = [], [], [], {"detect": [], "regress": [], "refine": []}
    for i in tqdm(range(len(names)), desc="AFLW2000-3D", disable=None):
        rgb = load_image(args.data / "images" / str(names[i])).rgb
        gt2d = pts68[i, :2].T
        try:
            t0 = time.perf_counter()
            if args.no_profile_fit:
                det = detect_face(rgb, detector=pipeline.detector)
            else:
                det = pipeline.detect(rgb)
            if args.no_keypoint_pose:
                det = replace(det, keypoints=None)
            t1 = time.perf_counter()
        except LikenessError as exc:
            misses.append((str(names[i]), str(exc)))
            for err in errors.values():
                err[i] = nme(miss_landmarks(model, rgb.shape[1], rgb.shape[0]), gt2d)
            continue
        coarse, target = pipeline.fit_landmarks(det, rgb.shape[1], rgb.shape[0], settings.regression)
        t2 = time.perf_counter()
        refined = coarse
        if not det.is_dense:
            keypoint_only.append(f"{names[i]} ({det.backend})")
        elif not args.regression_only:
            refined = refine(model, rgb, coarse, target, det, pipeline.surface_points(100),
                             settings.refinement, settings.device).params
        if det.is_dense and target.keypoints_only:
            turned.append(str(names[i]))  # fit_turned: the target holds SCRFD's keypoints only
        t3 = time.perf_counter()
        times["detect"].append(t1 - t0)
        times["regress"].append(t2 - t1)
        times["refine"].append(t3 - t2)
        for key, params in zip(stages, (coarse, refined)):
            verts = model.vertices(params.identity, params.expression)
            errors[key][i] = nme(params.project(verts[pipeline.landmarks68]), gt2d)

    found = len(names) - len(misses)
    counts = [int(m.sum()) for m in bin_masks(yaw)]
    print(f"\nAFLW2000-3D {args.subset}: {len(names)} images (bins n = {counts}), "
          f"faces found {found}/{len(names)} ({len(keypoint_only)} of them from detector keypoints only, "
          f"{len(turned)} dense faces turned beyond {TURNED_YAW_DEG:.0f} deg fitted from SCRFD's keypoints); "
          "misses scored as the centred mean face")
    print(f"{'stage':<12} {'[0,30]':>8} {'(30,60]':>8} {'(60,90]':>8} {'balanced':>9}")
    for key, err in errors.items():
        bins, balanced = binned(err, yaw)
        print(f"{key:<12} " + " ".join(f"{b:8.2f}" for b in bins) + f" {balanced:9.2f}")
    print("mean seconds per image: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in times.items() if v))
    for name in keypoint_only:
        print(f"  keypoints only: {name}")
    for name, reason in misses:
        print(f"  no face: {name}: {reason}")


if __name__ == "__main__":
    main()
