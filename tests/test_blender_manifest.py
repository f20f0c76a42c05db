"""blender_manifest.toml through Blender's own extension tool (what ``blender --command extension
validate`` and ``build`` run): it validates, and the built zip holds the add-on and core but none
of the development files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


def blender_ext_tool() -> Path:
    """bl_pkg's command line tool inside the installed bpy module (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the bpy module is not installed")
    bpy_dir = Path(spec.submodule_search_locations[0])
    hits = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert hits, "blender_ext.py not found in the bpy module"
    return hits[-1]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(blender_ext_tool()), *args], capture_output=True, text=True)


def test_manifest_fields():
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert manifest["id"] == "likeness" and manifest["type"] == "add-on"
    assert manifest["license"] == ["SPDX:MIT"]
    assert manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}
    assert manifest["version"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_validate_accepts_the_manifest():
    result = run_tool("validate", str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_build_packs_the_addon_and_core_only(tmp_path):
    result = run_tool("build", "--source-dir", str(REPO), "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = tmp_path.glob("likeness-*.zip")
    names = set(zipfile.ZipFile(archive).namelist())
    for required in ("__init__.py", "blender_manifest.toml", "requirements.txt", "core/__init__.py",
                     "core/pipeline.py", "blender_addon/build.py", "operators/reconstruct.py"):
        assert required in names
    assert any(n.startswith("core/data/") for n in names)
    for excluded in ("tests/", "docs/", "scripts/", "benchmarks/", ".venv/", ".git/", "wheels/"):
        assert not any(n.startswith(excluded) for n in names), excluded
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "pyproject.toml" not in names
    # The built archive validates too (that is what Blender checks when installing it).
    assert run_tool("validate", str(archive)).returncode == 0
