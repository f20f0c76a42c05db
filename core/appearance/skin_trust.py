"""Which photo pixels show the subject's skin, and may therefore colour the skin texture.

Three cues, multiplied: MediaPipe's selfie segmentation (person vs background; its model ships
in the mediapipe wheel), a robust skin-colour model fitted on the central face of this very photo
(rejects hair, beard, glasses frames, hats, clothes: whatever is far from the person's own skin
in chroma or much darker than it), and the face parts from the 478 landmarks. Eyes with their
sockets (lids, creases, lash lines), brows, lips and nostrils are texture of their own: trusted
whatever their colour; the mouth opening (teeth, tongue) never is, nor what glasses' lenses
cover. The result is eroded a little so that pixels mixing skin with an occluder at its border do
not count.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.correspondence import FACE_OVAL
from ..native_log import quiet_mediapipe
from .skin_mask import (
    LEFT_BROW,
    LEFT_EYE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    face_mask,
    part_masks,
    polygon_mask,
    skin_mask,
)

NOSE_TIP = 1
CENTRAL_SCALE = 0.7  # the colour model is fitted inside the face oval shrunk by this around the nose
CHI2_KEEP = 7.38  # 97.5% quantile of chi-square with 2 dof: robust re-estimation keeps these
CHROMA_RAMP = (2.5, 4.0)  # Mahalanobis distance in chroma: full trust below, none above
# Outside the face oval (where hair, ears, neck and collars meet) the chroma test is stricter:
# blond and light-brown hair sit only 2-3 standard deviations from the skin there.
STRICT_CHROMA_RAMP = (1.5, 2.5)
CHROMA_FLOOR = 0.03  # minimum chroma std (log ratio): JPEG-flat faces must not give a razor-thin model
DARKER_RAMP = (0.55, 0.95)  # log luminance below the face's median: shadowed skin .. hair / stubble
BRIGHTER_RAMP = (0.5, 0.8)  # log luminance above it: blow-outs
PERSON_RAMP = (0.3, 0.7)  # selfie-segmentation probability
SEGMENT_CROP = 3.0  # face sizes: the square around the face the person segmentation sees
HAND_CONFIDENCE = 0.3
HAND_MARGIN = 0.15  # of the hand's size: the landmarks are joints, the flesh reaches beyond them
DARKER_LIP = (0.35, 0.6)  # log luminance below the lips' median: moustache, not lip
PART_LIGHT = (-0.2, -0.1)  # log luminance to the skin's median from which, off its colour, a part is covered
BORDER_ERODE = 0.012  # of the face size: pixels mixing skin with an occluder are left out
THIN_DARK = (0.15, 0.3)  # log-luminance black-hat: glasses frames, strands of hair, stubble
THIN_FACTOR = 3.0  # times the central face's median black-hat: from there, in sharp photos, not skin
THIN_DARK_SIZE = 0.04  # of the face size: the widest structure the black-hat picks out
# Local std of log luminance: skin is smoother than hair and beard. Trust fades from ROUGH_FACTOR
# times the central face's median (at least ROUGH_FLOOR) to twice that.
ROUGH_FACTOR = 2.0
ROUGH_FLOOR = 0.06
ROUGH_SIZE = 0.015  # of the face size: the scale of that texture measure
BELOW_CHIN = (0.1, 0.25)  # of the face height below the chin: the neck fades out (collars)
CHIN = 152
# Brows at full extent: MediaPipe's brow outline is narrower than real brows. Hair is looked for in
# a band reaching BROW_GROW (of the face size) above the outline, BROW_GROW - BROW_LIFT to the sides
# and BROW_GROW - 2 BROW_LIFT below it, kept off the eyes by EYE_CLEAR, darker than the band's skin by
# BROW_DARKER (log luminance), connected to the outline.
BROW_GROW = 0.04
BROW_LIFT = 0.015
EYE_CLEAR = 0.025
BROW_DARKER = (0.06, 0.16)
# Facial hair (beard, moustache, stubble): textured pixels (thin dark structures or roughness, not
# brighter than the skin) on the lower face, below the nose tip. Where their density (blurred over
# FACIAL_HAIR_SIZE of the face size) is high, the whole patch is texture of its own: stubble is
# hairs and the skin between them.
FACIAL_HAIR_SIZE = 0.025
FACIAL_HAIR_DENSITY = (0.25, 0.45)
BEARD_DARKER = (0.3, 0.5)  # log luminance below the upper face's skin: dark hair, smooth or not
HAIRS_RESOLVED = (300, 500)  # face size in pixels from which a beard shows its hairs: darkness is no hair
# A beard covers the skin around the mouth: the ring of MOUTH_RING (of the face size) around the
# lips must be FACIAL_HAIR_COVER hair, and only hair connected to that ring counts (hair hanging
# beside the jaw, smile folds and wrinkles do not).
MOUTH_RING = 0.08
FACIAL_HAIR_COVER = 0.6
# The head above the brows (for a cap with the person's own hairline): person pixels at least
# HAIR_ABOVE_BROWS (of the face height) above the brows' top, not brighter than the skin by
# HAIR_BRIGHTER (log luminance: blow-outs, a shiny scalp), kept BORDER_ERODE off the background.
HAIR_ABOVE_BROWS = 0.02
HAIR_BRIGHTER = (0.3, 0.5)
# The eye's socket (lids, lid crease, lash lines, the shading around the eye, up to the brows) is
# texture of its own: darker than the cheeks, creased and lashed, the skin tests reject most of it.
# It spans the eye's and the brow's outlines and reaches SOCKET_BELOW (of the face size) below the
# eye, inside the face oval (EYE_CLEAR off its edge: the temples' hair).
SOCKET_BELOW = 0.03
# Glasses: what a lens covers is seen through glass (tinted, refracted): neither skin nor the
# socket's texture. A frame crosses the nose bridge: BRIDGE_SHARE of the band BRIDGE (of the face
# size) around the bridge's landmarks is darker than its surroundings by BRIDGE_DARK (log-luminance
# black-hat; 0.41-2.4 on three photos with glasses, at most 0.15 on 28 without), and rings an eye:
# thin dark pixels in LENS_COVER of LENS_BINS directions from its centre (and of those below it),
# beyond the lids (LENS_INNER eye widths along and across the eye), within LENS_OUTER eye widths.
NOSE_BRIDGE = (168, 6)
BRIDGE = 0.02
BRIDGE_SHARE, BRIDGE_DARK = 0.1, 0.3
LENS_BINS = 24
LENS_INNER = (0.6, 0.35)
LENS_OUTER = 1.2
LENS_COVER = 0.8
FRAME_WIDTH = 0.015  # of the face size: the frame beyond its inner edge, where the lens outline runs


def _features(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chroma (..., 2) = log(R/G), log(B/G) and log luminance (...) of float RGB in [0, 1]."""
    c = np.maximum(rgb.astype(np.float32), 1.0 / 255)
    chroma = np.stack([np.log(c[..., 0] / c[..., 1]), np.log(c[..., 2] / c[..., 1])], -1)
    return chroma, np.log(c @ np.array([0.299, 0.587, 0.114], np.float32))


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """1 below ``lo``, 0 above ``hi``, linear between."""
    return np.clip((hi - x) / (hi - lo), 0.0, 1.0)


