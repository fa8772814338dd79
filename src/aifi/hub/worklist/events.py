"""The AIW-I worklist's shared ground: DICOM JSON helpers and tags, the locked-row and
write-transaction helpers, and UPS subscriptions and event reports (PS3.4 CC.2.3, CC.2.4;
PS3.18 §11.10-§11.13).

:class:`WorklistBase` keeps, per tenant, which AE is subscribed to which workitem (or to the
global or a filtered worklist) and queues an event report for each subscriber in the same
transaction as the change it reports; :class:`aifi.hub.worklist.service.SqlWorklist` builds the
workitem operations on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, update
from sqlmodel import Session, col, select

from aifi.clock import utc_now
from aifi.dicom_json import DicomJson, first, items, text
from aifi.dicom_json import pack as pack_json
from aifi.dicom_json import unpack as unpack_json
from aifi.dicomweb.matching import match_dataset
from aifi.dicomweb.worklist import (
    FILTERED_WORKLIST,
    GLOBAL_WORKLIST,
    UPS_EVENT_SOP_CLASS,
    Doorbell,
    PendingEvent,
    UpsError,
    parse_filter,
)
from aifi.errors import NotFound
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import UpsEvent, UpsSubscription, Workitem
from aifi.ihe_profiles.ups import (
    ProcedureStepState,
    UpsStatus,
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
CONTACT_DISPLAY_NAME = "0074100C"
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

RESTRICTION_PREFIX = "@products="
"""How a restricted subscriber's global or filtered subscription records its products in
the ``filter`` column: a first line ``@products=A B``, then the matching keys, if any."""

DEFAULT_WORKLIST_LABEL = "AIFI"
"""Worklist Label given to workitems created without one (PS3.4 CC.2.5.1.1: the SCP may)."""


def _put(ds: DicomJson, tag: str, vr: str, *values: Any) -> None:
    ds[tag] = {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _dt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f") + "+0000"


def _study_of(ds: DicomJson) -> str | None:
    """The study a workitem is about: its own Study Instance UID, else the first input's."""
    direct = text(ds, STUDY_INSTANCE_UID)
    if direct:
        return direct
    for item in items(ds, INPUT_INFORMATION):
        if text(item, STUDY_INSTANCE_UID):
            return text(item, STUDY_INSTANCE_UID)
    return None


def _code_of(ds: DicomJson) -> str | None:
    item = first(ds, SCHEDULED_WORKITEM_CODE)
    return text(item, CODE_VALUE) if isinstance(item, dict) else None


def of_products(products: frozenset[str]) -> ColumnElement[bool]:
    """SQL: the workitem belongs to one of ``products`` — its routed product, else the
    Code Value of its Scheduled Workitem Code Sequence (as
    :func:`aifi.hub.results.workitem.product_of` tells a workitem's product)."""
    return func.coalesce(col(Workitem.product), col(Workitem.workitem_code)).in_(sorted(products))


def product_code(row: Workitem) -> str | None:
    """The product a workitem belongs to (the Python side of :func:`of_products`)."""
    return row.product or row.workitem_code


def restricted_filter(products: frozenset[str] | None, filter_query: str | None) -> str | None:
    """The ``filter`` a subscription is stored with: a restricted subscriber's products
    first (see :data:`RESTRICTION_PREFIX`), then its matching keys."""
    if products is None:
        return filter_query
    head = RESTRICTION_PREFIX + " ".join(sorted(products))
    return head + ("\n" + filter_query if filter_query else "")


def _public(ds: DicomJson) -> DicomJson:
    """The workitem as clients see it: never the Transaction UID (PS3.4 CC.1.1: only the
    performer that claimed it knows it; PS3.18 §11.5)."""
    return {tag: element for tag, element in ds.items() if tag != TRANSACTION_UID}


