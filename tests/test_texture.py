"""UV unwrapping, symmetry completion and hole filling of the skin atlas."""

import numpy as np
import pytest

from core.appearance.skin_mask import face_mask
from core.appearance.texture import Unwrap, complete, mirror_atlas, push_pull_fill, uv_surface
from core.errors import LikenessError
from core.geometry.correspondence import FACE_OVAL


def test_push_pull_keeps_known_and_fills_smoothly():
    rng = np.random.default_rng(0)
    values = np.zeros((64, 128, 3), np.float32)
    weights = np.zeros((64, 128), np.float32)
    values[:, :40] = [0.8, 0.5, 0.4]
    weights[:, :40] = 1
    values[:, 100:] = [0.2, 0.3, 0.4]
    weights[:, 100:] = 1
    weights[rng.random(weights.shape) < 0.05] = 0  # scattered holes inside the known parts too
    filled = push_pull_fill(values * weights[..., None], weights)
    known = weights > 0
    assert np.allclose(filled[known], values[known], atol=1e-5)
    gap = filled[:, 40:100]
    assert np.all(np.isfinite(gap)) and gap.min() >= 0.19 and gap.max() <= 0.81
    # The fill runs from one side's colour to the other's.
    assert filled[32, 42, 0] > filled[32, 70, 0] > filled[32, 98, 0]


def test_uv_surface_covers_face_and_mirrors(face_model):
    surface = uv_surface(face_model, 128)
    covered = surface.face_id >= 0
    assert covered[:, :128].mean() > 0.85  # the face island fills most of its tile
    assert covered[:, 128:].mean() > 0.3
    # The ICT face is left/right symmetric in 3D and in UV: mirrored texels hold mirrored points.
    pos = surface.interpolate(face_model.neutral.astype(np.float64))
    mirrored = mirror_atlas(pos)
    both = covered & mirror_atlas(covered)
    tile = both.copy()
    tile[:, 128:] = False
    err = np.abs(pos[tile][:, 0] + mirrored[tile][:, 0])
    assert np.median(err) < 1e-3  # metres
    assert np.allclose(surface.bary[covered].sum(-1), 1, atol=1e-6)


def test_a_fairly_seen_texel_shows_its_own_colour(face_model):
    """A cheek patch seen at weight 0.4 (a grazing view, soft trust) keeps its colour: blended with
    the fill in proportion to its weight, the face's own detail washed out (likeness, fifth session)."""
    surface = uv_surface(face_model, 128)
    pos = surface.interpolate(face_model.neutral.astype(np.float64))
    inside = face_model.neutral[face_model.landmarks68[[2, 31]]].mean(0)  # between jaw and nose
    cheek = pos[surface.covered][np.argmin(np.linalg.norm(pos[surface.covered] - inside, axis=-1))]
    patch = surface.covered & (np.linalg.norm(pos - cheek, axis=-1) < 0.012)
    rest = surface.covered & (np.linalg.norm(pos - cheek, axis=-1) > 0.03) & (pos[..., 2] > 0.05)
    albedo = np.zeros(patch.shape + (3,), np.float32)
    weight = np.zeros(patch.shape, np.float32)
    albedo[patch], weight[patch] = [0.8, 0.5, 0.4], 0.4
    albedo[rest], weight[rest] = [0.5, 0.4, 0.35], 1.0  # the rest of the face sets the fill
    zeros = np.zeros(patch.shape, np.float32)
    evidence = Unwrap(albedo, weight, weight, albedo, zeros, zeros)
    out = complete(face_model, surface, evidence)
    inner = patch & (np.linalg.norm(pos - cheek, axis=-1) < 0.006)
    assert inner.sum() > 20
    assert np.abs(out[inner] - [0.8, 0.5, 0.4]).max() < 0.01


# --------------------------------------------------------------------------------------------
# What may colour skin, and what the completion puts where nothing trusted was seen
# (real photo 000002.jpg: red hair, light background, shared with the pipeline tests).


def _projected_pixels(rec, surface):
    verts_cam = rec.params.to_camera(rec.vertices.astype(np.float64))
    texel_pos = surface.interpolate(verts_cam)
    uv = rec.params.camera.project(np.where(texel_pos[..., 2:] > 0, texel_pos, 1).reshape(-1, 3))
    return uv.reshape(texel_pos.shape[:2] + (2,))


