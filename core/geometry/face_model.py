"""The ICT-FaceKit morphable head model as numpy arrays.

Reads the official layout (GitHub's master.zip or an extracted folder), keeps what the pipeline
needs and caches it as an uncompressed ``.npz`` next to the archive's cache entry, so that later
loads take well under a second instead of parsing 155 OBJ files. ICT ships centimetres; we store
metres so that everything downstream (Blender, glTF) is SI.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AssetError

MODEL_DIR = "FaceXModel"
NUM_IDENTITY = 100
CM_TO_M = 0.01
CACHE_VERSION = 1

# Vertex ranges (start, stop) of the README's topology table; polygons follow the same order.
VERTEX_REGIONS: dict[str, tuple[int, int]] = {
    "face": (0, 9409),
    "narrow_face": (0, 6706),
    "head_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678),
    "eye_socket_right": (13678, 14062),
    "gums_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
    "lacrimal_left": (24591, 24795),
    "lacrimal_right": (24795, 24999),
    "eye_blend_left": (24999, 25023),
    "eye_blend_right": (25023, 25047),
    "eye_occlusion_left": (25047, 25199),
    "eye_occlusion_right": (25199, 25351),
    "eyelashes_left": (25351, 26035),
    "eyelashes_right": (26035, 26719),
}
NUM_VERTICES = 26719
NUM_POLYGONS = 26384
# The skin surface: face + head/neck polygons ([0:11143] in the README). Rendering and
# texturing use these; sockets, eyes and teeth are carried along for export.
SKIN_POLYGONS = 11144
FACE_POLYGONS = 9230


@dataclass(frozen=True)
class FaceModel:
    """ICT-FaceKit arrays. Shapes: V vertices, P polygons (quads or triangles), T uv coordinates."""

    neutral: np.ndarray  # (V, 3) float32, metres, y up, z towards the viewer
    identity_basis: np.ndarray  # (100, V, 3) float32 offsets for coefficient 1.0 (one std. dev.)
    expression_basis: np.ndarray  # (53, V, 3) float32 offsets for ARKit weight 1.0
    expression_names: tuple[str, ...]  # ARKit names with _L / _R sides
    polygons: np.ndarray  # (P, 4) int32 vertex ids, -1 pads triangles
    polygon_uvs: np.ndarray  # (P, 4) int32 uv ids, -1 pads triangles
    uvs: np.ndarray  # (T, 2) float32, OBJ convention (v = 0 at the bottom)
    polygon_materials: np.ndarray  # (P,) int16 index into material_names
    material_names: tuple[str, ...]
    landmarks68: np.ndarray  # (68,) int32 iBUG/Multi-PIE 68 landmark vertex ids
    regions: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(VERTEX_REGIONS))

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def vertices(self, identity: np.ndarray | None = None,
                 expression: np.ndarray | None = None) -> np.ndarray:
        """Model-space vertices (V, 3) for identity coefficients and expression weights."""
        v = self.neutral.astype(np.float32, copy=True)
        if identity is not None:
            v += np.tensordot(np.asarray(identity, np.float32), self.identity_basis[: len(identity)], 1)
        if expression is not None:
            v += np.tensordot(np.asarray(expression, np.float32), self.expression_basis, 1)
        return v

    def triangles(self, num_polygons: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Triangulated (vertex ids, uv ids), each (F, 3), of the first ``num_polygons`` polygons."""
        return triangulate(self.polygons[:num_polygons]), triangulate(self.polygon_uvs[:num_polygons])

    @property
    def atlas_uvs(self) -> np.ndarray:
        """UVs for Likeness's textures. ICT lays parts out as UDIM tiles (face u in [0, 1], back of
        the head [1, 2], gums, teeth, ... further right). The skin (tiles 0 and 1) shares one
        (S, 2S) "skin atlas" texture, so its u is halved; every other part maps into its own [0, 1]."""
        u, v = self.uvs[:, 0], self.uvs[:, 1]
        tile = np.floor(u)
        atlas_u = np.where(tile <= 1, u / 2, u - tile)
        return np.stack([atlas_u, v], 1).astype(np.float32)

    def region_mask(self, *names: str) -> np.ndarray:
        mask = np.zeros(self.num_vertices, bool)
        for name in names:
            start, stop = self.regions[name]
            mask[start:stop] = True
        return mask


