"""Face detection: face boxes plus landmarks, from MediaPipe (dense 478-point mesh) or InsightFace SCRFD.

One mechanism gives dense landmarks for every backend: a box detector proposes faces (MediaPipe's
BlazeFace or SCRFD), then ``MediaPipeMesh`` runs FaceMesh's landmark network (its ``FaceLandmarkCpu``
subgraph, shipped in the mediapipe wheel) on a region of interest derived from that box
(``dense_landmarks``). The FaceMesh solution would derive that region from its own BlazeFace pass over
the whole input instead: it misses small faces in big photos, and run on crops around given boxes it
rejected more profiles (AFLW2000-3D dev: 189 of 200 faces against 192 here). The network's
face-presence score still rejects proposals that are not faces.

Landmarks are ``(x, y)`` in continuous pixel coordinates (docs/ARCHITECTURE.md): MediaPipe's
normalised ``x * W``, ``y * H``; its relative depth ``z`` is in the units of ``x``, so ``z * W``.

Thread safety: MediaPipe graphs are not thread-safe. Each detector and mesh serialises its own calls
with a lock, so sharing one between threads is safe but not parallel; use one per thread for that.
Create them once and reuse them (building the graphs costs far more than a call), and ``close()``
them or use them as context managers.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Protocol

import cv2
import numpy as np

from ..errors import AssetError, DependencyError, FaceSelectionError, NoFaceError
from ..geometry.correspondence import load_landmark_mirror
from ..native_log import quiet_mediapipe

# MediaPipe's own region of interest: a square 1.5 times the face box (BlazeFace's or the landmarks'),
# rotated so the eyes are level. SCRFD boxes are ~1.2 times larger than BlazeFace's: 1.25 fitted most
# AFLW2000-3D faces (measured 1.15 / 1.25 / 1.35 / 1.5: 187 / 190 / 188 / 183 of 200).
_ROI_SCALE = 1.5
_BOX_ROI_SCALE = {"insightface": 1.25}
# Crop around the region (side / region side): room for the rotated region; bigger crops are shrunk
# to _CROP_MAX with area averaging, which the network's bilinear sampling lacks.
_CROP_SCALE = 1.5
_CROP_MAX = 512
# BlazeFace sees the image at 128 px (short range) or 192 px (full range): a face under ~10% of the
# image goes unseen, so when the whole image yields nothing, a pyramid of overlapping tiles is searched.
_MIN_TILE = 256
_NMS_IOU = 0.3
_SAME_FACE_IOU = 0.5
_MESH_EYES = (33, 263)  # outer eye corners: image-left eye first, as BlazeFace and SCRFD keypoints 0, 1
_MESH_MOUTH = (13, 14)  # inner lip centres
# SCRFD's keypoints (image-left eye, other eye, nose, image-left mouth corner, other) in a mirrored photo.
_SCRFD_MIRROR = (1, 0, 2, 4, 3)
UPRIGHT_ROLL_DEG = 45.0
# How far a subject's head tilts (towards a shoulder); beyond, a "face" lies on its side (emblem, poster).
SUBJECT_ROLL_DEG = 60.0
# find_upright: an upright face this confident needs no turned retry; a turn must beat it by the margin.
# Measured: upright faces 0.90-0.93, the same faces upside down 0.57-0.84 (000002, img1, trump_hillary);
# upright AFLW2000-3D faces whose 180-degree turn scored higher stayed below 0.85.
_CONFIDENT = 0.9
_TURN_MARGIN = 0.05
SMALL_FACE_PX = 80  # below this many pixels across, a face carries little shape or texture detail
_MESH_SIZES = (468, 478)

# Mesh points the attention network takes from its own eye (with brow) and lip sub-models
# (MediaPipe's tensors_to_face_landmarks_with_attention graph): the plain network is worse there
# (it reads a winking eye half open), so only the other points are averaged between the two.
_ATTENTION_REFINED = np.array([
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23,
    22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113,
    225, 224, 223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
    156, 70, 63, 105, 66, 107, 55, 193, 263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386,
    385, 384, 398, 359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446,
    261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282,
    295, 372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417,
    # ^ left and right eye regions, brows included; lips:
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95,
    88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415, 76, 77, 90, 180,
    85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408, 62, 96, 89, 179, 86, 15,
    316, 403, 319, 325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407,
])
_AVERAGED = np.setdiff1d(np.arange(468), _ATTENTION_REFINED)

_LANDMARK_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:face_landmarks"
input_side_packet: "WITH_ATTENTION:with_attention"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:face_landmarks"
  input_side_packet: "WITH_ATTENTION:with_attention"
}
"""
_PRESENCE_PARAM = "facelandmarkcpu__ThresholdingCalculator.threshold"
_INSIGHTFACE_ENV = "LIKENESS_INSIGHTFACE_MODEL"


