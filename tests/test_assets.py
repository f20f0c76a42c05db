"""core.assets against a real HTTP server on 127.0.0.1 serving the real ICT-FaceKit archive."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import ICT_ZIP, SHARED

from core import assets
from core.errors import AssetError, Cancelled
from core.geometry.face_model import load_cache, load_face_model
from core.progress import Progress

ICT_SIZE = ICT_ZIP.stat().st_size


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; can ignore Range or cut a response short."""

    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        requested = self.headers.get("Range")
        srv.ranges.append(requested)
        path = srv.files.get(self.path)
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        start = 0
        if requested and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested)[1])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        budget = srv.cut_after.pop(0) if srv.cut_after else size
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                while budget > 0 and (block := fh.read(min(1 << 20, budget))):
                    self.wfile.write(block)
                    budget -= len(block)
        except ConnectionError:
            pass  # the client went away (cancelled)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def reset(self) -> None:
        self.files: dict[str, Path] = {"/ict.zip": ICT_ZIP}
        self.ranges: list[str | None] = []
        self.ignore_range = False
        self.cut_after: list[int] = []  # byte budgets of the next responses, then unlimited

    def url(self, name: str = "/ict.zip") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{name}"


@pytest.fixture(scope="module")
def _http_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(_http_server: _Server) -> _Server:
    _http_server.reset()
    return _http_server


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.ENV_ICT, raising=False)
    monkeypatch.setenv(assets.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_BACKOFF_S", 0.01)


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ict.zip"


def test_download_verifies_and_reports_progress(server, tmp_path):
    events = []
    dest = tmp_path / "sub" / "ict.zip"
    progress = Progress(lambda *event: events.append(event))
    out = assets.download(server.url(), dest, sha256=assets.ICT_SHA256, progress=progress)

    assert out == dest and dest.stat().st_size == ICT_SIZE
    assert not dest.with_name("ict.zip.part").exists()
    assert events[0] == ("download", 0, ICT_SIZE) and events[-1] == ("download", ICT_SIZE, ICT_SIZE)


def test_resume_from_partial_part(server, tmp_path):
    dest = tmp_path / "ict.zip"
    have = 50_000_000
    with open(ICT_ZIP, "rb") as src:
        dest.with_name("ict.zip.part").write_bytes(src.read(have))

    assets.download(server.url(), dest, sha256=assets.ICT_SHA256)
    assert server.ranges == [f"bytes={have}-"]
    assert dest.stat().st_size == ICT_SIZE


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    server.cut_after = [8_000_000]
    dest = tmp_path / "ict.zip"
    assets.download(server.url(), dest, sha256=assets.ICT_SHA256, retries=2)
    assert server.ranges == [None, "bytes=8000000-"]
    assert dest.stat().st_size == ICT_SIZE


def test_server_ignoring_range_restarts(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "ict.zip"
    dest.with_name("ict.zip.part").write_bytes(b"not the start of the archive" * 1000)
    assets.download(server.url(), dest, sha256=assets.ICT_SHA256)
    assert server.ranges == ["bytes=28000-"]
    assert dest.stat().st_size == ICT_SIZE  # the stale prefix was dropped, not kept


def test_part_longer_than_file_restarts(server, tmp_path):
    dest = tmp_path / "ict.zip"
    with open(dest.with_name("ict.zip.part"), "wb") as fh:
        fh.truncate(ICT_SIZE + 10)
    assets.download(server.url(), dest, sha256=assets.ICT_SHA256)
    assert server.ranges == [f"bytes={ICT_SIZE + 10}-", None]
    assert dest.stat().st_size == ICT_SIZE


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "ict.zip"
    with pytest.raises(AssetError, match="corrupt"):
        assets.download(server.url(), dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_not_retried(server, tmp_path):
    with pytest.raises(AssetError, match="404"):
        assets.download(server.url("/missing.zip"), tmp_path / "x.zip")
    assert server.ranges == [None]


def test_cancel_keeps_part_for_resume(server, tmp_path):
    progress = Progress()

    def cancel_midway(stage: str, done: int, total: int) -> None:
        if done > 20_000_000:
            progress.cancel()

    progress.callback = cancel_midway
    dest = tmp_path / "ict.zip"
    with pytest.raises(Cancelled):
        assets.download(server.url(), dest, progress=progress)
    have = dest.with_name("ict.zip.part").stat().st_size
    assert not dest.exists() and 20_000_000 < have < ICT_SIZE

    assets.download(server.url(), dest, sha256=assets.ICT_SHA256)
    assert server.ranges[-1] == f"bytes={have}-"
    assert dest.stat().st_size == ICT_SIZE


def test_server_down_gives_clear_error(tmp_path, no_env, monkeypatch):
    url = _dead_url()
    with pytest.raises(AssetError, match=re.escape(url)):
        assets.download(url, tmp_path / "x.zip", retries=1)

    monkeypatch.setattr(assets, "ICT_URL", url)
    with pytest.raises(AssetError) as info:
        assets.ict_facekit_path()
    message = str(info.value)
    assert url in message and assets.ENV_ICT in message and "internet" in message
    assert not (tmp_path / "cache" / assets.ICT_ARCHIVE_NAME).exists()


def test_face_api_fetched_once_with_checksums(server, no_env, monkeypatch, tmp_path):
    monkeypatch.delenv(assets.ENV_FACE_API, raising=False)
    shared = SHARED / "face-api"
    server.files = {f"/model/{name}": shared / name for name in assets.FACE_API_FILES}
    monkeypatch.setattr(assets, "FACE_API_URL", server.url("/model/"))
    with pytest.raises(AssetError, match="Allow downloading"):
        assets.face_api_dir(download=False)
    folder = assets.face_api_dir()
    assert folder == tmp_path / "cache" / "face-api"
    assert sorted(p.name for p in folder.iterdir()) == sorted(assets.FACE_API_FILES)
    served = len(server.ranges)
    assert assets.face_api_dir() == folder and len(server.ranges) == served  # cached: no request

    monkeypatch.setenv(assets.ENV_FACE_API, str(tmp_path))
    with pytest.raises(AssetError, match=assets.ENV_FACE_API):
        assets.face_api_dir()


def test_face_api_offline_is_a_clear_error(no_env, monkeypatch):
    monkeypatch.delenv(assets.ENV_FACE_API, raising=False)
    monkeypatch.setattr(assets, "FACE_API_URL", _dead_url().removesuffix("ict.zip"))
    with pytest.raises(AssetError, match="Could not download"):
        assets.face_api_dir()


def _fake_archive(path: Path, drop: str | None = None) -> Path:
    """A small zip with the FaceXModel file names of the real one (empty OBJs)."""
    with zipfile.ZipFile(ICT_ZIP) as real:
        meta = real.read("ICT-FaceKit-master/FaceXModel/vertex_indices.json")
    names = ["generic_neutral_mesh"] + [f"identity{i:03d}" for i in range(100)]
    names += json.loads(meta)["expressions"]
    with zipfile.ZipFile(path, "w") as fake:
        fake.writestr("ICT-FaceKit-other/FaceXModel/vertex_indices.json", meta)
        for name in names:
            if name != drop:
                fake.writestr(f"ICT-FaceKit-other/FaceXModel/{name}.obj", b"")
    return path


def test_rezipped_archive_with_right_layout_is_accepted(server, no_env, tmp_path, monkeypatch):
    server.files["/rezipped.zip"] = _fake_archive(tmp_path / "rezipped.zip")
    monkeypatch.setattr(assets, "ICT_URL", server.url("/rezipped.zip"))
    with pytest.warns(UserWarning, match="checksum"):
        path = assets.ict_facekit_path()
    assert path == tmp_path / "cache" / assets.ICT_ARCHIVE_NAME and path.is_file()


def test_archive_with_wrong_layout_is_rejected(server, no_env, tmp_path, monkeypatch):
    server.files["/broken.zip"] = _fake_archive(tmp_path / "broken.zip", drop="jawOpen")
    monkeypatch.setattr(assets, "ICT_URL", server.url("/broken.zip"))
    with pytest.raises(AssetError, match="corrupt"):
        assets.ict_facekit_path()
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(AssetError, match="jawOpen"):
        assets.verify_ict_layout(tmp_path / "broken.zip")
    assets.verify_ict_layout(ICT_ZIP)


def test_env_var_takes_precedence_over_cache(no_env, tmp_path, monkeypatch):
    cached = tmp_path / "cache" / assets.ICT_ARCHIVE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"placeholder")
    assert assets.ict_facekit_path(download=False) == cached

    monkeypatch.setenv(assets.ENV_ICT, str(ICT_ZIP))
    assert assets.ict_facekit_path(download=False) == ICT_ZIP

    folder = tmp_path / "extracted"
    folder.mkdir()
    monkeypatch.setenv(assets.ENV_ICT, str(folder))
    assert assets.ict_facekit_path(download=False) == folder


def test_env_var_to_missing_path_is_an_error(no_env, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.zip"
    monkeypatch.setenv(assets.ENV_ICT, str(missing))
    with pytest.raises(AssetError, match=assets.ENV_ICT) as info:
        assets.ict_facekit_path()
    assert str(missing) in str(info.value)


def test_no_download_says_what_to_do(no_env):
    with pytest.raises(AssetError) as info:
        assets.ict_facekit_path(download=False)
    assert assets.ICT_URL in str(info.value) and assets.ENV_ICT in str(info.value)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_CACHE, str(tmp_path / "env"))
    assert assets.cache_dir() == tmp_path / "env"
    assert assets.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(assets.ENV_CACHE)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert assets.cache_dir() == tmp_path / ".cache" / "likeness"


def test_model_cache_path_follows_the_source(tmp_path):
    source = tmp_path / "model.zip"
    source.write_bytes(b"one")
    first = assets.model_cache_path(source, cache_dir=tmp_path / "c")
    assert first.parent == tmp_path / "c" / "models" and first.parent.is_dir()
    assert first.name.startswith("ict_facekit_") and first.suffix == ".npz"
    assert assets.model_cache_path(source, cache_dir=tmp_path / "c") == first
    os.utime(source, ns=(0, 10**18))
    assert assets.model_cache_path(source, cache_dir=tmp_path / "c") != first


@pytest.fixture(scope="module")
def loaded_twice(tmp_path_factory):
    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(assets.ENV_CACHE, str(cache))
        first = load_face_model(ICT_ZIP)
        cache_file = assets.model_cache_path(ICT_ZIP)
        cached_copy = load_cache(cache_file)
        second = load_face_model(ICT_ZIP)
    yield first, second, cached_copy, cache_file
    shutil.rmtree(cache, ignore_errors=True)


def test_load_face_model_end_to_end_and_cached(loaded_twice):
    first, second, cached_copy, cache_file = loaded_twice
    assert cache_file.is_file() and cached_copy is not None
    assert first.neutral.shape == (26719, 3) and first.identity_basis.shape[0] == 100
    assert len(first.expression_names) == 53
    for name in ("neutral", "identity_basis", "expression_basis", "polygons", "polygon_uvs", "uvs"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.expression_names == first.expression_names


def test_parsed_model_file_loads_as_a_source(loaded_twice, tmp_path, monkeypatch):
    """A parsed .npz (e.g. carried to a machine without the zip) is a model source of its own."""
    first, _, _, cache_file = loaded_twice
    copy = tmp_path / "ict_facekit.npz"
    shutil.copyfile(cache_file, copy)
    monkeypatch.setenv(assets.ENV_ICT, str(copy))
    model = load_face_model()
    np.testing.assert_array_equal(model.expression_basis, first.expression_basis)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(copy.read_bytes()[:1000])
    with pytest.raises(AssetError, match="not a parsed ICT-FaceKit model"):
        load_face_model(damaged)
