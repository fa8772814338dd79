"""STOW-RS staging (PS3.18 §10.5): the worker threads of the blocking work, and one part's
staging file, written and hashed (SHA-256) in pieces as the part arrives, fsync'd, read and
checked (:func:`~aifi.dicomweb.instance_checks.examine_part`). A part with File Meta
Information but no PS3.10 preamble gets one (:func:`missing_preamble`). The request that
drives it is :mod:`aifi.dicomweb.stow_upload`; the transaction, :mod:`aifi.dicomweb.stow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aifi.dicomweb.instance_checks import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    PartOutcome,
    examine_part,
)
from aifi.dicomweb.store import IncomingInstance

log = logging.getLogger("aifi.dicomweb.stow")
_T = TypeVar("_T")

EARLY_FSYNC_BYTES = 256 * 1024
"""Parts at least this large are fsync'd while finishing, in parallel (see ``finish``)."""


# -- worker threads -------------------------------------------------------------------

_WORKERS = ThreadPoolExecutor(16, thread_name_prefix="aifi-stow")
"""Threads for the blocking work of STOW-RS (file writes, fsync, parsing, store calls);
started on first use."""


async def in_thread(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` in a worker thread. As with Starlette's ``run_in_threadpool``,
    the caller is not released before the work is done, even when cancelled (the work
    owns files the caller cleans up), but without anyio's per-call machinery (cancel
    scopes, capacity limiter), which cost more than a small job on the hot path."""
    future = asyncio.get_running_loop().run_in_executor(
        _WORKERS, functools.partial(function, *args)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        future.exception()  # retrieved: the caller is gone, its cleanup handles the rest
        raise


# -- one part: staging ----------------------------------------------------------------


Chunk = bytes | memoryview
"""Received body bytes: the multipart reader passes views of the received chunks."""


class StagedPart:
    """A part's staging file: written in pieces, hashed as written (in worker threads)."""

    __slots__ = ("chunks", "failure", "fd", "index", "path", "pending", "sha", "size", "writing")

    def __init__(self, staging: Path, index: int) -> None:
        self.index = index
        self.path = staging / f"stow-{uuid.uuid4().hex}.part"
        self.fd: int | None = None
        self.sha = hashlib.sha256()
        self.size = 0
        self.chunks: list[Chunk] = []
        self.pending = 0
        self.failure: PartOutcome | None = None
        self.writing: asyncio.Task[None] | None = None

    def take(self) -> list[Chunk]:
        chunks, self.chunks, self.pending = self.chunks, [], 0
        return chunks

    def write(self, chunks: Sequence[Chunk]) -> None:
        """Append to the file (runs in a worker thread)."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            chunks = [*missing_preamble(chunks), *chunks]
        for chunk in chunks:
            self.sha.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]
            self.size += len(chunk)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def finish(
        self, chunks: Sequence[Chunk], expected_study: str | None, fsync: bool
    ) -> tuple[PartOutcome, IncomingInstance | None]:
        """Write the rest, fsync, close, read and check (runs in a worker thread).

        The fsync here is not for atomicity (``put`` fsyncs before renaming) but for speed:
        parts are finished in parallel, so the data of large parts reaches the disk
        concurrently instead of one file after the other inside ``put`` (small parts
        are cheaper to flush once, there)."""
        try:
            self.write(chunks)
            if fsync and self.fd is not None and self.size >= EARLY_FSYNC_BYTES:
                os.fsync(self.fd)
        finally:
            self.close()
        return examine_part(self.path, self.size, self.sha.hexdigest(), self.index, expected_study)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


_PREAMBLE = b"\x00" * 128 + b"DICM"
_META_START_VRS = frozenset({b"UL", b"OB", b"UI", b"SH", b"AE"})


def missing_preamble(chunks: Sequence[Chunk]) -> list[Chunk]:
    """``[preamble + "DICM"]`` when a part starts with File Meta Information but without
    the 128-byte preamble and prefix, else ``[]``.

    pydicom's ``dcmwrite`` leaves them out for data sets built in memory, so that is what
    dicomweb-client (and highdicom objects sent with it) put in STOW-RS parts. Tolerant
    reading: such a part is stored as the PS3.10 file it was meant to be (PS3.10 §7.1),
    the received bytes after the added 132; nothing in the data set changes."""
    head = b""
    for chunk in chunks:
        head += chunk[: len(_PREAMBLE) - len(head)]
        if len(head) >= len(_PREAMBLE):
            break
    if head[128:132] == b"DICM" or head[:2] != b"\x02\x00" or head[4:6] not in _META_START_VRS:
        return []
    return [_PREAMBLE]


def resource_failure(index: int, exc: OSError) -> PartOutcome:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PartOutcome(index).fail(OUT_OF_RESOURCES, "out of storage space")
    log.error("STOW-RS: cannot stage part %d", index, exc_info=exc)
    return PartOutcome(index).fail(PROCESSING_FAILURE, "the part could not be staged")