@dataclass(eq=False)
class FaceDetection:
    """One face: ``box`` (4,) x0, y0, x1, y1 and ``landmarks`` (N, 2) in image pixels.

    N is 478 (MediaPipe mesh with irises), 468 (mesh without), 5 (SCRFD: eyes, nose, mouth corners)
    or 6 (BlazeFace proposals). ``landmarks_z`` (N,) is the mesh's relative depth in pixels, else None.
    ``keypoints``: the same face as a keypoint detector (SCRFD, when installed) sees it, for a dense
    detection: pose evidence where the dense landmarks saturate (core.fitting.profile.fit_turned).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    landmarks_z: Optional[np.ndarray]
    backend: str
    keypoints: Optional[FaceDetection] = None

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def is_dense(self) -> bool:
        return self.landmarks.shape[0] in _MESH_SIZES

    def scaled(self, fx: float, fy: float) -> FaceDetection:
        """The detection in an image resized by (fx, fy) (continuous pixel coordinates scale per axis)."""
        factors = np.array([fx, fy])
        return replace(self, box=self.box * np.tile(factors, 2), landmarks=self.landmarks * factors,
                       landmarks_z=None if self.landmarks_z is None else self.landmarks_z * fx,
                       keypoints=None if self.keypoints is None else self.keypoints.scaled(fx, fy))


class Detector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB uint8 image, largest box first."""
        ...

    def close(self) -> None: ...


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        raise ValueError("expected an (H, W, 3) uint8 RGB image")
    return np.ascontiguousarray(rgb)


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError as e:
        raise DependencyError(
            "MediaPipe is not installed: install the dependencies (pip install mediapipe==0.10.21, or "
            "the Install Dependencies button in the add-on preferences)."
        ) from e
    return mediapipe


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def same_face(face: FaceDetection, proposals: list[FaceDetection], min_iou: float) -> FaceDetection | None:
    """The most confident of ``proposals`` whose box overlaps ``face``'s by at least ``min_iou``, or None."""
    overlapping = [p for p in proposals if _iou(face.box, p.box) >= min_iou]
    return max(overlapping, key=lambda p: p.score) if overlapping else None