def test_skin_trust_rejects_background_and_hair(fast_reconstruction, pipeline):
    rec = fast_reconstruction
    lm = rec.detected_landmarks
    trust = rec.skin_trust
    person = pipeline.segmenter.segment(rec.image, lm)
    assert trust.shape == rec.image.shape[:2]
    assert trust[person < 0.2].max() == 0  # no background pixel is skin
    cheek = np.round(lm[[50, 280]]).astype(int)  # MediaPipe cheek points
    assert (trust[cheek[:, 1], cheek[:, 0]] > 0.9).all()
    # This subject's hair is red: strongly red person pixels outside the face oval are hair.
    img = rec.image.astype(int)
    hair = (person > 0.5) & (img[..., 0] > img[..., 1] + 70) & ~face_mask(lm, *trust.shape)
    assert hair.sum() > 1000 and trust[hair].mean() < 0.02


def test_texels_seen_through_non_skin_are_untrusted(fast_reconstruction, pipeline):
    import cv2

    rec = fast_reconstruction
    surface = pipeline.uv_surface(rec.albedo.shape[0])
    px = np.floor(_projected_pixels(rec, surface)).astype(int)
    h, w = rec.image.shape[:2]
    inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    # The most trust any pixel a texel's bilinear lookup can touch has (3x3 neighbourhood).
    nearby = cv2.dilate(rec.skin_trust, np.ones((3, 3), np.uint8))
    reachable = np.zeros(inside.shape, np.float32)
    reachable[inside] = nearby[px[inside][:, 1], px[inside][:, 0]]
    visible = rec.albedo_visibility > 0.5
    assert (visible & (reachable == 0)).sum() > 1000  # hair, background, neck below the collar
    assert rec.albedo_trust[reachable == 0].max() == 0  # none of those texels is trusted
    assert (rec.albedo_trust[visible & (reachable > 0.99)] > 0.5).mean() > 0.7  # most skin is


def test_scalp_is_skin_tone_not_hair_and_hair_mode_keeps_hair(fast_reconstruction, pipeline):
    """000002.jpg: red hair pulled back from a bare forehead. "hair" puts a red cap where the photo
    shows hair, down to her own hairline, and leaves the forehead she shows as it was."""
    from core.appearance.fusion import fuse
    from core.appearance.texture import TextureSettings, _hair_zone, build_texture, scalp_weight, unwrap
    from core.fitting.detection import detect_face

    rec = fast_reconstruction
    size = rec.albedo.shape[0]
    surface = pipeline.uv_surface(size)
    default_scalp = scalp_weight(rec.model, surface)
    trusted = rec.albedo_trust > 0.8
    tone = np.median(rec.albedo[trusted].astype(float), 0)
    on_scalp = np.median(rec.albedo[default_scalp > 0.9].astype(float), 0)
    assert np.abs(on_scalp - tone).max() < 20  # default: the person's skin tone on the scalp

    detection = detect_face(rec.image, detector=pipeline.detector)
    hair_settings = TextureSettings(scalp="hair")
    head = pipeline.skin_trust(rec.image, detection, hair_settings)
    skin_mode, cap_mode = (build_texture(rec.model, rec.image, rec.params, size, surface, head, mode).albedo
                           .astype(float) for mode in (None, hair_settings))
    change = np.abs(cap_mode - skin_mode).max(-1)
    evidence = unwrap(rec.model, rec.image, rec.params, surface, head)
    zone = surface.interpolate(_hair_zone(rec.model.neutral)[:, None])[..., 0] > 0.99
    hair, bare = (evidence.hair_weight > 0.8) & zone, (evidence.bare_weight > 0.8) & zone
    assert hair.sum() > 1000 and bare.sum() > 1000
    red = np.median(cap_mode[hair], 0)
    assert red[0] > red[1] + 30 and np.median(change[hair]) > 40  # the photo's red hair
    below, above = hair & (default_scalp < 0.1), bare & (default_scalp > 0.9)
    assert below.sum() > 100 and np.median(change[below]) > 40  # hair below the model's default line
    assert above.sum() > 100 and np.median(change[above]) < 15  # her forehead above it: skin (soft edge)
    # several photos fuse their hair evidence as they fuse skin
    fused, _ = fuse([evidence, evidence], [1.0, 1.0], [1.0, 1.0])
    assert np.allclose(fused.hair_weight, evidence.hair_weight) and np.allclose(fused.hair, evidence.hair)
    seen = evidence.hair_weight > 0.01
    assert np.allclose(fused.hair_albedo[seen], evidence.hair_albedo[seen], atol=1e-6)
    with pytest.raises(LikenessError, match="scalp"):
        build_texture(rec.model, rec.image, rec.params, 64, None, head, TextureSettings(scalp="bald"))


