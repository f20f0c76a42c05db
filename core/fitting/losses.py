"""Differentiable, masked losses shared by refinement and the mid-frequency detail stage (torch).

Shapes: images and maps are ``(B, C, H, W)``; masks are ``(B, 1, H, W)`` in [0, 1] and broadcast
over channels. A masked mean weighs every element by its mask value, so anything where the mask is
0 cannot change a loss. Each loss returns a scalar tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.0))


def masked_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` weighted by ``weights`` (broadcast to ``values``); 0 when all weights are 0."""
    if weights is None:
        return values.mean()
    weights = torch.broadcast_to(weights.to(values.dtype), values.shape)
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


# --------------------------------------------------------------------------------------------
# Feature and image losses


def clip_consistency_loss(
    feats_render: Sequence[torch.Tensor],
    feats_input: Sequence[torch.Tensor],
    masks: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
    kind: str = "cosine",
) -> torch.Tensor:
    """Per-token distance of rendered vs input features ``(B, C_l, h_l, w_l)`` per layer, weighted
    by how much of each token the face mask covers, summed over layers with ``weights`` (default
    equal, summing to 1). ``kind``: "cosine" (1 - cos, scale free) or "l2" (mean squared difference
    over channels)."""
    if len(feats_render) != len(feats_input) or not feats_render:
        raise ValueError("clip_consistency_loss needs the same, non-zero number of layers on both sides.")
    if kind not in ("cosine", "l2"):
        raise ValueError(f"Unknown clip_consistency_loss kind {kind!r}: use 'cosine' or 'l2'.")
    weights = weights if weights is not None else [1.0 / len(feats_render)] * len(feats_render)
    total = feats_render[0].new_zeros(())
    for weight, fr, fi in zip(weights, feats_render, feats_input, strict=True):
        if kind == "cosine":
            dist = 1.0 - F.cosine_similarity(fr, fi, dim=1, eps=1e-8)
        else:
            dist = (fr - fi).square().mean(dim=1)
        # Area coverage of each token's cell by the mask.
        cover = None if masks is None else F.adaptive_avg_pool2d(masks.to(fr.dtype), fr.shape[-2:])[:, 0]
        total = total + weight * masked_mean(dist, cover)
    return total


def _wing(err: torch.Tensor, w: float, eps: float) -> torch.Tensor:
    """Wing penalty of non-negative errors (Feng et al. 2018): log near 0 (small and medium errors
    keep a large gradient), linear beyond ``w``, continuous at ``w``."""
    c = w - w * math.log1p(w / eps)
    return torch.where(err < w, w * torch.log1p(err / eps), err - c)


