"""Following the hub's FHIR changes from inside the hospital: one cursor per followed query
(the EPD push, each Subscription relayed to the EPD), durable in the gateway's database
(``gw_fhir_follow``, :mod:`aifi.gateway.persistence.fhir_tables`).

**Why polling.** The hub never opens a connection into the hospital (ARCHITECTURE.md,
"Topology"): a rest-hook Subscription at the hub could not reach the EPD. So the gateway
asks the hub itself, through its own FHIR client (:class:`aifi.gateway.fhir.hub_fhir.HubFhir`),
for what changed — the pull form of a subscription, as the R5 Subscriptions Backport IG's
``$events`` operation lets a subscriber fetch its events instead of receiving them.

**One poll** (:meth:`ChangeFollower.poll`): the query (already pseudonymised by the caller)
plus ``_lastUpdated=ge<cursor>&_sort=_lastUpdated&_count=<page>`` (FHIR R4 search.html#date,
#_sort, #count). The hub matches ``_lastUpdated`` to the second, so a change in the cursor's
own second comes again; the keys ``Type/id/versionId`` taken in that second are kept with the
cursor (``boundary``) and skipped — each version is handed over once (de-duplication by
resource id and ``meta.versionId``). The new changes are handed to ``record`` *in the
transaction that moves the cursor*: an outbox row written there is never lost by a restart
and never written twice. A full page is followed by the next one at once.

**The hub unreachable** (:class:`aifi.errors.UpstreamError` from the client: no connection,
a timeout, a 5xx) or refusing the query (another ``HubError``, a 4xx): the follow keeps its
cursor, counts the failure and waits with exponential backoff
(:func:`aifi.hub.persistence.outbox.retry_delay`) before it asks again; the caller is told
why (``hub unreachable: …``; a relayed Subscription shows it in ``Subscription.error``).

A new follow starts at the gateway's present time: it reports changes made after it was
set up, as a Subscription at the hub would (FHIR R4 subscription.html: notifications are
about changes after the subscription is active). Gateway and hub share NTP time; a clock
that runs ahead of the hub's by more than the poll interval would hide that much.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlmodel import Session

from aifi.clock import Clock, as_utc, utc_now
from aifi.errors import HubError, UpstreamError
from aifi.fhir.types import Resource
from aifi.gateway.persistence.fhir_tables import FhirFollow
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay

log = logging.getLogger(__name__)

_ERROR_CHARS = 2000
HUB_UNREACHABLE = "hub unreachable"
RESULT_PARAMETERS = frozenset({"_count", "_offset", "_sort", "_summary", "_include", "_total"})
"""Result parameters of a followed query: the follower sets its own paging and order."""
_SECOND = "%Y-%m-%dT%H:%M:%SZ"


class HubSearch(Protocol):
    """What the follower uses of the gateway's FHIR client of the hub
    (:class:`aifi.gateway.fhir.hub_fhir.HubFhir`)."""

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """One page of a search as a Bundle; ``UpstreamError`` when the hub cannot be
        reached or fails."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    """One new version of a resource at the hub, as the hub holds it (pseudonymised)."""

    resource_type: str
    resource_id: str
    version_id: str
    last_updated: str
    """``meta.lastUpdated`` as the hub wrote it."""
    resource: Resource

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/{self.version_id}"

    @property
    def moment(self) -> datetime:
        return _moment(self.last_updated)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one :meth:`ChangeFollower.poll` did: the changes handed over, or why the hub
    could not be asked (``error``); ``skipped`` when the follow was waiting for its backoff."""

    changes: int = 0
    error: str | None = None
    skipped: bool = False


Record = Callable[[Session, Sequence[Change]], None]
"""``record(session, changes)``: write what the changes mean (outbox rows), in the
transaction that moves the cursor."""


