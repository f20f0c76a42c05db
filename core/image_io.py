"""Robust photo loading: anything Pillow decodes (or a numpy array) -> RGB uint8, upright.

Handles EXIF orientation, grey / palette / CMYK / 16-bit / float modes, transparency,
truncated and non-image files, tiny images and decompression bombs. Big photos are reduced
while decoding where the format allows (JPEG draft mode) and then resized to ``max_pixels``.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif"}
)
# Photo formats Pillow cannot read: named in the message instead of "not an image".
UNSUPPORTED = {".heic": "HEIC", ".heif": "HEIF", ".cr2": "camera RAW", ".nef": "camera RAW",
               ".arw": "camera RAW", ".dng": "camera RAW (DNG)"}
MIN_SIDE = 64  # smaller faces carry too little detail for landmarks, let alone texture
MAX_DECODE_PIXELS = 250_000_000  # refuse above this (decompression bomb guard)
# Transparent pixels become white: viewers and browsers show transparency over white, so the
# fit sees the picture the user saw, and cut-out portraits usually sit on white anyway.
BACKGROUND = (255, 255, 255)
_ORIENTATION_TAG = 0x0112
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# What ImageOps.exif_transpose does, applied by hand so that it can run after the downscale.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_open_lock = threading.Lock()


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    path: str | None
    original_size: tuple[int, int]  # (w, h) upright, before any downscaling
    scale: float  # rgb pixels per original pixel (1.0 unless downscaled)
    notes: list[str] = field(default_factory=list)  # what was done to the image, for the user


def load_image(source, max_pixels: float = 40e6, max_side: int | None = None) -> LoadedImage:
    """Decode ``source`` to upright RGB uint8, downscaled to at most ``max_pixels`` pixels and
    ``max_side`` pixels on the longer side. ``source`` is a path, an (H, W[, 1|3|4]) uint8 /
    uint16 / float array (floats in [0, 1], or [0, 255] when most values are above 1.5), a PIL
    Image, encoded bytes or a binary file object. Raises ImageError naming the input and the reason."""
    notes: list[str] = []
    path = None
    if isinstance(source, np.ndarray):
        name, orientation = "The image", 1
        image = _array_to_image(source, notes)
        stored = image.size
    else:
        name, opener = _opener(source)
        if isinstance(source, (str, os.PathLike)):
            path = str(source)
        image, stored, orientation = _decode(opener, name, max_pixels, max_side)
    original = (stored[1], stored[0]) if orientation in _TRANSPOSING else stored
    if min(original) < MIN_SIDE:
        raise ImageError(
            f"{name} is too small ({original[0]} x {original[1]} pixels); use a photo at least "
            f"{MIN_SIDE} pixels on its shorter side."
        )
    # Each step rebinds ``image`` so that a huge decoded image is freed as soon as it is reduced;
    # rotating after the downscale keeps that rotation cheap.
    image = _to_8bit(image, name, notes)
    scale = _target_scale(stored, max_pixels, max_side)
    # floor (with slack for float error) so that the result never exceeds max_pixels or max_side
    target = (max(1, math.floor(stored[0] * scale + 1e-6)), max(1, math.floor(stored[1] * scale + 1e-6)))
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if scale < 1:
        notes.append(f"downscaled from {original[0]} x {original[1]} pixels by {scale:.3f}")
    if orientation in _EXIF_TRANSPOSE:
        image = image.transpose(_EXIF_TRANSPOSE[orientation])
        notes.append(f"turned upright (EXIF orientation {orientation})")
    if image.mode in ("LA", "RGBA"):
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(image.convert("RGB"), mask=image.getchannel("A"))
        image = background
        notes.append("transparent areas filled with white")
    rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"))
    return LoadedImage(rgb, path, (int(original[0]), int(original[1])), float(scale), notes)


def _opener(source) -> tuple[str, Callable[[], AbstractContextManager[Image.Image]]]:
    """(name for messages, a function opening ``source`` as a PIL Image) for every accepted kind
    of input that is not an array; ImageError for anything else."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return str(path), lambda: _open(_checked_file(path))
    if isinstance(source, Image.Image):
        return "The PIL image", lambda: nullcontext(source)  # the caller's image: not closed here
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "The image data", lambda: _open(io.BytesIO(bytes(source)))
    if callable(getattr(source, "read", None)):
        if isinstance(source, io.TextIOBase):
            raise ImageError("The file object was opened in text mode: open the image with mode 'rb'.")
        return f"The file object {getattr(source, 'name', '')}".rstrip(), lambda: _open(source)
    given = "No image (None)" if source is None else f"A {type(source).__name__}"
    raise ImageError(f"{given} was given: pass a file path, a numpy array, a PIL Image, encoded image "
                     "bytes or a binary file object.")