def _nms(dets: list[FaceDetection], threshold: float) -> list[FaceDetection]:
    keep: list[FaceDetection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(_iou(d.box, k.box) < threshold for k in keep):
            keep.append(d)
    return keep


def _largest_first(dets: list[FaceDetection]) -> list[FaceDetection]:
    return sorted(dets, key=lambda d: -d.area)


def _roll(p0: np.ndarray, p1: np.ndarray) -> float:
    """MediaPipe's ROI rotation (radians) that makes the segment p0 -> p1 horizontal."""
    return -math.atan2(-(p1[1] - p0[1]), p1[0] - p0[0])


def _square_crop(rgb: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, int, int, float]:
    """Square crop (zero padded outside the image) of about ``side`` px centred at (cx, cy), shrunk to
    at most _CROP_MAX. Returns crop, its integer origin in the image and crop px per image px."""
    h, w = rgb.shape[:2]
    n = max(int(math.ceil(side)), 1)
    x0, y0 = int(round(cx - n / 2)), int(round(cy - n / 2))
    crop = np.zeros((n, n, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    if n > _CROP_MAX:
        # cv2.resize keeps pixel centres aligned, so continuous coordinates scale exactly by the ratio.
        crop = cv2.resize(crop, (_CROP_MAX, _CROP_MAX), interpolation=cv2.INTER_AREA)
    return crop, x0, y0, crop.shape[0] / n


def _opened(*solutions) -> None:
    """Wait until the graphs have opened their calculators, which they do on worker threads after
    the constructor returns: their log lines then fall inside the caller's quiet window."""
    for solution in solutions:
        solution._graph.wait_until_idle()  # SolutionBase keeps its CalculatorGraph there


class MediaPipeMesh:
    """The FaceMesh landmark networks (478 points with ``refine_landmarks``, else 468) on a given box."""

    @quiet_mediapipe.wrap
    def __init__(self, refine_landmarks: bool = True, min_presence: float = 0.5):
        _import_mediapipe()
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python.solution_base import SolutionBase

        self._rect = rect_pb2.NormalizedRect
        # With refine_landmarks both FaceMesh networks of the wheel run: the attention one (eyes,
        # brows, lips and irises from sub-models) and the plain one, whose estimate of the other
        # points is averaged in: the two err differently (AFLW2000-3D dev, regression NME [0, 30] /
        # (30, 60] deg: 2.90 / 4.90 -> 2.82 / 4.85).
        self._graphs = [SolutionBase(graph_config=_LANDMARK_GRAPH,
                                     side_inputs={"with_attention": attention},
                                     calculator_params={_PRESENCE_PARAM: min_presence},
                                     outputs=["face_landmarks"])
                        for attention in ((True, False) if refine_landmarks else (False,))]
        self._mirror = load_landmark_mirror()
        self._lock = threading.Lock()
        _opened(*self._graphs)

    @quiet_mediapipe.wrap
    def fit(self, rgb: np.ndarray, box: np.ndarray, eyes: Optional[np.ndarray] = None,
            box_scale: float = _ROI_SCALE) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Landmarks (N, 2) and depth (N,) in image pixels for the face in ``box``; None when the
        network finds no face there. ``eyes`` (2, 2), image-left eye first, sets the initial roll."""
        rgb = _check_rgb(rgb)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        roi = box_scale * max(box[2] - box[0], box[3] - box[1])
        crop, x0, y0, k = _square_crop(rgb, cx, cy, _CROP_SCALE * roi)
        centre = np.array([cx - x0, cy - y0]) * k
        # Eye keypoints of profiles can give a wild roll: retry level before giving up.
        rolls = ([_roll(*eyes)] if eyes is not None else []) + [0.0]
        with self._lock:
            first, *others = self._graphs
            pts = self._mirror_mean(first, crop, centre, roi * k, rolls)
            if pts is None:
                return None
            for graph in others:
                plain = self._mirror_mean(graph, crop, centre, roi * k, rolls)
                if plain is not None:
                    pts[_AVERAGED] = (pts[_AVERAGED] + plain[_AVERAGED]) / 2
        return pts[:, :2] / k + [x0, y0], pts[:, 2] / k

    def _mirror_mean(self, graph, crop: np.ndarray, centre: np.ndarray, side: float,
                     rolls: list[float]) -> Optional[np.ndarray]:
        """Landmarks (N, 3) in crop pixels, the mean of the face's and of its mirror image's: the
        network's errors are not mirror-symmetric, and the mean is closer to the face (AFLW2000-3D
        dev, regression NME [0, 30] / (30, 60] deg bins: 2.94 / 5.08 -> 2.91 / 4.91)."""
        pts = self._two_pass(graph, crop, centre, side, rolls)
        if pts is None:
            return None
        n = crop.shape[0]
        mirror_centre = np.array([n - centre[0], centre[1]])
        mirrored = self._two_pass(graph, np.ascontiguousarray(crop[:, ::-1]), mirror_centre, side,
                                  [-r for r in rolls])
        if mirrored is None:
            return pts
        mirrored[:, 0] = n - mirrored[:, 0]
        return (pts + mirrored[self._mirror[:len(pts)]]) / 2

    def _two_pass(self, graph, crop: np.ndarray, centre: np.ndarray, side: float,
                  rolls: list[float]) -> Optional[np.ndarray]:
        """Landmarks (N, 3) in crop pixels from the first of ``rolls`` the network accepts, then again
        on the region they span, as FaceMesh does when tracking video: it makes the result depend less
        on which detector framed the face (AFLW2000-3D: median BlazeFace vs SCRFD difference 0.7% ->
        0.4% of the face size; accuracy unchanged)."""
        pts = next((p for r in rolls if (p := self._run(graph, crop, centre, side, r)) is not None), None)
        if pts is None:
            return None
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        again = self._run(graph, crop, (lo + hi) / 2, _ROI_SCALE * float((hi - lo).max()),
                          _roll(pts[_MESH_EYES[0], :2], pts[_MESH_EYES[1], :2]))
        return again if again is not None else pts

    def _run(self, graph, crop: np.ndarray, centre: np.ndarray, side: float,
             roll: float) -> Optional[np.ndarray]:
        n = crop.shape[0]
        roi = self._rect(x_center=centre[0] / n, y_center=centre[1] / n, width=side / n, height=side / n,
                         rotation=roll)
        lms = graph.process({"image": crop, "roi": roi}).face_landmarks
        if lms is None:
            return None
        # Normalised to the crop; z is normalised by the width like x.
        return np.array([(p.x, p.y, p.z) for p in lms.landmark], np.float64) * n

    @quiet_mediapipe.wrap
    def close(self) -> None:
        with self._lock:
            for graph in self._graphs:
                graph.close()
            self._graphs = []

    def __enter__(self) -> MediaPipeMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _eyes(detection: FaceDetection) -> np.ndarray:
    idx = _MESH_EYES if detection.is_dense else (0, 1)
    return detection.landmarks[list(idx)]


def _fit_dense(rgb: np.ndarray, detection: FaceDetection, mesh: MediaPipeMesh,
               backend: str) -> Optional[FaceDetection]:
    fit = mesh.fit(rgb, detection.box, _eyes(detection), _BOX_ROI_SCALE.get(detection.backend, _ROI_SCALE))
    if fit is None:
        return None
    pts, z = fit
    box = np.concatenate([pts.min(0), pts.max(0)])
    return FaceDetection(box, detection.score, pts, z, backend)


def dense_landmarks(rgb: np.ndarray, detection: FaceDetection, mesh: MediaPipeMesh) -> FaceDetection:
    """The detection refitted with the dense mesh; its box becomes the box of the mesh landmarks.

    Raises NoFaceError when the landmark network rejects the face (extreme profile, heavy occlusion)."""
    backend = detection.backend if detection.backend == "mediapipe" else f"{detection.backend}+mediapipe"
    dense = _fit_dense(rgb, detection, mesh, backend)
    if dense is None:
        raise NoFaceError(
            "A face was detected but its landmarks could not be fitted (extreme profile, heavy occlusion or "
            "blur). Use a photo where the face is seen more from the front."
        )
    return dense


def _tiles(h: int, w: int) -> Iterator[tuple[int, int, int]]:
    """(x, y, side) of square tiles overlapping by half, halving the side down to _MIN_TILE."""
    side = min(h, w) // 2
    while side >= _MIN_TILE:
        step = side // 2
        for y in sorted({*range(0, h - side, step), h - side}):
            for x in sorted({*range(0, w - side, step), w - side}):
                yield x, y, side
        side //= 2


class MediaPipeDetector:
    """Faces with dense MediaPipe landmarks: BlazeFace boxes refined by ``MediaPipeMesh``. Offline
    (the models ship in the mediapipe wheel). A group photo whose faces are all small is searched
    tile by tile, so its faces may take ~0.5 s to find on CPU."""

    @quiet_mediapipe.wrap
    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5, refine_landmarks: bool = True):
        mp = _import_mediapipe()
        self.max_faces = max_faces
        blaze = mp.solutions.face_detection.FaceDetection
        self._short_range = blaze(min_detection_confidence=min_confidence, model_selection=0)
        self._full_range = blaze(min_detection_confidence=min_confidence, model_selection=1)
        self.mesh = MediaPipeMesh(refine_landmarks)
        self._lock = threading.Lock()
        self._closed = False
        _opened(self._short_range, self._full_range)

    @quiet_mediapipe.wrap
    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        rgb = _check_rgb(rgb)
        found: list[FaceDetection] = []
        for proposal in _largest_first(self.proposals(rgb)):
            face = _fit_dense(rgb, proposal, self.mesh, "mediapipe")
            if face is not None and all(_iou(face.box, f.box) < _SAME_FACE_IOU for f in found):
                found.append(face)
                if len(found) == self.max_faces:
                    break
        return _largest_first(found)

    @quiet_mediapipe.wrap
    def proposals(self, rgb: np.ndarray) -> list[FaceDetection]:
        """BlazeFace boxes with its 6 keypoints (eyes, nose tip, mouth, ear tragions), not yet checked
        by the landmark network."""
        rgb = _check_rgb(rgb)
        with self._lock:
            found = self._blaze(self._short_range, rgb, 0, 0)
            if not found:
                h, w = rgb.shape[:2]
                for x, y, s in _tiles(h, w):
                    found += self._blaze(self._full_range, np.ascontiguousarray(rgb[y:y + s, x:x + s]), x, y)
        return _nms(found, _NMS_IOU)

    @staticmethod
    def _blaze(model, rgb: np.ndarray, x0: int, y0: int) -> list[FaceDetection]:
        h, w = rgb.shape[:2]
        out = []
        for d in model.process(rgb).detections or []:
            b = d.location_data.relative_bounding_box
            box = np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
            kps = np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints])
            out.append(FaceDetection(box + [x0, y0, x0, y0], float(d.score[0]), kps + [x0, y0], None,
                                     "blazeface"))
        return out

    @quiet_mediapipe.wrap
    def close(self) -> None:
        with self._lock:
            if not self._closed:  # SolutionBase.close() raises when called twice
                self._short_range.close()
                self._full_range.close()
                self.mesh.close()
                self._closed = True

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_insightface_model() -> Path:
    """An SCRFD detector: env LIKENESS_INSIGHTFACE_MODEL, else the first ``det_*.onnx`` or ``scrfd*.onnx``
    under ``~/.insightface/models`` (where InsightFace keeps its model packs)."""
    env = os.environ.get(_INSIGHTFACE_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise AssetError(f"{_INSIGHTFACE_ENV} is set to {path}, which is not a file: point it to an "
                             "InsightFace SCRFD .onnx detector (e.g. det_10g.onnx from the buffalo_l pack).")
        return path
    root = Path("~/.insightface/models").expanduser()
    found = sorted(p for pattern in ("det_*.onnx", "scrfd*.onnx") for p in root.rglob(pattern))
    if not found:
        raise AssetError(
            f"No InsightFace face detector found under {root}. Download an SCRFD model (e.g. the buffalo_l "
            f"pack's det_10g.onnx) into that folder, or set {_INSIGHTFACE_ENV} to its path, or use the "
            "mediapipe detector."
        )
    return found[0]


class InsightFaceDetector:
    """SCRFD face boxes with 5 keypoints (image-left eye, other eye, nose, mouth corners) on CPU.
    For dense landmarks pass its detections to ``dense_landmarks``."""

    def __init__(self, model_path: str | os.PathLike | None = None, det_size: tuple[int, int] = (320, 320),
                 max_faces: int = 5, min_confidence: float = 0.5):
        path = Path(model_path) if model_path is not None else default_insightface_model()
        if not path.is_file():
            raise AssetError(f"InsightFace model {path} does not exist: pass an SCRFD .onnx detector.")
        try:
            from insightface.model_zoo import get_model
        except ImportError as e:
            raise DependencyError("InsightFace is not installed: pip install insightface==2.1 onnxruntime, "
                                  "or use the mediapipe detector.") from e
        try:
            model = get_model(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime reports corrupt files with its own exception types
            raise AssetError(f"Could not load the InsightFace model {path} ({e}): download it again.") from e
        if model is None or getattr(model, "taskname", None) != "detection":
            raise AssetError(f"{path} is not an InsightFace face detector: use an SCRFD model (det_*.onnx).")
        if not model.use_kps:
            raise AssetError(f"{path} is an SCRFD model without keypoints: use a *_kps model (det_*.onnx).")
        model.prepare(ctx_id=-1, input_size=tuple(det_size), det_thresh=min_confidence)
        self.path = path
        self.max_faces = max_faces
        self._model = model

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Faces with their box and keypoints averaged with those found in the mirrored photo: on the
        profiles of AFLW2000-3D dev, whose pose comes from these keypoints, regression NME 6.95 -> 6.71."""
        rgb = _check_rgb(rgb)
        width = rgb.shape[1]
        mirrored = [_unmirrored(d, width) for d in self._detect(rgb[:, ::-1])]
        dets = [_averaged(d, same_face(d, mirrored, _SAME_FACE_IOU)) for d in self._detect(rgb)]
        return _largest_first(dets)[:self.max_faces]

    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        boxes, kps = self._model.detect(np.ascontiguousarray(rgb[..., ::-1]))
        return [FaceDetection(b[:4].astype(np.float64), float(b[4]), k.astype(np.float64), None,
                              "insightface") for b, k in zip(boxes, kps, strict=True)]

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> InsightFaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unmirrored(face: FaceDetection, width: int) -> FaceDetection:
    """An SCRFD face found in the mirrored photo, in the photo's coordinates and keypoint order."""
    box = np.array([width - face.box[2], face.box[1], width - face.box[0], face.box[3]])
    keypoints = face.landmarks[list(_SCRFD_MIRROR)] * [-1.0, 1.0] + [width, 0.0]
    return replace(face, box=box, landmarks=keypoints)


def _averaged(face: FaceDetection, mirrored: FaceDetection | None) -> FaceDetection:
    if mirrored is None:
        return face
    return replace(face, box=(face.box + mirrored.box) / 2,
                   landmarks=(face.landmarks + mirrored.landmarks) / 2)


def make_detector(backend: str = "mediapipe", **kwargs) -> Detector:
    if backend == "mediapipe":
        return MediaPipeDetector(**kwargs)
    if backend == "insightface":
        return InsightFaceDetector(**kwargs)
    raise ValueError(f"unknown face detector backend {backend!r}: use 'mediapipe' or 'insightface'")


def face_roll(detection: FaceDetection) -> float:
    """In-plane rotation of the face in degrees: 0 upright, +-90 on its side, 180 upside down; from
    the eyes and the mouth (dense mesh, BlazeFace's 6 or SCRFD's 5 keypoints)."""
    points = detection.landmarks
    if detection.is_dense:
        eyes, mouth = points[list(_MESH_EYES)].mean(0), points[list(_MESH_MOUTH)].mean(0)
    else:
        eyes, mouth = points[:2].mean(0), points[3:5].mean(0) if len(points) == 5 else points[3]
    up = eyes - mouth
    return math.degrees(math.atan2(up[0], -up[1]))


def is_upright(detection: FaceDetection) -> bool:
    return abs(face_roll(detection)) <= UPRIGHT_ROLL_DEG


def _rank(detection: FaceDetection, largest: float, size: Optional[tuple[int, int]]) -> tuple[bool, float]:
    """Faces tilted no more than a head tilts first (a face-like emblem or a poster on its side is
    not the subject), then the detection score, weighed mildly by size (a background face is smaller
    and usually less sharp) and by the share of its box inside the photo (a face cut by the border
    is rarely the subject)."""
    inside = 1.0 if size is None else _share_inside(detection.box, size)
    return (abs(face_roll(detection)) <= SUBJECT_ROLL_DEG,
            detection.score * math.sqrt(detection.area / max(largest, 1.0)) * inside)


def _share_inside(box: np.ndarray, size: tuple[int, int]) -> float:
    """Share of ``box``'s area inside an image of ``size`` (width, height)."""
    x0, y0, x1, y1 = box
    inner = max(min(x1, size[0]) - max(x0, 0.0), 0.0) * max(min(y1, size[1]) - max(y0, 0.0), 0.0)
    return inner / max((x1 - x0) * (y1 - y0), 1e-9)


def select_face(detections: list[FaceDetection], index: Optional[int] = None,
                source: str = "the image", size: Optional[tuple[int, int]] = None) -> FaceDetection:
    """The most plausible face (``_rank``; ``size``: the image's (width, height)), or the ``index``-th
    of the detections (largest first)."""
    if not detections:
        raise NoFaceError(f"No face found in {source}. Use a photo with a clearly visible face, lit from the "
                          "front and at least about 64 pixels across.")
    if index is None:
        largest = max(d.area for d in detections)
        return max(detections, key=lambda d: _rank(d, largest, size))
    if not 0 <= index < len(detections):
        n = len(detections)
        raise FaceSelectionError(f"Face {index} was requested but {n} face(s) were found in {source}: "
                                 f"choose an index from 0 to {n - 1} (largest first).")
    return detections[index]


def find_upright(rgb: np.ndarray, detect: Callable[[np.ndarray], list[FaceDetection]]
                 ) -> tuple[int, list[FaceDetection]]:
    """Quarter turns ``k`` (counter-clockwise, as ``np.rot90``) that make the face of ``rgb``
    upright, and the detections in the turned image; a photo on its side or upside down (without an
    EXIF orientation saying so) would otherwise get an upright head fitted over it.

    A face on its side shows in the landmarks' roll, which gives the turn. An upside-down face does
    not: the landmark network forces an upright face onto it. Only BlazeFace's lower score gives it
    away, so the photo is turned by 180 degrees only when that finds a confident upright face that
    clearly beats the photo as given."""
    faces = detect(rgb)
    best = _upright_score(faces)
    if best >= _CONFIDENT:
        return 0, faces
    sideways = [f for f in faces if not is_upright(f)]
    from_roll = best == 0.0 and bool(sideways)  # the roll says which turn; any upright face confirms it
    if from_roll:
        candidates = (round(face_roll(max(sideways, key=lambda f: f.score)) / 90) % 4,)
    else:
        candidates = (2,) if faces else (1, 2, 3)
    for turns in candidates:
        turned = detect(np.ascontiguousarray(np.rot90(rgb, turns))) if turns else faces
        score = _upright_score(turned)
        if turns and score > best + _TURN_MARGIN and (from_roll or score >= _CONFIDENT):
            return turns, turned
    return 0, faces


def _upright_score(faces: list[FaceDetection]) -> float:
    return max((f.score for f in faces if is_upright(f)), default=0.0)


def detection_notes(turns: int, faces: list[FaceDetection], chosen: FaceDetection,
                    face_index: Optional[int]) -> list[str]:
    """What the user should know about the detection: a turned photo, other faces, a tiny face."""
    notes = []
    if turns:
        notes.append(f"the face was not upright: it was fitted on the photo turned by {90 * turns} degrees "
                     "counter-clockwise, and the result mapped back onto the photo as it is")
    if len(faces) > 1 and face_index is None:
        x0, y0, x1, y1 = (int(round(v)) for v in chosen.box)
        notes.append(f"{len(faces)} faces were found; the most plausible one (upright, confident) was used, "
                     f"at x {x0}-{x1}, y {y0}-{y1}. Choose another with --face-index (0 = largest).")
    side = min(chosen.box[2] - chosen.box[0], chosen.box[3] - chosen.box[1])
    if side < SMALL_FACE_PX:
        notes.append(f"the face is only {side:.0f} pixels across: expect a coarse shape and a blurry "
                     "texture; a closer or larger photo works better")
    return notes


def detect_face(rgb: np.ndarray, backend: str = "mediapipe", face_index: Optional[int] = None,
                detector: Optional[Detector] = None, mesh: Optional[MediaPipeMesh] = None,
                source: str = "the image", faces: Optional[list[FaceDetection]] = None) -> FaceDetection:
    """One face with dense landmarks. ``detector`` (reused, not closed) overrides ``backend``; boxes
    without dense landmarks are refined with ``mesh`` (or a temporary one). ``faces``: the
    detections of ``rgb`` when the caller has them already."""
    if faces is None:
        own = detector is None
        detector = make_detector(backend) if own else detector
        try:
            faces = detector.detect(rgb)
        finally:
            if own:
                detector.close()
    face = select_face(faces, face_index, source, (rgb.shape[1], rgb.shape[0]))
    if face.is_dense:
        return face
    if mesh is not None:
        return dense_landmarks(rgb, face, mesh)
    with MediaPipeMesh() as temporary:
        return dense_landmarks(rgb, face, temporary)