class WorklistBase:
    """Subscriptions and events on the hub's database (see the module docstring)."""

    def __init__(self, db: Database, *, clock: Any = utc_now) -> None:
        self.db = db
        self.clock = clock
        self.doorbell = Doorbell()

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction; once it has committed events, the doorbell rings."""
        with self.db.write() as session:
            yield session
        if session.info.get("ups_events"):
            self.doorbell.ring()

    def _locked(
        self,
        session: Session,
        tenant: str,
        uid: str,
        products: frozenset[str] | None = None,
    ) -> Workitem:
        """The workitem row, locked; C307 (404) when the tenant has none with this UID
        or, for a restricted caller, none of its ``products`` (the same answer: no
        existence leak)."""
        statement = select(Workitem).where(
            col(Workitem.tenant) == tenant,
            col(Workitem.sop_instance_uid) == uid,
        )
        if products is not None:
            statement = statement.where(of_products(products))
        if not self.db.is_sqlite:
            statement = statement.with_for_update()
        row = session.exec(statement).first()
        if row is None:
            raise UpsError(UpsStatus.NO_SUCH_UPS, f"no workitem {uid}")
        assert isinstance(row, Workitem)
        return row

    def _store(self, row: Workitem, ds: DicomJson) -> None:
        row.procedure_step_state = text(ds, PROCEDURE_STEP_STATE) or row.procedure_step_state
        row.priority = text(ds, PRIORITY) or row.priority
        row.input_readiness_state = text(ds, INPUT_READINESS_STATE) or row.input_readiness_state
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

    def _subscribe_new(
        self, session: Session, tenant: str, uid: str, ds: DicomJson, product: str | None
    ) -> None:
        """A new workitem: every active global (and matching filtered) subscriber is
        subscribed to it and gets its first State Report (PS3.4 CC.2.3.1) — a restricted
        subscriber only to its own products' workitems."""
        rows = session.exec(
            select(UpsSubscription).where(
                col(UpsSubscription.tenant) == tenant,
                col(UpsSubscription.workitem_uid).in_([GLOBAL_WORKLIST, FILTERED_WORKLIST]),
                col(UpsSubscription.suspended) == False,  # noqa: E712
            )
        ).all()
        for sub in rows:
            if sub.filter and not _filter_matches(sub.filter, ds, product):
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

    # -- subscriptions ----------------------------------------------------------------

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
        with self._write() as session:
            if uid in (GLOBAL_WORKLIST, FILTERED_WORKLIST):
                stored_filter = restricted_filter(products, filter_query)
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
                            filter=stored_filter,
                        )
                    )
                else:
                    existing.deletion_lock = deletion_lock
                    existing.suspended = False
                    existing.filter = stored_filter
                # ... and to every workitem that exists now (PS3.4 CC.2.3.1), with a
                # State Report for each so the subscriber learns where things stand.
                existing_rows = select(Workitem).where(
                    col(Workitem.tenant) == tenant,
                    col(Workitem.procedure_step_state).in_(
                        [
                            ProcedureStepState.SCHEDULED.value,
                            ProcedureStepState.IN_PROGRESS.value,
                        ]
                    ),
                )
                if products is not None:
                    existing_rows = existing_rows.where(of_products(products))
                rows = session.exec(existing_rows).all()
                for row in rows:
                    ds = unpack_json(row.attributes)
                    if uid == FILTERED_WORKLIST and not _filter_matches(
                        filter_query, ds, product_code(row)
                    ):
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
            row = self._locked(session, tenant, uid, products)
            self._add_subscription(session, tenant, ae_title, uid, deletion_lock)
            self._emit(
                session,
                tenant,
                uid,
                [EventType.STATE_REPORT],
                unpack_json(row.attributes),
                only=ae_title,
            )

    def unsubscribe(
        self, tenant: str, ae_title: str, uid: str, *, products: frozenset[str] | None = None
    ) -> None:
        with self._write() as session:
            if products is not None and uid not in (GLOBAL_WORKLIST, FILTERED_WORKLIST):
                self._locked(session, tenant, uid, products)  # another product's: 404
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

    def pending_events(
        self, tenant: str, ae_title: str, after: int, *, products: frozenset[str] | None = None
    ) -> list[PendingEvent]:
        """Events waiting for ``ae_title``; for a restricted caller only those of its
        products' workitems (AE titles are the tenant's, not the caller's: the events of
        another subscriber using the same title stay queued for it)."""
        statement = (
            select(UpsEvent.pk, UpsEvent.payload)
            .where(
                col(UpsEvent.tenant) == tenant,
                col(UpsEvent.ae_title) == ae_title,
                col(UpsEvent.pk) > after,
                col(UpsEvent.delivered_at).is_(None),
            )
            .order_by(col(UpsEvent.pk))
            .limit(500)
        )
        if products is not None:
            statement = statement.join(
                Workitem,
                (col(Workitem.tenant) == col(UpsEvent.tenant))
                & (col(Workitem.sop_instance_uid) == col(UpsEvent.workitem_uid)),
            ).where(of_products(products))
        with self.db.read() as session:
            rows = session.exec(statement).all()
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

    def purge_delivered(self, before: datetime) -> int:
        """Forget event reports delivered before ``before`` (they are never sent again);
        how many were removed."""
        with self.db.write() as session:
            result = session.exec(
                delete(UpsEvent).where(
                    col(UpsEvent.delivered_at).is_not(None), col(UpsEvent.delivered_at) < before
                )
            )
            return int(result.rowcount or 0)


def _filter_matches(text: str | None, ds: DicomJson, product: str | None) -> bool:
    """Does a new workitem (``ds``, of ``product``) fall under a subscription's stored
    filter (see :func:`restricted_filter`)?"""
    if text and text.startswith(RESTRICTION_PREFIX):
        head, _, text = text.partition("\n")
        if product not in head[len(RESTRICTION_PREFIX) :].split():
            return False
    query = parse_filter(text)
    return query is None or match_dataset(query.matchers, ds, query.combined)
