"""Where skin folds run: a direction field over the face UV tile, and a curvature prior along it.

Wrinkles are long and narrow and run across the pull of the muscle under them (the relaxed skin
tension lines): horizontal on the forehead, vertical between the brows, radiating from the outer
eye corners (crow's feet), along the lower lids, from the nose wings past the mouth corners
(nasolabial), down from the mouth corners (marionette), radial around the lips. Each of these is a
rule (a direction and where it holds, placed by the face model's 68 landmarks, sized by the
distance between the eyes); the rules are blended as axes (doubled angles), so where they disagree,
or where none holds (cheeks, nose, chin), the field has no preferred direction.

The prior charges a map's curvature along the fold direction fully and across it only
``across_ratio`` as much: a long narrow fold (curved across, straight along) is cheap, a blob
(curved both ways: a cast shadow's edge, sheen, a mark) costs as before. Where the field has no
direction it is the isotropic thin-plate energy. ``AlongFoldFilter`` averages the detail stage's
image residual along the same directions, so that what a fold cannot explain pulls less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..fitting.losses import masked_mean

# 68-landmark ids of one side and its mirror: outer eye corner, eye contour, nose wing, mouth corner.
OUTER_EYE_CORNER = (36, 45)
EYE = (range(36, 42), range(42, 48))
NOSE_WING = (31, 35)
MOUTH_CORNER = (48, 54)
BROWS = range(17, 27)
INNER_BROWS = (21, 22)
MOUTH = range(48, 68)
UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 51, 57


@dataclass
class FoldField:
    along: np.ndarray  # (..., 2) unit fold direction in tile uv (u right, v up)
    anisotropy: np.ndarray  # (...,) in [0, 1]: 0 no preferred direction, 1 folds run along ``along``


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _gauss(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x)


def _ramp(x: np.ndarray) -> np.ndarray:
    """Smoothstep from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = np.clip(((p - a) @ (b - a)) / float((b - a) @ (b - a)), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1)


