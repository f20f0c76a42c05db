"""Does the part re-projection distance loss (3DDFA-V3's PRDL) help the refinement? Measured, not shipped.

PRDL compares facial parts without point correspondences: for a grid of anchors over the face
box, the distance from each anchor to the nearest point of a part (eyes, brows, lips, the mouth
opening) in the photo against the same distance to the model's re-projected part; the loss is the
mean absolute difference, per part, in units of the face size. Offline, the photo's parts can
only come from MediaPipe's landmark loops (no face-parsing network ships in a package here), so
the photo side is each loop's filled polygon and the model side points spread over the same loop
of the model's surface points (a fan from the loop's centre).

This script adds the term to the refinement's energy at several weights and reports, from the
same landmark regression each time:
- held-out photometric error (the checkerboard protocol of ``refinement_ablation.py``) on
  expressive faces (``../shared/faces``: 3ddfa_v3 examples, one of them winking, and smirk's);
- landmark NME on a subset of AFLW2000-3D dev (every ``--aflw-step``-th image with a dense fit);
- an overlay per expressive face: the photo's part loops (green), the model's after refinement
  without the term (red) and with it at ``--overlay-weight`` (blue).

    python benchmarks/prdl_ablation.py [--weights 0,0.3,1,3] [--aflw-step 4] [--overlay out.jpg]
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aflw2000 import binned, nme  # noqa: E402  (benchmarks/, the script's folder)

from core.appearance.skin_mask import (  # noqa: E402
    INNER_LIPS,
    LEFT_BROW,
    LEFT_EYE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    polygon_mask,
)
from core.fitting import refinement  # noqa: E402
from core.geometry.correspondence import Correspondence  # noqa: E402
from core.geometry.rendering import project  # noqa: E402
from core.image_io import load_image  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

PARTS = (RIGHT_EYE, LEFT_EYE, RIGHT_BROW, LEFT_BROW, OUTER_LIPS, INNER_LIPS)
ANCHORS = 32  # anchors per side of the face box
SCALE = 0.012  # of the face size: the refinement's landmark sigma, so weights compare with its term
FAN_STEPS = 6  # samples per fan triangle edge
EXPRESSIVE = ("3ddfa_v3/examples/1.jpg", "3ddfa_v3/examples/2.png",
              "smirk/samples/test_image1.png", "smirk/samples/test_image2.png")


def fan(count: int) -> np.ndarray:
    """(P, count) weights of points spread over a closed loop of ``count`` points: triangles from
    the loop's centre to each edge, sampled on a barycentric lattice."""
    centre = np.full(count, 1.0 / count)
    rows = [centre]
    for i in range(count):
        a, b = np.eye(count)[i], np.eye(count)[(i + 1) % count]
        for u in range(FAN_STEPS + 1):
            for v in range(FAN_STEPS + 1 - u):
                if u + v:
                    rows.append((1 - (u + v) / FAN_STEPS) * centre + (u * a + v * b) / FAN_STEPS)
    return np.array(rows)


def region_points(mask: np.ndarray, max_points: int = 2048) -> torch.Tensor:
    """Pixel centres (M, 2) of a mask, thinned on a regular sub-grid to about ``max_points``."""
    step = max(1, math.ceil(math.sqrt(int(mask.sum()) / max_points)))
    rows, cols = np.nonzero(mask[::step, ::step])
    return torch.from_numpy(np.stack([cols * step + 0.5, rows * step + 0.5], 1)).float()


