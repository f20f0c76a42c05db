"""Build core/data/mediapipe_to_ict.npz: MediaPipe FaceMesh landmarks -> ICT-FaceKit surface points.

    python scripts/build_correspondence.py [--ict ICT-FaceKit-master.zip] [--mediapipe DIR] [--out NPZ]

Inputs: MediaPipe's face_geometry data folder (``--mediapipe``, default
``$LIKENESS_SHARED/mediapipe-face-geometry`` with ../shared as the shared folder when the variable is
unset) and the ICT-FaceKit archive (``--ict``, default: located by core.assets). Takes a few seconds.

Method
0. The canonical MediaPipe mesh *in landmark order* is the ``canonical_mesh`` of
   geometry_pipeline_metadata_landmarks.pbtxt (centimetres, y up, z towards the viewer). The shipped
   canonical_face_model.obj holds the same 468 landmarks (identical UVs) but in another vertex order
   and a different pose and scale (an old ModelIO export), so it is only checked against the pbtxt through
   its UVs and hashed; its vertex ids must not be read as landmark ids.
1. Similarity alignment (Umeyama) of the canonical mesh to the ICT neutral on the 51 inner iBUG-68 pairs
   (``core.geometry.correspondence.MP68`` -> ``FaceModel.landmarks68``; residuals are 2.5 mm median,
   < 5 mm max).
2. Jaw: iBUG jaw points slide along the outline, so the lower face-oval arc of MediaPipe
   (127 .. 152 .. 356) is matched to ICT's jaw landmark polyline (0 .. 8 .. 16) by normalised arc
   length on each side of the chin. The inner pairs plus these 23 jaw targets drive an interpolating
   thin-plate-spline warp of the aligned canonical mesh onto the ICT face.
3. Every warped landmark 0..467 goes to its closest point on the ICT face-region triangles (polygons
   [0:FACE_POLYGONS], fan-triangulated), found exactly by brute force: (3 vertex ids, barycentrics) and
   the distance, stored as ``residual_m`` (median ~0.6 mm, max ~3.6 mm).
4. Iris centres 468 (subject's right) and 473 (left): the front-most point where the eyeball's
   forward (+z) axis through its centre meets the iris half of the eyeball mesh. Residual 0 (the
   canonical mesh has no iris). The iris ring landmarks are left out.
5. Weights: 1 for inner points, 0.3 on the face oval (outline points that slide with pose), 0.5 for
   the iris centres (gaze moves them), times 1 / (1 + (residual / 3 mm)^2).
6. Mirror (``mp_mirror``, 478 ids): the landmark each landmark becomes in a mirrored photo, the canonical
   vertex nearest its x -> -x image (exact: the canonical mesh is symmetric) and, for the iris rings,
   the other eye's ring with its horizontal points swapped (``IRIS_MIRROR``, read off FaceMesh on a
   photo and its mirror image). core.fitting.detection averages a face with its mirror image's.
All steps are deterministic (no random sampling, no iterative solver with a tolerance).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.geometry.correspondence import (  # noqa: E402
    DATA_PATH,
    FACE_OVAL,
    IRIS_LEFT,
    IRIS_RIGHT,
    MP68,
    TABLE_VERSION,
)
from core.geometry.face_model import FACE_POLYGONS, FaceModel, load_face_model, triangulate  # noqa: E402

SCRIPT_VERSION = 2
CM_TO_M = 0.01
NUM_MESH_LANDMARKS = 468
OVAL_WEIGHT = 0.3
IRIS_WEIGHT = 0.5
RESIDUAL_SCALE_M = 0.003
# Iris halves of the eyeball regions (ICT "left" is the subject's left).
IRIS_VERTICES = {IRIS_LEFT: ("eyeball_left", 22221, 23021), IRIS_RIGHT: ("eyeball_right", 23791, 24591)}
# What the 10 iris landmarks 468-477 (per eye, subject's right first: the centre, then four ring points of
# which the 1st and 3rd lie on the horizontal) become in a mirrored photo.
IRIS_MIRROR = (473, 476, 475, 474, 477, 468, 471, 470, 469, 472)
PBTXT = "geometry_pipeline_metadata_landmarks.pbtxt"
OBJ = "canonical_face_model.obj"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_canonical(folder: Path) -> np.ndarray:
    """MediaPipe's canonical face mesh (468, 3) in metres, indexed by landmark id."""
    text = (folder / PBTXT).read_text()
    buffer = np.array(re.findall(r"vertex_buffer:\s*([-+\d.eE]+)", text), np.float64).reshape(-1, 5)
    if len(buffer) != NUM_MESH_LANDMARKS:
        raise ValueError(f"{PBTXT} has {len(buffer)} canonical vertices, expected {NUM_MESH_LANDMARKS}.")
    # Cross-check the OBJ: the same UV set (OBJ v axis flipped), one OBJ vertex per landmark.
    lines = (folder / OBJ).read_text().splitlines()
    obj_uv = np.array([line.split()[1:3] for line in lines if line.startswith("vt ")], np.float64)
    dist, match = cKDTree(obj_uv).query(np.c_[buffer[:, 3], 1.0 - buffer[:, 4]])
    if dist.max() > 1e-5 or len(np.unique(match)) != NUM_MESH_LANDMARKS:
        raise ValueError(f"{OBJ} and {PBTXT} do not describe the same 468 landmarks.")
    return buffer[:, :3] * CM_TO_M


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale, R, t) minimising |s R src + t - dst|^2."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