def _eyes(lm: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Both eyes' centres and their distance (~7 cm), which sizes every rule."""
    eyes = [lm[list(ids)].mean(0) for ids in EYE]
    return eyes, float(np.linalg.norm(eyes[1] - eyes[0]))


def _lower_lid(p: np.ndarray, eye: np.ndarray, d: float) -> np.ndarray:
    """Support (...,) of the band below one eye: lower-lid lines, and the one place skin bulges (bags)."""
    below = (p - eye + 0.2 * d * np.array([0.0, 1.0])) / np.array([0.3 * d, 0.1 * d])
    return _gauss(np.linalg.norm(below, axis=-1))


def bulge_support(landmarks_uv: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Where a face's mid-band relief may rise (..., in [0, 1]): below the lower lids (under-eye
    bags). Elsewhere its folds are furrows (forehead lines, crow's feet, nasolabial and marionette
    folds, a chin dimple): the relief is depressions, and a ridge is what the shading model could not
    explain (a cast shadow's edge, sheen, a mark's residue)."""
    eyes, d = _eyes(landmarks_uv)
    return np.maximum(*(_lower_lid(uv, eye, d) for eye in eyes))


def _rules(lm: np.ndarray, p: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(direction (..., 2), support (...,) in [0, 1]) of each fold family at the tile uvs ``p``."""
    eyes, d = _eyes(lm)
    up, right = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    u, v = p[..., 0], p[..., 1]
    brow_top = lm[list(BROWS), 1].max()
    glabella = lm[list(INNER_BROWS)].mean(0) + 0.05 * d * up
    between_brows = _gauss((u - glabella[0]) / (0.1 * d)) * _gauss((v - glabella[1]) / (0.15 * d))
    rules = [
        (np.broadcast_to(right, p.shape), _ramp((v - brow_top) / (0.1 * d))),  # forehead
        (np.broadcast_to(up, p.shape), between_brows),  # glabella
    ]
    for side in range(2):
        lateral = right * (-1.0 if side == 0 else 1.0)
        corner, eye, mouth_corner = lm[OUTER_EYE_CORNER[side]], eyes[side], lm[MOUTH_CORNER[side]]
        # Crow's feet: radiating from the outer eye corner, on its lateral side.
        near_corner = _gauss(np.linalg.norm(p - corner - 0.2 * d * lateral, axis=-1) / (0.2 * d))
        rules.append((_unit(p - corner), near_corner * _ramp((p - corner) @ lateral / (0.1 * d))))
        # Lower lid: concentric about the eye.
        tangent = _unit(p - eye) @ np.array([[0.0, 1.0], [-1.0, 0.0]])
        rules.append((tangent, _lower_lid(p, eye, d)))
        # Nasolabial: from beside the nose wing past the mouth corner.
        start = lm[NOSE_WING[side]] + 0.08 * d * lateral
        end = mouth_corner + 0.08 * d * lateral - 0.25 * d * up
        rules.append((np.broadcast_to(_unit(end - start), p.shape),
                      _gauss(_segment_distance(p, start, end) / (0.1 * d))))
        # Marionette: down from the mouth corner towards the jaw.
        start = mouth_corner + 0.03 * d * lateral
        end = start + 0.05 * d * lateral - 0.35 * d * up
        rules.append((np.broadcast_to(_unit(end - start), p.shape),
                      _gauss(_segment_distance(p, start, end) / (0.08 * d))))
    # Lip lines: radial about the mouth, above and below the lips (not beside the corners).
    centre = lm[list(MOUTH)].mean(0)
    half_width = 0.5 * abs(lm[MOUTH_CORNER[1], 0] - lm[MOUTH_CORNER[0], 0])
    lips = lm[UPPER_LIP_TOP, 1] - centre[1], centre[1] - lm[LOWER_LIP_BOTTOM, 1]
    half_height = np.where(v > centre[1], *lips)
    radius = np.hypot((u - centre[0]) / half_width, (v - centre[1]) / half_height)
    beside = _ramp((half_width - np.abs(u - centre[0])) / (0.3 * half_width))
    rules.append((_unit(p - centre), _gauss((radius - 1.1) / 0.25) * beside))
    return rules


def fold_field(landmarks_uv: np.ndarray, uv: np.ndarray) -> FoldField:
    """The fold directions at tile uvs ``uv`` (..., 2) of a face whose 68 landmarks sit at
    ``landmarks_uv`` (68, 2). Anisotropy = the rules' agreement (length of their mean doubled-angle
    vector) times how much any of them holds (1 - the product of 1 - support)."""
    total = np.zeros(uv.shape)
    weight = np.zeros(uv.shape[:-1])
    none = np.ones(uv.shape[:-1])
    for direction, support in _rules(landmarks_uv, uv):
        angle = 2 * np.arctan2(direction[..., 1], direction[..., 0])
        total += support[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        weight += support
        none *= 1 - support
    agreement = np.linalg.norm(total, axis=-1) / np.maximum(weight, 1e-12)
    angle = 0.5 * np.arctan2(total[..., 1], total[..., 0])
    along = np.stack([np.cos(angle), np.sin(angle)], -1)
    return FoldField(along, np.clip(agreement * (1 - none), 0.0, 1.0))


# --------------------------------------------------------------------------------------------
# The prior

_SECOND_DIFFERENCES = torch.tensor([  # d2/dx2, d2/dy2, d2/dxdy on a 3x3 stencil (x: columns, y: rows)
    [[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]],
    [[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]],
    [[0.25, 0.0, -0.25], [0.0, 0.0, 0.0], [-0.25, 0.0, 0.25]],
])


class FoldCurvaturePrior:
    """Mean over a mask of along^2 + r (across^2 + 2 mixed^2) of a map's second derivatives in the
    fold frame, r = 1 - anisotropy (1 - ``across_ratio``): with r = 1 the thin-plate energy (the
    Hessian's squared norm, rotation invariant)."""

    def __init__(self, field: FoldField, mask: torch.Tensor, across_ratio: float):
        """``field`` on the map's texel centres (H, W) with row 0 at v = 1; ``mask`` (1, 1, H, W)."""
        device = mask.device
        along = torch.from_numpy(field.along.astype(np.float32)).to(device)[1:-1, 1:-1]
        x, y = along[..., 0], -along[..., 1]  # rows go down, v goes up
        self.along = torch.stack([x * x, y * y, 2 * x * y])  # weights of (h_xx, h_yy, h_xy)
        self.across = torch.stack([y * y, x * x, -2 * x * y])
        self.mixed = torch.stack([-x * y, x * y, x * x - y * y])
        anisotropy = torch.from_numpy(field.anisotropy.astype(np.float32)).to(device)[1:-1, 1:-1]
        self.ratio = 1 - anisotropy * (1 - across_ratio)
        self.inside = -F.max_pool2d(-mask, 3, stride=1)[0, 0]  # whole 3x3 stencil on the mask

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (1, 1, H, W) -> scalar."""
        hessian = F.conv2d(values, _SECOND_DIFFERENCES.to(values)[:, None])[0]  # (3, H - 2, W - 2)
        along = (self.along * hessian).sum(0)
        across = (self.across * hessian).sum(0)
        mixed = (self.mixed * hessian).sum(0)
        energy = along.square() + self.ratio * (across.square() + 2 * mixed.square())
        return masked_mean(energy, self.inside)


# --------------------------------------------------------------------------------------------
# Averaging an image along the folds

ALONG_TAPS = 4  # samples on each side of a pixel
ALONG_REACH = 2.5  # the outermost sample's distance, in Gaussian sigmas


class AlongFoldFilter:
    """Weighted Gaussian average of an image along the fold direction at each pixel.

    A fold's shading is constant along it; what the shading model cannot explain (a cast shadow's
    edge, a highlight, a mark's residue) mostly is not. Averaged along the folds, a residual that a
    fold could remove keeps its size while a blob's shrinks, so the latter buys less displacement.
    Where the field has no direction (anisotropy 0) pixels are left as they are."""

    def __init__(self, field: FoldField, tile_uv: torch.Tensor, mask: torch.Tensor, sigma_px: float,
                 weight: torch.Tensor):
        """``field`` on the (R, R) face-tile texels (row 0 at v = 1); ``tile_uv`` (H, W, 2) each pixel's
        face-tile uv; ``mask`` (H, W) bool pixels on the face; ``sigma_px`` the average's Gaussian
        sigma where the field is fully directed; ``weight`` (1, 1, H, W) each pixel's weight in the
        average (its normaliser is summed once, not on every optimisation step)."""
        device = tile_uv.device
        angle = 2 * np.arctan2(field.along[..., 1], field.along[..., 0])
        doubled = field.anisotropy[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        doubled = torch.from_numpy(doubled.astype(np.float32)).to(device).permute(2, 0, 1)[None]
        grid = torch.stack([tile_uv[..., 0] * 2 - 1, 1 - tile_uv[..., 1] * 2], -1)[None]
        c, s = F.grid_sample(doubled, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        anisotropy = torch.hypot(c, s)
        theta = 0.5 * torch.atan2(s, c)
        direction_uv = torch.stack([theta.cos(), theta.sin()], -1)  # (H, W, 2), v up
        # The direction in pixels: solve J e = direction_uv, J = d(uv)/d(x, y) by central differences.
        valid = mask.clone()
        valid[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        valid[[0, -1]] = False
        valid[:, [0, -1]] = False
        d_x = torch.zeros_like(tile_uv)
        d_y = torch.zeros_like(tile_uv)
        d_x[:, 1:-1] = 0.5 * (tile_uv[:, 2:] - tile_uv[:, :-2])
        d_y[1:-1] = 0.5 * (tile_uv[2:] - tile_uv[:-2])
        det = d_x[..., 0] * d_y[..., 1] - d_y[..., 0] * d_x[..., 1]
        valid &= det.abs() > 1e-12
        det = torch.where(valid, det, torch.ones_like(det))
        ex = (d_y[..., 1] * direction_uv[..., 0] - d_y[..., 0] * direction_uv[..., 1]) / det
        ey = (-d_x[..., 1] * direction_uv[..., 0] + d_x[..., 0] * direction_uv[..., 1]) / det
        step = F.normalize(torch.stack([ex, ey], -1), dim=-1)
        step = step * (anisotropy * valid * sigma_px * ALONG_REACH / ALONG_TAPS)[..., None]
        height, width = mask.shape
        y, x = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                              torch.arange(width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
        offsets = torch.arange(-ALONG_TAPS, ALONG_TAPS + 1, device=device, dtype=torch.float32)
        px = x + offsets[:, None, None] * step[..., 0]
        py = y + offsets[:, None, None] * step[..., 1]
        self.grid = torch.stack([px / width * 2 - 1, py / height * 2 - 1], -1).reshape(1, -1, width, 2)
        taps = torch.exp(-0.5 * (offsets * ALONG_REACH / ALONG_TAPS) ** 2)
        self.taps = (taps / taps.sum())[:, None, None]
        self.weight = weight
        self.norm = self._sum(weight).clamp_min(1e-6)

    def _sum(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 1, H, W) -> tap-weighted sum of the samples along the folds (1, 1, H, W)."""
        samples = F.grid_sample(image, self.grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (samples.view(len(self.taps), *image.shape[-2:]) * self.taps).sum(0)[None, None]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (1, 1, H, W) averaged along the folds with the weights."""
        return self._sum(image * self.weight) / self.norm
