"""One STOW-RS request while its body streams in (PS3.18 §10.5): the multipart body read
part by part into staging (:mod:`aifi.dicomweb.stow_staging`), parts finished and checked in
worker threads while the next ones arrive, checked instances batched to the store
(:mod:`aifi.dicomweb.stow_writer`), and nothing left in staging on any exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from starlette.requests import ClientDisconnect

from aifi.dicomweb.instance_checks import PART_NOT_DICOM, PartOutcome
from aifi.dicomweb.media import DICOM, parse_media_type
from aifi.dicomweb.multipart_reader import MultipartError, MultipartReader, PartData, PartStart
from aifi.dicomweb.store import DicomStore, IncomingInstance
from aifi.dicomweb.stow_staging import Chunk, StagedPart, in_thread, resource_failure
from aifi.dicomweb.stow_writer import BATCH_BYTES, BATCH_SIZE, apply_outcome, writer_of
from aifi.errors import InvalidRequest

FLUSH_BYTES = 1024 * 1024
"""A part's received bytes are written to its staging file in pieces of about this size."""
MAX_FINISHING = 4
"""Parts being written, fsync'd and checked in worker threads while the next arrive."""

# -- one request ------------------------------------------------------------------------


_Examined = tuple[PartOutcome, IncomingInstance | None]


@dataclass(slots=True)
class Upload:
    """The state of one STOW-RS request while its body streams in.

    Pipeline: the event loop parses the body and hands each part's bytes to worker
    threads (write + hash, then fsync + read + check); up to :data:`MAX_FINISHING` parts
    are finished while the next ones arrive, and one batch is being stored meanwhile.
    Outcomes keep the order of the parts."""

    store: DicomStore
    tenant: str
    expected_study: str | None
    fsync: bool = True
    outcomes: list[PartOutcome] = field(default_factory=list)
    part: StagedPart | None = None
    finishing: deque[asyncio.Task[_Examined]] = field(default_factory=deque)
    batch: list[tuple[PartOutcome, IncomingInstance]] = field(default_factory=list)
    batch_bytes: int = 0
    batch_uids: set[str] = field(default_factory=set)
    storing: asyncio.Task[None] | None = None
    staged: set[Path] = field(default_factory=set)
    """Staging files this request still owns (removed on any exit)."""

    def start(self, event: PartStart) -> None:
        part = StagedPart(self.store.staging_dir(), event.index)
        self.part = part
        content_type = event.headers.get("content-type")
        if content_type:
            try:
                mime = parse_media_type(content_type).mime
            except InvalidRequest:
                mime = content_type
            if mime != DICOM:
                part.failure = PartOutcome(event.index).fail(
                    PART_NOT_DICOM, f"part Content-Type {content_type!r} is not {DICOM}"
                )
                return
        self.staged.add(part.path)

    async def data(self, data: Chunk) -> None:
        part = self.part
        if part is None or part.failure is not None:
            return
        part.chunks.append(data)
        part.pending += len(data)
        if part.pending >= FLUSH_BYTES:
            # Double buffering: the previous piece must be on its way to disk first.
            if part.writing is not None:
                writing, part.writing = part.writing, None
                try:
                    await writing
                except OSError as exc:
                    part.discard()
                    part.failure = resource_failure(part.index, exc)
                    return
            part.writing = asyncio.create_task(in_thread(part.write, part.take()))

    async def end(self) -> None:
        part, self.part = self.part, None
        assert part is not None
        self.finishing.append(asyncio.create_task(self._finish(part, part.take())))
        while len(self.finishing) > MAX_FINISHING or (self.finishing and self.finishing[0].done()):
            await self._collect()

    async def _finish(self, part: StagedPart, chunks: list[Chunk]) -> _Examined:
        examined: _Examined
        if part.failure is not None:
            examined = part.failure, None
        else:
            try:
                if part.writing is not None:
                    await part.writing
                examined = await in_thread(part.finish, chunks, self.expected_study, self.fsync)
            except OSError as exc:
                examined = resource_failure(part.index, exc), None
        if examined[1] is None:  # nothing to store: the staged file goes now
            part.discard()
            self.staged.discard(part.path)
        return examined

    async def _collect(self) -> None:
        """Take the oldest finished part: record its outcome, batch its instance."""
        outcome, instance = await self.finishing.popleft()
        self.outcomes.append(outcome)
        if instance is None:
            return
        if outcome.sop_instance_uid in self.batch_uids:
            # The same SOP Instance twice in one batch: store the first one first, so
            # that the second meets it as stored (identical → success, else 0111).
            await self.flush()
        self.batch.append((outcome, instance))
        self.batch_uids.add(outcome.sop_instance_uid or "")
        self.batch_bytes += instance.size
        if len(self.batch) >= BATCH_SIZE or self.batch_bytes >= BATCH_BYTES:
            await self.flush()

    async def complete(self) -> None:
        """Finish every received part and store every checked instance."""
        while self.finishing:
            await self._collect()
        await self.flush()
        await self.wait()

    async def flush(self) -> None:
        """Hand the batch to the store; the previous batch must be done first (order)."""
        await self.wait()
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.batch_uids = set()
        self.storing = asyncio.create_task(self._store(batch))

    async def _store(self, batch: list[tuple[PartOutcome, IncomingInstance]]) -> None:
        instances = [instance for _, instance in batch]
        for instance in instances:  # the writer owns (and always consumes) them now
            self.staged.discard(instance.staged_path)
        results = await writer_of(self.store).put(self.tenant, instances)
        for (outcome, _), result in zip(batch, results, strict=True):
            apply_outcome(outcome, result)

    async def wait(self) -> None:
        if self.storing is not None:
            task, self.storing = self.storing, None
            await task

    async def abandon_part(self) -> None:
        """Drop the part being received (the body broke off inside it)."""
        part, self.part = self.part, None
        if part is None:
            return
        if part.writing is not None:
            with contextlib.suppress(OSError):
                await part.writing  # never close a file a worker thread writes to
        part.discard()
        self.staged.discard(part.path)

    def cleanup(self) -> None:
        """Remove every staging file this request still owns (never a stored file).

        Normally all work is done by now. After a cancellation, work still running in a
        worker thread removes its file when it is done."""
        part, self.part = self.part, None
        if part is not None:
            if part.writing is not None and not part.writing.done():
                part.writing.add_done_callback(functools.partial(_discard, part))
            else:
                part.discard()
        for task in self.finishing:
            task.add_done_callback(functools.partial(_unlink_all, set(self.staged)))
        for path in self.staged:
            path.unlink(missing_ok=True)
        self.staged.clear()


def _discard(part: StagedPart, _task: object) -> None:
    part.discard()


def _unlink_all(paths: set[Path], _task: object) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def receive_body(request: Request, upload: Upload, reader: MultipartReader) -> str | None:
    """Stream the body through the reader into staging; None, or why it broke off."""
    broken: str | None = None
    try:
        async for chunk in request.stream():
            for event in reader.feed(chunk):
                if isinstance(event, PartData):
                    await upload.data(event.data)
                elif isinstance(event, PartStart):
                    upload.start(event)
                else:
                    await upload.end()
        reader.finish()
    except MultipartError as exc:
        broken = exc.reason
    except ClientDisconnect:
        broken = f"the client disconnected after {reader.bytes_fed} bytes"
    await upload.abandon_part()
    await upload.complete()  # complete parts are stored even when the body broke off
    return broken