def wing_loss(
    x: torch.Tensor, y: torch.Tensor, w: float = 10.0, eps: float = 2.0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Elementwise Wing loss of ``x - y``, then the (``weights``/mask-weighted) mean."""
    return masked_mean(_wing((x - y).abs(), w, eps), weights)


def _radial_frequency(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Radius of each ``rfft2`` bin ``(H, W // 2 + 1)`` in units of the Nyquist frequency (1 = a
    2-pixel period along an axis; diagonal corners reach sqrt(2))."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    return torch.sqrt(fy.square() + fx.square()) / 0.5


def frequency_band_losses(
    render: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    w: float = 1.0,
    eps: float = 0.2,
) -> torch.Tensor:
    """Wing loss per radial frequency band, ``(len(bands),)``; see ``frequency_wing_loss``."""
    r = render * mask
    t = target * mask
    spec_r = torch.fft.rfft2(r, norm="ortho")
    spec_t = torch.fft.rfft2(t, norm="ortho")
    radius = _radial_frequency(r.shape[-2], r.shape[-1], r.device)
    power_t = spec_t.detach().abs().square()  # (B, C, H, W//2+1); the scale is data, not optimised
    # Floor for near-empty target bands, relative to the image's overall spectral level.
    floor = 1e-6 * power_t.mean(dim=(1, 2, 3)) + 1e-12
    diff = spec_r - spec_t
    out = []
    for lo, hi in bands:
        # The last band (hi >= 1) also takes the diagonal frequencies above Nyquist.
        sel = (radius >= lo) & ((radius < hi) | (hi >= 1.0))
        if not bool(sel.any()):
            out.append(r.new_zeros(()))
            continue
        # "Spectrum-wise" weighting: errors in units of the target band's RMS amplitude, so that the
        # weak high band is supervised as much as the strong low band.
        scale = torch.sqrt(power_t[..., sel].mean(dim=(1, 2)) + floor)[:, None, None]
        # |complex difference| is phase-aware; torch gives |z| the gradient z/|z|, and 0 at z = 0.
        err = (diff[..., sel] / scale).abs()
        out.append(_wing(err, w, eps).mean())
    return torch.stack(out)


def frequency_wing_loss(
    render: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    band_weights: Sequence[float] | None = None,
    w: float = 1.0,
    eps: float = 0.2,
) -> torch.Tensor:
    """Spatio-frequency supervision of masked images ``(B, C, H, W)``.

    Both masked images go through ``rfft2`` (ortho); bins are grouped into radial ``bands`` (in
    units of Nyquist, see ``_radial_frequency``; no fftshift needed since the radius is computed per
    bin). In each band the Wing loss is taken of ``|F_render - F_target|`` divided by the target
    band's RMS amplitude. The complex difference is used rather than log-amplitudes because it is
    phase-aware (a shifted wrinkle is an error) and has bounded gradients at small amplitudes, where
    log |F| blows up; per-band normalisation gives high and low bands comparable magnitudes. Band
    terms are averaged with ``band_weights`` (default equal). ``w``/``eps`` are in those RMS units.
    """
    per_band = frequency_band_losses(render, target, mask, bands, w, eps)
    bw = torch.as_tensor(band_weights if band_weights is not None else [1.0] * len(bands),
                         dtype=per_band.dtype, device=per_band.device)
    return (per_band * bw).sum() / bw.sum()


def photometric_loss(
    render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, robust: bool = True, eps: float = 1e-3
) -> torch.Tensor:
    """Masked mean over pixels of the RGB error: ``robust`` = Charbonnier of the per-pixel L2 norm
    (an L2,1 norm, smooth at 0), else the squared L2 norm."""
    sq = (render - target).square().sum(dim=1, keepdim=True)
    err = torch.sqrt(sq + eps * eps) - eps if robust else sq
    return masked_mean(err, mask)


# --------------------------------------------------------------------------------------------
# Geometry losses


def landmark_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
    delta: float = 0.05,
) -> torch.Tensor:
    """Robust 2D landmark loss. ``pred``/``target`` ``(N, 2)`` or ``(B, N, 2)`` pixels, ``weights``
    ``(N,)`` or ``(B, N)``, ``scale`` the face size in pixels (float or ``(B,)``). Errors are
    normalised by ``scale`` and penalised by pseudo-Huber: quadratic below ``delta`` (a fraction of
    the face size), linear above, so a few wrong detections cannot dominate."""
    scale = torch.as_tensor(scale, dtype=pred.dtype, device=pred.device)
    if scale.ndim == 1:
        scale = scale.view(-1, *([1] * (pred.ndim - 1)))
    e2 = ((pred - target) / scale).square().sum(dim=-1)
    loss = delta * delta * (torch.sqrt(1.0 + e2 / (delta * delta)) - 1.0)
    return masked_mean(loss, weights)


# --------------------------------------------------------------------------------------------
# Regularisers of UV maps (displacement)

def symmetry_loss(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared difference between a UV map and its horizontal mirror.

    The ICT-FaceKit face UV tile is left/right symmetric: the mirror vertex (x -> -x) of every face
    vertex has uv ``(1 - u, v)`` (max error 1e-6; checked in tests/test_losses.py), so for a map
    covering u in [0, 1] the mirror is a column flip. Only pixels inside the mask on both sides count.
    """
    weights = mask * mask.flip(-1)
    return masked_mean((values - values.flip(-1)).square(), weights)


def magnitude_loss(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean square of a map: keeps displacements small where the data do not ask for them."""
    return masked_mean(values.square(), mask)
