"""The store's folder: where a received instance's file goes, and how it gets there durably.

Layout: ``<root>/<tenant>/<study>/<series>/<sop>.<sha256[:16]>.dcm``. UIDs become path
segments, so anything but digits and dots is refused (no traversal); the content's SHA-256
prefix means a rename can never replace the stored bytes of a *different* instance with the
same SOP Instance UID.

A received instance is first written to a staging file in the same file system;
:meth:`FileArea.move` fsyncs the staged files (in parallel: the file system merges them into
few journal commits), renames them to their final names and fsyncs the folders (and the
folders holding new ones). Each process has its own staging folder under ``.staging/``, held
with an exclusive ``flock`` for the life of the process; :meth:`FileArea.sweep_staging`
removes only folders no live process holds, so several workers can share one data folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aifi.dicomweb.attributes import json_text
from aifi.dicomweb.store import IncomingInstance

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FSYNC_THREADS = 8


def safe_uid(uid: str) -> str:
    """UIDs become path segments: refuse anything but digits and dots (no traversal)."""
    if not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
        raise ValueError(f"not a valid UID: {uid!r}")
    return uid


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the folders whose entries changed (to fsync:
    a new folder's name is durable once the folder holding it is)."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return [path.parent for path in missing]


@dataclass(slots=True)
class Placed:
    """An incoming instance and its place: its file's path under the root (``relpath``)
    and its UIDs; ``moved`` once its file is there."""

    incoming: IncomingInstance
    relpath: str
    sop: str
    study: str
    series: str
    moved: bool = False

    @classmethod
    def of(cls, tenant: str, item: IncomingInstance) -> Placed:
        """Where ``item`` goes (ValueError for a UID that cannot be a path segment)."""
        study, series, sop = (
            json_text(item.metadata, keyword) or ""
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        )
        sop = safe_uid(sop)
        rel = "/".join((tenant, safe_uid(study), safe_uid(series), f"{sop}.{item.sha256[:16]}.dcm"))
        return cls(item, rel, sop, study, series)


class FileArea:
    """The files under ``root`` and this process's staging folder (see the module
    docstring). ``fsync``: make moves durable (off only for benchmarks and tests)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._staging_root = root / ".staging"
        self._staging_root.mkdir(parents=True, exist_ok=True)
        self.staging = self._staging_root / f"p{os.getpid()}-{uuid.uuid4().hex[:12]}"
        """This process's staging folder (locked while the process lives)."""
        self.staging.mkdir()
        self._staging_lock = os.open(self.staging, os.O_RDONLY)
        fcntl.flock(self._staging_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fsync_pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="aifi-fsync")

    def close(self) -> None:
        self._fsync_pool.shutdown(wait=True)
        for path in self.staging.iterdir():
            path.unlink(missing_ok=True)
        os.close(self._staging_lock)
        self.staging.rmdir()

    def sweep_staging(self) -> int:
        """Remove staging folders (and files) that no live process holds: what a crash or
        an aborted upload left behind. Returns the number of files removed."""
        removed = 0
        for folder in self._staging_root.iterdir():
            if folder == self.staging:
                continue
            if not folder.is_dir():
                folder.unlink(missing_ok=True)
                removed += 1
                continue
            fd = os.open(folder, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another live process's staging folder
                for path in folder.iterdir():
                    path.unlink(missing_ok=True)
                    removed += 1
                folder.rmdir()
            finally:
                os.close(fd)
        return removed

    def move(self, todo: list[Placed]) -> None:
        """fsync (in parallel) and rename the staged files into place, then fsync their
        folders (and, for folders just created, the folders holding them); a file moved
        by an earlier attempt is already there."""
        todo = [p for p in todo if not p.moved]
        if self.fsync:
            self._fsync_all([p.incoming.staged_path for p in todo])
        folders: set[Path] = set()
        for p in todo:
            target = self.root / p.relpath
            if target.parent not in folders:
                folders.add(target.parent)
                folders.update(_make_folders(target.parent))
            os.replace(p.incoming.staged_path, target)
            p.moved = True
        if self.fsync:
            self._fsync_all(list(folders))

    def remove(self, placed: Placed) -> None:
        """Remove a moved file again (no index row points at it)."""
        (self.root / placed.relpath).unlink(missing_ok=True)
        placed.moved = False

    def _fsync_all(self, paths: list[Path]) -> None:
        """fsync in parallel; one path right here (a thread hop costs more than that)."""
        if len(paths) == 1:
            _fsync_path(paths[0])
        elif paths:
            list(self._fsync_pool.map(_fsync_path, paths))