@dataclass
class SkinColourModel:
    """Gaussian in log-chroma (robust mean and covariance) plus the median log luminance."""

    mean: np.ndarray  # (2,)
    cov: np.ndarray  # (2, 2)
    log_luma: float

    @staticmethod
    def fit(rgb: np.ndarray) -> SkinColourModel:
        """From (N, 3) float RGB in [0, 1] of mostly-skin pixels: re-estimate on the inliers
        (Mahalanobis within the 97.5% quantile) a few times, starting from median and MAD, so a
        fringe, stubble or a highlight inside the sample does not move the model."""
        chroma, luma = _features(rgb)
        mean = np.median(chroma, 0)
        mad = 1.4826 * np.median(np.abs(chroma - mean), 0)
        cov = np.diag(np.maximum(mad, CHROMA_FLOOR) ** 2)
        keep = np.ones(len(chroma), bool)
        for _ in range(4):
            d2 = _mahalanobis2(chroma, mean, cov)
            keep = d2 < CHI2_KEEP
            if keep.sum() < 10:
                break
            mean = chroma[keep].mean(0)
            # Truncating at the 97.5% quantile shrinks a Gaussian's covariance by P(chi2_4 < c) / 0.975.
            p4 = 1 - np.exp(-CHI2_KEEP / 2) * (1 + CHI2_KEEP / 2)
            cov = np.cov(chroma[keep].T) * 0.975 / p4 + np.eye(2) * CHROMA_FLOOR ** 2
        return SkinColourModel(mean, cov, float(np.median(luma[keep])))

    def probability(self, rgb: np.ndarray, strict: np.ndarray | float = 0.0) -> np.ndarray:
        """Soft skin membership in [0, 1] of float RGB (..., 3); ``strict`` in [0, 1] moves the
        chroma test from CHROMA_RAMP to STRICT_CHROMA_RAMP."""
        chroma, luma = _features(rgb)
        rel = luma - self.log_luma
        return self._chroma_test(chroma, strict) * _ramp(-rel, *DARKER_RAMP) * _ramp(rel, *BRIGHTER_RAMP)

    def chroma_probability(self, rgb: np.ndarray, strict: np.ndarray | float = 0.0) -> np.ndarray:
        """The chroma test alone: whether float RGB (..., 3) has the skin's colour, however bright."""
        return self._chroma_test(_features(rgb)[0], strict)

    def _chroma_test(self, chroma: np.ndarray, strict: np.ndarray | float) -> np.ndarray:
        d = np.sqrt(_mahalanobis2(chroma, self.mean, self.cov))
        lo = CHROMA_RAMP[0] + (STRICT_CHROMA_RAMP[0] - CHROMA_RAMP[0]) * strict
        hi = CHROMA_RAMP[1] + (STRICT_CHROMA_RAMP[1] - CHROMA_RAMP[1]) * strict
        return np.clip((hi - d) / (hi - lo), 0, 1)


