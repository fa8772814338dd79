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

Cancellation: while it performs a workitem the performer listens for a **UPS Cancel
Requested** event report (PS3.4 CC.2.4, Event Type ID 2; a Task Requester's Request
Cancellation, PS3.18 §11.8) on the same channel — or, in :meth:`Performer.run_once`, on a
channel opened for that workitem alone — and checks between steps (after retrieval, after
analysis, before storing), re-reading the workitem's state as well. A requested cancel is
honoured by discontinuing (RAD-85, CANCELED) with the requester's Reason For Cancellation; a
workitem already CANCELED (the Task Manager's deadline) is left alone. No result is stored
once a cancellation is known. Progress is reported (RAD-84, Procedure Step Progress
(0074,1004)) as the inputs arrive, when the analysis starts, and before storing.

The AI itself is an :class:`Analyzer`: input instances in, result instances out, or
:class:`AnalysisFailed` to discontinue the workitem with a reason. The push adapter
(:mod:`aifi.vendors.push`) and the reference analyzer (:mod:`aifi.vendors.reference`) are
two of them. This module talks to the hub only over HTTP (it must not import ``aifi.hub``).

Authorization: against a hub with authentication on, the performer is an OAuth2 client of
role performer (SMART Backend Services, ``client_credentials`` with ``private_key_jwt``):
give it ``auth`` (:class:`~aifi.oauth_client.ClientCredentials`, scopes
:data:`PERFORMER_SCOPES`) and every request — the event channel's WebSocket handshake
included — carries ``Authorization: Bearer …`` (RFC 6750 §2.1). Without it, it talks to a
hub in development mode.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from pydicom import Dataset
from pydicom.uid import generate_uid

from aifi.dicomweb.store import DicomJson
from aifi.errors import InvalidRequest, UpstreamError
from aifi.oauth_client import ClientCredentials, Credentials, TokenError, bearer_headers
from aifi.vendors.channel import Cancellation, EventChannel, open_channel
from aifi.vendors.transport import (
    MULTIPART_DICOM,
    RETRYABLE,
    excerpt,
    part10,
    read_multipart_dicom,
    send,
    stow_request,
)
from aifi.vendors.workitem import (  # noqa: F401 - re-exported for adapters and tests
    CODE_VALUE,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    FILTERED_WORKLIST,
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
    "MULTIPART_DICOM",
    "PERFORMER_SCOPES",
    "RETRYABLE",
    "AnalysisFailed",
    "Analyzer",
    "Claimed",
    "Performer",
    "excerpt",
    "part10",
    "performer_auth",
    "read_multipart_dicom",
    "send",
]

log = logging.getLogger(__name__)


DICOM_JSON = "application/dicom+json"
PERFORMER_SCOPES = ("dicomweb.read", "dicomweb.write", "worklist.performer")
"""What a Task Performer asks for: QIDO/WADO-RS of its inputs, STOW-RS of its results, the
UPS-RS worklist as a performer (aifi-hub's scopes, conformance statement §10)."""


def performer_auth(credentials: Credentials | None) -> ClientCredentials | None:
    """The ``httpx.Auth`` of a performer with these credentials (None: no token, a hub in
    development mode)."""
    return None if credentials is None else ClientCredentials(credentials, PERFORMER_SCOPES)


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


class Performer:
    """An AIW-I Task Performer for one product (Scheduled Workitem Code value) at one hub.

    ``dicomweb`` is the hub's DICOMweb base URL (``http://host:8000/dicomweb``). The
    performer owns ``client`` only when it made it (:meth:`close`, or use it as a context
    manager); a client it makes uses ``auth`` (module docstring), which also gives the event
    channel its token. One performer works one workitem at a time, from one thread.
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
        watch_cancel: bool = True,
        auth: ClientCredentials | None = None,
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
        self.auth = auth
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout, auth=auth)
        self.retries = retries
        self.backoff = backoff
        self.search_limit = search_limit
        self.watch_cancel = watch_cancel
        """Open an event channel per workitem (when :meth:`run` has none) to hear cancel
        requests; without it only a CANCELED state at the hub is noticed."""
        self._channel: EventChannel | None = None

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
        READY, in :func:`claim_order`. One search; only when it fills a page, one per
        priority, so the most urgent are never cut off by the page limit."""
        params = {
            "ProcedureStepState": "SCHEDULED",
            "InputReadinessState": "READY",
            "ScheduledWorkitemCodeSequence.CodeValue": self.product,
            "limit": str(self.search_limit),
        }
        found: list[DicomJson] = self._json("GET", "/workitems", params=params) or []
        if len(found) >= self.search_limit:
            found = []
            for priority in PRIORITIES:
                by_priority = {**params, "ScheduledProcedureStepPriority": priority}
                found += self._json("GET", "/workitems", params=by_priority) or []
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

    def retrieve_inputs(
        self,
        workitem: DicomJson,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> list[Dataset]:
        """The instances of the Input Information Sequence, by WADO-RS (PS3.18 §10.4) from
        each item's Retrieve URL (0008,1190) or, without one, the hub's series (or study)
        URL; limited to the Referenced SOP Sequence when the item lists instances.
        ``progress(n, total)`` is called after each item (``total`` None when an item does
        not list its instances)."""
        out: list[Dataset] = []
        seen: set[str] = set()
        refs = input_references(workitem)
        total = sum(len(r.sop_uids) for r in refs) if all(r.sop_uids for r in refs) else None
        for ref in refs:
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
            if progress is not None:
                progress(len(out), total)
        return out

    def store(self, results: Sequence[Dataset]) -> None:
        """STOW-RS (PS3.18 §10.5) of the result instances; every one must be stored."""
        body, headers = stow_request(results)
        response = self._send("POST", f"{self.dicomweb}/studies", content=body, headers=headers)
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

    def cancellation(self, uid: str) -> Cancellation | None:
        """A cancellation of workitem ``uid`` heard on the event channel (no request to the
        hub): an analyzer that runs long may call this to stop early."""
        return self._channel.cancellation(uid) if self._channel is not None else None

    def checkpoint(self, claimed: Claimed) -> None:
        """Between steps: raise :class:`_Stopped` when a cancel was requested (event) or the
        workitem is no longer IN PROGRESS at the hub (re-read, RAD-83)."""
        if (heard := self.cancellation(claimed.uid)) is not None:
            raise _Stopped(heard)
        state = self.state(claimed.uid)
        if state in ("CANCELED", "COMPLETED"):
            raise _Stopped(Cancellation(False, f"the workitem is {state} at the hub"), state)

    def perform(self, claimed: Claimed) -> str:
        """Retrieve the inputs, analyse, store the results and complete the workitem,
        reporting progress and stopping at a cancellation (module docstring); on
        :class:`AnalysisFailed`, hub errors or an analyzer bug, discontinue it with the
        reason. Returns the final Procedure Step State."""
        with self._watching(claimed.uid):
            try:
                return self._perform(claimed)
            finally:
                if self._channel is not None:
                    self._channel.forget(claimed.uid)

    def _perform(self, claimed: Claimed) -> str:
        def retrieved(n: int, total: int | None) -> None:
            percent = 5 + (35 * n // total if total else 0)
            of = f"/{total}" if total else ""
            self.report_progress(claimed, percent, f"Retrieved {n}{of} input instance(s)")

        try:
            inputs = self.retrieve_inputs(claimed.workitem, retrieved)
            if not inputs:
                raise AnalysisFailed("The workitem's Input Information Sequence names no instances")
            self.checkpoint(claimed)
            self.report_progress(claimed, 40, f"Analysing {len(inputs)} input instance(s)")
            try:
                results = self.analyzer.analyze(claimed.workitem, inputs)
            except (AnalysisFailed, UpstreamError):
                raise
            except Exception as exc:  # a bug in the product's code must not strand the item
                log.exception("Analyzer failed on workitem %s", claimed.uid)
                raise AnalysisFailed(f"The analyzer raised {type(exc).__name__}: {exc}") from exc
            self.checkpoint(claimed)
            self.report_progress(claimed, 80, f"Storing {len(results)} result(s)")
            self.checkpoint(claimed)  # never store for a cancelled workitem
            if results:
                self.store(results)
            self.complete(claimed, results)
        except _Stopped as stop:
            if stop.cancellation.requested:
                return self.discontinue(claimed, stop.cancellation.reason)
            log.warning("Workitem %s stopped: %s", claimed.uid, stop.cancellation.reason)
            return stop.state
        except UpstreamError as exc:  # AnalysisFailed included
            return self.discontinue(claimed, exc.reason)
        log.info("Completed workitem %s with %d result(s)", claimed.uid, len(results))
        return "COMPLETED"

    @contextmanager
    def _watching(self, uid: str) -> Iterator[None]:
        """Listen for cancellation while performing ``uid``: the run loop's channel when it
        has one, else (``watch_cancel``) a subscription to this workitem and a channel of
        its own, closed and unsubscribed afterwards."""
        if self._channel is not None and not self._channel.broken:
            yield
            return
        if not self.watch_cancel:
            yield
            return
        url = self.subscribe(uid)
        channel = self._open_channel(url) if url else None
        self._channel = channel
        try:
            yield
        finally:
            self._channel = None
            if channel is not None:
                channel.close()
            if url:
                self.unsubscribe(uid)

    # -- the loop -----------------------------------------------------------------------------

    def subscribe(
        self, uid: str = GLOBAL_WORKLIST, params: dict[str, str] | None = None
    ) -> str | None:
        """RAD-86 Manage UPS Subscription: subscribe this AE to the global or a filtered
        worklist, or to one workitem (PS3.18 §11.10); the event channel URL, or None when
        the hub refuses."""
        try:
            response = self._send(
                "POST",
                f"{self.dicomweb}/workitems/{uid}/subscribers/{self.ae_title}",
                params=params,
            )
        except UpstreamError as exc:
            log.warning("Subscription failed (%s); polling instead", exc.reason)
            return None
        if response.status_code != 201:
            log.warning("Subscription refused (%s); polling instead", excerpt(response))
            return None
        fallback = self.dicomweb.replace("http", "ws", 1) + f"/subscribers/{self.ae_title}"
        return response.headers.get("content-location") or fallback

    def _open_channel(self, url: str) -> EventChannel | None:
        """RAD-109 Open Event Channel with this performer's token; None (poll instead)
        when no token can be had or the channel cannot be opened."""
        try:
            headers = bearer_headers(self.auth)
        except (TokenError, httpx.HTTPError) as exc:
            log.warning("No access token for the event channel (%s); polling instead", exc)
            return None
        return open_channel(url, headers)

    def unsubscribe(self, uid: str = GLOBAL_WORKLIST) -> None:
        """Unsubscribe this AE from the worklist, or one workitem (PS3.18 §11.11)."""
        try:
            response = self._send(
                "DELETE", f"{self.dicomweb}/workitems/{uid}/subscribers/{self.ae_title}"
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
        an open event channel) an event report arrives. While it is open the channel also
        carries cancellations (:meth:`cancellation`). Unsubscribes on the way out."""
        with ExitStack() as stack:
            channel = None
            # The filtered worklist of this product's workitems (PS3.4 CC.3.2), so that
            # other products' events never reach this performer; else the global one.
            subscribed = FILTERED_WORKLIST
            url = None
            if events:
                url = self.subscribe(
                    FILTERED_WORKLIST,
                    {"filter": f"ScheduledWorkitemCodeSequence.CodeValue={self.product}"},
                )
                if url is None:
                    subscribed, url = GLOBAL_WORKLIST, self.subscribe()
            if url:
                # Last: from the global worklist, which also ends the subscriptions to each
                # workitem the hub made for this AE as they were created (PS3.4 CC.2.3).
                stack.callback(self.unsubscribe, GLOBAL_WORKLIST)
                if subscribed != GLOBAL_WORKLIST:
                    stack.callback(self.unsubscribe, subscribed)
                channel = self._open_channel(url)
                if channel is not None:
                    stack.callback(channel.close)
                    self._channel = channel
                    stack.callback(setattr, self, "_channel", None)
            yield channel.wait if channel else (lambda stop, seconds: stop.wait(seconds))


class _Stopped(Exception):
    """A workitem must not go on (see :meth:`Performer.checkpoint`)."""

    def __init__(self, cancellation: Cancellation, state: str = "CANCELED") -> None:
        super().__init__(cancellation.reason)
        self.cancellation = cancellation
        self.state = state
