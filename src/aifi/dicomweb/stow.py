"""STOW-RS, the Studies Store transaction (DICOM PS3.18 §10.5).

``POST {service}/studies`` and ``POST {service}/studies/{StudyInstanceUID}`` with
``Content-Type: multipart/related; type="application/dicom"; boundary=…`` (parameters
quoted or not), one PS3.10 file per part. The body is streamed: each part goes through
:class:`~aifi.dicomweb.multipart_reader.MultipartReader` into its own staging file (hashed
with SHA-256 while it is written, off the event loop), its header is read with
``dcmread(defer_size=1024)`` (Pixel Data is never loaded), checked, and the checked
instances are handed to :meth:`DicomStore.put` in batches (:data:`BATCH_SIZE` parts or
:data:`BATCH_BYTES`), so memory stays bounded whatever the request size.

Request media types (PS3.18 §10.5.1.1): only the PS3.10 form. ``multipart/related`` with
``type="application/dicom+json"`` or ``+xml`` (metadata + bulk data) gets 415 with a
Warning saying so; any other media type 415; a missing or invalid ``boundary`` 400
(RFC 2046 §5.1.1 makes it mandatory); a ``Content-Encoding`` other than identity 415.

Response (PS3.18 §10.5.3, Annex I Store Instances Response Module) in
``application/dicom+json`` by default, ``application/dicom+xml`` (PS3.19 Native DICOM Model)
when the Accept header prefers it, 406 when it accepts neither: Retrieve URL (0008,1190) of
the study (empty — Type 2 — when the stored instances span several studies); Referenced
SOP Sequence (0008,1199) with Referenced SOP Class/Instance UID, the instance's Retrieve
URL and, where due, Warning Reason (0008,1196); Failed SOP Sequence (0008,1198) with
Failure Reason (0008,1197) for parts whose SOP Class and Instance UID could be read;
Other Failures Sequence (0008,119A) with a Failure Reason for parts that cannot be tied
to a SOP Instance (not DICOM, no UIDs). Every failure is also explained in plain words in
``Warning: 299 {service}: …`` headers (PS3.18 §8.7.3), since the module has no text field.

Status codes (PS3.18 Table 10.5.3-1):

* 200 — every instance was stored (an identical re-send counts as stored: PS3.4 B.4.1
  lets an SCP treat a duplicate it already has as a success).
* 202 — some were stored, and others failed or carry warnings.
* 409 — none could be stored although the body was well-formed (all parts failed, e.g.
  Study Instance UID mismatch, unsupported SOP Class or transfer syntax, conflicts).
* 400 — the body is not a well-formed multipart body (or has no parts) and nothing was
  stored; also a path Study Instance UID that is not a UID.
* 415 — the media type is not one this origin server accepts.

Failure Reason values (PS3.18 Table I.2-2, PS3.7 Annex C for the general ones;
implementation-specific ones, allowed by I.2.2, are in the Cxxx "cannot understand" range
and listed in the conformance statement):

======  ======================================================================
A700    Refused: out of resources — no space left while staging or storing.
A900    Error: data set does not match SOP Class — a Type 1 attribute that identifies
        the instance (SOP Class/Instance, Study/Series Instance UID) is missing.
C000    Error: cannot understand — the part is not a parseable PS3.10 file (garbage,
        a truncated data set, an element pydicom cannot decode).
C001    (specific) not a PS3.10 file: no preamble/``DICM``/File Meta Information, e.g. a
        bare data set; PS3.18 §8.6.1.2 requires the PS3.10 format for application/dicom.
C002    (specific) File Meta Information contradicts the data set (Media Storage SOP
        Class/Instance UID differ from SOP Class/Instance UID; PS3.10 §7.1).
C003    (specific) a UID attribute has a value that is not a UID (PS3.5 §9.1).
C004    (specific) the part's own Content-Type is not application/dicom.
C005    (specific) the multipart body broke off or became malformed after the parts
        listed (Other Failures Sequence; only when earlier parts were stored).
C122    Referenced Transfer Syntax not supported — unknown, private or a transfer
        syntax that is not a file encoding (RFC 2557, XML, SMPTE ST 2110).
C409    (specific) Study Instance UID differs from the study in the request path
        (PS3.18 §10.5.1: all instances must belong to the target study).
0110    Processing failure — the store failed for another reason (logged).
0111    Duplicate SOP Instance (PS3.7 C.5, 0111H) — a *different* instance with this SOP
        Instance UID is stored; the stored one is kept untouched (repository policy).
0122    Referenced SOP Class not supported — a SOP Class the data dictionary knows and
        that is not a storage SOP Class (e.g. Verification). Private SOP Classes pass.
A900    also: an AI result refused by the hub's gate (IHE AIR, ``aifi.hub.results.gate``) because
        it does not conform to the result object's IOD or template (algorithm
        identification, TID 1500 rows, SEG segment algorithm, ...).
C410    (specific) an AI result refused by the hub's gate because it does not fit its
        workitem (IHE AIW-I): another patient or study than the inputs, references to
        instances that are not inputs, or no workitem IN PROGRESS for the study.
C411    (specific) Patient Identity Removed (0012,0062) is not YES and the caller's
        tenant accepts only de-identified instances (``aifi.hub.store.deidentified``).
======  ======================================================================

Warning Reason values (PS3.18 Table I.2-1: B000 coercion, B006 elements discarded, B007
does not match SOP Class) are never needed today: the hub stores the received bytes
unchanged, so Specific Character Set and every other element are preserved as sent. (A
part with File Meta Information but without the 128-byte preamble and ``DICM``, as
pydicom-based clients send in-memory data sets, gets them added: see
:func:`missing_preamble`.)

Partial failure and atomicity (ARCHITECTURE.md, data rules): the unit of atomicity is the
instance, as in C-STORE, not the request. A part counts only when it is complete (the next
delimiter was read) and checked. When the body turns out malformed or truncated — or the
client disconnects — the part being received is dropped and every *complete* part is still
checked and stored, so the result does not depend on batch boundaries; nothing of the
request is left in staging either way. If nothing could be stored the answer is 400; if
something was, 202 with the stored instances listed and a C005 entry in Other Failures.
Already stored data is never modified: a conflicting re-send is refused (0111), and a
failed batch in :meth:`DicomStore.put` is retried instance by instance (staged files are
hard-linked for each attempt, because ``put`` consumes what it is given) so that one bad
instance cannot fail its 63 neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from aifi.dicomweb.deps import ConfigDep, StoreDep
from aifi.dicomweb.dicomxml import json_to_native_xml
from aifi.dicomweb.errors import warning_header
from aifi.dicomweb.instance_checks import (
    BODY_BROKEN,
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PART_NOT_DICOM,
    PROCESSING_FAILURE,
    PartOutcome,
    examine_part,
    is_valid_uid,
)
from aifi.dicomweb.media import parse_accept, parse_media_type
from aifi.dicomweb.multipart_reader import (
    MultipartError,
    MultipartReader,
    PartData,
    PartStart,
    validate_boundary,
)
from aifi.dicomweb.store import DicomStore, IncomingInstance, StoreOutcome, StoreStatus
from aifi.errors import InvalidRequest, NotAcceptable, UnsupportedMediaType
from aifi.principal import PrincipalDep

log = logging.getLogger(__name__)
_T = TypeVar("_T")

router = APIRouter()

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"

BATCH_SIZE = 64
"""Checked instances handed to one :meth:`DicomStore.put` (one transaction)."""
BATCH_BYTES = 256 * 1024 * 1024
"""…or fewer, once their files add up to this much."""
FLUSH_BYTES = 1024 * 1024
"""A part's received bytes are written to its staging file in pieces of about this size."""
MAX_FINISHING = 4
"""Parts being written, fsync'd and checked in worker threads while the next arrive."""
EARLY_FSYNC_BYTES = 256 * 1024
"""Parts at least this large are fsync'd while finishing, in parallel (see ``finish``)."""
# -- worker threads -------------------------------------------------------------------

