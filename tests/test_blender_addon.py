"""The extension as Blender installs it: built into a zip by Blender's own extension tool,
unpacked into a temporary extension repository and enabled through ``addon_utils`` (so it runs
as ``bl_ext.<repo>.likeness``, with its preferences); then registration, preferences and the
operators, including a real reconstruction of a real photo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ICT_ZIP, REPO, face_photo
from PIL import Image

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402 - exists once bpy is imported

REPO_MODULE = "likeness_test"
MODULE = f"bl_ext.{REPO_MODULE}.likeness"
PHOTO = "000031.jpg"


def blender_ext_tool() -> Path:
    return Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _raise(exc: Exception) -> None:
    raise exc


@pytest.fixture(scope="module")
def extension(tmp_path_factory):
    """The built extension, installed into a temporary repository and enabled."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    work = tmp_path_factory.mktemp("extension")
    subprocess.run([sys.executable, str(blender_ext_tool()), "build", "--source-dir", str(REPO),
                    "--output-dir", str(work)], check=True, capture_output=True)
    package = work / "repo" / "likeness"
    with zipfile.ZipFile(next(work.glob("likeness-*.zip"))) as archive:
        archive.extractall(package)
    repos = bpy.context.preferences.extensions.repos
    repo = repos.new(name=REPO_MODULE, module=REPO_MODULE, custom_directory=str(package.parent),
                     source="USER")
    module = addon_utils.enable(MODULE, default_set=True, handle_error=_raise)
    yield module
    addon_utils.disable(MODULE, default_set=True, handle_error=_raise)
    repos.remove(repo)


def registered() -> dict[str, bool]:
    return {
        "reconstruct": hasattr(bpy.types, "LIKENESS_OT_reconstruct"),
        "cancel": hasattr(bpy.types, "LIKENESS_OT_cancel"),
        "install": hasattr(bpy.types, "LIKENESS_OT_install_dependencies"),
        "download": hasattr(bpy.types, "LIKENESS_OT_download_face_model"),
        "panel": hasattr(bpy.types, "LIKENESS_PT_main"),
        "scene settings": hasattr(bpy.types.Scene, "likeness"),
        "job state": hasattr(bpy.types.WindowManager, "likeness_job"),
    }


def test_enable_disable_twice(extension):
    assert extension.__name__ == MODULE
    assert all(registered().values()), registered()
    assert bpy.context.preferences.addons.get(MODULE) is not None
    for _ in range(2):
        addon_utils.disable(MODULE, default_set=True, handle_error=_raise)
        assert not any(registered().values()), registered()
        assert bpy.context.preferences.addons.get(MODULE) is None
        addon_utils.enable(MODULE, default_set=True, handle_error=_raise)
        assert all(registered().values()), registered()
    settings = bpy.context.scene.likeness
    assert (settings.preset, settings.device, settings.face_index) == ("balanced", "auto", 0)
    assert not bpy.context.window_manager.likeness_job.running


def test_preferences_choose_the_face_model(extension, monkeypatch, tmp_path):
    preferences = sys.modules[f"{MODULE}.blender_addon.preferences"]
    prefs = preferences.preferences()
    assert prefs is not None
    folder = preferences.site_packages_dir()
    assert folder.name == "site-packages" and "likeness" in folder.parts and REPO_MODULE in folder.parts
    monkeypatch.delenv("LIKENESS_ICT_FACEKIT", raising=False)
    prefs.ict_facekit_path = str(tmp_path / "missing.zip")
    prefs.cache_dir = str(tmp_path)
    missing = tmp_path / "missing.zip"
    assert preferences.model_status() == (False, f"ICT-FaceKit head model: {missing} does not exist")
    prefs.ict_facekit_path = str(ICT_ZIP)
    found, text = preferences.model_status()
    assert found and str(ICT_ZIP) in text
    options = preferences.options_from_preferences(preset="fast")
    assert (options.ict_facekit, options.cache_dir, options.preset) == (str(ICT_ZIP), str(tmp_path), "fast")
    prefs.ict_facekit_path = prefs.cache_dir = ""


def test_download_face_model_operator_prepares_the_local_copy(extension):
    # set by scripts/env.sh or conftest: no network here
    assert Path(os.environ["LIKENESS_ICT_FACEKIT"]).resolve() == ICT_ZIP.resolve()
    assert bpy.ops.likeness.download_face_model() == {"FINISHED"}