def test_a_bald_head_keeps_its_skin_under_hair_mode(pipeline):
    """img21.jpg: a shaved, shiny head. "hair" finds no hair on it: the same albedo as "skin"."""
    from conftest import face_photo

    from core.appearance.texture import TextureSettings, build_texture, photo_illuminant
    from core.pipeline import preset_settings

    hair_settings = TextureSettings(scalp="hair")
    settings = preset_settings("fast", texture_size=256, texture=hair_settings)
    rec = pipeline.run(face_photo("img21.jpg"), settings)
    detection = pipeline.detect(rec.image)
    head = pipeline.skin_trust(rec.image, detection, hair_settings)
    assert head.bare.sum() > 10 * head.hair.sum()
    light = photo_illuminant(rec.image, detection.landmarks, head, hair_settings)
    skin_mode = build_texture(rec.model, rec.image, rec.params, 256, pipeline.uv_surface(256), head,
                              illuminant=light)
    assert np.array_equal(rec.albedo, skin_mode.albedo)


def test_background_colour_never_reaches_the_albedo(pipeline):
    """Paint the background pure green: not one texel of the albedo may come out green."""
    from conftest import face_photo

    from core.image_io import load_image
    from core.pipeline import preset_settings

    rgb = load_image(face_photo("000002.jpg")).rgb.copy()
    rgb[pipeline.segmenter.segment(rgb, pipeline.detect(rgb).landmarks) < 0.5] = (0, 255, 0)
    rec = pipeline.run(rgb, preset_settings("fast", texture_size=256))
    albedo = rec.albedo.astype(int)
    greenish = (albedo[..., 1] > albedo[..., 0] + 40) & (albedo[..., 1] > albedo[..., 2] + 40)
    assert greenish.sum() == 0


def test_a_small_face_in_a_wide_photo_is_a_person(pipeline):
    """synergynet's sample_2.jpg: a 130 px face in a 1024 x 524 film still. Segmented as a whole
    frame, her face came out 0.1 person: not one pixel was trusted and the albedo was the fill alone.
    Segmented around the face, she is the person and her skin is trusted."""
    from conftest import face_photo

    from core.appearance.skin_trust import central_face
    from core.image_io import load_image

    rgb = load_image(face_photo("sample_2.jpg")).rgb
    detection = pipeline.detect(rgb)
    central = central_face(detection.landmarks, *rgb.shape[:2])
    assert pipeline.segmenter.segment(rgb, detection.landmarks)[central].mean() > 0.9
    assert pipeline.skin_trust(rgb, detection).trust[central].mean() > 0.6


def test_a_cap_brim_over_the_brows_is_not_their_texture(pipeline):
    """015259.jpg: the white and light-blue brim of her cap comes down over her right brow, inside
    the brows' and sockets' band, whose pixels are texture of their own: the brim was painted onto
    the forehead. As light as her skin and off its colour, it covers the part; the brows stay."""
    from conftest import face_photo

    from core.appearance.skin_mask import part_masks
    from core.appearance.skin_trust import _features
    from core.image_io import load_image

    rgb = load_image(face_photo("015259.jpg")).rgb
    face = pipeline.detect(rgb)
    skin = pipeline.skin_trust(rgb, face)
    lips = part_masks(face.landmarks, *rgb.shape[:2])[1]
    photo = rgb / np.float32(255)
    light = _features(photo)[1] - skin.colour.log_luma > -0.1
    brim = skin.parts & ~lips & light & (skin.colour.chroma_probability(photo) == 0)
    assert brim.sum() > 200 and skin.trust[brim].max() < 0.05
    assert skin.trust[skin.parts & ~brim].mean() > 0.5


def test_a_hand_at_the_chin_is_not_skin(pipeline):
    """015384.jpg: her hand rests under her chin, skin-coloured and touching the face."""
    from conftest import face_photo

    from core.image_io import load_image

    rgb = load_image(face_photo("015384.jpg")).rgb
    detection = pipeline.detect(rgb)
    hand = pipeline.segmenter.hands(rgb)
    chin_y, top_y = detection.landmarks[152, 1], detection.landmarks[10, 1]
    rows = np.flatnonzero(hand.any(axis=1))
    assert hand.sum() > 2000 and rows.min() < chin_y + 0.5 * (chin_y - top_y)  # found, close to the face
    assert pipeline.skin_trust(rgb, detection).trust[hand].max() == 0


