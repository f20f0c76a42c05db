"""CLIP image features at several depths, for the CLIP-guided refinement and detail losses.

Wraps the image tower of an open_clip model (ViT or ModifiedResNet). Weights come from, in order:
an explicit checkpoint file (``ClipSettings.pretrained`` is a path), the file named by the env var
``LIKENESS_CLIP_CHECKPOINT`` (it stands in for the tag's download), the Hugging Face cache, or
open_clip's own download. Missing weights raise ``AssetError`` (at once when HF_HUB_OFFLINE is set
or the download host cannot be resolved); random weights are used only when
``pretrained=None`` is asked for, and then ``ClipFeatureExtractor.pretrained`` is False.
A tag brings its own activation and normalisation (OpenAI weights need QuickGELU); a bare file path
does not, so name the matching architecture (e.g. ``ViT-B-32-quickgelu`` for OpenAI's weights).

Layer indices are 0-based, as in open_clip's ``forward_intermediates``:
- ViT: index i is the token map after transformer block i, before ``ln_post``; ViT-B/32 has blocks
  0..11, so the default (1, 4, 8, 11) spans early to last block.
- ModifiedResNet (RN50, ...): 0 = stem, 1..4 = layer1..layer4 (use e.g. ``layers=(1, 2, 3, 4)``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from ..errors import AssetError, DependencyError

ENV_CHECKPOINT = "LIKENESS_CLIP_CHECKPOINT"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@dataclass
class ClipSettings:
    model_name: str = "ViT-B-32"
    pretrained: Optional[str] = "openai"  # open_clip tag, checkpoint path, or None = random init
    layers: tuple[int, ...] = (1, 4, 8, 11)  # 0-based, see the module docstring
    layer_weights: Optional[tuple[float, ...]] = None  # one per layer; None = equal
    cache_dir: Optional[str] = None  # download cache; None = open_clip's default (HF hub cache)


@dataclass(frozen=True)
class _Weights:
    checkpoint: Optional[str]  # local file, None = random init
    tag_cfg: dict  # open_clip's pretrained config of the tag ({} for a bare file): quick_gelu, mean, std
    source: str  # for messages and results


class ClipFeatureExtractor:
    """Frozen open_clip image encoder; ``features()`` is differentiable w.r.t. the images."""

    def __init__(self, settings: ClipSettings | None = None, device: str | torch.device = "cpu"):
        open_clip = _import_open_clip()
        self.settings = settings = settings or ClipSettings()
        self.device = torch.device(device)
        weights = _resolve_weights(settings)
        self.pretrained = weights.checkpoint is not None
        self.weights_source = weights.source
        kwargs: dict = {}
        if weights.tag_cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True  # e.g. OpenAI weights were trained with QuickGELU
        norm = {k: weights.tag_cfg[k] for k in ("mean", "std") if k in weights.tag_cfg}
        if norm:
            kwargs["force_preprocess_cfg"] = norm
        try:
            model = open_clip.create_model(
                settings.model_name, pretrained=weights.checkpoint, device=self.device,
                pretrained_text=False, cache_dir=settings.cache_dir, **kwargs,
            )
        except Exception as exc:  # noqa: BLE001 - a damaged file raises EOFError, SafetensorError,
            # UnpicklingError, RuntimeError, KeyError, ... depending on where it breaks
            raise AssetError(
                f"Could not build CLIP model '{settings.model_name}' with {weights.source} "
                f"({type(exc).__name__}: {exc}). The file is damaged, incomplete or not an open_clip "
                f"checkpoint of '{settings.model_name}': delete it so that it is downloaded again, or set "
                f"{ENV_CHECKPOINT} to a good copy."
            ) from exc
        preprocess = open_clip.get_model_preprocess_cfg(model)
        # Only the image tower is kept: the text tower would be dead weight (~40% of ViT-B/32).
        self.visual = model.visual.eval()
        del model
        for param in self.visual.parameters():
            param.requires_grad_(False)

        self.arch, num_levels = _architecture(self.visual)
        self.layers = _check_layers(settings.layers, num_levels, self.arch)
        self.layer_weights = _layer_weights(settings.layer_weights, len(self.layers))
        size = self.visual.image_size
        self.input_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self._mean = self._channels(preprocess["mean"])
        self._std = self._channels(preprocess["std"])

    def _channels(self, values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def features(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Feature maps ``(B, C_l, h_l, w_l)``, one per layer, of ``images`` ``(B, 3, H, W)`` in [0, 1].

        ``masks`` ``(B, 1, H, W)`` in [0, 1] composite the images over the normalisation mean (zero
        after normalising), so pixels outside the mask cannot change any feature. Images are resized
        to the encoder's input size without keeping the aspect ratio: pass square face crops.
        """
        x = images.to(self.device, torch.float32)
        if masks is not None:
            m = masks.to(self.device, torch.float32)
            x = x * m + self._mean * (1.0 - m)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self._mean) / self._std
        # forward_intermediates handles the token layout itself (transformer.batch_first, True in 3.3.0).
        out = self.visual.forward_intermediates(
            x, indices=list(self.layers), stop_early=True, intermediates_only=True, output_fmt="NCHW"
        )
        return list(out["image_intermediates"])


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise DependencyError(
            "CLIP-guided detail needs open_clip: install the dependencies (pip install "
            "open-clip-torch==3.3.0, or the Install Dependencies button in the add-on preferences)."
        ) from exc
    return open_clip


