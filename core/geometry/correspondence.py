"""MediaPipe FaceMesh landmarks <-> points on the ICT-FaceKit surface.

Each MediaPipe landmark that we use is tied to a fixed point of the ICT mesh, stored as a
triangle (three vertex ids) and barycentric weights, so the point follows identity and expression
changes. The table is built offline by ``scripts/build_correspondence.py`` (method in its
docstring) and shipped as ``core/data/mediapipe_to_ict.npz``.

Rows: the 468 FaceMesh landmarks (0..467) on the face region, then the iris centres 468 (the
subject's right eye) and 473 (the subject's left eye) on the ICT iris surfaces. The iris ring
landmarks 469..472 and 474..477 have no row.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AssetError

DATA_PATH = Path(__file__).parents[1] / "data" / "mediapipe_to_ict.npz"
TABLE_VERSION = 2
# The 68 iBUG landmarks as photos are annotated (3D-consistent, AFLW2000-3D's convention), chosen on
# the ICT surface by benchmarks/landmark_convention.py; ICT's own 68 (FaceModel.landmarks68) put the
# jaw 12-23 mm further back, so a turned face's read-out jaw is off whatever the fit.
ANNOTATED68_PATH = Path(__file__).parents[1] / "data" / "annotated_landmarks68.json"

# MediaPipe's FACEMESH_FACE_OVAL as one closed loop (forehead top, then the subject's left side
# down to the chin and back up the right side): the outer boundary of the canonical mesh. These
# points follow the visible outline of the face, so they slide over the 3D surface with pose.
FACE_OVAL = np.array([
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
], np.int32)

# The MediaPipe landmark that stands for each iBUG-68 point (0-based iBUG order; "right" is the
# subject's right, the image's left). The inner points (17..67) are the usual table, with the
# nose (29, 31, 35) and lip (55, 59, 61, 63, 65, 67) entries that sit closest to ICT-FaceKit's own
# iBUG landmarks; the jaw (0..16) picks the face-oval landmarks at matching arc-length positions.
MP68 = np.array([
    127, 234, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107,  # right brow, outer to inner
    336, 296, 334, 293, 300,  # left brow, inner to outer
    168, 197, 195, 4,  # nose bridge, top to tip
    98, 97, 2, 326, 327,  # nostrils, right to left
    33, 160, 158, 133, 153, 144,  # right eye, from the outer corner over the upper lid
    362, 385, 387, 263, 373, 380,  # left eye, from the inner corner over the upper lid
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,  # outer lips, from the right corner
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips, from the right corner
], np.int32)

IRIS_RIGHT = 468  # the subject's right iris centre (near landmarks 33/133)
IRIS_LEFT = 473


@dataclass(frozen=True)
class Correspondence:
    """N MediaPipe landmarks and their ICT surface points. The arrays may be numpy or torch."""

    mp_index: Any  # (N,) MediaPipe landmark ids
    tri_vertices: Any  # (N, 3) ICT vertex ids of the triangle holding each point
    bary: Any  # (N, 3) barycentric weights (sum to 1)
    weight: Any  # (N,) suggested fitting weight in [0, 1]

    def points(self, vertices):
        """Surface points (..., N, 3) of ICT vertices (..., V, 3), numpy or torch alike."""
        return (vertices[..., self.tri_vertices, :] * self.bary[..., None]).sum(-2)

    def rows(self, mp_ids) -> np.ndarray:
        """Row numbers of the given MediaPipe landmark ids (each must have a row)."""
        lookup = {int(m): i for i, m in enumerate(np.asarray(self.mp_index))}
        try:
            return np.array([lookup[int(m)] for m in np.atleast_1d(mp_ids)], np.int64)
        except KeyError as exc:
            raise ValueError(f"MediaPipe landmark {exc.args[0]} has no ICT correspondence.") from None

    def subset(self, rows) -> Correspondence:
        """The rows ``rows`` (e.g. from ``rows()``) as a smaller table."""
        return Correspondence(
            self.mp_index[rows], self.tri_vertices[rows], self.bary[rows], self.weight[rows]
        )

    def to_torch(self, device=None, dtype=None) -> Correspondence:
        """The same table as torch tensors (long indices), for ``points`` on torch vertices."""
        import torch

        def tensor(array, kind):
            return torch.as_tensor(np.asarray(array), dtype=kind, device=device)

        dtype = dtype or torch.float32
        return Correspondence(
            tensor(self.mp_index, torch.long),
            tensor(self.tri_vertices, torch.long),
            tensor(self.bary, dtype),
            tensor(self.weight, dtype),
        )


def load_annotated_landmarks68(path: str | Path | None = None) -> np.ndarray:
    """(68,) ICT vertex ids of the iBUG landmarks as annotated on photos (``ANNOTATED68_PATH``)."""
    path = Path(path) if path is not None else ANNOTATED68_PATH
    try:
        ids = np.array(json.loads(path.read_text())["vertex_ids"], np.int64)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise AssetError(f"The 68-landmark table {path} is missing or damaged ({exc}). Reinstall "
                         "Likeness, or rebuild it with benchmarks/landmark_convention.py --write.") from exc
    if ids.shape != (68,):
        raise AssetError(f"{path} lists {ids.size} landmarks, not 68: rebuild it with "
                         "benchmarks/landmark_convention.py --write.")
    return ids


def _read_table(path: str | Path | None, *keys: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the packaged MediaPipe -> ICT table (or the one at ``path``)."""
    path = Path(path) if path is not None else DATA_PATH
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            arrays = {key: data[key] for key in keys}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AssetError(
            f"The MediaPipe->ICT correspondence table {path} is missing or damaged ({exc}). "
            "Reinstall Likeness, or rebuild it with scripts/build_correspondence.py."
        ) from exc
    if version != TABLE_VERSION:
        raise AssetError(
            f"{path} is version {version}, this Likeness expects {TABLE_VERSION}: rebuild it with "
            "scripts/build_correspondence.py."
        )
    return arrays


def load_correspondence(path: str | Path | None = None) -> Correspondence:
    """The packaged MediaPipe -> ICT table (or the one at ``path``)."""
    data = _read_table(path, "mp_index", "tri_vertices", "bary", "weight")
    return Correspondence(
        mp_index=data["mp_index"].astype(np.int64),
        tri_vertices=data["tri_vertices"].astype(np.int64),
        bary=data["bary"].astype(np.float32),
        weight=data["weight"].astype(np.float32),
    )


def load_landmark_mirror(path: str | Path | None = None) -> np.ndarray:
    """(478,) the MediaPipe landmark each landmark becomes when the photo is mirrored (left/right)."""
    return _read_table(path, "mp_mirror")["mp_mirror"].astype(np.int64)