def _checked_file(path: Path) -> Path:
    """``path`` if it is a regular file; a FIFO or device would block or never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found.") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied. Check the file's permissions.") from None
    except OSError as exc:
        raise ImageError(f"{path} cannot be read ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path} is a folder, not an image.")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path} is not a regular file (a pipe, socket or device): save the image as a "
                         "file.")
    kind = UNSUPPORTED.get(path.suffix.lower())
    if kind is not None:
        raise ImageError(f"{path}: {kind} images are not supported. Convert it to JPEG or PNG first.")
    return path


def _decode(open_image: Callable[[], AbstractContextManager[Image.Image]], name: str, max_pixels: float,
            max_side: int | None) -> tuple[Image.Image, tuple[int, int], int]:
    """The decoded image (possibly already reduced by JPEG draft mode), its full stored size and
    its EXIF orientation. Raises ImageError for anything unreadable."""
    try:
        with open_image() as image:
            size = image.size
            pixels = size[0] * size[1]
            if pixels > MAX_DECODE_PIXELS:
                raise ImageError(
                    f"{name} is too large: {size[0]} x {size[1]} pixels ({pixels / 1e6:.0f} MP, the limit "
                    f"is {MAX_DECODE_PIXELS / 1e6:.0f} MP). Resize it first."
                )
            target = _target_scale(size, max_pixels, max_side)
            if target < 1 and image.format == "JPEG":
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: far less memory for huge photos
                image.draft(image.mode, (math.ceil(size[0] * target), math.ceil(size[1] * target)))
            image.load()
            orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except ImageError:
        raise
    except PermissionError as exc:
        raise ImageError(f"{name}: permission denied. Check the file's permissions.") from exc
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name} is not an image Likeness can read ({_reason(exc)}).") from exc
    except MemoryError as exc:
        raise ImageError(f"{name} does not fit in memory when decoded: resize it first.") from exc
    except Exception as exc:  # noqa: BLE001 - untrusted data: Pillow's decoders raise OSError,
        # SyntaxError, ValueError, EOFError, RuntimeError (AVIF), struct.error, ... on damaged files
        raise ImageError(f"{name} could not be decoded: it is truncated or damaged "
                         f"({_reason(exc)}).") from exc
    return image, size, orientation


def _open(path) -> Image.Image:
    """Image.open (header only) without Pillow's own bomb check, which would refuse images
    between its limit (~179 MP) and ours and warn from 89 MP on; ``_decode`` checks the size
    itself before decoding. The lock keeps concurrent loads from restoring the wrong value."""
    with _open_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _target_scale(size: tuple[int, int], max_pixels: float, max_side: int | None) -> float:
    scale = min(1.0, math.sqrt(max_pixels / max(1, size[0] * size[1])))
    if max_side is not None:
        scale = min(scale, max_side / max(size))
    return scale


def _to_8bit(image: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """Any Pillow mode -> L, LA, RGB or RGBA with 8 bits per channel."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit and float grey: Pillow's convert("L") would clip at 255 instead of scaling
        notes.append(f"converted from {image.mode} (high bit depth) to 8 bits")
        return _high_depth_to_8bit(image, notes)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:
        raise ImageError(f"{name} uses the colour mode {image.mode}, which cannot be made RGB.") from exc


