"""The heavy Python dependencies (PyTorch, MediaPipe, ...): what is missing, and pip to install them.

They are far too large to ship in the extension, so the user installs them once from the add-on
preferences: Blender's own Python runs ``pip install --target <extension user dir>/site-packages``
in a subprocess, and that folder goes at the *end* of ``sys.path`` so Blender's bundled modules
keep priority. numpy is pinned to the version Blender ships, so that every package pip picks is
built for it. No bpy here: this runs in a worker thread and in tests.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import Cancelled, DependencyError
from ..core.progress import Progress

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
# Optional extras, installed in a second pip run so that their failure leaves the rest working:
# InsightFace's detector (non-commercial model licence) and prebuilt PyTorch3D (CUDA rasteriser).
OPTIONAL = ("insightface", "onnxruntime", "easypytorch3d")
# Distribution name -> module to look for, where they differ.
IMPORT_NAMES = {"scikit-image": "skimage", "pillow": "PIL", "open-clip-torch": "open_clip",
                "easypytorch3d": "pytorch3d", "opencv-python": "cv2"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Requirement:
    line: str  # as in requirements.txt, e.g. "torch==2.11.0"
    name: str  # distribution name as written there, e.g. "OpenEXR"

    @property
    def module(self) -> str:
        return IMPORT_NAMES.get(self.name.lower(), self.name.replace("-", "_"))

    @property
    def optional(self) -> bool:
        return self.name.lower() in OPTIONAL


def read_requirements(path: Path | None = None) -> list[Requirement]:
    """The pinned requirements of ``path`` (default ``REQUIREMENTS``, read when called), numpy
    excluded: Blender ships it and it must stay that one."""
    out = []
    for raw in (path or REQUIREMENTS).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        match = _NAME.match(line)
        if match and match.group(1).lower() != "numpy":
            out.append(Requirement(line, match.group(1)))
    return out


def missing(requirements: list[Requirement], include_optional: bool = False) -> list[Requirement]:
    """Requirements whose module cannot be found (checked without importing it)."""
    return [r for r in requirements if (include_optional or not r.optional) and not _importable(r.module)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def add_to_path(site_packages: str | Path) -> bool:
    """Append ``site_packages`` to ``sys.path`` (once) when it exists; True when it is there."""
    folder = str(site_packages)
    if not os.path.isdir(folder):
        return False
    if folder not in sys.path:
        sys.path.append(folder)
        importlib.invalidate_caches()
    return True


def pip_commands(target: str | Path, requirements: list[Requirement], *, include_optional: bool,
                 index_url: str = "", python: str = sys.executable) -> list[list[str]]:
    """The pip runs that install ``requirements`` into ``target``: required ones, then optional ones.

    ``index_url`` is an extra package index, e.g. PyTorch's CPU-only wheels; pip prefers its
    ``+cpu`` builds because local versions sort after the plain ones."""
    import numpy

    base = [python, "-m", "pip", "install", "--target", str(target), "--upgrade", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    if index_url:
        base += ["--extra-index-url", index_url]
    pin = f"numpy=={numpy.__version__}"
    groups = [[r.line for r in requirements if not r.optional]]
    if include_optional:
        groups.append([r.line for r in requirements if r.optional])
    return [base + [pin] + group for group in groups if group]


def run_pip(commands: list[list[str]], progress: Progress, log_path: Path | None = None) -> None:
    """Run the pip ``commands`` one after the other. Each output line becomes the progress stage
    (what the UI shows); a cancel request stops pip within a fraction of a second, even during a
    long silent download. Raises DependencyError with pip's own error lines on failure."""
    log = open(log_path, "w", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
    try:
        for step, command in enumerate(commands, 1):
            progress.stage(f"Step {step}/{len(commands)}: starting pip")
            errors = _run_one(command, progress, log, f"Step {step}/{len(commands)}: ")
            if errors is not None:
                detail = " ".join(errors[-3:]) or "see the log for details"
                where = f" Log: {log_path}." if log_path is not None else ""
                raise DependencyError(f"pip could not install the dependencies: {detail}.{where}")
    finally:
        if log is not None:
            log.close()


def _run_one(command: list[str], progress: Progress, log, prefix: str) -> list[str] | None:
    """One pip process; None on success, else its ERROR lines."""
    env = dict(os.environ, PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", env=env, **_OWN_GROUP)
    except OSError as exc:
        raise DependencyError(f"Could not start pip ({exc}).") from exc
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    errors: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                progress.check()
                continue
            if line is None:
                break
            if log is not None:
                log.write(line + "\n")
            if line.startswith("ERROR:"):
                errors.append(line.removeprefix("ERROR:").strip())
            if line.strip():
                progress.stage(prefix + line.strip()[:120])
    except Cancelled:
        kill_tree(process)
        raise
    finally:
        process.wait()
    return None if process.returncode == 0 else errors


# pip may run behind wrappers (pyenv shims, conda run) and starts build processes of its own: it
# gets a process group (a console process group on Windows) so that a cancel stops all of them.
_OWN_GROUP = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt"
              else {"start_new_session": True})


def kill_tree(process: subprocess.Popen) -> None:
    """Kill ``process`` and everything it started (started with ``_OWN_GROUP``)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group is already gone
            pass
    process.kill()  # no-op when dead; covers a failed taskkill


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)
