"""File writers (PNG, EXR, OBJ/MTL, GLB, JSON) and the preview image. Every write is atomic.

Single files go through ``atomic_path``: the writer fills a temporary file next to the target
and it is renamed into place only when complete. ``save_reconstruction`` writes a whole result
into a sibling staging folder and then swaps it with the result folder, so a failure leaves the
previous result as it was (docs/GUARANTEES.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DependencyError, LikenessError, OutputError
from ..geometry.face_model import FaceModel, triangulate
from ..geometry.params import Camera, FaceParams
from ..geometry.parts import (
    EYE_REGIONS,
    PLAIN_COLOURS,
    eye_textures,
    eyeball_vertex_colours,
    linear_to_srgb8,
    part_polygons,
    polygon_kinds,
    shown_polygons,
    tile_uvs,
)
from ..progress import Progress
from ..reconstruction import PhotoFit, Reconstruction
from .gltf import head_glb

FORMATS = ("obj", "glb")
# 16-bit displacement PNG: value = DISPLACEMENT_MID_LEVEL + mm / DISPLACEMENT_UNIT_MM.
DISPLACEMENT_MID_LEVEL = 32768
DISPLACEMENT_UNIT_MM = 0.001
PREVIEW_SIZE = 512
PREVIEW_GREY = (220, 215, 210)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a not-yet-existing temporary path in ``path``'s folder with the same suffix (so that
    writers that pick the format by suffix work); on success it replaces ``path``, on an
    exception it is removed. The file is created by the writer, so it gets normal permissions."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, data: dict) -> None:
    """JSON with one line per dictionary entry and lists kept on one line (readable, compact)."""
    write_bytes(path, (_dumps(_jsonable(data)) + "\n").encode())


def write_png(path: str | Path, image: np.ndarray) -> None:
    """PNG from uint8 (H, W), (H, W, 3), (H, W, 4) or uint16 (H, W) (written as 16-bit grey)."""
    image = np.ascontiguousarray(image)
    ok_uint8 = image.dtype == np.uint8 and (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (3, 4))
    if not ok_uint8 and not (image.dtype == np.uint16 and image.ndim == 2):
        raise ValueError(f"write_png: unsupported image {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_exr(path: str | Path, array: np.ndarray) -> None:
    """Float32 OpenEXR (ZIP compressed): (H, W) as channel 'Y', (H, W, 3) as R, G, B."""
    try:
        import OpenEXR
    except ImportError as exc:
        raise DependencyError("Writing EXR files needs the OpenEXR package: pip install OpenEXR") from exc
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 2:
        channels = {"Y": array}
    elif array.ndim == 3 and array.shape[2] == 3:
        channels = {"RGB": array}
    else:
        raise ValueError(f"write_exr: expected (H, W) or (H, W, 3), got {array.shape}")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp, OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp))


def write_obj(
    path: str | Path,
    vertices: np.ndarray,
    polygons: np.ndarray,
    uvs: np.ndarray,
    polygon_uvs: np.ndarray,
    mtl_name: str,
    material: str | Sequence[str],
    normals: np.ndarray | None = None,
) -> None:
    """Wavefront OBJ: ``v``, ``vt`` (OBJ convention, v = 0 at the bottom), optional ``vn``, and
    faces ``f v/vt[/vn]`` (1-based) from (P, 4) polygons padded with -1 for triangles, using
    ``material`` (one name, or one per polygon) from the library ``mtl_name``."""
    per_polygon = [material] * len(polygons) if isinstance(material, str) else list(material)
    lines = [f"mtllib {mtl_name}", f"o {Path(path).stem}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, float).tolist()]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in np.asarray(uvs, float).tolist()]
    if normals is not None:
        lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in np.asarray(normals, float).tolist()]
    lines.append("s 1")
    current = None
    for poly, puv, name in zip(np.asarray(polygons).tolist(), np.asarray(polygon_uvs).tolist(), per_polygon,
                               strict=True):
        if name != current:
            lines.append(f"usemtl {name}")
            current = name
        count = 4 if poly[3] >= 0 else 3
        if normals is None:
            corners = (f"{poly[k] + 1}/{puv[k] + 1}" for k in range(count))
        else:
            corners = (f"{poly[k] + 1}/{puv[k] + 1}/{poly[k] + 1}" for k in range(count))
        lines.append("f " + " ".join(corners))
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_mtl(path: str | Path, materials: dict[str, dict[str, str]]) -> None:
    """Material library: per material name its statements besides the defaults, e.g.
    ``{"map_Kd": "albedo.png", "map_Bump": "normal.png"}`` (``map_Bump``: a tangent-space normal
    map, as Blender's importer reads it; ``disp``: a 16-bit mid-level PNG) or ``{"Kd": "1 0 0"}``."""
    defaults = {"Ka": "0 0 0", "Kd": "1 1 1", "Ks": "0.05 0.05 0.05", "Ns": "20", "illum": "2"}
    lines = []
    for name, statements in materials.items():
        merged = {**defaults, **statements}
        lines += [f"newmtl {name}", *(f"{key} {value}" for key, value in merged.items()), ""]
    write_bytes(path, "\n".join(lines).encode())


def obj_materials(rec: Reconstruction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's polygons without the helper shells (see ``core.geometry.parts``), their OBJ material
    names (``likeness_skin``, ``likeness_eye_L`` ...) and the uv table: the skin's atlas UVs, every
    other part's UVs in its own tile."""
    shown = shown_polygons(rec.model)
    kinds = polygon_kinds(rec.model)
    sides = np.full(len(kinds), "", dtype=object)
    for side, region in EYE_REGIONS.items():
        sides[part_polygons(rec.model, (region,)) & (kinds == "eye")] = f"_{side}"
    names = np.array([f"likeness_{kind}{side}" for kind, side in zip(kinds, sides, strict=True)])
    uvs = tile_uvs(rec.model)
    skin_uvs = np.unique(rec.polygon_uvs[kinds == "skin"])
    skin_uvs = skin_uvs[skin_uvs >= 0]
    uvs[skin_uvs] = rec.uvs[skin_uvs]
    return shown, names[shown], uvs


def _mtl_entries(files: dict[str, str]) -> dict[str, dict[str, str]]:
    skin = {"map_Kd": files["albedo"]}
    if "normal_map" in files:
        skin.update(map_Bump=files["normal_map"], disp=files["displacement_png"])
    entries = {"likeness_skin": skin}
    for side in EYE_REGIONS:
        entries[f"likeness_eye_{side}"] = {"map_Kd": files[f"eye_{side}"], "Ns": "200"}
    for kind, (colour, _) in PLAIN_COLOURS.items():
        srgb = linear_to_srgb8(colour) / 255.0  # MTL colours are display colours
        entries[f"likeness_{kind}"] = {"Kd": " ".join(f"{c:.4f}" for c in srgb)}
    return entries


# --------------------------------------------------------------------------------------------
# A whole reconstruction

# Sibling entries of a result folder ``<name>``: ``.<name>.<id>.staging`` (the new result being
# written), ``.<name>.<id>.old`` (the previous result during the swap) and ``.<name>.lock``.
_STAGING, _OLD, _LOCK = ".staging", ".old", ".lock"
RUN_LOCK = ".likeness-run.lock"  # inside an output folder while a CLI / batch run writes into it
ExtraWriter = Callable[[Path], dict[str, str]]


def save_reconstruction(
    rec: Reconstruction,
    out_dir: str | Path,
    formats: str | tuple[str, ...] = FORMATS,
    extra: ExtraWriter | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write one result as the folder ``out_dir`` and return the paths written.

    Always: ``<name>_albedo.png``, ``<name>_preview.png`` and ``<name>_params.json``; ``"obj"``:
    ``<name>.obj`` + ``<name>.mtl``; ``"glb"``: ``<name>.glb``. With ``rec.detail``:
    ``<name>_displacement.exr`` (float32 millimetres, outwards along the vertex normals),
    ``<name>_displacement.png`` (16-bit; value 32768 is 0 mm and one unit is 0.001 mm, so the
    range is -32.768 mm to +32.767 mm) and ``<name>_normal.png`` (tangent space). Geometry is
    the whole head in model space, metres. ``extra(folder)`` may add files of its own (the batch
    script's .blend) and returns them as {key: file name} for the params JSON.

    The folder is replaced as a whole (docs/GUARANTEES.md): the result is written into a sibling
    staging folder, which then takes the place of ``out_dir``. On any failure ``out_dir`` stays as
    it was; files of an earlier result never mix with the new ones. An existing ``out_dir`` must be
    empty or an earlier Likeness result, and a second writer of the same folder is refused. A
    cancel through ``progress`` before the swap also leaves ``out_dir`` as it was.
    """
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown export format(s) {sorted(unknown)}: choose from {FORMATS}.")
    progress = progress or Progress()
    progress.stage("save")
    out_dir = Path(out_dir).absolute()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputError(f"{out_dir} is a file: the result needs a folder of that name. Choose another "
                              "output folder.")
        with exclusive_lock(out_dir.parent / f".{out_dir.name}{_LOCK}", f"the result folder {out_dir}"):
            _check_replaceable(out_dir)
            remove_stale(out_dir.parent, out_dir.name)
            staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}{_STAGING}"
            staging.mkdir()
            try:
                names = _write_all(rec, staging, formats, extra)
                progress.check()  # the last moment to cancel: the swap below is the commit
                _swap_in(staging, out_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise _write_error(out_dir, exc) from exc
    return [out_dir / name for name in names]


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Make ``staging`` the folder ``out_dir``: the old one is moved aside first and only deleted
    once the new one is in place (and moved back if that fails)."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}{_OLD}"
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # what cannot go now goes on the next save


def remove_stale(parent: Path, name: str | None = None) -> None:
    """Delete the staging and set-aside folders in ``parent`` (of result ``name``, whose lock the
    caller holds, or of any result no running writer owns): what a killed process left behind."""
    for stale in sorted(parent.glob(".*")):
        if not stale.name.endswith((_STAGING, _OLD)) or not stale.is_dir():
            continue
        owner = stale.name[1:].rsplit(".", 2)[0]
        if name is not None:
            if owner == name:
                shutil.rmtree(stale, ignore_errors=True)
            continue
        try:
            with exclusive_lock(parent / f".{owner}{_LOCK}", owner):
                shutil.rmtree(stale, ignore_errors=True)
        except OutputError:
            pass  # another process is writing that result right now


def _check_replaceable(out_dir: Path) -> None:
    """Only an empty folder or an earlier result (every entry named after it) may be replaced."""
    if not out_dir.is_dir():
        return
    entries = [p.name for p in out_dir.iterdir()]
    if not entries:
        return
    owners = [p.name[: -len("_params.json")] for p in out_dir.glob("*_params.json")]
    if any(all(e.startswith((owner, f".{owner}")) for e in entries) for owner in owners):
        return
    raise OutputError(
        f"{out_dir} already holds files that are not a Likeness result (e.g. {sorted(entries)[0]!r}). "
        "Likeness replaces a result folder as a whole: choose a new or empty folder."
    )


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock file at ``path`` (released when the process ends, however it ends);
    raise OutputError at once when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(f"Another Likeness process (pid {holder}) is writing {what} right now. Wait "
                              "for it to finish or choose another output folder.")
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # not a lock file its previous owner has just deleted
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _write_error(out_dir: Path, exc: OSError) -> LikenessError:
    return OutputError(
        f"Could not write the result to {out_dir} ({exc}). Choose a folder you can write to "
        "and check that the disk has free space."
    )


def _write_all(rec: Reconstruction, folder: Path, formats: tuple[str, ...],
               extra: ExtraWriter | None) -> list[str]:
    """Write every file of ``rec`` (and ``extra``'s) into ``folder``; return their names."""
    name = rec.name
    files = {
        "albedo": f"{name}_albedo.png", "preview": f"{name}_preview.png", "params": f"{name}_params.json"
    }
    write_png(folder / files["albedo"], rec.albedo)
    if rec.detail is not None:
        files.update(
            displacement_exr=f"{name}_displacement.exr",
            displacement_png=f"{name}_displacement.png",
            normal_map=f"{name}_normal.png",
        )
        write_exr(folder / files["displacement_exr"], rec.detail.displacement_mm)
        write_png(folder / files["displacement_png"], displacement_to_uint16(rec.detail.displacement_mm))
        write_png(folder / files["normal_map"], rec.detail.normal_map)
    eyes = eye_textures(rec)
    if "obj" in formats:
        files.update(obj=f"{name}.obj", mtl=f"{name}.mtl")
        for side, image in eyes.items():
            files[f"eye_{side}"] = f"{name}_eye_{side}.png"
            write_png(folder / files[f"eye_{side}"], image)
        write_mtl(folder / files["mtl"], _mtl_entries(files))
        shown, materials, uvs = obj_materials(rec)
        write_obj(folder / files["obj"], rec.vertices, rec.polygons[shown], uvs, rec.polygon_uvs[shown],
                  files["mtl"], materials)
        detail = rec.detail
        if detail is not None and detail.detail_vertices is not None:
            # The densified, displaced face as its own mesh (per-vertex UVs in the skin atlas).
            files["detail_obj"] = f"{name}_detail.obj"
            padded = np.pad(detail.detail_faces, ((0, 0), (0, 1)), constant_values=-1)
            write_obj(folder / files["detail_obj"], detail.detail_vertices, padded, detail.detail_uvs, padded,
                      files["mtl"], "likeness_skin")
    if "glb" in formats:
        files["glb"] = f"{name}.glb"
        write_bytes(folder / files["glb"], head_glb(rec, eyes))
    write_png(folder / files["preview"], preview_image(rec))
    if extra is not None:
        files.update(extra(folder))
    write_json(folder / files["params"], reconstruction_summary(rec, files))
    return list(files.values())


def displacement_to_uint16(displacement_mm: np.ndarray) -> np.ndarray:
    """Millimetres -> 16-bit mid-level encoding (see ``save_reconstruction``), clipped to range."""
    values = np.rint(DISPLACEMENT_MID_LEVEL + np.asarray(displacement_mm, np.float64) / DISPLACEMENT_UNIT_MM)
    return np.clip(values, 0, 65535).astype(np.uint16)


def reconstruction_summary(rec: Reconstruction, files: dict[str, str]) -> dict:
    """The ``_params.json`` content: fitted parameters, diagnostics and how to read the files."""
    yaw, pitch, roll = rec.params.euler_degrees()
    summary = {
        "format_version": 1,
        "name": rec.name,
        "source": rec.source,
        "image_size": [int(rec.image.shape[1]), int(rec.image.shape[0])],
        "units": "metres; model space: y up, z towards the viewer (ICT-FaceKit, glTF)",
        "files": files,
        "params": _params_dict(rec.params, rec.model),
        "coarse_params": _params_dict(rec.coarse_params, rec.model),
        "euler_degrees": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "face_box": rec.face_box,
        "landmarks68_2d": rec.landmarks68_2d,
        "iris_colour_linear_rgb": list(rec.iris_colour),
        "timings": rec.timings,
        "metrics": rec.metrics,
        "warnings": rec.warnings,
    }
    if len(rec.photos) > 1 or rec.dropped:
        summary["photos"] = [_photo_dict(photo, rec.model) for photo in rec.photos]
        summary["dropped"] = [{"source": d.source, "reason": d.reason} for d in rec.dropped]
    if rec.detail is not None:
        summary["detail"] = {"guidance": rec.detail.guidance, "clip_weights": rec.detail.clip_weights}
        summary["displacement"] = {
            "direction": "along the vertex normals, outwards positive; UV row 0 is v = 1",
            "exr_unit": "mm",
            "png_mid_level": DISPLACEMENT_MID_LEVEL,
            "png_unit_mm": DISPLACEMENT_UNIT_MM,
            "png_range_mm": [-DISPLACEMENT_MID_LEVEL * DISPLACEMENT_UNIT_MM,
                             (65535 - DISPLACEMENT_MID_LEVEL) * DISPLACEMENT_UNIT_MM],
        }
    return summary


def _photo_dict(photo: PhotoFit, model: FaceModel) -> dict:
    """One photo of a several-photo result: its own pose, expression, camera, light and fit."""
    yaw, pitch, roll = photo.params.euler_degrees()
    return {
        "source": photo.source,
        "image_size": [int(photo.image.shape[1]), int(photo.image.shape[0])],
        "params": _params_dict(photo.params, model),
        "euler_degrees": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "face_box": photo.face_box,
        "landmarks68_2d": photo.landmarks68_2d,
        "timings": photo.timings,
        "metrics": photo.metrics,
    }


def _params_dict(params: FaceParams, model: FaceModel) -> dict:
    camera = params.camera
    return {
        "identity": params.identity,
        "expression": dict(zip(model.expression_names, map(float, params.expression), strict=True)),
        "rotation_axis_angle": params.rotation,
        "rotation_matrix": params.rotation_matrix(),  # model space -> OpenCV camera axes
        "translation": params.translation,
        "camera": {"focal": camera.focal, "cx": camera.cx, "cy": camera.cy,
                   "width": camera.width, "height": camera.height},
        "sh": params.sh,
    }


def _dumps(value, depth: int = 0) -> str:
    if isinstance(value, dict) and value:
        pad = " " * (depth + 1)
        items = (f"{pad}{json.dumps(key)}: {_dumps(item, depth + 1)}" for key, item in value.items())
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    return json.dumps(value, allow_nan=False)


def _jsonable(value):
    """numpy arrays and scalars to lists and floats; NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------------------------
# Preview


def preview_image(rec: Reconstruction, size: int = PREVIEW_SIZE) -> np.ndarray:
    """(n * size, 4 * size, 3) uint8, one row per photo used, side by side around the face: the
    photo | the photo with the fitted mesh overlaid and the fitted model's 68 landmarks as dots |
    the mesh shaded alone | the photo with the pixels not trusted as skin (which never colour the
    albedo) dimmed purple."""
    views = rec.photos or [rec]
    return np.concatenate([_preview_row(rec.model, view, size, rec.iris_colour) for view in views])


def _preview_row(model: FaceModel, rec: Reconstruction | PhotoFit, size: int,
                 iris: tuple[float, float, float]) -> np.ndarray:
    x0, y0, side = _preview_crop(rec)
    scale = size / side
    crop = Image.fromarray(rec.image).crop((x0, y0, x0 + side, y0 + side))  # zero-padded outside
    photo = np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))
    cam = rec.params.camera
    camera = Camera(cam.focal * scale, (cam.cx - x0) * scale, (cam.cy - y0) * scale, size, size)
    params = rec.params.copy()
    params.camera = camera
    shade, mask, colour = _shaded_mesh(model, rec.vertices, params, _preview_colours(model, iris))

    grey = colour * (0.25 + 0.75 * shade[..., None])
    overlay = np.where(mask[..., None], 0.5 * photo + 0.5 * grey, photo)
    alone = np.where(mask[..., None], grey, 40.0)
    overlay_img = Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(overlay_img)
    radius = max(1.5, size / 256)
    # PIL puts pixel centres at integers, our convention at half-integers
    for x, y in (np.asarray(rec.landmarks68_2d, float) - [x0, y0]) * scale - 0.5:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 230, 90))
    panels = [photo, np.asarray(overlay_img), np.clip(alone, 0, 255).astype(np.uint8)]
    return np.concatenate(panels + [_trust_panel(rec, (x0, y0, side), photo)], axis=1)


def _trust_panel(rec: Reconstruction | PhotoFit, crop: tuple[int, int, int], photo: np.ndarray) -> np.ndarray:
    """The cropped ``photo`` with untrusted pixels (``rec.skin_trust`` low) dimmed and tinted."""
    x0, y0, side = crop
    trust = rec.skin_trust if rec.skin_trust is not None else np.ones(rec.image.shape[:2], np.float32)
    mask = Image.fromarray(np.clip(trust * 255, 0, 255).astype(np.uint8))
    mask = mask.crop((x0, y0, x0 + side, y0 + side))
    t = np.asarray(mask.resize(photo.shape[1::-1], Image.Resampling.BILINEAR), np.float32)[..., None] / 255
    shown = photo * (0.25 + 0.75 * t) + (1 - t) * np.array([70.0, 0.0, 70.0])
    return np.clip(shown, 0, 255).astype(np.uint8)


def _preview_crop(rec: Reconstruction | PhotoFit) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the face box, twice its size; the whole photo without one."""
    height, width = rec.image.shape[:2]
    bx0, by0, bx1, by1 = np.asarray(rec.face_box, float)
    if not (bx1 > bx0 and by1 > by0):
        side = max(width, height)
        return (width - side) // 2, (height - side) // 2, side
    side = max(2, int(round(2 * max(bx1 - bx0, by1 - by0))))
    return int(round((bx0 + bx1 - side) / 2)), int(round((by0 + by1 - side) / 2)), side


def _preview_colours(model: FaceModel, iris: tuple[float, float, float]) -> np.ndarray:
    """(V, 3) vertex colours 0..255 of the preview's mesh: light grey, the eyeballs' outer shells
    with sclera, iris and pupil (by each vertex's angle from its eye's axis in the neutral model)."""
    colours = np.tile(np.array(PREVIEW_GREY, np.float32), (model.num_vertices, 1))
    for region, linear in eyeball_vertex_colours(model, iris).items():
        start, stop = model.regions[region]
        colours[start:stop] = linear_to_srgb8(linear)
    return colours


def _shaded_mesh(model: FaceModel, vertices: np.ndarray, params: FaceParams,
                 colours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Headlight Lambert shading (H, W) in [0, 1], coverage mask and the interpolated vertex
    ``colours`` (H, W, 3) of the head's parts (``core.geometry.parts``: no helper shells)
    seen by ``params``."""
    import torch

    from ..geometry.rendering import interpolate, render

    faces = torch.from_numpy(triangulate(model.polygons[shown_polygons(model)]).astype(np.int64))
    verts_cam = torch.from_numpy(params.to_camera(vertices).astype(np.float32))
    with torch.no_grad():
        out = render(verts_cam, faces, params.camera, cull_backfaces=True)
        colour = interpolate(out.fragments, torch.from_numpy(colours), faces)
    shade = (-out.normals[..., 2]).clamp(0, 1)  # normals facing the camera have z < 0
    return shade.numpy(), out.mask.numpy(), colour.numpy()
