"""End-to-end reconstruction on real photos: results, failures, cancellation."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import face_photo

from core.appearance.texture_gcn import TextureRefinementSettings
from core.errors import Cancelled, FaceSelectionError, ImageError, NoFaceError
from core.fitting.refinement import RefinementSettings
from core.pipeline import preset_settings
from core.progress import Progress


def test_reconstruction_is_complete_and_consistent(fast_reconstruction):
    rec = fast_reconstruction
    model = rec.model
    assert rec.vertices.shape == (model.num_vertices, 3)
    assert rec.albedo.shape == (512, 1024, 3) and rec.albedo.dtype == np.uint8
    assert rec.landmarks68_2d.shape == (68, 2)
    # The fitted model's landmarks lie on the detected face, with eyes and mouth in order.
    x0, y0, x1, y1 = rec.face_box
    pad = 0.15 * (x1 - x0)
    lm = rec.landmarks68_2d
    assert np.all((lm[:, 0] > x0 - pad) & (lm[:, 0] < x1 + pad))
    assert np.all((lm[:, 1] > y0 - pad) & (lm[:, 1] < y1 + pad))
    assert lm[36, 0] < lm[45, 0] and lm[27, 1] < lm[30, 1] < lm[51, 1] < lm[8, 1]
    assert np.all((rec.params.expression >= 0) & (rec.params.expression <= 1))
    assert set(rec.expression_weights) == set(model.expression_names)
    for stage in ("load", "detect", "regress", "refine", "texture", "total"):
        assert rec.timings[stage] >= 0


def test_refinement_lowers_photometric_error(fast_reconstruction):
    m = fast_reconstruction.metrics
    assert m["photometric_after"] < 0.7 * m["photometric_before"]
    # ...without giving up the landmark fit
    assert m["landmark_after"] < 1.5 * m["landmark_before"] + 0.5


def test_albedo_matches_the_photo_where_seen(fast_reconstruction):
    rec = fast_reconstruction
    seen = rec.albedo_visibility > 0.9
    assert seen[:, :512].mean() > 0.25  # much of the face tile is seen in a frontal photo
    skin = rec.albedo[seen].astype(float).mean(0)
    assert 60 < skin.mean() < 250 and skin[0] >= skin[2]  # de-lit skin tone, red over blue


def test_several_faces_picked_by_index_largest_first(pipeline):
    photo = face_photo("trump_hillary.jpg")
    settings = preset_settings("fast", texture_size=256)
    settings.refinement.iterations = 0
    default = pipeline.run(photo, settings)
    settings.face_index = 0
    first = pipeline.run(photo, settings)
    settings.face_index = 1
    second = pipeline.run(photo, settings)
    area = [np.prod(r.face_box[2:] - r.face_box[:2]) for r in (first, second)]
    assert area[0] >= area[1]
    assert abs(first.face_box[0] - second.face_box[0]) > 50
    # Two people about equally large: by default the more plausible face (detection._rank, whose
    # choice test_detection checks), either of the two here.
    assert any(np.allclose(default.face_box, r.face_box) for r in (first, second))
    settings.face_index = 5
    with pytest.raises(FaceSelectionError, match="2 face"):
        pipeline.run(photo, settings)


def test_no_face_and_bad_files(pipeline, tmp_path):
    settings = preset_settings("fast")
    rng = np.random.default_rng(0)
    with pytest.raises(NoFaceError):
        pipeline.run(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), settings)
    bogus = tmp_path / "photo.jpg"
    bogus.write_text("not an image")
    with pytest.raises(ImageError, match="photo.jpg"):
        pipeline.run(bogus, settings)
    with pytest.raises(ImageError):
        pipeline.run(tmp_path / "missing.png", settings)


# The stages of a run with detail, in order; "save" is Reconstruction.save's.
DETAIL_STAGES = ("load CLIP", "load", "detect", "regress", "refine", "texture", "refine texture", "detail",
                 "save")
PHOTO = "000033.jpg"  # 250 x 262 px


@pytest.fixture(scope="module")
def detail_settings(tmp_path_factory):
    """Fast preset plus short texture refinement and detail stages (a tiny random-weight CLIP:
    no download)."""
    from clip_configs import register_tiny_configs

    register_tiny_configs(tmp_path_factory.mktemp("clip_configs"))
    return preset_settings("fast", device="cpu", texture_size=128,
                           refinement=RefinementSettings(iterations=4, resolution=96),
                           texture_refinement=TextureRefinementSettings(iterations=2, resolution=64),
                           detail=True, detail_iterations=2, detail_resolution=64,
                           clip_model="likeness-tiny-vit12", clip_pretrained=None)


def stage_recorder(stages: list[str], cancel_at: str | None = None) -> Progress:
    progress = Progress()

    def on_progress(name, done, total):
        if stages[-1:] != [name]:
            stages.append(name)
        if name == cancel_at:
            progress.cancel()

    progress.callback = on_progress
    return progress


@pytest.mark.parametrize("stage", DETAIL_STAGES)
def test_cancel_at_every_stage_stops_there_and_writes_nothing(pipeline, detail_settings, tmp_path, stage):
    """A cancel request from the stage's own progress callback (as the UI's Cancel does from
    another thread) stops the run before the next stage; a cancelled run returns no result (the
    Blender operator would build it) and writes nothing. Each stage is tested as the last one of
    its run: "texture" in a run without detail, "save" after a run without detail."""
    with_detail = stage in ("load CLIP", "detail")
    settings = detail_settings if with_detail else replace(detail_settings, detail=False)
    expected = [s for s in DETAIL_STAGES if with_detail or s not in ("load CLIP", "detail")]
    stages: list[str] = []
    progress = stage_recorder(stages, cancel_at=stage)
    with pytest.raises(Cancelled):
        rec = pipeline.run(face_photo(PHOTO), settings, progress)
        assert stage == "save", "the cancelled run returned a result"
        rec.save(tmp_path, progress=progress)
    assert stages == expected[: expected.index(stage) + 1]
    assert not any(tmp_path.iterdir())


def test_uncancelled_run_passes_every_stage(pipeline, detail_settings, tmp_path):
    stages: list[str] = []
    progress = stage_recorder(stages)
    pipeline.run(face_photo(PHOTO), detail_settings, progress).save(tmp_path, progress=progress)
    assert stages == list(DETAIL_STAGES)
    assert (tmp_path / "000033_normal.png").is_file()


def test_unknown_preset_is_a_clear_error():
    from core.errors import LikenessError

    with pytest.raises(LikenessError, match="fast, balanced, quality"):
        preset_settings("ultra")


def test_detail_guidance_auto_falls_back_to_photometric_once(pipeline, tmp_path, monkeypatch):
    """Without CLIP weights, "auto" runs photometric and says so on the first photo only; "clip"
    stops with the weights' message; an unknown mode is a clear error."""
    from core.errors import AssetError, LikenessError
    from core.pipeline import Pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LIKENESS_CLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: no weights anywhere
    fresh = Pipeline(model=pipeline.model)
    settings = preset_settings("quality", device="cpu")
    assert fresh.prepare(settings) is None and fresh.prepare(settings) is None  # a batch goes on
    notes = fresh.guidance_notes() + fresh.guidance_notes()
    assert len(notes) == 1 and "photometric mode" in notes[0]
    with pytest.raises(AssetError):
        fresh.prepare(preset_settings("quality", device="cpu", detail_guidance="clip"))
    assert fresh.prepare(preset_settings("quality", device="cpu", detail_guidance="photometric")) is None
    with pytest.raises(LikenessError, match="auto, clip, photometric"):
        preset_settings("quality", detail_guidance="clever")
