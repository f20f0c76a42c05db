"""The refinement crop maps photo, landmarks and camera consistently."""

import numpy as np

from core.fitting.refinement import Crop
from core.geometry.params import Camera


def test_crop_maps_points_pixels_and_camera_consistently():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    crop = Crop.around(np.array([150.0, 80.0, 250.0, 200.0]), size=96)
    image = crop.image(rgb)
    assert image.shape == (96, 96, 3)
    # A pixel centre maps to the crop pixel centre with the same content (nearest check at scale < 1).
    p = crop.points(np.array([[200.5, 140.5]]))[0]
    assert 0 <= p[0] < 96 and 0 <= p[1] < 96
    # Projection through the crop camera equals cropping the projection through the photo camera.
    cam = Camera(900.0, 200.0, 150.0, 400, 300)
    pts = np.array([[0.01, -0.02, 0.6], [-0.03, 0.05, 0.7]])
    assert np.allclose(crop.camera(cam).project(pts), crop.points(cam.project(pts)), atol=1e-9)
    # A photo-space dot lands at the mapped crop coordinate.
    dot = np.zeros((300, 400, 3), np.uint8)
    dot[139:142, 199:202] = 255
    crop_dot = Crop(150.0, 90.0, 1.0, 100).image(dot)
    rows, cols = np.nonzero(crop_dot[..., 0] > 128)
    centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
    assert np.allclose(centre, Crop(150.0, 90.0, 1.0, 100).points(np.array([[200.5, 140.5]]))[0], atol=0.01)


def test_refined_geometry_explains_held_out_pixels_better(pipeline):
    """Same regression start, same held-out checkerboard: refining the geometry (not just light
    and albedo) lowers the photometric error on skin pixels the loss never saw."""
    from dataclasses import replace

    from conftest import face_photo

    from core.fitting.detection import detect_face
    from core.fitting.refinement import refine
    from core.image_io import load_image
    from core.pipeline import preset_settings

    rgb = load_image(face_photo("000002.jpg")).rgb
    det = detect_face(rgb, detector=pipeline.detector)
    settings = preset_settings("fast")
    coarse, target = pipeline.fit_landmarks(det, rgb.shape[1], rgb.shape[0], settings.regression)
    full = replace(settings.refinement, holdout=True, iterations=60)
    args = (pipeline.model, rgb, coarse, target, det, pipeline.surface_points(100))
    light_only = refine(*args, replace(full, optimise_geometry=False)).metrics
    refined = refine(*args, full).metrics
    assert refined["heldout_photometric_after"] < 0.97 * light_only["heldout_photometric_after"]
    assert np.isfinite(refined["landmark_after"])


def test_likeness_pass_brings_the_textured_render_nearer_the_photo(pipeline, fast_reconstruction):
    """The likeness pass moves geometry, pose and light so that the textured render (at the photo's
    view and turned) is nearer the photo for the face-recognition network, without losing the
    landmarks; it runs after the texture stage, which then unwraps the photo again."""
    from dataclasses import replace

    from conftest import face_photo

    from core.pipeline import preset_settings
    from core.progress import Progress

    settings = preset_settings("fast")
    settings = replace(settings, refinement=replace(settings.refinement, likeness_iterations=8))
    stages = []
    rec = pipeline.run(face_photo("000002.jpg"), settings,
                       Progress(lambda stage, done, total: stages.append(stage)))
    m = rec.metrics
    assert m["likeness_after"] < m["likeness_before"]
    # the pass's own photometric terms are reported apart from the first refinement's
    assert m["likeness_photometric_after"] < m["likeness_photometric_before"]
    assert m["photometric_after"] != m["likeness_photometric_after"]
    assert "refine likeness" in stages and stages.count("texture") == 2
    assert rec.timings["likeness"] > 0
    # the landmarks stay where the fit without the pass put them (within 2% of the face box side)
    box = rec.face_box[2:] - rec.face_box[:2]
    moved = np.linalg.norm(rec.landmarks68_2d - fast_reconstruction.landmarks68_2d, axis=1).mean()
    assert moved < 0.02 * box.max()