def test_image_datablock_pixels_match_the_photo(extension):
    reconstruct = sys.modules[f"{MODULE}.operators.reconstruct"]
    path = face_photo(PHOTO)
    image = bpy.data.images.load(str(path))
    pixels = reconstruct.image_pixels(image)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == expected.shape and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - expected).max() <= 1  # row order and colours kept
    bpy.data.images.remove(image)


def test_reconstruct_operator_builds_the_head(extension):
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    settings = bpy.context.scene.likeness
    settings.filepath = str(face_photo(PHOTO))
    settings.preset = "fast"
    settings.device = "cpu"
    # In background mode INVOKE_DEFAULT runs synchronously (timers do not fire without a UI).
    assert bpy.ops.likeness.reconstruct("INVOKE_DEFAULT") == {"FINISHED"}
    head = bpy.data.objects[Path(PHOTO).stem]
    assert bpy.context.view_layer.objects.active == head and head.select_get()
    assert len(head.data.shape_keys.key_blocks) == 54
    assert head["likeness_preset"] == "fast"
    assert {c.type for c in head.children} == {"MESH", "CAMERA"}
    scene = bpy.context.scene
    assert scene.camera.parent == head
    photo = Image.open(face_photo(PHOTO))
    assert (scene.render.resolution_x, scene.render.resolution_y) == photo.size
    albedo = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert albedo.packed_file is not None and albedo.size[0] == 2 * albedo.size[1]
    # The iris colour is measured in the photo around MediaPipe's iris landmarks.
    parts = sys.modules[f"{MODULE}.core.geometry.parts"]
    eye = bpy.data.materials[f"{head.name}_eye"]
    ramp = next(n for n in eye.node_tree.nodes if n.bl_idname == "ShaderNodeValToRGB").color_ramp
    iris = tuple(ramp.evaluate(0.5 * (parts.IRIS_COS + parts.PUPIL_COS)))[:3]
    assert iris != pytest.approx(parts.DEFAULT_IRIS_COLOUR, abs=1e-3)
    assert max(iris) < 0.5  # an iris, not skin or sclera


