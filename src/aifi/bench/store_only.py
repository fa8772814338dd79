"""The STOW-RS ceiling for a Python server (``aifi bench dicomweb``): an ASGI app that
does the least any server must do to accept a request's instances durably, and nothing
else, run on uvicorn exactly as ``aifi serve`` runs (httptools, uvloop, one process).

Each ``POST`` body is received whole, written to a new file in a worker thread, fsync'd,
renamed into place, and answered ``200`` with an empty DICOM JSON object. No multipart
parsing, no DICOM parsing or checks, no index, no authentication, no audit: whatever the
hub does on top of this is its own cost. What this server reaches on a machine is
therefore the most a Python hub on uvicorn can reach there with an acknowledged instance
on disk (as the hub's, and Orthanc's, storage does by default), and the benchmark prints
where a throughput target lies against it: above it, no amount of tuning of the hub's own
work can meet the target on that machine.

Run as ``python -m uvicorn aifi.bench.store_only:app`` with
``AIFI_BENCH_STORE_DIR`` naming the folder; :func:`store_only_process` does that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAME = "python-store-only"
"""Target name of its rows in the benchmark's results."""

_FOLDER = Path(os.environ.get("AIFI_BENCH_STORE_DIR", "."))
_WORKERS = ThreadPoolExecutor(8, thread_name_prefix="store-only")


def _store(chunks: list[bytes]) -> None:
    path = _FOLDER / uuid.uuid4().hex
    staged = path.with_suffix(".part")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staged, path)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _FOLDER.mkdir(parents=True, exist_ok=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["method"] == "POST":
        await asyncio.get_running_loop().run_in_executor(_WORKERS, _store, chunks)
    headers = [(b"content-type", b"application/dicom+json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


@contextmanager
def store_only_process(folder: Path, port: int) -> Iterator[tuple[int, str]]:
    """The store-only server on ``port`` (loopback), storing into ``folder``: (pid, URL)."""
    from aifi.hub.serve import wait_for_port  # here: the server itself needs none of it

    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{__name__}:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "AIFI_BENCH_STORE_DIR": str(folder)}
    with open(folder.parent / "store-only.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        if not wait_for_port(port, process, 30):
            raise RuntimeError("the store-only server did not start")
        yield process.pid, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