def _moment(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _second(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_SECOND)


def _changes(bundle: dict[str, Any]) -> list[Change]:
    out = []
    for entry in bundle.get("entry") or []:
        resource = (entry or {}).get("resource")
        if not isinstance(resource, dict) or (entry.get("search") or {}).get("mode") == "include":
            continue
        meta = resource.get("meta") or {}
        if not resource.get("id") or not meta.get("lastUpdated"):
            continue
        out.append(
            Change(
                resource_type=str(resource.get("resourceType")),
                resource_id=str(resource["id"]),
                version_id=str(meta.get("versionId") or "1"),
                last_updated=str(meta["lastUpdated"]),
                resource=resource,
            )
        )
    out.sort(key=lambda c: c.moment)
    return out


def start_follow(session: Session, name: str, since: datetime) -> None:
    """Begin following ``name`` from ``since`` (in the caller's transaction), unless it is
    followed already."""
    if session.get(FhirFollow, name) is None:
        session.add(FhirFollow(name=name, cursor=_second(since), next_poll_at=since))


def forget_follow(session: Session, name: str) -> None:
    """Stop following ``name`` (in the caller's transaction)."""
    follow = session.get(FhirFollow, name)
    if follow is not None:
        session.delete(follow)


class ChangeFollower:
    """Follows queries at the hub, each by its own durable cursor (module docstring)."""

    def __init__(
        self,
        db: Database,
        hub: HubSearch,
        *,
        clock: Clock = utc_now,
        page_size: int = 100,
        min_interval_seconds: float = 0.0,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError("backoff durations must be positive (max >= first)")
        self.db = db
        self.hub = hub
        self.clock = clock
        self.page_size = page_size
        self.min_interval_seconds = min_interval_seconds
        """After a good poll, a follow is not asked again for this long (a worker woken
        early, e.g. to send a backlog, does not ask the hub again at once)."""
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def error(self, name: str) -> str | None:
        """Why the last poll of ``name`` failed (None: it succeeded, or none happened)."""
        with self.db.read() as session:
            row = session.get(FhirFollow, name)
            return row.last_error if row is not None else None

    # -- polling ----------------------------------------------------------------------------

    def poll(
        self,
        name: str,
        resource_type: str,
        params: list[tuple[str, str]],
        record: Record,
    ) -> PollOutcome:
        """Ask the hub for what changed since the cursor of ``name`` and hand the new
        changes to ``record`` page by page (module docstring). ``params``: the query as the
        hub must see it (pseudonymised); its result parameters (:data:`RESULT_PARAMETERS`)
        are replaced by the follower's own."""
        now = self.clock()
        with self.db.write() as session:
            follow = session.get(FhirFollow, name)
            if follow is None:
                follow = FhirFollow(name=name, cursor=_second(now))
                session.add(follow)
            if as_utc(follow.next_poll_at) > now:
                return PollOutcome(skipped=True, error=follow.last_error)
            cursor, boundary = follow.cursor, set(json.loads(follow.boundary or "[]"))
        criteria = [(k, v) for k, v in params if k not in RESULT_PARAMETERS]
        taken = 0
        while True:
            query = [
                *criteria,
                ("_lastUpdated", f"ge{_second(_moment(cursor))}"),
                ("_sort", "_lastUpdated"),
                ("_count", str(self.page_size)),
            ]
            try:
                bundle = self.hub.search(resource_type, query)
            except UpstreamError as exc:
                return self._failed(name, f"{HUB_UNREACHABLE}: {exc.reason}")
            except HubError as exc:  # a 4xx: the hub refuses the query as it stands
                return self._failed(name, f"the hub refused the search: {exc.reason}")
            page = _changes(bundle)
            new = [c for c in page if c.key not in boundary]
            if new:
                newest = max(new, key=lambda c: c.moment)
                top = _second(newest.moment)
                same = {c.key for c in new if _second(c.moment) == top}
                boundary = boundary | same if top == _second(_moment(cursor)) else same
                cursor = newest.last_updated
            with self.db.write() as session:
                follow = session.get(FhirFollow, name, with_for_update=not self.db.is_sqlite)
                if follow is None:  # forgotten meanwhile (a Subscription deleted)
                    return PollOutcome(changes=taken)
                if new:
                    record(session, new)
                follow.cursor = cursor
                follow.boundary = json.dumps(sorted(boundary))
                follow.attempts = 0
                follow.last_error = None
                follow.next_poll_at = now + timedelta(seconds=self.min_interval_seconds)
                follow.polled_at = now
                session.add(follow)
            taken += len(new)
            if len(page) < self.page_size or not new:
                if len(page) >= self.page_size:
                    log.warning(
                        "%s: a full page of changes within one second of the hub; "
                        "more than %d changes in one second are not followed",
                        name,
                        self.page_size,
                    )
                return PollOutcome(changes=taken)

    def _failed(self, name: str, reason: str) -> PollOutcome:
        now = self.clock()
        with self.db.write() as session:
            follow = session.get(FhirFollow, name)
            if follow is None:
                return PollOutcome(error=reason)
            follow.attempts += 1
            delay = retry_delay(follow.attempts, self.backoff_seconds, self.max_backoff_seconds)
            follow.next_poll_at = now + timedelta(seconds=delay)
            follow.last_error = reason[:_ERROR_CHARS]
            follow.polled_at = now
            session.add(follow)
        log.warning("following %s at the hub failed (retry in %.0f s): %s", name, delay, reason)
        return PollOutcome(error=reason)


__all__ = [
    "HUB_UNREACHABLE",
    "Change",
    "ChangeFollower",
    "HubSearch",
    "PollOutcome",
    "Record",
    "forget_follow",
    "start_follow",
]