def test_reconstruct_operator_several_photos_one_head_a_camera_each(extension):
    """The panel's photo plus the list of more photos (a file and an Image) make one head, with a
    camera per photo that overlays the head on that photo; the panel's Scalp option gives it a cap."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    settings = bpy.context.scene.likeness
    settings.filepath = str(face_photo("img13.jpg"))
    settings.preset, settings.device = "fast", "cpu"
    assert settings.scalp == "skin"
    settings.scalp = "hair"
    assert not bpy.ops.likeness.photo_remove.poll()
    bpy.ops.likeness.photo_add()
    bpy.ops.likeness.photo_add()
    settings.more_photos[0].filepath = str(face_photo("img14.jpg"))
    settings.more_photos[1].source = "IMAGE"
    with pytest.raises(RuntimeError, match="entry 2 of More Photos"):  # its image is not chosen yet
        bpy.ops.likeness.reconstruct("INVOKE_DEFAULT")
    settings.more_photos[1].image = bpy.data.images.load(str(face_photo("img15.jpg")))
    assert bpy.ops.likeness.reconstruct("INVOKE_DEFAULT") == {"FINISHED"}
    head = bpy.data.objects["img13"]
    cameras = sorted((c for c in head.children if c.type == "CAMERA"), key=lambda c: c["likeness_photo"])
    assert [c["likeness_photo"] for c in cameras] == [0, 1, 2]
    assert Path(cameras[1]["likeness_source"]).name == "img14.jpg"
    assert bpy.context.scene.camera == cameras[0]
    # Each camera sees the head from its own photo's pose: three different viewpoints.
    positions = np.array([c.matrix_world.translation for c in cameras])
    assert np.linalg.norm(positions[1:] - positions[0], axis=1).min() > 0.01
    assert all(c.data.background_images[0].image is not None for c in cameras)
    # his dark brown hair on the crown (top middle of the back-of-head tile), light skin on the face
    albedo = head.data.materials[0].node_tree.nodes["Image Texture"].image
    pixels = np.array(albedo.pixels[:]).reshape(albedo.size[1], albedo.size[0], 4)[::-1, :, :3]
    height, width = pixels.shape[:2]
    crown = pixels[: height // 5, int(0.7 * width):int(0.8 * width)].mean(-1)
    face = pixels[int(0.4 * height):int(0.6 * height), int(0.1 * width):int(0.4 * width)].mean(-1)
    assert np.median(crown) < 0.6 * np.median(face)
    bpy.ops.likeness.photo_remove()
    assert len(settings.more_photos) == 1 and settings.more_index == 0


def test_reconstruct_operator_reports_errors_and_leaves_the_scene(extension):
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    settings = bpy.context.scene.likeness
    settings.filepath = str(REPO / "pyproject.toml")  # not an image
    settings.preset = "fast"
    with pytest.raises(RuntimeError, match="pyproject.toml"):
        bpy.ops.likeness.reconstruct("INVOKE_DEFAULT")
    settings.filepath = ""
    with pytest.raises(RuntimeError, match="Choose a photo"):
        bpy.ops.likeness.reconstruct()
    assert len(bpy.data.objects) == 0 and len(bpy.data.meshes) == 0 and len(bpy.data.images) == 0


def test_cancel_is_only_available_while_a_job_runs(extension):
    assert not bpy.ops.likeness.cancel.poll()
    assert bpy.ops.likeness.reconstruct.poll()


def test_job_operators_cannot_be_repeated(extension):
    """No REGISTER: Repeat Last and Adjust Last Operation would rerun the job synchronously."""
    for name in ("LIKENESS_OT_reconstruct", "LIKENESS_OT_install_dependencies",
                 "LIKENESS_OT_download_face_model"):
        assert "REGISTER" not in getattr(bpy.types, name).bl_options, name
    assert bpy.types.LIKENESS_OT_reconstruct.bl_options == {"UNDO"}


def test_missing_dependencies_disable_reconstruct_and_say_what_fixes_it(extension, tmp_path, monkeypatch):
    deps = sys.modules[f"{MODULE}.blender_addon.deps"]
    preferences = sys.modules[f"{MODULE}.blender_addon.preferences"]
    assert preferences.setup_status(bpy.context) == ("Ready", "", "")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(deps.REQUIREMENTS.read_text() + "likeness-absent-package==1.0\n")
    monkeypatch.setattr(deps, "REQUIREMENTS", requirements)
    assert not bpy.ops.likeness.reconstruct.poll()
    assert preferences.setup_status(bpy.context) == (
        "likeness-absent-package missing", "likeness.install_dependencies", "Install")


def test_install_dependencies_errors_do_not_point_to_itself(extension):
    assert not bpy.app.online_access  # the bpy module runs offline
    with pytest.raises(RuntimeError, match="needs the internet") as failure:
        bpy.ops.likeness.install_dependencies()
    assert "Install Dependencies" not in str(failure.value)


# --------------------------------------------------------------------------------------------
# The interactive state machine, driven by synthetic events (no window: timers never fire here)


class Session:
    """A JobSession of the real Reconstruct task with its reports and the panel texts it showed."""

    def __init__(self):
        modal = sys.modules[f"{MODULE}.blender_addon.modal"]
        reconstruct = sys.modules[f"{MODULE}.operators.reconstruct"]
        self.reports: list[tuple[str, str]] = []
        self.session = modal.JobSession(reconstruct.ReconstructHead(),
                                        lambda level, text: self.reports.append((*level, text)))
        self.texts: list[str] = []

    @property
    def state(self):
        return bpy.context.window_manager.likeness_job

    def start(self) -> None:
        assert self.session.start(bpy.context)
        assert self.state.running and self.state.text == "Starting"

    def event(self, kind: str, value: str = "NOTHING") -> set[str]:
        result = self.session.on_event(bpy.context, kind, value)
        if self.texts[-1:] != [self.state.text]:
            self.texts.append(self.state.text)
        return result

    def tick_until(self, condition, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.event("TIMER") == {"PASS_THROUGH"}
            assert time.monotonic() < deadline, self.texts
            time.sleep(0.02)

    def finish(self, timeout: float = 120.0) -> set[str]:
        deadline = time.monotonic() + timeout
        while (result := self.event("TIMER")) == {"PASS_THROUGH"}:
            assert time.monotonic() < deadline, self.texts
            time.sleep(0.02)
        assert not self.state.running and not self.state.cancel_requested
        return result


def default_scene(add_camera: bool = False):
    """Blender's default scene (the 2 m cube at the origin) with the panel set to a fast run."""
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    settings = bpy.context.scene.likeness
    settings.filepath = str(face_photo(PHOTO))
    settings.preset, settings.device, settings.add_camera = "fast", "cpu", add_camera
    return {o.name for o in bpy.data.objects}, {m.name for m in bpy.data.meshes}


