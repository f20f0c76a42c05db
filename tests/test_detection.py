"""Face detection on real photos from ../shared/faces: MediaPipe dense mesh and InsightFace SCRFD."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FACES, SHARED, face_photo
from PIL import Image

from core.errors import AssetError, FaceSelectionError, NoFaceError
from core.fitting.detection import (
    FaceDetection,
    InsightFaceDetector,
    MediaPipeDetector,
    default_insightface_model,
    dense_landmarks,
    detect_face,
    make_detector,
    select_face,
)
from core.geometry.correspondence import load_landmark_mirror

SCRFD = SHARED / "insightface-scrfd"
SCRFD_MODELS = ["scrfd_500m_bnkps_shape320x320.onnx", "scrfd_2.5g_bnkps_shape320x320.onnx"]
DEEP3D = FACES / "deep3d" / "datasets" / "examples"
EYE_LEFT, EYE_RIGHT = 33, 263  # outer eye corners; 33 is on the image-left eye of a frontal face


def rgb_of(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def inside(points: np.ndarray, box: np.ndarray, margin: float = 0.0) -> bool:
    lo, hi = box[:2] - margin, box[2:] + margin
    return bool(np.all((points >= lo) & (points <= hi)))


def mesh_five(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from the mesh, in the order of deep3d's 5-point files."""
    lm = landmarks
    return np.array([lm[[33, 133]].mean(0), lm[[362, 263]].mean(0), lm[4], lm[61], lm[291]])


@pytest.fixture(scope="module")
def detector():
    with MediaPipeDetector() as det:
        yield det


@pytest.fixture(scope="module")
def trump_hillary() -> np.ndarray:
    return rgb_of(face_photo("trump_hillary.jpg"))


def test_frontal_photo_gives_dense_landmarks(detector):
    rgb = rgb_of(face_photo("1.jpg"))
    faces = detector.detect(rgb)
    assert len(faces) == 1
    face = faces[0]
    assert face.backend == "mediapipe" and 0.5 <= face.score <= 1.0
    assert face.landmarks.shape == (478, 2) and face.landmarks_z.shape == (478,)
    assert inside(face.landmarks, face.box)
    h, w = rgb.shape[:2]
    width = face.box[2] - face.box[0]
    assert 0.2 * w < width < w and inside(face.box.reshape(2, 2), np.array([0, 0, w, h]), margin=0.05 * w)
    lm = face.landmarks
    assert lm[EYE_LEFT, 0] < lm[EYE_RIGHT, 0]
    assert max(lm[EYE_LEFT, 1], lm[EYE_RIGHT, 1]) < lm[4, 1] < min(lm[61, 1], lm[291, 1])  # eyes, nose, mouth
    # Depth in pixels: a head is about as deep as wide, and the nose tip is nearest the camera.
    z = face.landmarks_z
    assert 0.3 * width < np.ptp(z) < 1.5 * width
    assert z[4] < z[234] and z[4] < z[454]


@pytest.mark.parametrize("name", ["000002", "000031", "015316", "vd006", "vd051", "vd102"])
def test_landmarks_match_annotated_points(detector, name):
    path = next(p for p in DEEP3D.glob(f"{name}.*") if p.suffix in (".jpg", ".png"))
    truth = np.loadtxt(DEEP3D / "detections" / f"{name}.txt")
    face = detect_face(rgb_of(path), detector=detector)
    err = np.linalg.norm(mesh_five(face.landmarks) - truth, axis=1) / np.linalg.norm(truth[0] - truth[1])
    assert err.mean() < 0.1 and err.max() < 0.2


def test_landmarks_follow_pixel_coordinates(detector):
    """Scaling or padding the photo scales or shifts the landmarks: the crop mapping is exact."""
    rgb = rgb_of(face_photo("000033.jpg"))
    base = detector.detect(rgb)[0]
    size = np.sqrt(base.area)
    big = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 2, rgb.shape[0] * 2), Image.BICUBIC))
    scaled = detector.detect(big)[0]
    assert np.median(np.linalg.norm(scaled.landmarks / 2 - base.landmarks, axis=1)) < 0.01 * size
    assert np.median(np.abs(scaled.landmarks_z / 2 - base.landmarks_z)) < 0.01 * size
    padded = np.pad(rgb, ((40, 0), (70, 0), (0, 0)), mode="edge")
    shifted = detector.detect(padded)[0]
    assert np.median(np.linalg.norm(shifted.landmarks - [70, 40] - base.landmarks, axis=1)) < 0.01 * size


