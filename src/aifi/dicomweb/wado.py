"""WADO-RS: the Retrieve transaction (PS3.18 §10.4).

Target resources (PS3.18 §10.4.1.1), each for the caller's tenant only:

* DICOM resources — ``/studies/{study}[/series/{series}[/instances/{instance}]]`` as
  ``multipart/related; type="application/dicom"`` (§8.7.3.2); a single instance may also
  be asked for as single-part ``application/dicom`` (as some services allow).
* Metadata resources — ``…/metadata`` as ``application/dicom+json`` (Annex F) whose
  bulk data are absolute Bulkdata URIs (§10.4.3.3.2), or ``multipart/related;
  type="application/dicom+xml"`` (PS3.19 Native DICOM Model).
* Frames — ``…/instances/{instance}/frames/{list}`` — and bulk data —
  ``…/instances/{instance}/bulkdata/{tag path}`` — in the bulk data media types of
  §8.7.3.3.
* Rendered resources (§10.4.1.1.3, query parameters §8.3.5) — ``…/rendered`` at every
  level and ``…/frames/{list}/rendered`` — and thumbnails (Supplement 203) —
  ``…/thumbnail`` at every level: ``image/jpeg`` (default) or ``image/png``.

Content negotiation (§8.7.5): the ``accept`` query parameter (§8.3.3.1) or the Accept
header, q-values honoured; among equally preferred ranges the one needing no conversion
wins. Transfer syntaxes follow §8.7.3 (see :mod:`aifi.dicomweb.transcode`): the default
is Explicit VR Little Endian, ``transfer-syntax=*`` means as stored, and Implicit VR
Little Endian or Explicit VR Big Endian are never sent. An instance sent in the transfer
syntax it was stored in is sent byte for byte from its file, without being parsed: the
file is memory-mapped in a worker thread (a few MiB per trip) and its pages go to the
socket without being copied into Python buffers; the database is asked once per request.
No compression (gzip) is applied: pixel data is already dense.

Status codes (§10.4.3, §8.7.5): 400 for malformed UIDs, frame lists, parameters or
Accept headers; 404 for unknown studies, series, instances, frames or bulk data; 406
when nothing acceptable can be produced (e.g. a decoder is missing).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from aifi.dicomweb import rendering, transcode
from aifi.dicomweb.deps import ConfigDep, StoreDep
from aifi.dicomweb.dicomjson import absolutize_bulkdata
from aifi.dicomweb.dicomxml import json_to_native_xml
from aifi.dicomweb.direct_send import DIRECT_SEND, DirectSend, FileSegment, Piece, length
from aifi.dicomweb.media import MediaType, parse_accept
from aifi.dicomweb.multipart import (
    closing,
    content_type,
    new_boundary,
    part_header,
    part_separator,
)
from aifi.dicomweb.store import DicomJson, DicomStore, StoredInstance
from aifi.dicomweb.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    FrameEncoding,
    FrameReader,
)
from aifi.errors import HubError, InvalidRequest, NotAcceptable, NotFound
from aifi.principal import PrincipalDep

log = logging.getLogger(__name__)

router = APIRouter()

MIB = 1 << 20
WINDOW = 16 * MIB
"""Stored files are mapped (never copied into Python buffers) this much at a time."""
BATCH = 4 * MIB
"""Bytes produced per trip to a worker thread."""
SMALL = 64 * 1024
"""Pieces below this size are joined before they are written."""

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART = "multipart/related"

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

Chunk = bytes | memoryview
"""A piece of a response body: bytes, or a view of a memory-mapped stored file."""
Part = tuple[str, dict[str, str], Iterable[Chunk]]
"""One multipart part: Content-Type, further headers, body pieces."""


# -- request helpers ----------------------------------------------------------------------


def _uids(*values: str | None) -> None:
    for value in values:
        if value is not None and not (len(value) <= 64 and _UID.fullmatch(value)):
            raise InvalidRequest(f"Not a valid UID: {value[:80]!r}")


def _level(series: str | None, instance: str | None) -> str:
    return "instance" if instance else "series" if series else "study"


@dataclass(frozen=True, slots=True)
class _Context:
    """What every route needs: the request, the store, the service root URL, the tenant."""

    request: Request
    store: DicomStore
    service: str
    tenant: str

    def accept(self) -> list[MediaType]:
        """The ``accept`` query parameter (PS3.18 §8.3.3.1) if given, else the Accept
        header (§8.7.5), most preferred first."""
        query = self.request.query_params.getlist("accept")
        header = ", ".join(query) if query else ", ".join(self.request.headers.getlist("accept"))
        return parse_accept(header)

    def find(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[StoredInstance]:
        """The stored instances addressed (one database query); 404 when none."""
        _uids(study, series, instance)
        found = self.store.find_instances(self.tenant, study, series, instance)
        if not found:
            raise NotFound(f"No such {_level(series, instance)}")
        return found

    def url(self, inst: StoredInstance) -> str:
        return (
            f"{self.service}/studies/{inst.study_instance_uid}/series/"
            f"{inst.series_instance_uid}/instances/{inst.sop_instance_uid}"
        )


async def _context(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> _Context:
    return _Context(request, store, config.service_url(request), principal.tenant)


Ctx = Annotated[_Context, Depends(_context)]


def _coalesce(pieces: Iterable[Chunk], small: int = SMALL) -> Iterator[Chunk]:
    """Join runs of small pieces (part headers, JSON items) into one write; pass large
    pieces (file contents) through untouched, never copying them."""
    pending: list[Chunk] = []
    length = 0
    for piece in pieces:
        if len(piece) >= small:
            if pending:
                yield b"".join(pending)
                pending, length = [], 0
            yield piece
            continue
        pending.append(piece)
        length += len(piece)
        if length >= small:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


def _take(pieces: Iterator[Chunk], budget: int) -> list[Chunk]:
    batch: list[Chunk] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= budget:
            break
    return batch


async def _body(pieces: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    """Run a blocking body producer (file reads, transcoding, rendering) in a worker
    thread, :data:`BATCH` bytes per trip, and hand the pieces to the server one by one.
    Much cheaper than a thread trip per piece, and the event loop never blocks on I/O."""
    iterator = iter(_coalesce(pieces))
    while batch := await anyio.to_thread.run_sync(_take, iterator, BATCH):
        for piece in batch:
            yield piece


def _streaming(
    pieces: Iterable[Chunk], headers: dict[str, str], background: BackgroundTask | None = None
) -> StreamingResponse:
    return StreamingResponse(_body(pieces), headers=headers, background=background)


def _multipart(parts: Iterable[Part], boundary: str) -> Iterator[Chunk]:
    """A multipart/related body (PS3.18 §8.6.1.2)."""
    for part_type, headers, body in parts:
        yield part_header(boundary, part_type, headers)
        yield from body
        yield part_separator()
    yield closing(boundary)


def _stream_parts(
    parts: Iterable[Part], related_type: str, background: BackgroundTask | None = None, **extra: str
) -> StreamingResponse:
    boundary = new_boundary()
    return _streaming(
        _multipart(parts, boundary),
        {"Content-Type": content_type(related_type, boundary, **extra)},
        background,
    )


def _ts(media: str, syntax: str) -> str:
    return f"{media}; transfer-syntax={syntax}"


def _open_reader(inst: StoredInstance) -> FrameReader:
    try:
        return FrameReader(inst.path)
    except OSError as exc:
        raise HubError(f"Stored file of instance {inst.sop_instance_uid} is missing") from exc


# -- instances (DICOM resources, PS3.18 §10.4.1.1) ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    instance: StoredInstance
    syntax: str

    @property
    def as_stored(self) -> bool:
        return self.syntax == self.instance.transfer_syntax_uid


def _plan(instances: list[StoredInstance], ranges: list[MediaType]) -> tuple[list[_Planned], bool]:
    """Each instance's transfer syntax (PS3.18 §8.7.3.5) and whether the answer is one
    single part (``application/dicom``, only for one instance); 406 when some instance
    cannot be sent in any acceptable way."""
    choices: list[tuple[MediaType, bool]] = []
    for r in ranges:
        if r.mime == MULTIPART and r.admits_part(DICOM):
            choices.append((r, False))
        elif r.mime == DICOM and len(instances) == 1:
            choices.append((r, True))
        elif r.mime in ("*/*", "multipart/*"):
            choices.append((MediaType(MULTIPART, {}, r.q), False))
    best: dict[str, tuple[str, bool] | None] = {}  # by stored transfer syntax
    plans: list[_Planned] = []
    single = False
    for inst in instances:
        stored = inst.transfer_syntax_uid
        if stored not in best:
            options = []
            for order, (r, is_single) in enumerate(choices):
                syntax = transcode.producible(stored, r.transfer_syntax)
                if syntax is not None:
                    options.append((-r.q, syntax != stored, order, syntax, is_single))
            best[stored] = min(options)[3:] if options else None
        choice = best[stored]
        if choice is None:
            raise NotAcceptable(
                f"Instance {inst.sop_instance_uid} is stored as {stored} "
                "and cannot be sent in any acceptable media type and transfer syntax"
            )
        syntax, single = choice
        try:
            size = os.stat(inst.file).st_size
        except OSError as exc:
            raise HubError(f"Stored file of instance {inst.sop_instance_uid} is missing") from exc
        if size != inst.size:
            # Stored files are never rewritten: a different size is damage (a truncated
            # copy, a restore gone wrong), and is reported instead of sent as it is.
            raise HubError(
                f"Stored file of instance {inst.sop_instance_uid} is {size} bytes; "
                f"the index says {inst.size}"
            )
        plans.append(_Planned(inst, syntax))
    return plans, single


def _segment(plan: _Planned) -> FileSegment:
    return FileSegment(plan.instance.file, 0, plan.instance.size)


def _one_syntax(plans: list[_Planned]) -> dict[str, str]:
    """The multipart ``transfer-syntax`` parameter, when every part has the same one."""
    syntaxes = {p.syntax for p in plans}
    return {"transfer-syntax": syntaxes.pop()} if len(syntaxes) == 1 else {}


def _instance_body(plan: _Planned) -> Iterator[Chunk]:
    if plan.as_stored:
        yield from transcode.file_views(plan.instance.file, plan.instance.size, WINDOW)
    else:
        yield transcode.to_explicit_vr_little_endian(plan.instance.path)


def _views(pieces: Iterable[Piece]) -> Iterator[Chunk]:
    for piece in pieces:
        if isinstance(piece, FileSegment):
            yield from transcode.file_views(piece.path, piece.size, WINDOW, piece.offset)
        else:
            yield piece


class _FilesResponse(StreamingResponse):
    """A body of bytes and stored-file ranges with a known length: handed whole to the
    server's zero-copy sender when it offers one (:mod:`aifi.dicomweb.direct_send`),
    streamed from memory-mapped views otherwise; the same bytes either way."""

    def __init__(self, pieces: list[Piece], headers: dict[str, str]) -> None:
        self.pieces = pieces
        super().__init__(_body(_views(pieces)), headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct: DirectSend | None = (scope.get("extensions") or {}).get(DIRECT_SEND)
        if direct is None:
            await super().__call__(scope, receive, send)
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        if not await direct.send_pieces(self.pieces):
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _files_response(
    parts: list[tuple[str, dict[str, str], Piece]], boundary: str, headers: dict[str, str]
) -> _FilesResponse:
    """A multipart/related body (PS3.18 §8.6.1.2) of bodies known up front (stored files
    sent as they are, converted bytes), with its Content-Length."""
    pieces: list[Piece] = []
    pending = b""
    for part_type, part_headers, body in parts:
        pieces += [pending + part_header(boundary, part_type, part_headers), body]
        pending = part_separator()
    pieces.append(pending + closing(boundary))
    headers["Content-Length"] = str(length(pieces))
    return _FilesResponse(pieces, headers)


def _retrieve(ctx: _Context, instances: list[StoredInstance]) -> Response:
    plans, single = _plan(instances, ctx.accept())
    # A lone instance that needs converting is converted before answering, so that a
    # failure is a 406, not a broken stream; larger sets convert as they stream.
    ready = None
    if len(plans) == 1 and not plans[0].as_stored:
        ready = transcode.to_explicit_vr_little_endian(plans[0].instance.path)
    if ready is not None or all(p.as_stored for p in plans):
        # Every body is known up front: its length is said (progress for clients, no
        # chunking) and stored files may go to the socket without a copy.
        bodies: list[Piece] = [ready] if ready is not None else [_segment(p) for p in plans]
        if single:
            headers = {"Content-Type": _ts(DICOM, plans[0].syntax)}
            headers["Content-Length"] = str(length(bodies))
            return _FilesResponse(bodies, headers)
        boundary = new_boundary()
        return _files_response(
            [
                (_ts(DICOM, p.syntax), {"Content-Location": ctx.url(p.instance)}, body)
                for p, body in zip(plans, bodies, strict=True)
            ],
            boundary,
            {"Content-Type": content_type(DICOM, boundary, **_one_syntax(plans))},
        )
    boundary = new_boundary()
    parts = [
        (_ts(DICOM, p.syntax), {"Content-Location": ctx.url(p.instance)}, _instance_body(p))
        for p in plans
    ]
    headers = {"Content-Type": content_type(DICOM, boundary, **_one_syntax(plans))}
    return _streaming(_multipart(parts, boundary), headers)


@router.get(STUDY, summary="Retrieve Study (WADO-RS)")
def retrieve_study(study: str, ctx: Ctx) -> Response:
    return _retrieve(ctx, ctx.find(study))


@router.get(SERIES, summary="Retrieve Series (WADO-RS)")
def retrieve_series(study: str, series: str, ctx: Ctx) -> Response:
    return _retrieve(ctx, ctx.find(study, series))


@router.get(INSTANCE, summary="Retrieve Instance (WADO-RS)")
def retrieve_instance(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    return _retrieve(ctx, ctx.find(study, series, instance))


# -- metadata resources (PS3.18 §10.4.1.1, §10.4.3.3.2) -----------------------------------


def _metadata_type(ranges: list[MediaType]) -> str:
    """DICOM JSON (Annex F) by default; XML (PS3.19 Native DICOM Model) when asked for as
    PS3.18 §8.7.3.2 requires, ``multipart/related; type="application/dicom+xml"``."""
    for r in ranges:
        if r.mime in (DICOM_JSON, "application/json"):
            return r.mime
        if r.mime in ("*/*", "application/*"):
            return DICOM_JSON
        if r.mime == MULTIPART and r.related_type == DICOM_XML:
            return DICOM_XML
    raise NotAcceptable(
        "Metadata is available as application/dicom+json or multipart/related; "
        'type="application/dicom+xml"'
    )


def _item_url(ctx: _Context, study: str, item: DicomJson) -> str:
    def uid(tag: str) -> str:
        values = item.get(tag, {}).get("Value") or [""]
        return str(values[0])

    return f"{ctx.service}/studies/{study}/series/{uid('0020000E')}/instances/{uid('00080018')}"


def _metadata(
    ctx: _Context, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    kind = _metadata_type(ctx.accept())
    _uids(study, series, instance)
    items = ctx.store.instance_metadata(ctx.tenant, study, series, instance)
    if not items:
        raise NotFound(f"No such {_level(series, instance)}")

    def absolute(item: DicomJson) -> DicomJson:
        return absolutize_bulkdata(item, _item_url(ctx, study, item))

    if kind != DICOM_XML:

        def array() -> Iterator[bytes]:
            for index, item in enumerate(items):
                text = json.dumps(absolute(item), separators=(",", ":"), ensure_ascii=False)
                yield ("[" if index == 0 else ",").encode() + text.encode()
            yield b"]"

        return _streaming(array(), {"Content-Type": f"{kind}; charset=utf-8"})

    def document(item: DicomJson) -> Iterator[bytes]:
        yield json_to_native_xml(absolute(item))

    parts: Iterator[Part] = ((f"{DICOM_XML}; charset=utf-8", {}, document(i)) for i in items)
    return _stream_parts(parts, DICOM_XML)


@router.get(STUDY + "/metadata", summary="Retrieve Study Metadata (WADO-RS)")
def study_metadata(study: str, ctx: Ctx) -> Response:
    return _metadata(ctx, study)


@router.get(SERIES + "/metadata", summary="Retrieve Series Metadata (WADO-RS)")
def series_metadata(study: str, series: str, ctx: Ctx) -> Response:
    return _metadata(ctx, study, series)


@router.get(INSTANCE + "/metadata", summary="Retrieve Instance Metadata (WADO-RS)")
def instance_metadata(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    return _metadata(ctx, study, series, instance)


# -- frames and bulk data (PS3.18 §10.4.1.1, media types §8.7.3.3) ------------------------


def _frames_response(
    reader: FrameReader,
    encoding: FrameEncoding,
    numbers: list[int],
    location: str,
    whole_value: bool = False,
) -> Response:
    """Frames, or (bulk data) the whole pixel data value as one part. The reader is closed
    once the body has been sent."""

    def frame(number: int) -> Iterator[bytes]:
        yield reader.decoded_frame(number) if encoding.decode else reader.stored_frame(number)

    def whole() -> Iterator[Chunk]:
        if not encoding.decode and not reader.encapsulated:
            yield from reader.native_value(WINDOW)
        else:
            for number in range(1, reader.number_of_frames + 1):
                yield reader.decoded_frame(number)

    parts: Iterable[Part]
    if whole_value:
        parts = [(encoding.part_type, {"Content-Location": location}, whole())]
    else:
        parts = (
            (encoding.part_type, {"Content-Location": f"{location}/frames/{n}"}, frame(n))
            for n in numbers
        )
    close = BackgroundTask(reader.close)
    if encoding.single:
        [(_, _, body)] = list(parts)
        return _streaming(body, {"Content-Type": encoding.part_type}, close)
    return _stream_parts(parts, encoding.media_type, close, **{"transfer-syntax": encoding.syntax})


@router.get(FRAMES, summary="Retrieve Frames (WADO-RS)")
def retrieve_frames(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    numbers = transcode.parse_frame_list(frames)
    ranges = ctx.accept()
    [inst] = ctx.find(study, series, instance)
    reader = _open_reader(inst)
    try:
        reader.check_frames(numbers)
        encoding = transcode.choose_frame_encoding(ranges, reader, len(numbers) == 1)
        return _frames_response(reader, encoding, numbers, ctx.url(inst))
    except BaseException:
        reader.close()
        raise


def _bulk_single(ranges: list[MediaType]) -> bool:
    """Whether a non-pixel bulk data value goes single-part (PS3.18 §8.7.3.3.1)."""
    for r in ranges:
        if r.transfer_syntax not in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN):
            continue
        if r.mime == OCTET_STREAM:
            return True
        if (r.mime == MULTIPART and r.admits_part(OCTET_STREAM)) or r.mime in (
            "*/*",
            "multipart/*",
            "application/*",
        ):
            return False
    raise NotAcceptable(
        'Bulk data is available as multipart/related; type="application/octet-stream"'
    )


@router.get(INSTANCE + "/bulkdata/{path:path}", summary="Retrieve Bulkdata (WADO-RS)")
def retrieve_bulkdata(study: str, series: str, instance: str, path: str, ctx: Ctx) -> Response:
    path = path.strip("/")
    tag_path = transcode.parse_tag_path(path)
    ranges = ctx.accept()
    [inst] = ctx.find(study, series, instance)
    location = f"{ctx.url(inst)}/bulkdata/{path}"
    if transcode.is_pixel_data_path(tag_path):
        reader = _open_reader(inst)
        try:
            if reader.location is None or reader.location.tag != int(str(tag_path[0]), 16):
                raise NotFound("The instance has no such pixel data attribute")
            encoding = transcode.choose_frame_encoding(ranges, reader, True)
            if encoding.single and reader.encapsulated and not encoding.decode:
                # Compressed frames as stored are one part each: multipart only.
                several = reader.number_of_frames > 1
                encoding = transcode.choose_frame_encoding(ranges, reader, not several)
            numbers = list(range(1, reader.number_of_frames + 1))
            whole = encoding.decode or not reader.encapsulated
            return _frames_response(reader, encoding, numbers, location, whole_value=whole)
        except BaseException:
            reader.close()
            raise
    single = _bulk_single(ranges)
    value = transcode.read_bulkdata(inst.path, tag_path)
    part_type = _ts(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)
    if single:
        return Response(value.data, headers={"Content-Type": part_type})
    return _stream_parts([(part_type, {"Content-Location": location}, [value.data])], OCTET_STREAM)


# -- rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5, Supplement 203) -------


def _render_params(ctx: _Context) -> rendering.RenderParams:
    """The rendered media type (PS3.18 §8.7.4) and the §8.3.5 query parameters."""
    media = None
    for r in ctx.accept():
        candidate = r.related_type if r.mime == MULTIPART else r.mime
        if candidate in rendering.RENDERED_MEDIA_TYPES:
            media = candidate
        elif candidate in ("*/*", "image/*", "multipart/*"):
            media = "image/jpeg"
        if media:
            break
    if media is None:
        raise NotAcceptable("Rendered images are available as image/jpeg or image/png")
    q = ctx.request.query_params
    return rendering.RenderParams(
        media_type=media,
        quality=rendering.parse_quality(q["quality"])
        if "quality" in q
        else rendering.DEFAULT_QUALITY,
        window=rendering.parse_window(q["window"]) if "window" in q else None,
        viewport=rendering.parse_viewport(q["viewport"]) if "viewport" in q else None,
    )


def _render_one(
    inst: StoredInstance,
    params: rendering.RenderParams,
    number: int | None = None,
    bound: int | None = None,
) -> bytes | None:
    """One frame rendered (default: the first; the middle one for a thumbnail), or
    ``None`` when the instance has no pixel data."""
    with _open_reader(inst) as reader:
        if not reader.has_pixels:
            return None
        if number is None:
            number = (reader.number_of_frames + 1) // 2 if bound else 1
        return rendering.render(reader.array(number), reader.header, number - 1, params, bound)


def _rendered_many(instances: list[StoredInstance], params: rendering.RenderParams) -> Response:
    """A study or series rendered: one part per instance with pixel data (its first
    frame); instances that cannot be rendered are left out (and logged)."""
    first, rest = None, iter(instances)
    for inst in rest:
        first = _render_one(inst, params)
        if first is not None:
            break
    if first is None:
        raise NotAcceptable("Nothing here has pixel data that can be rendered as an image")

    def images() -> Iterator[bytes]:
        yield first
        for inst in rest:
            try:
                image = _render_one(inst, params)
            except HubError as exc:
                log.warning("cannot render an instance: %s", exc.reason)
                log.debug("the instance not rendered is %s", inst.sop_instance_uid)
                continue
            if image is not None:
                yield image

    return _stream_parts(((params.media_type, {}, [i]) for i in images()), params.media_type)


@router.get(STUDY + "/rendered", summary="Retrieve Rendered Study (WADO-RS)")
def rendered_study(study: str, ctx: Ctx) -> Response:
    params = _render_params(ctx)
    return _rendered_many(ctx.find(study), params)


@router.get(SERIES + "/rendered", summary="Retrieve Rendered Series (WADO-RS)")
def rendered_series(study: str, series: str, ctx: Ctx) -> Response:
    params = _render_params(ctx)
    return _rendered_many(ctx.find(study, series), params)


@router.get(INSTANCE + "/rendered", summary="Retrieve Rendered Instance (WADO-RS)")
def rendered_instance(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    """The instance's first frame; other frames via ``…/frames/{n}/rendered``."""
    params = _render_params(ctx)
    [inst] = ctx.find(study, series, instance)
    image = _render_one(inst, params)
    if image is None:
        raise NotAcceptable("The instance has no pixel data that can be rendered as an image")
    return Response(image, media_type=params.media_type)


