"""Mid-frequency detail: held-out photometric error, ablations, band energy, timings, images.

For each photo the head is fitted once (preset ``quality`` without detail). Then, per ablation,
the detail is optimised with a checkerboard of face pixels held out of every data term
(``DetailSettings.holdout``) and the photometric error on those held-out pixels is compared between
the coarse render (displacement 0) and the detailed one. Both use the same skin-smoothed albedo and
fitted light, so the difference is the geometry's. Also reported: how the displacement map's
energy splits over low / mid / high radial bands of its FFT (mid-frequency detail should dominate,
texel noise should not), time per iteration and per photo (``add_detail`` as the pipeline runs it,
no hold-out), and an image per photo: photo | coarse mesh shaded | detailed mesh shaded.

    python benchmarks/detail_ablation.py [--photos vd092.png 015259.jpg ...] [--iterations N]
        [--images 3] [--out docs]

Prints a markdown table for docs/BENCHMARKS.md. CLIP runs with the settings' model; without
``--clip-pretrained`` its weights are random (pretrained=None), which the table states.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.displacement import detail as D  # noqa: E402
from core.displacement.clip_features import ClipSettings  # noqa: E402
from core.geometry.rendering import select_device  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

DEFAULT_PHOTOS = ("vd092.png", "015259.jpg", "JianzhuGuo.jpg", "000006.jpg", "sample_2.jpg")
ABLATIONS = {
    "full": {},
    "no CLIP": {"clip_weight": 0.0},
    "no frequency": {"frequency_weight": 0.0},
    "photometric only": {"clip_weight": 0.0, "frequency_weight": 0.0, "smoothness_weight": 0.0,
                         "magnitude_weight": 0.0, "symmetry_weight": 0.0},
}
# Radial bands of the displacement map's spectrum, by period in texels of the (R, R) map.
BANDS_TEXELS = {"low": (32, np.inf), "mid": (4, 32), "high": (0, 4)}
IMAGE_SIZE = 384


def band_energy(displacement: np.ndarray, island: np.ndarray) -> dict[str, float]:
    """Fraction of the (non-DC) spectral energy of the masked map in each of BANDS_TEXELS."""
    spectrum = np.abs(np.fft.fft2(displacement * island)) ** 2
    fy = np.fft.fftfreq(displacement.shape[0])[:, None]
    fx = np.fft.fftfreq(displacement.shape[1])[None, :]
    radius = np.hypot(fy, fx)  # cycles per texel
    period = np.where(radius > 0, 1 / np.maximum(radius, 1e-12), np.inf)
    total = spectrum[radius > 0].sum() + 1e-30
    return {name: float(spectrum[(radius > 0) & (period >= lo) & (period < hi)].sum() / total)
            for name, (lo, hi) in BANDS_TEXELS.items()}


def light() -> torch.Tensor:
    """SH of a white light from the upper left front (camera axes: y down, the camera looks +z)."""
    sh = torch.zeros(9, 3)
    direction = torch.tensor([-0.35, -0.5, -0.8])
    sh[0] = 0.75 / 0.886
    sh[1:4] = 0.55 * (direction / direction.norm())[:, None]
    return sh


def shaded_row(rec, objective: D.DetailObjective, result: D.DetailResult, device: torch.device) -> np.ndarray:
    """photo | coarse shaded | detailed shaded, grey albedo, one light, IMAGE_SIZE px each."""
    scene = D.DetailScene(rec, objective.mesh, IMAGE_SIZE, device)
    grey = torch.full((4, 8, 3), 0.8, device=device)
    sh = light().to(device)
    with torch.no_grad():
        zero = torch.zeros(len(scene.positions), device=device)
        detailed = torch.from_numpy(result.vertex_displacement_mm).to(device)
        coarse_img = scene.render(zero, grey, sh).image
        detail_img = scene.render(detailed, grey, sh).image
    panels = [scene.photo, coarse_img, detail_img]
    row = torch.cat([p.clamp(0, 1) for p in panels], dim=1).cpu().numpy()
    return (row * 255 + 0.5).astype(np.uint8)


def run_photo(pipeline: Pipeline, path: Path, base: D.DetailSettings, device: torch.device,
              extractor, image_dir: Path | None) -> list[dict]:
    start = time.perf_counter()
    rec = pipeline.run(path, preset_settings("quality", detail=False, device=base.device))
    fit_seconds = time.perf_counter() - start
    rows = []
    for name, overrides in ABLATIONS.items():
        settings = replace(base, holdout=True, **overrides)
        start = time.perf_counter()
        objective = D.DetailObjective(rec, settings, extractor if settings.clip_weight > 0 else None, device)
        coarse = objective.held_out_error(None)
        result = D.optimise_detail(objective)
        detailed = objective.held_out_error(result.params)
        seconds = time.perf_counter() - start
        bands = band_energy(result.displacement_mm, objective.island[0, 0].cpu().numpy())
        rows.append({"photo": path.name, "ablation": name, "coarse": coarse, "detailed": detailed,
                     "change": 100 * (detailed - coarse) / coarse, "rms_mm": result.metrics["detail_rms_mm"],
                     "per_iteration": result.metrics["detail_seconds_per_iteration"], "seconds": seconds,
                     **bands})
        print(f"  {name:17s} held-out {coarse:.5f} -> {detailed:.5f} ({rows[-1]['change']:+.1f}%), "
              f"rms {rows[-1]['rms_mm']:.2f} mm, bands L/M/H {bands['low']:.2f}/{bands['mid']:.2f}/"
              f"{bands['high']:.2f}, {rows[-1]['per_iteration']:.2f} s/it, {seconds:.1f} s", flush=True)

    # As the pipeline runs it (no hold-out): time per photo, and the images.
    rec.warnings, rec.detail = [], None
    start = time.perf_counter()
    objective = D.DetailObjective(rec, base, extractor, device)
    result = D.optimise_detail(objective)
    rec.detail = D.detail_maps(rec, objective, result, base.strength)
    detail_seconds = time.perf_counter() - start
    print(f"  production detail {detail_seconds:.1f} s ({result.metrics['detail_seconds_per_iteration']:.2f} "
          f"s/it), fit {fit_seconds:.1f} s", flush=True)
    for row in rows:
        row.update(fit_seconds=fit_seconds, detail_seconds=detail_seconds)
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(shaded_row(rec, objective, result, device))
        image.save(image_dir / f"detail_{path.stem}.png")
    return rows


def markdown(rows: list[dict], settings: D.DetailSettings, pretrained: bool, threads: int) -> str:
    every = D.clip_interval(settings, select_device(settings.device))
    lines = [
        f"Detail ablation: {len({r['photo'] for r in rows})} photos, {settings.iterations} iterations, "
        f"map {settings.resolution}^2, render {settings.render_resolution}^2, subdivision "
        f"{settings.subdivision}, CLIP {settings.clip.model_name} every {every} iterations, "
        f"{threads} CPU threads, load average {os.getloadavg()[1]:.1f} (others' jobs share the machine).",
        "",
        "CLIP weights: " + ("pretrained." if pretrained else
                            "**random (pretrained=None): no weights in this sandbox, so the CLIP term here "
                            "is not CLIP guidance in any meaningful sense.**"),
        "",
        "Held-out error: photometric loss (robust L2 of RGB in [0, 1]) on the held-out checkerboard "
        "squares of face skin, coarse render vs detailed render (same albedo and light). Bands: share "
        "of the displacement map's spectral energy with periods > 32 texels (low), 4-32 (mid), < 4 "
        "(high, texel noise).",
        "",
        "| ablation | held-out coarse | held-out detailed | change | rms mm | low | mid | high | s/iter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ABLATIONS:
        sel = [r for r in rows if r["ablation"] == name]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in
                ("coarse", "detailed", "change", "rms_mm", "low", "mid", "high", "per_iteration")}
        lines.append(f"| {name} | {mean['coarse']:.5f} | {mean['detailed']:.5f} | {mean['change']:+.1f}% | "
                     f"{mean['rms_mm']:.2f} | {mean['low']:.2f} | {mean['mid']:.2f} | {mean['high']:.2f} | "
                     f"{mean['per_iteration']:.2f} |")
    lines += ["", "| photo | full: change | no CLIP | no frequency | photometric only | fit s | detail s |",
              "|---|---|---|---|---|---|---|"]
    for photo in dict.fromkeys(r["photo"] for r in rows):
        sel = {r["ablation"]: r for r in rows if r["photo"] == photo}
        changes = " | ".join(f"{sel[name]['change']:+.1f}%" for name in ABLATIONS)
        first = next(iter(sel.values()))
        lines.append(f"| {photo} | {changes} | {first['fit_seconds']:.1f} | {first['detail_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared" / "faces")
    parser.add_argument("--photos", nargs="+", default=list(DEFAULT_PHOTOS))
    parser.add_argument("--iterations", type=int, default=D.DetailSettings.iterations)
    parser.add_argument("--clip-pretrained", default=None, help="open_clip tag or checkpoint; default random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=3, help="write docs/detail_<photo>.png for the first N")
    parser.add_argument("--out", type=Path, default=repo / "docs")
    args = parser.parse_args()

    device = select_device(args.device)
    base = D.DetailSettings(iterations=args.iterations, device=args.device,
                            clip=ClipSettings(pretrained=args.clip_pretrained))
    extractor = D.clip_extractor(base)
    pipeline = Pipeline()
    rows = []
    for i, name in enumerate(args.photos):
        path = next(iter(sorted(args.faces.rglob(name))), None)
        if path is None:
            print(f"{name}: not found under {args.faces}")
            continue
        print(path.name, flush=True)
        rows += run_photo(pipeline, path, base, device, extractor, args.out if i < args.images else None)
    print()
    print(markdown(rows, base, extractor.pretrained, torch.get_num_threads()))


if __name__ == "__main__":
    main()
