"""The colour of the photo's light (white balance), to be divided out of the albedo.

De-lighting removes the light's brightness variation, not its colour: a tinted room (tungsten,
fluorescent green, a coloured wall) tints the skin, and a texture that is lit again must not carry
it. The light's colour is estimated in linear RGB as a log chroma u = (log R/G, log B/G) from cues
that are neutral (or have a known colour), each with its own uncertainty, and fused with the prior
that the camera's own white balance is about right (u = 0):

- sclera: the eye openings minus the irises (MediaPipe's 478 landmarks), their brighter half
  (lids and lashes shade the rest); the white of the eye is near neutral, its own slight warmth is
  a calibrated offset;
- teeth: the bright, not red pixels of an open mouth (also a calibrated offset);
- skin locus: skin albedo chroma lies near a line, light to dark skin; how far the face's colour
  lies *across* that line is evidence of a tinted light, where it lies *along* it is the person's
  tone and says nothing (so dark skin is never taken for a warm light).

Cues that disagree with the fused estimate are down-weighted (Cauchy), the result is clamped, and
it is divided out by von Kries (per-channel gains in linear RGB), normalised to keep luminance, so
a grey keeps its brightness and dark skin stays dark. With weak evidence the prior wins: no change.
Offsets, spreads and the locus are calibrated on the 200 AFLW2000-3D dev photos
(``benchmarks/white_balance.py calibrate``), assuming cameras balance right on average. Scene
statistics (grey-edge on the background) were measured and left out: the camera's own white
balance already greys the scene, so what remains there is the scene's colour, not the light's
(benchmarks/white_balance.py cues).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..geometry.correspondence import FACE_OVAL
from ..geometry.parts import MEDIAPIPE_IRISES, linear_to_srgb, srgb_to_linear
from .skin_mask import INNER_LIPS, LEFT_EYE, RIGHT_EYE, polygon_mask
from .skin_trust import SkinTrust

LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance of linear RGB
PRIOR_SIGMA = 0.25  # log chroma: how far a camera's white balance may be off
MAX_SHIFT = 0.5  # log chroma: the largest correction made (a factor 1.65 between channels)
CAUCHY = 2.0  # cues further than this many of their sigmas from the fused estimate lose weight
# Calibrated by benchmarks/white_balance.py calibrate (AFLW2000-3D dev): medians over the photos,
# spreads as measured there (they include the photos' own light variation: conservative).
SCLERA_OFFSET = np.array([0.209, -0.096])  # measured white of the eye (lids and skin mix in)
SCLERA_SIGMA = 0.12  # at REF_PIXELS pixels or more; fewer pixels: larger
TEETH_OFFSET = np.array([0.337, -0.218])
TEETH_SIGMA = 0.19
LOCUS_MEAN = np.array([0.472, -0.284])  # a point of the skin locus, log chroma
LOCUS_DIRECTION = np.array([0.790, -0.614])  # along the locus (light -> dark, cool -> warm), unit
LOCUS_SIGMA = 0.124  # spread of skin chroma across the locus
REF_PIXELS = 50
# A clean white of the eye differs from the skin by ~0.3 in log chroma whatever the light (both move
# alike); a sample much closer to the skin is mostly skin (small eyes, shadow, lashes): it counts less.
SCLERA_DISTINCT = 0.2
MIN_PIXELS = {"sclera": 12, "teeth": 30}


@dataclass
class Cue:
    """One cue's estimate of the light's log chroma and its information (inverse covariance)."""

    estimate: np.ndarray  # (2,)
    information: np.ndarray  # (2, 2)
    pixels: int


@dataclass
class Illuminant:
    """The photo's light colour as divided out of the albedo."""

    rgb: np.ndarray  # (3,) linear RGB of the light, luminance 1: (1, 1, 1) = no correction
    confidence: float  # in [0, 1]: share of the prior's uncertainty the cues removed
    cues: dict[str, Cue] = field(default_factory=dict)

    @staticmethod
    def neutral() -> Illuminant:
        return Illuminant(np.ones(3), 0.0)

    def metrics(self) -> dict[str, float]:
        """Diagnostics for the result and its params JSON."""
        out = {f"illuminant_{c}": float(v) for c, v in zip("rgb", self.rgb)}
        out["illuminant_confidence"] = float(self.confidence)
        for name, cue in self.cues.items():
            out[f"illuminant_{name}_pixels"] = float(cue.pixels)
        return out


