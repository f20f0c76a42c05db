"""core.image_io on a real photo and on awkward files made from it on the fly."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import FACES, REPO
from PIL import Image, ImageFile

from core.errors import ImageError
from core.image_io import MAX_DECODE_PIXELS, list_images, load_image

PHOTO = sorted(FACES.rglob("*.jpg"))[0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The photo as RGB, cut to an even landscape size so that rotations are easy to check."""
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    h, w = rgb.shape[:2]
    side = min(h, w)
    return np.ascontiguousarray(rgb[: side * 3 // 4 // 2 * 2, : side // 2 * 2])


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_plain_jpeg(tmp_path):
    loaded = load_image(PHOTO)
    expected = np.asarray(Image.open(PHOTO).convert("RGB"))
    np.testing.assert_array_equal(loaded.rgb, expected)
    assert loaded.path == str(PHOTO) and loaded.scale == 1.0 and loaded.notes == []
    assert loaded.original_size == (expected.shape[1], expected.shape[0])


def test_grayscale_png(tmp_path, photo):
    grey = Image.fromarray(photo).convert("L")
    loaded = load_image(_save(tmp_path, "grey.png", grey))
    assert loaded.rgb.shape == photo.shape and loaded.rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., c], np.asarray(grey))


def test_rgba_is_composited_over_white(tmp_path, photo):
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, : photo.shape[1] // 2] = 0
    alpha[:, photo.shape[1] // 2 : photo.shape[1] // 2 + 4] = 128
    loaded = load_image(_save(tmp_path, "cutout.png", Image.fromarray(np.dstack([photo, alpha]))))
    half = photo.shape[1] // 2
    assert (loaded.rgb[:, :half] == 255).all()
    np.testing.assert_array_equal(loaded.rgb[:, half + 4 :], photo[:, half + 4 :])
    blended = (photo[:, half : half + 4].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(loaded.rgb[:, half : half + 4] - blended).max() <= 1.5
    assert any("white" in note for note in loaded.notes)


def test_palette_and_cmyk(tmp_path, photo):
    palette = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE)
    loaded = load_image(_save(tmp_path, "palette.png", palette))
    np.testing.assert_array_equal(loaded.rgb, np.asarray(palette.convert("RGB")))

    cmyk = load_image(_save(tmp_path, "cmyk.jpg", Image.fromarray(photo).convert("CMYK"), quality=95))
    assert cmyk.rgb.shape == photo.shape
    assert np.abs(cmyk.rgb.astype(int) - photo).mean() < 6


def test_16bit_png_is_scaled_not_clipped(tmp_path, photo):
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    deep = grey.astype(np.uint16) * 257  # 8-bit values stretched to the full 16-bit range
    loaded = load_image(_save(tmp_path, "deep.png", Image.fromarray(deep)))
    np.testing.assert_array_equal(loaded.rgb[..., 0], grey)
    assert loaded.rgb.max() > 200


def test_exif_orientation_6_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to display
    path = _save(tmp_path, "rotated.jpg", Image.fromarray(photo), exif=exif, quality=90)
    stored = np.asarray(Image.open(path).convert("RGB"))

    loaded = load_image(path)
    h, w = photo.shape[:2]
    assert loaded.rgb.shape == (w, h, 3) and loaded.original_size == (h, w)
    np.testing.assert_array_equal(loaded.rgb, np.rot90(stored, k=-1))
    assert any("EXIF orientation 6" in note for note in loaded.notes)


def test_truncated_jpeg(tmp_path):
    data = PHOTO.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError, match="not an image") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found") as info:
        load_image(tmp_path / "nowhere.png")
    assert "nowhere.png" in str(info.value)
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_tiny_image(tmp_path, photo):
    tiny = Image.fromarray(photo).resize((20, 20))
    with pytest.raises(ImageError, match="too small"):
        load_image(_save(tmp_path, "tiny.png", tiny))
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((20, 200, 3), np.uint8))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but has no pixel data: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="too large"):
        load_image(_png_header_only(tmp_path / "bomb.png", 20_000, 13_000))
    # 225 MP is above Pillow's own hard limit (~179 MP) but within ours: it gets as far as
    # decoding, which then fails because there is no data.
    assert 2 * pillow_limit < 15_000 * 15_000 <= MAX_DECODE_PIXELS
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_image(_png_header_only(tmp_path / "big.png", 15_000, 15_000))
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_huge_photo_is_downscaled_with_bounded_memory(tmp_path, photo):
    huge = Image.fromarray(photo).resize((12000, 8000), Image.Resampling.NEAREST)
    path = _save(tmp_path, "huge.jpg", huge, quality=50)
    del huge
    # In a fresh process so that the peak memory is this load's alone. VmHWM, not ru_maxrss: the
    # latter survives exec and would report the forking pytest process's own peak.
    script = (
        "import json, re, sys; from core.image_io import load_image; "
        "r = load_image(sys.argv[1]); "
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        "print(json.dumps({'shape': r.rgb.shape, 'scale': r.scale, 'size': r.original_size, "
        "'notes': r.notes, 'peak_mb': hwm / 1024}))"
    )
    if sys.platform != "linux":
        pytest.skip("peak memory is measured with Linux's /proc/self/status")
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    h, w, _ = result["shape"]
    assert result["size"] == [12000, 8000] and h * w <= 40e6 and w / h == pytest.approx(1.5, abs=1e-3)
    assert w == int(12000 * result["scale"]) and any("downscaled" in n for n in result["notes"])
    # Pillow holds the full-size decode (384 MB as RGBX) while resizing; measured ~800 MB in all.
    assert result["peak_mb"] < 1300