def triangulate(polygons: np.ndarray) -> np.ndarray:
    """Fan-split (P, 4) padded polygons into (F, 3) triangles, quads first-to-last in order."""
    tri_a = polygons[:, [0, 1, 2]]
    quads = polygons[:, 3] >= 0
    tri_b = polygons[quads][:, [0, 2, 3]]
    # Interleave so that triangle order follows polygon order (stable face ids per polygon).
    out = np.empty((len(polygons) + quads.sum(), 3), polygons.dtype)
    first = np.arange(len(polygons)) + np.concatenate([[0], np.cumsum(quads)[:-1]])
    out[first] = tri_a
    out[first[quads] + 1] = tri_b
    return out


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """(K, 2) vertex pairs of the edges used by exactly one triangle of (F, 3) ``faces``."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts == 1]


# --------------------------------------------------------------------------------------------
# Reading the official layout


class _Source:
    """Files of the FaceXModel folder, from a zip archive or an extracted folder."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():
            try:
                self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise AssetError(f"{path} is not a valid ICT-FaceKit zip archive ({exc}).") from exc
            names = [n for n in self._zip.namelist() if f"/{MODEL_DIR}/" in f"/{n}"]
            if not names:
                raise AssetError(f"{path} has no {MODEL_DIR}/ folder: not an ICT-FaceKit archive.")
            self._prefix = names[0][: names[0].index(MODEL_DIR)] + MODEL_DIR + "/"
        else:
            self._zip = None
            candidates = [path / MODEL_DIR, path / "ICT-FaceKit-master" / MODEL_DIR, path]
            folder = next((c for c in candidates if (c / "generic_neutral_mesh.obj").is_file()), None)
            if folder is None:
                raise AssetError(f"{path} holds no ICT-FaceKit {MODEL_DIR}/generic_neutral_mesh.obj.")
            self._folder = folder

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._prefix + name)
            return (self._folder / name).read_bytes()
        except (KeyError, FileNotFoundError) as exc:
            raise AssetError(f"ICT-FaceKit file {MODEL_DIR}/{name} is missing in {self.path}.") from exc
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # zlib: damaged compressed data
            raise AssetError(f"Could not read {MODEL_DIR}/{name} from {self.path} ({exc}): the archive is "
                             "damaged; delete it so that it is downloaded again, or point "
                             "LIKENESS_ICT_FACEKIT at a good copy.") from exc


def _obj_lines(data: bytes, tag: bytes) -> Iterator[bytes]:
    prefix = tag + b" "
    return (line for line in data.splitlines() if line.startswith(prefix))


def _read_positions(data: bytes, name: str) -> np.ndarray:
    text = b" ".join(line[2:] for line in _obj_lines(data, b"v"))
    values = np.array(text.split(), dtype=np.float64)
    if values.size != NUM_VERTICES * 3:
        raise AssetError(f"ICT-FaceKit {name} has {values.size // 3} vertices, expected {NUM_VERTICES}.")
    return values.reshape(-1, 3)