def _arc_fraction(points: np.ndarray) -> np.ndarray:
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    return arc / arc[-1]


def jaw_targets(aligned: np.ndarray, ict_jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower face-oval landmark ids and their targets on ICT's 17-point jaw polyline, matched by
    normalised arc length separately on each side of the chin (152 <-> iBUG 8)."""
    oval = list(FACE_OVAL)
    start, chin, stop = oval.index(MP68[0]), oval.index(MP68[8]), oval.index(MP68[16])
    # FACE_OVAL runs over the subject's left first, so the subject's right half is walked backwards.
    halves = [
        ([oval[i] for i in range(start, chin - 1, -1)], ict_jaw[:9]),
        ([oval[i] for i in range(chin, stop - 1, -1)], ict_jaw[8:]),
    ]
    ids, targets = [], []
    for chain, polyline in halves:
        f_ict = _arc_fraction(polyline)
        for landmark, f in zip(chain, _arc_fraction(aligned[chain]), strict=True):
            seg = min(int(np.searchsorted(f_ict, f, side="right")) - 1, len(polyline) - 2)
            u = (f - f_ict[seg]) / (f_ict[seg + 1] - f_ict[seg])
            ids.append(landmark)
            targets.append((1 - u) * polyline[seg] + u * polyline[seg + 1])
    ids, first = np.unique(ids, return_index=True)  # the chin closes both halves
    return ids, np.array(targets)[first]


def closest_barycentrics(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics (..., 3) of the closest point to p on triangles abc (broadcasting), following
    Ericson, Real-Time Collision Detection 5.1.5. Later region tests override earlier ones."""
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num, den):
        return num / np.where(den == 0, 1.0, den)

    total = va + vb + vc
    v, w = ratio(vb, total), ratio(vc, total)
    out = np.stack([1 - v - w, v, w], -1)

    def put(mask, bary):
        out[mask] = np.stack([np.broadcast_to(x, mask.shape) for x in bary], -1)[mask]

    t = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    put((va <= 0) & (d4 >= d3) & (d5 >= d6), (0.0, 1 - t, t))  # edge bc
    t = ratio(d2, d2 - d6)
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t, 0.0, t))  # edge ac
    t = ratio(d1, d1 - d3)
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t, t, 0.0))  # edge ab
    put((d6 >= 0) & (d5 <= d6), (0.0, 0.0, 1.0))  # vertex c
    put((d3 >= 0) & (d4 <= d3), (0.0, 1.0, 0.0))  # vertex b
    put((d1 <= 0) & (d2 <= 0), (1.0, 0.0, 0.0))  # vertex a
    return out


def closest_points(
    points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point: (index of the closest triangle, its barycentrics, the distance). Exact."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    tri = np.empty(len(points), np.int64)
    bary = np.empty((len(points), 3))
    dist = np.empty(len(points))
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk, None, :]
        w = closest_barycentrics(p, a, b, c)
        q = w[..., :1] * a + w[..., 1:2] * b + w[..., 2:] * c
        d = np.linalg.norm(q - p, axis=-1)
        best = d.argmin(1)
        rows = np.arange(len(best))
        tri[s : s + chunk], bary[s : s + chunk], dist[s : s + chunk] = best, w[rows, best], d[rows, best]
    return tri, bary, dist


