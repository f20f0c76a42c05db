"""Face-recognition embeddings in torch: dlib's ResNet-34-like 128-D descriptor (face-api's port).

The network is the one of dlib's ``dlib_face_recognition_resnet_model_v1`` as face-api ships it
(TensorFlow.js weights: a JSON manifest of tensor names, shapes and uint8 quantisation, value =
q * scale + min, and one .bin). It runs on a 150x150 "face chip": the face rotated, scaled and
cropped by a similarity transform that puts five landmarks (eye corners, nose base) where dlib's
``get_face_chip_details`` puts them (padding 0.25). Everything from the chip to the descriptor is
differentiable, so an embedding distance can be a loss on a rendered image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..assets import FACE_API_MANIFEST, face_api_dir
from ..errors import AssetError
from ..progress import Progress

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's 5-point template (get_face_chip_details), chip fractions before padding: image-right eye
# outer and inner corner, image-left eye outer and inner corner, nose base.
_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
# The same five points among MediaPipe's 478 landmarks (263/362: the image-right eye's corners,
# 33/133: the image-left eye's, 2: below the nose tip).
MEDIAPIPE_FIVE = (263, 362, 33, 133, 2)
_MEAN_RGB = (122.782, 117.001, 104.298)
# Residual blocks after the stem; "down" blocks halve the resolution.
_BLOCKS = ("conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3",
           "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2",
           "conv256_down_out")


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2) from MediaPipe's 468/478 landmarks, or 5 given directly in
    the template's order."""
    if len(landmarks) == 5:
        return np.asarray(landmarks, np.float64)
    return np.asarray(landmarks, np.float64)[list(MEDIAPIPE_FIVE)]