# --------------------------------------------------------------------------------------------
# The person's own texture: brows at full extent, facial hair, lash lines
# (deepface img16.jpg: a full beard; img3.jpg: no beard, long hair beside the jaw and the temples).


@pytest.fixture(scope="module")
def bearded_and_not(pipeline):
    from conftest import face_photo

    from core.image_io import load_image

    photos = [load_image(face_photo(name)).rgb for name in ("img16.jpg", "img3.jpg")]
    return [(rgb, pipeline.detect(rgb)) for rgb in photos]


def _disc_at(point, radius, shape) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    return np.hypot(xs - point[0], ys - point[1]) < radius


def test_a_beard_is_texture_unless_asked_for_skin(bearded_and_not, pipeline):
    from core.appearance.texture import TextureSettings

    (rgb, face), (other_rgb, other_face) = bearded_and_not
    lm = face.landmarks
    size = np.ptp(lm[:, :2], axis=0).max()
    chin = _disc_at((lm[17] + lm[152]) / 2, 0.04 * size, rgb.shape[:2])  # between lower lip and chin
    kept = pipeline.skin_trust(rgb, face)  # default: facial hair is kept
    shaved = pipeline.skin_trust(rgb, face, TextureSettings(facial_hair="skin"))
    assert kept.parts[chin].mean() > 0.9 and kept.trust[chin].mean() > 0.8
    assert shaved.trust[chin].mean() < 0.2  # an occluder: the skin under it is filled in
    # no beard, no facial hair: the long hair beside her jaw stays out
    on = pipeline.skin_trust(other_rgb, other_face)
    off = pipeline.skin_trust(other_rgb, other_face, TextureSettings(facial_hair="skin"))
    assert np.array_equal(on.parts, off.parts) and np.array_equal(on.trust, off.trust)
    with pytest.raises(LikenessError, match="facial hair"):
        TextureSettings(facial_hair="shaved")


def test_shading_in_a_sharp_face_is_no_beard(pipeline):
    """HRN's 00133.png: a woman's face 650 px wide, her smile folds and lower face darker than her
    lit forehead. In so sharp a face a beard shows its hairs; darkness alone made a beard of her
    mouth's surroundings (38 000 pixels kept as the photo's dark texture, a hard edge at the nose)."""
    from conftest import face_photo

    from core.appearance.texture import TextureSettings
    from core.image_io import load_image

    rgb = load_image(face_photo("00133.png")).rgb
    face = pipeline.detect(rgb)
    on = pipeline.skin_trust(rgb, face)
    off = pipeline.skin_trust(rgb, face, TextureSettings(facial_hair="skin"))
    assert np.array_equal(on.parts, off.parts) and np.array_equal(on.trust, off.trust)


def test_the_pores_of_a_sharp_face_are_skin(pipeline):
    """HRN's 00034.png: a man's face 730 px wide and sharp. His pores and creases are thin dark
    structures at the contrast of hair strands or stubble (black-hat above 0.15 on a third of his
    central face), and the skin test took them out: 28% of his central face was trusted."""
    from conftest import face_photo

    from core.appearance.skin_trust import central_face
    from core.image_io import load_image

    rgb = load_image(face_photo("00034.png")).rgb
    face = pipeline.detect(rgb)
    central = central_face(face.landmarks, *rgb.shape[:2])
    assert (pipeline.skin_trust(rgb, face).trust[central] > 0.5).mean() > 0.6


def test_brows_reach_their_hair_not_the_temples(bearded_and_not, pipeline):
    from core.appearance.skin_mask import LEFT_BROW, RIGHT_BROW, part_masks, polygon_mask
    from core.appearance.skin_trust import _inside_oval, _sockets

    for rgb, face in bearded_and_not:
        lm, shape = face.landmarks, rgb.shape[:2]
        outline = polygon_mask(lm, RIGHT_BROW, *shape) | polygon_mask(lm, LEFT_BROW, *shape)
        skin = pipeline.skin_trust(rgb, face)
        above_nose = np.arange(shape[0])[:, None] < lm[1, 1]  # these photos are upright
        face_size = float(np.ptp(lm[FACE_OVAL], axis=0).max())
        sockets = _sockets(lm, face_size, _inside_oval(face_mask(lm, *shape), face_size))
        grown = skin.parts & ~part_masks(lm, *shape)[0] & ~sockets & above_nose  # beyond the outlines
        assert skin.parts[outline].all() and grown.sum() > 0.2 * outline.sum()
        luma = rgb.astype(float) @ [0.299, 0.587, 0.114]
        assert luma[grown].mean() < np.median(luma[skin.trust > 0.9]) - 20  # hair, darker than skin
        assert not (grown & ~face_mask(lm, *shape)).any()  # not the hair at the temples