def iris_centre(
    vertices: np.ndarray, triangles: np.ndarray, region: tuple[int, int], iris: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(triangle vertex ids, barycentrics) of the front-most hit of the eyeball's +z axis on the iris."""
    lo, hi = region
    centre = (vertices[lo:hi].min(0) + vertices[lo:hi].max(0)) / 2
    tris = triangles[np.all((triangles >= iris[0]) & (triangles < iris[1]), axis=1)]
    a, b, c = (vertices[tris[:, k], :2] for k in range(3))
    # 2D barycentrics of the axis (x, y) in each triangle's xy projection.
    e1, e2, q = b - a, c - a, centre[:2] - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    safe = np.where(det == 0, 1.0, det)
    v = (q[:, 0] * e2[:, 1] - q[:, 1] * e2[:, 0]) / safe
    w = (e1[:, 0] * q[:, 1] - e1[:, 1] * q[:, 0]) / safe
    bary = np.stack([1 - v - w, v, w], -1)
    hit = (det != 0) & np.all(bary >= -1e-9, axis=1)
    if not hit.any():
        raise ValueError("The eyeball axis misses the ICT iris mesh.")
    z = (vertices[tris, 2] * bary).sum(1)
    best = np.flatnonzero(hit)[np.argmax(z[hit])]
    return tris[best], bary[best]


def mirror_permutation(canonical: np.ndarray) -> np.ndarray:
    """(478,) the landmark each of the 478 becomes when the face is mirrored."""
    dist, mirror = cKDTree(canonical).query(canonical * [-1.0, 1.0, 1.0])
    if dist.max() > 1e-6 or np.any(mirror[mirror] != np.arange(len(mirror))):
        raise ValueError(f"{PBTXT}'s canonical mesh is not left/right symmetric.")
    return np.concatenate([mirror, IRIS_MIRROR])


def build(model: FaceModel, mediapipe_dir: Path) -> dict[str, np.ndarray]:
    """The correspondence table and its metadata, as the arrays saved to the .npz."""
    canonical = load_canonical(mediapipe_dir)
    ict = model.neutral.astype(np.float64)
    inner = np.arange(17, 68)
    scale, rot, shift = umeyama(canonical[MP68[inner]], ict[model.landmarks68[inner]])
    aligned = scale * canonical @ rot.T + shift

    jaw_ids, jaw_xyz = jaw_targets(aligned, ict[model.landmarks68[:17]])
    controls = np.concatenate([MP68[inner], jaw_ids])
    targets = np.concatenate([ict[model.landmarks68[inner]], jaw_xyz])
    warped = RBFInterpolator(aligned[controls], targets, kernel="thin_plate_spline")(aligned)

    face_tris = model.triangles(FACE_POLYGONS)[0]
    tri, bary, residual = closest_points(warped, ict, face_tris)
    tri_vertices = face_tris[tri]

    all_tris = triangulate(model.polygons)
    iris_rows = [iris_centre(ict, all_tris, model.regions[name], (lo, hi))
                 for name, lo, hi in (IRIS_VERTICES[i] for i in (IRIS_RIGHT, IRIS_LEFT))]
    mp_index = np.concatenate([np.arange(NUM_MESH_LANDMARKS), [IRIS_RIGHT, IRIS_LEFT]])
    tri_vertices = np.concatenate([tri_vertices, [t for t, _ in iris_rows]])
    bary = np.concatenate([bary, [b for _, b in iris_rows]])
    residual = np.concatenate([residual, [0.0, 0.0]])

    weight = np.ones(len(mp_index))
    weight[np.isin(mp_index, FACE_OVAL)] = OVAL_WEIGHT
    weight[NUM_MESH_LANDMARKS:] = IRIS_WEIGHT
    weight /= 1 + (residual / RESIDUAL_SCALE_M) ** 2
    return {
        "version": np.array(TABLE_VERSION),
        "script_version": np.array(SCRIPT_VERSION),
        "mp_index": mp_index.astype(np.int32),
        "tri_vertices": tri_vertices.astype(np.int32),
        "bary": bary.astype(np.float32),
        "residual_m": residual.astype(np.float32),
        "weight": weight.astype(np.float32),
        "mp68": MP68.astype(np.int32),
        "mp_mirror": mirror_permutation(canonical).astype(np.int32),
        "canonical_obj_sha256": np.array(sha256(mediapipe_dir / OBJ)),
        "canonical_pbtxt_sha256": np.array(sha256(mediapipe_dir / PBTXT)),
        "ict_neutral_sha256": np.array(hashlib.sha256(model.neutral.astype("<f4").tobytes()).hexdigest()),
        "alignment_scale": np.array(scale),
    }


def save(table: dict[str, np.ndarray], out: Path) -> None:
    from core.output.export import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **table)


def summary(table: dict[str, np.ndarray]) -> str:
    face = table["mp_index"] < NUM_MESH_LANDMARKS
    mm = table["residual_m"][face] * 1000
    return (
        f"{len(table['mp_index'])} rows; residual mm median {np.median(mm):.2f}, "
        f"p90 {np.percentile(mm, 90):.2f}, max {mm.max():.2f} (landmark {int(np.argmax(mm))}); "
        f"similarity scale {float(table['alignment_scale']):.4f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, default=None, help="ICT-FaceKit zip or folder")
    shared = Path(os.environ.get("LIKENESS_SHARED", REPO.parent / "shared"))
    parser.add_argument("--mediapipe", type=Path, default=shared / "mediapipe-face-geometry")
    parser.add_argument("--out", type=Path, default=DATA_PATH)
    args = parser.parse_args(argv)
    table = build(load_face_model(args.ict), args.mediapipe)
    save(table, args.out)
    print(f"wrote {args.out}: {summary(table)}")


if __name__ == "__main__":
    main()