def datablocks():
    return {o.name for o in bpy.data.objects}, {m.name for m in bpy.data.meshes}


def test_session_shows_stage_and_percentage_and_places_the_head_beside_the_cube(extension):
    before = default_scene()
    bpy.context.scene.cursor.location = (0.0, 0.5, 0.0)
    run = Session()
    run.start()
    assert run.finish() == {"FINISHED"} and run.session.outcome == "FINISHED"
    assert any(re.fullmatch(r"Refine \d+%", text) for text in run.texts), run.texts
    assert run.reports[-1][0] == "INFO" and "reconstructed" in run.reports[-1][1]
    head = bpy.data.objects[Path(PHOTO).stem]
    assert datablocks()[0] - before[0] == {head.name, f"{head.name}_eye.L", f"{head.name}_eye.R",
                                          f"{head.name}_teeth"}
    assert head.select_get() and bpy.context.view_layer.objects.active == head
    # At the 3D cursor, moved along +x out of the default cube (which it would sit inside).
    build = sys.modules[f"{MODULE}.blender_addon.build"]
    bpy.context.view_layer.update()
    cube = build.world_box([bpy.data.objects["Cube"]])
    parts = build.world_box([head, *head.children])
    assert head.location.y == pytest.approx(0.5) and head.location.z == pytest.approx(0.0)
    assert parts[0][0] >= cube[1][0] + 0.05


def test_escape_cancels_and_leaves_the_scene(extension):
    before = default_scene()
    run = Session()
    run.start()
    run.tick_until(lambda: run.state.text.startswith("Refine"))
    assert run.event("ESC", "PRESS") == {"PASS_THROUGH"} and run.state.text == "Cancelling"
    assert run.finish() == {"CANCELLED"} and run.session.outcome == "CANCELLED"
    assert run.reports == [("WARNING", "Reconstruct Head: cancelled; nothing was changed")]
    assert datablocks() == before


def test_cancel_after_the_job_ended_builds_nothing(extension):
    """The Cancel button pressed while the finished job waits for the next timer event (e.g.
    during the last stage): the result is dropped, the scene stays as it was."""
    before = default_scene(add_camera=True)
    run = Session()
    run.start()
    assert run.session.job.wait(120) and run.session.job.error is None
    assert bpy.ops.likeness.cancel() == {"FINISHED"}  # what the panel's Cancel button runs
    assert run.event("MOUSEMOVE") == {"PASS_THROUGH"}
    assert run.finish() == {"CANCELLED"}
    assert datablocks() == before and bpy.context.scene.camera.name == "Camera"


def test_failing_job_reports_the_error_and_leaves_the_scene(extension):
    before = default_scene()
    bpy.context.scene.likeness.filepath = str(REPO / "pyproject.toml")  # not an image
    run = Session()
    run.start()
    assert run.finish() == {"CANCELLED"} and run.session.outcome == "FAILED"
    assert run.reports[0][0] == "ERROR" and "pyproject.toml" in run.reports[0][1]
    assert datablocks() == before


def test_refused_start_reports_and_starts_nothing(extension):
    default_scene()
    bpy.context.scene.likeness.filepath = ""
    run = Session()
    assert not run.session.start(bpy.context)
    assert run.reports == [("ERROR", "Choose a photo in the Likeness panel first.")]
    assert not run.state.running


def test_the_add_on_loads_before_its_dependencies_are_installed():
    """Registering imports none of the packages Install Dependencies brings (a fresh Blender has
    none of them): the panel must appear to offer that button."""
    code = ("import sys, bpy; sys.path.insert(0, 'tests'); from conftest import load_extension_package; "
            "load_extension_package(); import likeness.operators.reconstruct, likeness.blender_addon.panel, "
            "likeness.blender_addon.preferences; "
            "print(sorted({'torch', 'mediapipe', 'cv2', 'numba', 'open_clip', 'scipy', 'PIL', 'skimage'} "
            "& set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
