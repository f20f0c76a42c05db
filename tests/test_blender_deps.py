"""The add-on's dependency installer and background jobs (plain Python, no bpy): real pip runs
that install a wheel built here into a target folder, and real worker threads."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import load_extension_package

load_extension_package()
from likeness.blender_addon import deps, jobs  # noqa: E402
from likeness.core.errors import Cancelled, DependencyError, ImageError  # noqa: E402 - the package's own copy
from likeness.core.progress import Progress  # noqa: E402


def make_wheel(folder: Path, name: str = "likeness_probe", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel: one module whose VALUE is 42."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for n, text in files.items():
            archive.writestr(n, text)
        archive.writestr(f"{info}/RECORD", record)
    return path


def pip(target: Path, wheels: Path, *requirements: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-index",
            "--find-links", str(wheels), "--disable-pip-version-check", *requirements]


def test_requirements_come_from_requirements_txt():
    requirements = deps.read_requirements()
    names = {r.name for r in requirements}
    assert {"torch", "mediapipe", "open-clip-torch", "scikit-image", "pillow"} <= names
    assert "numpy" not in names  # Blender's own numpy stays
    assert {r.name for r in requirements if r.optional} == set(deps.OPTIONAL) & names
    assert next(r for r in requirements if r.name == "torch").line == "torch==2.11.0"
    assert next(r for r in requirements if r.name == "scikit-image").module == "skimage"
    # This environment has them all: nothing is reported missing.
    assert deps.missing(requirements, include_optional=True) == []


def test_pip_commands_pin_numpy_and_split_the_optional_extras(tmp_path):
    import numpy

    requirements = deps.read_requirements()
    required, optional = deps.pip_commands(tmp_path, requirements, include_optional=True,
                                           index_url="https://download.pytorch.org/whl/cpu")
    for command in (required, optional):
        assert command[:3] == [sys.executable, "-m", "pip"]
        assert command[command.index("--target") + 1] == str(tmp_path)
        assert f"numpy=={numpy.__version__}" in command
        assert command[command.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert "torch==2.11.0" in required and "torch==2.11.0" not in optional
    assert all(r.line in optional for r in requirements if r.optional)
    (only_required,) = deps.pip_commands(tmp_path, requirements, include_optional=False)
    assert "--extra-index-url" not in only_required


def test_run_pip_installs_into_the_target_and_reports_lines(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    target = tmp_path / "site-packages"
    stages: list[str] = []
    deps.run_pip([pip(target, wheels, "likeness_probe")], Progress(callback=lambda s, d, t: stages.append(s)),
                  log_path=tmp_path / "install.log")
    assert (target / "likeness_probe" / "__init__.py").is_file()
    assert any("Successfully installed" in s for s in stages)
    assert "Successfully installed" in (tmp_path / "install.log").read_text()
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert deps.add_to_path(target) and sys.path[-1] == str(target)
    assert deps.add_to_path(target) and sys.path.count(str(target)) == 1
    assert importlib.import_module("likeness_probe").VALUE == 42
    sys.modules.pop("likeness_probe")
    assert not deps.add_to_path(tmp_path / "absent")


def test_run_pip_failure_carries_pips_error(tmp_path):
    with pytest.raises(DependencyError, match="No matching distribution found for likeness-absent"):
        deps.run_pip([pip(tmp_path / "t", tmp_path, "likeness-absent==9")], Progress())


def test_run_pip_can_be_cancelled(tmp_path):
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        deps.run_pip([pip(tmp_path / "t", tmp_path, "likeness-absent")], progress)


WRAPPER = """#!/bin/sh
# A wrapper in front of "pip" (like a pyenv shim or conda run): it starts the real work as a
# grandchild and waits for it.
sh -c 'echo $$ > "$1"; while true; do echo downloading; sleep 0.1; done' grandchild "$1" &
wait
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """A cancel stops pip's wrapper and the grandchild it started, not only the direct child."""
    wrapper = tmp_path / "pip-wrapper.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    pid_file = tmp_path / "grandchild.pid"
    stages: list[str] = []
    job = jobs.BackgroundJob(lambda progress: deps.run_pip([[str(wrapper), str(pid_file)]], progress),
                             callback=lambda stage, done, total: stages.append(stage)).start()
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip() and "downloading" in " ".join(stages)):
        assert time.monotonic() < deadline, "the wrapper did not start its grandchild"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    job.cancel()
    assert job.wait(10) and isinstance(job.error, Cancelled)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild (the real download) survived the cancel"


def test_background_job_runs_reports_and_cancels():
    job = jobs.BackgroundJob(lambda progress: (progress.stage("work", 4), progress.advance(3), "done")[-1])
    assert not job.done
    assert job.start().wait(10) and job.result == "done" and job.error is None
    assert job.snapshot() == ("work", 0.75)

    started = threading.Event()

    def endless(progress):
        progress.stage("spin")
        started.set()
        while True:
            progress.check()

    job = jobs.BackgroundJob(endless).start()
    assert started.wait(10)
    assert job.snapshot() == ("spin", -1.0)
    job.cancel()
    assert job.wait(10) and isinstance(job.error, Cancelled)


def test_error_messages_tell_what_to_do():
    assert jobs.error_message(ImageError("photo.jpg is truncated.")) == "photo.jpg is truncated."
    missing = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert "'torch'" in jobs.error_message(missing) and "Install Dependencies" in jobs.error_message(missing)
    assert jobs.error_message(ValueError("bad")) == "ValueError: bad"
    # The installer's own failures do not send the user back to the installer.
    failed = DependencyError("pip could not install the dependencies: no network.")
    assert "Install Dependencies" in jobs.error_message(failed)
    assert jobs.error_message(failed, dependency_hint=False) == str(failed)


def test_progress_text_shows_stage_and_percentage():
    assert jobs.progress_text("refine", 0.42) == "Refine 42%"
    assert jobs.progress_text("detect", -1.0) == "Detect"


def test_options_carry_the_texture_settings():
    settings = jobs.reconstruction_settings(jobs.ReconstructOptions(scalp="hair", facial_hair="skin"))
    assert (settings.texture.scalp, settings.texture.facial_hair) == ("hair", "skin")
    assert jobs.reconstruction_settings(jobs.ReconstructOptions()).texture.scalp == "skin"