@pytest.mark.parametrize("name", ["000033.jpg", "1.jpg"])
def test_mirror_photo_gives_mirror_landmarks(detector, name):
    """Both detectors average a face with its mirror image's, so a mirrored photo gives the mirror
    image of the landmarks (before: mesh up to 2.7%, SCRFD keypoints up to 1.8% of the face size off)."""
    rgb = rgb_of(face_photo(name))
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    width = rgb.shape[1]
    face, other = detector.detect(rgb)[0], detector.detect(flipped)[0]
    size = np.sqrt(face.area)
    back = other.landmarks[load_landmark_mirror()] * [-1, 1] + [width, 0]
    assert np.linalg.norm(back - face.landmarks, axis=1).max() < 0.008 * size
    with InsightFaceDetector(SCRFD / SCRFD_MODELS[1]) as scrfd:
        face, other = scrfd.detect(rgb)[0], scrfd.detect(flipped)[0]
    back = other.landmarks[[1, 0, 2, 4, 3]] * [-1, 1] + [width, 0]
    assert np.linalg.norm(back - face.landmarks, axis=1).max() < 0.002 * size


def test_two_faces_and_selection(detector, trump_hillary):
    faces = detector.detect(trump_hillary)
    assert len(faces) == 2
    assert all(f.landmarks.shape == (478, 2) for f in faces)
    assert faces[0].area >= faces[1].area
    # One face on each half of the photo, each the right way round.
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < trump_hillary.shape[1] / 2 < centres[1]
    assert all(f.landmarks[EYE_LEFT, 0] < f.landmarks[EYE_RIGHT, 0] for f in faces)
    # Two people about equally large: the automatic choice is the more confident detection, weighed
    # mildly by size (the subject may be either; the choice must follow the documented ranking).
    assert select_face(faces) is max(faces, key=lambda f: f.score * np.sqrt(f.area))
    assert select_face(faces, 1) is faces[1]
    with pytest.raises(FaceSelectionError, match="2 face"):
        select_face(faces, 2)
    with pytest.raises(FaceSelectionError):
        select_face(faces, -1)
    second = detect_face(trump_hillary, face_index=1, detector=detector)
    assert np.allclose(second.box, faces[1].box)


def test_shared_between_threads(detector, trump_hillary):
    expected = [f.box for f in detector.detect(trump_hillary)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(detector.detect, [trump_hillary] * 4))
    assert all(np.allclose([f.box for f in faces], expected) for faces in results)


def test_small_faces_in_group_photo(detector):
    """Faces of ~30 px in a 1170 px poster are too small for the whole-image pass: the tiles find them."""
    faces = detector.detect(rgb_of(face_photo("sample_1.jpg")))
    assert len(faces) >= 3
    assert all(f.landmarks.shape == (478, 2) and f.box[2] - f.box[0] < 100 for f in faces)


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_raises(detector, kind):
    rng = np.random.default_rng(0)
    rgb = (np.full((480, 640, 3), 128, np.uint8) if kind == "blank"
           else rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError, match="No face found in noise.png"):
        detect_face(rgb, detector=detector, source="noise.png")


def test_select_face_without_faces():
    with pytest.raises(NoFaceError, match="No face found in the image"):
        select_face([])


def test_detect_face_owns_its_detector():
    face = detect_face(rgb_of(face_photo("test_image1.png")))
    assert face.landmarks.shape == (478, 2) and face.backend == "mediapipe"


def test_without_iris_refinement():
    with make_detector("mediapipe", refine_landmarks=False, max_faces=1) as det:
        faces = det.detect(rgb_of(face_photo("vd034.png")))
    assert len(faces) == 1 and faces[0].landmarks.shape == (468, 2)


