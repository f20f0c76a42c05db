"""Photos of one person -> Reconstruction: detect, regress, refine, texture, (detail).

``reconstruct()`` is the public entry point; presets trade time for quality. Heavy shared
objects (face model, correspondence, detectors) live in a ``Pipeline`` that callers may keep
for a batch of photos instead of a hidden module-level cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .appearance.fusion import fuse, neutrality, sharpness
from .appearance.identity import FaceRecognitionNet, embed_photo, load_identity_net
from .appearance.skin_trust import PersonSegmenter, SkinTrust, skin_trust
from .appearance.texture import (
    TextureResult,
    TextureSettings,
    UVSurface,
    complete,
    photo_illuminant,
    unwrap,
    uv_surface,
)
from .appearance.texture_gcn import MeshGraph, TextureRefinementSettings, TextureView, refine_texture
from .appearance.white_balance import Illuminant
from .displacement.clip_features import ENV_CHECKPOINT
from .displacement.detail import DetailSettings, add_detail, clip_extractor
from .errors import AssetError, Cancelled, DependencyError, LikenessError, NoFaceError, PhotoSetError
from .fitting.detection import (
    FaceDetection,
    InsightFaceDetector,
    MediaPipeMesh,
    detect_face,
    detection_notes,
    find_upright,
    is_upright,
    make_detector,
    same_face,
)
from .fitting.eyelids import match_eyelids
from .fitting.profile import (
    KEYPOINTS_IOU,
    LAYOUTS,
    fit_keypoints,
    fit_turned,
    keypoint_surface_points,
    profile_proposal,
)
from .fitting.refinement import RefinementResult, RefinementSettings, View, refine_joint
from .fitting.regression import (
    LandmarkTarget,
    RegressionSettings,
    initial_params,
    landmark_error,
    regress,
    regress_joint,
    surface_points_for,
)
from .geometry.correspondence import Correspondence, load_annotated_landmarks68, load_correspondence
from .geometry.face_model import FaceModel, load_face_model
from .geometry.params import Camera, FaceParams, unturn_params, unturn_points
from .geometry.parts import DEFAULT_IRIS_COLOUR, iris_colour
from .geometry.rendering import select_device
from .image_io import load_image
from .progress import Progress
from .reconstruction import DroppedPhoto, PhotoFit, Reconstruction

PRESET_NAMES = ("fast", "balanced", "quality")
DETAIL_GUIDANCE = ("auto", "clip", "photometric")  # Settings.detail_guidance
LIKENESS_PASS_TERMS = ("likeness", "photometric", "heldout_photometric")
# MediaPipe outer eye corners (subject's right, subject's left): they set the initial depth.
EYE_CORNERS = (33, 263)
# A photo is another person when its landmark error with the others' identity exceeds its own
# fit's by more than this (fraction of the face size) and by this factor over the typical photo.
AGREEMENT_FLOOR = 0.01
AGREEMENT_FACTOR = 3.0
# Unit face-recognition descriptors of one person's photos lie within this distance of each other
# (deepface set: same person <= 0.38, different people >= 0.40); more for turned heads.
DESCRIPTOR_LIMIT = 0.42
DESCRIPTOR_YAW_ALLOWANCE = 0.1


@dataclass
class Settings:
    """Everything a run can be told. Presets fill these; callers may override any field."""

    preset: str = "balanced"
    device: str = "auto"
    detector: str = "mediapipe"
    face_index: Optional[int] = None
    regression: RegressionSettings = field(default_factory=RegressionSettings)
    refinement: RefinementSettings = field(default_factory=RefinementSettings)
    texture_size: int = 1024
    texture: TextureSettings = field(default_factory=TextureSettings)
    # GCN texture refinement with the identity loss; iterations 0 (``fast``) keeps the coarse albedo
    texture_refinement: TextureRefinementSettings = field(default_factory=TextureRefinementSettings)
    detail: bool = False
    detail_iterations: int = 0
    detail_resolution: int = 256
    detail_strength: float = 1.0
    # "auto": CLIP guidance when CLIP weights are found, else photometric (said once per Pipeline);
    # "clip" fails when the weights are missing; "photometric" never loads CLIP.
    detail_guidance: str = "auto"
    clip_model: str = "ViT-B-32"
    clip_pretrained: Optional[str] = "openai"
    # Memory and time budget (docs/GUARANTEES.md): photos are decoded to at most this many pixels,
    # then reduced further so that the face is at most face_pixels_per_texel * texture_size across.
    max_pixels: float = 16e6
    face_pixels_per_texel: float = 2.0


def preset_settings(preset: str, **overrides) -> Settings:
    if preset not in PRESET_NAMES:
        raise LikenessError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}.")
    by_preset = {
        "fast": dict(refinement=RefinementSettings(iterations=30, resolution=160), texture_size=512,
                     texture_refinement=TextureRefinementSettings(iterations=0)),
        "balanced": dict(refinement=RefinementSettings(iterations=100, resolution=224,
                                                       likeness_iterations=30), texture_size=1024,
                         texture_refinement=TextureRefinementSettings(iterations=40, resolution=224)),
        "quality": dict(refinement=RefinementSettings(iterations=150, resolution=256,
                                                      likeness_iterations=40), texture_size=1024,
                        texture_refinement=TextureRefinementSettings(iterations=60, resolution=256),
                        detail=True, detail_iterations=80, detail_resolution=256),
    }[preset]
    settings = replace(Settings(preset=preset, **by_preset), **overrides)
    if settings.detail_guidance not in DETAIL_GUIDANCE:
        raise LikenessError(f"Unknown detail guidance {settings.detail_guidance!r}; choose one of "
                            f"{', '.join(DETAIL_GUIDANCE)}.")
    return settings


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def landmark_target(detection: FaceDetection, corr: Correspondence) -> LandmarkTarget:
    points = detection.landmarks[corr.mp_index]
    box = detection.box
    face_size = float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
    return LandmarkTarget(points.astype(np.float64), corr.weight.astype(np.float64), face_size)


class Pipeline:
    """Holds the face model, correspondence and detector for a series of photos."""

    def __init__(self, model: FaceModel | None = None, detector_backend: str = "mediapipe"):
        self.model = model if model is not None else load_face_model()
        self.correspondence = load_correspondence()
        self.landmarks68 = load_annotated_landmarks68()  # the read-out of PhotoFit.landmarks68_2d
        self.detector_backend = detector_backend
        self._detector = None
        self._mesh: MediaPipeMesh | None = None
        self._segmenter: PersonSegmenter | None = None
        self._scrfd: InsightFaceDetector | bool | None = None  # False: looked for, none installed
        self._points: dict[tuple[str, int], object] = {}
        self._uv_surfaces: dict[int, UVSurface] = {}
        self._clip: tuple[tuple, object] | None = None
        self._identity_net: FaceRecognitionNet | None = None
        self._identity_error: AssetError | None = None
        self._graph: MeshGraph | None = None
        self._clip_missing: str | None = None  # why "auto" guidance fell back to photometric
        self._clip_failed: tuple | None = None  # the CLIP settings that could not be loaded
        self._clip_noted = False  # ... and whether a result said so already

    @property
    def detector(self):
        if self._detector is None:
            self._detector = make_detector(self.detector_backend)
        return self._detector

    @property
    def mesh(self) -> MediaPipeMesh | None:
        """Dense-landmark network for detectors that only give boxes (InsightFace)."""
        if self.detector_backend == "mediapipe":
            return None
        if self._mesh is None:
            self._mesh = MediaPipeMesh()
        return self._mesh

    @property
    def scrfd(self) -> InsightFaceDetector | None:
        """An InsightFace SCRFD detector when one is installed (optional; research-only licence), else
        None. It proposes faces BlazeFace misses, fitted from their keypoints (core.fitting.profile)."""
        if self.detector_backend == "insightface":
            return self.detector
        if self._scrfd is None:
            try:
                self._scrfd = InsightFaceDetector()
            except (AssetError, DependencyError):
                self._scrfd = False
        return self._scrfd or None

    @property
    def segmenter(self) -> PersonSegmenter:
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        return self._segmenter

    def close(self) -> None:
        for resource in (self._detector, self._mesh, self._segmenter, self._scrfd):
            if resource:
                resource.close()
        self._detector = self._mesh = self._segmenter = self._scrfd = None

    def skin_trust(self, rgb: np.ndarray, detection: FaceDetection,
                   settings: TextureSettings | None = None) -> SkinTrust | None:
        """Which pixels of ``rgb`` show the subject's skin or its own texture (None without dense
        landmarks); ``settings.facial_hair`` says whether a beard is texture or an occluder, and
        ``settings.scalp`` "hair" asks for the scalp's hair pixels too (a cap)."""
        if not detection.is_dense:
            return None
        settings = settings or TextureSettings()
        return skin_trust(rgb, detection.landmarks, self.segmenter.segment(rgb, detection.landmarks),
                          self.segmenter.hands(rgb),
                          settings.facial_hair == "hair", settings.scalp == "hair")

    def clip_extractor(self, settings: DetailSettings):
        """The CLIP encoder for the detail stage, kept across photos (loading takes seconds)."""
        key = (settings.clip, settings.device)
        if self._clip is None or self._clip[0] != key:
            self._clip = (key, clip_extractor(settings))
        return self._clip[1]

    def detail_guidance(self, settings: Settings, detail: DetailSettings):
        """The CLIP encoder for clip guidance, or None for photometric. ``auto`` without CLIP weights
        runs photometric (``guidance_notes`` says why, once); ``clip`` raises."""
        if settings.detail_guidance == "photometric" or detail.clip_weight <= 0:
            return None
        if settings.detail_guidance == "auto" and self._clip_failed == (detail.clip, detail.device):
            return None  # known missing: no new download attempt for every photo of a batch
        try:
            return self.clip_extractor(detail)
        except (AssetError, DependencyError) as exc:
            if settings.detail_guidance == "clip" or _explicit_checkpoint(detail):
                raise  # asked for, or a file the user named is damaged: not a silent fall-back
            self._clip_failed = (detail.clip, detail.device)
            if self._clip_missing is None:
                self._clip_missing = f"Detail runs in photometric mode (no CLIP guidance): {exc}"
                self._clip_noted = False
            return None

    def guidance_notes(self) -> list[str]:
        """Why ``auto`` guidance fell back to photometric: on the first result after it did only."""
        if self._clip_missing is None or self._clip_noted:
            return []
        self._clip_noted = True
        return [self._clip_missing]

    def uv_surface(self, size: int) -> UVSurface:
        """Texel -> triangle map of the skin atlas: depends on the model and size only."""
        if size not in self._uv_surfaces:
            self._uv_surfaces[size] = uv_surface(self.model, size)
        return self._uv_surfaces[size]

    def surface_points(self, num_identity: int, kind: str = "mesh"):
        """Model points of the dense landmarks (``mesh``) or of a detector's keypoints (its backend
        name, a key of ``core.fitting.profile.LAYOUTS``)."""
        key = (kind, num_identity)
        if key not in self._points:
            if kind == "mesh":
                self._points[key] = surface_points_for(self.model, self.correspondence, num_identity)
            else:
                self._points[key] = keypoint_surface_points(self.model, self.correspondence, num_identity,
                                                            LAYOUTS[kind])
        return self._points[key]

    def detect(self, rgb: np.ndarray, face_index: Optional[int] = None,
               source: str = "the image", faces: Optional[list[FaceDetection]] = None) -> FaceDetection:
        """One face; with dense landmarks when the landmark network accepts it (and then, when SCRFD is
        installed, SCRFD's keypoints of that face), else (profiles) the most confident box with
        keypoints, from BlazeFace or else SCRFD when installed (core.fitting.profile).
        ``faces``: the detector's findings in ``rgb`` when already known."""
        try:
            face = detect_face(rgb, face_index=face_index, detector=self.detector, mesh=self.mesh,
                               source=source, faces=faces)
        except NoFaceError:
            sparse = None if face_index else self._keypoint_face(rgb, faces)
            if sparse is None:
                raise
            return sparse
        if self.scrfd is None or not is_upright(face):
            return face  # SCRFD's keypoints of a face on its side are guesses (AFLW2000-3D image00617)
        return replace(face, keypoints=same_face(face, self._scrfd_faces(rgb, faces), KEYPOINTS_IOU))

    def _scrfd_faces(self, rgb: np.ndarray, faces: Optional[list[FaceDetection]]) -> list[FaceDetection]:
        """SCRFD's faces in ``rgb``: the detector's ``faces`` when SCRFD is the detector (not run twice)."""
        if faces is not None and self.scrfd is self.detector:
            return faces
        return self.scrfd.detect(rgb)

    def _keypoint_face(self, rgb: np.ndarray, faces: Optional[list[FaceDetection]]) -> FaceDetection | None:
        # SCRFD's keypoints first: on the 7 AFLW2000-3D dev profiles both find, its fits score NME
        # 8.4 against 13.1 from BlazeFace's
        face = profile_proposal(self._scrfd_faces(rgb, faces)) if self.scrfd is not None else None
        proposals = getattr(self.detector, "proposals", None)
        if face is None and proposals is not None:
            face = profile_proposal(proposals(rgb))
        return face

    def fit_landmarks(self, detection: FaceDetection, width: int, height: int,
                      settings: RegressionSettings) -> tuple[FaceParams, LandmarkTarget]:
        camera = Camera.default_for(width, height, settings.fov_deg)
        if not detection.is_dense:
            points = self.surface_points(settings.num_identity, detection.backend)
            return fit_keypoints(points, detection, camera, settings)
        target = landmark_target(detection, self.correspondence)
        if detection.keypoints is not None:
            points = self.surface_points(settings.num_identity, detection.keypoints.backend)
            turned = fit_turned(points, target, detection, self.correspondence, camera, settings)
            if turned is not None:
                return turned
        corners = tuple(int(np.flatnonzero(self.correspondence.mp_index == i)[0]) for i in EYE_CORNERS)
        init = initial_params(target, corners, camera)
        return regress(self.surface_points(settings.num_identity), target, camera, init, settings), target

    def prepare(self, settings: Settings, progress: Progress | None = None):
        """Check the device and load the detector and CLIP weights, so that what cannot work fails
        before any photo (batches call this once up front). Returns the CLIP extractor or None."""
        select_device(settings.device)
        _ = self.detector, self.mesh  # built now: a missing model or package fails before any photo
        detail = DetailSettings.from_pipeline(settings) if settings.detail else None
        if detail is None or settings.detail_guidance == "photometric":
            return None
        if progress is not None:
            progress.stage("load CLIP")
        return self.detail_guidance(settings, detail)

    def run(self, images, settings: Settings, progress: Progress | None = None) -> Reconstruction:
        """One head from one photo or a list of photos of the same person (paths or arrays).

        With several photos, a photo that cannot be read, has no face, or disagrees with the
        others (another person) is left out and listed in ``Reconstruction.dropped``; a single
        photo's failure is raised as it is."""
        progress = progress or Progress()
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise PhotoSetError("No photos were given.")
        timings: dict[str, float] = {}
        detail = DetailSettings.from_pipeline(settings) if settings.detail else None
        start = time.perf_counter()
        extractor = self.prepare(settings, progress)  # before fitting: what cannot work fails fast
        if extractor is not None:
            timings["clip_load"] = time.perf_counter() - start
        photos, dropped = [], []
        for i, item in enumerate(items):
            try:
                photos.append(self._observe(item, i, len(items), settings, progress, timings))
            except LikenessError as exc:
                if len(items) == 1 or isinstance(exc, Cancelled):
                    raise
                dropped.append(DroppedPhoto(_label(item, i), str(exc)))
        warnings: list[str] = []
        if len(photos) > 1:
            with _timed(timings, "agree"):
                progress.stage("agree")
                photos, disagreeing = self._agreeing(photos, settings.regression, warnings)
            dropped += disagreeing
        if not photos:
            reasons = "; ".join(f"{d.source}: {d.reason}" for d in dropped)
            raise PhotoSetError(f"None of the {len(items)} photos could be used ({reasons}).")
        with _timed(timings, "regress"):
            progress.stage("regress")
            coarse = self._joint_landmarks(photos, settings.regression)
        fitted = [RefinementResult(c, {}) for c in coarse]
        dense = [i for i, p in enumerate(photos) if p.detection.is_dense]  # refinement needs the skin
        if settings.refinement.iterations > 0 and dense:
            with _timed(timings, "refine"):
                params, refined = self._refined(photos, dense, fitted, settings, progress)
            fitted = [RefinementResult(p, {}) for p in params]
            for i, result in zip(dense, refined):
                fitted[i] = RefinementResult(params[i], result.metrics)
        else:
            for i in dense:  # a closed or winking eye stays closed
                fitted[i] = RefinementResult(self._eyelids(photos[i], fitted[i].params), {})
        with _timed(timings, "texture"):
            progress.stage("texture")
            texture = self._texture(photos, [f.params for f in fitted], settings.texture_size,
                                    settings.texture)
        progress.check()  # stages check at their start; this one has no steps of its own
        net = None
        if settings.refinement.likeness_iterations > 0 and dense:
            net = self._optional_identity_net(warnings, "The likeness pass was skipped")
        if net is not None:
            with _timed(timings, "likeness"):
                fitted = self._likeness_pass(photos, dense, fitted, texture, net, settings, progress)
            with _timed(timings, "texture"):  # again, on the geometry the pass moved
                progress.stage("texture")
                texture = self._texture(photos, [f.params for f in fitted], settings.texture_size,
                                        settings.texture)
            progress.check()
        if settings.texture_refinement.iterations > 0 and dense:
            with _timed(timings, "texture_refine"):
                texture = self._refine_texture([photos[i] for i in dense], [fitted[i].params for i in dense],
                                               texture, settings.texture_refinement, progress, warnings)
        fits = [p.fit(self.model, self.landmarks68, c, f) for p, c, f in zip(photos, coarse, fitted)]
        rec = self._result(fits, dropped, texture, timings, _person_iris(photos))
        rec.warnings.extend(warnings)
        if detail is not None:
            guidance = "clip" if extractor is not None else "photometric"
            rec.warnings.extend(self.guidance_notes())
            with _timed(timings, "detail"):
                add_detail(rec, replace(detail, guidance=guidance), progress, rec.warnings, extractor)
            progress.check()  # a cancel during the last detail steps and the bake
        timings["total"] = sum(timings.values())
        return rec

    def fit_photo(self, image, settings: Settings, identity: np.ndarray, albedo: np.ndarray | None = None,
                  progress: Progress | None = None) -> PhotoFit:
        """One more photo of an already reconstructed person: the identity (and, given, the uint8
        skin-atlas albedo) stay frozen; pose, expression, camera and light are fitted."""
        progress = progress or Progress()
        photo = self._observe(image, 0, 1, settings, progress, {})
        coarse = self._joint_landmarks([photo], settings.regression, identity)[0]
        fitted = RefinementResult(coarse, {})
        if settings.refinement.iterations > 0 and photo.detection.is_dense:
            view = View(photo.rgb, photo.target, photo.detection)
            fitted = refine_joint(self.model, [view], [coarse], self.surface_points(100), settings.refinement,
                                  settings.device, progress, fixed_identity=True, fixed_albedo=albedo)[0]
        return photo.fit(self.model, self.landmarks68, coarse, fitted)

    def _observe(self, item, index: int, count: int, settings: Settings, progress: Progress,
                 timings: dict[str, float]) -> _Photo:
        """Load and detect one photo, and fit its landmarks on its own."""
        own: dict[str, float] = {}
        with _timed(own, "load"):
            progress.stage("load")
            loaded = load_image(item, max_pixels=settings.max_pixels)
        with _timed(own, "detect"):
            progress.stage("detect")
            source = _label(loaded.path or item, index) if count > 1 or loaded.path else "the image"
            turns, faces = find_upright(loaded.rgb, self.detector.detect)
            rgb = np.ascontiguousarray(np.rot90(loaded.rgb, turns)) if turns else loaded.rgb
            detection = self.detect(rgb, settings.face_index, source, faces)
            rgb, detection, reduced = _face_resolution(rgb, detection, settings)
        with _timed(own, "regress"):
            alone, target = self.fit_landmarks(detection, rgb.shape[1], rgb.shape[0], settings.regression)
        for key, seconds in own.items():
            timings[key] = timings.get(key, 0.0) + seconds
        path = str(loaded.path) if loaded.path else None
        notes = list(loaded.notes) + detection_notes(turns, faces, detection, settings.face_index) + reduced
        if not detection.is_dense:
            notes.append("Only the eyes, nose, mouth and ears were found (a strong profile?): the head "
                         "is a coarse fit to those points, without photometric refinement.")
        return _Photo(rgb, path, _label(loaded.path or item, index), detection, target, alone, own,
                      notes, turns=turns)

    def _joint_landmarks(self, photos: list[_Photo], settings: RegressionSettings,
                         identity: np.ndarray | None = None) -> list[FaceParams]:
        if len(photos) == 1 and identity is None:
            return [photos[0].alone]
        return regress_joint([self._points_of(p, settings) for p in photos], [p.target for p in photos],
                             [p.alone for p in photos], settings, identity)

    def _points_of(self, photo: _Photo, settings: RegressionSettings):
        kind = "mesh" if photo.detection.is_dense else photo.detection.backend
        return self.surface_points(settings.num_identity, kind)

    @property
    def skin_graph(self) -> MeshGraph:
        if self._graph is None:
            self._graph = MeshGraph.of_skin(self.model)
        return self._graph

    @property
    def identity_net(self) -> FaceRecognitionNet:
        """Face-recognition network, kept across runs; raises AssetError when unavailable (once
        looked for: a batch offline does not retry the download for every photo)."""
        if self._identity_error is not None:
            raise self._identity_error
        if self._identity_net is None:
            try:
                self._identity_net = load_identity_net()
            except AssetError as exc:
                self._identity_error = exc
                raise
        return self._identity_net

    def _agreeing(self, photos: list[_Photo], settings: RegressionSettings,
                  warnings: list[str]) -> tuple[list[_Photo], list[DroppedPhoto]]:
        """Leave out, worst first, photos that do not show the same person as the others:
        their face-recognition descriptor is far from the others' (median distance), or their
        landmarks need an identity of their own (landmark error with the identity fitted on the
        others, above the photo's own fit, far beyond the typical photo's)."""
        descriptors = np.full((len(photos), 128), np.nan)  # NaN: not compared by face recognition
        try:
            for descriptor, photo in zip(descriptors, photos):
                if photo.detection.is_dense:  # the chip needs the eye corners and nose
                    descriptor[:] = embed_photo(self.identity_net, photo.rgb, photo.detection.landmarks)
        except AssetError as exc:
            warnings.append(f"Could not check by face recognition that the photos show one person ({exc}); "
                            "only their landmark fits were compared.")
        kept, dropped = list(range(len(photos))), []
        while len(kept) > 1:
            distance = np.linalg.norm(descriptors[kept][:, None] - descriptors[kept][None], axis=-1)
            excess = self._identity_excess([photos[i] for i in kept], settings)
            excess_limit = max(AGREEMENT_FLOOR, AGREEMENT_FACTOR * float(np.median(excess)))
            scores = []
            for j, i in enumerate(kept):
                photo = photos[i]
                others = np.delete(distance[j], j)
                others = others[np.isfinite(others)]
                photo.metrics["descriptor_distance"] = float(np.median(others)) if len(others) else 0.0
                photo.metrics["identity_excess"] = float(excess[j])
                scores.append(max(photo.metrics["descriptor_distance"] / _descriptor_limit(photo),
                                  excess[j] / excess_limit))
            worst = len(scores) - 1 - int(np.argmax(scores[::-1]))  # ties: the later photo goes
            if scores[worst] <= 1:
                break
            photo = photos[kept.pop(worst)]
            dropped.append(DroppedPhoto(photo.label, (
                "it does not look like the same person as the other photos (face-recognition distance "
                f"{photo.metrics['descriptor_distance']:.2f}, limit {_descriptor_limit(photo):.2f}; "
                f"landmark error with their identity {100 * photo.metrics['identity_excess']:+.1f}% of "
                f"the face size, limit {100 * excess_limit:.1f}%)")))
        return [photos[i] for i in kept], dropped

    def _identity_excess(self, photos: list[_Photo], settings: RegressionSettings) -> np.ndarray:
        """Per photo: landmark error (face sizes) with the identity fitted on the other photos,
        minus that of its own fit."""
        excess = []
        for i, photo in enumerate(photos):
            points = self._points_of(photo, settings)
            identity = self._joint_landmarks(photos[:i] + photos[i + 1:], settings)[0].identity
            frozen = self._joint_landmarks([photo], settings, identity)[0]
            excess.append(landmark_error(points, photo.target, frozen)
                          - landmark_error(points, photo.target, photo.alone))
        return np.asarray(excess)

    def _texture(self, photos: list[_Photo], params: list[FaceParams], size: int,
                 settings: TextureSettings) -> TextureResult:
        """Unwrap every photo's trusted skin, fuse the best-seen skin per texel, complete what none
        saw."""
        surface = self.uv_surface(size)
        views = []
        for photo, photo_params in zip(photos, params):  # each photo's own light colour out before fusing
            if not photo.skin_seen:  # once per photo: the texture after the likeness pass reuses them
                photo.skin = self.skin_trust(photo.rgb, photo.detection, settings)
                landmarks = photo.detection.landmarks if photo.detection.is_dense else None
                photo.illuminant = photo_illuminant(photo.rgb, landmarks, photo.skin, settings)
                if photo.illuminant is not None:
                    photo.metrics.update(photo.illuminant.metrics())
                photo.skin_seen = True
            views.append(unwrap(self.model, photo.rgb, photo_params, surface, photo.skin, photo.illuminant))
        fused, gains = fuse(views, [sharpness(p.rgb, p.detection.box) for p in photos],
                            [neutrality(q.expression) for q in params])
        for photo, gain in zip(photos, gains):
            photo.metrics.update({f"colour_gain_{c}": float(g) for c, g in zip("rgb", gain)})
        albedo = complete(self.model, surface, fused, settings)
        albedo8 = np.clip(albedo * 255 + 0.5, 0, 255).astype(np.uint8)
        return TextureResult(albedo8, fused.visibility, fused.observed, fused.weight)

    def _optional_identity_net(self, warnings: list[str], without: str) -> FaceRecognitionNet | None:
        """The identity network, or None with ``without: <why>`` added to ``warnings``."""
        try:
            return self.identity_net
        except AssetError as exc:
            warnings.append(f"{without}: {exc}")
            return None

    def _likeness_pass(self, photos: list[_Photo], dense: list[int], fitted: list[RefinementResult],
                       texture: TextureResult, net: FaceRecognitionNet, settings: Settings,
                       progress: Progress) -> list[RefinementResult]:
        """Geometry, pose and light refined once more with the textured render's face-recognition
        distance to each photo (core.refinement's likeness pass); eyelids matched again."""
        params, refined = self._refined(photos, dense, fitted, settings, progress,
                                        fixed_albedo=texture.albedo, identity_net=net)
        out = [RefinementResult(p, f.metrics) for p, f in zip(params, fitted)]
        for i, result in zip(dense, refined):
            # the pass's own photometric terms are kept apart (likeness_photometric_*, and held-out
            # ones when asked): they say whether the identity loss costs fit to the photo
            likeness = {k if k.startswith("likeness") else f"likeness_{k}": v
                        for k, v in result.metrics.items() if k.rsplit("_", 1)[0] in LIKENESS_PASS_TERMS}
            out[i] = RefinementResult(params[i], fitted[i].metrics | likeness)
        return out

    def _refined(self, photos: list[_Photo], dense: list[int], fitted: list[RefinementResult],
                 settings: Settings, progress: Progress,
                 **extra) -> tuple[list[FaceParams], list[RefinementResult]]:
        """``refine_joint`` of the photos with dense landmarks from ``fitted`` (``extra``: the likeness
        pass's frozen albedo and identity network): every photo's parameters with the refined
        identity, the refined ones' eyelids matched again, and the refined results."""
        views = [View(photos[i].rgb, photos[i].target, photos[i].detection) for i in dense]
        refined = refine_joint(self.model, views, [fitted[i].params for i in dense], self.surface_points(100),
                               settings.refinement, settings.device, progress, **extra)
        identity = refined[0].params.identity
        params = [replace(f.params, identity=identity.copy()) for f in fitted]
        for i, result in zip(dense, refined):
            params[i] = self._eyelids(photos[i], result.params)
        return params, refined

    def _eyelids(self, photo: _Photo, params: FaceParams) -> FaceParams:
        """A closed or winking eye stays closed: the lids follow the photo's landmarks."""
        return match_eyelids(self.model, params, photo.detection.landmarks)

    def _refine_texture(self, photos: list[_Photo], params: list[FaceParams], texture: TextureResult,
                        settings: TextureRefinementSettings, progress: Progress,
                        warnings: list[str]) -> TextureResult:
        """The GCN refinement (core.appearance.texture_gcn) against every photo with dense landmarks."""
        net = self._optional_identity_net(warnings, "Texture refinement ran without its identity loss")
        views = [TextureView(p.rgb, q, p.detection, None if p.skin is None else p.skin.trust > 0.5)
                 for p, q in zip(photos, params)]
        result = refine_texture(self.model, views, texture, self.uv_surface(texture.albedo.shape[0]),
                                self.skin_graph, net, settings, progress)
        for photo, metrics in zip(photos, result.view_metrics):
            photo.metrics.update(metrics)
        return replace(texture, albedo=result.albedo)

    def _result(self, fits: list[PhotoFit], dropped: list[DroppedPhoto], texture: TextureResult,
                timings: dict[str, float], iris: tuple[float, float, float]) -> Reconstruction:
        first = fits[0]
        several = len(fits) + len(dropped) > 1
        warnings = [f"{fit.source or f'photo {i + 1}'}: {w}" if several else w
                    for i, fit in enumerate(fits) for w in fit.warnings]
        warnings += [f"{d.source} was left out: {d.reason}" for d in dropped]
        return Reconstruction(
            image=first.image,
            model=self.model,
            params=first.params,
            coarse_params=first.coarse_params,
            vertices=first.vertices,
            identity_vertices=self.model.vertices(first.params.identity),
            albedo=texture.albedo,
            albedo_visibility=texture.visibility,
            albedo_trust=texture.trust,
            iris_colour=iris,
            skin_trust=first.skin_trust,
            landmarks68_2d=first.landmarks68_2d,
            face_box=first.face_box,
            detected_landmarks=first.detected_landmarks,
            source=first.source,
            timings=timings,
            metrics=dict(first.metrics),
            warnings=warnings,
            photos=fits,
            dropped=dropped,
        )


