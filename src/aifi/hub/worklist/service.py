"""The AIW-I worklist on the hub's database: UPS workitems, subscriptions and events.

Implements :class:`aifi.dicomweb.worklist.Worklist`. Every action is one database
transaction: the workitem row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
writer transactions are ``BEGIN IMMEDIATE``, so writers queue), the pure state machine
(:func:`aifi.ihe_profiles.ups.apply`) decides, and the new state, the attributes and the
event reports for every subscriber are written together. Nothing lives in memory: a restart
resumes exactly, and any hub process can deliver any event.

Roles (IHE RAD TF-1 AIW-I): the hub is the Task Manager (the UPS SCP); Task Requesters
create workitems (RAD-80 Create UPS Workitem) and may ask to cancel them (RAD-88); Task
Performers query (RAD-81), claim (RAD-82), read (RAD-83), update (RAD-84) and complete
(RAD-85) them, and manage subscriptions (RAD-86) to receive notifications (RAD-87).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from aifi import dicom_json
from aifi.clock import Clock, utc_now
from aifi.dicom_json import DicomJson
from aifi.dicom_json import unpack as unpack_json
from aifi.dicomweb.matching import MatchKind, match_dataset
from aifi.dicomweb.qido_query import QidoQuery, QueryResult
from aifi.dicomweb.worklist import (
    UPS_PUSH_SOP_CLASS,
    ActionResult,
    UpsError,
)
from aifi.errors import AifiError, Conflict, InvalidRequest
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Workitem
from aifi.hub.worklist.events import (
    _INDEXED,
    CANCELLATION_DATETIME,
    COMMUNICATIONS_URI,
    CONTACT_DISPLAY_NAME,
    CONTACT_URI,
    DEFAULT_WORKLIST_LABEL,
    DISCONTINUATION_REASON_CODE,
    HUMAN_PERFORMERS,
    INPUT_INFORMATION,
    INPUT_READINESS_STATE,
    MODIFICATION_DATETIME,
    PROCEDURE_STEP_STATE,
    PROGRESS_INFORMATION,
    REASON_FOR_CANCELLATION,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STATION_NAME_CODE,
    TRANSACTION_UID,
    WORKLIST_LABEL,
    WorklistBase,
    _code_of,
    _dt,
    _public,
    _put,
    of_products,
)
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


class FinalStateHook(Protocol):
    """Told, inside the transaction, when a workitem reaches a final state (the hub's IHE
    AIR results: :class:`aifi.hub.results.completion.ResultsHook`). ``on_final`` returns why the
    change may not happen (it is then refused with C304 and rolled back, and ``refused``
    records the reason in a transaction of its own), or None."""

    def on_final(
        self,
        session: Session,
        row: Workitem,
        ds: DicomJson,
        state: ProcedureStepState,
        cause: Literal["performer", "requester", "manager"],
    ) -> str | None: ...

    def refused(self, tenant: str, uid: str, problem: str) -> None: ...


class _HookRefused(AifiError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SqlWorklist(WorklistBase):
    """:class:`aifi.dicomweb.worklist.Worklist` on
    :class:`~aifi.hub.persistence.database.Database`."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = utc_now,
        run_timeouts: Mapping[str, float] | None = None,
        final_state_hook: FinalStateHook | None = None,
    ) -> None:
        super().__init__(db, clock=clock)
        self.run_timeouts: dict[str, float] = dict(run_timeouts or {})
        """Minutes an IN PROGRESS workitem of a product (routing rules) may take before
        the Task Manager ends it; products not listed have no deadline."""
        self.final_state_hook = final_state_hook
        """Told, in the same transaction, when a workitem of a product ends (the results
        of :mod:`aifi.hub.results.completion`)."""

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
        also: Callable[[Session], None] | None = None,
    ) -> DicomJson:
        """Create a workitem (PS3.4 CC.2.5). ``also`` adds rows that must exist exactly when
        the workitem does (e.g. its prior request) in the same transaction."""
        ds = dict(attributes)
        given = dicom_json.text(ds, SOP_INSTANCE_UID)
        if given and given != uid:
            raise InvalidRequest(
                f"The SOP Instance UID in the data set ({given}) differs from the one "
                f"requested ({uid})"
            )
        if TRANSACTION_UID in ds and dicom_json.text(ds, TRANSACTION_UID):
            raise InvalidRequest(
                "A new workitem must not have a Transaction UID (PS3.4 CC.2.5.1.1)"
            )
        ds.pop(TRANSACTION_UID, None)
        state = dicom_json.text(ds, PROCEDURE_STEP_STATE)
        if state is None:
            _put(ds, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.SCHEDULED.value)
        _put(ds, SOP_CLASS_UID, "UI", UPS_PUSH_SOP_CLASS)
        _put(ds, SOP_INSTANCE_UID, "UI", uid)
        _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
        if not dicom_json.text(ds, WORKLIST_LABEL):
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
            try:
                session.flush()
            except IntegrityError as exc:  # a concurrent create of the same UID won
                raise Conflict(f"A workitem with SOP Instance UID {uid} already exists") from exc
            self._subscribe_new(session, tenant, uid, ds, product or _code_of(ds))
            if also is not None:
                also(session)
        return _public(ds)

    def retrieve(
        self, tenant: str, uid: str, *, products: frozenset[str] | None = None
    ) -> DicomJson:
        statement = select(Workitem).where(
            col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
        )
        if products is not None:
            statement = statement.where(of_products(products))
        with self.db.read() as session:
            row = session.exec(statement).first()
            if row is None:
                raise UpsError(UpsStatus.NO_SUCH_UPS, f"no workitem {uid}")
            return _public(unpack_json(row.attributes))

    def update(
        self,
        tenant: str,
        uid: str,
        changes: DicomJson,
        transaction_uid: str | None,
        *,
        products: frozenset[str] | None = None,
    ) -> ActionResult:
        problems = update_problems(changes)
        if problems:
            raise InvalidRequest("Not a valid workitem update: " + "; ".join(problems))
        with self._write() as session:
            row = self._locked(session, tenant, uid, products)
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
            readiness_before = dicom_json.text(ds, INPUT_READINESS_STATE)
            ds.update(changes)
            emptied = [p for p in creation_problems(ds) if "(Type 1)" in p]
            if emptied:
                raise InvalidRequest("Not a valid workitem update: " + "; ".join(emptied))
            _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
            if dicom_json.text(ds, INPUT_READINESS_STATE) != readiness_before:
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
        products: frozenset[str] | None = None,
    ) -> ActionResult:
        try:
            return self._change_state(
                tenant, uid, state, transaction_uid, deadline=deadline, products=products
            )
        except _HookRefused as exc:
            if self.final_state_hook is not None:
                self.final_state_hook.refused(tenant, uid, exc.reason)
            raise UpsError(UpsStatus.FINAL_STATE_NOT_MET, exc.reason) from None

    def _change_state(
        self,
        tenant: str,
        uid: str,
        state: str,
        transaction_uid: str | None,
        *,
        deadline: datetime | None = None,
        products: frozenset[str] | None = None,
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
            row = self._locked(session, tenant, uid, products)
            if not transaction_uid:
                raise UpsError(UpsStatus.MISSING_TRANSACTION_UID)
            outcome = self._apply(row, actions[state], transaction_uid)
            if (
                outcome.state is ProcedureStepState.IN_PROGRESS
                and row.procedure_step_state == ProcedureStepState.SCHEDULED.value
                and row.input_readiness_state in ("INCOMPLETE", "UNAVAILABLE")
            ):
                # PS3.4 CC.2.5.1.3: its inputs are still arriving (late instances, priors)
                raise UpsError(
                    UpsStatus.INPUTS_NOT_READY,
                    f"Input Readiness State is {row.input_readiness_state}; "
                    "claim it once it is READY",
                )
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
                self._final(session, row, ds, target, "performer")
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

    def request_cancel(
        self, tenant: str, uid: str, info: DicomJson, *, products: frozenset[str] | None = None
    ) -> ActionResult:
        with self._write() as session:
            row = self._locked(session, tenant, uid, products)
            outcome = self._apply(row, UpsAction.REQUEST_CANCEL, None)
            ds = unpack_json(row.attributes)
            if outcome.warning is not None:
                return ActionResult(_public(ds), outcome.warning)
            reason = _cancellation_info(info, self.clock())
            if outcome.state is ProcedureStepState.CANCELED:
                # SCHEDULED: nobody performs it yet, so the Task Manager cancels it at once
                # and records why (final state requirements for CANCELED).
                self._cancel(session, row, ds, reason, "requester")
                # PS3.4 CC.2.2.3: first to IN PROGRESS, then to CANCELED, a report for each.
                passing = dict(ds)
                _put(passing, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.IN_PROGRESS.value)
                self._emit(session, tenant, uid, [EventType.STATE_REPORT], passing)
                self._emit(session, tenant, uid, [EventType.STATE_REPORT], ds, info=reason)
            else:
                self._emit(session, tenant, uid, outcome.events, ds, info=reason)
            return ActionResult(_public(ds), None)

    def _final(
        self,
        session: Session,
        row: Workitem,
        ds: DicomJson,
        state: ProcedureStepState,
        cause: Literal["performer", "requester", "manager"],
    ) -> None:
        if self.final_state_hook is not None:
            refusal = self.final_state_hook.on_final(session, row, ds, state, cause)
            if refusal is not None:
                raise _HookRefused(refusal)

    def _cancel(
        self,
        session: Session,
        row: Workitem,
        ds: DicomJson,
        info: DicomJson,
        cause: Literal["requester", "manager"],
    ) -> None:
        """The SCP itself makes a workitem CANCELED and records when and why (the final
        state requirements for CANCELED, PS3.4 Table CC.2.5-3)."""
        _record_cancellation(ds, info)
        self._final(session, row, ds, ProcedureStepState.CANCELED, cause)
        _put(ds, PROCEDURE_STEP_STATE, "CS", ProcedureStepState.CANCELED.value)
        _put(ds, MODIFICATION_DATETIME, "DT", _dt(self.clock()))
        row.transaction_uid = None
        row.deadline = None
        self._store(row, ds)

    def cancel_by_manager(
        self, tenant: str, uid: str, reason: str, *, expected_state: str, due: datetime
    ) -> bool:
        """The Task Manager ends a workitem itself (deadline passed, performer gone):
        CANCELED with the reason recorded, whatever Transaction UID a performer holds.
        Checked again under the row lock: False (nothing done) unless the workitem is still
        in ``expected_state`` with a deadline at or before ``due`` — a claim that came in
        between is not cancelled for the claim deadline it just met."""
        with self._write() as session:
            row = self._locked(session, tenant, uid)
            deadline = row.deadline
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)  # SQLite returns naive UTC
            if row.procedure_step_state != expected_state or deadline is None or deadline > due:
                return False
            ds = unpack_json(row.attributes)
            info = _cancellation_info({}, self.clock(), reason=reason)
            self._cancel(session, row, ds, info, "manager")
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
        self,
        tenant: str,
        uid: str,
        readiness: str,
        inputs: list[DicomJson] | None = None,
        *,
        attributes: DicomJson | None = None,
    ) -> bool:
        """The Task Manager's own update of a SCHEDULED workitem: its Input Information
        Sequence (instances that arrived late, prior studies) and Input Readiness State,
        and other ``attributes`` it sets (why priors are missing). False when the
        workitem is no longer SCHEDULED (a performer claimed it meanwhile)."""
        with self._write() as session:
            return self.set_inputs_in(
                session, tenant, uid, readiness, inputs, attributes=attributes
            )

    def writing(self) -> AbstractContextManager[Session]:
        """A write transaction for :meth:`set_inputs_in` together with the caller's own
        rows (event reports are sent once it commits)."""
        return self._write()

    def set_inputs_in(
        self,
        session: Session,
        tenant: str,
        uid: str,
        readiness: str,
        inputs: list[DicomJson] | None = None,
        *,
        attributes: DicomJson | None = None,
    ) -> bool:
        """:meth:`set_inputs` inside a transaction opened with :meth:`writing`."""
        row = self._locked(session, tenant, uid)
        if row.procedure_step_state != ProcedureStepState.SCHEDULED.value:
            return False
        ds = unpack_json(row.attributes)
        before = dicom_json.text(ds, INPUT_READINESS_STATE)
        if inputs is not None:
            ds[INPUT_INFORMATION] = {"vr": "SQ", "Value": inputs}
        ds.update(attributes or {})
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

    def search(
        self, tenant: str, query: QidoQuery, *, products: frozenset[str] | None = None
    ) -> QueryResult:
        """Search for Workitems (PS3.18 §11.9): creation order, paged. When the indexed
        columns answer every key (the usual worklist query: state, code, priority, study),
        paging and counting happen in SQL; otherwise each candidate is matched here.
        Results carry every attribute of the workitem (except the Transaction UID): an
        entry is small and a performer needs its inputs, so ``includefield`` cannot ask
        for more. A restricted caller (``products``) finds only its products' workitems,
        filtered in the same SQL statement."""
        result = QueryResult()
        statement, exact = self._narrowed(tenant, query)
        if products is not None:
            statement = statement.where(of_products(products))
        if exact:
            with self.db.read() as session:
                total = session.exec(select(func.count()).select_from(statement.subquery())).one()
                page = session.exec(statement.offset(query.offset).limit(query.limit)).all()
            result.matches = [_public(unpack_json(blob)) for blob in page]
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
                result.matches.append(_public(ds))
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


