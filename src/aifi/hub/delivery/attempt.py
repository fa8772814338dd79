"""One attempt to deliver one claimed ``delivery`` row (:mod:`aifi.hub.delivery.deliverer`
claims and records it): the result's instances the PACS has not yet confirmed, read from the
hub's store and sent in chunks with the destination's client
(:mod:`aifi.hub.delivery.destinations`), outside any database transaction; and how a failed
attempt is described in ``last_error``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.uid import UID
from sqlmodel import col, select

from aifi.dicomweb.store import DicomStore
from aifi.hub.delivery.destinations import (
    Destination,
    DestinationsConfig,
    OutgoingInstance,
    PacsClient,
    SendOutcome,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AiResult, ResultInstance

log = logging.getLogger("aifi.hub.delivery.deliverer")

CHUNK = 16
"""Instances per send (one STOW-RS request / one association); confirmations are
recorded after each."""
_ERROR_ITEMS = 5


def confirmed_uids(packed: str) -> list[str]:
    """The SOP Instance UIDs of a row's ``delivered_sop_uids`` (a JSON list)."""
    value = json.loads(packed or "[]")
    return [str(v) for v in value] if isinstance(value, list) else []


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


@dataclass
class Claim:
    """One row this process holds: the fencing token is (attempt, lease_until)."""

    pk: int
    tenant: str
    result_pk: int
    destination: str
    attempt: int
    lease_until: datetime
    confirmed: set[str] = field(default_factory=set)


@dataclass
class Attempt:
    """What one attempt found out: instances confirmed, and why the others were not."""

    wanted: list[str]
    """Every SOP Instance UID of the result (empty: nothing to deliver)."""
    sop_classes: dict[str, str] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    failures: dict[str, SendOutcome] = field(default_factory=dict)
    error: str | None = None
    """A failure of the attempt as a whole (retryable), e.g. an internal error."""
    lost: bool = False
    """The lease was taken over by another process meanwhile: record nothing but UIDs."""


@dataclass
class Sender:
    """Sends what the PACS has not confirmed yet of a claimed row's result."""

    db: Database
    store: DicomStore
    destinations: DestinationsConfig
    client_factory: Callable[[Destination], PacsClient]

    def attempt(self, claim: Claim, progress: Callable[[Claim, Attempt], bool]) -> Attempt:
        """Send what the PACS has not confirmed yet; the network I/O is here, outside any
        database transaction. ``progress`` records the confirmations after each chunk but
        the last and renews the lease (False: the row is no longer this process's)."""
        with self.db.read() as session:
            result = session.get(AiResult, claim.result_pk)
            instances = (
                list(
                    session.exec(
                        select(ResultInstance)
                        .where(
                            col(ResultInstance.tenant) == result.tenant,
                            col(ResultInstance.workitem_uid) == result.workitem_uid,
                        )
                        .order_by(col(ResultInstance.pk))
                    ).all()
                )
                if result is not None
                else []
            )
        attempt = Attempt(
            wanted=[i.sop_instance_uid for i in instances],
            sop_classes={i.sop_instance_uid: i.sop_class_uid for i in instances},
        )
        todo = [i for i in instances if i.sop_instance_uid not in claim.confirmed]
        if not todo:
            return attempt
        destination = self.destinations.destination(claim.tenant, claim.destination)
        if destination is None:
            for item in todo:
                attempt.failures[item.sop_instance_uid] = SendOutcome(
                    sop_instance_uid=item.sop_instance_uid,
                    delivered=False,
                    retryable=False,
                    reason="the destination is no longer configured for this tenant",
                )
            return attempt
        outgoing = self._outgoing(claim.tenant, todo, attempt)
        if not outgoing:
            return attempt
        client = self.client_factory(destination)
        try:
            for start in range(0, len(outgoing), CHUNK):
                chunk = outgoing[start : start + CHUNK]
                try:
                    outcomes = client.send(chunk)
                except Exception as exc:  # the client should not raise; if it does, retry
                    log.exception("PACS client for %r raised", claim.destination)
                    outcomes = [
                        SendOutcome(
                            sop_instance_uid=o.sop_instance_uid,
                            delivered=False,
                            retryable=True,
                            reason=f"{type(exc).__name__}: {exc}",
                        )
                        for o in chunk
                    ]
                by_uid = {o.sop_instance_uid: o for o in outcomes}
                for sent in chunk:
                    outcome = by_uid.get(sent.sop_instance_uid) or SendOutcome(
                        sop_instance_uid=sent.sop_instance_uid,
                        delivered=False,
                        retryable=True,
                        reason="the PACS's answer did not mention this instance",
                    )
                    if outcome.delivered:
                        attempt.confirmed.add(sent.sop_instance_uid)
                    else:
                        attempt.failures[sent.sop_instance_uid] = outcome
                if start + CHUNK < len(outgoing) and not progress(claim, attempt):
                    attempt.lost = True
                    break
        finally:
            client.close()
        return attempt

    def _outgoing(
        self, tenant: str, todo: Sequence[ResultInstance], attempt: Attempt
    ) -> list[OutgoingInstance]:
        """The stored files of ``todo``; one missing from the hub's store is a failure."""
        stored = {}
        for study_uid, series_uid in dict.fromkeys(
            (i.study_instance_uid, i.series_instance_uid) for i in todo
        ):
            for s in self.store.find_instances(tenant, study_uid, series_uid):
                stored[s.sop_instance_uid] = s
        outgoing = []
        for item in todo:
            found = stored.get(item.sop_instance_uid)
            if found is None or not found.path.is_file():
                attempt.failures[item.sop_instance_uid] = SendOutcome(
                    sop_instance_uid=item.sop_instance_uid,
                    delivered=False,
                    retryable=False,
                    reason="not in the hub's store",
                )
                continue
            outgoing.append(
                OutgoingInstance(
                    sop_class_uid=found.sop_class_uid,
                    sop_instance_uid=found.sop_instance_uid,
                    transfer_syntax_uid=found.transfer_syntax_uid,
                    path=found.path,
                )
            )
        return outgoing


def describe(claim: Claim, attempt: Attempt, missing: Sequence[str]) -> tuple[str, bool]:
    """A failed attempt (some of ``attempt.wanted`` still ``missing``) as ``last_error``
    starts, and whether a later attempt may succeed: ``attempt N to 'dest': uid (SOP
    class): reason; …``, instances with the same reason grouped (a PACS that is down gives
    one reason for all)."""
    prefix = f"attempt {claim.attempt} to {claim.destination!r}: "
    if attempt.error is not None:
        return prefix + attempt.error, True
    if not attempt.wanted:
        return prefix + "the result has no instances", False
    failures = {
        uid: attempt.failures.get(uid)
        or SendOutcome(sop_instance_uid=uid, delivered=False, retryable=True, reason="not sent")
        for uid in missing
    }
    by_reason: dict[str, list[str]] = defaultdict(list)
    for uid, outcome in failures.items():
        by_reason[outcome.reason or "no reason given"].append(uid)
    parts = []
    for reason, uids in by_reason.items():
        named = [
            f"{uid} ({_sop_class_name(attempt.sop_classes[uid])})"
            if uid in attempt.sop_classes
            else uid
            for uid in uids[:_ERROR_ITEMS]
            if uid
        ]
        if len(uids) > _ERROR_ITEMS:
            named.append(f"and {len(uids) - _ERROR_ITEMS} more")
        parts.append(f"{', '.join(named)}: {reason}" if named else reason)
    return prefix + "; ".join(parts), any(o.retryable for o in failures.values())
