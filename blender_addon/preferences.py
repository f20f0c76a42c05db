"""Add-on preferences: Python dependencies and the ICT-FaceKit head model, with their installers."""

from __future__ import annotations

from pathlib import Path

import bpy

from ..core.errors import AssetError, DependencyError
from . import ADDON_ID, deps
from .jobs import ReconstructOptions, face_model_path
from .modal import JobOperator, job_state

OFFLINE_HINT = "Enable Preferences > System > Network > Allow Online Access"


def preferences(context=None):
    """The add-on's preferences, or None when it was registered without the add-on system."""
    addon = (context or bpy.context).preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def site_packages_dir(create: bool = False) -> Path | None:
    """The extension's private folder for pip-installed packages (None outside an extension)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="site-packages", create=create))
    except ValueError:  # not loaded as an extension (bl_ext.<repo>.<id>)
        return None


def options_from_preferences(context=None, **fields) -> ReconstructOptions:
    prefs = preferences(context)
    return ReconstructOptions(
        ict_facekit=(bpy.path.abspath(prefs.ict_facekit_path) if prefs and prefs.ict_facekit_path else None),
        cache_dir=(bpy.path.abspath(prefs.cache_dir) if prefs and prefs.cache_dir else None),
        allow_download=bpy.app.online_access,
        **fields,
    )


def model_status(context=None) -> tuple[bool, str]:
    """(found, text) for the ICT-FaceKit model, without downloading anything."""
    options = options_from_preferences(context)
    options.allow_download = False
    try:
        path = face_model_path(options)
    except AssetError:
        return False, "ICT-FaceKit head model: not downloaded yet"
    if not path.exists():
        return False, f"ICT-FaceKit head model: {path} does not exist"
    return True, f"ICT-FaceKit head model: {path}"


class InstallDependencies:
    """The Task of Install Dependencies: pip into the extension's user folder."""

    label = "Install Dependencies"
    dependency_hint = False  # its own errors must not send the user back to this button

    def prepare(self, context):
        if not bpy.app.online_access:
            raise DependencyError(f"Installing the dependencies needs the internet: {OFFLINE_HINT}.")
        prefs = preferences(context)
        target = site_packages_dir(create=True)
        if target is None:
            raise DependencyError("Likeness must be installed as a Blender extension to install "
                                  "its dependencies.")
        commands = deps.pip_commands(
            target, deps.read_requirements(),
            include_optional=bool(prefs and prefs.include_optional),
            index_url=prefs.torch_index_url.strip() if prefs else "",
        )
        log = target.parent / "install.log"
        return lambda progress: deps.run_pip(commands, progress, log)

    def finish(self, context, result, progress):
        deps.add_to_path(site_packages_dir())
        still = deps.missing(deps.read_requirements())
        if still:
            names = ", ".join(r.name for r in still)
            return [("WARNING", f"Installed, but {names} cannot be found yet: restart Blender.")]
        return [("INFO", "Likeness dependencies installed")]


class DownloadFaceModel:
    """The Task of Download Face Model."""

    label = "Download Face Model"
    dependency_hint = True

    def prepare(self, context):
        options = options_from_preferences(context)
        if not options.allow_download and not model_status(context)[0]:
            raise AssetError(f"Downloading the head model needs the internet: {OFFLINE_HINT}, or set "
                             "a local ICT-FaceKit copy in the add-on preferences.")

        def work(progress):
            from ..core.geometry.face_model import load_face_model

            path = face_model_path(options, progress)
            progress.stage("prepare model")  # parse once into the cache: later loads take < 1 s
            load_face_model(path, cache_dir=options.cache_dir)
            return path

        return work

    def finish(self, context, result, progress):
        return [("INFO", f"ICT-FaceKit head model ready: {result}")]


# No REGISTER in bl_options (Python's default): Repeat Last would run the job synchronously.
class LIKENESS_OT_install_dependencies(JobOperator, bpy.types.Operator):
    """Install PyTorch, MediaPipe and the other Python packages Likeness needs (several GB)"""

    bl_idname = "likeness.install_dependencies"
    bl_label = InstallDependencies.label
    bl_options = set()
    task_type = InstallDependencies


