"""python -m core reconstruct: good photos are done, bad ones reported, exit status says so,
and nothing but Likeness's own output reaches the terminal."""

import shutil
import subprocess
import sys

from conftest import REPO, face_photo


def test_cli_batch_with_a_bad_file(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(face_photo("000002.jpg"), inputs / "good.jpg")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "core", "reconstruct", str(inputs), "-o", str(out),
         "--preset", "fast", "--no-glb"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 2 photo(s) done" in result.stdout
    assert "broken.png: FAILED" in result.stdout
    written = sorted(p.name for p in (out / "good").iterdir())
    assert {"good.obj", "good.mtl", "good_albedo.png", "good_preview.png", "good_params.json"} <= set(written)
    assert not (out / "broken").exists()
    # MediaPipe's native TensorFlow Lite / absl log lines are kept off the terminal (no bars either:
    # stderr is not a terminal here)
    assert result.stderr == ""


def test_cli_usage_errors(tmp_path):
    args = [sys.executable, "-m", "core", "reconstruct", str(tmp_path), "-o", str(tmp_path / "o")]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no image files" in result.stderr


def test_facial_hair_option_keeps_hair_by_default():
    from core.cli import _parser

    args = _parser().parse_args(["reconstruct", "a.jpg", "-o", "out", "--facial-hair", "skin"])
    assert args.facial_hair == "skin"
    assert _parser().parse_args(["demo", "-o", "out"]).facial_hair == "hair"  # kept by default


def test_scalp_option_is_skin_by_default():
    from core.cli import _parser

    assert _parser().parse_args(["reconstruct", "a.jpg", "-o", "out"]).scalp == "skin"
    assert _parser().parse_args(["demo", "-o", "out", "--scalp", "hair"]).scalp == "hair"
