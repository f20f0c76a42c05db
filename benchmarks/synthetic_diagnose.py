"""Why the detail stage misses the truth: diagnostics on the synthetic set's heads.

    python benchmarks/synthetic_diagnose.py --set out/synthetic [--runs oracle_albedo oracle_geometry
        photometric] [--only neutral_front ...]

Per head and run (the runs of benchmarks/synthetic_detail.py):
- *truth kept?* The true map is put into the stage's parameters (least squares; ``held``: its
  mid-band correlation with the truth, what the parameterisation can hold). The stage's weighted
  loss terms at zero, at the truth and at its own solution from zero: is the truth a minimiser?
  Then the stage starts at the truth: the correlation where it ends.
- *displaced?* The best mid-band correlation of the recovered map with the truth over UV shifts of
  up to +-3 mm.
- *which features?* Per feature of the recipe (scripts/make_synthetic_faces.py's FEATURES):
  correlation and gain (least-squares scale, 1 = the truth's amplitude) of the recovered mid band
  against the truth's, near that feature.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synthetic_detail import (  # noqa: E402
    MM_PER_UV,
    RUNS,
    band,
    face_region,
    load_truth,
    measure,
    oracle_rec,
    texel_metres,
)
from core.displacement import detail as D  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402
from scripts.make_synthetic_faces import CASES, Case, displacement_truth, landmark_uvs  # noqa: E402

SHIFT_MM = 3.0


def truth_parameters(objective: D.DetailObjective, truth_mm: np.ndarray, steps: int = 300) -> torch.Tensor:
    """Parameters whose map (with the falloff) is closest to ``truth_mm`` on the island. Where the
    falloff is ~0 the fit leaves the field free, so a small pull keeps it from wandering there."""
    size = objective.settings.resolution
    target = torch.from_numpy(cv2.resize(truth_mm, (size, size), interpolation=cv2.INTER_AREA))
    island, falloff = objective.island[0, 0], objective.falloff_map
    scale = objective.settings.max_displacement_mm
    params = torch.atanh((target / scale).clamp(-0.99, 0.99)).requires_grad_(True)
    opt = torch.optim.Adam([params], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        field = objective.field(params)
        misfit = (field * falloff - target) ** 2 + 0.01 * (1 - falloff) * field**2
        loss = (misfit * island).sum() / island.sum()
        loss.backward()
        opt.step()
    return params.detach()


def weighted_terms(objective: D.DetailObjective, params: torch.Tensor) -> dict[str, float]:
    s = objective.settings
    weights = {"photometric": s.photometric_weight, "frequency": s.frequency_weight,
               "smoothness": s.smoothness_weight, "magnitude": s.magnitude_weight,
               "symmetry": s.symmetry_weight}
    with torch.no_grad():
        _, terms = objective.evaluate(params)
    return {k: weights[k] * v for k, v in terms.items() if k in weights}


def tile_map(objective: D.DetailObjective, params: torch.Tensor, n: int) -> np.ndarray:
    with torch.no_grad():
        disp = (objective.field(params) * objective.falloff_map).cpu().numpy()
    return cv2.resize(disp, (n, n), interpolation=cv2.INTER_CUBIC)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-9 and b.std() > 1e-9 else 0.0


def best_shift(rec_mid: np.ndarray, true_mid: np.ndarray, region: np.ndarray) -> tuple[float, float, float]:
    """Highest correlation over integer texel shifts up to SHIFT_MM, and that shift (mm, u and v)."""
    reach = int(round(SHIFT_MM / (MM_PER_UV / len(rec_mid))))
    best = (-1.0, 0, 0)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            c = corr(np.roll(rec_mid, (dy, dx), (0, 1))[region], true_mid[region])
            best = max(best, (c, dx, -dy))
    texel = MM_PER_UV / len(rec_mid)
    return best[0], best[1] * texel, best[2] * texel


def feature_scores(rec_mid: np.ndarray, true_mid: np.ndarray, parts: dict[str, np.ndarray],
                   region: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per feature: (correlation, gain) of the mid bands within 3 mm of where the feature is."""
    scores = {}
    texel = MM_PER_UV / len(rec_mid)
    grow = np.ones((2 * int(round(1.5 / texel)) + 1,) * 2, np.uint8)
    for name, part in parts.items():
        near = cv2.dilate((np.abs(part) > 0.1 * np.abs(part).max()).astype(np.uint8), grow) > 0
        near &= region
        if near.sum() < 50:
            continue
        r, t = rec_mid[near], true_mid[near]
        scores[name] = (corr(r, t), float((r * t).sum() / (t * t).sum()))
    return scores


