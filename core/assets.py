"""The ICT-FaceKit archive: where it is, how to fetch it, where parsed copies are cached.

Lookup order: the ``LIKENESS_ICT_FACEKIT`` environment variable (a zip or an extracted folder),
then ``<cache>/ICT-FaceKit-master.zip``, then a download from GitHub. Downloads stream into a
``.part`` file that later attempts resume with an HTTP Range request, and only a verified archive
is renamed into place, so an interrupted run never leaves a broken archive behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import Self

from .errors import AssetError
from .progress import Progress

ICT_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
# sha256 of the master archive the project was built against (commit da5f95a6).
ICT_SHA256 = "b36604a0b36231a4537b7a86d7f409e00febf3d46fa617dc1e8e130a89541108"
ICT_ARCHIVE_NAME = "ICT-FaceKit-master.zip"
ENV_ICT = "LIKENESS_ICT_FACEKIT"
ENV_CACHE = "LIKENESS_CACHE_DIR"
# face-api's face-recognition network (vladmandic/face-api 1.7.15 model/): manifest and weights.
FACE_API_URL = "https://raw.githubusercontent.com/vladmandic/face-api/master/model/"
FACE_API_MANIFEST = "face_recognition_model-weights_manifest.json"
FACE_API_FILES = {
    FACE_API_MANIFEST: "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
    "face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
}
ENV_FACE_API = "LIKENESS_FACE_API"

_CHUNK = 1 << 20
_BACKOFF_S = 1.0  # first retry delay; doubles on each further retry
_BY_HAND = (
    f"download {ICT_URL} by hand and set the environment variable {ENV_ICT} to that .zip "
    "(or to the folder it extracts to)."
)


def cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``LIKENESS_CACHE_DIR``, else the platform's
    user cache (``~/.cache/likeness``, ``%LOCALAPPDATA%\\likeness``, ``~/Library/Caches/likeness``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "likeness"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "likeness"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "likeness"


def ict_facekit_path(
    cache_dir: str | Path | None = None, download: bool = True, progress: Progress | None = None
) -> Path:
    """The ICT-FaceKit zip or folder to load, downloading it into the cache when allowed."""
    env = os.environ.get(ENV_ICT)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise AssetError(
                f"{ENV_ICT} is set to {path}, which does not exist. Point it to {ICT_ARCHIVE_NAME} "
                "or the folder it extracts to, or unset it to use the downloaded copy."
            )
        return path
    cached = _cache_root(cache_dir) / ICT_ARCHIVE_NAME
    if cached.is_file():
        return cached
    if not download:
        raise AssetError(
            f"The ICT-FaceKit head model is not in {cached.parent}. Allow downloading it (this needs an "
            f"internet connection), or {_BY_HAND}"
        )
    return _fetch_ict(cached, progress)


def face_api_dir(
    cache_dir: str | Path | None = None, download: bool = True, progress: Progress | None = None
) -> Path:
    """The folder with face-api's face-recognition manifest and weights: ``LIKENESS_FACE_API``, else
    ``<cache>/face-api``, whose missing files are downloaded (checksummed) when allowed."""
    env = os.environ.get(ENV_FACE_API)
    folder = Path(env).expanduser() if env else _cache_root(cache_dir) / "face-api"
    missing = [name for name in FACE_API_FILES if not (folder / name).is_file()]
    if missing and env:
        raise AssetError(f"{ENV_FACE_API} is set to {folder}, which lacks {missing[0]}. Point it to a folder "
                         f"with {' and '.join(FACE_API_FILES)}, or unset it to use the downloaded copy.")
    if missing and not download:
        raise AssetError(f"The face-recognition network is not in {folder}. Allow downloading it, or put "
                         f"{' and '.join(FACE_API_FILES)} from {FACE_API_URL} there.")
    _fetch_face_api(folder, missing, progress)
    return folder


def model_cache_path(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the parsed model of ``source`` is cached. The name hashes the source's resolved path,
    size and modification time, so a replaced or edited archive is parsed again."""
    source = Path(source).resolve()
    stat = source.stat()
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = _cache_root(cache_dir) / "models"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # an unwritable cache only costs speed: load_face_model then skips saving
    return folder / f"ict_facekit_{key}.npz"


