"""Reading the recorder's exchanges: which requests belong to which workitem, what a state
change asked for, what a STOW-RS stored."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from aifi.conformance_kit.performer.recorder import Exchange
from aifi.dicom_json import text
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.errors import InvalidRequest
from aifi.vendors.workitem import (
    PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_STATE,
    TRANSACTION_UID,
)

_WORKITEM = re.compile(r"/workitems/([0-9.]+)")
_CODE_PARAM = re.compile(r"ScheduledWorkitemCodeSequence\.CodeValue=([^&]+)", re.IGNORECASE)


def json_body(exchange: Exchange) -> dict[str, Any]:
    try:
        body = json.loads(exchange.body or b"{}")
    except ValueError:
        return {}
    if isinstance(body, list):
        body = body[0] if body else {}
    return body if isinstance(body, dict) else {}


def workitem_of(exchange: Exchange) -> str | None:
    match = _WORKITEM.search(exchange.path)
    return match.group(1) if match else None


def asked_codes(exchange: Exchange) -> list[str]:
    """Scheduled Workitem Code values a worklist search or subscription filtered on."""
    return [unquote(code) for code in _CODE_PARAM.findall(unquote(exchange.query))]


@dataclass
class StateChange:
    exchange: Exchange
    state: str
    transaction_uid: str | None


def state_changes(exchanges: Iterable[Exchange], uid: str) -> list[StateChange]:
    """PUT …/workitems/{uid}/state (Change Workitem State, PS3.18 §11.7), in order."""
    found = []
    for exchange in exchanges:
        if exchange.method == "PUT" and exchange.path.endswith(f"/workitems/{uid}/state"):
            body = json_body(exchange)
            found.append(
                StateChange(
                    exchange,
                    text(body, PROCEDURE_STEP_STATE) or "",
                    text(body, TRANSACTION_UID),
                )
            )
    return found


def claims(exchanges: Iterable[Exchange], uid: str | None = None) -> list[StateChange]:
    """Attempts to claim (state IN PROGRESS), of ``uid`` or of any workitem."""
    out = []
    for exchange in exchanges:
        if exchange.method != "PUT" or not exchange.path.endswith("/state"):
            continue
        of = workitem_of(exchange)
        if of is None or (uid is not None and of != uid):
            continue
        out += [c for c in state_changes([exchange], of) if c.state == "IN PROGRESS"]
    return out


def progress_updates(exchanges: Iterable[Exchange], uid: str) -> list[Exchange]:
    """Update Workitem (POST …/workitems/{uid}, §11.6) carrying UPS Progress Information."""
    return [
        exchange
        for exchange in exchanges
        if exchange.method == "POST"
        and exchange.path.endswith(f"/workitems/{uid}")
        and PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE in json_body(exchange)
    ]


def retrievals(exchanges: Iterable[Exchange], study_uid: str) -> list[Exchange]:
    """WADO-RS reads of the study's instances (not metadata, rendered or thumbnails)."""
    return [
        exchange
        for exchange in exchanges
        if exchange.method == "GET"
        and f"/studies/{study_uid}" in exchange.path
        and not exchange.path.rstrip("/").endswith(("/metadata", "/rendered", "/thumbnail"))
    ]


def stows(exchanges: Iterable[Exchange], start: float, end: float) -> list[Exchange]:
    return [
        exchange
        for exchange in exchanges
        if exchange.body_file is not None and start <= exchange.started <= end
    ]


def stored_datasets(exchange: Exchange) -> list[Dataset]:
    """The instances of a STOW-RS request (whatever the hub answered)."""
    if exchange.body_file is None or not exchange.body_file.exists():
        return []
    try:
        boundary = parse_media_type(exchange.content_type).params.get("boundary")
    except InvalidRequest:
        return []
    if not boundary:
        return []
    out: list[Dataset] = []
    for _headers, body in read_parts(exchange.body_file.read_bytes(), boundary):
        # a part that is not DICOM: the hub refused it and said why (that is the evidence)
        with suppress(InvalidDicomError, ValueError, EOFError):
            out.append(dcmread(io.BytesIO(body)))
    return out


def mentions(exchange: Exchange, uids: Iterable[str]) -> list[str]:
    """The UIDs named in the request's path or query."""
    where = exchange.path + "?" + exchange.query
    return [uid for uid in uids if uid in where]
