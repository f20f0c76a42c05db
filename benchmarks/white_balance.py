"""White balance of the albedo (core.appearance.white_balance): calibration, synthetic truth, real photos.

    python benchmarks/white_balance.py calibrate   # cue offsets, spreads, skin locus on AFLW2000-3D dev
    python benchmarks/white_balance.py synthetic --set out/synthetic_wb  # Cycles heads, tinted lights
    python benchmarks/white_balance.py real        # deepface: same person, different photos
    python benchmarks/white_balance.py cues        # which cues work: light error, spread per cue set

``calibrate`` measures each cue's raw log chroma (linear RGB: log R/G, log B/G) on the 200 dev photos
(detection, segmentation and skin trust only): the sclera's and teeth's own colour is their median
over the photos (cameras are assumed to balance right on average), and the photo-to-photo spread
of each cue splits into the light's own spread (what all cues share: their cross-covariances)
and the cue's noise. The skin locus is the principal line of the skin chroma.

``synthetic`` runs the ``fast`` preset on heads rendered by ``scripts/make_synthetic_faces.py
--light-tint`` (one folder per tint, e.g. out/synthetic_wb/warm/<case>/) with and without the
correction, and compares the mean colour of the face albedo with ``truth.npz``'s (angle between
linear RGB vectors, and log-chroma distance) on the texels the photo coloured.

``real`` runs the ``fast`` preset per photo of ``../shared/faces/deepface`` (9 people) and reports
the spread of each person's mean trusted-skin albedo chroma over their photos, before (the
estimated light multiplied back into the same texels) and after, and the distance between people.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.appearance import white_balance as wb  # noqa: E402
from core.geometry.parts import srgb_to_linear  # noqa: E402
from core.pipeline import Pipeline, preset_settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCENE_SIGMA = 0.3  # log chroma: the scene cue's own uncertainty (what calibrate's spread suggests)
GREY_EDGE_P = 6


def scene_cue(linear: np.ndarray, person: np.ndarray) -> wb.Cue | None:
    """Grey-edge on the background (person probability < 0.2, away from the outline), at most 512
    pixels across: the Minkowski p-norm of each channel's gradient magnitude is grey on average."""
    scale = min(1.0, 512 / max(linear.shape[:2]))
    small = cv2.resize(linear.astype(np.float32), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    back = cv2.resize(person.astype(np.float32), small.shape[1::-1], interpolation=cv2.INTER_AREA) < 0.2
    back = cv2.erode(back.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    back &= cv2.erode((small.max(-1) < 0.95).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if back.sum() < 2000:
        return None
    smooth = cv2.GaussianBlur(small, (0, 0), 1.0)
    grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))[back]
    norm = np.mean(grad.astype(np.float64) ** GREY_EDGE_P, 0) ** (1 / GREY_EDGE_P)
    if norm.min() < 1e-3:  # a flat backdrop has no edges to tell
        return None
    return wb.Cue(wb.log_chroma(norm), np.eye(2) / SCENE_SIGMA ** 2, int(back.sum()))


def face_and_skin(pipeline: Pipeline, rgb: np.ndarray):
    """The largest detected face and its skin trust (None, None: no dense face)."""
    faces = [f for f in pipeline.detector.detect(rgb) if f.is_dense]
    if not faces:
        return None, None
    face = max(faces, key=lambda f: np.prod(f.box[2:] - f.box[:2]))
    return face, pipeline.skin_trust(rgb, face)


def raw_cues(pipeline: Pipeline, rgb: np.ndarray) -> dict | None:
    """Each cue's raw median log chroma on one photo (None: no dense face)."""
    face, skin = face_and_skin(pipeline, rgb)
    if face is None:
        return None
    linear = srgb_to_linear(rgb.astype(np.float32) / 255)
    face_chroma, _ = wb.skin_chroma(linear, skin)
    out = {} if face_chroma is None else {"skin": face_chroma}
    for name, pixels in (("sclera", wb.sclera_pixels(linear, face.landmarks)),
                         ("teeth", wb.teeth_pixels(linear, face.landmarks))):
        if len(pixels) >= wb.MIN_PIXELS[name]:
            out[name] = np.median(wb.log_chroma(pixels), 0)
    scene = scene_cue(linear, skin.person)
    if scene is not None:
        out["scene"] = scene.estimate
    return out


def calibrate(args) -> None:
    root = SHARED / "aflw2000-3d-dev"
    photos = sorted((root / "images").glob("*.jpg"))[: args.limit]
    pipeline = Pipeline()
    rows = []
    for path in photos:
        cues = raw_cues(pipeline, np.asarray(Image.open(path).convert("RGB")))
        if cues is not None:
            rows.append(cues)
    print(f"{len(rows)} of {len(photos)} photos with a dense face")
    skin = np.array([r["skin"] for r in rows if "skin" in r])
    centre = np.median(skin, 0)
    dev = skin - centre
    inliers = np.linalg.norm(dev, axis=1) < 3 * 1.4826 * np.median(np.linalg.norm(dev, axis=1))
    vals, vecs = np.linalg.eigh(np.cov(dev[inliers].T))
    direction = vecs[:, 1] * np.sign(vecs[0, 1])
    across = np.array([-direction[1], direction[0]])
    perp = dev @ across
    print(f"skin locus: {len(skin)} photos, mean {centre.round(3)}, direction {direction.round(3)}, "
          f"spread along {np.sqrt(vals[1]):.3f}, across (1.4826 MAD) {1.4826 * np.median(np.abs(perp)):.3f}")
    for name in ("sclera", "teeth", "scene"):
        have = [r for r in rows if name in r and "skin" in r]
        if len(have) < 5:
            print(f"{name}: {len(have)} photos, too few")
            continue
        values = np.array([r[name] for r in have])
        offset = np.median(values, 0)
        spread = 1.4826 * np.median(np.abs(values - offset), 0)
        # The light moves every cue alike: the part of this cue's spread across the skin locus that
        # the skin's own offset shares is the light's; the rest is the cue's noise.
        cue_perp = (values - offset) @ across
        skin_perp = (np.array([r["skin"] for r in have]) - centre) @ across
        shared = float(np.cov(cue_perp, skin_perp)[0, 1])
        print(f"{name}: {len(have)} photos, offset {offset.round(3)}, spread {spread.round(3)}, "
              f"across-locus var {np.var(cue_perp):.4f}, shared with skin {shared:.4f}, "
              f"corr {np.corrcoef(cue_perp, skin_perp)[0, 1]:.2f}")


def angular_error(a: np.ndarray, b: np.ndarray) -> float:
    """Degrees between two linear RGB vectors."""
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def face_colour(albedo8: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted mean linear RGB of the face tile (left half) of an albedo atlas."""
    size = albedo8.shape[0]
    lin = srgb_to_linear(albedo8[:, :size].astype(np.float64) / 255)
    w = weight[:, :size, None]
    return (lin * w).sum((0, 1)) / max(w.sum(), 1e-9)


def synthetic(args) -> None:
    from scipy.ndimage import zoom

    pipeline = Pipeline()
    results = []
    for path, tint, _ in synthetic_photos(Path(args.set)):
        truth = np.load(path.parent / "truth.npz")
        rgb = np.asarray(Image.open(path).convert("RGB"))
        row = {"tint": tint, "case": path.parent.name}
        for mode in ("off", "auto"):
            settings = preset_settings("fast", device="cpu")
            settings = replace(settings, texture=replace(settings.texture, white_balance=mode))
            start = time.perf_counter()
            rec = pipeline.run(rgb, settings)
            row[f"seconds_{mode}"] = time.perf_counter() - start
            size = rec.albedo.shape[0]
            truth_albedo = truth["albedo"]
            factor = size / truth_albedo.shape[0]
            truth_small = zoom(truth_albedo.astype(np.float32), (factor, factor, 1), order=1)
            truth_small = np.clip(truth_small, 0, 255)
            weight = (rec.albedo_trust > 0.5).astype(np.float64)
            got, want = face_colour(rec.albedo, weight), face_colour(truth_small, weight)
            row[f"angle_{mode}"] = angular_error(got, want)
            row[f"chroma_{mode}"] = float(np.linalg.norm(wb.log_chroma(got) - wb.log_chroma(want)))
            row[f"albedo_{mode}"] = wb.log_chroma(got).tolist()
            if mode == "auto":
                row.update({k: v for k, v in rec.metrics.items() if k.startswith("illuminant")})
        results.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    # Against the same head's albedo from the neutral render (white balance off): the tint alone,
    # without what no white balance can fix (the render's specular sheen, the sky's fill).
    reference = {r["case"]: np.array(r["albedo_off"]) for r in results if r["tint"] == "neutral"}
    print("| light | angle to truth, off -> auto (deg) | log-chroma error to truth, off -> auto |"
          " log-chroma distance to the neutral render's albedo, off -> auto | seconds off / auto |")
    print("|---|---|---|---|---|")
    for tint in sorted({r["tint"] for r in results}):
        rs = [r for r in results if r["tint"] == tint]
        mean = {key: np.mean([r[key] for r in rs]) for key in
                ("angle_off", "angle_auto", "chroma_off", "chroma_auto", "seconds_off", "seconds_auto")}
        drift = {mode: np.mean([np.linalg.norm(np.array(r[f"albedo_{mode}"]) - reference[r["case"]])
                                for r in rs if r["case"] in reference]) for mode in ("off", "auto")}
        print(f"| {tint} | {mean['angle_off']:.2f} -> {mean['angle_auto']:.2f} | {mean['chroma_off']:.3f} -> "
              f"{mean['chroma_auto']:.3f} | {drift['off']:.3f} -> {drift['auto']:.3f} | "
              f"{mean['seconds_off']:.1f} / {mean['seconds_auto']:.1f} |")


def real(args) -> None:
    root = SHARED / "faces" / "deepface"
    with open(root / "identities.csv") as f:
        people = [(row["file"], row["person"]) for row in csv.DictReader(f)]
    pipeline = Pipeline()
    settings = preset_settings("fast", device="cpu")
    rows = []
    for name, person in people[: args.limit]:
        rgb = np.asarray(Image.open(root / name).convert("RGB"))
        start = time.perf_counter()
        rec = pipeline.run(rgb, settings)
        seconds = time.perf_counter() - start
        light = np.array([rec.metrics.get(f"illuminant_{c}", 1.0) for c in "rgb"])
        weight = (rec.albedo_trust > 0.5).astype(np.float64)
        after = face_colour(rec.albedo, weight)
        before = after * light  # the same texels with the light's colour multiplied back (von Kries)
        rows.append({"file": name, "person": person, "before": wb.log_chroma(before),
                     "after": wb.log_chroma(after), "luma_before": float(before @ wb.LUMA),
                     "luma_after": float(after @ wb.LUMA), "seconds": seconds,
                     "confidence": rec.metrics.get("illuminant_confidence", 0.0),
                     "cues": sorted(k.split("_")[1] for k in rec.metrics if k.endswith("_pixels")
                                    and k.startswith("illuminant"))})
        print(name, person, rows[-1]["before"].round(3), "->", rows[-1]["after"].round(3),
              f"conf {rows[-1]['confidence']:.2f}", rows[-1]["cues"], f"{seconds:.1f} s", flush=True)
    report_real(rows)


def report_real(rows: list[dict]) -> None:
    for key in ("before", "after"):
        within, between = spreads(rows, key)
        tone = [{"person": r["person"], "tone": np.atleast_1d(r[key] @ wb.LOCUS_DIRECTION)} for r in rows]
        tone_within, tone_between = spreads(tone, "tone")
        print(f"{key}: within-person chroma spread (rms about the person's mean, mean over people) "
              f"{within:.4f}; between people (rms of pair distances) {between:.4f}; "
              f"ratio {between / within:.2f}; along the skin locus (tone): within {tone_within:.4f}, "
              f"between {tone_between:.4f}")
    luma = np.array([[r["luma_before"], r["luma_after"]] for r in rows])
    print(f"face albedo luminance after / before: median {np.median(luma[:, 1] / luma[:, 0]):.3f}, "
          f"range {np.min(luma[:, 1] / luma[:, 0]):.3f}-{np.max(luma[:, 1] / luma[:, 0]):.3f}; "
          f"fast run mean {np.mean([r['seconds'] for r in rows]):.1f} s")


def synthetic_photos(folder: Path) -> list[tuple[Path, str, np.ndarray]]:
    """(photo, tint name, tint) of every head of a set rendered with --light-tint."""
    out = []
    for tint in sorted(p for p in folder.iterdir() if p.is_dir()):
        for case in sorted(p for p in tint.iterdir() if (p / "truth.npz").exists()):
            recipe = json.loads((case / "case.json").read_text())
            out.append((case / "photo.png", tint.name, np.array(recipe["light_tint"])))
    return out


def cues(args) -> None:
    pipeline = Pipeline()
    root = SHARED / "faces" / "deepface"
    with open(root / "identities.csv") as f:
        photos = [(root / row["file"], row["person"], None) for row in csv.DictReader(f)]
    photos += synthetic_photos(Path(args.set))
    measured = []
    for path, label, tint in photos:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        face, skin = face_and_skin(pipeline, rgb)
        found = wb.measure_cues(rgb, face.landmarks, skin)
        linear = srgb_to_linear(rgb.astype(np.float32) / 255)
        scene = scene_cue(linear, skin.person)
        if scene is not None:
            found["scene"] = scene
        measured.append((label, tint, found, wb.skin_chroma(linear, skin)[0]))
    names = ("sclera", "teeth", "skin", "scene")
    print("| cues | synthetic light error (neutral / warm / cool / green) | deepface within-person spread |"
          " between people |")
    print("|---|---|---|---|")
    for k in range(0, len(names) + 1):
        for subset in itertools.combinations(names, k):
            if k > 1 and "skin" not in subset:
                continue  # the locus with each point cue, not every combination
            errors, real = {}, []
            for label, tint, found, skin_chroma in measured:
                light = np.log(wb.illuminant_from({n: c for n, c in found.items() if n in subset}).rgb)
                light = np.array([light[0] - light[1], light[2] - light[1]])
                if tint is None:
                    real.append({"person": label, "chroma": skin_chroma - light})
                else:
                    errors.setdefault(label, []).append(np.linalg.norm(light - wb.log_chroma(tint)))
            within, between = spreads(real, "chroma")
            syn = " / ".join(f"{np.mean(errors[t]):.3f}" for t in ("neutral", "warm", "cool", "green")
                             if t in errors)
            print(f"| {' + '.join(subset) or 'none'} | {syn} | {within:.4f} | {between:.4f} |")


def spreads(rows: list[dict], key: str) -> tuple[float, float]:
    """Mean over people of the rms distance of their photos' ``key`` to their mean, and the rms
    distance between people's means."""
    people = sorted({r["person"] for r in rows})
    within, means = [], []
    for person in people:
        values = np.array([r[key] for r in rows if r["person"] == person])
        means.append(values.mean(0))
        if len(values) > 1:
            within.append(np.sqrt(np.mean(np.sum((values - values.mean(0)) ** 2, 1))))
    means = np.array(means)
    between = np.sqrt(np.mean([np.sum((a - b) ** 2) for i, a in enumerate(means) for b in means[i + 1:]]))
    return float(np.mean(within)), float(between)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    cal = sub.add_parser("calibrate")
    cal.add_argument("--limit", type=int, default=200)
    syn = sub.add_parser("synthetic")
    syn.add_argument("--set", default="out/synthetic_wb")
    rl = sub.add_parser("real")
    rl.add_argument("--limit", type=int, default=None)
    cu = sub.add_parser("cues")
    cu.add_argument("--set", default="out/synthetic_wb")
    args = parser.parse_args()
    {"calibrate": calibrate, "synthetic": synthetic, "real": real, "cues": cues}[args.mode](args)


if __name__ == "__main__":
    main()