def log_chroma(rgb: np.ndarray) -> np.ndarray:
    """(..., 2) log(R/G), log(B/G) of linear RGB (..., 3)."""
    c = np.maximum(rgb, 1e-4)
    return np.stack([np.log(c[..., 0] / c[..., 1]), np.log(c[..., 2] / c[..., 1])], -1)


def chroma_to_rgb(u: np.ndarray) -> np.ndarray:
    """Linear RGB of luminance 1 with log chroma ``u``."""
    rgb = np.array([np.exp(u[0]), 1.0, np.exp(u[1])])
    return rgb / float(rgb @ LUMA)


def _point_cue(pixels: np.ndarray, offset: np.ndarray, sigma: float, name: str,
               skin: np.ndarray | None = None) -> Cue | None:
    """A cue from (N, 3) linear pixels of something of known colour: their median log chroma
    minus that colour; small samples (low resolution: mixed with lids, lips) count less, and with
    the ``skin`` chroma given, so do samples hardly different from it (SCLERA_DISTINCT)."""
    if len(pixels) < MIN_PIXELS[name]:
        return None
    centre = np.median(log_chroma(pixels), 0)
    var = sigma ** 2 * max(1.0, REF_PIXELS / len(pixels))
    if skin is not None:
        var /= float(np.clip(np.linalg.norm(centre - skin) / SCLERA_DISTINCT, 0.05, 1.0)) ** 2
    return Cue(centre - offset, np.eye(2) / var, len(pixels))


def sclera_pixels(linear: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 3) linear colours of the whites of the eyes: each eye opening without its iris disc
    (grown by a fifth), its brighter half (lids and lashes shade the rest), without clipped pixels."""
    out = []
    for loop, (centre_id, outline) in ((RIGHT_EYE, MEDIAPIPE_IRISES[0]), (LEFT_EYE, MEDIAPIPE_IRISES[1])):
        x0, y0 = np.maximum(np.floor(landmarks[loop].min(0)).astype(int) - 1, 0)
        x1, y1 = np.ceil(landmarks[loop].max(0)).astype(int) + 2
        crop = linear[y0:y1, x0:x1]
        if crop.shape[0] < 3 or crop.shape[1] < 3:
            continue
        opening = polygon_mask(landmarks - (x0, y0), loop, *crop.shape[:2])
        opening = cv2.erode(opening.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        centre = landmarks[centre_id] - (x0, y0)
        radius = 1.2 * float(np.linalg.norm(landmarks[list(outline)] - landmarks[centre_id], axis=1).mean())
        ys, xs = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
        pixels = crop[opening & (np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]) > radius)]
        if len(pixels) < 4:
            continue
        luma = pixels @ LUMA
        out.append(pixels[(luma >= np.median(luma)) & (pixels.max(1) < 0.95)])
    return np.concatenate(out) if out else np.zeros((0, 3))


def teeth_pixels(linear: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 3) linear colours of the teeth when the mouth is open: the opening's pixels brighter
    than its 60th percentile and not red (tongue, lips), without clipped pixels."""
    opening = polygon_mask(landmarks, INNER_LIPS, *linear.shape[:2])
    face = float(np.ptp(landmarks[FACE_OVAL], axis=0).max())
    if opening.sum() < 0.004 * face ** 2:  # a closed mouth: its outline holds lips only
        return np.zeros((0, 3))
    pixels = linear[opening]
    luma = pixels @ LUMA
    not_red = log_chroma(pixels)[:, 0] < 0.6
    return pixels[(luma >= np.percentile(luma, 60)) & not_red & (pixels.max(1) < 0.95)]


