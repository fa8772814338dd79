"""A server killed (SIGKILL) in the middle of a STOW-RS upload leaves a consistent store.

ARCHITECTURE.md data rules: a crash never leaves an indexed instance without its file, and
no half-written file is visible. The test runs ``aifi serve`` in a subprocess on the
embedded default (SQLite), streams a multi-instance upload slowly, kills the server at
chosen points of the upload, restarts it on the same data folder and checks the folder and
the index directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aifi.hub.serve import serve_subprocess
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.wait import wait_until

BOUNDARY = "aifi-crash-boundary"


def indexed_count(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "aifi.db", timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM instance").fetchone()[0])


def upload_and_kill(
    url: str,
    process: subprocess.Popen[bytes],
    parts: list[bytes],
    *,
    kill_after: int,
    data_dir: Path,
    wait_for_indexed: int,
) -> None:
    """Stream the parts slowly; SIGKILL the server once ``kill_after`` parts were sent and
    at least ``wait_for_indexed`` instances are in the index."""

    def body() -> Iterator[bytes]:
        for index, part in enumerate(parts):
            if index == kill_after:
                wait_until(
                    lambda: indexed_count(data_dir) >= wait_for_indexed,
                    30,
                    f"the server to store {wait_for_indexed} instances",
                )
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
            yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            # Each part in two pieces, so that the kill can also fall inside a part. The
            # pause between them is the slow upload this test is about (the halves are then
            # likely to reach the server as separate reads); it waits for nothing.
            yield part[: len(part) // 2]
            time.sleep(0.002)
            yield part[len(part) // 2 :] + b"\r\n"
        yield f"--{BOUNDARY}--\r\n".encode()

    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    with pytest.raises(httpx.TransportError):
        httpx.post(
            url + "/dicomweb/studies",
            content=body(),
            headers={"Content-Type": content_type},
            timeout=30,
        )


def check_consistency(data_dir: Path) -> set[str]:
    """Every indexed instance has its complete file; no partial file anywhere."""
    dicom = data_dir / "dicom"
    staging = dicom / ".staging"
    # Each live process holds its own (empty) staging folder; no staged file may survive.
    leftovers = [f for f in staging.rglob("*") if f.is_file()] if staging.exists() else []
    assert leftovers == [], f"staging not swept: {leftovers}"
    with contextlib.closing(sqlite3.connect(data_dir / "aifi.db")) as db:
        rows = db.execute("SELECT sop_instance_uid, path, sha256, size FROM instance").fetchall()
    indexed = set()
    for sop_uid, relpath, sha256, size in rows:
        path = dicom / relpath
        assert path.is_file(), f"indexed instance {sop_uid} has no file"
        data = path.read_bytes()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == sha256
        indexed.add(relpath)
    # Files that are not indexed (renamed, then killed before the commit) may exist, but
    # they must be complete: their names carry the first 16 hex digits of their SHA-256.
    for path in dicom.rglob("*"):
        if path.is_file() and path.parent != staging:
            digest = path.name.rsplit(".", 2)[1]
            assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest), path
    return {row[0] for row in rows}


@pytest.mark.slow
def test_kill_during_upload_leaves_a_consistent_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    study = make_study(n_series=2, per_series=80, rows=8, columns=8)  # 160 parts > 2 batches
    parts = [to_bytes(ds) for ds in study]
    all_uids = {str(ds.SOPInstanceUID) for ds in study}

    # Kill once early (inside the first batch: nothing stored yet) and once after two
    # batches (2 x 64 parts) were stored, while the third is being received; each restart
    # sweeps staging and must find a consistent store.
    with serve_subprocess(data_dir, log) as (process, url):
        upload_and_kill(url, process, parts, kill_after=20, data_dir=data_dir, wait_for_indexed=0)
    with serve_subprocess(data_dir, log) as (process, url):
        stored = check_consistency(data_dir)
        assert stored <= all_uids and len(stored) <= 20
        upload_and_kill(
            url, process, parts, kill_after=140, data_dir=data_dir, wait_for_indexed=128
        )
    with serve_subprocess(data_dir, log) as (_, url):
        stored = check_consistency(data_dir)
        assert stored <= all_uids and 128 <= len(stored) <= 140
        # Whatever was stored before the kills, the client's retry completes the study.
        body, content_type = multipart_related(parts, boundary=BOUNDARY)
        response = httpx.post(
            url + "/dicomweb/studies",
            content=body,
            headers={"Content-Type": content_type},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert check_consistency(data_dir) == all_uids