class LIKENESS_OT_download_face_model(JobOperator, bpy.types.Operator):
    """Download the ICT-FaceKit head model (120 MB, MIT licence) and prepare it for fast loading"""

    bl_idname = "likeness.download_face_model"
    bl_label = DownloadFaceModel.label
    bl_options = set()
    task_type = DownloadFaceModel


def draw_job(layout, context) -> bool:
    """Progress bar ("Refine 42%") and Cancel button of the running job; False when none runs."""
    state = job_state(context)
    if not state.running:
        return False
    row = layout.row(align=True)
    if state.fraction >= 0:
        row.progress(factor=state.fraction, type="BAR", text=state.text)
    else:
        row.label(text=state.text, icon="SORTTIME")
    row.operator("likeness.cancel", text="", icon="CANCEL")
    return True


def setup_status(context) -> tuple[str, str, str]:
    """One short line for what is missing, and the operator that fixes it with its button text
    (("Ready", "", "") when nothing is)."""
    missing = deps.missing(deps.read_requirements())
    if missing:
        count = f"{len(missing)} packages" if len(missing) > 1 else missing[0].name
        return f"{count} missing", LIKENESS_OT_install_dependencies.bl_idname, "Install"
    if not model_status(context)[0]:
        return "No head model", LIKENESS_OT_download_face_model.bl_idname, "Download"
    return "Ready", "", ""


def draw_setup_line(layout, context) -> None:
    """The panel's one-line status, with the button that fixes what is missing."""
    text, fix, button = setup_status(context)
    row = layout.row(align=True)
    row.label(text=text, icon="ERROR" if fix else "CHECKMARK")
    if fix:
        row.operator(fix, text=button, icon="IMPORT")


def draw_status(layout, context) -> None:
    """Dependency and model status in full, with the buttons that fix what is missing."""
    missing = deps.missing(deps.read_requirements())
    box = layout.box()
    if missing:
        box.label(text="Missing: " + ", ".join(r.name for r in missing), icon="ERROR")
        box.operator(LIKENESS_OT_install_dependencies.bl_idname, icon="IMPORT")
    else:
        box.label(text="Python dependencies installed", icon="CHECKMARK")
    found, text = model_status(context)
    box.label(text=text, icon="CHECKMARK" if found else "ERROR")
    if not found:
        box.operator(LIKENESS_OT_download_face_model.bl_idname, icon="URL")


class LikenessPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    ict_facekit_path: bpy.props.StringProperty(
        name="Local ICT-FaceKit", subtype="FILE_PATH",
        description="An ICT-FaceKit master.zip or the folder it extracts to; empty: download it")
    cache_dir: bpy.props.StringProperty(
        name="Cache Folder", subtype="DIR_PATH",
        description="Where the downloaded and parsed head model is kept; empty: the user cache folder")
    torch_index_url: bpy.props.StringProperty(
        name="PyTorch Index",
        description="Extra package index for PyTorch, e.g. https://download.pytorch.org/whl/cpu for the "
                    "smaller CPU-only build; empty: PyPI's default build")
    include_optional: bpy.props.BoolProperty(
        name="Optional Extras",
        description="Also install InsightFace/ONNX Runtime (second face detector; its models are for "
                    "non-commercial use) and PyTorch3D (faster CUDA rendering)")

    def draw(self, context):
        layout = self.layout
        draw_job(layout, context)
        draw_status(layout, context)
        col = layout.column()
        col.prop(self, "ict_facekit_path")
        col.prop(self, "cache_dir")
        col.separator()
        col.prop(self, "torch_index_url")
        col.prop(self, "include_optional")
        folder = site_packages_dir()
        if folder is not None:
            col.label(text=f"Packages go to {folder}", icon="FILE_FOLDER")


CLASSES = (LikenessPreferences, LIKENESS_OT_install_dependencies, LIKENESS_OT_download_face_model)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    folder = site_packages_dir()
    if folder is not None:
        deps.add_to_path(folder)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