@router.get(FRAMES + "/rendered", summary="Retrieve Rendered Frames (WADO-RS)")
def rendered_frames(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    """One frame: a single image; several: one part per frame, in the order asked."""
    numbers = transcode.parse_frame_list(frames)
    params = _render_params(ctx)
    [inst] = ctx.find(study, series, instance)
    reader = _open_reader(inst)

    def render(number: int) -> bytes:
        return rendering.render(reader.array(number), reader.header, number - 1, params)

    try:
        reader.check_frames(numbers)
        first = render(numbers[0])
    except BaseException:
        reader.close()
        raise
    if len(numbers) == 1:
        reader.close()
        return Response(first, media_type=params.media_type)
    images = (first if i == 0 else render(n) for i, n in enumerate(numbers))
    parts: Iterator[Part] = ((params.media_type, {}, [image]) for image in images)
    return _stream_parts(parts, params.media_type, BackgroundTask(reader.close))


def _thumbnail(
    ctx: _Context, instances: list[StoredInstance], number: int | None = None
) -> Response:
    """A small representative image (PS3.18 Thumbnail resources, Supplement 203): per series the
    middle instance (and frame) first; at most :data:`~aifi.dicomweb.rendering.THUMBNAIL_SIZE`
    pixels a side unless a ``viewport`` asks otherwise; nothing drawn on it."""
    params = _render_params(ctx)
    by_series: dict[str, list[StoredInstance]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_instance_uid, []).append(inst)
    for members in by_series.values():
        middle = (len(members) - 1) // 2
        for inst in [members[middle], *members[:middle], *members[middle + 1 :]]:
            image = _render_one(inst, params, number, bound=rendering.THUMBNAIL_SIZE)
            if image is not None:
                return Response(image, media_type=params.media_type)
    raise NotFound("Nothing here has pixel data to make a thumbnail from")


@router.get(STUDY + "/thumbnail", summary="Retrieve Study Thumbnail (WADO-RS)")
def study_thumbnail(study: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study))


@router.get(SERIES + "/thumbnail", summary="Retrieve Series Thumbnail (WADO-RS)")
def series_thumbnail(study: str, series: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study, series))


@router.get(INSTANCE + "/thumbnail", summary="Retrieve Instance Thumbnail (WADO-RS)")
def instance_thumbnail(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study, series, instance))


@router.get(FRAMES + "/thumbnail", summary="Retrieve Frames Thumbnail (WADO-RS)")
def frames_thumbnail(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    numbers = transcode.parse_frame_list(frames)
    [inst] = ctx.find(study, series, instance)
    with _open_reader(inst) as reader:
        reader.check_frames(numbers)
    return _thumbnail(ctx, [inst], numbers[0])
