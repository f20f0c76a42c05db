"""Detail against the truth: the synthetic set of scripts/make_synthetic_faces.py through the pipeline.

    python scripts/make_synthetic_faces.py --output out/synthetic          # once (Cycles, ~1 min a head)
    python benchmarks/synthetic_detail.py --set out/synthetic [--runs photometric clip oracle_geometry
        oracle_albedo] [--images 3] [--out docs]

Per head the pipeline fits the photo (preset ``quality`` without detail), then the detail stage
runs in each configuration of ``--runs``:
- ``photometric`` / ``clip``: the guidance modes as the pipeline runs them (clip with the weights
  of ``--clip-pretrained`` or ``LIKENESS_CLIP_CHECKPOINT``; random weights when there are none,
  which the table says);
- ``oracle_geometry``: detail on the true identity, expression, pose and camera, with the light
  least-squares fitted to the photo through the true albedo (what a perfect coarse fit hands it);
- ``oracle_albedo``: the same and the true albedo instead of the fitted one.

Measures on the face UV tile (texels the fitted camera sees, >= 1 cm inside the face region):
``mid`` is the map band-passed between 0.6 mm and 6 mm (Gaussian sigmas: the low band is what the
coarse fit explains, or fails to); RMSE of recovered minus true mid band (mm); correlation of the
mid bands; false detail: mean squared recovered mid band where the truth is flat, and at the
albedo-only marks (freckles, moles, blotches, stubble, make-up), over the mean squared true mid
band on the folds; normal error: mean angle between the recovered and the true tangent-space
normal maps. ``coarse`` is the fit without detail (a zero map).

The fitted surface does not put each face-tile texel where the true head has it (registration:
1-5 mm on these fits), and a map on the fitted head is right where it matches what that head shows
in the photo. ``carried truth`` is that map: at each texel the truth of the point the true head
shows in the photo pixel where the fit puts the texel, i.e. what a perfect detail stage could
recover on the fitted surface; its correlation with the truth is the ceiling the fit sets. "corr on
fit" correlates each run's mid band with the carried truth's (for the oracles, whose surface is the
true one, with the truth's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.interpolate import griddata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.appearance.texture import build_texture, fit_sh, uv_surface  # noqa: E402
from core.displacement import detail as D  # noqa: E402
from core.displacement.clip_features import ClipSettings  # noqa: E402
from core.geometry.params import Camera, FaceParams  # noqa: E402
from core.geometry.rendering import interpolate_corners, vertex_normals  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

MM_PER_UV = 240.0  # as scripts/make_synthetic_faces.py
BAND_MM = (0.6, 6.0)
RUNS = ("photometric", "clip", "oracle_geometry", "oracle_albedo")
CARRY_RESOLUTION = 512  # side of the face crop through which the truth is carried to the fit


@dataclass
class Truth:
    name: str
    photo: Path
    displacement_mm: np.ndarray  # (N, N) face tile
    normal_map: np.ndarray  # (N, N, 3) uint8
    folds: np.ndarray  # (N, N) bool
    marks: np.ndarray
    island: np.ndarray
    albedo: np.ndarray  # (S, 2S, 3) uint8
    params: FaceParams


def load_truth(folder: Path) -> Truth:
    t = np.load(folder / "truth.npz")
    focal, cx, cy, w, h = t["camera"]
    params = FaceParams(t["identity"], t["expression"], t["rotation"], t["translation"],
                        Camera(float(focal), float(cx), float(cy), int(w), int(h)))
    return Truth(folder.name, folder / "photo.png", t["displacement_mm"], t["normal_map"], t["folds"],
                 t["marks"], t["island"], t["albedo"], params)


# --------------------------------------------------------------------------------------------
# Measures


def band(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mid band of a face-tile map: normalised Gaussian blurs over ``mask`` (no edge leakage)."""
    texel_mm = MM_PER_UV / values.shape[0]
    m = mask.astype(np.float64)

    def blur(sigma_mm):
        s = sigma_mm / texel_mm
        return (cv2.GaussianBlur(values * m, (0, 0), s) / np.maximum(cv2.GaussianBlur(m, (0, 0), s), 1e-6))

    return (blur(BAND_MM[0]) - blur(BAND_MM[1])) * m


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a.astype(np.float64) / 127.5 - 1
    nb = b.astype(np.float64) / 127.5 - 1
    na /= np.linalg.norm(na, axis=-1, keepdims=True)
    nb /= np.linalg.norm(nb, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((na * nb).sum(-1), -1, 1)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-9 and b.std() > 1e-9 else 0.0


def measure(recovered_mm: np.ndarray, truth: Truth, region: np.ndarray, metres: np.ndarray,
            carried: np.ndarray | None = None) -> dict[str, float]:
    """The module docstring's measures of a recovered face-tile map (N, N) in mm; ``carried``: the
    carried truth (NaN where undefined) for "corr on fit", None for a map on the true surface."""
    rec_mid, true_mid = band(recovered_mm, truth.island), band(truth.displacement_mm, truth.island)
    r, t = rec_mid[region], true_mid[region]
    corr_fit = corr = correlation(r, t)
    if carried is not None:
        defined = region & np.isfinite(carried)
        carried_mid = band(np.nan_to_num(carried), truth.island & np.isfinite(carried))
        corr_fit = correlation(rec_mid[defined], carried_mid[defined])
    fold_energy = float(np.mean(true_mid[region & truth.folds] ** 2))
    near_fold = cv2.dilate(truth.folds.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    flat = region & ~near_fold & ~truth.marks & (np.abs(true_mid) < 0.02)
    marks = region & truth.marks
    normals = D.bake_normal_map(recovered_mm, metres)
    return {
        "rmse_mm": float(np.sqrt(np.mean((r - t) ** 2))),
        "corr": corr,
        "corr_fit": corr_fit,
        "false_flat": float(np.mean(rec_mid[flat] ** 2)) / fold_energy,
        "false_marks": float(np.mean(rec_mid[marks] ** 2)) / fold_energy,
        "normal_deg": float(np.mean(angles_deg(normals, truth.normal_map)[region])),
        "rms_mm": float(np.sqrt(np.mean(recovered_mm[region] ** 2))),
    }


def face_region(rec, truth: Truth) -> np.ndarray:
    """Face-tile texels seen by the fitted camera, >= 1 cm inside the face region."""
    n = truth.island.shape[0]
    size = rec.albedo.shape[0]
    seen = cv2.resize(rec.albedo_visibility[:, :size], (n, n), interpolation=cv2.INTER_AREA) > 0.5
    inner = cv2.erode(truth.island.astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=int(round(10 / (MM_PER_UV / n)))) > 0
    return seen & inner


def tile_uv_image(rec, params: FaceParams, vertices: np.ndarray, mesh: D.DenseFaceMesh) -> np.ndarray:
    """Face-tile uv (H, W, 2) of each pixel of the detail stage's face crop of ``rec``'s photo, seen
    with ``params`` and ``vertices`` (NaN off the face)."""
    scene = D.DetailScene(replace(rec, params=params, vertices=vertices), mesh, CARRY_RESOLUTION,
                          torch.device("cpu"))
    frags = scene.render(torch.zeros(len(mesh.uvs))).fragments
    uv = interpolate_corners(frags, scene.uv_corners).numpy() * np.array([2.0, 1.0])
    return np.where(frags.mask.numpy()[..., None], uv, np.nan)


def carried_truth(fitted, truth: Truth, mesh: D.DenseFaceMesh) -> np.ndarray:
    """The module docstring's carried truth (N, N) in mm, NaN where the photo does not show the
    fitted texel on the true head."""
    true_vertices = fitted.model.vertices(truth.params.identity, truth.params.expression)
    fit_uv = tile_uv_image(fitted, fitted.params, fitted.vertices, mesh)
    true_uv = tile_uv_image(fitted, truth.params, true_vertices.astype(np.float32), mesh)
    both = np.isfinite(fit_uv[..., 0]) & np.isfinite(true_uv[..., 0])
    n = truth.displacement_mm.shape[0]
    centres = (np.arange(n) + 0.5) / n
    texels = np.stack(np.meshgrid(centres, 1 - centres, indexing="xy"), -1).reshape(-1, 2)
    source = griddata(fit_uv[both], true_uv[both], texels, method="linear").reshape(n, n, 2)
    x, y = source[..., 0] * n - 0.5, (1 - source[..., 1]) * n - 0.5
    values = cv2.remap(truth.displacement_mm.astype(np.float32), np.nan_to_num(x).astype(np.float32),
                       np.nan_to_num(y).astype(np.float32), cv2.INTER_LINEAR)
    return np.where(np.isfinite(x), values, np.nan)


def texel_metres(rec, n: int) -> np.ndarray:
    face_id, _ = D.face_tile(rec.model, n)
    return D.atlas_metres(rec.vertices, rec.model, face_id)[:, :n]


# --------------------------------------------------------------------------------------------
# Runs


def oracle_rec(fitted, truth: Truth, true_albedo: bool):
    """``fitted`` with the true geometry, pose and camera, light fitted through the true albedo
    (and with ``true_albedo`` that albedo instead of the photo's de-lit one)."""
    model, params = fitted.model, truth.params.copy()
    size = fitted.albedo.shape[0]
    tex = build_texture(model, fitted.image, params, size)  # sh = 0: observed colours and visibility
    verts = model.vertices(params.identity, params.expression).astype(np.float64)
    surface = uv_surface(model, size)
    normals = vertex_normals(torch.from_numpy(params.to_camera(verts)),
                             torch.from_numpy(surface.faces)).numpy()
    normals = surface.interpolate(normals)
    albedo = cv2.resize(truth.albedo, (2 * size, size), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    seen = tex.visibility > 0.5
    n = normals[seen] / np.linalg.norm(normals[seen], axis=1, keepdims=True)
    params.sh = fit_sh(tex.observed[seen] / np.maximum(albedo[seen], 0.05), n, tex.visibility[seen])
    texture = build_texture(model, fitted.image, params, size)
    rec = replace(fitted, params=params, coarse_params=params, vertices=verts.astype(np.float32),
                  identity_vertices=model.vertices(params.identity),
                  albedo=(albedo * 255 + 0.5).astype(np.uint8) if true_albedo else texture.albedo,
                  albedo_visibility=texture.visibility,
                  landmarks68_2d=params.project(verts[model.landmarks68]), metrics={}, warnings=[],
                  detail=None)
    return rec


def run_detail(rec, mode: str, base: D.DetailSettings, extractor) -> tuple[np.ndarray, float]:
    """Face-tile displacement (S, S) mm as the pipeline makes it, and the seconds it took."""
    rec = replace(rec, metrics={}, warnings=[], detail=None, timings={})
    settings = replace(base, guidance="clip" if mode == "clip" else "photometric",
                       use_albedo=mode == "oracle_albedo")
    start = time.perf_counter()
    D.add_detail(rec, settings, extractor=extractor if mode == "clip" else None)
    seconds = time.perf_counter() - start
    size = rec.albedo.shape[0]
    return rec.detail.displacement_mm[:, :size], seconds


def head_image(truth: Truth, recovered: np.ndarray, metres: np.ndarray, region: np.ndarray) -> np.ndarray:
    """true displacement | recovered | true normal map | recovered normal map (face tile)."""
    n = truth.displacement_mm.shape[0]

    def grey(mm):
        return np.repeat(np.clip(128 + 255 * mm / 2.0, 0, 255).astype(np.uint8)[..., None], 3, -1)

    shade_mask = region[..., None]
    panels = [grey(truth.displacement_mm), grey(recovered), truth.normal_map,
              D.bake_normal_map(recovered, metres)]
    panels = [np.where(shade_mask, p, p // 3) for p in panels]
    row = np.concatenate(panels, axis=1)
    return cv2.resize(row, (4 * n // 2, n // 2), interpolation=cv2.INTER_AREA)


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=repo / "out" / "synthetic")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--clip-pretrained", default=None, help="open_clip tag or checkpoint; default random")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for synthetic_<head>.png")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = D.DetailSettings.from_pipeline(preset_settings("quality", device="cpu"))
    base = replace(base, clip=ClipSettings(pretrained=args.clip_pretrained))
    extractor = D.clip_extractor(base) if "clip" in args.runs else None
    pipeline = Pipeline()
    mesh = D.dense_face_mesh(pipeline.model, base.subdivision, base.falloff_width)
    rows = []
    folders = sorted(p.parent for p in args.set.glob("*/truth.npz"))
    folders = [f for f in folders if not args.only or f.name in args.only]
    for i, folder in enumerate(folders):
        truth = load_truth(folder)
        start = time.perf_counter()
        fitted = pipeline.run(truth.photo, preset_settings("quality", detail=False, device="cpu"))
        fit_seconds = time.perf_counter() - start
        n = truth.displacement_mm.shape[0]
        region = face_region(fitted, truth)
        metres = texel_metres(fitted, n)
        carried = carried_truth(fitted, truth, mesh)
        rows.append({"head": truth.name, "run": "coarse", **measure(np.zeros((n, n)), truth, region, metres),
                     "seconds": fit_seconds})
        print(f"{truth.name}: fit {fit_seconds:.1f} s; coarse {rows[-1]}", flush=True)
        rows.append({"head": truth.name, "run": "carried truth",
                     **measure(np.nan_to_num(carried), truth, region, metres, carried), "seconds": 0.0})
        for run in args.runs:
            oracle = run.startswith("oracle")
            rec = oracle_rec(fitted, truth, run == "oracle_albedo") if oracle else fitted
            disp, seconds = run_detail(rec, run, base, extractor)
            disp = cv2.resize(disp, (n, n), interpolation=cv2.INTER_AREA)
            rows.append({"head": truth.name, "run": run, "seconds": seconds,
                         **measure(disp, truth, region, metres, None if oracle else carried)})
            print(f"  {run:16s} " + " ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()
                                                if isinstance(v, float)), flush=True)
            if run == "photometric" and args.out is not None and i < args.images:
                args.out.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.out / f"synthetic_{truth.name}.png"),
                            head_image(truth, disp, metres, region)[..., ::-1])
    print()
    print(markdown(rows, extractor))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def markdown(rows: list[dict], extractor) -> str:
    keys = ("rmse_mm", "corr", "corr_fit", "false_flat", "false_marks", "normal_deg", "rms_mm", "seconds")
    clip = "none" if extractor is None else extractor.weights_source
    heads = len({r["head"] for r in rows})
    lines = [f"{heads} synthetic heads, {os.cpu_count()} CPU cores; CLIP weights: {clip}",
             "", "| run | mid-band RMSE mm | mid-band corr | corr on fit | false detail flat | "
             "false detail marks | normal error deg | rms mm | s |", "|---|---|---|---|---|---|---|---|---|"]
    for run in dict.fromkeys(r["run"] for r in rows):
        sel = [r for r in rows if r["run"] == run]
        lines.append(f"| {run} | " + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" for k in keys) + " |")
    lines += ["", "| head | " + " | ".join(dict.fromkeys(r["run"] for r in rows)) + " |",
              "|---" * (1 + len({r["run"] for r in rows})) + "|"]
    for head in dict.fromkeys(r["head"] for r in rows):
        cells = [f"{r['corr']:.2f} / {r['false_marks']:.2f} / {r['normal_deg']:.2f}"
                 for r in rows if r["head"] == head]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Per head: mid-band corr / false detail at marks / normal error (deg).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