def _person_iris(photos: list[_Photo]) -> tuple[float, float, float]:
    """The irises' linear RGB from the first photo with dense landmarks, the room's light colour
    divided out as from the albedo (a warm room gave the eyes of every output a warm cast)."""
    photo = next((p for p in photos if p.detection.is_dense), None)
    if photo is None:
        return DEFAULT_IRIS_COLOUR
    iris = np.asarray(iris_colour(photo.rgb, photo.detection.landmarks))
    if photo.illuminant is not None:
        iris = iris / photo.illuminant.rgb
    return tuple(float(c) for c in np.clip(iris, 0.0, 1.0))


def _face_resolution(rgb: np.ndarray, detection: FaceDetection, settings: Settings
                     ) -> tuple[np.ndarray, FaceDetection, list[str]]:
    """The photo (and its detection) reduced to the resolution the face needs: a face larger than
    ``face_pixels_per_texel * texture_size`` pixels adds no detail to the texture, only memory and
    minutes to every whole-image stage. Returns the notes for the user."""
    box = detection.box
    face = max(box[2] - box[0], box[3] - box[1])
    scale = settings.face_pixels_per_texel * settings.texture_size / max(face, 1.0)
    if scale >= 1:
        return rgb, detection, []
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    reduced = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    # cv2 keeps pixel centres aligned: continuous coordinates scale by the size ratio per axis
    scaled = detection.scaled(size[0] / w, size[1] / h)
    return reduced, scaled, [f"worked at {size[0]} x {size[1]} pixels: the face was {face:.0f} pixels "
                             "across, more than the texture can use"]


