"""A camera channel clipped on bright skin, given back from the two channels that were not.

Skin is brightest in red: on lit skin a camera's red channel reaches the top of its range first
(255, or a video's 235) and stops, while green and blue go on rising. Those pixels lose redness,
the de-lit albedo keeps their paler colour, and once a warm light is divided out (white balance)
the brightest skin (forehead, nose ridge, chin) turns grey-green (docs/BENCHMARKS.md, likeness ninth
session: deep3d's vd026, red clipped at 235).

Brighter skin is paler for a second, real reason: the surface reflection adds the light's own
colour. The two are told apart by the dichromatic model: each skin pixel is its diffuse skin colour
(the chroma of mid-tone skin) plus a share of the light's colour, solved from green and blue alone;
the clipped channel is what that mix predicts. Where a channel sits at its ceiling and the mix
predicts more, it is raised to the prediction (a sheen stays a sheen: its blue says how much light
is mixed in); below the ceiling nothing changes.
"""

from __future__ import annotations

import numpy as np

from ..geometry.parts import linear_to_srgb, srgb_to_linear
from .skin_trust import SkinTrust

MID_TONES = (20, 50)  # percentiles of green on trusted skin: the diffuse skin colour's pixels
CEILING_PERCENTILE = 99  # of a channel on trusted skin: where a clipped channel piles up
CEILING_SPREAD = 8 / 255  # a clipped channel's values scatter about this far (compression, noise)
MIN_PIXELS = 200


def unclip_skin(rgb: np.ndarray, skin: SkinTrust | None, light: np.ndarray | None = None) -> np.ndarray:
    """Float32 sRGB photo (H, W, 3) from uint8 ``rgb``: on the skin (trust > 0, not the face parts),
    the red channel where it sits at its ceiling raised to what green and blue predict (module
    docstring); ``light``: the light's linear RGB (the white balance's estimate; neutral when None).
    Values may exceed 1 there; elsewhere the photo as it is."""
    photo = rgb.astype(np.float32) / 255
    trusted = None if skin is None else (skin.trust > 0.5) & ~skin.parts
    if trusted is None or trusted.sum() < MIN_PIXELS:
        return photo
    skin_ratios = _diffuse_ratios(srgb_to_linear(photo[trusted].astype(np.float64)))
    light = np.ones(3) if light is None else np.asarray(light, np.float64)
    light_ratios = light[[0, 2]] / light[1]
    if abs(skin_ratios[1] - light_ratios[1]) < 0.05:  # skin as blue as the light: the mix cannot be solved
        return photo
    ceiling = np.percentile(photo[trusted][:, 0], CEILING_PERCENTILE)
    area = (skin.trust > 0) & ~skin.parts
    values = photo[area]
    near = np.clip((values[:, 0] - (ceiling - 2 * CEILING_SPREAD)) / CEILING_SPREAD, 0, 1)
    todo = near > 0
    linear = srgb_to_linear(values[todo].astype(np.float64))
    red = np.maximum(linear[:, 0], _mixed_red(linear, skin_ratios, light_ratios))
    raised = linear_to_srgb(red, upper=np.inf)  # may exceed 1: the red the camera could not record
    values[todo, 0] += near[todo] * (raised - values[todo, 0])
    photo[area] = values
    return photo


def _diffuse_ratios(linear: np.ndarray) -> np.ndarray:
    """(R/G, B/G) of the skin's own colour: the median over the mid-tone pixels of (N, 3) linear skin
    (MID_TONES of green: out of the shadows, below the sheen and the clipping)."""
    green = np.maximum(linear[:, 1], 1e-4)
    lo, hi = np.percentile(green, MID_TONES)
    mid = (green >= lo) & (green <= hi)
    return np.median(linear[mid][:, [0, 2]] / green[mid, None], 0)


def _mixed_red(linear: np.ndarray, skin: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(N,) red of (N, 3) linear pixels as the dichromatic model has it: green and blue split into
    the skin's own colour and the light's (their (R/G, B/G) ``skin`` and ``light``), red summed
    from the two."""
    green, blue = linear[:, 1], linear[:, 2]
    diffuse = np.clip((blue - light[1] * green) / (skin[1] - light[1]), 0, green)  # the skin's share of green
    return diffuse * skin[0] + (green - diffuse) * light[0]
