"""The AIW-I worklist on the hub's database: UPS workitems, subscriptions and events.

Implements :class:`aifi.dicomweb.worklist.Worklist`. Every action is one database
transaction: the workitem row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
writer transactions are ``BEGIN IMMEDIATE``, so writers queue), the pure state machine
(:func:`aifi.ihe_profiles.ups.apply`) decides, and the new state, the attributes and the
event reports for every subscriber are written together. Nothing lives in memory: a restart
resumes exactly, and any hub process can deliver any event.

Roles (IHE RAD TF-1 AIW-I): the hub is the Task Manager (the UPS SCP); Task Requesters
create workitems (RAD-80 Create UPS Workitem), Task Performers query (RAD-81), claim and
complete them (RAD-82/RAD-83 Change UPS State, RAD-84 Update UPS), and subscribe to
events (RAD-85/RAD-86).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from aifi.dicomweb.matching import MatchKind, QidoQuery, QueryResult, match_dataset
from aifi.dicomweb.store import DicomJson
from aifi.dicomweb.worklist import (
    FILTERED_WORKLIST,
    GLOBAL_WORKLIST,
    UPS_EVENT_SOP_CLASS,
    UPS_PUSH_SOP_CLASS,
    ActionResult,
    Doorbell,
    PendingEvent,
    UpsError,
    parse_filter,
)
from aifi.errors import Conflict, InvalidRequest, NotFound
from aifi.hub.db import Database
from aifi.hub.models import UpsEvent, UpsSubscription, Workitem
from aifi.hub.repository import pack_json, unpack_json
from aifi.ihe_profiles.ups import (
    Outcome,
    ProcedureStepState,
    UpsAction,
    UpsRefused,
    UpsStatus,
    apply,
    creation_problems,
    final_state_problems,
    update_problems,
)
from aifi.ihe_profiles.ups import (
    UpsEvent as EventType,
)

# -- DICOM JSON tags used here ------------------------------------------------------------

SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = "00080018"
TRANSACTION_UID = "00081195"
STUDY_INSTANCE_UID = "0020000D"
PROCEDURE_STEP_STATE = "00741000"
INPUT_READINESS_STATE = "00404041"
PRIORITY = "00741200"
MODIFICATION_DATETIME = "00404010"
WORKLIST_LABEL = "00741202"
INPUT_INFORMATION = "00404021"
SCHEDULED_WORKITEM_CODE = "00404018"
CODE_VALUE = "00080100"
PROGRESS_INFORMATION = "00741002"
PROGRESS = "00741004"
CANCELLATION_DATETIME = "00404052"
REASON_FOR_CANCELLATION = "00741238"
DISCONTINUATION_REASON_CODE = "0074100E"
COMMUNICATIONS_URI = "00741008"
CONTACT_URI = "0074100A"
CONTACT_DISPLAY_NAME = "00741009"
STATION_NAME_CODE = "00404025"
HUMAN_PERFORMERS = "00404034"
AFFECTED_SOP_CLASS = "00000002"
AFFECTED_SOP_INSTANCE = "00001000"
EVENT_TYPE_ID = "00001002"

_INDEXED = {
    (PROCEDURE_STEP_STATE,): "procedure_step_state",
    (PRIORITY,): "priority",
    (STUDY_INSTANCE_UID,): "study_instance_uid",
    (SCHEDULED_WORKITEM_CODE, CODE_VALUE): "workitem_code",
}
"""Match keys the workitem table has a column for (exact values narrow the search in SQL)."""

DEFAULT_WORKLIST_LABEL = "AIFI"
"""Worklist Label given to workitems created without one (PS3.4 CC.2.5.1.1: the SCP may)."""


def _value(ds: DicomJson, tag: str) -> Any:
    element = ds.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if values else None


def _text(ds: DicomJson, tag: str) -> str | None:
    value = _value(ds, tag)
    return str(value) if value is not None else None


def _put(ds: DicomJson, tag: str, vr: str, *values: Any) -> None:
    ds[tag] = {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _dt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f") + "+0000"


def _now() -> datetime:
    return datetime.now(UTC)


def _study_of(ds: DicomJson) -> str | None:
    """The study a workitem is about: its own Study Instance UID, else the first input's."""
    direct = _text(ds, STUDY_INSTANCE_UID)
    if direct:
        return direct
    for item in (ds.get(INPUT_INFORMATION) or {}).get("Value") or []:
        if isinstance(item, dict) and _text(item, STUDY_INSTANCE_UID):
            return _text(item, STUDY_INSTANCE_UID)
    return None


