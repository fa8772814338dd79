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

The parts: :mod:`~aifi.dicomweb.wado_request` (paths, UIDs, the request's context),
:mod:`~aifi.dicomweb.wado_bodies` (response bodies), :mod:`~aifi.dicomweb.wado_rendered`
(rendered resources and thumbnails, its own router).

Status codes (§10.4.3, §8.7.5): 400 for malformed UIDs, frame lists, parameters or
Accept headers; 404 for unknown studies, series, instances, frames or bulk data; 406
when nothing acceptable can be produced (e.g. a decoder is missing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.background import BackgroundTask

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.dicomweb import bulkdata, transcode, transfer_syntax
from aifi.dicomweb.dicomjson import absolutize_bulkdata
from aifi.dicomweb.dicomxml import json_to_native_xml
from aifi.dicomweb.direct_send import FileSegment, Piece, length
from aifi.dicomweb.frames import FrameEncoding, FrameReader, choose_frame_encoding, parse_frame_list
from aifi.dicomweb.media import DICOM, DICOM_JSON, DICOM_XML, MediaType
from aifi.dicomweb.multipart import content_type, new_boundary
from aifi.dicomweb.store import StoredInstance
from aifi.dicomweb.transfer_syntax import EXPLICIT_VR_LITTLE_ENDIAN, OCTET_STREAM
from aifi.dicomweb.wado_bodies import (
    WINDOW,
    Chunk,
    FilesResponse,
    Part,
    files_response,
    multipart_body,
    stream_parts,
    streaming,
)
from aifi.dicomweb.wado_request import (
    FRAMES,
    INSTANCE,
    MULTIPART,
    SERIES,
    STUDY,
    Ctx,
    RetrieveContext,
    check_uids,
    level_name,
    open_reader,
    with_syntax,
)
from aifi.errors import HubError, NotAcceptable, NotFound

router = APIRouter()


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
                syntax = transfer_syntax.producible(stored, r.transfer_syntax)
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


def _retrieve(ctx: RetrieveContext, instances: list[StoredInstance]) -> Response:
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
            headers = {"Content-Type": with_syntax(DICOM, plans[0].syntax)}
            headers["Content-Length"] = str(length(bodies))
            return FilesResponse(bodies, headers)
        boundary = new_boundary()
        return files_response(
            [
                (with_syntax(DICOM, p.syntax), {"Content-Location": ctx.url(p.instance)}, body)
                for p, body in zip(plans, bodies, strict=True)
            ],
            boundary,
            {"Content-Type": content_type(DICOM, boundary, **_one_syntax(plans))},
        )
    boundary = new_boundary()
    parts = [
        (with_syntax(DICOM, p.syntax), {"Content-Location": ctx.url(p.instance)}, _instance_body(p))
        for p in plans
    ]
    headers = {"Content-Type": content_type(DICOM, boundary, **_one_syntax(plans))}
    return streaming(multipart_body(parts, boundary), headers)


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


def _item_url(ctx: RetrieveContext, study: str, item: DicomJson) -> str:
    series = dicom_json.text(item, "0020000E") or ""
    instance = dicom_json.text(item, "00080018") or ""
    return f"{ctx.service}/studies/{study}/series/{series}/instances/{instance}"


def _metadata(
    ctx: RetrieveContext, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    kind = _metadata_type(ctx.accept())
    check_uids(study, series, instance)
    items = ctx.store.instance_metadata(ctx.tenant, study, series, instance)
    if not items:
        raise NotFound(f"No such {level_name(series, instance)}")

    def absolute(item: DicomJson) -> DicomJson:
        return absolutize_bulkdata(item, _item_url(ctx, study, item))

    if kind != DICOM_XML:

        def array() -> Iterator[bytes]:
            for index, item in enumerate(items):
                text = json.dumps(absolute(item), separators=(",", ":"), ensure_ascii=False)
                yield ("[" if index == 0 else ",").encode() + text.encode()
            yield b"]"

        return streaming(array(), {"Content-Type": f"{kind}; charset=utf-8"})

    def document(item: DicomJson) -> Iterator[bytes]:
        yield json_to_native_xml(absolute(item))

    parts: Iterator[Part] = ((f"{DICOM_XML}; charset=utf-8", {}, document(i)) for i in items)
    return stream_parts(parts, DICOM_XML)


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
        return streaming(body, {"Content-Type": encoding.part_type}, close)
    return stream_parts(parts, encoding.media_type, close, **{"transfer-syntax": encoding.syntax})


@router.get(FRAMES, summary="Retrieve Frames (WADO-RS)")
def retrieve_frames(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    numbers = parse_frame_list(frames)
    ranges = ctx.accept()
    [inst] = ctx.find(study, series, instance)
    reader = open_reader(inst)
    try:
        reader.check_frames(numbers)
        encoding = choose_frame_encoding(ranges, reader, len(numbers) == 1)
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
    tag_path = bulkdata.parse_tag_path(path)
    ranges = ctx.accept()
    [inst] = ctx.find(study, series, instance)
    location = f"{ctx.url(inst)}/bulkdata/{path}"
    if bulkdata.is_pixel_data_path(tag_path):
        reader = open_reader(inst)
        try:
            if reader.location is None or reader.location.tag != int(str(tag_path[0]), 16):
                raise NotFound("The instance has no such pixel data attribute")
            encoding = choose_frame_encoding(ranges, reader, True)
            if encoding.single and reader.encapsulated and not encoding.decode:
                # Compressed frames as stored are one part each: multipart only.
                several = reader.number_of_frames > 1
                encoding = choose_frame_encoding(ranges, reader, not several)
            numbers = list(range(1, reader.number_of_frames + 1))
            whole = encoding.decode or not reader.encapsulated
            return _frames_response(reader, encoding, numbers, location, whole_value=whole)
        except BaseException:
            reader.close()
            raise
    single = _bulk_single(ranges)
    value = bulkdata.read_bulkdata(inst.path, tag_path)
    part_type = with_syntax(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)
    if single:
        return Response(value.data, headers={"Content-Type": part_type})
    return stream_parts([(part_type, {"Content-Location": location}, [value.data])], OCTET_STREAM)
