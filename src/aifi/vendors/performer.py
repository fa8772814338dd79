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

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Protocol

import httpx
from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.errors import AifiError, UpstreamError
from aifi.oauth_client import ClientCredentials, Credentials
from aifi.vendors.channel import Cancellation, EventChannel
from aifi.vendors.transport import (
    MULTIPART_DICOM,
    RETRYABLE,
    excerpt,
    part10,
    read_multipart_dicom,
    send,
)
from aifi.vendors.ups_client import Claimed, UpsClient
from aifi.vendors.workitem import FILTERED_WORKLIST, GLOBAL_WORKLIST

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

log = logging.getLogger("aifi.vendors.performer")


PERFORMER_SCOPES = ("dicomweb.read", "dicomweb.write", "worklist.performer")
"""What a Task Performer asks for: QIDO/WADO-RS of its inputs, STOW-RS of its results, the
UPS-RS worklist as a performer (aifi-hub's scopes, conformance statement §10)."""


def performer_auth(credentials: Credentials | None) -> ClientCredentials | None:
    """The ``httpx.Auth`` of a performer with these credentials (None: no token, a hub in
    development mode)."""
    return None if credentials is None else ClientCredentials(credentials, PERFORMER_SCOPES)


class AnalysisFailed(UpstreamError):
    """The AI product could not analyse the inputs; the workitem is discontinued
    (CANCELED) with :attr:`reason` as its Reason For Cancellation (0074,1238)."""


class Analyzer(Protocol):
    """The AI product behind a performer."""

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        """Result instances for ``inputs`` (possibly none); raise :class:`AnalysisFailed`
        to discontinue the workitem with a reason."""
        ...


class Performer(UpsClient):
    """An AIW-I Task Performer for one product (Scheduled Workitem Code value) at one hub.

    ``dicomweb`` is the hub's DICOMweb base URL (``http://host:8000/dicomweb``). The
    performer owns ``client`` only when it made it (:meth:`close`, or use it as a context
    manager); a client it makes uses ``auth`` (module docstring), which also gives the event
    channel its token. One performer works one workitem at a time, from one thread. The
    UPS-RS requests it makes are :class:`~aifi.vendors.ups_client.UpsClient`'s.
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
        super().__init__(
            dicomweb,
            product,
            ae_title,
            client=client,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            search_limit=search_limit,
            auth=auth,
        )
        self.analyzer = analyzer
        self.watch_cancel = watch_cancel
        """Open an event channel per workitem (when :meth:`run` has none) to hear cancel
        requests; without it only a CANCELED state at the hub is noticed."""
        self._channel: EventChannel | None = None

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


class _Stopped(AifiError):
    """A workitem must not go on (see :meth:`Performer.checkpoint`)."""

    def __init__(self, cancellation: Cancellation, state: str = "CANCELED") -> None:
        super().__init__(cancellation.reason)
        self.cancellation = cancellation
        self.state = state