def _code_of(ds: DicomJson) -> str | None:
    item = _value(ds, SCHEDULED_WORKITEM_CODE)
    return _text(item, CODE_VALUE) if isinstance(item, dict) else None


def _public(ds: DicomJson) -> DicomJson:
    """The workitem as clients see it: never the Transaction UID (PS3.4 CC.1.1: only the
    performer that claimed it knows it; PS3.18 §11.5)."""
    return {tag: element for tag, element in ds.items() if tag != TRANSACTION_UID}


class SqlWorklist:
    """:class:`aifi.dicomweb.worklist.Worklist` on :class:`~aifi.hub.db.Database`."""

    def __init__(self, db: Database, *, clock: Any = _now) -> None:
        self.db = db
        self.clock = clock
        self.doorbell = Doorbell()
        self.run_timeouts: dict[str, float] = {}
        """Minutes an IN PROGRESS workitem of a product (routing rules) may take before
        the Task Manager ends it; products not listed have no deadline."""

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction; once it has committed events, the doorbell rings."""
        with self.db.write() as session:
            yield session
        if session.info.get("ups_events"):
            self.doorbell.ring()

    def _locked(self, session: Session, tenant: str, uid: str) -> Workitem:
        statement = select(Workitem).where(
            col(Workitem.tenant) == tenant,
            col(Workitem.sop_instance_uid) == uid,
        )
        if not self.db.is_sqlite:
            statement = statement.with_for_update()
        row = session.exec(statement).first()
        if row is None:
            raise UpsError(UpsStatus.NO_SUCH_UPS, f"no workitem {uid}")
        assert isinstance(row, Workitem)
        return row

    def _store(self, row: Workitem, ds: DicomJson) -> None:
        row.procedure_step_state = _text(ds, PROCEDURE_STEP_STATE) or row.procedure_step_state
        row.priority = _text(ds, PRIORITY) or row.priority
        row.input_readiness_state = _text(ds, INPUT_READINESS_STATE) or row.input_readiness_state
        row.study_instance_uid = _study_of(ds)
        row.workitem_code = _code_of(ds)
        row.attributes = pack_json(ds)
        row.updated_at = self.clock()

    def _subscribers(self, session: Session, tenant: str, uid: str) -> list[str]:
        rows = session.exec(
            select(UpsSubscription.ae_title).where(
                col(UpsSubscription.tenant) == tenant,
                col(UpsSubscription.workitem_uid) == uid,
            )
        ).all()
        return sorted(set(rows))

    def _emit(
        self,
        session: Session,
        tenant: str,
        uid: str,
        events: Sequence[EventType],
        ds: DicomJson,
        info: DicomJson | None = None,
        only: str | None = None,
    ) -> None:
        """Queue an event report (PS3.4 CC.2.4, Table CC.2.4-1) for each subscriber; the
        doorbell rings once the transaction has committed."""
        if not events:
            return
        session.info["ups_events"] = True
        recipients = [only] if only else self._subscribers(session, tenant, uid)
        for event in events:
            report = self._report(uid, event, ds, info)
            payload = pack_json(report)
            for ae in recipients:
                session.add(
                    UpsEvent(
                        tenant=tenant,
                        ae_title=ae,
                        workitem_uid=uid,
                        event_type=int(event),
                        payload=payload,
                        created_at=self.clock(),
                    )
                )

    @staticmethod
    def _report(uid: str, event: EventType, ds: DicomJson, info: DicomJson | None) -> DicomJson:
        report: DicomJson = {}
        _put(report, AFFECTED_SOP_CLASS, "UI", UPS_EVENT_SOP_CLASS)
        _put(report, AFFECTED_SOP_INSTANCE, "UI", uid)
        _put(report, EVENT_TYPE_ID, "US", int(event))
        if event is EventType.STATE_REPORT:
            for tag in (PROCEDURE_STEP_STATE, INPUT_READINESS_STATE):
                if tag in ds:
                    report[tag] = ds[tag]
            if info:
                report.update(info)
        elif event is EventType.CANCEL_REQUESTED:
            report.update(info or {})
        elif event is EventType.PROGRESS_REPORT:
            if PROGRESS_INFORMATION in ds:
                report[PROGRESS_INFORMATION] = ds[PROGRESS_INFORMATION]
        elif event is EventType.ASSIGNED:
            for tag in (STATION_NAME_CODE, HUMAN_PERFORMERS):
                if tag in ds:
                    report[tag] = ds[tag]
        return report

    # -- Worklist ------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        uid: str,
        attributes: DicomJson,
        *,
        product: str | None = None,
        attempt: int = 1,
        deadline: datetime | None = None,
    ) -> DicomJson:
        ds = dict(attributes)
        given = _text(ds, SOP_INSTANCE_UID)
        if given and given != uid:
            raise InvalidRequest(
                f"The SOP Instance UID in the data set ({given}) differs from the one "
                f"requested ({uid})"
            )
        if TRANSACTION_UID in ds and _text(ds, TRANSACTION_UID):
            raise InvalidRequest(
                "A new workitem must not have a Transaction UID (PS3.4 CC.2.5.1.1)"
            )
        ds.pop(TRANSACTION_UID, None)
        state = _text(ds, PROCEDURE_STEP_STATE)
        if state is None:
            _put(ds, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.SCHEDULED.value)
        _put(ds, SOP_CLASS_UID, "UI", UPS_PUSH_SOP_CLASS)
        _put(ds, SOP_INSTANCE_UID, "UI", uid)
        _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
        if not _text(ds, WORKLIST_LABEL):
            _put(ds, WORKLIST_LABEL, "LO", DEFAULT_WORKLIST_LABEL)
        problems = creation_problems(ds)
        if problems:
            raise InvalidRequest("Not a valid new workitem: " + "; ".join(problems))
        with self._write() as session:
            exists = session.exec(
                select(Workitem.pk).where(
                    col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
                )
            ).first()
            if exists is not None:
                raise Conflict(f"A workitem with SOP Instance UID {uid} already exists")
            row = Workitem(
                tenant=tenant,
                sop_instance_uid=uid,
                procedure_step_state=ProcedureStepState.SCHEDULED.value,
                product=product,
                attempt=attempt,
                deadline=deadline,
                attributes=b"",
                created_at=self.clock(),
            )
            self._store(row, ds)
            session.add(row)
            self._subscribe_new(session, tenant, uid, ds)
        return _public(ds)

    def _subscribe_new(self, session: Session, tenant: str, uid: str, ds: DicomJson) -> None:
        """A new workitem: every active global (and matching filtered) subscriber is
        subscribed to it and gets its first State Report (PS3.4 CC.2.3.1)."""
        rows = session.exec(
            select(UpsSubscription).where(
                col(UpsSubscription.tenant) == tenant,
                col(UpsSubscription.workitem_uid).in_([GLOBAL_WORKLIST, FILTERED_WORKLIST]),
                col(UpsSubscription.suspended) == False,  # noqa: E712
            )
        ).all()
        for sub in rows:
            if sub.workitem_uid == FILTERED_WORKLIST and not _filter_matches(sub.filter, ds):
                continue
            self._add_subscription(session, tenant, sub.ae_title, uid, sub.deletion_lock)
            self._emit(session, tenant, uid, [EventType.STATE_REPORT], ds, only=sub.ae_title)

    def _add_subscription(
        self, session: Session, tenant: str, ae: str, uid: str, deletion_lock: bool
    ) -> None:
        existing = session.exec(
            select(UpsSubscription).where(
                col(UpsSubscription.tenant) == tenant,
                col(UpsSubscription.ae_title) == ae,
                col(UpsSubscription.workitem_uid) == uid,
            )
        ).first()
        if existing is None:
            session.add(
                UpsSubscription(
                    tenant=tenant, ae_title=ae, workitem_uid=uid, deletion_lock=deletion_lock
                )
            )
        else:
            existing.deletion_lock = deletion_lock
            existing.suspended = False

    def retrieve(self, tenant: str, uid: str) -> DicomJson:
        with self.db.read() as session:
            row = session.exec(
                select(Workitem).where(
                    col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
                )
            ).first()
            if row is None:
                raise UpsError(UpsStatus.NO_SUCH_UPS, f"no workitem {uid}")
            return _public(unpack_json(row.attributes))

    def update(
        self, tenant: str, uid: str, changes: DicomJson, transaction_uid: str | None
    ) -> ActionResult:
        problems = update_problems(changes)
        if problems:
            raise InvalidRequest("Not a valid workitem update: " + "; ".join(problems))
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            outcome = self._apply(row, UpsAction.UPDATE, transaction_uid)
            ds = unpack_json(row.attributes)
            events: list[EventType] = []
            if PROGRESS_INFORMATION in changes and changes[PROGRESS_INFORMATION] != ds.get(
                PROGRESS_INFORMATION
            ):
                events.append(EventType.PROGRESS_REPORT)
            if any(
                tag in changes and changes[tag] != ds.get(tag)
                for tag in (STATION_NAME_CODE, HUMAN_PERFORMERS)
            ):
                events.append(EventType.ASSIGNED)
            readiness_before = _text(ds, INPUT_READINESS_STATE)
            ds.update(changes)
            emptied = [p for p in creation_problems(ds) if "(Type 1)" in p]
            if emptied:
                raise InvalidRequest("Not a valid workitem update: " + "; ".join(emptied))
            _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
            if _text(ds, INPUT_READINESS_STATE) != readiness_before:
                events.append(EventType.STATE_REPORT)
            self._store(row, ds)
            self._emit(session, tenant, uid, events + list(outcome.events), ds)
            return ActionResult(_public(ds), outcome.warning)

    def _apply(self, row: Workitem, action: UpsAction, transaction_uid: str | None) -> Outcome:
        try:
            return apply(
                ProcedureStepState(row.procedure_step_state),
                action,
                held_transaction_uid=row.transaction_uid,
                given_transaction_uid=transaction_uid,
            )
        except UpsRefused as exc:
            raise UpsError(exc.status, exc.detail) from exc

    def change_state(
        self,
        tenant: str,
        uid: str,
        state: str,
        transaction_uid: str | None,
        *,
        deadline: datetime | None = None,
    ) -> ActionResult:
        actions = {
            ProcedureStepState.IN_PROGRESS.value: UpsAction.CLAIM,
            ProcedureStepState.COMPLETED.value: UpsAction.COMPLETE,
            ProcedureStepState.CANCELED.value: UpsAction.DISCONTINUE,
        }
        if state == ProcedureStepState.SCHEDULED.value:
            raise UpsError(UpsStatus.ONLY_SCHEDULED_VIA_CREATE, "")
        if state not in actions:
            raise InvalidRequest(f"{state!r} is not a Procedure Step State")
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            if not transaction_uid:
                raise UpsError(UpsStatus.MISSING_TRANSACTION_UID)
            outcome = self._apply(row, actions[state], transaction_uid)
            ds = unpack_json(row.attributes)
            if outcome.warning is not None:
                return ActionResult(_public(ds), outcome.warning)
            target = outcome.state
            if target is ProcedureStepState.CANCELED and not _cancelled_at(ds):
                # The performer discontinues without saying when: the SCP records it.
                _record_cancellation(ds, _cancellation_info({}, self.clock()))
            if target in (ProcedureStepState.COMPLETED, ProcedureStepState.CANCELED):
                problems = final_state_problems(ds, target)
                if problems:
                    raise UpsError(UpsStatus.FINAL_STATE_NOT_MET, "; ".join(problems))
            _put(ds, PROCEDURE_STEP_STATE, "CS", target.value)
            _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
            row.transaction_uid = outcome.transaction_uid
            if target is ProcedureStepState.IN_PROGRESS:
                minutes = self.run_timeouts.get(row.product or "")
                row.deadline = deadline or expiry(minutes, self.clock())
            else:
                row.deadline = None
            self._store(row, ds)
            self._emit(session, tenant, uid, outcome.events, ds)
            return ActionResult(_public(ds), None)

    def request_cancel(self, tenant: str, uid: str, info: DicomJson) -> ActionResult:
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            outcome = self._apply(row, UpsAction.REQUEST_CANCEL, None)
            ds = unpack_json(row.attributes)
            if outcome.warning is not None:
                return ActionResult(_public(ds), outcome.warning)
            reason = _cancellation_info(info, self.clock())
            if outcome.state is ProcedureStepState.CANCELED:
                # SCHEDULED: nobody performs it yet, so the Task Manager cancels it at once
                # and records why (final state requirements for CANCELED).
                _record_cancellation(ds, reason)
                _put(ds, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.CANCELED.value)
                _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
                row.transaction_uid = None
                row.deadline = None
                self._store(row, ds)
                # PS3.4 CC.2.2.3: first to IN PROGRESS, then to CANCELED, a report for each.
                passing = dict(ds)
                _put(passing, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.IN_PROGRESS.value)
                self._emit(session, tenant, uid, [EventType.STATE_REPORT], passing)
                self._emit(session, tenant, uid, [EventType.STATE_REPORT], ds, info=reason)
            else:
                self._emit(session, tenant, uid, outcome.events, ds, info=reason)
            return ActionResult(_public(ds), None)

    def cancel_by_manager(self, tenant: str, uid: str, reason: str) -> bool:
        """The Task Manager ends a workitem itself (deadline passed, performer gone):
        CANCELED with the reason recorded, whatever Transaction UID a performer holds.
        False when it already was in a final state."""
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            if row.procedure_step_state in (
                ProcedureStepState.COMPLETED.value,
                ProcedureStepState.CANCELED.value,
            ):
                return False
            ds = unpack_json(row.attributes)
            info = _cancellation_info({}, self.clock(), reason=reason)
            _record_cancellation(ds, info)
            _put(ds, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.CANCELED.value)
            _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
            row.transaction_uid = None
            row.deadline = None
            self._store(row, ds)
            self._emit(session, tenant, uid, [EventType.STATE_REPORT], ds, info=info)
            return True

    def workitems_for_study(self, tenant: str, study_uid: str) -> list[Workitem]:
        """The study's workitems, oldest first (the Task Manager's view)."""
        with self.db.read() as session:
            rows = session.exec(
                select(Workitem)
                .where(
                    col(Workitem.tenant) == tenant,
                    col(Workitem.study_instance_uid) == study_uid,
                )
                .order_by(col(Workitem.pk))
            ).all()
            return list(rows)

    def set_inputs(
        self, tenant: str, uid: str, readiness: str, inputs: list[DicomJson] | None = None
    ) -> bool:
        """The Task Manager's own update of a SCHEDULED workitem: its Input Information
        Sequence (instances that arrived late) and Input Readiness State. False when the
        workitem is no longer SCHEDULED (a performer claimed it meanwhile)."""
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            if row.procedure_step_state != ProcedureStepState.SCHEDULED.value:
                return False
            ds = unpack_json(row.attributes)
            before = _text(ds, INPUT_READINESS_STATE)
            if inputs is not None:
                ds[INPUT_INFORMATION] = {"vr": "SQ", "Value": inputs}
            _put(ds, INPUT_READINESS_STATE, "CS", readiness)
            _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
            self._store(row, ds)
            if before != readiness:
                self._emit(session, tenant, uid, [EventType.STATE_REPORT], ds)
            return True

    def expired(self, now: datetime) -> list[Workitem]:
        """Workitems past their deadline (SCHEDULED not claimed, IN PROGRESS not done)."""
        with self.db.read() as session:
            rows = session.exec(
                select(Workitem).where(
                    col(Workitem.procedure_step_state).in_(
                        [
                            ProcedureStepState.SCHEDULED.value,
                            ProcedureStepState.IN_PROGRESS.value,
                        ]
                    ),
                    col(Workitem.deadline).is_not(None),
                    col(Workitem.deadline) <= now,
                )
            ).all()
            return list(rows)

    def search(self, tenant: str, query: QidoQuery) -> QueryResult:
        """Search for Workitems (PS3.18 §11.9): creation order, paged. When the indexed
        columns answer every key (the usual worklist query: state, code, priority, study),
        paging and counting happen in SQL; otherwise each candidate is matched here."""
        result = QueryResult()
        statement, exact = self._narrowed(tenant, query)
        if exact:
            with self.db.read() as session:
                total = session.exec(select(func.count()).select_from(statement.subquery())).one()
                page = session.exec(statement.offset(query.offset).limit(query.limit)).all()
            result.matches = [_select(_public(unpack_json(blob)), query) for blob in page]
            result.remaining = max(0, total - query.offset - len(result.matches))
            return result
        matched = 0
        with self.db.read() as session:
            blobs = session.exec(statement).all()
        for blob in blobs:
            ds = unpack_json(blob)
            if not match_dataset(query.matchers, ds, query.combined):
                continue
            if matched >= query.offset and len(result.matches) < query.limit:
                result.matches.append(_select(_public(ds), query))
            elif len(result.matches) >= query.limit:
                result.remaining += 1
            matched += 1
        return result

    def _narrowed(self, tenant: str, query: QidoQuery) -> tuple[Any, bool]:
        """The tenant's workitems in creation order, narrowed in SQL by the keys the table
        has columns for, when they are exact values or lists; and whether SQL answered
        every key (then nothing is left to match on the data sets)."""
        statement = select(Workitem.attributes).where(col(Workitem.tenant) == tenant)
        exact = not query.combined
        for m in query.matchers:
            if m.kind is MatchKind.UNIVERSAL:
                continue
            column = _INDEXED.get(m.path.tags)
            if column is None or m.kind not in (MatchKind.SINGLE, MatchKind.LIST):
                exact = False
                continue
            values = list(m.values) or [m.value]
            statement = statement.where(col(getattr(Workitem, column)).in_(values))
        return statement.order_by(col(Workitem.pk)), exact

    # -- subscriptions ----------------------------------------------------------------

    def subscribe(
        self,
        tenant: str,
        ae_title: str,
        uid: str,
        *,
        deletion_lock: bool = False,
        filter_query: str | None = None,
    ) -> None:
        with self._write() as session:
            if uid in (GLOBAL_WORKLIST, FILTERED_WORKLIST):
                existing = session.exec(
                    select(UpsSubscription).where(
                        col(UpsSubscription.tenant) == tenant,
                        col(UpsSubscription.ae_title) == ae_title,
                        col(UpsSubscription.workitem_uid) == uid,
                    )
                ).first()
                if existing is None:
                    session.add(
                        UpsSubscription(
                            tenant=tenant,
                            ae_title=ae_title,
                            workitem_uid=uid,
                            deletion_lock=deletion_lock,
                            filter=filter_query,
                        )
                    )
                else:
                    existing.deletion_lock = deletion_lock
                    existing.suspended = False
                    existing.filter = filter_query
                # ... and to every workitem that exists now (PS3.4 CC.2.3.1), with a
                # State Report for each so the subscriber learns where things stand.
                rows = session.exec(
                    select(Workitem).where(
                        col(Workitem.tenant) == tenant,
                        col(Workitem.procedure_step_state).in_(
                            [
                                ProcedureStepState.SCHEDULED.value,
                                ProcedureStepState.IN_PROGRESS.value,
                            ]
                        ),
                    )
                ).all()
                for row in rows:
                    ds = unpack_json(row.attributes)
                    if uid == FILTERED_WORKLIST and not _filter_matches(filter_query, ds):
                        continue
                    self._add_subscription(
                        session, tenant, ae_title, row.sop_instance_uid, deletion_lock
                    )
                    self._emit(
                        session,
                        tenant,
                        row.sop_instance_uid,
                        [EventType.STATE_REPORT],
                        ds,
                        only=ae_title,
                    )
                return
            row = self._locked(session, tenant, uid)
            self._add_subscription(session, tenant, ae_title, uid, deletion_lock)
            self._emit(
                session,
                tenant,
                uid,
                [EventType.STATE_REPORT],
                unpack_json(row.attributes),
                only=ae_title,
            )

    def unsubscribe(self, tenant: str, ae_title: str, uid: str) -> None:
        with self._write() as session:
            where = [
                col(UpsSubscription.tenant) == tenant,
                col(UpsSubscription.ae_title) == ae_title,
            ]
            if uid == GLOBAL_WORKLIST:
                # From the global worklist: from every workitem too (PS3.4 CC.2.3.2).
                result = session.exec(delete(UpsSubscription).where(*where))
            else:
                result = session.exec(
                    delete(UpsSubscription).where(*where, col(UpsSubscription.workitem_uid) == uid)
                )
            if not result.rowcount:
                if uid not in (GLOBAL_WORKLIST, FILTERED_WORKLIST):
                    self._locked(session, tenant, uid)  # 404 for an unknown workitem
                raise NotFound(f"{ae_title} has no subscription to {uid}")

    def suspend(self, tenant: str, ae_title: str, uid: str) -> None:
        with self._write() as session:
            result = session.exec(
                update(UpsSubscription)
                .where(
                    col(UpsSubscription.tenant) == tenant,
                    col(UpsSubscription.ae_title) == ae_title,
                    col(UpsSubscription.workitem_uid) == uid,
                )
                .values(suspended=True)
            )
            if not result.rowcount:
                raise NotFound(f"{ae_title} has no subscription to {uid}")

    def pending_events(self, tenant: str, ae_title: str, after: int) -> list[PendingEvent]:
        with self.db.read() as session:
            rows = session.exec(
                select(UpsEvent.pk, UpsEvent.payload)
                .where(
                    col(UpsEvent.tenant) == tenant,
                    col(UpsEvent.ae_title) == ae_title,
                    col(UpsEvent.pk) > after,
                    col(UpsEvent.delivered_at).is_(None),
                )
                .order_by(col(UpsEvent.pk))
                .limit(500)
            ).all()
            return [PendingEvent(pk or 0, unpack_json(payload)) for pk, payload in rows]

    def mark_delivered(self, tenant: str, event_ids: Sequence[int]) -> None:
        if not event_ids:
            return
        with self._write() as session:
            session.exec(
                update(UpsEvent)
                .where(col(UpsEvent.tenant) == tenant, col(UpsEvent.pk).in_(list(event_ids)))
                .values(delivered_at=self.clock())
            )


def _cancellation_info(info: DicomJson, now: datetime, reason: str | None = None) -> DicomJson:
    """The Cancel Requested / cancellation attributes (PS3.4 Table CC.2.4-1, CC.2.5-3)."""
    out: DicomJson = {}
    _put(out, CANCELLATION_DATETIME, "DT", _dt(now))
    text = reason or _text(info, REASON_FOR_CANCELLATION)
    if text:
        _put(out, REASON_FOR_CANCELLATION, "LT", text)
    for tag in (DISCONTINUATION_REASON_CODE, CONTACT_URI, CONTACT_DISPLAY_NAME):
        if tag in info:
            out[tag] = info[tag]
    return out


def _cancelled_at(ds: DicomJson) -> str | None:
    item = _value(ds, PROGRESS_INFORMATION)
    return _text(item, CANCELLATION_DATETIME) if isinstance(item, dict) else None


def _record_cancellation(ds: DicomJson, info: DicomJson) -> None:
    """Put the cancellation date-time and reason in the Procedure Step Progress
    Information Sequence, where PS3.4 Table CC.2.5-3 keeps them."""
    item = dict(_value(ds, PROGRESS_INFORMATION) or {})
    for tag in (CANCELLATION_DATETIME, REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_CODE):
        if tag in info:
            item[tag] = info[tag]
    contact = {t: info[t] for t in (CONTACT_URI, CONTACT_DISPLAY_NAME) if t in info}
    if contact:
        item[COMMUNICATIONS_URI] = {"vr": "SQ", "Value": [contact]}
    ds[PROGRESS_INFORMATION] = {"vr": "SQ", "Value": [item]}


def _filter_matches(text: str | None, ds: DicomJson) -> bool:
    query = parse_filter(text)
    return query is None or match_dataset(query.matchers, ds, query.combined)


def _select(ds: DicomJson, query: QidoQuery) -> DicomJson:
    """Search results: every attribute of the workitem (a worklist entry is small and a
    performer needs its inputs); ``includefield`` cannot ask for more than everything."""
    return ds


def expiry(minutes: float | None, now: datetime) -> datetime | None:
    return now + timedelta(minutes=minutes) if minutes else None
