"""scripts/likeness_batch.py end to end: a real photo and a missing one through the real core,
run as its own process with the bpy module (as ``blender --background --python`` would run it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, face_photo

bpy = pytest.importorskip("bpy")

PHOTO = "000031.jpg"


def test_batch_writes_a_blend_per_photo_and_reports_failures(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "likeness_batch.py"), "--input", str(face_photo(PHOTO)),
         str(tmp_path / "missing.jpg"), "--output", str(out), "--preset", "fast", "--device", "cpu",
         "--scalp", "hair"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr  # one of the two failed
    assert "1 of 2 photo(s) done" in result.stdout
    assert "missing.jpg: FAILED" in result.stdout
    folder = out / "000031"
    blend = folder / "000031.blend"
    assert blend.is_file()
    assert {"000031.obj", "000031.glb", "000031_albedo.png", "000031_params.json"} <= {
        p.name for p in folder.iterdir()}
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert not (out / "missing").exists()

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    head = bpy.data.objects["000031"]
    assert len(head.data.shape_keys.key_blocks) == 54
    assert bpy.context.scene.camera is not None and bpy.context.scene.camera.parent == head
    assert all(image.packed_file is not None for image in bpy.data.images)
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)


def test_batch_usage_errors(tmp_path):
    script = str(REPO / "scripts" / "likeness_batch.py")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, script, "--input", str(empty), "--output", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no image files" in result.stderr
    result = subprocess.run([sys.executable, script, "--output", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