def _high_depth_to_8bit(image: Image.Image, notes: list[str]) -> Image.Image:
    """16-bit / 32-bit / float grey -> L, a band of rows at a time: converting the whole array at
    once took several float copies of it (3.5 GB for a 225 MP 16-bit PNG); now the peak is the
    decoded image plus its 8-bit copy. The value range is judged once, on a sample of rows."""
    width, height = image.size
    step = max(1, height // 512)
    sample = np.concatenate([np.asarray(image.crop((0, y, width, y + 1))) for y in range(0, height, step)])
    value_range = _value_range(sample, notes)
    out = np.empty((height, width), np.uint8)
    rows = max(1, 4_000_000 // max(width, 1))
    for y in range(0, height, rows):
        band = np.asarray(image.crop((0, y, width, min(height, y + rows))))
        out[y:y + rows] = _scale_to_uint8(band, value_range)
    return Image.fromarray(out)


@dataclass(frozen=True)
class _ValueRange:
    """How non-8-bit values map to 0..255: ``top`` becomes 255; floats are clipped to [0, top]."""

    floating: bool
    top: float


def _value_range(sample: np.ndarray, notes: list[str]) -> _ValueRange:
    """16-bit integer data: 0..65535 (wider data: its own maximum); floats: [0, 1], or [0, 255] (the
    other common convention) when the bulk of the values exceeds 1.5: a few outliers or infinities
    in a 0..1 image are clipped, not taken as its range. ``notes`` says how the range was read."""
    if not np.issubdtype(sample.dtype, np.floating):
        # Pillow's "I" mode holds 16-bit PNGs in int32
        peak = float(sample.max(initial=0))
        return _ValueRange(False, 65535.0 if peak <= 65535 else peak)
    finite = sample[np.isfinite(sample)].astype(np.float32)
    finite = finite[:: max(1, finite.size // 1_000_000)]
    top = 255.0 if finite.size > 0 and float(np.percentile(finite, 99)) > 1.5 else 1.0
    if top > 1:
        notes.append("float values mostly above 1.5: read as 0-255")
    if not np.all((sample >= 0) & (sample <= top)):  # NaN fails both
        notes.append(f"float values outside 0-{top:g} (or not finite) were clipped")
    return _ValueRange(True, top)


def _scale_to_uint8(values: np.ndarray, value_range: _ValueRange) -> np.ndarray:
    if value_range.floating:
        top = value_range.top
        values = np.clip(np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=top, neginf=0.0), 0.0, top)
    scaled = values.astype(np.float32) * np.float32(255.0 / value_range.top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _array_to_image(array: np.ndarray, notes: list[str]) -> Image.Image:
    if array.dtype != np.uint8 and array.dtype != np.uint16 and not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"Unsupported image array type {array.dtype}: use uint8, uint16 or float.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if channels not in (1, 3, 4):
        raise ImageError(
            f"Unsupported image array shape {array.shape}: use (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."
        )
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array, _value_range(array, notes))
    return Image.fromarray(np.ascontiguousarray(array))  # L, RGB or RGBA


@dataclass
class ImageScan:
    files: list[Path]  # images to process, in order
    skipped: list[tuple[Path, str]]  # files in the folders that look like photos but cannot be used, and why


def scan_images(paths: str | Path | Iterable[str | Path], exclude: str | Path | None = None) -> ImageScan:
    """Expand folders into their image files (recursively, sorted, hidden entries and the folder
    ``exclude`` with everything in it left out: an output folder inside the input is not read
    back); keep other paths as given, so that a missing or odd file is reported by ``load_image``.
    Photos in the folders that cannot be used (unsupported formats, broken links, pipes) are
    listed in ``skipped`` with the reason."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    excluded = Path(exclude).resolve() if exclude is not None else None
    scan = ImageScan([], [])
    for entry in map(Path, paths):
        if not entry.is_dir():
            scan.files.append(entry)
            continue
        for p in sorted(entry.rglob("*")):
            relative = p.relative_to(entry).parts
            if any(part.startswith(".") for part in relative) or p.is_dir():
                continue
            if excluded is not None and excluded in (folder := p.parent.resolve(), *folder.parents):
                continue
            suffix = p.suffix.lower()
            if suffix in UNSUPPORTED:
                scan.skipped.append((p, f"{UNSUPPORTED[suffix]} images are not supported; convert to "
                                        "JPEG or PNG"))
            elif suffix not in IMAGE_EXTENSIONS:
                continue
            elif p.is_symlink() and not p.exists():
                scan.skipped.append((p, "broken link"))
            elif not p.is_file():
                scan.skipped.append((p, "not a regular file"))
            else:
                scan.files.append(p)
    return scan


def list_images(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The files ``scan_images`` finds."""
    return scan_images(paths).files


def person_folders(root: str | Path) -> list[Path]:
    """The subfolders of ``root`` (sorted, hidden ones skipped): one person's photos each."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root} is not a folder: give a folder with one subfolder of photos per person.")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
