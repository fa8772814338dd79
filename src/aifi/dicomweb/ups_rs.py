"""UPS-RS, the Worklist Service (PS3.18 ch. 11; PS3.4 Annex CC), under ``{s}/workitems``.

=============================================  =========================================
``POST {s}/workitems{?workitem}``               Create Workitem (§11.4) → 201
``GET {s}/workitems/{uid}``                     Retrieve Workitem (§11.5) → 200
``POST {s}/workitems/{uid}{?transaction}``      Update Workitem (§11.6) → 200
``PUT {s}/workitems/{uid}/state``               Change Workitem State (§11.7) → 200
``POST {s}/workitems/{uid}/cancelrequest``      Request Cancellation (§11.8) → 202
``GET {s}/workitems{?query}``                   Search for Workitems (§11.9) → 200
``POST {s}/workitems/{uid}/subscribers/{AE}``   Subscribe (§11.10) → 201; ``{uid}`` may be the
                                                global (1.2.840.10008.5.1.4.34.5) or
                                                filtered (…34.5.1) worklist UID
``DELETE {s}/workitems/{uid}/subscribers/{AE}`` Unsubscribe (§11.11) → 200
``POST {s}/workitems/{uid}/subscribers/{AE}/suspend``  Suspend Subscription (§11.12) → 200
``GET {s}/subscribers/{AE}`` (WebSocket)        Open Event Channel (§11.13); event reports
=============================================  =========================================

Forms older clients send are accepted too: the workitem UID of a create as a bare query
(``?1.2.3``) or ``AffectedSOPInstanceUID=``; the Transaction UID of an update as
``transaction-uid=``, a bare query, or in the body; a filtered subscription's keys as
``filter=key=value,key=value`` or as plain query parameters.

Errors carry the status and ``Warning: 299`` text of PS3.18 ch. 11 (see
:class:`aifi.ihe_profiles.ups.UpsStatus`); a request that succeeds without changing
anything (already COMPLETED / CANCELED) succeeds with the standard's warning (200; 202
for Request Cancellation).
An AI product's Task Performer (a restricted principal, issue 6) sees only its products'
workitems: another product's workitem answers 404 exactly as an unknown one, a search does
not return it, and its events never reach the performer (see
:class:`aifi.dicomweb.worklist.Worklist`).
Event reports are sent as text messages, one DICOM JSON object each (PS3.18 F.2), with
Affected SOP Instance UID (0000,1000) and Event Type ID (0000,1002).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydicom.uid import generate_uid
from starlette.concurrency import run_in_threadpool

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.dicomweb.deps import ConfigDep
from aifi.dicomweb.errors import warning_header
from aifi.dicomweb.json_model import dicom_json_problems, upper_case_tags
from aifi.dicomweb.media import parse_accept
from aifi.dicomweb.qido_query import parse_query
from aifi.dicomweb.query_attributes import QueryLevel
from aifi.dicomweb.worklist import (
    FILTERED_WORKLIST,
    GLOBAL_WORKLIST,
    ActionResult,
    Worklist,
    filter_pairs,
)
from aifi.errors import InvalidRequest, NotAcceptable, UnsupportedMediaType
from aifi.ihe_profiles.aiw import absolutize_retrieve_urls
from aifi.principal import PrincipalDep, get_principal

router = APIRouter(tags=["UPS-RS"])

DICOM_JSON = "application/dicom+json"
TRANSACTION_UID = "00081195"
PROCEDURE_STEP_STATE = "00741000"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, 16 chars
EVENT_POLL_SECONDS = 0.25
"""How often an open event channel looks for new events in the database even when this
process's doorbell did not ring (events queued by another hub process)."""


def get_worklist(request: Request) -> Worklist:
    worklist: Worklist = request.app.state.worklist
    return worklist


def _check_uid(uid: str, what: str = "workitem") -> str:
    if not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
        raise InvalidRequest(f"Not a valid {what} UID: {uid!r}")
    return uid


def _check_ae(ae: str) -> str:
    ae = unquote(ae)
    if not _AE.fullmatch(ae) or not ae.strip():
        raise InvalidRequest(f"Not a valid AE Title: {ae!r} (1-16 characters, no backslash)")
    return ae


async def _dataset(request: Request, *, required: bool = True) -> DicomJson:
    """The request body as one DICOM JSON data set (PS3.18 F.2): an object, or an array
    holding exactly one."""
    body = await request.body()
    if not body.strip():
        if required:
            raise InvalidRequest("The request has no payload; a DICOM JSON data set is required")
        return {}
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in (DICOM_JSON, "application/json"):
        raise UnsupportedMediaType(f"The payload must be {DICOM_JSON}, not {media or 'untyped'}")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"The payload is not valid JSON: {exc}") from exc
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidRequest(f"The payload must hold one data set, not {len(value)}")
        value = value[0]
    problems = dicom_json_problems(value)
    if problems:
        raise InvalidRequest(
            "The payload is not a DICOM JSON data set (PS3.18 F.2): " + "; ".join(problems)
        )
    return upper_case_tags(value)