def _cancellation_info(info: DicomJson, now: datetime, reason: str | None = None) -> DicomJson:
    """The Cancel Requested / cancellation attributes (PS3.4 Table CC.2.4-1, CC.2.5-3)."""
    out: DicomJson = {}
    _put(out, CANCELLATION_DATETIME, "DT", _dt(now))
    text = reason or dicom_json.text(info, REASON_FOR_CANCELLATION)
    if text:
        _put(out, REASON_FOR_CANCELLATION, "LT", text)
    for tag in (DISCONTINUATION_REASON_CODE, CONTACT_URI, CONTACT_DISPLAY_NAME):
        if tag in info:
            out[tag] = info[tag]
    return out


def _cancelled_at(ds: DicomJson) -> str | None:
    item = dicom_json.first(ds, PROGRESS_INFORMATION)
    return dicom_json.text(item, CANCELLATION_DATETIME) if isinstance(item, dict) else None


def _record_cancellation(ds: DicomJson, info: DicomJson) -> None:
    """Put the cancellation date-time and reason in the Procedure Step Progress
    Information Sequence, where PS3.4 Table CC.2.5-3 keeps them."""
    first = dicom_json.first(ds, PROGRESS_INFORMATION)
    item = dict(first) if isinstance(first, dict) else {}
    for tag in (CANCELLATION_DATETIME, REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_CODE):
        if tag in info:
            item[tag] = info[tag]
    contact = {t: info[t] for t in (CONTACT_URI, CONTACT_DISPLAY_NAME) if t in info}
    if contact:
        item[COMMUNICATIONS_URI] = {"vr": "SQ", "Value": [contact]}
    ds[PROGRESS_INFORMATION] = {"vr": "SQ", "Value": [item]}


def expiry(minutes: float | None, now: datetime) -> datetime | None:
    return now + timedelta(minutes=minutes) if minutes else None
