"""The result of a reconstruction from one or several photos of a person: everything the files,
the preview and Blender need."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .geometry.face_model import FaceModel
from .geometry.params import FaceParams
from .geometry.parts import DEFAULT_IRIS_COLOUR
from .progress import Progress


@dataclass
class DetailMaps:
    """Mid-frequency detail (issue 3): UV displacement along vertex normals."""

    displacement_mm: np.ndarray  # (S, 2S) float32 mm, outwards positive, skin-atlas layout like albedo
    normal_map: np.ndarray  # (S, 2S, 3) uint8 tangent-space normal map, same layout
    detail_vertices: Optional[np.ndarray] = None  # (Vd, 3) densified detailed face mesh, metres
    detail_faces: Optional[np.ndarray] = None  # (Fd, 3) int32
    detail_uvs: Optional[np.ndarray] = None  # (Vd, 2) float32
    # the mode that ran: "clip" or "photometric" (core.displacement.detail.GUIDANCE_MODES)
    guidance: str = "photometric"
    clip_weights: Optional[str] = None  # where the CLIP weights came from (tag, checkpoint path, random)


@dataclass
class PhotoFit:
    """What is each photo's own in a reconstruction: pose, expression, camera and light
    (``params``; its identity is the shared one), landmarks and fit diagnostics."""

    image: np.ndarray  # (H, W, 3) uint8 as decoded
    params: FaceParams  # refined: shared identity, this photo's expression, pose, camera, light
    coarse_params: FaceParams  # from landmark regression
    vertices: np.ndarray  # (V, 3) float32 identity + this photo's expression, metres
    # (68, 2) fitted model's iBUG landmarks as photos are annotated (3D-consistent), this photo's pixels
    landmarks68_2d: np.ndarray
    face_box: np.ndarray  # (4,) detected face box
    detected_landmarks: Optional[np.ndarray] = None  # (478, 2) MediaPipe landmarks
    skin_trust: Optional[np.ndarray] = None  # (H, W) float32 in [0, 1]: photo pixels trusted as skin
    source: Optional[str] = None  # path, or the caller's label for an array
    metrics: dict[str, float] = field(default_factory=dict)  # refinement and agreement diagnostics
    timings: dict[str, float] = field(default_factory=dict)  # seconds for this photo's own stages
    warnings: list[str] = field(default_factory=list)


@dataclass
class DroppedPhoto:
    """A photo given for the person but not used, and why (shown to the user as it is)."""

    source: str
    reason: str


@dataclass
class Reconstruction:
    """A fitted, textured ICT-FaceKit head from one or several photos of one person.

    Identity, albedo and detail belong to the person; ``photos`` holds one ``PhotoFit`` per
    photo used (in the order given), ``dropped`` the photos left out with the reason. The
    single-photo fields (``image``, ``params``, ``vertices``, ``landmarks68_2d`` ...) describe
    the first photo used, ``photos[0]``, so one-photo callers read the result as before.

    Geometry is in model space (metres, y up, z towards the viewer); ``params`` maps it into
    the photo. Images and UV textures are ``uint8`` RGB with row 0 at the top; UV row 0 is v = 1.
    Skin textures use the "skin atlas" layout of ``FaceModel.atlas_uvs``: (S, 2S), the face in the
    left half, the back of the head in the right half. ``uvs`` are those atlas UVs.
    """

    image: np.ndarray  # (H, W, 3) uint8, the input photo as decoded (EXIF-rotated)
    model: FaceModel
    params: FaceParams  # refined parameters (or regressed ones when refinement is off)
    coarse_params: FaceParams  # parameters straight from regression
    vertices: np.ndarray  # (V, 3) float32 identity + expression, metres
    identity_vertices: np.ndarray  # (V, 3) float32 identity only: the shape-key basis
    albedo: np.ndarray  # (S, 2S, 3) uint8 de-lit skin-atlas albedo
    albedo_visibility: np.ndarray  # (S, 2S) float32 in [0, 1]: how much of each texel was seen
    # (68, 2) float, input-image pixels: the fitted model's iBUG landmarks as photos are annotated
    landmarks68_2d: np.ndarray
    face_box: np.ndarray  # (4,) x0, y0, x1, y1 of the detected face
    detected_landmarks: Optional[np.ndarray] = None  # (478, 2) MediaPipe landmarks, input-image pixels
    # (S, 2S) float32 in [0, 1]: how much the photo coloured each texel (visibility x skin trust)
    albedo_trust: Optional[np.ndarray] = None
    # linear RGB of the irises, measured in the photo with the room's light colour divided out like
    # the albedo's: what every output's eyes show
    iris_colour: tuple[float, float, float] = DEFAULT_IRIS_COLOUR
    skin_trust: Optional[np.ndarray] = None  # (H, W) float32 in [0, 1]: photo pixels trusted as skin
    source: Optional[str] = None  # input path, when there was one
    detail: Optional[DetailMaps] = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    metrics: dict[str, float] = field(default_factory=dict)  # fit diagnostics
    warnings: list[str] = field(default_factory=list)
    person: Optional[str] = None  # the person's name (e.g. their photo folder): names the files
    photos: list[PhotoFit] = field(default_factory=list)  # every photo used; photos[0] is the one above
    dropped: list[DroppedPhoto] = field(default_factory=list)

    def seen_from(self, photo: PhotoFit) -> Reconstruction:
        """This head with ``photo``'s fields in the single-photo ones (shared identity, albedo)."""
        return replace(self, image=photo.image, params=photo.params, coarse_params=photo.coarse_params,
                       vertices=photo.vertices, landmarks68_2d=photo.landmarks68_2d, face_box=photo.face_box,
                       detected_landmarks=photo.detected_landmarks, skin_trust=photo.skin_trust,
                       source=photo.source, photos=[photo])

    @property
    def polygons(self) -> np.ndarray:
        return self.model.polygons

    @property
    def polygon_uvs(self) -> np.ndarray:
        return self.model.polygon_uvs

    @property
    def uvs(self) -> np.ndarray:
        return self.model.atlas_uvs

    @property
    def expression_weights(self) -> dict[str, float]:
        return dict(zip(self.model.expression_names, map(float, self.params.expression)))

    @property
    def name(self) -> str:
        """The stem of every file name of this result."""
        if self.person:
            return file_stem(self.person)
        return file_stem(Path(self.source).stem) if self.source else "likeness_head"

    def save(self, out_dir: str | Path, formats: str | tuple[str, ...] = ("obj", "glb"),
             extra=None, progress: Progress | None = None) -> list[Path]:
        """Write OBJ+MTL+PNG (and GLB, EXR when detail exists) and a preview as the folder
        ``out_dir``, atomically: it holds this whole result, or stays as it was, also when
        ``progress`` is cancelled while writing (see ``core.output.export.save_reconstruction``, also
        for ``extra``)."""
        from .output.export import save_reconstruction

        return save_reconstruction(self, Path(out_dir), formats=formats, extra=extra, progress=progress)


def file_stem(text: str) -> str:
    """``text`` usable as a file name on every system and inside OBJ/MTL lines: control
    characters (a newline would split ``mtllib``) and reserved characters become ``_``."""
    cleaned = re.sub(r'[\x00-\x1f\x7f<>:"/\\|?*]', "_", text).strip(" .")
    return cleaned or "likeness_head"
