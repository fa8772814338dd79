"""The AIW-I Task Manager loop: complete studies become workitems; deadlines are kept.

IHE RAD TF-1 AIW-I: the hub is the Task Manager (UPS SCP) and, for studies its routing
rules select, the Task Requester. One hub process at a time runs this loop (it holds the
``task-manager`` lease in the database; another process takes over within
:data:`LEASE_SECONDS` when the holder stops), every :attr:`poll_seconds`:

1. **Study complete, fast.** A study is ready when no instance has arrived for its quiet
   period (per modality, from the routing rules: documented defaults DX/CR 10 s, CT/MR
   30 s) or at once after an explicit completion signal
   (``POST /api/v1/studies/{StudyInstanceUID}/complete``). Only studies changed since they
   were last routed are looked at (indexed on ``study.updated_at``); a study is routed
   once per version.
2. **Routing.** The rules (:func:`aifi.ihe_profiles.rules.evaluate`) decide per product;
   for a match the workitem of :func:`aifi.ihe_profiles.aiw.new_workitem` is created
   (SCHEDULED, Input Readiness READY, claim deadline from the product's policy).
3. **Late instances** (arriving after the study's workitems exist): while the product's
   workitem is SCHEDULED its Input Readiness State turns INCOMPLETE at once, and when the
   study is quiet again its Input Information Sequence is updated and it is READY again;
   once a performer has claimed it (IN PROGRESS or COMPLETED) a new workitem is created
   for the new input set. A workitem that was CANCELED (by request or by the deadline
   policy) is not recreated by late instances.
4. **Deadlines.** A workitem not claimed within the product's ``claim_timeout_minutes``, or
   IN PROGRESS for longer than ``run_timeout_minutes``, is CANCELED by the Task Manager
   with the reason; if the product allows more attempts a new workitem replaces it
   (Replaced Procedure Step Sequence), else the reason says the attempts are exhausted.

5. **Priors** (issue 17). A workitem of a product that compares with prior studies waits,
   INCOMPLETE, for the hospital's gateway to send them; when its ``wait_seconds`` have
   passed without an answer, the round makes it READY without them and says why
   (:meth:`aifi.hub.priors.service.PriorRequests.expire`). A study registered as a prior
   is never routed.

Event reports already delivered are removed after :data:`EVENT_RETENTION` (checked every
ten minutes), so the event queue does not grow without bound.

Everything is in the database, so a restart resumes exactly: a study still pending is
routed after the restart; a workitem is never created twice for the same input set.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydicom.uid import generate_uid
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from aifi.clock import Clock, as_utc, utc_now
from aifi.dicom_json import unpack as unpack_json
from aifi.errors import NotFound
from aifi.hub.orchestration.routing import StudyRouter, routing_row
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import HubLease, Study, StudyRouting
from aifi.hub.priors.service import PriorRequests
from aifi.hub.worklist.service import SqlWorklist, expiry
from aifi.ihe_profiles.aiw import (
    INPUT_INFORMATION,
)
from aifi.ihe_profiles.rules import RulesConfig
from aifi.ihe_profiles.ups import ProcedureStepState

log = logging.getLogger(__name__)

LEASE_NAME = "task-manager"
LEASE_SECONDS = 5.0
DISCOVERY_MARGIN = timedelta(seconds=60)
"""Studies changed this long before the last look are looked at again: a STOW-RS
transaction stamps ``updated_at`` before it commits, so a commit can appear late."""

EVENT_RETENTION = timedelta(days=7)
"""Delivered event reports are kept this long (for support), then removed."""

_S = ProcedureStepState.SCHEDULED.value
_P = ProcedureStepState.IN_PROGRESS.value
_D = ProcedureStepState.COMPLETED.value
_X = ProcedureStepState.CANCELED.value


# Built once: the Task Manager runs them every poll (20 times a second by default), and
# building the expressions anew cost more CPU than running them.
_CHANGED_STUDIES = (
    sa_select(
        col(Study.tenant),
        col(Study.study_instance_uid),
        col(Study.updated_at),
        col(Study.modalities_in_study),
        col(StudyRouting.routed_version),
        col(StudyRouting.complete_requested_at),
    )
    .join_from(
        Study,
        StudyRouting,
        (col(StudyRouting.tenant) == col(Study.tenant))
        & (col(StudyRouting.study_instance_uid) == col(Study.study_instance_uid)),
        isouter=True,
    )
    .where(col(Study.updated_at) > bindparam("since"))
)
_COMPLETION_SIGNALS = sa_select(
    col(StudyRouting.tenant),
    col(StudyRouting.study_instance_uid),
    col(StudyRouting.complete_requested_at),
).where(col(StudyRouting.complete_requested_at) > bindparam("since"))


@dataclass
class _Pending:
    version: datetime
    modalities: tuple[str, ...]
    complete_requested: datetime | None = None
    marked: bool = False


HOUSEKEEPING_SECONDS = 1.0
"""How often the app's loop asks :meth:`TaskManager.tick` for its housekeeping."""


