"""Long work off Blender's main thread, and the core calls it runs (no bpy here).

A ``BackgroundJob`` runs one function in a worker thread with a ``core.progress.Progress``; the
main thread polls ``snapshot()`` from a modal timer and reads ``result``/``error`` once ``done``.
Nothing in a job may touch bpy: Blender's data is only safe to use from the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import DependencyError, LikenessError
from ..core.progress import Progress

DEPENDENCY_HINT = "Open Preferences > Add-ons > Likeness and click Install Dependencies."


class BackgroundJob:
    """``fn(progress)`` in a daemon thread (or, with ``run_here``, in the caller's); stage and
    fraction readable from any thread; ``callback`` also sees every progress report."""

    def __init__(self, fn: Callable[[Progress], Any], name: str = "likeness",
                 callback: Callable[[str, int, int], None] | None = None):
        self._fn = fn
        self._callback = callback
        self._lock = threading.Lock()
        self._stage, self._done, self._total = "starting", 0, 0
        self.progress = Progress(callback=self._on_progress)
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> BackgroundJob:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.progress.cancel()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def snapshot(self) -> tuple[str, float]:
        """(stage name, fraction of the stage done in [0, 1]; -1 when the stage has no total)."""
        with self._lock:
            stage, done, total = self._stage, self._done, self._total
        return stage, (min(done / total, 1.0) if total > 0 else -1.0)

    def run_here(self) -> BackgroundJob:
        self._run()
        return self

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._stage, self._done, self._total = stage, done, total
        if self._callback is not None:
            self._callback(stage, done, total)

    def _run(self) -> None:
        try:
            self.result = self._fn(self.progress)
        except BaseException as exc:  # reported to the main thread, which shows it to the user
            self.error = exc
        finally:
            self._finished.set()


def stage_printer(label: str) -> Callable[[str, int, int], None]:
    """Progress callback for headless runs: one line on stdout whenever the stage changes."""
    last = [""]

    def callback(stage: str, done: int, total: int) -> None:
        if stage != last[0]:
            last[0] = stage
            print(f"{label}: {stage}", flush=True)

    return callback


def progress_text(stage: str, fraction: float) -> str:
    """What the panel's progress bar reads: "Refine 42%" (the stage alone when it has no total)."""
    name = stage[:1].upper() + stage[1:]
    return f"{name} {round(100 * fraction)}%" if fraction >= 0 else name


def error_message(exc: BaseException, dependency_hint: bool = True) -> str:
    """What the user reads for a failed job: our typed errors as they are, missing packages with
    the way to install them (``dependency_hint``: not for errors of the installer itself),
    anything else with its type (it is a bug worth reporting)."""
    hint = f" {DEPENDENCY_HINT}" if dependency_hint else ""
    if isinstance(exc, DependencyError):
        return f"{exc}{hint}"
    if isinstance(exc, LikenessError):
        return str(exc)
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None) or str(exc)
        return f"The Python package '{name}' is missing.{hint}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class ReconstructOptions:
    """What one reconstruction needs besides the photo, gathered in the main thread."""

    preset: str = "fast"
    device: str = "auto"
    face_index: Optional[int] = None
    detail_strength: float = 1.0
    detail_guidance: str = "auto"  # core.pipeline.Settings.detail_guidance
    facial_hair: str = "hair"  # core.appearance.texture.TextureSettings.facial_hair
    scalp: str = "skin"  # core.appearance.texture.TextureSettings.scalp
    clip_pretrained: Optional[str] = "openai"  # tag or checkpoint path; None: random weights (tests, demos)
    ict_facekit: Optional[str] = None  # a local zip or folder; None: core.assets finds or fetches it
    cache_dir: Optional[str] = None
    allow_download: bool = True  # Blender's "Allow Online Access"


def face_model_path(options: ReconstructOptions, progress: Progress | None = None) -> Path:
    from ..core import assets

    if options.ict_facekit:
        return Path(options.ict_facekit).expanduser()
    return assets.ict_facekit_path(options.cache_dir, download=options.allow_download, progress=progress)


def make_pipeline(options: ReconstructOptions, progress: Progress | None = None):
    """A ``core.pipeline.Pipeline`` with the model the options point to (downloaded if needed)."""
    from ..core.geometry.face_model import load_face_model
    from ..core.pipeline import Pipeline

    source = face_model_path(options, progress)
    if progress is not None:
        progress.stage("load model")
    return Pipeline(model=load_face_model(source, cache_dir=options.cache_dir))


def reconstruction_settings(options: ReconstructOptions):
    """The ``core.pipeline.Settings`` the options stand for (also what a batch checks up front)."""
    from ..core.appearance.texture import TextureSettings
    from ..core.pipeline import preset_settings

    return preset_settings(options.preset, device=options.device, face_index=options.face_index,
                           texture=TextureSettings(scalp=options.scalp, facial_hair=options.facial_hair),
                           detail_strength=options.detail_strength,
                           detail_guidance=options.detail_guidance,
                           clip_pretrained=options.clip_pretrained)


def run_reconstruction(image, options: ReconstructOptions, progress: Progress, pipeline=None):
    """``core.reconstruct`` with the options; ``image`` is a path or an (H, W, 3) uint8 array."""
    from ..core import reconstruct

    pipeline = pipeline or make_pipeline(options, progress)
    return reconstruct(image, settings=reconstruction_settings(options), progress=progress, pipeline=pipeline)
