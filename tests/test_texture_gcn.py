"""core.appearance.texture_gcn: the graph-network texture refinement on a real reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import face_photo

from core.appearance.identity import load_identity_net
from core.appearance.texture import build_texture, uv_surface
from core.appearance.texture_gcn import (
    MeshGraph,
    TextureRefinementSettings,
    TextureView,
    _ViewLoss,
    refine_texture,
    sample_atlas,
    vertex_uvs,
)
from core.errors import AssetError
from core.fitting.detection import FaceDetection
from core.fitting.refinement import Crop
from core.geometry.face_model import SKIN_POLYGONS
from core.pipeline import Pipeline, preset_settings

SETTINGS = TextureRefinementSettings(iterations=12, resolution=128)


@pytest.fixture(scope="module")
def refined(fast_reconstruction):
    rec = fast_reconstruction
    model = rec.model
    detection = FaceDetection(rec.face_box, 1.0, rec.detected_landmarks, None, "mediapipe")
    surface = uv_surface(model, 256)
    coarse = build_texture(model, rec.image, rec.params, 256, surface)
    graph = MeshGraph.of_skin(model)
    result = refine_texture(model, [TextureView(rec.image, rec.params, detection)], coarse, surface, graph,
                            load_identity_net(download=False), SETTINGS)
    return coarse, result, graph


def test_laplacian_spectrum_is_chebyshevs_domain(face_model):
    graph = MeshGraph.of_skin(face_model)
    faces, _ = face_model.triangles(SKIN_POLYGONS)
    assert graph.num_vertices == faces.max() + 1
    dense = graph.laplacian.to_dense()
    assert np.allclose(dense, dense.T)
    # Rayleigh quotients of a few vectors stay within [-1, 1] (the spectrum of L - I)
    x = np.random.default_rng(0).standard_normal((graph.num_vertices, 4)).astype(np.float32)
    ratio = (x * (dense.numpy() @ x)).sum(0) / (x * x).sum(0)
    assert np.all(np.abs(ratio) <= 1)


def test_identity_loss_brings_the_render_nearer_the_photo(refined):
    _, result, _ = refined
    m = result.metrics
    assert m["texture_identity_after"] < m["texture_identity_before"]
    # ...at a small cost in pixel fidelity (measured: +1% in 12 steps, +13% in 40 at 224 px)
    assert m["texture_pixel_after"] < 1.25 * m["texture_pixel_before"]


def test_unseen_vertices_stay_near_the_coarse_texture(refined, face_model):
    coarse, result, graph = refined
    uvs = vertex_uvs(face_model, graph.num_vertices)
    before = sample_atlas(coarse.albedo.astype(np.float32) / 255, uvs)
    change = np.abs(result.vertex_albedo - before).sum(1)
    trust = sample_atlas(coarse.trust, uvs)[:, 0]
    visible = sample_atlas(coarse.visibility, uvs)[:, 0]
    assert change[trust > 0.5].mean() > 0  # the network did something where the photo shows skin
    # and little (under ~4/255 per channel) where the photo shows nothing or no skin
    assert change[visible == 0].mean() < 0.05 and change[trust == 0].mean() < 0.05


def test_atlas_is_coarse_plus_a_smooth_correction(refined):
    coarse, result, _ = refined
    assert result.albedo.shape == coarse.albedo.shape and result.albedo.dtype == np.uint8
    delta = result.albedo.astype(float) - coarse.albedo
    assert np.abs(delta).max() > 0
    # a smooth field: neighbouring texels' corrections differ far less than the correction itself
    assert np.abs(np.diff(delta, axis=1)).mean() < 0.5 * np.abs(delta).mean() + 0.5


def test_presets_refine_texture_except_fast():
    assert preset_settings("fast").texture_refinement.iterations == 0
    assert preset_settings("balanced").texture_refinement.iterations > 0
    assert preset_settings("quality").texture_refinement.iterations > 0


def test_missing_identity_network_is_skipped_with_a_warning(face_model, monkeypatch, tmp_path):
    monkeypatch.setenv("LIKENESS_FACE_API", str(tmp_path))  # no weights there, and no download
    settings = preset_settings("fast", texture_size=128, texture_refinement=TextureRefinementSettings(
        iterations=2, resolution=96))
    pipe = Pipeline(model=face_model)
    try:
        rec = pipe.run(face_photo("000033.jpg"), settings)
    finally:
        pipe.close()
    assert any("without its identity loss" in w and "LIKENESS_FACE_API" in w for w in rec.warnings)
    assert "texture_identity_after" not in rec.metrics and "texture_pixel_after" in rec.metrics


def test_a_missing_identity_network_is_looked_for_once(face_model, monkeypatch, tmp_path):
    """Offline, every photo of a batch would otherwise retry the download (with back-off) for each
    stage that wants the network: the first failure is remembered by the Pipeline."""
    monkeypatch.setenv("LIKENESS_FACE_API", str(tmp_path))
    pipe = Pipeline(model=face_model)
    with pytest.raises(AssetError) as first:
        _ = pipe.identity_net
    with pytest.raises(AssetError) as again:
        _ = pipe.identity_net
    assert again.value is first.value


def test_identity_renders_show_eyes_and_teeth(fast_reconstruction):
    """The renders the identity loss sees are what users see: eyeballs in the photo's iris colour
    (not holes into the head) where the photo shows the irises."""
    rec = fast_reconstruction
    detection = FaceDetection(rec.face_box, 1.0, rec.detected_landmarks, None, "mediapipe")
    n = MeshGraph.of_skin(rec.model).num_vertices
    coarse = torch.from_numpy(sample_atlas(rec.albedo.astype(np.float32) / 255, vertex_uvs(rec.model, n)))
    settings = TextureRefinementSettings(resolution=224)
    view = _ViewLoss(rec.model, TextureView(rec.image, rec.params, detection), coarse, rec.albedo, n,
                     load_identity_net(download=False), settings)
    image = view.fixed.image(coarse, view.background).numpy()
    crop = Crop.around(rec.face_box, settings.resolution)
    x, y = np.floor(crop.points(rec.detected_landmarks[[468, 473]])).astype(int).T  # the irises
    assert not view.fixed.mask[y, x].any()  # the eyeballs cover the skin there
    assert (image[y, x].mean(1) < 0.45).all()  # a dark iris/pupil, not skin or sclera
