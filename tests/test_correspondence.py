"""The packaged MediaPipe -> ICT-FaceKit correspondence is sane, symmetric and reproducible."""

import hashlib
import importlib.util
import re
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED
from scipy.spatial import cKDTree

from core.errors import AssetError
from core.geometry.correspondence import (
    DATA_PATH,
    FACE_OVAL,
    IRIS_LEFT,
    IRIS_RIGHT,
    MP68,
    Correspondence,
    load_annotated_landmarks68,
    load_correspondence,
    load_landmark_mirror,
)
from core.geometry.face_model import FACE_POLYGONS, VERTEX_REGIONS

MP_DIR = SHARED / "mediapipe-face-geometry"
FACE_ROWS = slice(0, 468)


def _load_script():
    path = REPO / "scripts" / "build_correspondence.py"
    spec = importlib.util.spec_from_file_location("build_correspondence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def corr():
    return load_correspondence()


@pytest.fixture(scope="module")
def table():
    with np.load(DATA_PATH) as data:
        return dict(data)


@pytest.fixture(scope="module")
def canonical(script):
    return script.load_canonical(MP_DIR)


@pytest.fixture(scope="module")
def mapped(corr, face_model):
    return corr.points(face_model.neutral.astype(np.float64))


def test_table_layout(corr, table):
    assert table["tri_vertices"].dtype == np.int32 and table["bary"].dtype == np.float32
    np.testing.assert_array_equal(corr.mp_index, np.r_[np.arange(468), IRIS_RIGHT, IRIS_LEFT])
    assert corr.tri_vertices.shape == corr.bary.shape == (470, 3)
    assert (corr.bary >= -1e-6).all() and np.allclose(corr.bary.sum(1), 1, atol=1e-5)
    assert ((corr.weight > 0) & (corr.weight <= 1)).all()
    assert corr.weight[np.isin(corr.mp_index, FACE_OVAL)].max() < corr.weight[corr.rows([1, 33, 61])].min()
    np.testing.assert_array_equal(table["mp68"], MP68)


def test_metadata_matches_sources(table, face_model, script):
    assert int(table["script_version"]) == script.SCRIPT_VERSION
    for key, name in (("canonical_obj_sha256", script.OBJ), ("canonical_pbtxt_sha256", script.PBTXT)):
        assert str(table[key]) == hashlib.sha256((MP_DIR / name).read_bytes()).hexdigest()
    neutral = hashlib.sha256(face_model.neutral.astype("<f4").tobytes()).hexdigest()
    assert str(table["ict_neutral_sha256"]) == neutral


def test_rebuild_reproduces_the_committed_table(corr, table, face_model, script, mapped):
    fresh = script.build(face_model, MP_DIR)
    rebuilt = Correspondence(fresh["mp_index"], fresh["tri_vertices"], fresh["bary"], fresh["weight"])
    np.testing.assert_array_equal(rebuilt.mp_index, corr.mp_index)
    # Compare surface points, not triangle ids: a point on a shared edge may pick either triangle.
    np.testing.assert_allclose(rebuilt.points(face_model.neutral.astype(np.float64)), mapped, atol=1e-6)
    np.testing.assert_allclose(fresh["residual_m"], table["residual_m"], atol=1e-6)
    np.testing.assert_allclose(fresh["weight"], table["weight"], atol=1e-4)


def test_targets_lie_on_the_right_regions(corr, face_model):
    face_tris = {tuple(sorted(t)) for t in face_model.triangles(FACE_POLYGONS)[0].tolist()}
    assert all(tuple(sorted(t)) in face_tris for t in corr.tri_vertices[FACE_ROWS].tolist())
    assert corr.tri_vertices[FACE_ROWS].max() < VERTEX_REGIONS["face"][1]
    # Iris centres on the iris half of the eyeball of the same side (ICT "left" = subject's left).
    right, left = corr.tri_vertices[corr.rows([IRIS_RIGHT, IRIS_LEFT])]
    assert ((right >= 23791) & (right < VERTEX_REGIONS["eyeball_right"][1])).all()
    assert ((left >= 22221) & (left < VERTEX_REGIONS["eyeball_left"][1])).all()


def test_residuals_are_small(table):
    residual_mm = table["residual_m"][FACE_ROWS] * 1000
    assert np.median(residual_mm) < 2.0
    assert residual_mm.max() < 5.0


def test_mirror_symmetry(canonical, mapped):
    dist, mirror = cKDTree(canonical).query(canonical * [-1, 1, 1])
    assert dist.max() < 1e-6  # the canonical mesh is exactly symmetric
    points = mapped[FACE_ROWS]
    error_mm = 1000 * np.c_[
        np.abs(points[:, 0] + points[mirror, 0]),
        np.abs(points[:, 1:] - points[mirror, 1:]),
    ]
    assert error_mm.max() < 3.0
    iris_r, iris_l = mapped[468:]
    assert abs(iris_r[0] + iris_l[0]) < 1e-3 and np.allclose(iris_r[1:], iris_l[1:], atol=1e-3)
    assert iris_r[0] < 0  # the subject's right is -x in both MediaPipe and ICT


def test_mp68_table_agrees_with_ict_landmarks(script, canonical, corr, mapped, face_model):
    # Rigid check of the table itself: after a similarity fit, every inner pair is within 5 mm.
    inner = np.arange(17, 68)
    ict = face_model.neutral.astype(np.float64)[face_model.landmarks68]
    scale, rot, shift = script.umeyama(canonical[MP68[inner]], ict[inner])
    rigid_mm = 1000 * np.linalg.norm(scale * canonical[MP68[inner]] @ rot.T + shift - ict[inner], axis=1)
    assert np.median(rigid_mm) < 3.0 and rigid_mm.max() < 5.0
    mapped_mm = 1000 * np.linalg.norm(mapped[corr.rows(MP68)] - ict, axis=1)
    assert np.median(mapped_mm[17:]) < 1.0
    assert mapped_mm[:17].max() < 15.0  # jaw points slide along the outline


def test_face_oval_is_the_canonical_outline():
    text = (MP_DIR / "geometry_pipeline_metadata_landmarks.pbtxt").read_text()
    tris = np.array(re.findall(r"index_buffer:\s*(\d+)", text), int).reshape(-1, 3)
    edges = Counter(tuple(sorted(e)) for t in tris.tolist() for e in zip(t, t[1:] + t[:1], strict=True))
    boundary = {e for e, n in edges.items() if n == 1}
    loop = {tuple(sorted(e)) for e in zip(FACE_OVAL.tolist(), np.roll(FACE_OVAL, -1).tolist(), strict=True)}
    assert loop == boundary


def test_lips_and_lids_follow_the_right_blendshapes(corr, face_model):
    def motion_mm(name, rows):
        basis = np.linalg.norm(face_model.expression_basis[face_model.expression_names.index(name)], axis=1)
        return 1000 * (basis[corr.tri_vertices[rows]] * corr.bary[rows]).sum(1)

    upper_lip = corr.rows([80, 81, 82, 13, 312, 311, 310])
    lower_lip = corr.rows([88, 178, 87, 14, 317, 402, 318])
    assert motion_mm("jawOpen", upper_lip).max() < motion_mm("jawOpen", lower_lip).min()
    upper_lid = corr.rows([160, 159, 158])  # the subject's right eye
    lower_lid = corr.rows([144, 145, 153])
    assert motion_mm("eyeBlink_R", upper_lid).min() > motion_mm("eyeBlink_R", lower_lid).max()


def test_points_work_on_numpy_batches_and_torch(corr, face_model, mapped):
    vertices = face_model.neutral.astype(np.float64)
    batch = corr.points(np.stack([vertices, vertices + 1.0]))
    np.testing.assert_allclose(batch[0], mapped)
    np.testing.assert_allclose(batch[1], mapped + 1.0, atol=1e-9)
    torch_points = corr.to_torch(dtype=torch.float64).points(torch.from_numpy(vertices))
    np.testing.assert_allclose(torch_points.numpy(), mapped, atol=1e-9)
    sub = corr.subset(corr.rows(MP68))
    np.testing.assert_array_equal(sub.mp_index, MP68)
    with pytest.raises(ValueError):
        corr.rows([470])


def test_damaged_table_raises_asset_error(tmp_path):
    bad = tmp_path / "table.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AssetError):
        load_correspondence(bad)
    with pytest.raises(AssetError):
        load_correspondence(tmp_path / "missing.npz")


def test_annotated_landmarks_table(face_model, tmp_path):
    ids = load_annotated_landmarks68()
    assert ids.shape == (68,) and np.all((ids >= 0) & (ids < face_model.regions["face"][1]))
    # Chosen landmark by landmark, the table still mirrors itself: one convention on both sides.
    mirror = ([16 - k for k in range(17)] + [26 - k for k in range(10)] + list(range(27, 31))
              + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
              + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
    points = face_model.neutral[ids]
    assert np.linalg.norm(points - points[mirror] * [-1, 1, 1], axis=1).max() < 0.006
    own_jaw = face_model.neutral[face_model.landmarks68[:17]]
    assert np.median(own_jaw[:, 2] - points[:17, 2]) > 0.008  # metres further back (z: to the viewer)
    (tmp_path / "bad.json").write_text('{"vertex_ids": [1, 2]}')
    for path in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(AssetError):
            load_annotated_landmarks68(path)


def test_mirror_table_swaps_sides(canonical):
    mirror = load_landmark_mirror()
    assert mirror.shape == (478,) and np.array_equal(mirror[mirror], np.arange(478))
    for a, b in ((33, 263), (61, 291), (234, 454), (IRIS_RIGHT, IRIS_LEFT), (1, 1), (152, 152)):
        assert mirror[a] == b and mirror[b] == a
    np.testing.assert_allclose(canonical[mirror[:468]], canonical * [-1, 1, 1], atol=1e-6)