@dataclass
class _Photo:
    """A photo in flight: decoded, detected, its landmarks fitted on their own."""

    rgb: np.ndarray
    path: Optional[str]
    label: str  # file name, or "photo N" for arrays
    detection: FaceDetection
    target: LandmarkTarget
    alone: FaceParams  # landmark fit with this photo's own identity
    timings: dict[str, float]
    warnings: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    skin: Optional[SkinTrust] = None  # which pixels may colour skin, once the texture stage ran
    illuminant: Optional[Illuminant] = None  # the light colour divided out of its albedo (None: none)
    skin_seen: bool = False  # skin and illuminant are set
    turns: int = 0  # rgb is the photo turned by np.rot90(photo, turns) to make the face upright

    def fit(self, model: FaceModel, landmarks68: np.ndarray, coarse: FaceParams,
            refined: RefinementResult) -> PhotoFit:
        """The photo's result, in the pixels of the photo as given (a turned photo is turned back);
        ``landmarks68``: the vertex ids its 68 landmarks are read from."""
        turns, size = self.turns, (self.rgb.shape[1], self.rgb.shape[0])
        params, coarse = unturn_params(refined.params, turns), unturn_params(coarse, turns)
        vertices = model.vertices(params.identity, params.expression)
        corners = unturn_points(self.detection.box.reshape(2, 2), turns, size)
        return PhotoFit(
            image=np.ascontiguousarray(np.rot90(self.rgb, -turns)),
            params=params,
            coarse_params=coarse,
            vertices=vertices,
            landmarks68_2d=params.project(vertices[landmarks68]),
            face_box=np.concatenate([corners.min(0), corners.max(0)]),
            detected_landmarks=unturn_points(self.detection.landmarks, turns, size),
            skin_trust=None if self.skin is None else np.ascontiguousarray(np.rot90(self.skin.trust, -turns)),
            source=self.path,
            metrics=refined.metrics | self.metrics,
            timings=self.timings,
            warnings=self.warnings,
        )


