"""dicom3tools' ``dciodvfy`` as an independent validator of the objects the hub and the
reference products write (tests only)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import Dataset


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    """The path of ``dciodvfy``; the test is skipped (with the reason) without it, except
    under CI, which must run it."""
    path = shutil.which("dciodvfy")
    if path is None:
        reason = "dciodvfy (dicom3tools) is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the dciodvfy interoperability tests: {reason}")
        pytest.skip(reason)
    return path


def verify(dciodvfy: str, ds: Dataset, path: Path) -> tuple[list[str], list[str]]:
    """Write ``ds`` as a Part 10 file at ``path`` and run dciodvfy on it: its "Error" lines
    and all its lines (warnings are printed, for the test log)."""
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run(
        [dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Warning"):
            print(f"{path.name}: {line}")
    return [line for line in lines if line.startswith("Error")], lines