def _read_topology(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    uvs = np.array(b" ".join(line[3:] for line in _obj_lines(data, b"vt")).split(), dtype=np.float32)
    polygons, polygon_uvs, materials, names = [], [], [], []
    current = -1
    for line in data.splitlines():
        if line.startswith(b"usemtl "):
            names.append(line.split()[1].decode())
            current = len(names) - 1
        elif line.startswith(b"f "):
            corners = [c.split(b"/") for c in line.split()[1:]]
            if len(corners) not in (3, 4):
                raise AssetError(f"ICT-FaceKit mesh has a {len(corners)}-sided polygon.")
            pad = [0] * (4 - len(corners))  # 0 becomes -1 after the 1-based shift below
            polygons.append([int(c[0]) for c in corners] + pad)
            polygon_uvs.append([int(c[1]) for c in corners] + pad)
            materials.append(current)
    return (
        np.array(polygons, np.int32) - 1,
        np.array(polygon_uvs, np.int32) - 1,
        uvs.reshape(-1, 2),
        np.array(materials, np.int16),
        tuple(names),
    )


def parse_face_model(path: Path) -> FaceModel:
    """Parse the official ICT-FaceKit layout at ``path`` (zip archive or folder). Slow (~15 s)."""
    source = _Source(Path(path))
    meta = json.loads(source.read("vertex_indices.json"))
    neutral = _read_positions(source.read("generic_neutral_mesh.obj"), "generic_neutral_mesh.obj")
    polygons, polygon_uvs, uvs, materials, material_names = _read_topology(
        source.read("generic_neutral_mesh.obj")
    )
    if len(polygons) != NUM_POLYGONS:
        raise AssetError(f"ICT-FaceKit mesh has {len(polygons)} polygons, expected {NUM_POLYGONS}.")

    def offsets(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), NUM_VERTICES, 3), np.float32)
        for i, name in enumerate(names):
            out[i] = (_read_positions(source.read(f"{name}.obj"), f"{name}.obj") - neutral) * CM_TO_M
        return out

    expression_names = tuple(meta["expressions"])
    landmarks = np.array(meta["idx_to_landmark_verts"], np.int32)
    if landmarks.shape != (68,) or len(expression_names) != 53:
        raise AssetError("ICT-FaceKit vertex_indices.json does not list 68 landmarks and 53 expressions.")
    return FaceModel(
        neutral=(neutral * CM_TO_M).astype(np.float32),
        identity_basis=offsets([f"identity{i:03d}" for i in range(NUM_IDENTITY)]),
        expression_basis=offsets(list(expression_names)),
        expression_names=expression_names,
        polygons=polygons,
        polygon_uvs=polygon_uvs,
        uvs=uvs,
        polygon_materials=materials,
        material_names=material_names,
        landmarks68=landmarks,
    )


# --------------------------------------------------------------------------------------------
# Binary cache

_ARRAYS = ("neutral", "identity_basis", "expression_basis", "polygons", "polygon_uvs", "uvs",
           "polygon_materials", "landmarks68")


def save_cache(model: FaceModel, path: Path) -> None:
    from ..output.export import atomic_path

    arrays = {name: getattr(model, name) for name in _ARRAYS}
    arrays["expression_names"] = np.array(model.expression_names)
    arrays["material_names"] = np.array(model.material_names)
    arrays["version"] = np.array(CACHE_VERSION)
    buffer = io.BytesIO()  # zipped in memory (~50 MB): a full disk then fails one plain write
    np.savez(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_cache(path: Path) -> FaceModel | None:
    """The cached model, or None when the cache is missing, stale or damaged (then re-parse)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION:
                return None
            arrays = {name: data[name] for name in _ARRAYS}
            names = tuple(str(s) for s in data["expression_names"])
            materials = tuple(str(s) for s in data["material_names"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if arrays["neutral"].shape != (NUM_VERTICES, 3):
        return None
    return FaceModel(expression_names=names, material_names=materials, **arrays)


def load_face_model(source: str | Path | None = None, cache_dir: str | Path | None = None) -> FaceModel:
    """The ICT-FaceKit model: from ``source`` (zip, folder or parsed ``.npz``) if given, else located
    or downloaded by ``core.assets``; parsed once and then served from the ``.npz`` cache."""
    from .. import assets

    source = Path(source) if source is not None else assets.ict_facekit_path(cache_dir=cache_dir)
    if source.suffix == ".npz":  # an already parsed model, e.g. another machine's cache file
        model = load_cache(source)
        if model is None:
            raise AssetError(f"{source} is not a parsed ICT-FaceKit model of this Likeness version; "
                             "point to the ICT-FaceKit zip or folder instead.")
        return model
    cache = assets.model_cache_path(source, cache_dir=cache_dir)
    model = load_cache(cache)
    if model is None:
        model = parse_face_model(source)
        try:
            save_cache(model, cache)
        except OSError as exc:  # only costs speed, but every run: say so
            warnings.warn(f"The parsed face model cannot be cached in {cache.parent} "
                          f"({exc.strerror or exc}), so every run parses it again (~15 s). Set "
                          f"{assets.ENV_CACHE} to a writable folder.", CacheWarning, stacklevel=2)
    return model


class CacheWarning(UserWarning):
    """A cache that cannot be written: everything works, only slower."""