def test_max_side_uses_reduced_decoding(tmp_path, photo):
    path = _save(tmp_path, "wide.jpg", Image.fromarray(photo).resize((4000, 3000)), quality=80)
    loaded = load_image(path, max_side=500)
    assert loaded.rgb.shape == (375, 500, 3) and loaded.scale == pytest.approx(0.125)
    assert loaded.original_size == (4000, 3000)
    reference = np.asarray(Image.open(path).convert("RGB").resize((500, 375), Image.Resampling.LANCZOS))
    assert np.abs(loaded.rgb.astype(int) - reference).mean() < 4


def test_numpy_inputs(photo):
    np.testing.assert_array_equal(load_image(photo).rgb, photo)
    assert load_image(photo).path is None

    grey16 = photo[..., 1].astype(np.uint16) * 257
    np.testing.assert_array_equal(load_image(grey16).rgb[..., 2], photo[..., 1])
    unit = photo[..., :1].astype(np.float32) / 255
    np.testing.assert_array_equal(load_image(unit).rgb[..., 0], photo[..., 0])

    rgba = np.dstack([photo / 255.0, np.zeros(photo.shape[:2])])
    assert (load_image(rgba).rgb == 255).all()  # fully transparent -> white

    small = load_image(photo, max_pixels=photo.shape[0] * photo.shape[1] / 4)
    assert small.rgb.shape[:2] == (photo.shape[0] // 2, photo.shape[1] // 2) and small.scale == 0.5

    with pytest.raises(ImageError, match="int32"):
        load_image(photo.astype(np.int32))
    with pytest.raises(ImageError, match="shape"):
        load_image(photo[..., :2])


def test_list_images(tmp_path, photo):
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    image = Image.fromarray(photo)
    for name in ("a.jpg", "b/c.PNG", "b/deeper/d.jpeg", ".hidden.jpg", "b/readme.txt"):
        image.save(tmp_path / name, format="PNG")
    explicit = tmp_path / "b" / "readme.txt"
    missing = tmp_path / "missing.jpg"

    found = list_images([tmp_path, explicit, str(missing)])
    assert found == [
        tmp_path / "a.jpg", tmp_path / "b" / "c.PNG", tmp_path / "b" / "deeper" / "d.jpeg", explicit, missing
    ]
    assert list_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
