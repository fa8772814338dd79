"""The gateway's local durable store of received originals: Part 10 files under
``<data_dir>/instances/<StudyInstanceUID>/<SOPInstanceUID>.<sha256[:16]>.dcm`` (the
``gw_instance.file`` column holds the path relative to ``<data_dir>``).

Durability (the gateway acknowledges an instance only once it is here and indexed): a file
is written as a temporary file *in its final folder*, fsync'd, renamed to its name, and the
folder fsync'd (a new folder's own name too, through its parent) — after a crash the name
either points at the complete bytes or does not exist. The index row is committed only
after that (:mod:`aifi.gateway.ingest.pipeline`); a file under its name is therefore always
complete, and a file without a row is indexed again at start-up (:meth:`Ingest.recover`).

The name carries a prefix of the data set's SHA-256, so a rename can never put other bytes
under the name of an instance already stored.

STOW-RS stages a request's parts in :meth:`InstanceStore.staging_dir` (same file system),
from where :meth:`InstanceStore.adopt` renames them into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
FOLDER = "instances"
"""The received originals' folder in the gateway's data folder."""
_STAGING = ".staging"
_TEMP_SUFFIX = ".tmp"


def safe_uid(uid: str) -> str:
    """UIDs become path segments: digits and dots only, 1-64 characters (PS3.5 §9.1)."""
    if not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
        raise ValueError(f"not a valid UID: {uid[:80]!r}")
    return uid


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InstanceStore:
    """Received originals in a folder (see the module docstring)."""

    def __init__(self, data_dir: Path, *, fsync: bool = True) -> None:
        self.data_dir = data_dir
        self.root = data_dir / FOLDER
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / _STAGING
        self._staging.mkdir(exist_ok=True)

    def relpath(self, study_instance_uid: str, sop_instance_uid: str, sha256: str) -> str:
        """Where an instance lives, relative to the gateway's data folder (the form of
        ``gw_instance.file``): ``instances/<study>/<sop>.<sha256[:16]>.dcm``."""
        study, sop = safe_uid(study_instance_uid), safe_uid(sop_instance_uid)
        return f"{FOLDER}/{study}/{sop}.{sha256[:16]}.dcm"

    def path(self, relpath: str) -> Path:
        return self.data_dir / relpath

    def staging_dir(self) -> Path:
        """A folder on the store's file system for STOW-RS parts being received."""
        return self._staging

    # -- writing ------------------------------------------------------------------------

    def _temp_path(self, study_instance_uid: str, sop_instance_uid: str) -> Path:
        """A new temporary file's path in the instance's final folder (made, and made
        durable, when new). Raises ValueError for a UID that cannot be a path segment."""
        study, sop = safe_uid(study_instance_uid), safe_uid(sop_instance_uid)
        folder = self.root / study
        self._make_folder(folder)
        return folder / f".{sop}.{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}"

    def write_temp(
        self, study_instance_uid: str, sop_instance_uid: str, pieces: Sequence[bytes | memoryview]
    ) -> Path:
        """Write ``pieces`` to a new temporary file in the instance's final folder and
        fsync it (not yet visible under its name: :meth:`publish`, once the name — which
        needs the data set's digest — is known). Raises ValueError for a UID that cannot
        be a path segment."""
        temp = self._temp_path(study_instance_uid, sop_instance_uid)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            views = [memoryview(piece) for piece in pieces if len(piece)]
            while views:
                written = os.writev(fd, views)
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return temp

    def adopt(self, staged: Path, study_instance_uid: str, sop_instance_uid: str) -> Path:
        """Move a STOW-RS staging file, fsync'd, into the instance's final folder as a
        temporary file (then :meth:`publish`)."""
        temp = self._temp_path(study_instance_uid, sop_instance_uid)
        if self.fsync:
            _fsync_path(staged)
        os.replace(staged, temp)
        return temp

    def publish(self, temp: Path, relpath: str) -> None:
        """Rename the fsync'd temporary file to its name and fsync the folder: from now on
        the file survives a crash."""
        target = self.data_dir / relpath
        os.replace(temp, target)
        if self.fsync:
            _fsync_path(target.parent)

    def _make_folder(self, folder: Path) -> None:
        if folder.is_dir():
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.fsync:  # the new folder's name must be durable too
            _fsync_path(folder.parent)

    def remove(self, relpath: str) -> None:
        """Delete a stored file (purge); its study folder goes when it is empty."""
        target = self.data_dir / relpath
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (or gone already)
            target.parent.rmdir()

    # -- start-up -----------------------------------------------------------------------

    def sweep_temporary(self) -> int:
        """Remove what a crash or an aborted transfer left unfinished: temporary files and
        STOW-RS staging files (never acknowledged). Returns the number removed."""
        removed = 0
        for path in self._staging.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        for folder in self.root.iterdir():
            if folder.name == _STAGING or not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX):
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.warning("removed %d files an interrupted transfer left behind", removed)
        return removed

    def stored_files(self) -> Iterator[str]:
        """Every stored file (complete by construction: only fsync'd files are renamed to
        their name), as its ``gw_instance.file`` path."""
        for folder in self.root.iterdir():
            if folder.name == _STAGING or not folder.is_dir():
                continue
            for path in folder.iterdir():
                if not path.name.startswith("."):
                    yield f"{FOLDER}/{folder.name}/{path.name}"
