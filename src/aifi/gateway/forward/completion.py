"""The hub's completion signal for each original study (IHE AIW-I: the Task Manager routes
a study at once when its sender says it is complete, instead of after its quiet period).

A ``gw_study`` row (:class:`~aifi.gateway.persistence.tables.StudyProgress`) is the outbox entry of
its study's signal. It is looked at when it is **due**: ``DUE`` (the ingest side sets it
when the DIMSE association that brought the study ends), or ``OPEN`` with no instance
received for ``quiet_seconds`` (studies pushed over STOW-RS have no association to end);
and only once no instance of the study waits to be forwarded (none ``RECEIVED`` or
``FORWARDING``). Then:

* at least one instance ``FORWARDED``: ``POST {hub}/api/v1/studies/{pseudo}/complete``
  with the study's pseudonym -> ``SIGNALLED``; a transient failure (HTTP 408/429/503/504,
  no connection, a timeout; also 401/403, which an operator fixes at the hub) -> retried
  with backoff, ``last_error`` says why; a refusal for good (e.g. 404) -> ``FAILED``;
* none forwarded (every instance quarantined or refused by the hub) -> ``FAILED`` without
  a signal: the hub holds nothing of the study; ``last_error`` gives the counts.

Instances of the study that arrive later make the ingest side set the row ``OPEN`` (or
``DUE``) again with a new ``last_received_at``; the study is then signalled again once they
are forwarded. The hub routes a study again after a second signal when it changed since it
was last routed (late instances: a SCHEDULED workitem gets the new inputs, a claimed one is
followed by a new workitem; :mod:`aifi.hub.orchestration.task_manager`). The result of a signal is
recorded only if the row did not change meanwhile (same ``completion`` and
``last_received_at``), so a signal sent while a new instance arrived is never taken for the
signal of the grown study.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_
from sqlmodel import col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.gateway.forward.stow_client import HubClient
from aifi.gateway.persistence.tables import (
    CompletionState,
    InstanceState,
    ReceivedInstance,
    StudyProgress,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay

WAITING = (InstanceState.RECEIVED, InstanceState.FORWARDING)


@dataclass(frozen=True, slots=True)
class _Seen:
    """A due study as read; its outcome is recorded only if it is still so."""

    pk: int
    study_instance_uid: str
    pseudo_study_instance_uid: str | None
    completion: CompletionState
    last_received_at: datetime


class CompletionSignals:
    """Sends the completion signals that are due (module docstring); one step of
    :meth:`aifi.gateway.forward.Forwarder.tick`."""

    def __init__(
        self,
        db: Database,
        client: HubClient,
        *,
        clock: Clock = utc_now,
        quiet_seconds: float,
        backoff_seconds: float,
        max_backoff_seconds: float,
        batch_size: int,
    ) -> None:
        self.db = db
        self.client = client
        self.clock = clock
        self.quiet_seconds = quiet_seconds
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.batch_size = batch_size

    def _due(self, now: datetime) -> list[_Seen]:
        quiet_since = now - timedelta(seconds=self.quiet_seconds)
        waiting = exists().where(
            col(ReceivedInstance.study_instance_uid) == col(StudyProgress.study_instance_uid),
            col(ReceivedInstance.state).in_(WAITING),
        )
        stmt = (
            select(StudyProgress)
            .where(
                or_(
                    col(StudyProgress.completion) == CompletionState.DUE,
                    and_(
                        col(StudyProgress.completion) == CompletionState.OPEN,
                        col(StudyProgress.last_received_at) <= quiet_since,
                    ),
                ),
                col(StudyProgress.next_attempt_at) <= now,
                ~waiting,
            )
            .order_by(col(StudyProgress.next_attempt_at), col(StudyProgress.pk))
            .limit(self.batch_size)
        )
        with self.db.read() as session:
            return [
                _Seen(
                    pk=row.pk or 0,
                    study_instance_uid=row.study_instance_uid,
                    pseudo_study_instance_uid=row.pseudo_study_instance_uid,
                    completion=CompletionState(row.completion),
                    last_received_at=as_utc(row.last_received_at),
                )
                for row in session.exec(stmt).all()
            ]

    def _counts(
        self, studies: list[_Seen]
    ) -> tuple[dict[str, Counter[InstanceState]], dict[str, str]]:
        """Instances per state of each study, and the pseudonym its forwarded instances
        were sent under (should the study row not have it)."""
        uids = [s.study_instance_uid for s in studies]
        stmt = (
            select(
                ReceivedInstance.study_instance_uid,
                ReceivedInstance.state,
                func.count(),
                func.max(ReceivedInstance.pseudo_study_instance_uid),
            )
            .where(col(ReceivedInstance.study_instance_uid).in_(uids))
            .group_by(col(ReceivedInstance.study_instance_uid), col(ReceivedInstance.state))
        )
        counts: dict[str, Counter[InstanceState]] = {uid: Counter() for uid in uids}
        pseudonyms: dict[str, str] = {}
        with self.db.read() as session:
            for uid, state, n, pseudo in session.exec(stmt).all():
                counts[uid][InstanceState(state)] = n
                if state == InstanceState.FORWARDED and pseudo:
                    pseudonyms[uid] = pseudo
        return counts, pseudonyms

    def tick(self) -> int:
        """Send the due signals (at most ``batch_size``); returns how many studies were
        settled or attempted."""
        studies = self._due(self.clock())
        if not studies:
            return 0
        counts, pseudonyms = self._counts(studies)
        for seen in studies:
            count = counts[seen.study_instance_uid]
            pseudo = seen.pseudo_study_instance_uid or pseudonyms.get(seen.study_instance_uid)
            if count[InstanceState.FORWARDED] == 0 or pseudo is None:
                why = (
                    f"no instance was forwarded ({count[InstanceState.QUARANTINED]} "
                    f"quarantined, {count[InstanceState.FAILED]} failed): no "
                    f"completion signal sent"
                )
                self._record(seen, CompletionState.FAILED, why)
                continue
            outcome = self.client.complete(pseudo)
            if outcome.done:
                self._record(seen, CompletionState.SIGNALLED, None)
            elif outcome.retryable:
                self._record(seen, None, outcome.reason)
            else:
                self._record(seen, CompletionState.FAILED, outcome.reason)
        return len(studies)

    def _record(self, seen: _Seen, state: CompletionState | None, error: str | None) -> None:
        """``state`` None: retry later with backoff."""
        now = self.clock()
        with self.db.write() as session:
            stmt = select(StudyProgress).where(col(StudyProgress.pk) == seen.pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = session.exec(stmt).first()
            if (
                row is None
                or row.completion != seen.completion
                or as_utc(row.last_received_at) != seen.last_received_at
            ):
                return  # new instances arrived meanwhile: signalled again once forwarded
            if state is None:
                row.attempts += 1
                delay = retry_delay(row.attempts, self.backoff_seconds, self.max_backoff_seconds)
                row.next_attempt_at = now + timedelta(seconds=delay)
                row.last_error = (
                    f"attempt {row.attempts}: {error}; retry at {row.next_attempt_at.isoformat()}"
                )
                return
            row.completion = state
            row.last_error = error
            row.attempts = 0
            row.next_attempt_at = now
            if state == CompletionState.SIGNALLED:
                row.signalled_at = now
