"""Eyelids that follow the photo: a closed (or winking) eye stays closed in the fitted head.

The landmark fit weighs the few eyelid points against hundreds of others and a Gaussian prior on
the expression, and refinement's photometric term hardly sees a 2-pixel lid gap, so a wink often
comes out half open (and eyeWide may even cancel eyeBlink). Here each eye's opening, the lid gap
over the eye width, is measured on MediaPipe's eyelid landmarks and set by one of the two lid
blendshapes, found by bisection so that the fitted model's lid landmarks show the same opening in
the photo: ``eyeBlink`` for an eye less open than the model's at rest, ``eyeWide`` for one more
open, the other at zero. They are antagonists (one muscle lowers the lid, another raises it): a fit
holding both, e.g. eyeWide 1 against eyeBlink 0.3, gives the photo's gap with a lid that sits too
high and a shape no face makes. An eye closed in the photo is closed fully.
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
    """``params`` with each eye's eyeBlink and eyeWide set so that the fitted lid opening matches the
    478 MediaPipe ``landmarks`` (at most one of the two non-zero); the other parameters are unchanged."""
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
        lids = [names.index(f"eyeBlink_{eye.side}"), names.index(f"eyeWide_{eye.side}")]
        if measured >= CLOSED_RATIO and not out.expression[lids].all() \
                and abs(opening(eye, out.expression) - measured) <= TOLERANCE:
            continue  # one lid blendshape at most and the photo's opening: left as fitted
        out.expression[lids] = 0.0
        if measured < CLOSED_RATIO:
            out.expression[lids[0]] = 1.0
            continue
        # at rest the model's eye opens wider than the photo's: eyeBlink closes it; less: eyeWide opens it
        closing = opening(eye, out.expression) > measured
        lid = lids[0] if closing else lids[1]
        out.expression[lid] = _lid_weight(opening, eye, out.expression, lid, measured, closing)
    return out


def _lid_weight(opening, eye: _Eye, expression: np.ndarray, lid: int, measured: float,
                closing: bool) -> float:
    """Bisection for the weight in [0, 1] of blendshape ``lid`` at which ``opening(eye, expression)``
    equals ``measured`` (1 when its whole range is not enough)."""
    trial = expression.copy()
    lo, hi = 0.0, 1.0
    for _ in range(20):
        trial[lid] = (lo + hi) / 2
        too_open = opening(eye, trial) > measured
        lo, hi = (trial[lid], hi) if too_open == closing else (lo, trial[lid])
    return (lo + hi) / 2
