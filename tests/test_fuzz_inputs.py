"""Fuzzing the inputs (issue 9): damaged files of every format Pillow writes here (and magic-number
garbage for the formats it only reads), non-regular files, every EXIF rotation, float edge cases
and interrupted saves. Whatever the input, the answer is a usable image or an ImageError, at once;
whatever interrupts a save, the previous result stays. Seeded, so a failure reproduces."""

from __future__ import annotations

import io
import os
import signal
import socket
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import face_photo
from PIL import Image

from core.errors import Cancelled, ImageError, OutputError
from core.image_io import MIN_SIDE, load_image
from core.progress import Progress

SIDE = 96
# Formats Pillow only reads: their magic number followed by garbage reaches each plugin's parser.
READ_ONLY_MAGIC = {
    "PSD": b"8BPS\x00\x01" + bytes(20), "XPM": b"/* XPM */\nstatic char *x[] = {\n\"96 96 2 1\",",
    "SUN": b"\x59\xa6\x6a\x95", "FITS": b"SIMPLE  =                    T" + b" " * 50,
    "DCX": b"\xb1\x68\xde\x3a", "PIXAR": b"\x80\xe8\x00\x00", "CUR": b"\x00\x00\x02\x00\x01\x00",
    "FLI": b"\x00\x00\x00\x00\x11\xaf", "XVTHUMB": b"P7 332\n", "FTEX": b"FTEX",
    "ICNS": b"icns\x00\x00\x10\x00", "HEIC": b"\x00\x00\x00\x18ftypheic",
}


def _face() -> Image.Image:
    with Image.open(face_photo("000002.jpg")) as photo:
        return photo.convert("RGB").resize((SIDE, SIDE))


def _encodings() -> dict[str, bytes]:
    """A valid file of the face in every format Pillow can write here (in a mode it accepts)."""
    Image.init()
    face, out = _face(), {}
    for fmt in sorted(Image.SAVE):
        for mode in ("RGB", "L", "P", "1"):
            buffer = io.BytesIO()
            try:
                face.convert(mode).save(buffer, format=fmt)
                Image.open(io.BytesIO(buffer.getvalue())).load()
            except Exception:  # noqa: BLE001 - this format cannot hold this mode here: try the next
                continue
            out[fmt] = buffer.getvalue()
            break
    return out


ENCODINGS = _encodings()