def test_the_eye_socket_is_texture_of_its_own(bearded_and_not, pipeline):
    """Between each upper lid and its brow (lid crease, lash line, the socket's shading) the photo
    shows the eye's own texture: trusted, not rejected as dark or creased skin and filled in."""
    for rgb, face in bearded_and_not:
        lm = face.landmarks
        size = np.ptp(lm[:, :2], axis=0).max()
        skin = pipeline.skin_trust(rgb, face)
        for lid, brow in ((159, 52), (386, 282)):
            crease = _disc_at((lm[lid] + lm[brow]) / 2, 0.015 * size, rgb.shape[:2])
            assert skin.parts[crease].all() and skin.trust[crease].mean() > 0.9
        for iris in (468, 473):  # the eye opening stays out
            assert skin.trust[_disc_at(lm[iris], 0.01 * size, rgb.shape[:2])].max() == 0


def test_skin_seen_through_glasses_is_not_trusted(bearded_and_not, pipeline):
    """vd026.png: round glasses, the cheeks under the lenses seen through tinted glass; deepface
    img16/img3 wear none, and their cheeks under the eyes stay trusted."""
    from conftest import face_photo

    from core.image_io import load_image

    rgb = load_image(face_photo("vd026.png")).rgb
    photos = [(rgb, pipeline.detect(rgb), True)] + [(rgb, face, False) for rgb, face in bearded_and_not]
    for rgb, face, glasses in photos:
        lm = face.landmarks
        size = np.ptp(lm[:, :2], axis=0).max()
        skin = pipeline.skin_trust(rgb, face)
        for lower, upper in ((145, 159), (374, 386)):
            cheek = _disc_at(lm[lower] + 0.6 * (lm[lower] - lm[upper]), 0.015 * size, rgb.shape[:2])
            if glasses:
                assert skin.trust[cheek].max() == 0
            else:
                assert skin.trust[cheek].mean() > 0.3
        if glasses:  # the cheek below the lens is skin
            assert skin.trust[_disc_at(lm[205], 0.015 * size, rgb.shape[:2])].mean() > 0.5


def test_a_light_metal_frame_is_not_skin(pipeline):
    """vd026.png: thin light-metal frames; the lens search finds their dark inner edge, and their
    bright outer rim beyond it (the upper outer arc of each lens, located by eye in the photo) passed
    as skin and drew light lines around the eyes in the albedo."""
    from conftest import face_photo

    from core.image_io import load_image

    rgb = load_image(face_photo("vd026.png")).rgb
    face = pipeline.detect(rgb)
    lm = face.landmarks[:, :2]
    trust = pipeline.skin_trust(rgb, face).trust
    for (inner, outer), arc in (((133, 33), (-0.25, -0.89)), ((362, 263), (0.33, -0.67))):
        centre = (lm[inner] + lm[outer]) / 2
        eye_width = float(np.linalg.norm(lm[outer] - lm[inner]))  # the photo is upright
        rim = _disc_at(centre + eye_width * np.array(arc), 0.05 * eye_width, rgb.shape[:2])
        assert rim.sum() > 5 and trust[rim].max() < 0.1


def test_lash_lines_darken_the_lid_margins(fast_reconstruction, pipeline):
    rec = fast_reconstruction
    surface = pipeline.uv_surface(rec.albedo.shape[0])
    upper, lower = surface.lid_margins
    assert pipeline.uv_surface(rec.albedo.shape[0]).lid_margins[0] is upper  # once per pipeline and size
    half = upper.shape[1] // 4  # the face tile's left and right halves each hold one eye
    for eye in (slice(0, half), slice(half, 2 * half)):
        assert (upper[:, eye] < 0.001).sum() > 5 and (lower[:, eye] < 0.001).sum() > 5
    luma = rec.albedo.astype(float) @ [0.299, 0.587, 0.114]
    lid = (upper > 0.003) & (upper < 0.005) & (lower > upper)  # the upper lid's skin above the margin
    assert np.median(luma[upper < 0.001]) < 0.6 * np.median(luma[lid])