def anchor_distances(anchors: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Distance (K,) from each anchor to the nearest of ``points``."""
    return torch.sqrt((anchors[:, None] - points[None]).square().sum(-1).amin(1) + 1e-12)


@contextmanager
def part_term(weight: float, corr: Correspondence):
    """The refinement's objective with PRDL added at ``weight`` (faces with dense landmarks)."""
    base = refinement._Objective

    class WithParts(base):
        def __init__(self, skin, view, points, camera, settings, device, *args, **kwargs):
            super().__init__(skin, view, points, camera, settings, device, *args, **kwargs)
            landmarks = self.crop.points(view.detection.landmarks)
            x0, y0, x1, y1 = self.crop.points(view.detection.box.reshape(2, 2)).reshape(-1)
            grid = (np.arange(ANCHORS) + 0.5) / ANCHORS
            gx, gy = np.meshgrid(x0 + grid * (x1 - x0), y0 + grid * (y1 - y0))
            anchors = np.stack([gx.ravel(), gy.ravel()], 1)
            self.anchors = torch.tensor(anchors, dtype=torch.float32, device=device)
            self.unit = max(x1 - x0, y1 - y0) * SCALE
            self.parts = []
            for loop in PARTS:
                mask = polygon_mask(landmarks, loop, self.crop.size, self.crop.size)
                if mask.sum() < 3:
                    continue  # a closed eye or mouth: nothing to compare
                rows = torch.as_tensor(corr.rows(loop))
                spread = torch.from_numpy(fan(len(loop))).float() @ torch.nn.functional.one_hot(
                    rows, len(self.lm_base)).float()
                target = anchor_distances(self.anchors, region_points(mask).to(device))
                self.parts.append((spread.to(device), target))

        def energy(self, rot, t, identity, expression, sh, albedo):
            total, terms = super().energy(rot, t, identity, expression, sh, albedo)
            if self.parts:
                marks = self._landmarks_camera(rot, t, identity, expression)
                gaps = [(anchor_distances(self.anchors, project(spread @ marks, self.camera)[:, :2])
                         - target).abs().mean() for spread, target in self.parts]
                loss = sum(gaps) / len(gaps) / self.unit
                total = total + weight * loss
                terms["prdl"] = loss.item()
            return total, terms

    refinement._Objective = WithParts
    try:
        yield
    finally:
        refinement._Objective = base


def refined(pipeline: Pipeline, rgb: np.ndarray, settings, weights: list[float]):
    """Detection, regression and one refinement per weight (dense faces only, as the pipeline)."""
    detection = pipeline.detect(rgb)
    coarse, target = pipeline.fit_landmarks(detection, rgb.shape[1], rgb.shape[0], settings.regression)
    if not detection.is_dense:
        return detection, coarse, None
    points = pipeline.surface_points(settings.regression.num_identity)
    results = []
    for weight in weights:
        with part_term(weight, pipeline.correspondence):
            results.append(refinement.refine(pipeline.model, rgb, coarse, target, detection, points,
                                             settings.refinement))
    return detection, coarse, results


def expressive(pipeline: Pipeline, faces: Path, settings, weights: list[float]) -> None:
    held = replace(settings, refinement=replace(settings.refinement, holdout=True))
    errors = []
    for name in EXPRESSIVE:
        _, _, results = refined(pipeline, load_image(faces / name).rgb, held, weights)
        errors.append([r.metrics["heldout_photometric_after"] for r in results])
        print(f"{name}: held-out photometric " + " ".join(f"{e:.4f}" for e in errors[-1]))
    errors = np.array(errors)
    print("\n| PRDL weight | " + " | ".join(f"{w:g}" for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    print(f"| held-out error, {len(errors)} expressive faces | "
          + " | ".join(f"{e:.4f}" for e in errors.mean(0)) + " |")
    print("| faces better than without | " + " | ".join(str(int((errors[:, k] < errors[:, 0]).sum()))
                                                    for k in range(len(weights))) + " |")


def aflw(pipeline: Pipeline, data: Path, settings, weights: list[float], step: int) -> None:
    gt = np.load(data / "ground_truth.npz")
    rows, yaws = [], []
    for i in range(0, len(gt["names"]), step):
        _, coarse, results = refined(pipeline, load_image(data / "images" / str(gt["names"][i])).rgb,
                                     settings, weights)
        if results is None:
            continue
        truth = gt["pts68"][i, :2].T
        model = pipeline.model
        rows.append([nme(p.project(model.vertices(p.identity, p.expression)[pipeline.landmarks68]), truth)
                     for p in (coarse, *(r.params for r in results))])
        yaws.append(gt["yaw_deg"][i])
    rows, yaws = np.array(rows), np.array(yaws)
    print(f"\nAFLW2000-3D dev, every {step}th image with a dense fit ({len(rows)}): NME per yaw bin")
    for k, label in enumerate(["regression", *(f"refined, PRDL {w:g}" for w in weights)]):
        bins, balanced = binned(rows[:, k], yaws)
        print(f"| {label} | " + " | ".join(f"{b:.2f}" for b in bins) + f" | {balanced:.2f} |")


def overlay(pipeline: Pipeline, faces: Path, settings, weight: float, out: Path) -> None:
    panels = []
    corr = pipeline.correspondence
    for name in EXPRESSIVE:
        rgb = load_image(faces / name).rgb
        detection, _, results = refined(pipeline, rgb, settings, [0.0, weight])
        crop = refinement.Crop.around(detection.box, 360, 1.25)
        image = crop.image(rgb)
        lines = [(detection.landmarks, (0, 200, 0))]  # the photo's, indexed by MediaPipe id
        for result, colour in zip(results, ((230, 0, 0), (0, 110, 255))):
            p = result.params
            model_points = np.zeros((len(detection.landmarks), 2))
            vertices = pipeline.model.vertices(p.identity, p.expression)
            model_points[corr.mp_index] = p.project(corr.points(vertices))
            lines.append((model_points, colour))
        for points, colour in lines:
            for loop in PARTS:
                pts = np.round(crop.points(points[loop]) * 4).astype(np.int32)
                cv2.polylines(image, [pts], True, colour, 1, cv2.LINE_AA, shift=2)
        panels.append(image)
    cv2.imwrite(str(out), np.concatenate(panels, 1)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {out}")


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "aflw2000-3d-dev")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--weights", default="0,0.3,1,3", help="PRDL weights; the first should be 0")
    parser.add_argument("--aflw-step", type=int, default=4, help="every Nth AFLW image (0: skip)")
    parser.add_argument("--overlay", type=Path, default=None, help="write the overlay image here")
    parser.add_argument("--overlay-weight", type=float, default=1.0)
    args = parser.parse_args()

    pipeline = Pipeline()
    settings = preset_settings(args.preset)
    weights = [float(w) for w in args.weights.split(",")]
    expressive(pipeline, args.faces, settings, weights)
    if args.aflw_step:
        aflw(pipeline, args.data, settings, weights, args.aflw_step)
    if args.overlay:
        overlay(pipeline, args.faces, settings, args.overlay_weight, args.overlay)


if __name__ == "__main__":
    main()
