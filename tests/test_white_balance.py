"""The light's colour divided out of the albedo (core.appearance.white_balance), on real photos."""

import numpy as np
import pytest
from conftest import face_photo

from core.appearance.texture import TextureSettings, photo_illuminant
from core.appearance.white_balance import LUMA, estimate_illuminant, log_chroma, remove_illuminant
from core.errors import LikenessError
from core.geometry.parts import linear_to_srgb, srgb_to_linear
from core.image_io import load_image
from core.pipeline import preset_settings

CAST = np.array([1.25, 1.0, 0.7])  # a warm room light, linear RGB


def _cast(rgb: np.ndarray) -> np.ndarray:
    return np.round(linear_to_srgb(srgb_to_linear(rgb / 255.0) * CAST) * 255).astype(np.uint8)


def _skin_chroma(rec) -> np.ndarray:
    """Log chroma of the mean linear albedo over the texels the photo coloured."""
    weight = rec.albedo_trust > 0.5
    return log_chroma(srgb_to_linear(rec.albedo[weight].astype(np.float64) / 255).mean(0))


def _light_chroma(metrics: dict) -> np.ndarray:
    return log_chroma(np.array([metrics[f"illuminant_{c}"] for c in "rgb"]))


def test_neutral_photo_is_left_nearly_unchanged(fast_reconstruction):
    light = _light_chroma(fast_reconstruction.metrics)
    assert np.abs(light).max() < 0.1  # at most a 10% channel ratio on a daylight photo
    assert fast_reconstruction.metrics["illuminant_confidence"] > 0.3


def test_colour_cast_gives_nearly_the_same_albedo(fast_reconstruction, pipeline):
    original = fast_reconstruction
    tinted = pipeline.run(_cast(original.image), preset_settings("fast"))
    off_settings = preset_settings("fast", texture=TextureSettings(white_balance="off"))
    off = pipeline.run(_cast(original.image), off_settings)
    cast = log_chroma(CAST)
    assert np.linalg.norm(_skin_chroma(off) - _skin_chroma(original) - cast) < 0.1  # off keeps the cast
    left = np.linalg.norm(_skin_chroma(tinted) - _skin_chroma(original))
    assert left < 0.4 * np.linalg.norm(cast)  # most of the cast is gone
    assert "illuminant_r" not in off.metrics
    # the eyes every output shows: measured in the photo, balanced like the albedo
    iris = {name: log_chroma(np.array(rec.iris_colour)) for name, rec in
            (("original", original), ("tinted", tinted), ("off", off))}
    assert np.linalg.norm(iris["off"] - iris["original"] - cast) < 0.15
    assert np.linalg.norm(iris["tinted"] - iris["original"]) < 0.4 * np.linalg.norm(cast)


def test_dark_skin_in_a_tinted_room_stays_dark(pipeline):
    """000037: dark skin under a green-yellow stadium light. The light lacks blue; dividing it
    out keeps the skin's brightness."""
    rgb = load_image(face_photo("000037.jpg")).rgb
    face = pipeline.detector.detect(rgb)[0]
    skin = pipeline.skin_trust(rgb, face)
    light = estimate_illuminant(rgb, face.landmarks, skin)
    assert light.rgb[2] < 0.9 * light.rgb[1] and light.confidence > 0.3
    pixels = rgb[(skin.trust > 0.5) & ~skin.parts].astype(np.float64) / 255
    before = srgb_to_linear(pixels) @ LUMA
    after = srgb_to_linear(remove_illuminant(pixels, light)) @ LUMA
    assert 0.85 < np.median(after / before) < 1.15


def test_white_balance_setting_is_checked():
    with pytest.raises(LikenessError, match="white balance"):
        photo_illuminant(np.zeros((8, 8, 3), np.uint8), None, None, TextureSettings(white_balance="grey"))


def test_each_photo_is_balanced_before_fusion(fast_reconstruction, pipeline):
    """Two photos of one person, one under a warm light: each photo's light is divided out
    before fusing, so the fusion's colour gains (which match photos to each other) stay near 1."""
    rgb = fast_reconstruction.image
    rec = pipeline.run([rgb, _cast(rgb)], preset_settings("fast", texture_size=128))
    gains = np.array([[p.metrics[f"colour_gain_{c}"] for c in "rgb"] for p in rec.photos])
    lights = [_light_chroma(p.metrics) for p in rec.photos]
    assert np.linalg.norm(lights[1] - lights[0] - log_chroma(CAST)) < 0.4 * np.linalg.norm(log_chroma(CAST))
    assert np.abs(np.log(gains)).max() < 0.07  # 0.035 here; without white balance 0.16


def test_a_clipped_red_channel_is_given_back(pipeline):
    """000002's skin with its red clipped at 0.82 on purpose (about a third of the trusted skin,
    its lit half): what green and blue predict (core.appearance.clipping) gives most of it back;
    where red was not clipped nothing changes."""
    from core.appearance.clipping import unclip_skin

    rgb = load_image(face_photo("000002.jpg")).rgb
    face = pipeline.detect(rgb)
    skin = pipeline.skin_trust(rgb, face)
    clipped = rgb.copy()
    clipped[..., 0] = np.minimum(rgb[..., 0], 209)
    trusted = (skin.trust > 0.5) & ~skin.parts
    hit = trusted & (rgb[..., 0] > 215)
    assert 0.2 < hit.sum() / trusted.sum() < 0.5
    light = estimate_illuminant(clipped, face.landmarks, skin).rgb
    restored = unclip_skin(clipped, skin, light)
    truth = srgb_to_linear(rgb[hit, 0] / 255.0)
    before = np.log(srgb_to_linear(clipped[hit, 0] / 255.0) / truth)  # log error, all negative
    after = np.log(srgb_to_linear(np.clip(restored[hit, 0], 0, 1.3)) / truth)
    # the bias mostly gone (-0.16 -> +0.05); what is left per pixel is the skin's own variation of redness
    assert abs(np.median(after)) < 0.4 * abs(np.median(before))
    assert np.median(np.abs(after)) < 0.6 * np.median(np.abs(before))
    low = trusted & (rgb[..., 0] < 190)
    assert np.array_equal(restored[low], rgb[low] / np.float32(255))


def test_a_clipped_red_does_not_turn_bright_skin_green(pipeline):
    """vd026.png: a video frame under a red stage light whose red channel stops at 235 on the lit
    skin (forehead, nose ridge) while green and blue rise on. Dividing the red light out of those
    paler texels turned them grey-green in the albedo (0.2 less red in log R/G, as a median, than his
    other skin: 0.58 -> 0.39); with red given back they keep his skin's colour (0.02 apart)."""
    from core.appearance.texture import unwrap

    rgb = load_image(face_photo("vd026.png")).rgb
    rec = pipeline.run(rgb, preset_settings("fast"))
    face = pipeline.detect(rgb)
    skin = pipeline.skin_trust(rgb, face)
    light = photo_illuminant(rgb, face.landmarks, skin, TextureSettings())
    evidence = unwrap(rec.model, rgb, rec.params, pipeline.uv_surface(256), skin, light)
    trusted = (evidence.weight > 0.3) & (evidence.parts < 0.5)
    albedo = srgb_to_linear(evidence.albedo[trusted].astype(np.float64))
    redness = log_chroma(albedo)[:, 0]
    lit = evidence.observed[trusted][:, 0] >= 0.9  # red at the top of the video's range
    assert lit.mean() > 0.1
    assert np.median(redness[~lit]) - np.median(redness[lit]) < 0.1
