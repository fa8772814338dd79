"""DCMTK's tools are found even where pynetdicom's console scripts of the same names come
first on PATH (an activated virtual environment)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aifi.conformance.dcmtk import dcmtk_tool, require_dcmtk_tool


def _executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_running_python_s_scripts_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = Path(sys.executable).parent
    other = _executable(tmp_path / "dcmtk", "storescu")
    monkeypatch.setenv("PATH", f"{scripts}:{other.parent}")
    assert (scripts / "storescu").exists()  # pynetdicom's, installed with the project
    assert dcmtk_tool("storescu") == str(other)


def test_a_tool_that_is_nowhere_else_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{tmp_path}")
    assert dcmtk_tool("storescu") is None
    with pytest.raises(RuntimeError, match="apt-get install dcmtk"):
        require_dcmtk_tool("storescu")