def _mahalanobis2(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = x - mean
    return np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)


@dataclass
class SkinTrust:
    """Per photo pixel: may it colour skin texels?"""

    trust: np.ndarray  # (H, W) float32 in [0, 1]
    parts: np.ndarray  # (H, W) bool: eyes, brows, lips, nostrils, kept facial hair (texture of their own)
    person: np.ndarray  # (H, W) float32 selfie-segmentation probability
    colour: SkinColourModel
    # the head above the brows, when asked for (a cap; ``_scalp``): (H, W) float32 in [0, 1]
    hair: np.ndarray | None = None  # its hair
    bare: np.ndarray | None = None  # its bare skin (forehead, a bald scalp)


class PersonSegmenter:
    """MediaPipe selfie segmentation (general 256x256 model) and hand landmarks (both ship in the
    mediapipe wheel). Not thread-safe inside, so calls are serialised; build once and reuse,
    ``close()`` when done."""

    @quiet_mediapipe.wrap
    def __init__(self):
        from ..fitting.detection import _import_mediapipe, _opened

        mp = _import_mediapipe()
        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                               min_detection_confidence=HAND_CONFIDENCE)
        self._lock = threading.Lock()
        _opened(self._model)
        _opened(self._hands)

    @quiet_mediapipe.wrap
    def segment(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Person probability (H, W) float32 for an RGB uint8 image, in the square SEGMENT_CROP face
        sizes wide around the face of ``landmarks`` (zero beyond): the model sees its input at 256 x
        256, where a small face in a wide photo is a few pixels and is often missed (a 129 px face
        in a 1024 px wide frame came out 0.1 person)."""
        height, width = rgb.shape[:2]
        oval = landmarks[FACE_OVAL, :2]
        half = int(np.ceil(SEGMENT_CROP * float(np.ptp(oval, axis=0).max()) / 2))
        cx, cy = np.round((oval.min(0) + oval.max(0)) / 2).astype(int)
        x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
        pad = [max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width)]
        crop = cv2.copyMakeBorder(rgb[max(y0, 0):y1, max(x0, 0):x1], *pad, cv2.BORDER_CONSTANT, value=0)
        mask = np.zeros((height, width), np.float32)
        with self._lock:
            person = self._model.process(np.ascontiguousarray(crop)).segmentation_mask
        mask[max(y0, 0):y1, max(x0, 0):x1] = person[pad[0]:2 * half - pad[1], pad[2]:2 * half - pad[3]]
        return np.clip(mask, 0, 1)

    @quiet_mediapipe.wrap
    def hands(self, rgb: np.ndarray) -> np.ndarray:
        """Bool (H, W): pixels of the hands in the photo (the hull of each hand's 21 landmarks,
        grown by HAND_MARGIN of its size to cover the fingers' flesh around the joints)."""
        height, width = rgb.shape[:2]
        with self._lock:
            found = self._hands.process(np.ascontiguousarray(rgb)).multi_hand_landmarks or []
        mask = np.zeros((height, width), np.uint8)
        for hand in found:
            pts = np.array([[p.x * width, p.y * height] for p in hand.landmark], np.float32)
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
            grow = int(round(HAND_MARGIN * float(np.ptp(pts, axis=0).max())))
            mask = np.maximum(mask, cv2.dilate(mask, _disc(max(grow, 1))))
        return mask > 0

    def close(self) -> None:
        for model in (self._model, self._hands):
            if model is not None:
                model.close()
        self._model = self._hands = None


def central_face(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W): the face oval shrunk around the nose tip, minus eyes, brows and mouth: the
    cheeks, nose and lower forehead the colour model is fitted on."""
    centre = landmarks[NOSE_TIP]
    shrunk = landmarks.copy()
    shrunk[FACE_OVAL] = centre + CENTRAL_SCALE * (landmarks[FACE_OVAL] - centre)
    return skin_mask(shrunk, height, width, margin=0.03) & skin_mask(landmarks, height, width, margin=0.03)


def skin_trust(rgb: np.ndarray, landmarks: np.ndarray, person: np.ndarray,
               hands: np.ndarray | None = None, facial_hair: bool = True,
               scalp_hair: bool = False) -> SkinTrust:
    """Trusted-skin weights of photo ``rgb`` for the face of 478 ``landmarks`` given the
    ``person`` probability map and the ``hands`` mask (skin-coloured, but never the face's).
    ``facial_hair``: beard, moustache and stubble are kept as texture of their own (else they are
    occluders, and the skin under them is filled in). ``scalp_hair``: also say which pixels show
    the scalp's hair and bare skin (``SkinTrust.hair``, ``bare``)."""
    height, width = rgb.shape[:2]
    photo = rgb.astype(np.float32) / 255
    person_w = 1 - _ramp(person, *PERSON_RAMP)
    sample = central_face(landmarks, height, width) & (person_w > 0.5)
    if sample.sum() < 50:  # tiny or odd face: fall back to the whole landmark skin region
        sample = skin_mask(landmarks, height, width)
    colour = SkinColourModel.fit(photo[sample])
    parts, lips, openings = part_masks(landmarks, height, width)
    face_size = float(np.ptp(landmarks[FACE_OVAL], axis=0).max())
    luma = np.log(np.maximum(photo @ np.array([0.299, 0.587, 0.114], np.float32), 1 / 255))
    rough = _roughness(luma, face_size)
    rough_lo = max(ROUGH_FLOOR, ROUGH_FACTOR * float(np.median(rough[sample])))
    face = face_mask(landmarks, height, width)
    oval = cv2.dilate(face.astype(np.float32), _disc(int(0.03 * face_size) + 1))
    outside = 1 - cv2.GaussianBlur(oval, (0, 0), max(1.0, 0.015 * face_size))
    # thin dark structures (frames, strands, stubble) or a rough texture (hair, beard)
    black_hat = _thin_dark(luma, face_size)
    smooth = _ramp(rough, rough_lo, 2 * rough_lo)
    textured = 1 - _ramp(black_hat, *THIN_DARK) * smooth
    # Skin's own fine structure (pores, creases) shows in sharp photos at the contrast of a strand or
    # stubble: the skin test's thin-dark threshold follows the central face's, as the roughness does.
    thin_lo = max(THIN_DARK[0], THIN_FACTOR * float(np.median(black_hat[sample])))
    skin = colour.probability(photo, outside) * _ramp(black_hat, thin_lo, 2 * thin_lo) * smooth
    inside = _inside_oval(face, face_size)
    parts = parts | _full_brows(luma, skin, landmarks, face_size, openings, inside)
    glasses = _glasses(black_hat, landmarks, face_size, openings)
    parts = parts | (_sockets(landmarks, face_size, inside) & ~openings & ~glasses)
    # A moustache over the upper lip is inside the lips' outline: lip pixels much darker than the
    # lips' median are hair, not lip.
    own = np.where(lips, _ramp(np.median(luma[lips]) - luma, *DARKER_LIP) if lips.any() else 1.0, 1.0)
    # The eyes' and brows' own texture is the face's: lids, lashes and brows have the skin's colour or
    # are darker than it. What is neither covers them: a cap's brim, blond strands at a brow's tail.
    covering = (1 - colour.chroma_probability(photo)) * (1 - _ramp(luma - colour.log_luma, *PART_LIGHT))
    own = own * (1 - covering * ~lips)
    below_nose = _along_face(landmarks, height, width, NOSE_TIP)  # beard below it, scalp hair above
    if facial_hair:  # a beard's skin level is the upper face's (the central face may be half beard)
        upper = sample & (below_nose < 0)
        level = float(np.median(luma[upper])) if upper.sum() >= 50 else colour.log_luma
        beard = _facial_hair(textured, luma - level, landmarks, face_size, below_nose) * person_w
        parts = parts | (beard > 0.5)
        own = np.maximum(own, beard)
    trust = np.where(parts, own, skin) * person_w * ~(openings | glasses)
    trust = trust * _below_chin(landmarks, height, width)
    if hands is not None:
        trust = trust * ~hands
    trust = _connected_to(trust, sample)
    scalp = None
    if scalp_hair:
        scalp = _scalp(skin, luma - colour.log_luma, parts, person_w, landmarks, face_size, hands,
                       below_nose)
    # Skin next to an occluder is eroded away. The parts are no occluders: skin next to them stays
    # (it lost a ring around every brow, lid and lip to the fill), and the parts are thin bands (lips,
    # lid rims) that erosion would wipe out.
    radius = max(1, int(round(BORDER_ERODE * face_size)))
    eroded = cv2.erode(np.where(parts, 1.0, trust).astype(np.float32), _disc(radius))
    trust = np.where(parts, trust, eroded).astype(np.float32)
    return SkinTrust(trust, parts, person.astype(np.float32), colour, *(scalp or (None, None)))


def _scalp(skin: np.ndarray, rel_luma: np.ndarray, parts: np.ndarray, person_w: np.ndarray,
           landmarks: np.ndarray, face_size: float, hands: np.ndarray | None,
           below_nose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 maps in [0, 1] of the head above the brows as the photo shows it: its bare
    skin (``skin``: the skin-colour test, strict outside the face oval, and smooth: a forehead, a
    bald or shaved scalp) and its hair (the rest: dark, off the skin's colour or textured; a fringe
    too; connected to the top of the head). Face parts, hands, blow-outs (``rel_luma``: log
    luminance above the skin's) and the background are neither. ``below_nose``: ``_along_face``
    from the nose tip."""
    height, width = skin.shape
    brows = np.round(landmarks[RIGHT_BROW + LEFT_BROW]).astype(int)
    brow_top = below_nose[np.clip(brows[:, 1], 0, height - 1), np.clip(brows[:, 0], 0, width - 1)].min()
    radius = max(1, int(round(BORDER_ERODE * face_size)))
    head = person_w * cv2.erode((person_w > 0.5).astype(np.uint8), _disc(radius))  # no mixed pixels
    head = head * (below_nose < brow_top - HAIR_ABOVE_BROWS) * ~parts
    if hands is not None:
        head = head * ~hands
    head = head * _ramp(rel_luma, *HAIR_BRIGHTER)
    hair = head * (1 - skin)
    top = _along_face(landmarks, height, width, FACE_OVAL[0]) < 0  # above the face oval's top
    hair = hair * _touching(hair > 0.5, top)
    hair = hair * cv2.erode((hair > 0.5).astype(np.uint8), _disc(radius))  # not mixed with the skin's colour
    return hair.astype(np.float32), (head * skin).astype(np.float32)


def _sockets(landmarks: np.ndarray, face_size: float, inside: np.ndarray) -> np.ndarray:
    """Bool (H, W): each eye's socket: the hull of the eye's and the brow's outlines, and the eye
    grown by SOCKET_BELOW (the lower lid and below), kept ``inside`` the face oval (``_inside_oval``)."""
    height, width = inside.shape
    sockets = np.zeros((height, width), np.uint8)
    below = _disc(max(1, int(round(SOCKET_BELOW * face_size))))
    for eye, brow in ((RIGHT_EYE, RIGHT_BROW), (LEFT_EYE, LEFT_BROW)):
        hull = cv2.convexHull(np.round(landmarks[eye + brow] - 0.5).astype(np.int32))
        cv2.fillConvexPoly(sockets, hull, 1)
        sockets |= cv2.dilate(polygon_mask(landmarks, eye, height, width).astype(np.uint8), below)
    return (sockets > 0) & inside


def _inside_oval(face: np.ndarray, face_size: float) -> np.ndarray:
    """Bool (H, W): the face oval (``face``: ``face_mask``) shrunk by EYE_CLEAR, off the temples' hair
    beside the brows."""
    clear = max(1, int(round(EYE_CLEAR * face_size)))
    return cv2.erode(face.astype(np.uint8), _disc(clear)) > 0


def _glasses(black_hat: np.ndarray, landmarks: np.ndarray, face_size: float,
             openings: np.ndarray) -> np.ndarray:
    """Bool (H, W): glasses' lenses and frame, all False without glasses. Glasses are thin dark
    pixels (``black_hat``: ``_thin_dark``) across the nose bridge and a ring of them around each
    eye (``_lens_outline``); the frame is the thin dark pixels around the lenses."""
    if not _frame_on_bridge(black_hat, landmarks, face_size):
        return np.zeros(black_hat.shape, bool)
    height, width = black_hat.shape
    thin = (black_hat > THIN_DARK[0]) & ~openings
    lenses = np.zeros((height, width), np.uint8)
    eyes = landmarks[RIGHT_EYE + LEFT_EYE]
    reach = LENS_OUTER * float(np.ptp(eyes[:, 0]))  # wider than an eye: the box holds both rings
    x0, y0 = np.maximum(np.floor(eyes.min(0) - reach).astype(int), 0)
    x1, y1 = np.ceil(eyes.max(0) + reach).astype(int)
    ys, xs = np.nonzero(thin[y0:y1, x0:x1])
    points = np.stack([xs + x0, ys + y0], 1) + 0.5
    for eye in (RIGHT_EYE, LEFT_EYE):
        outline = _lens_outline(points, landmarks, eye)
        if outline is not None:
            cv2.fillPoly(lenses, [np.round(outline - 0.5).astype(np.int32)], 1)
    near = cv2.dilate(lenses, _disc(max(1, int(round(THIN_DARK_SIZE * face_size))))) > 0
    # The outline runs through the nearest thin dark pixels (the frame's inner edge); a band of the
    # frame's width beyond it is not skin either: a light metal frame's bright outer rim, a dark
    # frame's highlights.
    frame = cv2.dilate(lenses, _disc(max(1, int(round(FRAME_WIDTH * face_size))))) > 0
    return frame | (near & thin)


def _frame_on_bridge(black_hat: np.ndarray, landmarks: np.ndarray, face_size: float) -> bool:
    """Whether BRIDGE_SHARE of the band BRIDGE around the nose bridge's landmarks is darker than
    its surroundings by BRIDGE_DARK: a glasses frame crosses it."""
    bridge = np.zeros(black_hat.shape, np.uint8)
    a, b = (tuple(int(v) for v in np.round(landmarks[i])) for i in NOSE_BRIDGE)
    cv2.line(bridge, a, b, 1, max(1, int(round(2 * BRIDGE * face_size))))
    return bool(np.quantile(black_hat[bridge > 0], 1 - BRIDGE_SHARE) >= BRIDGE_DARK)


def _lens_outline(points: np.ndarray, landmarks: np.ndarray, eye: list[int]) -> np.ndarray | None:
    """(LENS_BINS, 2) pixels: the lens around ``eye`` through the nearest of the thin dark
    ``points`` in each direction from the eye's centre, beyond the lids (LENS_INNER eye widths
    along and across the eye) and within LENS_OUTER eye widths; None unless they ring the eye
    (LENS_COVER of the directions, and of those below it)."""
    corner_a, corner_b = landmarks[eye[0]], landmarks[eye[8]]
    centre = landmarks[eye].mean(0)
    eye_width = max(float(np.linalg.norm(corner_b - corner_a)), 1e-6)
    along = (corner_b - corner_a) / eye_width
    across = np.array([-along[1], along[0]])
    if across @ (landmarks[152] - centre) < 0:
        across = -across  # pointing down the face
    rel = (points - centre) / eye_width
    u, v = rel @ along, rel @ across
    dist = np.hypot(u, v)
    ring = (np.hypot(u / LENS_INNER[0], v / LENS_INNER[1]) >= 1) & (dist <= LENS_OUTER)
    bins = (np.arctan2(v[ring], u[ring]) % (2 * np.pi) * LENS_BINS / (2 * np.pi)).astype(int)
    nearest = np.full(LENS_BINS, np.inf)
    np.minimum.at(nearest, bins, dist[ring])
    hit = np.isfinite(nearest)
    angles = (np.arange(LENS_BINS) + 0.5) * 2 * np.pi / LENS_BINS
    if hit.mean() < LENS_COVER or hit[np.sin(angles) > 0].mean() < LENS_COVER:
        return None
    radius = np.interp(angles, angles[hit], nearest[hit], period=2 * np.pi)
    return centre + eye_width * radius[:, None] * (np.cos(angles)[:, None] * along
                                                    + np.sin(angles)[:, None] * across)


def _full_brows(luma: np.ndarray, skin: np.ndarray, landmarks: np.ndarray, face_size: float,
                openings: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Bool (H, W): each brow at its full extent: MediaPipe's outline plus the pixels around it
    darker than the skin there (the median of the band's skin-like pixels, ``skin`` > 0.5),
    connected to the outline. The band reaches BROW_GROW up and to the sides but little down (lids
    and glasses frames are below the brows), and stays clear of the eyes and inside the face oval
    (``inside``: the temples' hair is beside the brow tails)."""
    height, width = luma.shape
    clear = max(1, int(round(EYE_CLEAR * face_size)))
    keep_out = cv2.dilate(openings.astype(np.uint8), _disc(clear)) > 0
    keep_out |= ~inside
    up = landmarks[FACE_OVAL[0]] - landmarks[CHIN]
    lift = BROW_LIFT * face_size * up / max(float(np.linalg.norm(up)), 1e-6)
    shift = np.float32([[1, 0, lift[0]], [0, 1, lift[1]]])
    grow = _disc(max(1, int(round((BROW_GROW - BROW_LIFT) * face_size))))
    brows = np.zeros((height, width), bool)
    for loop in (RIGHT_BROW, LEFT_BROW):
        outline = polygon_mask(landmarks, loop, height, width)
        band = cv2.warpAffine(cv2.dilate(outline.astype(np.uint8), grow), shift, (width, height)) > 0
        band &= ~keep_out
        ring = band & ~outline & (skin > 0.5)
        if ring.sum() < 10:
            brows |= outline
            continue
        hair = band & (_ramp(float(np.median(luma[ring])) - luma, *BROW_DARKER) < 0.5)
        brows |= _touching(hair | outline, outline)
    return brows


def _facial_hair(textured: np.ndarray, rel_luma: np.ndarray, landmarks: np.ndarray,
                 face_size: float, below_nose: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1]: beard, moustache and stubble: where pixels much darker than the skin
    (``rel_luma``: log luminance relative to the upper face's) or textured and not brighter than
    it are dense on the face oval below the nose tip (``below_nose`` > 0), around the mouth."""
    height, width = textured.shape
    zone = face_mask(landmarks, height, width) & (below_nose > 0)
    # Darkness stands in for hairs only where the photo cannot resolve them: in a sharp, large face
    # a beard shows its hairs, and a smooth dark lower face is shading (smile folds, a lit forehead).
    dark = (1 - _ramp(-rel_luma, *BEARD_DARKER)) * _ramp(face_size, *HAIRS_RESOLVED)
    hair = np.maximum(textured * _ramp(rel_luma, 0.0, 0.3), dark) * zone
    sigma = max(1.0, FACIAL_HAIR_SIZE * face_size)
    density = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), sigma)
    density /= np.maximum(cv2.GaussianBlur(zone.astype(np.float32), (0, 0), sigma), 1e-3)
    beard = (1 - _ramp(density, *FACIAL_HAIR_DENSITY)) * zone
    lips = polygon_mask(landmarks, OUTER_LIPS, height, width)
    ring = (cv2.dilate(lips.astype(np.uint8), _disc(max(1, int(round(MOUTH_RING * face_size))))) > 0)
    ring &= zone & ~lips
    if not ring.any() or np.mean(beard[ring] > 0.5) < FACIAL_HAIR_COVER:
        return np.zeros((height, width), np.float32)
    return (beard * _touching(beard > 0.5, ring)).astype(np.float32)


def _touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected regions of bool ``mask`` that touch ``seed``."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(labels[seed & mask])] = True
    keep[0] = False
    return keep[labels]


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)


def _thin_dark(luma: np.ndarray, face_size: float) -> np.ndarray:
    """Black-hat of log luminance: how much darker a pixel is than its surroundings once thin
    dark structures (frames, strands, stubble; up to THIN_DARK_SIZE wide) are closed over."""
    radius = max(1, int(round(THIN_DARK_SIZE * face_size / 2)))
    return cv2.morphologyEx(luma, cv2.MORPH_BLACKHAT, _disc(radius))


def _roughness(luma: np.ndarray, face_size: float) -> np.ndarray:
    """Local standard deviation of log luminance around its smoothed self, at ROUGH_SIZE."""
    sigma = max(0.7, ROUGH_SIZE * face_size)
    detail = luma - cv2.GaussianBlur(luma, (0, 0), sigma)
    return np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), sigma))


def _along_face(landmarks: np.ndarray, height: int, width: int, origin: int) -> np.ndarray:
    """(H, W): how far each pixel lies below landmark ``origin`` along the face's vertical axis
    (forehead top to chin), in face heights."""
    start, top = landmarks[origin], landmarks[FACE_OVAL[0]]
    axis = landmarks[CHIN] - top
    face_height = float(np.linalg.norm(axis))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return ((xs - start[0]) * axis[0] + (ys - start[1]) * axis[1]) / max(face_height, 1e-6) ** 2


def _below_chin(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) weight fading out below the chin along the face's vertical axis: collars and
    clothes below the neck often have skin-like colours."""
    return _ramp(_along_face(landmarks, height, width, CHIN), *BELOW_CHIN).astype(np.float32)


def _connected_to(trust: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """``trust`` kept only on the connected regions (trust > 0.3) that touch ``seed``: skin-coloured
    things apart from the face (clothes, other people, the background) do not count."""
    return (trust * _touching(trust > 0.3, seed)).astype(np.float32)