@dataclass
class TickReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    purged: int = 0
    leader: bool = False
    routed: int = 0
    priors_expired: list[str] = field(default_factory=list)
    """Prior requests whose wait ran out this round (their workitems went ahead)."""


class TaskManager:
    """IHE AIW-I's Task Manager rounds: which studies are complete, routing them through
    :class:`~aifi.hub.orchestration.routing.StudyRouter`, late instances and deadlines."""

    def __init__(
        self,
        db: Database,
        worklist: SqlWorklist,
        rules: RulesConfig,
        router: StudyRouter,
        *,
        clock: Clock = utc_now,
        lookback: timedelta = timedelta(hours=24),
        after_round: Callable[[datetime], None] | None = None,
        priors: PriorRequests | None = None,
    ) -> None:
        self.db = db
        self.worklist = worklist
        self.rules = rules
        self.router = router
        self.clock = clock
        self.lookback = lookback
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._cursor: datetime | None = None
        self._lease_until: datetime | None = None
        self._next_purge: datetime | None = None
        self.after_round = after_round
        self.priors = priors
        """Prior-study requests whose deadlines the round keeps (issue 17)."""
        """Called at the end of each round this process leads (EPD requests for AI)."""

    # -- leadership ---------------------------------------------------------------------

    def lead(self) -> bool:
        """Take or renew the lease; True while this process is the Task Manager. A held
        lease is renewed only when a third of it is used up: a write transaction (and its
        fsync) every round would cost more than the round's own work."""
        now = self.clock()
        if self._lease_until is not None and now < self._lease_until - timedelta(
            seconds=LEASE_SECONDS * 2 / 3
        ):
            return True
        try:
            with self.db.write() as session:
                # Locked (PostgreSQL; SQLite writers are serialised anyway): two processes
                # that both see an expired lease must not both take it.
                lease = session.get(HubLease, LEASE_NAME, with_for_update=not self.db.is_sqlite)
                if lease is None:
                    session.add(
                        HubLease(
                            name=LEASE_NAME,
                            holder=self.holder,
                            expires_at=now + timedelta(seconds=LEASE_SECONDS),
                        )
                    )
                elif lease.holder == self.holder or as_utc(lease.expires_at) < now:
                    if lease.holder != self.holder:
                        self._cursor = None  # a new leader looks at everything pending
                        self._pending.clear()
                    lease.holder = self.holder
                    lease.expires_at = now + timedelta(seconds=LEASE_SECONDS)
                else:
                    self._lease_until = None
                    return False
        except IntegrityError:
            self._lease_until = None
            return False  # another process created the lease first
        self._lease_until = now + timedelta(seconds=LEASE_SECONDS)
        return True

    def release(self) -> None:
        with self.db.write() as session:
            lease = session.get(HubLease, LEASE_NAME)
            if lease is not None and lease.holder == self.holder:
                session.delete(lease)
        self._lease_until = None

    # -- the loop -----------------------------------------------------------------------

    def tick(self, housekeeping: bool = True) -> TickReport:
        """One round: discover changed studies, mark late arrivals INCOMPLETE, route the
        studies that are complete, and keep deadlines.

        ``housekeeping=False`` leaves out what need not run at the polling rate: the
        deadline sweep, the purge and :attr:`after_round` (unless this round routed a
        study, which the EPD's waiting requests follow at once). The app's loop asks for
        it once a second (:data:`HOUSEKEEPING_SECONDS`); an idle hub polling every 50 ms
        spent 12 % of a core on those queries."""
        report = TickReport()
        if not self.lead():
            return report
        report.leader = True
        now = self.clock()
        self._discover(now)
        for key, pending in list(self._pending.items()):
            tenant, study_uid = key
            quiet = self.rules.quiet_period(pending.modalities)
            signalled = (
                pending.complete_requested is not None
                and pending.complete_requested >= pending.version
            )
            if signalled or now - pending.version >= timedelta(seconds=quiet):
                created, updated = self.router.route(tenant, study_uid, pending.version)
                report.created += created
                report.updated += updated
                report.routed += 1
                del self._pending[key]
            elif not pending.marked:
                report.updated += self._mark_incomplete(tenant, study_uid)
                pending.marked = True
        if housekeeping:
            if self.priors is not None:
                report.priors_expired = self.priors.expire(now)
            report.expired = self.sweep(now)
            if self._next_purge is None or now >= self._next_purge:
                report.purged = self.worklist.purge_delivered(now - EVENT_RETENTION)
                self._next_purge = now + timedelta(minutes=10)
        if self.after_round is not None and (housekeeping or report.routed):
            self.after_round(now)
        return report

    def _discover(self, now: datetime) -> None:
        since = (self._cursor - DISCOVERY_MARGIN) if self._cursor else now - self.lookback
        with self.db.reader.connect() as conn:
            rows = conn.execute(_CHANGED_STUDIES, {"since": since}).all()
            signals = conn.execute(_COMPLETION_SIGNALS, {"since": since}).all()
        latest = self._cursor
        for tenant, study_uid, updated, modalities, routed, requested in rows:
            updated = as_utc(updated)
            latest = max(latest, updated) if latest else updated
            if routed is not None and as_utc(routed) >= updated:
                continue
            entry = self._pending.get((tenant, study_uid))
            mods = tuple(m for m in modalities.split("|") if m)
            if entry is None or entry.version < updated:
                # Still pending: its SCHEDULED workitems were marked INCOMPLETE already
                # (one look at the worklist per quiet period, not one per new instance).
                self._pending[(tenant, study_uid)] = _Pending(
                    updated,
                    mods,
                    as_utc(requested) if requested else None,
                    marked=entry is not None and entry.marked,
                )
        for tenant, study_uid, requested in signals:
            entry = self._pending.get((tenant, study_uid))
            if entry is not None and requested is not None:
                entry.complete_requested = as_utc(requested)
            latest = max(latest, as_utc(requested)) if latest and requested else latest
        self._cursor = max(latest or now - self.lookback, now - DISCOVERY_MARGIN)

    def _mark_incomplete(self, tenant: str, study_uid: str) -> list[str]:
        """New instances for a study whose workitems are still SCHEDULED: their inputs are
        no longer complete (Input Readiness State INCOMPLETE) until the study is quiet."""
        marked = []
        for w in self.worklist.workitems_for_study(tenant, study_uid):
            if (
                w.procedure_step_state == _S
                and w.product
                and w.input_readiness_state == "READY"
                and self.worklist.set_inputs(tenant, w.sop_instance_uid, "INCOMPLETE")
            ):
                marked.append(w.sop_instance_uid)
        return marked

    # -- deadlines --------------------------------------------------------------------------

    def sweep(self, now: datetime) -> list[str]:
        """End workitems past their deadline; retry per the product's policy."""
        ended = []
        for row in self.worklist.expired(now):
            try:
                product = self.rules.product(row.product or "")
            except NotFound:
                product = None
            waited = "claimed" if row.procedure_step_state == _S else "completed"
            limit = (
                (
                    product.claim_timeout_minutes
                    if waited == "claimed"
                    else product.run_timeout_minutes
                )
                if product
                else None
            )
            retry = product is not None and row.attempt < product.max_attempts
            reason = f"Not {waited} within {limit:g} minutes" if limit else f"Not {waited} in time"
            reason += (
                f"; attempt {row.attempt} of {product.max_attempts}, retried"
                if retry and product
                else f"; attempt {row.attempt}, no attempts left"
            )
            ended_it = self.worklist.cancel_by_manager(
                row.tenant,
                row.sop_instance_uid,
                reason,
                expected_state=row.procedure_step_state,
                due=now,
            )
            if not ended_it:
                continue
            ended.append(row.sop_instance_uid)
            if retry and product:
                attributes = unpack_json(row.attributes)
                ds = {
                    k: v
                    for k, v in attributes.items()
                    if k
                    not in (
                        "00080016",
                        "00080018",
                        "00741000",
                        "00404010",
                        "00741002",
                        "00741216",
                        "00741224",
                    )
                }
                ds["00741224"] = {
                    "vr": "SQ",
                    "Value": [
                        {
                            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.34.6.1"]},
                            "00080018": {"vr": "UI", "Value": [row.sop_instance_uid]},
                        }
                    ],
                }
                ds["00404041"] = {"vr": "CS", "Value": ["READY"]}
                uid = str(generate_uid())
                self.worklist.create(
                    row.tenant,
                    uid,
                    ds,
                    product=product.code,
                    attempt=row.attempt + 1,
                    deadline=expiry(product.claim_timeout_minutes, now),
                )
                log.warning("workitem %s: %s; replaced by %s", row.sop_instance_uid, reason, uid)
        return ended


def signal_complete(db: Database, tenant: str, study_uid: str, now: datetime) -> None:
    """Record an explicit completion signal for a study (the Task Manager routes it on its
    next round, without waiting for the quiet period)."""
    with db.write() as session:
        routing_row(session, tenant, study_uid).complete_requested_at = now


__all__ = ["INPUT_INFORMATION", "TaskManager", "TickReport", "signal_complete"]
