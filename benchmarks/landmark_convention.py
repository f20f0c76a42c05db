"""Choose the ICT vertices of the 68 iBUG landmarks *as photos are annotated*, and measure the choice.

ICT-FaceKit names 68 landmark vertices of its own; annotated datasets place some of the 68 points
elsewhere on the face. AFLW2000-3D (and 300W-LP, fitted with the same method) annotates them
3D-consistently: the jaw line is a fixed line on the face that stays put when the head turns,
hidden behind the cheek at large yaw, not the visible outline. Reading a fitted ICT head out
through ICT's own jaw vertices (further back, towards the ears) puts the jaw of a turned face
10-20 mm away from where an annotator of that convention draws it, whatever the fit.

This script fits every AFLW2000-3D dev image (landmark regression, as ``benchmarks/aflw2000.py``)
and, per landmark, picks the face-skin vertex within ``RADIUS_MM`` of ICT's own that minimises the
summed normalised error. The NME is a mean over landmarks, so each landmark's choice is its own.
The choice is scored by 2-fold cross-validation (even / odd images: chosen on one half, scored
on the other) against ICT's own vertices, per yaw bin; the shipped table
(``core/data/annotated_landmarks68.json``, with ``--write``) is chosen on all images. Only the
read-out changes: fits never see these vertices.

    python benchmarks/landmark_convention.py [--data ../shared/aflw2000-3d-dev] [--write]

SCRFD takes part in the fits when LIKENESS_INSIGHTFACE_MODEL names a model (as in aflw2000.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aflw2000 import binned  # noqa: E402  (benchmarks/, the script's folder)

from core.errors import LikenessError  # noqa: E402
from core.geometry.correspondence import ANNOTATED68_PATH  # noqa: E402
from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

RADIUS_MM = 35.0  # the furthest a choice may lie from ICT's own vertex (the jaw moves 12-23 mm)


def fit_errors(pipeline: Pipeline, data: Path, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, 68) normalised error (percent) of every candidate vertex as each landmark, and a (N,)
    mask of the images with a dense fit (faces found only by detector keypoints are left out of
    the choice: their fits have no dense landmarks to agree on)."""
    gt = np.load(data / "ground_truth.npz")
    settings = preset_settings("balanced").regression
    model = pipeline.model
    errors = np.full((len(gt["names"]), len(candidates), 68), np.nan, np.float32)
    dense = np.zeros(len(gt["names"]), bool)
    for i, name in enumerate(tqdm(gt["names"], desc="fits", disable=None)):
        rgb = load_image(data / "images" / str(name)).rgb
        try:
            face = pipeline.detect(rgb)
        except LikenessError:
            continue
        fit, _ = pipeline.fit_landmarks(face, rgb.shape[1], rgb.shape[0], settings)
        points = fit.project(model.vertices(fit.identity, fit.expression)[candidates])
        truth = gt["pts68"][i, :2].T
        size = np.sqrt(np.ptp(truth[:, 0]) * np.ptp(truth[:, 1]))
        errors[i] = np.linalg.norm(points[:, None] - truth[None], axis=2) / size * 100
        dense[i] = face.is_dense
    return errors, dense


def choose(errors: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(68,) candidate index per landmark with the least summed error, among ``allowed`` (C, 68)."""
    total = np.where(allowed, errors.sum(0), np.inf)
    return total.argmin(0)


def score(errors: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(N,) NME of each image with landmark k read from candidate ``chosen[k]``."""
    return errors[:, chosen, np.arange(68)].mean(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "aflw2000-3d-dev")
    parser.add_argument("--write", action="store_true",
                        help=f"write the choice on all images to {ANNOTATED68_PATH}")
    args = parser.parse_args()

    pipeline = Pipeline()
    model = pipeline.model
    own = model.landmarks68
    face = np.arange(*model.regions["face"])
    distance = np.linalg.norm(model.neutral[face][:, None] - model.neutral[own][None], axis=2) * 1000
    near = distance < RADIUS_MM  # (face vertices, 68)
    keep = near.any(1)
    candidates, allowed = face[keep], near[keep]
    errors, dense = fit_errors(pipeline, args.data, candidates)
    own_index = np.array([int(np.flatnonzero(candidates == v)[0]) for v in own])

    yaw = np.load(args.data / "ground_truth.npz")["yaw_deg"]
    ids = np.flatnonzero(dense)
    halves = [ids[ids % 2 == k] for k in (0, 1)]
    crossed = np.full(len(yaw), np.nan)
    for k in (0, 1):
        crossed[halves[k]] = score(errors[halves[k]], choose(errors[halves[1 - k]], allowed))
    before = score(errors[ids], own_index)
    print(f"AFLW2000-3D dev, {len(ids)} images with a dense fit (regression); NME % per yaw bin")
    print(f"{'read-out':<34} {'[0,30]':>8} {'(30,60]':>8} {'(60,90]':>8} {'balanced':>9}")
    for label, err in (("ICT's own 68 vertices", before), ("annotation convention, 2-fold CV", crossed[ids])):
        bins, balanced = binned(err, yaw[ids])
        print(f"{label:<34} " + " ".join(f"{b:8.2f}" for b in bins) + f" {balanced:9.2f}")

    chosen = candidates[choose(errors[ids], allowed)]
    moved = np.linalg.norm(model.neutral[chosen] - model.neutral[own], axis=1) * 1000
    print("moved from ICT's own vertex (mm): jaw " + " ".join(f"{m:.0f}" for m in moved[:17])
          + f"; other 51 median {np.median(moved[17:]):.1f}, max {moved[17:].max():.1f}")
    if args.write:
        table = {"version": 1, "vertex_ids": [int(v) for v in chosen],
                 "source": f"benchmarks/landmark_convention.py on {len(ids)} AFLW2000-3D dev images"}
        ANNOTATED68_PATH.write_text(json.dumps(table) + "\n")
        print(f"wrote {ANNOTATED68_PATH}")


if __name__ == "__main__":
    main()