_WORKERS = ThreadPoolExecutor(16, thread_name_prefix="aifi-stow")
"""Threads for the blocking work of STOW-RS (file writes, fsync, parsing, store calls);
started on first use."""


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
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


_Chunk = bytes | memoryview
"""Received body bytes: the multipart reader passes views of the received chunks."""


class _StagedPart:
    """A part's staging file: written in pieces, hashed as written (in worker threads)."""

    __slots__ = ("chunks", "failure", "fd", "index", "path", "pending", "sha", "size", "writing")

    def __init__(self, staging: Path, index: int) -> None:
        self.index = index
        self.path = staging / f"stow-{uuid.uuid4().hex}.part"
        self.fd: int | None = None
        self.sha = hashlib.sha256()
        self.size = 0
        self.chunks: list[_Chunk] = []
        self.pending = 0
        self.failure: PartOutcome | None = None
        self.writing: asyncio.Task[None] | None = None

    def take(self) -> list[_Chunk]:
        chunks, self.chunks, self.pending = self.chunks, [], 0
        return chunks

    def write(self, chunks: Sequence[_Chunk]) -> None:
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
        self, chunks: Sequence[_Chunk], expected_study: str | None, fsync: bool
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


def missing_preamble(chunks: Sequence[_Chunk]) -> list[_Chunk]:
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