def _single(dataset: DicomJson, tag: str) -> str | None:
    """The one value of ``tag`` (a checked data set: Value is a list of strings)."""
    values = dicom_json.values(dataset, tag)
    if len(values) > 1:
        raise InvalidRequest(f"({tag[:4]},{tag[4:]}) must have one value, not {len(values)}")
    return str(values[0]) if values and values[0] is not None else None


def _json(value: Any, status: int = 200, **headers: str) -> Response:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=DICOM_JSON, headers=headers)


def _accept_json(request: Request) -> None:
    accept = request.query_params.get("accept") or request.headers.get("accept")
    for media in parse_accept(accept):
        if media.mime in ("application/json", DICOM_JSON) or media.matches(DICOM_JSON):
            return
    raise NotAcceptable(f"Workitems are available as {DICOM_JSON}, not {accept}")


def _with_warning(
    response: Response, request: Request, config: ConfigDep, result: ActionResult
) -> Response:
    if result.warning is not None:
        response.headers["Warning"] = warning_header(
            config.service_url(request), result.warning.text
        )
    return response


def _bare_query_uid(request: Request) -> str | None:
    """A query string that is nothing but a UID (``?1.2.3``), as older editions wrote."""
    raw = request.url.query
    return raw if raw and "=" not in raw and _UID.fullmatch(raw) else None


# -- workitems ------------------------------------------------------------------------------


@router.post("/workitems", status_code=201, summary="Create Workitem (PS3.18 §11.4)")
async def create_workitem(request: Request, principal: PrincipalDep, config: ConfigDep) -> Response:
    params = {k.lower(): v for k, v in request.query_params.items()}
    uid = params.get("workitem") or params.get("affectedsopinstanceuid") or _bare_query_uid(request)
    uid = _check_uid(uid) if uid else str(generate_uid())
    dataset = await _dataset(request)
    worklist = get_worklist(request)
    await run_in_threadpool(worklist.create, principal.tenant, uid, dataset)
    location = f"{config.service_url(request)}/workitems/{uid}"
    return Response(status_code=201, headers={"Content-Location": location, "Location": location})


@router.get("/workitems", summary="Search for Workitems (PS3.18 §11.9)")
async def search_workitems(
    request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    _accept_json(request)
    params = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if k.lower() not in ("accept", "charset")
    ]
    query = parse_query(
        params,
        QueryLevel.IMAGE,
        default_limit=config.qido_default_limit,
        max_limit=config.qido_max_limit,
    )
    result = await run_in_threadpool(
        lambda: get_worklist(request).search(principal.tenant, query, products=principal.products)
    )
    service = config.service_url(request)
    response = _json([absolutize_retrieve_urls(ds, service) for ds in result.matches])
    for text in [*query.notices, *result.warnings]:
        response.headers.append("Warning", warning_header(service, text))
    if result.remaining:
        response.headers.append(
            "Warning",
            warning_header(
                service, f"There are {result.remaining} additional results that can be requested"
            ),
        )
    return response


