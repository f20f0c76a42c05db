"""Eyelids that follow the photo: a closed (or winking) eye stays closed in the fitted head.

The landmark fit weighs the few eyelid points against hundreds of others and a Gaussian prior on
the expression, and refinement's photometric term hardly sees a 2-pixel lid gap, so a wink often
comes out half open (and eyeWide may even cancel eyeBlink). Here each eye's opening, the lid gap
over the eye width, is measured on MediaPipe's eyelid landmarks and the eye's ``eyeBlink`` weight
is set by bisection so that the fitted model's lid landmarks show the same opening in the photo;
an eye that is closed in the photo gets its ``eyeWide`` cleared and is closed fully.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.face_model import FaceModel
from ..geometry.params import FaceParams

CLOSED_RATIO = 0.12  # MediaPipe lid gap / eye width below this: the eye is closed in the photo
TOLERANCE = 0.01  # openings this close are left as fitted


@dataclass(frozen=True)
class _Eye:
    side: str  # ARKit suffix: "R" is the subject's right eye (image left in a frontal photo)
    model_upper: tuple[int, ...]  # iBUG-68 indices
    model_lower: tuple[int, ...]
    model_corners: tuple[int, int]
    mp_upper: tuple[int, ...]  # MediaPipe FaceMesh indices
    mp_lower: tuple[int, ...]
    mp_corners: tuple[int, int]


EYES = (
    _Eye("R", (37, 38), (41, 40), (36, 39), (160, 159, 158), (144, 145, 153), (33, 133)),
    _Eye("L", (43, 44), (47, 46), (42, 45), (385, 386, 387), (380, 374, 373), (362, 263)),
)


def _opening(points: np.ndarray, upper, lower, corners) -> float:
    gap = np.linalg.norm(points[list(upper)].mean(0) - points[list(lower)].mean(0))
    return float(gap / max(np.linalg.norm(points[corners[0]] - points[corners[1]]), 1e-9))


def match_eyelids(model: FaceModel, params: FaceParams, landmarks: np.ndarray) -> FaceParams:
    """``params`` with each eye's eyeBlink (and, for closed eyes, eyeWide) set so that the fitted
    lid opening matches the 478 MediaPipe ``landmarks``; the other parameters are unchanged."""
    names = list(model.expression_names)
    ids = model.landmarks68
    identity = np.asarray(params.identity, np.float64)
    base = model.neutral[ids] + np.tensordot(identity, model.identity_basis[: len(identity)][:, ids], 1)
    expression_basis = model.expression_basis[:, ids]
    out = params.copy()

    def opening(eye: _Eye, expression: np.ndarray) -> float:
        points = params.project(base + np.tensordot(expression, expression_basis, 1))
        return _opening(points, eye.model_upper, eye.model_lower, eye.model_corners)

    for eye in EYES:
        measured = _opening(landmarks, eye.mp_upper, eye.mp_lower, eye.mp_corners)
        blink, wide = names.index(f"eyeBlink_{eye.side}"), names.index(f"eyeWide_{eye.side}")
        if measured < CLOSED_RATIO:
            out.expression[wide] = 0.0
            out.expression[blink] = 1.0
        elif abs(opening(eye, out.expression) - measured) > TOLERANCE:
            trial = out.expression.copy()
            lo, hi = 0.0, 1.0  # the opening falls as the blink weight rises
            for _ in range(20):
                trial[blink] = (lo + hi) / 2
                lo, hi = (trial[blink], hi) if opening(eye, trial) > measured else (lo, trial[blink])
            out.expression[blink] = (lo + hi) / 2
    return out