def _resource_failure(index: int, exc: OSError) -> PartOutcome:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PartOutcome(index).fail(OUT_OF_RESOURCES, "out of storage space")
    log.error("STOW-RS: cannot stage part %d", index, exc_info=exc)
    return PartOutcome(index).fail(PROCESSING_FAILURE, "the part could not be staged")


# -- storing a batch --------------------------------------------------------------------


def _linked(instance: IncomingInstance, attempt: int) -> IncomingInstance:
    """A copy of ``instance`` whose staged file is a fresh hard link (``put`` consumes it)."""
    link = instance.staged_path.with_name(f"{instance.staged_path.name}.{attempt}")
    os.link(instance.staged_path, link)
    return IncomingInstance(
        staged_path=link,
        size=instance.size,
        sha256=instance.sha256,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        header=instance.header,
        metadata=instance.metadata,
    )


def put_isolating(
    store: DicomStore, tenant: str, instances: Sequence[IncomingInstance]
) -> list[StoreOutcome | Exception]:
    """``store.put`` the batch; if it fails, put each instance alone so that only the
    culprits fail. Consumes the staged files (runs in a worker thread)."""
    try:
        if len(instances) == 1:  # nothing to retry: no link needed
            try:
                return list(store.put(tenant, instances))
            except Exception as exc:
                return [exc]
        try:
            return list(store.put(tenant, [_linked(i, 0) for i in instances]))
        except Exception as exc:
            log.warning("STOW-RS: batch of %d failed (%s); storing one by one", len(instances), exc)
        results: list[StoreOutcome | Exception] = []
        for instance in instances:
            try:
                results.extend(store.put(tenant, [_linked(instance, 1)]))
            except Exception as exc:
                results.append(exc)
        return results
    finally:
        for instance in instances:
            instance.staged_path.unlink(missing_ok=True)


def _apply(outcome: PartOutcome, result: StoreOutcome | Exception) -> None:
    if isinstance(result, StoreOutcome):
        if result.status is StoreStatus.CONFLICT:
            outcome.fail(DUPLICATE_SOP_INSTANCE, result.reason or "duplicate SOP Instance UID")
        elif result.status is StoreStatus.REFUSED:
            outcome.fail(result.failure or CANNOT_UNDERSTAND, result.reason or "refused")
        else:
            outcome.stored = True
        return
    if isinstance(result, OSError) and result.errno in (errno.ENOSPC, errno.EDQUOT):
        outcome.fail(OUT_OF_RESOURCES, "out of storage space")
        return
    # no identifiers in logs at INFO and above (issue 6): the UID only at DEBUG
    log.error("STOW-RS: storing an instance failed", exc_info=result)
    log.debug("STOW-RS: the instance that failed is %s", outcome.sop_instance_uid)
    outcome.fail(PROCESSING_FAILURE, "the instance could not be stored")