@router.get("/workitems/{workitem}", summary="Retrieve Workitem (PS3.18 §11.5)")
async def retrieve_workitem(
    workitem: str, request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    _accept_json(request)
    uid = _check_uid(workitem)
    ds = await run_in_threadpool(
        lambda: get_worklist(request).retrieve(principal.tenant, uid, products=principal.products)
    )
    return _json([absolutize_retrieve_urls(ds, config.service_url(request))])


@router.post("/workitems/{workitem}", summary="Update Workitem (PS3.18 §11.6)")
async def update_workitem(
    workitem: str, request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    uid = _check_uid(workitem)
    params = {k.lower(): v for k, v in request.query_params.items()}
    changes = await _dataset(request)
    in_body = changes.pop(TRANSACTION_UID, None)
    transaction = (
        params.get("transaction")
        or params.get("transaction-uid")
        or params.get("transactionuid")
        or _bare_query_uid(request)
        or _single({TRANSACTION_UID: in_body} if in_body else {}, TRANSACTION_UID)
    )
    result = await run_in_threadpool(
        lambda: get_worklist(request).update(
            principal.tenant, uid, changes, transaction, products=principal.products
        )
    )
    return _with_warning(Response(status_code=200), request, config, result)


@router.put("/workitems/{workitem}/state", summary="Change Workitem State (PS3.18 §11.7)")
async def change_workitem_state(
    workitem: str, request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    uid = _check_uid(workitem)
    body = await _dataset(request)
    state = _single(body, PROCEDURE_STEP_STATE)
    transaction = _single(body, TRANSACTION_UID)
    if not state:
        raise InvalidRequest("The payload has no Procedure Step State (0074,1000)")
    if transaction is not None:
        _check_uid(str(transaction), "Transaction")
    result = await run_in_threadpool(
        lambda: get_worklist(request).change_state(
            principal.tenant, uid, str(state), transaction, products=principal.products
        )
    )
    return _with_warning(Response(status_code=200), request, config, result)


@router.post("/workitems/{workitem}/cancelrequest", summary="Request Cancellation (PS3.18 §11.8)")
async def request_cancellation(
    workitem: str, request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    uid = _check_uid(workitem)
    info = await _dataset(request, required=False)
    result = await run_in_threadpool(
        lambda: get_worklist(request).request_cancel(
            principal.tenant, uid, info, products=principal.products
        )
    )
    return _with_warning(Response(status_code=202), request, config, result)


# -- subscriptions --------------------------------------------------------------------------


@router.post(
    "/workitems/{workitem}/subscribers/{ae_title}",
    status_code=201,
    summary="Subscribe (PS3.18 §11.10)",
)
async def subscribe(
    workitem: str, ae_title: str, request: Request, principal: PrincipalDep, config: ConfigDep
) -> Response:
    uid, ae = _check_uid(workitem), _check_ae(ae_title)
    params = request.query_params.multi_items()
    lock_values = [v for k, v in params if k.lower() == "deletionlock"]
    if lock_values and lock_values[0].lower() not in ("true", "false"):
        raise InvalidRequest(f"deletionlock must be true or false, not {lock_values[0]!r}")
    keys = [
        (k, v)
        for k, v in params
        if k.lower() not in ("deletionlock", "filter", "accept", "charset")
    ]
    filters = [v for k, v in params if k.lower() == "filter"]
    filter_text: str | None = None
    if uid == FILTERED_WORKLIST:
        pieces = [f"{k}={v}" for k, v in keys] + filters
        if not pieces:
            raise InvalidRequest("A filtered worklist subscription needs matching keys")
        filter_text = ",".join(pieces)
        # Validate now: a bad key is the subscriber's error, not a silent non-match later.
        parse_query(filter_pairs(filter_text), QueryLevel.IMAGE)
    elif keys or filters:
        raise InvalidRequest("Matching keys are only allowed for a filtered worklist subscription")
    await run_in_threadpool(
        lambda: get_worklist(request).subscribe(
            principal.tenant,
            ae,
            uid,
            deletion_lock=bool(lock_values) and lock_values[0].lower() == "true",
            filter_query=filter_text,
            products=principal.products,
        )
    )
    channel = config.service_url(request).replace("http", "ws", 1) + f"/subscribers/{ae}"
    return Response(status_code=201, headers={"Content-Location": channel})


@router.delete(
    "/workitems/{workitem}/subscribers/{ae_title}", summary="Unsubscribe (PS3.18 §11.11)"
)
async def unsubscribe(
    workitem: str, ae_title: str, request: Request, principal: PrincipalDep
) -> Response:
    uid, ae = _check_uid(workitem), _check_ae(ae_title)
    await run_in_threadpool(
        lambda: get_worklist(request).unsubscribe(
            principal.tenant, ae, uid, products=principal.products
        )
    )
    return Response(status_code=200)


@router.post(
    "/workitems/{workitem}/subscribers/{ae_title}/suspend",
    summary="Suspend Global or Filtered Subscription (PS3.18 §11.12)",
)
async def suspend(
    workitem: str, ae_title: str, request: Request, principal: PrincipalDep
) -> Response:
    uid, ae = _check_uid(workitem), _check_ae(ae_title)
    if uid not in (GLOBAL_WORKLIST, FILTERED_WORKLIST):
        raise InvalidRequest(
            "Only a global or filtered worklist subscription can be suspended "
            f"({GLOBAL_WORKLIST} or {FILTERED_WORKLIST})"
        )
    await run_in_threadpool(get_worklist(request).suspend, principal.tenant, ae, uid)
    return Response(status_code=200)


@router.websocket("/subscribers/{ae_title}")
async def event_channel(websocket: WebSocket, ae_title: str) -> None:
    """Open Event Channel (PS3.18 §11.13): events queued for the AE are sent as they
    appear, oldest first, each once; events queued while the AE was away are sent first."""
    try:
        ae = _check_ae(ae_title)
    except InvalidRequest:
        await websocket.close(code=1008)
        return
    principal = get_principal(websocket)  # type: ignore[arg-type]
    worklist: Worklist = websocket.app.state.worklist
    subprotocols = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="dicom" if "dicom" in subprotocols else None)
    after = 0
    receiver = asyncio.ensure_future(websocket.receive())
    try:
        with worklist.doorbell.listen() as bell:
            while True:
                bell.clear()
                events = await run_in_threadpool(
                    worklist.pending_events,
                    principal.tenant,
                    ae,
                    after,
                    products=principal.products,
                )
                for event in events:
                    report = {"00000110": {"vr": "US", "Value": [event.id % 65536]}, **event.report}
                    await websocket.send_text(json.dumps(report, separators=(",", ":")))
                    after = event.id
                if events:
                    await run_in_threadpool(
                        worklist.mark_delivered, principal.tenant, [e.id for e in events]
                    )
                    continue
                ring = asyncio.ensure_future(bell.wait())
                done, _ = await asyncio.wait(
                    {receiver, ring}, timeout=EVENT_POLL_SECONDS, return_when="FIRST_COMPLETED"
                )
                ring.cancel()
                if receiver in done:
                    message = receiver.result()
                    if message["type"] == "websocket.disconnect":
                        return
                    receiver = asyncio.ensure_future(websocket.receive())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        receiver.cancel()
