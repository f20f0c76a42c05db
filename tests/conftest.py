"""Shared fixtures: real assets from ../shared (override with LIKENESS_SHARED)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIKENESS_SHARED", REPO.parent / "shared"))
ICT_ZIP = SHARED / "ict-facekit" / "ICT-FaceKit-master.zip"
FACES = SHARED / "faces"
AFLW = SHARED / "aflw2000-3d-dev"

# Tests read the shared ICT-FaceKit and face-api copies and never touch the network.
os.environ.setdefault("LIKENESS_ICT_FACEKIT", str(ICT_ZIP))
os.environ.setdefault("LIKENESS_FACE_API", str(SHARED / "face-api"))


def load_extension_package():
    """The repository (the extension folder) as package ``likeness``, loaded the way
    scripts/likeness_batch.py loads it: its subpackages import ``core`` relatively, as inside
    Blender."""
    sys.path.insert(0, str(REPO / "scripts"))
    from likeness_batch import load_extension

    return load_extension()


def face_photo(name: str) -> Path:
    """A real photo from ../shared/faces by file name."""
    hits = sorted(FACES.rglob(name))
    if not hits:
        pytest.fail(f"shared photo {name} not found under {FACES}")
    return hits[0]


@pytest.fixture(scope="session")
def face_model():
    from core.geometry.face_model import load_face_model

    return load_face_model()  # LIKENESS_ICT_FACEKIT: the shared zip, or a parsed model on a GPU machine


@pytest.fixture(scope="session")
def pipeline(face_model):
    from core.pipeline import Pipeline

    pipe = Pipeline(model=face_model)
    yield pipe
    pipe.close()


@pytest.fixture(scope="session")
def fast_reconstruction(pipeline):
    """A real reconstruction (preset "fast") of a frontal photo, shared by several test files."""
    from core.pipeline import preset_settings

    return pipeline.run(face_photo("000002.jpg"), preset_settings("fast"))