# -- storing: group commit across requests -----------------------------------------------


@dataclass(slots=True)
class _PutRequest:
    tenant: str
    instances: Sequence[IncomingInstance]
    future: asyncio.Future[list[StoreOutcome | Exception]]


class StoreWriter:
    """Serialises the :meth:`DicomStore.put` calls of concurrent STOW-RS requests and
    merges the batches that are waiting into one call (group commit).

    One write transaction at a time suits the embedded SQLite (a single writer; queued
    writers would otherwise wait on its lock with sleeps), and merging amortises the
    commit's fsync over many small requests (a client sending one instance per request).
    A batch is never split; batches whose SOP Instance UIDs overlap go to separate calls,
    so that the later one meets the earlier one as stored. Instances handed over are
    stored even if their request is cancelled meanwhile (their parts were complete)."""

    def __init__(self, store: DicomStore, max_instances: int = 2 * BATCH_SIZE) -> None:
        self.store = store
        self.max_instances = max_instances
        self.loop = asyncio.get_running_loop()
        self._waiting: deque[_PutRequest] = deque()
        self._task: asyncio.Task[None] | None = None

    async def put(
        self, tenant: str, instances: Sequence[IncomingInstance]
    ) -> list[StoreOutcome | Exception]:
        request = _PutRequest(tenant, instances, self.loop.create_future())
        self._waiting.append(request)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await request.future

    def _next_group(self) -> list[_PutRequest]:
        group = [self._waiting.popleft()]
        uids = {str(i.header.SOPInstanceUID) for i in group[0].instances}
        size = len(group[0].instances)
        while self._waiting:
            candidate = self._waiting[0]
            candidate_uids = {str(i.header.SOPInstanceUID) for i in candidate.instances}
            if (
                candidate.tenant != group[0].tenant
                or size + len(candidate.instances) > self.max_instances
                or not uids.isdisjoint(candidate_uids)
            ):
                break
            group.append(self._waiting.popleft())
            uids |= candidate_uids
            size += len(candidate.instances)
        return group

    async def _run(self) -> None:
        while self._waiting:
            group = self._next_group()
            instances = [i for request in group for i in request.instances]
            try:
                results = await _in_thread(put_isolating, self.store, group[0].tenant, instances)
            except BaseException as exc:
                for request in (*group, *self._waiting):
                    if not request.future.done():
                        request.future.set_exception(RuntimeError(f"store writer stopped: {exc!r}"))
                self._waiting.clear()
                raise
            start = 0
            for request in group:
                end = start + len(request.instances)
                if not request.future.done():  # its request may have been cancelled
                    request.future.set_result(results[start:end])
                start = end


_writers: weakref.WeakKeyDictionary[DicomStore, StoreWriter] = weakref.WeakKeyDictionary()


def _writer(store: DicomStore) -> StoreWriter:
    """The writer of ``store`` on the running event loop."""
    try:
        writer = _writers.get(store)
    except TypeError:  # a store that cannot be weakly referenced: no sharing
        return StoreWriter(store)
    if writer is None or writer.loop is not asyncio.get_running_loop():
        writer = StoreWriter(store)
        _writers[store] = writer
    return writer


# -- one request ------------------------------------------------------------------------


_Examined = tuple[PartOutcome, IncomingInstance | None]