def chip_transform(points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """(2, 3) similarity transform image -> chip pixels, least squares over the five points
    (continuous pixel coordinates on both sides)."""
    return similarity_transform(points, (padding + _TEMPLATE) / (2 * padding + 1) * size)


def similarity_transform(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (scale, rotation, translation; no reflection) taking
    ``points`` (N, 2) onto ``target`` (N, 2): Umeyama by complex-number least squares."""
    src, target = np.asarray(points, np.float64), np.asarray(target, np.float64)
    src_c, dst_c = src - src.mean(0), target - target.mean(0)
    z_src = src_c[:, 0] + 1j * src_c[:, 1]
    z_dst = dst_c[:, 0] + 1j * dst_c[:, 1]
    a = (np.conj(z_src) @ z_dst) / (np.abs(z_src) ** 2).sum()
    rot = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.concatenate([rot, (target.mean(0) - rot @ src.mean(0))[:, None]], 1)


def extract_chip(image: Tensor, transform: np.ndarray, size: int = CHIP_SIZE) -> Tensor:
    """Bilinear chip (size, size, C) of ``image`` (H, W, C) under the image -> chip ``transform``;
    differentiable in ``image``."""
    height, width = image.shape[:2]
    inverse = np.linalg.inv(np.vstack([transform, [0, 0, 1]]))[:2]
    centres = np.arange(size) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    src = np.stack([gx, gy, np.ones_like(gx)], -1) @ inverse.T  # photo pixel coords of chip centres
    grid = np.stack([src[..., 0] / width * 2 - 1, src[..., 1] / height * 2 - 1], -1)
    grid_t = torch.as_tensor(grid, dtype=image.dtype, device=image.device)[None]
    chip = F.grid_sample(image.permute(2, 0, 1)[None], grid_t, mode="bilinear",
                         padding_mode="border", align_corners=False)
    return chip[0].permute(1, 2, 0)


class FaceRecognitionNet(nn.Module):
    """dlib's ResNet (29 conv layers) from face-api's weights; ``forward`` takes RGB chips
    (N, 150, 150, 3) in [0, 1] and returns (N, 128) descriptors (dlib's metric: same person when
    the Euclidean distance is under ~0.6)."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        super().__init__()
        layers = {name.removesuffix("/conv/filters") for name in tensors if name.endswith("/conv/filters")}
        for layer in sorted(layers):
            # conv + bias, then the affine layer (dlib's batch norm at inference): one conv.
            gain = tensors[f"{layer}/scale/weights"]
            weight = tensors[f"{layer}/conv/filters"].transpose(3, 2, 0, 1) * gain[:, None, None, None]
            bias = tensors[f"{layer}/conv/bias"] * gain + tensors[f"{layer}/scale/biases"]
            self.register_buffer(_key(layer, "weight"), torch.from_numpy(np.ascontiguousarray(weight)))
            self.register_buffer(_key(layer, "bias"), torch.from_numpy(bias))
        self.register_buffer("fc", torch.from_numpy(tensors["fc"]))
        self.requires_grad_(False)

    @classmethod
    def load(cls, folder: str | Path) -> FaceRecognitionNet:
        return cls(read_tfjs_weights(Path(folder) / FACE_API_MANIFEST))

    def _conv(self, x: Tensor, layer: str, stride: int, relu: bool) -> Tensor:
        weight = getattr(self, _key(layer, "weight"))
        padding = 0 if stride == 2 else weight.shape[-1] // 2  # dlib: strided convs are unpadded
        out = F.conv2d(x, weight, getattr(self, _key(layer, "bias")), stride=stride, padding=padding)
        return F.relu(out) if relu else out

    def _residual(self, x: Tensor, prefix: str, down: bool) -> Tensor:
        out = self._conv(x, f"{prefix}/conv1", 2 if down else 1, True)
        out = self._conv(out, f"{prefix}/conv2", 1, False)
        if down:
            # dlib's add_prev: the strided branch and the 2x2-pooled shortcut are added on their
            # common extent, missing rows/columns/channels count as zeros.
            x = F.avg_pool2d(x, 2, 2)
            h, w = max(x.shape[2], out.shape[2]), max(x.shape[3], out.shape[3])
            c = max(x.shape[1], out.shape[1])

            def pad(t: Tensor) -> Tensor:
                return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

            x, out = pad(x), pad(out)
        return F.relu(out + x)

    def forward(self, chips: Tensor) -> Tensor:
        mean = chips.new_tensor(_MEAN_RGB)
        x = ((chips * 255 - mean) / 256).permute(0, 3, 1, 2)
        x = self._conv(x, "conv32_down", 2, True)
        x = F.max_pool2d(x, 3, 2)
        for block in _BLOCKS:
            x = self._residual(x, block, "down" in block)
        return x.mean((2, 3)) @ self.fc


def _key(layer: str, what: str) -> str:
    return f"{layer.replace('/', '_')}_{what}"


def read_tfjs_weights(manifest_path: Path) -> dict[str, np.ndarray]:
    """Tensors of a TensorFlow.js weights manifest (float32 or uint8-quantised entries)."""
    try:
        groups = json.loads(manifest_path.read_text())
        tensors: dict[str, np.ndarray] = {}
        for group in groups:
            blob = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                count = int(np.prod(spec["shape"]))
                quant = spec.get("quantization")
                if quant:
                    q = np.frombuffer(blob, np.uint8, count, offset)
                    value = q * np.float32(quant["scale"]) + np.float32(quant["min"])
                    offset += count
                else:
                    value = np.frombuffer(blob, np.float32, count, offset)
                    offset += 4 * count
                tensors[spec["name"]] = value.astype(np.float32).reshape(spec["shape"])
        if offset != len(blob):
            raise ValueError(f"{len(blob) - offset} bytes left over")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"{manifest_path} is not a readable face-api weights manifest ({exc}).") from exc
    return tensors


def load_identity_net(progress: Progress | None = None, download: bool = True) -> FaceRecognitionNet:
    """The network from ``LIKENESS_FACE_API`` or the cache, fetched (with checksums) on first use.
    Raises AssetError when it is neither here nor downloadable."""
    return FaceRecognitionNet.load(face_api_dir(download=download, progress=progress))


def embed(net: FaceRecognitionNet, image: Tensor, transform: np.ndarray) -> Tensor:
    """Unit descriptor (128,) of the face in ``image`` (H, W, 3) in [0, 1] under ``transform``."""
    return F.normalize(net(extract_chip(image, transform)[None])[0], dim=0)


def embed_photo(net: FaceRecognitionNet, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Unit descriptor (128,) of a uint8 photo's face given its landmarks (478 MediaPipe or 5)."""
    with torch.no_grad():
        image = torch.from_numpy(rgb.astype(np.float32) / 255)
        return embed(net, image, chip_transform(five_points(landmarks))).numpy()
