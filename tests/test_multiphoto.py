"""Several photos of one person -> one head: shared identity, per-photo fits, dropped photos."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, face_photo

from core.appearance.texture_gcn import TextureRefinementSettings
from core.displacement import detail as D
from core.pipeline import preset_settings
from core.reconstruction import PhotoFit

PERSON = ("img13.jpg", "img14.jpg", "img15.jpg")  # deepface person01, three photos
STRANGER = "img4.jpg"  # deepface person00


@pytest.fixture(scope="module")
def mixed(pipeline):
    """One run over the person's three photos, another person's photo and a photo without a face."""
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    photos = [face_photo(PERSON[0]), face_photo(STRANGER), noise, *map(face_photo, PERSON[1:])]
    settings = preset_settings("fast", texture_size=256)
    return pipeline.run(photos, settings)


def test_one_identity_per_photo_fits(mixed):
    rec = mixed
    assert [p.source.rsplit("/", 1)[-1] for p in rec.photos] == list(PERSON)
    assert all(isinstance(p, PhotoFit) for p in rec.photos)
    # One identity, but each photo its own pose, expression and light.
    for photo in rec.photos:
        assert np.array_equal(photo.params.identity, rec.params.identity)
        assert photo.params.sh.any() and photo.landmarks68_2d.shape == (68, 2)
    assert not np.allclose(rec.photos[0].params.expression, rec.photos[2].params.expression)
    assert rec.photos[0].params.rotation is rec.params.rotation  # the single-photo fields: photos[0]
    # Each photo's fitted landmarks lie on its own detected face.
    for photo in rec.photos:
        x0, y0, x1, y1 = photo.face_box
        pad = 0.15 * (x1 - x0)
        lm = photo.landmarks68_2d
        assert np.all((lm[:, 0] > x0 - pad) & (lm[:, 0] < x1 + pad))
        assert np.all((lm[:, 1] > y0 - pad) & (lm[:, 1] < y1 + pad))
    assert rec.albedo.shape == (256, 512, 3)
    assert rec.albedo_visibility[:, :256].mean() > 0.3


def test_another_person_and_a_faceless_photo_are_dropped_with_reasons(mixed):
    reasons = {d.source: d.reason for d in mixed.dropped}
    assert set(reasons) == {STRANGER, "photo 3"}
    assert "same person" in reasons[STRANGER]
    assert "face" in reasons["photo 3"].lower()
    assert any(STRANGER in w and "left out" in w for w in mixed.warnings)


@pytest.fixture(scope="module")
def two_views(pipeline):
    """Two photos of the person with the GCN texture refinement and the detail stage on (lean)."""
    settings = preset_settings("fast", texture_size=128, detail=True, detail_iterations=4,
                               detail_resolution=64, detail_guidance="photometric",
                               texture_refinement=TextureRefinementSettings(iterations=3, resolution=96))
    return pipeline.run([face_photo(p) for p in PERSON[:2]], settings)


def test_texture_refinement_and_detail_use_every_photo(two_views):
    rec = two_views
    assert len(rec.photos) == 2 and rec.detail is not None
    for name in ("texture_pixel", "texture_identity", "detail_render_error"):
        before = [p.metrics[f"{name}_before"] for p in rec.photos]
        after = [p.metrics[f"{name}_after"] for p in rec.photos]
        assert before[0] != before[1] and after != before  # each photo's own term, optimised
    # One texture for both: the GCN's unseen-vertex term is shared; the detail's data terms sum.
    assert rec.photos[0].metrics["texture_vertex_after"] == rec.photos[1].metrics["texture_vertex_after"]
    objective = D.DetailObjective(rec, D.DetailSettings(iterations=0, resolution=64, guidance="photometric",
                                                        clip_weight=0.0), None, torch.device("cpu"))
    assert [v.fit for v in objective.views] == rec.photos
    params = torch.full((64, 64), 0.1)
    _, terms = objective.evaluate(params)
    field = objective.vertex_displacement(objective.field(params))
    views = [v.data_terms(field, objective.settings, True) for v in objective.views]
    assert terms["photometric"] == pytest.approx(sum(float(v["photometric"]) for v in views), rel=1e-5)


def _person_folder(root, name="zuck"):
    folder = root / name
    folder.mkdir(parents=True)
    for photo in PERSON:
        shutil.copy(face_photo(photo), folder / photo)
    return folder


def _photo_sources(params_json):
    return sorted(Path(p["source"]).name for p in json.loads(params_json.read_text())["photos"])


def test_cli_people_one_head_per_subfolder(tmp_path):
    root = tmp_path / "people"
    _person_folder(root)
    (root / "nobody").mkdir()
    (root / "nobody" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    args = ["--people", str(root), "-o", str(out), "--preset", "fast", "--no-glb"]
    result = subprocess.run([sys.executable, "-m", "core", "reconstruct", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr  # the person without a usable photo
    assert "1 of 2 head(s) done" in result.stdout
    assert "zuck: ok from 3 photo(s)" in result.stdout and "nobody: FAILED" in result.stdout
    assert {"zuck.obj", "zuck_albedo.png", "zuck_preview.png"} <= {p.name for p in (out / "zuck").iterdir()}
    assert _photo_sources(out / "zuck" / "zuck_params.json") == sorted(PERSON)
    assert not (out / "nobody").exists()


def test_batch_script_person(tmp_path):
    bpy = pytest.importorskip("bpy")
    person = _person_folder(tmp_path)
    out = tmp_path / "out"
    args = ["--person", str(person), "--output", str(out), "--preset", "fast", "--device", "cpu"]
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "likeness_batch.py"), *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "zuck: ok from 3 photo(s)" in result.stdout and "1 of 1 head(s) done" in result.stdout
    assert _photo_sources(out / "zuck" / "zuck_params.json") == sorted(PERSON)
    bpy.ops.wm.open_mainfile(filepath=str(out / "zuck" / "zuck.blend"))
    cameras = [o for o in bpy.data.objects["zuck"].children if o.type == "CAMERA"]
    assert len(cameras) == 3 and bpy.context.scene.camera in cameras  # a camera per photo
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
