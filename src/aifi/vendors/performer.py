"""A UPS-RS Task Performer (IHE RAD TF AIW-I) that works the hub's worklist over HTTP.

One workitem's life, as the performer drives it (PS3.18 ch. 11, PS3.4 Annex CC)::

    RAD-81 Query UPS Workitems      GET  {s}/workitems?ProcedureStepState=SCHEDULED&...   §11.9
    RAD-82 Claim UPS Workitem       PUT  {s}/workitems/{uid}/state  IN PROGRESS + txn     §11.7
    RAD-83 Get UPS Workitem Contents GET {s}/workitems/{uid}                              §11.5
           retrieve the inputs      GET  Retrieve URL (0008,1190), WADO-RS                §10.4
           store the results        POST {s}/studies, STOW-RS                             §10.5
    RAD-84 Update UPS Workitem      POST {s}/workitems/{uid}?transaction={txn}            §11.6
    RAD-85 Complete UPS Workitem    PUT  {s}/workitems/{uid}/state  COMPLETED|CANCELED    §11.7

Triggered Pull: the performer subscribes its AE title to the worklist (RAD-86 Manage UPS
Subscription, §11.10) and listens on the event channel ``ws://…/subscribers/{AE}`` (RAD-109
Open Event Channel, §11.13; the reports are RAD-87 Send UPS Notification); any event wakes
it up to search again, so a new workitem is claimed within milliseconds instead of at the
next poll. Without the channel it falls back to polling.

The AI itself is an :class:`Analyzer`: input instances in, result instances out, or
:class:`AnalysisFailed` to discontinue the workitem with a reason. The push adapter
(:mod:`aifi.vendors.push`) and the reference analyzer (:mod:`aifi.vendors.reference`) are
two of them. This module talks to the hub only over HTTP (it must not import ``aifi.hub``).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.dicomweb.store import DicomJson
from aifi.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from aifi.vendors.workitem import (  # noqa: F401 - re-exported for adapters and tests
    CODE_VALUE,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    GLOBAL_WORKLIST,
    INPUT_INFORMATION_SEQUENCE,
    OUTPUT_INFORMATION_SEQUENCE,
    PERFORMED_PROCEDURE_STEP_END_DATETIME,
    PERFORMED_PROCEDURE_STEP_START_DATETIME,
    PERFORMED_WORKITEM_CODE_SEQUENCE,
    PRIORITIES,
    PROCEDURE_STEP_CANCELLATION_DATETIME,
    PROCEDURE_STEP_PROGRESS,
    PROCEDURE_STEP_PROGRESS_DESCRIPTION,
    PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_STATE,
    REASON_FOR_CANCELLATION,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    SCHEDULED_PROCEDURE_STEP_PRIORITY,
    SCHEDULED_PROCEDURE_STEP_START_DATETIME,
    SCHEDULED_WORKITEM_CODE_SEQUENCE,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    TRANSACTION_UID,
    TYPE_OF_INSTANCES,
    UPS_PERFORMED_PROCEDURE_SEQUENCE,
    WADO_RS_RETRIEVAL_SEQUENCE,
    InputReference,
    claim_order,
    element,
    first,
    input_references,
    items,
    now_dt,
    output_information,
)

__all__ = [
    "AnalysisFailed",
    "Analyzer",
    "Claimed",
    "Performer",
    "send",
]

log = logging.getLogger(__name__)


DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
RETRYABLE = frozenset({408, 429, 503, 504})
"""The only statuses retried (CONVENTIONS: outbound HTTP)."""
MAX_REASON = 1024
"""Reason For Cancellation (0074,1238) is LT (10240 chars); keep reasons readable."""


class AnalysisFailed(UpstreamError):
    """The AI product could not analyse the inputs; the workitem is discontinued
    (CANCELED) with :attr:`reason` as its Reason For Cancellation (0074,1238)."""


class Analyzer(Protocol):
    """The AI product behind a performer."""

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        """Result instances for ``inputs`` (possibly none); raise :class:`AnalysisFailed`
        to discontinue the workitem with a reason."""
        ...


@dataclass(frozen=True, slots=True)
class Claimed:
    """A workitem this performer holds: its UID, the Transaction UID that proves it
    (PS3.4 CC.1.1, never shown by the hub to anyone else) and its contents as read after
    the claim (RAD-83)."""

    uid: str
    transaction_uid: str
    workitem: DicomJson
    claimed_at: datetime


# -- DICOM JSON helpers (pure) -----------------------------------------------------------------


def part10(ds: Dataset) -> bytes:
    """``ds`` as PS3.10 bytes, adding File Meta Information when it has none."""
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ImplementationClassUID" not in ds.file_meta:
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_multipart_dicom(response: httpx.Response, what: str) -> list[Dataset]:
    """The instances of a ``multipart/related; type="application/dicom"`` answer;
    :class:`InvalidRequest` naming ``what`` when it is not one."""
    try:
        media = parse_media_type(response.headers.get("content-type", ""))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what}: unreadable Content-Type ({exc.reason})") from exc
    boundary = media.params.get("boundary")
    if media.mime != "multipart/related" or not boundary:
        raise InvalidRequest(
            f"{what}: expected {MULTIPART_DICOM}, got {media.mime or 'no Content-Type'}"
        )
    out: list[Dataset] = []
    try:
        for headers, body in read_parts(response.content, boundary):
            part_type = headers.get("content-type", "application/dicom").split(";")[0].strip()
            if part_type.lower() != "application/dicom":
                raise InvalidRequest(f"{what}: a part is {part_type}, not application/dicom")
            out.append(dcmread(io.BytesIO(body)))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise InvalidRequest(f"{what}: a part is not a DICOM instance ({exc})") from exc
    return out


def excerpt(response: httpx.Response, size: int = 200) -> str:
    """The status and first bytes of an answer, for reasons and logs."""
    text = response.content[:size].decode("utf-8", "replace").strip()
    warning = response.headers.get("warning")
    return (
        f"HTTP {response.status_code}"
        + (f" ({warning})" if warning else "")
        + (f": {text!r}" if text else "")
    )


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    **kwargs: Any,
) -> httpx.Response:
    """One HTTP request, retried only on 408/429/503/504 with exponential backoff
    (honouring a numeric ``Retry-After`` up to 30 s). Transport failures become
    :class:`UpstreamTimeout` / :class:`UpstreamError`; statuses are the caller's business."""
    for attempt in range(retries + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{method} {url} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{method} {url} failed: {exc}") from exc
        if response.status_code not in RETRYABLE or attempt == retries:
            return response
        delay = backoff * 2**attempt
        after = response.headers.get("retry-after", "")
        if after.isdigit():
            delay = min(float(after), 30.0)
        log.info("%s %s answered %s; retrying in %.1f s", method, url, response.status_code, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class Performer:
    """An AIW-I Task Performer for one product (Scheduled Workitem Code value) at one hub.

    ``dicomweb`` is the hub's DICOMweb base URL (``http://host:8000/dicomweb``). The
    performer owns ``client`` only when it made it (:meth:`close`, or use it as a context
    manager).
    """

    def __init__(
        self,
        dicomweb: str,
        product: str,
        ae_title: str,
        analyzer: Analyzer,
        *,
        client: httpx.Client | None = None,
        timeout: float | httpx.Timeout = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        search_limit: int = 50,
    ) -> None:
        if not dicomweb.startswith(("http://", "https://")):
            raise ValueError(f"The DICOMweb base URL must be http(s), not {dicomweb!r}")
        if not product.strip() or len(product) > 16:
            raise ValueError(f"A product code is a Code Value of 1-16 characters: {product!r}")
        if not (0 < len(ae_title) <= 16) or "\\" in ae_title or not ae_title.strip():
            raise ValueError(f"Not a valid AE title (1-16 characters): {ae_title!r}")
        self.dicomweb = dicomweb.rstrip("/")
        self.product = product
        self.ae_title = ae_title
        self.analyzer = analyzer
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.search_limit = search_limit

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Performer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return send(self.client, method, url, retries=self.retries, backoff=self.backoff, **kwargs)

    def _json(self, method: str, path: str, body: DicomJson | None = None, **kw: Any) -> Any:
        response = self._send(
            method,
            f"{self.dicomweb}{path}",
            content=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": DICOM_JSON, "Accept": DICOM_JSON},
            **kw,
        )
        if response.status_code >= 300:
            raise UpstreamError(f"{method} {path}: {excerpt(response)}")
        return response.json() if response.content else None

    # -- RAD-81 / RAD-82 / RAD-83 -------------------------------------------------------------

    def search(self) -> list[DicomJson]:
        """RAD-81 Query UPS Workitems: this product's SCHEDULED workitems whose inputs are
        READY, in :func:`claim_order`. One search per priority, so the most urgent are
        never cut off by the page limit."""
        found: list[DicomJson] = []
        for priority in PRIORITIES:
            params = {
                "ProcedureStepState": "SCHEDULED",
                "InputReadinessState": "READY",
                "ScheduledWorkitemCodeSequence.CodeValue": self.product,
                "ScheduledProcedureStepPriority": priority,
                "limit": str(self.search_limit),
            }
            found += self._json("GET", "/workitems", params=params) or []
        return claim_order(found)

    def claim(self, uid: str) -> Claimed | None:
        """RAD-82 Claim UPS Workitem with a new Transaction UID; None when another
        performer got it first (400 C301 "Transaction UID is incorrect", 409 C302 not
        SCHEDULED any more, 404 gone). Then RAD-83 reads what was claimed."""
        transaction = str(generate_uid())
        body = {
            PROCEDURE_STEP_STATE: element("CS", "IN PROGRESS"),
            TRANSACTION_UID: element("UI", transaction),
        }
        response = self._send(
            "PUT",
            f"{self.dicomweb}/workitems/{uid}/state",
            content=json.dumps(body).encode(),
            headers={"Content-Type": DICOM_JSON},
        )
        if response.status_code in (400, 404, 409):
            log.info("Workitem %s not claimed: %s", uid, excerpt(response))
            return None
        if response.status_code >= 300:
            raise UpstreamError(f"Claim of workitem {uid}: {excerpt(response)}")
        [workitem] = self._json("GET", f"/workitems/{uid}")
        return Claimed(uid, transaction, workitem, datetime.now(UTC))

    def claim_next(self) -> Claimed | None:
        """The most urgent, oldest workitem this performer could claim; None when there
        is none (or every candidate went to a faster performer)."""
        for workitem in self.search():
            uid = first(workitem, SOP_INSTANCE_UID)
            if uid and (claimed := self.claim(str(uid))) is not None:
                log.info("Claimed workitem %s for %s", uid, self.product)
                return claimed
        return None

    # -- retrieve, store, report --------------------------------------------------------------

    def retrieve_inputs(self, workitem: DicomJson) -> list[Dataset]:
        """The instances of the Input Information Sequence, by WADO-RS (PS3.18 §10.4) from
        each item's Retrieve URL (0008,1190) or, without one, the hub's series (or study)
        URL; limited to the Referenced SOP Sequence when the item lists instances."""
        out: list[Dataset] = []
        seen: set[str] = set()
        for ref in input_references(workitem):
            url = ref.retrieve_url or (
                f"studies/{ref.study_uid}" + (f"/series/{ref.series_uid}" if ref.series_uid else "")
            )
            if not url.startswith(("http://", "https://")):  # relative to the service root
                url = f"{self.dicomweb}/{url.lstrip('/')}"
            response = self._send(
                "GET", url, headers={"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}
            )
            if response.status_code != 200:
                raise UpstreamError(f"WADO-RS {url}: {excerpt(response)}")
            try:
                instances = read_multipart_dicom(response, f"WADO-RS {url}")
            except InvalidRequest as exc:
                raise UpstreamError(exc.reason) from exc
            for ds in instances:
                sop = str(ds.SOPInstanceUID)
                if (not ref.sop_uids or sop in ref.sop_uids) and sop not in seen:
                    seen.add(sop)
                    out.append(ds)
        return out

    def store(self, results: Sequence[Dataset]) -> None:
        """STOW-RS (PS3.18 §10.5) of the result instances; every one must be stored."""
        boundary = new_boundary()
        body = encode([("application/dicom", part10(ds)) for ds in results], boundary)
        response = self._send(
            "POST",
            f"{self.dicomweb}/studies",
            content=body,
            headers={
                "Content-Type": content_type("application/dicom", boundary),
                "Accept": DICOM_JSON,
            },
        )
        if response.status_code != 200:
            raise UpstreamError(f"STOW-RS of {len(results)} result(s): {excerpt(response)}")

    def update(self, claimed: Claimed, changes: DicomJson) -> None:
        """RAD-84 Update UPS Workitem (PS3.18 §11.6) under the claim's Transaction UID."""
        self._json(
            "POST",
            f"/workitems/{claimed.uid}",
            changes,
            params={"transaction": claimed.transaction_uid},
        )

    def report_progress(self, claimed: Claimed, percent: int, description: str) -> None:
        """Procedure Step Progress (0074,1004) 0-100 with a description (a Progress Report
        event for subscribers)."""
        self.update(
            claimed,
            {
                PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE: element(
                    "SQ",
                    {
                        PROCEDURE_STEP_PROGRESS: element("DS", str(max(0, min(100, percent)))),
                        PROCEDURE_STEP_PROGRESS_DESCRIPTION: element("ST", description[:1024]),
                    },
                )
            },
        )

    def change_state(self, claimed: Claimed, state: str) -> None:
        """RAD-85 Complete UPS Workitem: COMPLETED or CANCELED (PS3.18 §11.7)."""
        body = {
            PROCEDURE_STEP_STATE: element("CS", state),
            TRANSACTION_UID: element("UI", claimed.transaction_uid),
        }
        self._json("PUT", f"/workitems/{claimed.uid}/state", body)

    def complete(self, claimed: Claimed, results: Sequence[Dataset]) -> None:
        """The final state attributes of PS3.4 Table CC.2.5-3 (UPS Performed Procedure
        Sequence with start/end, performed code and outputs), then COMPLETED."""
        performed = {
            PERFORMED_PROCEDURE_STEP_START_DATETIME: element(
                "DT", claimed.claimed_at.strftime("%Y%m%d%H%M%S+0000")
            ),
            PERFORMED_PROCEDURE_STEP_END_DATETIME: element("DT", now_dt()),
            PERFORMED_WORKITEM_CODE_SEQUENCE: element(
                "SQ", *items(claimed.workitem, SCHEDULED_WORKITEM_CODE_SEQUENCE)[:1]
            ),
            OUTPUT_INFORMATION_SEQUENCE: element("SQ", *output_information(results, self.dicomweb)),
        }
        self.update(claimed, {UPS_PERFORMED_PROCEDURE_SEQUENCE: element("SQ", performed)})
        self.change_state(claimed, "COMPLETED")

    def discontinue(self, claimed: Claimed, reason: str) -> str:
        """Reason For Cancellation (0074,1238) in the Progress Information Sequence, then
        CANCELED. Returns the state the workitem is left in (read back when the hub refused,
        e.g. because the Task Manager canceled it first)."""
        reason = reason[:MAX_REASON]
        log.warning("Discontinuing workitem %s: %s", claimed.uid, reason)
        progress = {
            REASON_FOR_CANCELLATION: element("LT", reason),
            PROCEDURE_STEP_CANCELLATION_DATETIME: element("DT", now_dt()),
        }
        try:
            self.update(
                claimed,
                {PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE: element("SQ", progress)},
            )
            self.change_state(claimed, "CANCELED")
        except UpstreamError as exc:
            log.error("Workitem %s could not be discontinued: %s", claimed.uid, exc.reason)
            return self.state(claimed.uid)
        return "CANCELED"

    def state(self, uid: str) -> str:
        """The workitem's Procedure Step State as the hub has it now (e.g. CANCELED by the
        Task Manager's deadline while we worked); "UNKNOWN" when the hub cannot say."""
        try:
            [workitem] = self._json("GET", f"/workitems/{uid}")
        except (UpstreamError, ValueError) as exc:
            log.error("State of workitem %s unknown: %s", uid, exc)
            return "UNKNOWN"
        return str(first(workitem, PROCEDURE_STEP_STATE) or "UNKNOWN")

    def perform(self, claimed: Claimed) -> str:
        """Retrieve the inputs, analyse, store the results and complete the workitem; on
        :class:`AnalysisFailed`, hub errors or an analyzer bug, discontinue it with the
        reason. Returns the final Procedure Step State."""
        try:
            inputs = self.retrieve_inputs(claimed.workitem)
            if not inputs:
                raise AnalysisFailed("The workitem's Input Information Sequence names no instances")
            self.report_progress(claimed, 20, f"Retrieved {len(inputs)} input instance(s)")
            try:
                results = self.analyzer.analyze(claimed.workitem, inputs)
            except (AnalysisFailed, UpstreamError):
                raise
            except Exception as exc:  # a bug in the product's code must not strand the item
                log.exception("Analyzer failed on workitem %s", claimed.uid)
                raise AnalysisFailed(f"The analyzer raised {type(exc).__name__}: {exc}") from exc
            self.report_progress(claimed, 80, f"Analysis produced {len(results)} result(s)")
            if results:
                self.store(results)
            self.complete(claimed, results)
        except UpstreamError as exc:  # AnalysisFailed included
            return self.discontinue(claimed, exc.reason)
        log.info("Completed workitem %s with %d result(s)", claimed.uid, len(results))
        return "COMPLETED"

    # -- the loop -----------------------------------------------------------------------------

    def subscribe(self) -> str | None:
        """RAD-86 Manage UPS Subscription: subscribe this AE to the global worklist
        (PS3.18 §11.10); the event channel URL, or None when the hub refuses."""
        try:
            response = self._send(
                "POST", f"{self.dicomweb}/workitems/{GLOBAL_WORKLIST}/subscribers/{self.ae_title}"
            )
        except UpstreamError as exc:
            log.warning("Subscription failed (%s); polling instead", exc.reason)
            return None
        if response.status_code != 201:
            log.warning("Subscription refused (%s); polling instead", excerpt(response))
            return None
        fallback = self.dicomweb.replace("http", "ws", 1) + f"/subscribers/{self.ae_title}"
        return response.headers.get("content-location") or fallback

    def unsubscribe(self) -> None:
        """Unsubscribe this AE from the worklist (PS3.18 §11.11)."""
        try:
            response = self._send(
                "DELETE",
                f"{self.dicomweb}/workitems/{GLOBAL_WORKLIST}/subscribers/{self.ae_title}",
            )
        except UpstreamError as exc:
            log.warning("Unsubscribe failed: %s", exc.reason)
            return
        if response.status_code >= 300:
            log.info("Unsubscribe: %s", excerpt(response))

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_items: int | None = None,
        poll_seconds: float = 5.0,
        events: bool = True,
    ) -> int:
        """Claim and perform workitems until ``stop`` is set or ``max_items`` have been
        performed; returns how many were. Between searches it waits ``poll_seconds`` or,
        with ``events`` (Triggered Pull), until the event channel reports something."""
        stop = stop or threading.Event()
        done = 0
        with self._wakeups(events) as wait:
            while not stop.is_set() and (max_items is None or done < max_items):
                try:
                    claimed = self.claim_next()
                except UpstreamError as exc:
                    log.warning("Worklist search failed: %s", exc.reason)
                    claimed = None
                if claimed is not None:
                    self.perform(claimed)
                    done += 1
                    continue
                wait(stop, poll_seconds)
        return done

    def run_once(self) -> str | None:
        """Claim and perform at most one workitem, without waiting: its final state, or
        None when there was nothing to claim."""
        claimed = self.claim_next()
        return None if claimed is None else self.perform(claimed)

    @contextmanager
    def _wakeups(self, events: bool) -> Iterator[Callable[[threading.Event, float], bool]]:
        """A wait function: sleep until the poll interval passes, ``stop`` is set, or (with
        an open event channel) an event report arrives. Unsubscribes on the way out."""
        with ExitStack() as stack:
            channel = None
            if events and (url := self.subscribe()):
                stack.callback(self.unsubscribe)
                connection = _connect(url)
                if connection is not None:
                    channel = _Channel(stack.enter_context(connection))
            yield channel.wait if channel else (lambda stop, seconds: stop.wait(seconds))


# -- the event channel -------------------------------------------------------------------------


class _Channel:
    """A WebSocket event channel (PS3.18 §11.13): :meth:`wait` returns early when an
    event report arrives; events are only a wake-up call, the worklist is searched anyway."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.broken = False

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.broken:
                return stop.wait(remaining)
            try:
                self.connection.recv(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
            except (ConnectionClosed, OSError) as exc:
                log.warning("Event channel lost (%s); polling instead", exc)
                self.broken = True
                continue
            self._drain()
            return True
        return True

    def _drain(self) -> None:
        """Swallow events already queued: one search answers them all."""
        while True:
            try:
                self.connection.recv(timeout=0)
            except (TimeoutError, ConnectionClosed, OSError):
                return  # empty; a broken channel shows up at the next wait


def _connect(url: str) -> ClientConnection | None:
    try:
        return connect(url, subprotocols=["dicom"], open_timeout=10)  # type: ignore[list-item]
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        log.warning("Event channel %s could not be opened (%s); polling instead", url, exc)
        return None
