"""A winking eye stays closed in the fitted head (real photo 3ddfa_v3/examples/1.jpg)."""

import numpy as np
from conftest import FACES

from core.fitting.eyelids import EYES, _opening
from core.pipeline import preset_settings


def test_winking_eye_is_fitted_closed_and_the_open_one_open(pipeline):
    rec = pipeline.run(FACES / "3ddfa_v3" / "examples" / "1.jpg", preset_settings("fast", texture_size=128))
    w = rec.expression_weights
    assert w["eyeBlink_L"] > 0.95 and w["eyeWide_L"] == 0  # the subject winks with the left eye
    assert w["eyeBlink_R"] < 0.6
    lids = rec.params.project(rec.vertices[rec.model.landmarks68])  # ICT's own lid vertices
    right, left = (_opening(lids, e.model_upper, e.model_lower, e.model_corners) for e in EYES)
    assert left < 0.12 < 0.2 < right  # lid gap / eye width, in the photo
    mp_right = _opening(rec.detected_landmarks, EYES[0].mp_upper, EYES[0].mp_lower, EYES[0].mp_corners)
    assert np.isclose(right, mp_right, atol=0.03)  # the open eye opens as much as in the photo


def test_neutral_face_holds_no_lid_antagonists_and_no_saturated_expression(pipeline):
    """eyeBlink and eyeWide pull the lid opposite ways: a fit holds one of them per eye at most. A
    neutral face's fit keeps every expression weight well inside its range (with a weak prior,
    every such fit held eyeWide at 1 against eyeBlink)."""
    rec = pipeline.run(FACES / "deepface" / "img14.jpg", preset_settings("fast", texture_size=128))
    w = rec.expression_weights
    for side in "LR":
        assert min(w[f"eyeBlink_{side}"], w[f"eyeWide_{side}"]) == 0
    assert max(w.values()) < 0.7