@dataclass(slots=True)
class _Upload:
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
    part: _StagedPart | None = None
    finishing: deque[asyncio.Task[_Examined]] = field(default_factory=deque)
    batch: list[tuple[PartOutcome, IncomingInstance]] = field(default_factory=list)
    batch_bytes: int = 0
    batch_uids: set[str] = field(default_factory=set)
    storing: asyncio.Task[None] | None = None
    staged: set[Path] = field(default_factory=set)
    """Staging files this request still owns (removed on any exit)."""

    def start(self, event: PartStart) -> None:
        part = _StagedPart(self.store.staging_dir(), event.index)
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

    async def data(self, data: _Chunk) -> None:
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
                    part.failure = _resource_failure(part.index, exc)
                    return
            part.writing = asyncio.create_task(_in_thread(part.write, part.take()))

    async def end(self) -> None:
        part, self.part = self.part, None
        assert part is not None
        self.finishing.append(asyncio.create_task(self._finish(part, part.take())))
        while len(self.finishing) > MAX_FINISHING or (self.finishing and self.finishing[0].done()):
            await self._collect()

    async def _finish(self, part: _StagedPart, chunks: list[_Chunk]) -> _Examined:
        examined: _Examined
        if part.failure is not None:
            examined = part.failure, None
        else:
            try:
                if part.writing is not None:
                    await part.writing
                examined = await _in_thread(part.finish, chunks, self.expected_study, self.fsync)
            except OSError as exc:
                examined = _resource_failure(part.index, exc), None
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
        results = await _writer(self.store).put(self.tenant, instances)
        for (outcome, _), result in zip(batch, results, strict=True):
            _apply(outcome, result)

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


def _discard(part: _StagedPart, _task: object) -> None:
    part.discard()


def _unlink_all(paths: set[Path], _task: object) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _receive(request: Request, upload: _Upload, reader: MultipartReader) -> str | None:
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


# -- request and response ---------------------------------------------------------------