def case_of(folder: Path) -> Case:
    recipe = json.loads((folder / "case.json").read_text())
    known = {c.name: c for c in CASES}
    fields = {k: recipe[k] for k in Case.__dataclass_fields__ if k in recipe}
    return known.get(recipe["name"], Case(**fields))


def diagnose(rec, truth, run: str, parts: dict[str, np.ndarray]) -> dict:
    settings = replace(D.DetailSettings.from_pipeline(preset_settings("quality", device="cpu")),
                       guidance="photometric", use_albedo=run == "oracle_albedo")
    objective = D.DetailObjective(rec, settings, None, torch.device("cpu"))
    n = truth.displacement_mm.shape[0]
    region, metres = face_region(rec, truth), texel_metres(rec, n)
    true_mid = band(truth.displacement_mm, truth.island)
    truth_params = truth_parameters(objective, truth.displacement_mm)
    solution = D.optimise_detail(objective)
    kept = D.optimise_detail(objective, initial=truth_params)
    recovered = tile_map(objective, solution.params, n)
    rec_mid = band(recovered, truth.island)
    parts_mid = {k: band(v * truth.island, truth.island) for k, v in parts.items()}
    zero = torch.zeros_like(truth_params)
    return {
        "held": measure(tile_map(objective, truth_params, n), truth, region, metres)["corr"],
        "loss_zero": weighted_terms(objective, zero),
        "loss_truth": weighted_terms(objective, truth_params),
        "loss_solution": weighted_terms(objective, solution.params),
        "from_zero": measure(recovered, truth, region, metres),
        "from_truth": measure(tile_map(objective, kept.params, n), truth, region, metres),
        "shift": best_shift(rec_mid, true_mid, region),
        "features": feature_scores(rec_mid, true_mid, parts_mid, region),
    }


def data(terms: dict[str, float]) -> float:
    return terms.get("photometric", 0) + terms.get("frequency", 0)


def prior(terms: dict[str, float]) -> float:
    return sum(v for k, v in terms.items() if k not in ("photometric", "frequency"))


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=repo / "out" / "synthetic")
    parser.add_argument("--runs", nargs="+", default=["oracle_albedo", "oracle_geometry", "photometric"],
                        choices=[r for r in RUNS if r != "clip"])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipeline = Pipeline()
    folders = sorted(p.parent for p in args.set.glob("*/truth.npz"))
    folders = [f for f in folders if not args.only or f.name in args.only]
    lines = ["| head | run | held | data gain truth / solution | prior truth / solution | corr from zero "
             "| corr from truth | best shift corr (mm) | features: corr / gain |", "|---" * 9 + "|"]
    for folder in folders:
        truth = load_truth(folder)
        fitted = pipeline.run(truth.photo, preset_settings("quality", detail=False, device="cpu"))
        parts: dict[str, np.ndarray] = {}
        displacement_truth(case_of(folder), landmark_uvs(fitted.model), truth.displacement_mm.shape[0], parts)
        for run in args.runs:
            rec = oracle_rec(fitted, truth, run == "oracle_albedo") if run.startswith("oracle") else fitted
            d = diagnose(rec, truth, run, parts)
            base = data(d["loss_zero"])
            c, du, dv = d["shift"]
            feats = ", ".join(f"{k} {c_:.2f} / {g:.2f}" for k, (c_, g) in d["features"].items())
            lines.append(
                f"| {truth.name} | {run} | {d['held']:.3f} | {base - data(d['loss_truth']):.3f} / "
                f"{base - data(d['loss_solution']):.3f} | {prior(d['loss_truth']):.3f} / "
                f"{prior(d['loss_solution']):.3f} | {d['from_zero']['corr']:.3f} | "
                f"{d['from_truth']['corr']:.3f} "
                f"| {c:.3f} ({du:+.1f}, {dv:+.1f}) | {feats} |")
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