def _architecture(visual: torch.nn.Module) -> tuple[str, int]:
    """("vit" | "resnet", number of selectable levels) of an open_clip image tower."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit", len(visual.transformer.resblocks)
    if isinstance(visual, ModifiedResNet):
        return "resnet", 5  # stem, layer1..layer4
    raise ValueError(f"Unsupported CLIP image tower {type(visual).__name__}: use a ViT or ModifiedResNet.")


def _check_layers(layers: tuple[int, ...], num_levels: int, arch: str) -> tuple[int, ...]:
    layers = tuple(int(i) for i in layers)
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= num_levels:
        raise ValueError(
            f"CLIP layers {layers} must be strictly increasing 0-based indices below {num_levels} ({arch})."
        )
    return layers


def _layer_weights(weights: tuple[float, ...] | None, count: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / count,) * count
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"CLIP layer_weights {weights} must be {count} non-negative numbers, not all zero.")
    return tuple(float(w) / sum(weights) for w in weights)


# --------------------------------------------------------------------------------------------
# Locating weights


def _resolve_weights(settings: ClipSettings) -> _Weights:
    open_clip = _import_open_clip()

    name, pretrained = settings.model_name, settings.pretrained
    if pretrained is None:
        return _Weights(None, {}, "random weights (pretrained=None)")
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        path = Path(pretrained).expanduser()
        if path.is_file():
            return _Weights(str(path), {}, f"checkpoint {path}")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise AssetError(
            f"CLIP weights '{pretrained}' are neither a pretrained tag of '{name}' (known: {tags}) "
            f"nor an existing checkpoint file."
        )
    label = f"'{name}' / '{pretrained}'"
    env_path = os.environ.get(ENV_CHECKPOINT)
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise AssetError(f"{ENV_CHECKPOINT}={env_path} does not exist: set it to the {label} checkpoint.")
        return _Weights(str(path), tag_cfg, f"{label} weights from {path}")
    cached = _cached_checkpoint(tag_cfg, settings.cache_dir)
    if cached:
        return _Weights(cached, tag_cfg, f"{label} weights from {cached}")
    reason = _offline_reason(tag_cfg)
    if reason is None:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=settings.cache_dir)
        except (OSError, RuntimeError, ValueError) as exc:
            reason = f"the download failed ({exc})"
        else:
            if path:
                return _Weights(path, tag_cfg, f"{label} weights from {path}")
            reason = "open_clip has no download location for it"
    raise AssetError(_missing_message(label, tag_cfg, settings.cache_dir, reason))


def _hub_location(tag_cfg: dict) -> tuple[str, list[str]]:
    """(repo id, candidate file names) of a tag's Hugging Face entry, in open_clip's download order."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))
    if not filename:
        return repo, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    stem, ext = os.path.splitext(filename)
    return repo, ([stem + ".safetensors"] if ext in (".bin", ".pth") else []) + [filename]


def _url_target(tag_cfg: dict, cache_dir: str | None) -> str | None:
    url = tag_cfg.get("url")
    if not url:
        return None
    return os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))


def _cached_checkpoint(tag_cfg: dict, cache_dir: str | None) -> str | None:
    """The tag's weights if already downloaded, found without touching the network."""
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    repo, filenames = _hub_location(tag_cfg)
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in filenames:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    target = _url_target(tag_cfg, cache_dir)
    return target if target and os.path.isfile(target) else None


def _offline_reason(tag_cfg: dict) -> str | None:
    """Why a download cannot work right now, or None to try it. Read at call time (not at import,
    as huggingface_hub does) and checked up front: offline, huggingface_hub retries for ~45 s."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return "downloads are disabled (HF_HUB_OFFLINE is set)"
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return None  # the proxy resolves names; we cannot tell from here
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
    else:
        host = urlparse(tag_cfg.get("url", "")).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return f"there is no network connection ({host} cannot be resolved)"
    return None


def _missing_message(label: str, tag_cfg: dict, cache_dir: str | None, reason: str) -> str:
    from huggingface_hub import constants

    repo, filenames = _hub_location(tag_cfg)
    places = []
    if repo:
        places.append(f"the Hugging Face cache {cache_dir or constants.HF_HUB_CACHE} ({repo})")
    if tag_cfg.get("url"):
        places.append(_url_target(tag_cfg, cache_dir))
    source = f"https://huggingface.co/{repo} (file {filenames[0]})" if repo else tag_cfg.get("url")
    return (
        f"CLIP weights {label} are not available: {reason}. Looked in {' and '.join(places)}. "
        f"Connect to the internet once so they can be downloaded, or download {source} and set "
        f"{ENV_CHECKPOINT}=/path/to/that/file (or give the file path as the CLIP 'pretrained' setting)."
    )
