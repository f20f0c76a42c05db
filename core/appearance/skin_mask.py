"""Image-space face regions from MediaPipe's 478 landmarks.

Photometric losses must only see skin: the face oval minus eyes, brows (hair) and the mouth
opening. The contours below are MediaPipe FaceMesh's published ordered loops.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..geometry.correspondence import FACE_OVAL

RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_BROW = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
LEFT_BROW = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
INNER_LIPS = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
# Underside of the nose from ala to ala through the columella (MediaPipe's FACEMESH_NOSE base).
NOSTRILS = [48, 64, 98, 97, 2, 326, 327, 294, 278, 19]
# Parts with a texture of their own: kept in the albedo whatever their colour (not occluders).
# The eyes count by their rim (lids, lash line); their opening shows the eyeball, not skin.
FACE_PARTS = (RIGHT_BROW, LEFT_BROW, OUTER_LIPS, NOSTRILS)
EYE_RIM = 0.015  # of the face size: the band around each eye opening that is lid margin and lashes

_SUBPIXEL = 4  # cv2.fillPoly takes fixed-point coordinates with this many fractional bits


def _fill(mask: np.ndarray, points: np.ndarray, value: int) -> None:
    pts = np.round((points - 0.5) * (1 << _SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(mask, [pts], value, lineType=cv2.LINE_8, shift=_SUBPIXEL)


def skin_mask(landmarks: np.ndarray, height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """Bool (H, W) mask of visible facial skin for 478 (or 468) landmarks in pixel coordinates.

    ``margin`` (fraction of the face size) dilates the excluded eyes, brows and mouth.
    """
    mask = np.zeros((height, width), np.uint8)
    _fill(mask, landmarks[FACE_OVAL], 1)
    face_size = np.ptp(landmarks[FACE_OVAL], axis=0).max()
    holes = np.zeros_like(mask)
    for loop in (RIGHT_EYE, LEFT_EYE, RIGHT_BROW, LEFT_BROW, INNER_LIPS):
        _fill(holes, landmarks[loop], 1)
    grow = int(round(margin * face_size))
    if grow > 0:
        holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return (mask > 0) & (holes == 0)


def polygon_mask(landmarks: np.ndarray, loop: list[int], height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask inside one landmark loop."""
    mask = np.zeros((height, width), np.uint8)
    _fill(mask, landmarks[loop], 1)
    return mask > 0


def face_mask(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask of the whole face oval (eyes and mouth included)."""
    return polygon_mask(landmarks, FACE_OVAL, height, width)


def part_masks(landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bool (H, W) masks of the face parts that are texture of their own (eye rims, brows, lips,
    nostrils), of the lips alone, and of the openings that are not skin at all (eyeballs, teeth
    and tongue)."""
    parts = np.zeros((height, width), np.uint8)
    for loop in FACE_PARTS:
        _fill(parts, landmarks[loop], 1)
    lips = np.zeros_like(parts)
    _fill(lips, landmarks[OUTER_LIPS], 1)
    openings = np.zeros_like(parts)
    for loop in (RIGHT_EYE, LEFT_EYE, INNER_LIPS):
        _fill(openings, landmarks[loop], 1)
    eyes = np.zeros_like(parts)
    for loop in (RIGHT_EYE, LEFT_EYE):
        _fill(eyes, landmarks[loop], 1)
    grow = max(1, int(round(EYE_RIM * np.ptp(landmarks[FACE_OVAL], axis=0).max())))
    parts |= cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return (parts > 0) & (openings == 0), (lips > 0) & (openings == 0), openings > 0


def holdout_checkerboard(size: int) -> np.ndarray:
    """Bool (size, size): the held-out squares (side size / 32) of a checkerboard. Evaluation
    leaves these pixels out of the data terms and measures the photometric error on them."""
    block = max(2, size // 32)
    idx = np.arange(size) // block
    return (idx[:, None] + idx[None, :]) % 2 == 1