def _descriptor_limit(photo: _Photo) -> float:
    """Largest face-recognition distance to the other photos for the same person: dlib's
    descriptor drifts with yaw, so turned heads (welcome views) get more room."""
    yaw = abs(photo.alone.euler_degrees()[0])
    return DESCRIPTOR_LIMIT + DESCRIPTOR_YAW_ALLOWANCE * float(np.clip((yaw - 30) / 30, 0, 1))


def _label(item, index: int) -> str:
    """How a photo is named in messages: its file name, or its position for arrays."""
    return Path(item).name if isinstance(item, (str, Path)) else f"photo {index + 1}"


def _explicit_checkpoint(detail: DetailSettings) -> bool:
    """Whether the user named a CLIP weights file (env var or a path as ``clip_pretrained``)."""
    named = detail.clip.pretrained
    return bool(os.environ.get(ENV_CHECKPOINT)) or (named is not None and Path(named).expanduser().is_file())


def reconstruct(
    images: str | Path | np.ndarray | Sequence[str | Path | np.ndarray],
    preset: str = "balanced",
    device: str = "auto",
    face_index: int | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    pipeline: Pipeline | None = None,
) -> Reconstruction:
    """Reconstruct a textured ICT-FaceKit head from one photo or several photos of one person
    (paths or RGB arrays). Several photos share one identity, albedo and detail; each keeps its
    own pose, expression, camera and light in ``Reconstruction.photos``; photos that cannot be
    used are listed in ``Reconstruction.dropped`` with the reason.

    ``face_index`` picks a face when there are several (largest first); None takes the subject
    (upright, confident, large, inside the photo: ``core.fitting.detection.select_face``).
    Pass a ``Pipeline`` to reuse the loaded model and detector across many photos or people.
    """
    settings = settings or preset_settings(preset, device=device, face_index=face_index)
    pipeline = pipeline or Pipeline(detector_backend=settings.detector)
    return pipeline.run(images, settings, progress)
