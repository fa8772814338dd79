"""DCMTK's command-line tools (``storescu``, ``storescp``, ``echoscu``, ``dcmdump`` …), the
independent DIMSE peer the demo, the benchmarks and the tests drive.

pynetdicom installs console scripts of the same names (``storescu``, ``storescp``,
``echoscu``, ``findscu``, ``movescu`` …) into the Python environment's script folder, with
other options (no ``+sd``, for one). With that folder first on ``PATH`` — a virtual
environment that is activated — ``shutil.which("storescu")`` finds pynetdicom's. The
lookup here skips the scripts of the running Python, so that DCMTK is DCMTK.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


def _python_script_folders() -> set[Path]:
    folders = {Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))}
    return {folder.resolve() for folder in folders}


def dcmtk_tool(name: str) -> str | None:
    """The path of DCMTK's ``name`` on ``PATH`` (outside the running Python's script
    folders), or None when DCMTK does not provide it here."""
    skip = _python_script_folders()
    folders = [
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and Path(entry).resolve() not in skip
    ]
    return shutil.which(name, path=os.pathsep.join(folders))


def require_dcmtk_tool(name: str) -> str:
    """:func:`dcmtk_tool`, or RuntimeError saying how to install DCMTK."""
    found = dcmtk_tool(name)
    if found is None:
        raise RuntimeError(f"DCMTK's {name} is not installed (apt-get install dcmtk)")
    return found