def test_unknown_backend():
    with pytest.raises(ValueError, match="insightface"):
        make_detector("dlib")


@pytest.mark.parametrize("model", SCRFD_MODELS)
def test_insightface_finds_both_faces(model, trump_hillary, detector):
    with InsightFaceDetector(SCRFD / model) as scrfd:
        faces = scrfd.detect(trump_hillary)
        assert len(faces) == 2 and faces[0].area >= faces[1].area
        for f in faces:
            assert f.backend == "insightface" and f.landmarks.shape == (5, 2) and f.landmarks_z is None
            assert inside(f.landmarks, f.box)
            assert f.landmarks[0, 0] < f.landmarks[1, 0]
        # Dense landmarks on an SCRFD box come from the same mesh fit as the MediaPipe backend.
        dense = dense_landmarks(trump_hillary, faces[1], detector.mesh)
        assert dense.backend == "insightface+mediapipe" and dense.landmarks.shape == (478, 2)
        mp_face = min(detector.detect(trump_hillary), key=lambda f: abs(f.box[0] - dense.box[0]))
        size = np.sqrt(dense.area)
        assert np.median(np.linalg.norm(dense.landmarks - mp_face.landmarks, axis=1)) < 0.02 * size
        via = detect_face(trump_hillary, face_index=0, detector=scrfd, mesh=detector.mesh)
        assert via.landmarks.shape == (478, 2) and inside(via.landmarks, faces[0].box, 0.1 * size)


def test_insightface_keypoints_match_annotated_points():
    with InsightFaceDetector(SCRFD / SCRFD_MODELS[0]) as scrfd:
        for name in ("000002", "vd051"):
            path = next(p for p in DEEP3D.glob(f"{name}.*") if p.suffix in (".jpg", ".png"))
            truth = np.loadtxt(DEEP3D / "detections" / f"{name}.txt")
            face = select_face(scrfd.detect(rgb_of(path)))
            err = np.linalg.norm(face.landmarks - truth, axis=1) / np.linalg.norm(truth[0] - truth[1])
            assert err.max() < 0.2


def test_insightface_model_from_environment(monkeypatch):
    monkeypatch.setenv("LIKENESS_INSIGHTFACE_MODEL", str(SCRFD / SCRFD_MODELS[0]))
    assert default_insightface_model() == SCRFD / SCRFD_MODELS[0]
    with make_detector("insightface") as det:
        assert det.path == SCRFD / SCRFD_MODELS[0]


def test_insightface_model_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("LIKENESS_INSIGHTFACE_MODEL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AssetError, match="LIKENESS_INSIGHTFACE_MODEL"):
        InsightFaceDetector()
    with pytest.raises(AssetError, match="does not exist"):
        InsightFaceDetector(tmp_path / "det_10g.onnx")
    monkeypatch.setenv("LIKENESS_INSIGHTFACE_MODEL", str(tmp_path / "nowhere.onnx"))
    with pytest.raises(AssetError, match="not a file"):
        detect_face(np.zeros((64, 64, 3), np.uint8), backend="insightface")


def test_insightface_model_in_home_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LIKENESS_INSIGHTFACE_MODEL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    pack = tmp_path / ".insightface" / "models" / "buffalo_sc"
    pack.mkdir(parents=True)
    (pack / "det_500m.onnx").write_bytes((SCRFD / SCRFD_MODELS[0]).read_bytes())
    assert default_insightface_model() == pack / "det_500m.onnx"


def test_insightface_corrupt_model(tmp_path):
    bad = tmp_path / "det_10g.onnx"
    bad.write_bytes(b"not an onnx model" * 100)
    with pytest.raises(AssetError, match="Could not load"):
        InsightFaceDetector(bad)


def test_face_detection_area():
    det = FaceDetection(np.array([10.0, 20.0, 50.0, 40.0]), 0.9, np.zeros((5, 2)), None, "insightface")
    assert det.area == 800.0 and not det.is_dense
