"""Several photos of one face -> one skin atlas.

Per texel, each photo's trust (visible, facing the camera, trusted skin:
core.appearance.texture) is scaled by how
finely that photo resolves the texel (pixels per metre relative to the best photo there) and
by the photo's sharpness, and on the face parts (eyes, brows, lips, nostrils) by how neutral
the photo's expression is: a smile or a squint reshapes them more than the fitted expression
follows, so they come from the calmest photo that shows them. The best-seen photo dominates
(weights raised to a power) while neighbouring photos still blend in where they are almost as
good, so view borders fade instead of cutting. Before blending, each photo's de-lit colours are
matched to the best-covering photo by per-channel gains on the skin texels both see well, so
white balance and exposure differences between photos do not show as seams.
"""

from __future__ import annotations

import cv2
import numpy as np

from .texture import Unwrap

BEST_VIEW_POWER = 4.0  # how strongly the best-seen photo of a texel wins over the others
SHARPNESS_SIZE = 256  # face crops are compared at this size, so resolution alone does not count
GAIN_RANGE = (0.6, 1.6)  # per-channel colour gains beyond this mean a bad overlap, not a camera


def sharpness(rgb: np.ndarray, box: np.ndarray) -> float:
    """Mean gradient energy of the face crop resampled to a fixed size: blur and heavy
    compression lower it; photo resolution is accounted for separately per texel."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = rgb.shape[:2]
    crop = rgb[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(np.mean(cv2.Laplacian(grey, cv2.CV_32F) ** 2))


def neutrality(expression: np.ndarray) -> float:
    """1 for a neutral face, towards 0 the more expression weights are active."""
    return float(np.exp(-np.sum(expression)))


def view_quality(views: list[Unwrap], sharpness_scores: list[float], neutral: list[float]) -> np.ndarray:
    """(n, S, 2S) per-photo quality of each texel in [0, 1]."""
    density = np.stack([v.pixels_per_metre for v in views])
    relative = density / np.maximum(density.max(0), 1e-9)
    sharp = np.asarray(sharpness_scores, np.float64)
    sharp = np.sqrt(sharp / max(sharp.max(), 1e-12))  # blur costs less than missing resolution
    calm = np.asarray(neutral, np.float64) / max(max(neutral), 1e-12)
    parts = np.stack([v.parts for v in views])
    on_parts = 1 - parts + parts * calm[:, None, None]
    return np.stack([v.weight for v in views]) * relative * sharp[:, None, None] * on_parts


def colour_gains(albedos: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """(n, 3) per-channel gains that bring each photo's de-lit colour to the photo that covers
    the most skin, measured on the (skin) texels both see well."""
    ref = int(np.argmax(quality.sum((1, 2))))
    gains = np.ones((len(albedos), 3))
    for i in range(len(albedos)):
        overlap = quality[i] * quality[ref]
        if i == ref or overlap.sum() < 50:  # too little shared skin to compare: leave as is
            continue
        mine = (albedos[i] * overlap[..., None]).sum((0, 1))
        theirs = (albedos[ref] * overlap[..., None]).sum((0, 1))
        gains[i] = np.clip(theirs / np.maximum(mine, 1e-9), *GAIN_RANGE)
    return gains


def fuse(views: list[Unwrap], sharpness_scores: list[float],
         neutral: list[float]) -> tuple[Unwrap, np.ndarray]:
    """One unwrap from several photos' unwraps (with each photo's ``sharpness`` and expression
    ``neutrality``), and the (n, 3) colour gains applied."""
    if len(views) == 1:
        return views[0], np.ones((1, 3))
    quality = view_quality(views, sharpness_scores, neutral)
    albedos = np.stack([v.albedo for v in views])
    skin = quality * (1 - np.stack([v.parts for v in views]))
    gains = colour_gains(albedos, skin)
    blend = quality ** BEST_VIEW_POWER
    blend /= np.maximum(blend.sum(0), 1e-12)
    matched = albedos * gains[:, None, None, :]
    observed = np.stack([v.observed for v in views])
    fused = Unwrap(
        albedo=(matched * blend[..., None]).sum(0).astype(np.float32),
        weight=np.stack([v.weight for v in views]).max(0),
        visibility=np.stack([v.visibility for v in views]).max(0),
        observed=(observed * blend[..., None]).sum(0).astype(np.float32),
        parts=(np.stack([v.parts for v in views]) * blend).sum(0).astype(np.float32),
        pixels_per_metre=np.stack([v.pixels_per_metre for v in views]).max(0),
    )
    if all(v.hair_weight is not None for v in views):  # scalp hair (a cap): the best-seen photo's, as skin
        hair = np.stack([v.hair_weight for v in views])
        blend = hair ** BEST_VIEW_POWER
        blend /= np.maximum(blend.sum(0), 1e-12)
        hair_albedos = np.stack([v.hair_albedo for v in views]) * gains[:, None, None, :]
        fused.hair_weight = hair.max(0)
        fused.bare_weight = np.stack([v.bare_weight for v in views]).max(0)
        fused.hair_albedo = (hair_albedos * blend[..., None]).sum(0).astype(np.float32)
        colours = [v.hair * g for v, g in zip(views, gains) if v.hair is not None]
        fused.hair = np.median(colours, axis=0) if colours else None
    return fused, gains
