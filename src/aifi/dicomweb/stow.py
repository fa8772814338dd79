"""STOW-RS, the Studies Store transaction (DICOM PS3.18 §10.5).

``POST {service}/studies`` and ``POST {service}/studies/{StudyInstanceUID}`` with
``Content-Type: multipart/related; type="application/dicom"; boundary=…`` (parameters
quoted or not), one PS3.10 file per part. The body is streamed: each part goes through
:class:`~aifi.dicomweb.multipart_reader.MultipartReader` into its own staging file (hashed
with SHA-256 while it is written, off the event loop), its header is read with
``dcmread(defer_size=1024)`` (Pixel Data is never loaded), checked, and the checked
instances are handed to :meth:`DicomStore.put` in batches
(:data:`~aifi.dicomweb.stow_writer.BATCH_SIZE` parts or
:data:`~aifi.dicomweb.stow_writer.BATCH_BYTES`), so memory stays bounded whatever the request
size. The parts: :mod:`~aifi.dicomweb.stow_upload` (the body as it streams in),
:mod:`~aifi.dicomweb.stow_staging` (one part's staging file),
:mod:`~aifi.dicomweb.stow_writer` (storing, group commit) and
:mod:`~aifi.dicomweb.stow_response` (the response module, status and warnings).

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
:func:`~aifi.dicomweb.stow_staging.missing_preamble`.)

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

import logging

from fastapi import APIRouter, Request, Response

from aifi.dicomweb.deps import ConfigDep, StoreDep
from aifi.dicomweb.instance_checks import BODY_BROKEN, PartOutcome, is_valid_uid
from aifi.dicomweb.media import DICOM, DICOM_JSON, DICOM_XML, parse_media_type
from aifi.dicomweb.multipart_reader import MultipartReader, validate_boundary
from aifi.dicomweb.store import DicomStore
from aifi.dicomweb.stow_response import (
    render_module,
    response_module,
    response_status,
    response_type,
    warning_headers,
)
from aifi.dicomweb.stow_upload import Upload, receive_body
from aifi.errors import InvalidRequest, UnsupportedMediaType
from aifi.principal import PrincipalDep

log = logging.getLogger("aifi.dicomweb.stow")

router = APIRouter()


# -- the request ------------------------------------------------------------------------


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
    media_type = response_type(request.headers.get("accept"))
    upload = Upload(store, tenant, study, fsync=bool(getattr(store, "fsync", True)))
    try:
        broken = await receive_body(request, upload, MultipartReader(boundary))
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
        render_module(response_module(outcomes, service), media_type), status, media_type=media_type
    )
    for value in warning_headers(outcomes, service):
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
