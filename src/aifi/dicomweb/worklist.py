"""What the UPS-RS router needs from a worklist (PS3.18 ch. 11, PS3.4 Annex CC).

The router speaks HTTP; a :class:`Worklist` keeps the workitems, their state, the
subscriptions and the events waiting for each subscriber. The hub implements it on its
database (:class:`aifi.hub.worklist.service.SqlWorklist`), where every state change happens in one
transaction under a row lock, so two performers can never hold the same workitem.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from aifi.dicom_json import DicomJson
from aifi.dicomweb.qido_query import QidoQuery, QueryResult, parse_query
from aifi.dicomweb.query_attributes import QueryLevel
from aifi.errors import HubError, InvalidRequest
from aifi.ihe_profiles.ups import UpsStatus

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
"""UPS Push SOP Class: the SOP Class UID of every workitem (PS3.4 CC.3.1)."""
UPS_EVENT_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.4"
"""UPS Event SOP Class: the Affected SOP Class UID of event reports."""
GLOBAL_WORKLIST = "1.2.840.10008.5.1.4.34.5"
"""Well-known UID standing for the global worklist in subscription URLs (PS3.4 CC.3.1)."""
FILTERED_WORKLIST = "1.2.840.10008.5.1.4.34.5.1"
"""Well-known UID standing for a filtered worklist subscription."""


class UpsError(HubError):
    """A UPS request the standard refuses, with the HTTP status and Warning text of its
    :class:`~aifi.ihe_profiles.ups.UpsStatus` (PS3.18 ch. 11, PS3.4 CC.2)."""

    def __init__(self, status: UpsStatus, detail: str = "") -> None:
        super().__init__(status.text + (f" ({detail})" if detail else ""))
        self.status = status
        self.status_code = status.http


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The workitem after an action (DICOM JSON, no Transaction UID) and the warning the
    response carries when the request succeeded without changing anything (B304, B306)."""

    workitem: DicomJson
    warning: UpsStatus | None = None


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event report for one subscriber: its sequence number and DICOM JSON."""

    id: int
    report: DicomJson


class Doorbell:
    """Wakes the open event channels of this process when events were queued, so an
    event reaches its subscriber at once instead of at the channel's next look at the
    database (which stays, slower, for events queued by other hub processes).

    :meth:`ring` may be called from any thread; :meth:`listen` runs on the event loop."""

    def __init__(self) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()

    def ring(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """An event set each time the bell rings, for as long as the block runs (clear it
        before looking at the database, so no ring between look and wait is lost)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters.discard(entry)


class Worklist(Protocol):
    """The worklist the UPS-RS router drives.

    ``products`` (keyword) is the restriction of an AI product's Task Performer
    (:attr:`aifi.principal.Principal.products`): with a set, only the workitems of those
    products exist for the call — another product's workitem answers exactly as an unknown
    one (C307 "No such SOP Instance", 404), a search does not find it, a global or filtered
    subscription neither subscribes to it nor delivers its events (issue 6, "who is who").
    ``None``: every workitem of the tenant."""

    doorbell: Doorbell

    def create(self, tenant: str, uid: str, attributes: DicomJson) -> DicomJson:
        """Create Workitem (PS3.18 §11.4, N-CREATE). Raises Conflict when ``uid`` exists,
        InvalidRequest when the data set is not a valid SCHEDULED workitem."""
        ...

    def retrieve(
        self, tenant: str, uid: str, *, products: frozenset[str] | None = None
    ) -> DicomJson:
        """Retrieve Workitem (§11.5): the whole UPS except its Transaction UID."""
        ...

    def update(
        self,
        tenant: str,
        uid: str,
        changes: DicomJson,
        transaction_uid: str | None,
        *,
        products: frozenset[str] | None = None,
    ) -> ActionResult:
        """Update Workitem (§11.6, N-SET)."""
        ...

    def change_state(
        self,
        tenant: str,
        uid: str,
        state: str,
        transaction_uid: str | None,
        *,
        products: frozenset[str] | None = None,
    ) -> ActionResult:
        """Change Workitem State (§11.7, N-ACTION Type 1)."""
        ...

    def request_cancel(
        self, tenant: str, uid: str, info: DicomJson, *, products: frozenset[str] | None = None
    ) -> ActionResult:
        """Request Cancellation (§11.8, N-ACTION Type 2, Request UPS Cancel)."""
        ...

    def search(
        self, tenant: str, query: QidoQuery, *, products: frozenset[str] | None = None
    ) -> QueryResult:
        """Search for Workitems (§11.9), matching as QIDO-RS does."""
        ...

    def subscribe(
        self,
        tenant: str,
        ae_title: str,
        uid: str,
        *,
        deletion_lock: bool = False,
        filter_query: str | None = None,
        products: frozenset[str] | None = None,
    ) -> None:
        """Subscribe (§11.10) to one workitem, the global or a filtered worklist."""
        ...

    def unsubscribe(
        self, tenant: str, ae_title: str, uid: str, *, products: frozenset[str] | None = None
    ) -> None:
        """Unsubscribe (§11.11); from the global worklist: from everything."""
        ...

    def suspend(self, tenant: str, ae_title: str, uid: str) -> None:
        """Suspend a global or filtered subscription (§11.12): no new workitems are
        subscribed; existing workitem subscriptions stay."""
        ...

    def pending_events(
        self, tenant: str, ae_title: str, after: int, *, products: frozenset[str] | None = None
    ) -> Sequence[PendingEvent]:
        """Events for ``ae_title`` not yet delivered, oldest first, after id ``after``."""
        ...

    def mark_delivered(self, tenant: str, event_ids: Sequence[int]) -> None:
        """Note that events reached their subscriber (they are not sent again)."""
        ...


def filter_pairs(text: str) -> list[tuple[str, str]]:
    """The matching keys of a filter (PS3.18 §11.10.1.2: ``1#(attribute "=" value)``,
    comma-separated). A piece without ``=`` continues the previous value, so value lists
    (``Priority=HIGH,MEDIUM``, UID lists) survive the commas."""
    pairs: list[tuple[str, str]] = []
    for piece in text.split(","):
        if "=" in piece:
            key, _, val = piece.partition("=")
            pairs.append((key.strip(), val))
        elif pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + "," + piece)
        elif piece.strip():
            raise InvalidRequest(f"The filter has no attribute=value pair: {piece!r}")
    return pairs


def parse_filter(text: str | None) -> QidoQuery | None:
    """A filtered subscription's matching keys, validated as QIDO-RS match keys."""
    if not text:
        return None
    return parse_query(filter_pairs(text), QueryLevel.IMAGE)
