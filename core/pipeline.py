"""One photo -> Reconstruction: detect, regress, refine, texture, (detail).

``reconstruct()`` is the public entry point; presets trade time for quality. Heavy shared
objects (face model, correspondence, detectors) live in a ``Pipeline`` that callers may keep
for a batch of photos instead of a hidden module-level cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .correspondence import Correspondence, load_correspondence
from .detail import DetailSettings, add_detail, clip_extractor
from .detection import FaceDetection, MediaPipeMesh, detect_face, make_detector
from .errors import LikenessError, NoFaceError
from .face_model import FaceModel, load_face_model
from .image_io import load_image
from .params import Camera, FaceParams
from .profile import fit_keypoints, keypoint_surface_points, profile_proposal
from .progress import Progress
from .reconstruction import Reconstruction
from .refinement import RefinementSettings, refine
from .regression import LandmarkTarget, RegressionSettings, initial_params, regress, surface_points_for
from .texture import UVSurface, build_texture, uv_surface

PRESET_NAMES = ("fast", "balanced", "quality")
# MediaPipe outer eye corners (subject's right, subject's left): they set the initial depth.
EYE_CORNERS = (33, 263)


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
    detail: bool = False
    detail_iterations: int = 0
    detail_resolution: int = 256
    detail_strength: float = 1.0
    clip_model: str = "ViT-B-32"
    clip_pretrained: Optional[str] = "openai"


def preset_settings(preset: str, **overrides) -> Settings:
    if preset not in PRESET_NAMES:
        raise LikenessError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}.")
    by_preset = {
        "fast": dict(refinement=RefinementSettings(iterations=30, resolution=160), texture_size=512),
        "balanced": dict(refinement=RefinementSettings(iterations=100, resolution=224), texture_size=1024),
        "quality": dict(refinement=RefinementSettings(iterations=150, resolution=256), texture_size=1024,
                        detail=True, detail_iterations=80, detail_resolution=256),
    }[preset]
    return replace(Settings(preset=preset, **by_preset), **overrides)


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
        self.detector_backend = detector_backend
        self._detector = None
        self._mesh: MediaPipeMesh | None = None
        self._points: dict[tuple[str, int], object] = {}
        self._uv_surfaces: dict[int, UVSurface] = {}
        self._clip: tuple[tuple, object] | None = None

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

    def close(self) -> None:
        for resource in (self._detector, self._mesh):
            if resource is not None:
                resource.close()
        self._detector = self._mesh = None

    def clip_extractor(self, settings: DetailSettings):
        """The CLIP encoder for the detail stage, kept across photos (loading takes seconds)."""
        key = (settings.clip, settings.device)
        if self._clip is None or self._clip[0] != key:
            self._clip = (key, clip_extractor(settings))
        return self._clip[1]

    def uv_surface(self, size: int) -> UVSurface:
        """Texel -> triangle map of the skin atlas: depends on the model and size only."""
        if size not in self._uv_surfaces:
            self._uv_surfaces[size] = uv_surface(self.model, size)
        return self._uv_surfaces[size]

    def surface_points(self, num_identity: int, kind: str = "mesh"):
        """Model points of the dense landmarks (``mesh``) or of BlazeFace's keypoints (``keypoints``)."""
        key = (kind, num_identity)
        if key not in self._points:
            build = surface_points_for if kind == "mesh" else keypoint_surface_points
            self._points[key] = build(self.model, self.correspondence, num_identity)
        return self._points[key]

    def detect(self, rgb: np.ndarray, face_index: Optional[int] = None,
               source: str = "the image") -> FaceDetection:
        """One face; with dense landmarks when the landmark network accepts it, else (profiles) the most
        confident BlazeFace proposal with its six keypoints (core.profile)."""
        try:
            return detect_face(rgb, face_index=face_index, detector=self.detector, mesh=self.mesh,
                               source=source)
        except NoFaceError:
            proposals = getattr(self.detector, "proposals", None)
            sparse = profile_proposal(proposals(rgb)) if proposals is not None and not face_index else None
            if sparse is None:
                raise
            return sparse

    def fit_landmarks(self, detection: FaceDetection, width: int, height: int,
                      settings: RegressionSettings) -> tuple[FaceParams, LandmarkTarget]:
        camera = Camera.default_for(width, height, settings.fov_deg)
        if not detection.is_dense:
            return fit_keypoints(self.surface_points(settings.num_identity, "keypoints"), detection, camera,
                                 settings)
        target = landmark_target(detection, self.correspondence)
        corners = tuple(int(np.flatnonzero(self.correspondence.mp_index == i)[0]) for i in EYE_CORNERS)
        init = initial_params(target, corners, camera)
        return regress(self.surface_points(settings.num_identity), target, camera, init, settings), target

    def run(self, image, settings: Settings, progress: Progress | None = None) -> Reconstruction:
        progress = progress or Progress()
        timings: dict[str, float] = {}
        warnings: list[str] = []
        detail = DetailSettings.from_pipeline(settings) if settings.detail else None
        extractor = None
        if detail is not None and detail.clip_weight > 0:
            with _timed(timings, "clip_load"):
                progress.stage("load CLIP")
                extractor = self.clip_extractor(detail)  # before fitting: missing weights fail fast
        with _timed(timings, "load"):
            progress.stage("load")
            loaded = load_image(image)
            rgb = loaded.rgb
            warnings.extend(loaded.notes)
        with _timed(timings, "detect"):
            progress.stage("detect")
            source = Path(loaded.path).name if loaded.path else "the image"
            detection = self.detect(rgb, settings.face_index, source)
        with _timed(timings, "regress"):
            progress.stage("regress")
            coarse, target = self.fit_landmarks(detection, rgb.shape[1], rgb.shape[0], settings.regression)
        params, metrics = coarse, {}
        if not detection.is_dense:
            warnings.append("Only the eyes, nose, mouth and ears were found (a strong profile?): the head "
                            "is a coarse fit to those points, without photometric refinement.")
        elif settings.refinement.iterations > 0:
            with _timed(timings, "refine"):
                refined = refine(self.model, rgb, coarse, target, detection,
                                 self.surface_points(100), settings.refinement, settings.device, progress)
                params, metrics = refined.params, refined.metrics
        with _timed(timings, "texture"):
            progress.stage("texture")
            size = settings.texture_size
            texture = build_texture(self.model, rgb, params, size, self.uv_surface(size))
        progress.check()  # stages check at their start; this one has no steps of its own
        vertices = self.model.vertices(params.identity, params.expression)
        rec = Reconstruction(
            image=rgb,
            model=self.model,
            params=params,
            coarse_params=coarse,
            vertices=vertices,
            identity_vertices=self.model.vertices(params.identity),
            albedo=texture.albedo,
            albedo_visibility=texture.visibility,
            landmarks68_2d=params.project(vertices[self.model.landmarks68]),
            face_box=detection.box.copy(),
            detected_landmarks=detection.landmarks.copy(),
            source=str(loaded.path) if loaded.path else None,
            timings=timings,
            metrics=metrics,
            warnings=warnings,
        )
        if detail is not None:
            with _timed(timings, "detail"):
                add_detail(rec, detail, progress, warnings, extractor)
            progress.check()  # a cancel during the last detail steps and the bake
        timings["total"] = sum(timings.values())
        return rec


def reconstruct(
    image: str | Path | np.ndarray,
    preset: str = "balanced",
    device: str = "auto",
    face_index: int | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    pipeline: Pipeline | None = None,
) -> Reconstruction:
    """Reconstruct a textured ICT-FaceKit head from one photo (a path or an RGB array).

    ``face_index`` picks a face when there are several (largest first); None takes the largest.
    Pass a ``Pipeline`` to reuse the loaded model and detector across many photos.
    """
    settings = settings or preset_settings(preset, device=device, face_index=face_index)
    pipeline = pipeline or Pipeline(detector_backend=settings.detector)
    return pipeline.run(image, settings, progress)
