"""core.appearance.identity: the torch port of face-api's (dlib's) face-recognition network on real photos."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from conftest import FACES

from core.appearance.identity import (
    chip_transform,
    embed,
    embed_photo,
    extract_chip,
    five_points,
    load_identity_net,
)
from core.fitting.detection import detect_face
from core.image_io import load_image

DEEPFACE = FACES / "deepface"
# Two photos each of three people of identities.csv, and one more of the first.
PHOTOS = ("img1.jpg", "img2.jpg", "img13.jpg", "img14.jpg", "img3.jpg", "img12.jpg")


@pytest.fixture(scope="module")
def net():
    return load_identity_net(download=False)


@pytest.fixture(scope="module")
def faces():
    """(rgb, 478 landmarks) of each photo in PHOTOS."""
    out = {}
    for name in PHOTOS:
        rgb = load_image(DEEPFACE / name).rgb
        out[name] = (rgb, detect_face(rgb).landmarks)
    return out


def _chip(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    image = torch.from_numpy(rgb.astype(np.float32) / 255)
    chip = extract_chip(image, chip_transform(five_points(landmarks)))
    return np.ascontiguousarray(np.clip(chip.numpy() * 255 + 0.5, 0, 255).astype(np.uint8))


def test_port_matches_dlib_on_the_same_chips(net, faces):
    dlib = pytest.importorskip("dlib")
    models = pytest.importorskip("face_recognition_models")
    reference = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    for name, (rgb, landmarks) in faces.items():
        chip = _chip(rgb, landmarks)
        want = np.array(reference.compute_face_descriptor(chip))
        with torch.no_grad():
            got = net(torch.from_numpy(chip.astype(np.float32) / 255)[None])[0].double().numpy()
        cosine_distance = 1 - got @ want / np.linalg.norm(got) / np.linalg.norm(want)
        assert cosine_distance < 1e-3, name


def test_chip_matches_dlibs_alignment(net, faces):
    """Our 5-point similarity puts the face where dlib's get_face_chip (padding 0.25) does."""
    dlib = pytest.importorskip("dlib")
    rgb, landmarks = faces["img1.jpg"]
    points = [dlib.point(*map(int, np.round(p))) for p in five_points(landmarks)]
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, rgb.shape[1], rgb.shape[0]), points)
    theirs = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
    chips = torch.from_numpy(np.stack([_chip(rgb, landmarks), theirs]).astype(np.float32) / 255)
    with torch.no_grad():
        a, b = net(chips)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.98


def test_same_person_is_nearer_than_another(net, faces):
    person = {row["file"]: row["person"] for row in csv.DictReader(open(DEEPFACE / "identities.csv"))}
    emb = {name: embed_photo(net, rgb, lms) for name, (rgb, lms) in faces.items()}
    same, other = [], []
    for a, b in itertools.combinations(PHOTOS, 2):
        (same if person[a] == person[b] else other).append(float(emb[a] @ emb[b]))
    assert min(same) > max(other)


def test_embedding_is_differentiable_in_the_image(net, faces):
    rgb, landmarks = faces["img13.jpg"]
    image = torch.from_numpy(rgb.astype(np.float32) / 255).requires_grad_(True)
    transform = chip_transform(five_points(landmarks))
    target = torch.from_numpy(embed_photo(net, *faces["img14.jpg"]))
    (1 - embed(net, image, transform) @ target).backward()
    grad = image.grad.abs().sum(-1)
    assert grad.sum() > 0
    # only the chip's footprint in the photo receives gradient
    x, y = landmarks[2].astype(int)
    assert grad[0, 0] == 0 and grad[y - 10:y + 10, x - 10:x + 10].sum() > 0