def verify_ict_layout(path: str | Path) -> None:
    """Raise AssetError unless the zip at ``path`` holds the FaceXModel files the parser reads."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            model = next((n for n in names if n.endswith("FaceXModel/generic_neutral_mesh.obj")), None)
            if model is None:
                raise AssetError(f"{path} has no FaceXModel/generic_neutral_mesh.obj.")
            prefix = model[: -len("generic_neutral_mesh.obj")]
            if prefix + "vertex_indices.json" not in names:
                raise AssetError(f"{path} has no FaceXModel/vertex_indices.json.")
            expressions = json.loads(archive.read(prefix + "vertex_indices.json")).get("expressions", [])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AssetError(f"{path} is not a readable ICT-FaceKit zip archive ({exc}).") from exc
    if len(expressions) != 53:
        raise AssetError(f"{path}: vertex_indices.json lists {len(expressions)} expressions, expected 53.")
    expected = [f"identity{i:03d}" for i in range(100)] + list(expressions)
    missing = [n for n in expected if f"{prefix}{n}.obj" not in names]
    if missing:
        raise AssetError(f"{path} lacks {len(missing)} model files, e.g. FaceXModel/{missing[0]}.obj.")


def _cache_root(folder: str | Path | None) -> Path:
    # for functions whose ``cache_dir`` argument hides the function of that name
    return cache_dir(folder)


def _fetch_ict(dest: Path, progress: Progress | None) -> Path:
    def same_layout(part: Path) -> bool:
        # GitHub builds archives on request and has changed their bytes before: a different
        # checksum with the right files inside is still the model.
        try:
            verify_ict_layout(part)
        except AssetError:
            return False
        return True

    try:
        return download(ICT_URL, dest, sha256=ICT_SHA256, progress=progress, accept_mismatch=same_layout)
    except AssetError as exc:
        raise AssetError(f"{exc} Alternatively, {_BY_HAND}") from exc


def _fetch_face_api(folder: Path, names: list[str], progress: Progress | None) -> None:
    for name in names:  # (a helper: face_api_dir's ``download`` argument hides the function)
        download(FACE_API_URL + name, folder / name, sha256=FACE_API_FILES[name], progress=progress)


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    progress: Progress | None = None,
    retries: int = 3,
    timeout: float = 30,
    accept_mismatch: Callable[[Path], bool] | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` with urllib: stream into ``dest.part``, resume it with a Range
    request, retry network errors ``retries`` times with exponential backoff, check ``sha256`` and
    only then rename to ``dest``. On a checksum mismatch ``accept_mismatch(part)`` may still accept
    the file (with a warning). Progress goes to ``progress`` (stage "download", total bytes, which
    also carries cancellation) or else to a tqdm bar on stderr."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _stream(url, part, progress, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code not in (408, 429):
                message = f"Could not download {url}: the server answered {exc.code} {exc.reason}."
                raise AssetError(message) from exc
            error: Exception = exc
        except (urllib.error.URLError, HTTPException, OSError) as exc:  # includes timeouts, resets
            error = exc
        if attempt == retries:
            reason = getattr(error, "reason", None) or error
            raise AssetError(
                f"Could not download {url} ({reason}). Check the internet connection (and proxy settings) "
                "and try again."
            ) from error
        _sleep(_BACKOFF_S * 2**attempt, progress)
    _verify(part, url, sha256, accept_mismatch)
    os.replace(part, dest)
    return dest


def _stream(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    """One attempt: append the rest of ``url`` to ``part``. Raises on any network trouble."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "likeness"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        part.unlink()  # 416: the .part is not a prefix of this file (e.g. longer); start over
        return _stream(url, part, progress, timeout)
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header and sends everything again
        elif have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            part.unlink()
            raise HTTPException("the server resumed at another offset; restarting the download")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else 0
        with open(part, "ab" if have else "wb") as fh, _Meter(part.name, total, have, progress) as meter:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                meter.advance(len(chunk))
    size = part.stat().st_size
    if total and size != total:
        raise HTTPException(f"connection closed after {size} of {total} bytes")


def _verify(part: Path, url: str, sha256: str | None, accept: Callable[[Path], bool] | None) -> None:
    if sha256 is None:
        return
    digest = hashlib.sha256()
    with open(part, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    if digest.hexdigest() == sha256.lower():
        return
    if accept is not None and accept(part):
        warnings.warn(
            f"{url}: checksum {digest.hexdigest()} differs from the pinned {sha256}, "
            "but the content checks out; using it.",
            stacklevel=3,
        )
        return
    part.unlink()
    raise AssetError(
        f"The file downloaded from {url} is corrupt (sha256 {digest.hexdigest()}, expected {sha256})."
    )


def _sleep(seconds: float, progress: Progress | None) -> None:
    if progress is None:
        time.sleep(seconds)
    elif progress.cancel_event.wait(seconds):
        progress.check()


class _Meter:
    """Byte counter for one attempt: Progress when given (raises Cancelled), else tqdm on stderr."""

    def __init__(self, name: str, total: int, initial: int, progress: Progress | None):
        self.progress, self.bar = progress, None
        if progress is not None:
            progress.stage("download", total)
            progress.advance(initial)
        else:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total or None, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name.removesuffix(".part"), file=sys.stderr, disable=None, leave=False,
            )

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(n)
        else:
            self.bar.update(n)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