def skin_chroma(linear: np.ndarray, skin: SkinTrust) -> tuple[np.ndarray | None, int]:
    """Median log chroma of the trusted skin (not the face parts), None when fewer than 200
    pixels are trusted; and their number."""
    sel = (skin.trust > 0.5) & ~skin.parts
    count = int(sel.sum())
    return (np.median(log_chroma(linear[sel]), 0) if count >= 200 else None), count


def locus_cue(chroma: np.ndarray | None, pixels: int) -> Cue | None:
    """The face's skin ``chroma`` against the skin locus: only the offset across the locus counts."""
    if chroma is None:
        return None
    across = np.array([-LOCUS_DIRECTION[1], LOCUS_DIRECTION[0]])
    offset = float((chroma - LOCUS_MEAN) @ across)
    return Cue(offset * across, np.outer(across, across) / LOCUS_SIGMA ** 2, pixels)


def fuse(cues: dict[str, Cue]) -> tuple[np.ndarray, float]:
    """Posterior mean log chroma of the light (prior N(0, PRIOR_SIGMA^2)) from the cues, each
    re-weighted by a Cauchy function of its distance to the estimate; and the confidence."""
    prior = np.eye(2) / PRIOR_SIGMA ** 2
    weights = {name: 1.0 for name in cues}
    for _ in range(4):
        info = prior + sum(weights[n] * c.information for n, c in cues.items())
        mean = np.linalg.solve(info, sum((weights[n] * c.information @ c.estimate for n, c in cues.items()),
                                         np.zeros(2)))
        for name, cue in cues.items():
            d = cue.estimate - mean
            weights[name] = 1 / (1 + float(d @ cue.information @ d) / CAUCHY ** 2)
    confidence = 1 - float(np.trace(np.linalg.inv(info))) / (2 * PRIOR_SIGMA ** 2)
    norm = float(np.linalg.norm(mean))
    if norm > MAX_SHIFT:
        mean = mean * MAX_SHIFT / norm
    return mean, float(np.clip(confidence, 0, 1))


def measure_cues(rgb: np.ndarray, landmarks: np.ndarray, skin: SkinTrust) -> dict[str, Cue]:
    """The cues found in photo ``rgb`` (uint8) for the face of 478 MediaPipe ``landmarks`` whose
    skin trust is ``skin``; a cue with too few pixels is left out."""
    linear = srgb_to_linear(rgb.astype(np.float32) / 255)
    face_chroma, skin_pixels = skin_chroma(linear, skin)
    cues = {"teeth": _point_cue(teeth_pixels(linear, landmarks), TEETH_OFFSET, TEETH_SIGMA, "teeth"),
            "skin": locus_cue(face_chroma, skin_pixels)}
    if len(landmarks) >= 478:  # the irises
        cues["sclera"] = _point_cue(sclera_pixels(linear, landmarks), SCLERA_OFFSET, SCLERA_SIGMA, "sclera",
                                    face_chroma)
    return {name: cue for name, cue in cues.items() if cue is not None}


def illuminant_from(cues: dict[str, Cue]) -> Illuminant:
    """The fused, clamped light colour of some cues (no cue: no correction)."""
    if not cues:
        return Illuminant.neutral()
    mean, confidence = fuse(cues)
    return Illuminant(chroma_to_rgb(mean), confidence, cues)


def estimate_illuminant(rgb: np.ndarray, landmarks: np.ndarray, skin: SkinTrust) -> Illuminant:
    """The light colour of photo ``rgb`` (see ``measure_cues`` and the module docstring)."""
    return illuminant_from(measure_cues(rgb, landmarks, skin))


def remove_illuminant(srgb: np.ndarray, illuminant: Illuminant) -> np.ndarray:
    """Von Kries: float sRGB colours (..., 3) in [0, 1] divided by the light's colour in linear RGB."""
    linear = srgb_to_linear(np.clip(srgb, 0, 1)) / illuminant.rgb
    return linear_to_srgb(linear).astype(srgb.dtype)