def _boundary(request: Request) -> str:
    """Check the request's media type (PS3.18 §10.5.1.1); return the boundary."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported")
    header = request.headers.get("content-type")
    if not header:
        raise UnsupportedMediaType(
            'STOW-RS needs Content-Type: multipart/related; type="application/dicom"'
        )
    media_type = parse_media_type(header)
    if media_type.mime != "multipart/related":
        raise UnsupportedMediaType(
            f"Media type {media_type.mime} is not supported; STOW-RS accepts "
            'multipart/related; type="application/dicom"'
        )
    related = media_type.related_type
    if related != DICOM:
        if related in (DICOM_JSON, DICOM_XML):
            raise UnsupportedMediaType(
                f"multipart/related with type={related} (metadata and bulk data) is not "
                "supported; only application/dicom parts (PS3.10 files) are"
            )
        raise UnsupportedMediaType(
            f"multipart/related with type={related or '(missing)'} is not supported; "
            'the type parameter must be "application/dicom"'
        )
    boundary = media_type.params.get("boundary")
    if not boundary:
        raise InvalidRequest("The multipart/related Content-Type has no boundary parameter")
    return validate_boundary(boundary)


def _response_type(accept: str | None) -> str:
    for media_range in parse_accept(accept):
        if media_range.mime in ("application/json", DICOM_JSON):
            return DICOM_JSON
        if media_range.mime in ("application/xml", DICOM_XML) or (
            media_range.mime == "multipart/related" and media_range.related_type == DICOM_XML
        ):
            return DICOM_XML
        if media_range.matches(DICOM_JSON):
            return DICOM_JSON
    raise NotAcceptable(f"STOW-RS answers in {DICOM_JSON} or {DICOM_XML} only")


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _ur(value: str | None) -> dict[str, Any]:
    return {"vr": "UR", "Value": [value]} if value else {"vr": "UR"}


def _us(value: int) -> dict[str, Any]:
    return {"vr": "US", "Value": [value]}


def response_module(outcomes: Sequence[PartOutcome], service: str) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    studies: set[str] = set()
    for outcome in outcomes:
        if outcome.stored:
            assert outcome.sop_class_uid and outcome.sop_instance_uid
            study = outcome.study_instance_uid
            studies.add(study or "")
            item = {
                "00081150": _ui(outcome.sop_class_uid),
                "00081155": _ui(outcome.sop_instance_uid),
                "00081190": _ur(
                    f"{service}/studies/{study}/series/{outcome.series_instance_uid}"
                    f"/instances/{outcome.sop_instance_uid}"
                ),
            }
            if outcome.warning is not None:
                item["00081196"] = _us(outcome.warning)
            referenced.append(item)
        elif outcome.failure is not None:
            if outcome.referenceable:
                assert outcome.sop_class_uid and outcome.sop_instance_uid
                failed.append(
                    {
                        "00081150": _ui(outcome.sop_class_uid),
                        "00081155": _ui(outcome.sop_instance_uid),
                        "00081197": _us(outcome.failure),
                    }
                )
            else:
                other.append({"00081197": _us(outcome.failure)})
    study_url = f"{service}/studies/{next(iter(studies))}" if len(studies) == 1 else None
    module: dict[str, Any] = {"00081190": _ur(study_url)}
    if failed:
        module["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        module["00081199"] = {"vr": "SQ", "Value": referenced}
    if other:
        module["0008119A"] = {"vr": "SQ", "Value": other}
    return module


def response_status(outcomes: Sequence[PartOutcome]) -> int:
    """PS3.18 Table 10.5.3-1 for a well-formed request with at least one part."""
    stored = sum(1 for o in outcomes if o.stored)
    if stored == 0:
        return 409
    if stored < len(outcomes) or any(o.warning is not None for o in outcomes):
        return 202
    return 200


def _warnings(outcomes: Sequence[PartOutcome], service: str, limit: int = 10) -> list[str]:
    problems = [o for o in outcomes if o.failure is not None]
    texts = []
    for outcome in problems[:limit]:
        who = f" ({outcome.sop_instance_uid})" if outcome.sop_instance_uid else ""
        texts.append(f"part {outcome.index}{who}: {outcome.reason} [{outcome.failure:04X}]")
    if len(problems) > limit:
        texts.append(f"{len(problems) - limit} more parts failed")
    return [warning_header(service, text) for text in texts]


def _render(module: dict[str, Any], media_type: str) -> bytes:
    if media_type == DICOM_XML:
        return json_to_native_xml(module)
    return json.dumps(module, separators=(",", ":")).encode()


async def store_instances(
    request: Request,
    store: DicomStore,
    service: str,
    tenant: str,
    study: str | None,
) -> Response:
    if study is not None and not is_valid_uid(study):
        raise InvalidRequest(f"{study[:80]!r} in the path is not a Study Instance UID")
    boundary = _boundary(request)
    media_type = _response_type(request.headers.get("accept"))
    upload = _Upload(store, tenant, study, fsync=bool(getattr(store, "fsync", True)))
    try:
        broken = await _receive(request, upload, MultipartReader(boundary))
    finally:
        upload.cleanup()
    outcomes = upload.outcomes
    stored = sum(1 for o in outcomes if o.stored)
    log.info(
        "STOW-RS: %d parts, %d stored, %d failed%s",
        len(outcomes),
        stored,
        len(outcomes) - stored,
        f"; body broke off: {broken}" if broken else "",
    )
    if broken and stored == 0:
        raise InvalidRequest(
            broken
            if not outcomes
            else f"{broken} (none of the {len(outcomes)} complete parts could be stored)"
        )
    if not outcomes:
        raise InvalidRequest("The multipart body contains no parts")
    if broken:
        outcomes.append(PartOutcome(len(outcomes) + 1).fail(BODY_BROKEN, broken))
        status = 202
    else:
        status = response_status(outcomes)
    response = Response(
        _render(response_module(outcomes, service), media_type), status, media_type=media_type
    )
    for value in _warnings(outcomes, service):
        response.headers.append("Warning", value)
    return response


@router.post(
    "/studies",
    summary="STOW-RS Store Instances (PS3.18 §10.5)",
    response_class=Response,
    status_code=200,
)
async def stow_studies(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> Response:
    return await store_instances(
        request, store, config.service_url(request), principal.tenant, None
    )


@router.post(
    "/studies/{study}",
    summary="STOW-RS Store Instances of one study (PS3.18 §10.5)",
    response_class=Response,
    status_code=200,
)
async def stow_study(
    study: str, request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> Response:
    return await store_instances(
        request, store, config.service_url(request), principal.tenant, study
    )