def _damaged(data: bytes, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for i in rng.integers(0, len(data), size=max(1, len(data) // 50)):
        flipped[i] ^= int(rng.integers(1, 256))
    header = bytearray(data)
    header[8:40] = bytes(len(header[8:40]))
    return [
        b"", data[:1], data[:16], data[: len(data) // 2], data[:-1], bytes(flipped), bytes(header),
        data[:64] + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), data + data,
    ]


@contextmanager
def _deadline(seconds: int):
    """A hang fails the test instead of blocking the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _usable_or_image_error(source) -> None:
    with _deadline(20):
        try:
            loaded = load_image(source)
        except ImageError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.ndim == 3 and min(loaded.rgb.shape[:2]) >= MIN_SIDE


def test_every_writable_format_is_covered():
    # AVIF (issue case 4), WEBP, JPEG2000 and the classic formats are all in the fuzz set
    assert {"AVIF", "BMP", "GIF", "JPEG", "JPEG2000", "PNG", "TIFF", "WEBP"} <= set(ENCODINGS)


@pytest.mark.parametrize("fmt", sorted(ENCODINGS))
def test_damaged_files_of_every_format(tmp_path, fmt):
    for i, data in enumerate(_damaged(ENCODINGS[fmt], seed=zlib.crc32(fmt.encode()))):
        path = tmp_path / f"damaged_{i}.jpg"  # a misleading name: the content decides
        path.write_bytes(data)
        _usable_or_image_error(path)
        _usable_or_image_error(data)


@pytest.mark.parametrize("fmt", sorted(READ_ONLY_MAGIC))
def test_magic_numbers_with_garbage(tmp_path, fmt):
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))
    for size in (0, 10, 300, 5000):
        path = tmp_path / f"{fmt.lower()}.png"
        path.write_bytes(READ_ONLY_MAGIC[fmt] + rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        _usable_or_image_error(path)


def test_non_regular_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    server = socket.socket(socket.AF_UNIX)
    sock = tmp_path / "s.jpg"
    server.bind(str(sock))
    try:
        for path, reason in ((fifo, "not a regular file"), ("/dev/null", "not a regular file"),
                             (folder, "is a folder"), (sock, "not a regular file"),
                             (tmp_path / "missing.jpg", "not found")):
            with _deadline(10), pytest.raises(ImageError, match=reason):
                load_image(path)
    finally:
        server.close()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_rotation(tmp_path, orientation):
    face = _face().resize((SIDE * 2, SIDE * 3 // 2))  # not square: a transposition shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    face.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    upright = face.transpose({2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                              8: Image.Transpose.ROTATE_90}[orientation]) if orientation > 1 else face
    assert loaded.rgb.shape == np.asarray(upright).shape
    assert np.abs(loaded.rgb.astype(int) - np.asarray(upright)).mean() < 6


FLOAT_CASES = {
    "outlier above 1.5": lambda f: _poke(f, 7.0),
    "one inf": lambda f: _poke(f, np.inf),
    "one -inf": lambda f: _poke(f, -np.inf),
    "one nan": lambda f: _poke(f, np.nan),
    "slightly over 1": lambda f: np.minimum(f * 1.02, 1.02),
    "negative noise": lambda f: f - 0.01,
    "float16": lambda f: f.astype(np.float16),
    "float64": lambda f: f.astype(np.float64),
}


def _poke(unit: np.ndarray, value: float) -> np.ndarray:
    out = unit.copy()
    out[3, 5, 1] = value
    return out


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_float_images_in_0_to_1_with_edge_values(case):
    """Issue case 9: a 0..1 image stays a 0..1 image whatever a few of its values are."""
    reference = np.asarray(_face())
    unit = reference.astype(np.float32) / 255
    loaded = load_image(FLOAT_CASES[case](unit)).rgb.astype(int)
    assert np.abs(loaded - reference).mean() < 4


def test_float_images_in_0_to_255_and_degenerate_ones():
    reference = np.asarray(_face())
    np.testing.assert_array_equal(load_image(reference.astype(np.float32)).rgb, reference)
    for degenerate in (np.zeros((SIDE, SIDE)), np.full((SIDE, SIDE), np.nan), np.full((SIDE, SIDE), np.inf),
                       np.full((SIDE, SIDE), -5.0)):
        rgb = load_image(degenerate).rgb
        assert rgb.shape == (SIDE, SIDE, 3) and rgb.dtype == np.uint8


INTERRUPTIONS = {
    "Ctrl-C": KeyboardInterrupt,
    "disk full": lambda: OSError(28, "No space left on device"),
    "out of memory": MemoryError,
    "cancel": lambda: Cancelled("cancelled"),
}


@pytest.mark.parametrize("kind", sorted(INTERRUPTIONS))
def test_interrupted_saves_keep_the_previous_result(fast_reconstruction, tmp_path, kind):
    rec, out = fast_reconstruction, tmp_path / "result"
    rec.save(out, formats="obj")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(folder):
        (folder / "half_written.bin").write_bytes(b"\0" * 1000)
        raise INTERRUPTIONS[kind]()

    expected = OutputError if kind == "disk full" else BaseException
    with pytest.raises(expected):
        rec.save(out, extra=interrupted)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]  # no staging folder or lock left


def test_cancel_during_save_keeps_the_previous_result(fast_reconstruction, tmp_path):
    rec, out = fast_reconstruction, tmp_path / "result"
    rec.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    progress = Progress(callback=lambda stage, done, total: progress.cancel() if stage == "save" else None)
    with pytest.raises(Cancelled):
        rec.save(out, formats="obj", progress=progress)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
