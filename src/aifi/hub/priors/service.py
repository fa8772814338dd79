"""Prior-study requests at the hub (issue 17): a comparison product's workitem waits for the
patient's earlier studies, which only the hospital's PACS has.

The hub never calls into a hospital, so it keeps a list of open requests that the
hospital's gateway polls (``GET /api/v1/prior-requests``, :mod:`aifi.hub.priors.api`):

1. When the Task Manager routes a study to a product whose routing rules declare
   ``priors`` (:class:`aifi.ihe_profiles.rules.Priors`), the workitem is created at once
   with Input Readiness State INCOMPLETE (PS3.4 CC.2.5.1.3; IHE RAD TF AIW-I) and
   :meth:`PriorRequests.open` writes a request row with its deadline (``wait_seconds``).
2. The gateway registers the studies it will send (:meth:`PriorRequests.register`): the
   Task Manager never routes a registered prior study (:meth:`PriorRequests.is_prior`).
3. The gateway answers (:meth:`PriorRequests.answer`): ``found`` puts every instance of the
   named studies into the workitem's Input Information Sequence (0040,4021), marked as priors
   (:func:`aifi.ihe_profiles.aiw.prior_information`); ``none``/``failed`` record why in its
   Scheduled Processing Parameters Sequence (0074,1210)
   (:func:`aifi.ihe_profiles.aiw.priors_unavailable_item`). Either way it becomes READY,
   with a UPS State Report (PS3.4 CC.2.4) to its subscribers.
4. At the deadline the Task Manager's round (:meth:`PriorRequests.expire`) makes it READY
   without priors, saying so; a late answer is refused (409).

The request row and the workitem change in one transaction (the request row locked first),
so an answer and the deadline never both apply.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from aifi import dicom_json
from aifi.clock import Clock, as_utc, utc_now
from aifi.dicom_json import DicomJson
from aifi.dicom_json import unpack as unpack_json
from aifi.dicomweb.store import DicomStore
from aifi.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import PriorRequest, PriorStudy, Workitem
from aifi.hub.worklist.service import SqlWorklist
from aifi.ihe_profiles.aiw import (
    INPUT_INFORMATION,
    SCHEDULED_PROCESSING_PARAMETERS,
    is_prior_item,
    prior_information,
    priors_unavailable_item,
)
from aifi.ihe_profiles.normalise import BODY_PART_FIELDS, StudyFacts, body_regions
from aifi.ihe_profiles.rules import Product

log = logging.getLogger(__name__)

__all__ = ["OpenRequest", "PriorOutcome", "PriorRequestState", "PriorRequests", "study_profile"]


class PriorRequestState(enum.StrEnum):
    OPEN = "open"
    FOUND = "found"
    NONE = "none"
    FAILED = "failed"
    EXPIRED = "expired"


class PriorOutcome(enum.StrEnum):
    """What the gateway answers."""

    FOUND = "found"
    NONE = "none"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """An open request as the gateway sees it (pseudonymous identifiers only)."""

    id: str
    study_instance_uid: str
    patient_id: str
    product: str
    count: int
    same_modality: bool
    same_body_part: bool
    within_days: int
    modalities: list[str]
    body_parts: list[str]
    deadline: datetime


def study_profile(metadata: Sequence[DicomJson], series: Sequence[str]) -> tuple[str, str, str]:
    """(Patient ID, modalities, body regions) of a study's input ``series`` (all series
    when empty), the last two ``|``-separated, for the gateway's search of the PACS."""
    facts = StudyFacts.from_metadata(list(metadata))
    chosen = [s for s in facts.series if not series or s.series_instance_uid in series]
    modalities = sorted({s.modality for s in chosen if s.modality})
    regions: set[str] = set()
    for s in chosen:
        for field in BODY_PART_FIELDS:
            for value in s.text(field):
                regions |= body_regions(value)
    patient = ""
    for instance in metadata:
        patient = str(dicom_json.first(instance, "00100020") or "")
        if patient:
            break
    return patient, "|".join(modalities), "|".join(sorted(regions))


class PriorRequests:
    """The hub's prior-study requests (module docstring)."""

    def __init__(
        self,
        db: Database,
        store: DicomStore,
        worklist: SqlWorklist,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.store = store
        self.worklist = worklist
        self.clock = clock

    # -- the Task Manager's side --------------------------------------------------------

    def open(
        self,
        session: Session,
        tenant: str,
        workitem_uid: str,
        product: Product,
        study_uid: str,
        profile: tuple[str, str, str],
        now: datetime,
    ) -> str:
        """A request for the priors of ``product``'s new workitem, added in the transaction
        that creates the workitem (INCOMPLETE): never a waiting workitem without its
        request, which nothing would ever make READY."""
        assert product.priors is not None
        spec = product.priors
        patient, modalities, body_parts = profile
        request_id = uuid.uuid4().hex
        session.add(
            PriorRequest(
                tenant=tenant,
                request_id=request_id,
                workitem_uid=workitem_uid,
                study_instance_uid=study_uid,
                patient_id=patient,
                product=product.code,
                count=spec.count,
                same_modality=spec.same_modality,
                same_body_part=spec.same_body_part,
                within_days=spec.within_days,
                modalities=modalities,
                body_parts=body_parts,
                deadline=now + timedelta(seconds=spec.wait_seconds),
                created_at=now,
            )
        )
        log.info("workitem %s waits for priors (request %s)", workitem_uid, request_id)
        return request_id

    def is_prior(self, tenant: str, study_uid: str) -> bool:
        """Was the study registered as another study's prior? (Then it is not routed.)"""
        with self.db.read() as session:
            found = session.exec(
                select(PriorStudy.pk).where(
                    col(PriorStudy.tenant) == tenant,
                    col(PriorStudy.study_instance_uid) == study_uid,
                )
            ).first()
        return found is not None

    def waiting(self, tenant: str, workitem_uid: str) -> bool:
        """Does the workitem still wait for its priors?"""
        with self.db.read() as session:
            found = session.exec(
                select(PriorRequest.pk).where(
                    col(PriorRequest.tenant) == tenant,
                    col(PriorRequest.workitem_uid) == workitem_uid,
                    col(PriorRequest.state) == PriorRequestState.OPEN.value,
                )
            ).first()
        return found is not None

    def expire(self, now: datetime) -> list[str]:
        """Open requests past their deadline: their workitems go ahead without priors.
        Answers the request ids ended."""
        with self.db.read() as session:
            due = session.exec(
                select(PriorRequest.tenant, PriorRequest.request_id).where(
                    col(PriorRequest.state) == PriorRequestState.OPEN.value,
                    col(PriorRequest.deadline) <= now,
                )
            ).all()
        ended = []
        for tenant, request_id in due:
            with self.worklist.writing() as session:
                row = self._locked(session, tenant, request_id)
                if row.state != PriorRequestState.OPEN.value:
                    continue
                waited = (as_utc(row.deadline) - as_utc(row.created_at)).total_seconds()
                reason = f"no prior study arrived within {waited:g} seconds"
                self._close(session, row, PriorRequestState.EXPIRED, reason, now)
                self._without(session, row, reason)
            ended.append(request_id)
            log.info("prior request %s expired; its workitem runs without", request_id)
        return ended

    # -- the gateway's side -------------------------------------------------------------

    def list_open(self, tenant: str, limit: int = 50) -> list[OpenRequest]:
        """The tenant's open requests (not answered, deadline not passed), oldest first."""
        now = self.clock()
        with self.db.read() as session:
            rows = session.exec(
                select(PriorRequest)
                .where(
                    col(PriorRequest.tenant) == tenant,
                    col(PriorRequest.state) == PriorRequestState.OPEN.value,
                    col(PriorRequest.deadline) > now,
                )
                .order_by(col(PriorRequest.pk))
                .limit(limit)
            ).all()
        return [
            OpenRequest(
                id=r.request_id,
                study_instance_uid=r.study_instance_uid,
                patient_id=r.patient_id,
                product=r.product,
                count=r.count,
                same_modality=r.same_modality,
                same_body_part=r.same_body_part,
                within_days=r.within_days,
                modalities=[m for m in r.modalities.split("|") if m],
                body_parts=[b for b in r.body_parts.split("|") if b],
                deadline=as_utc(r.deadline),
            )
            for r in rows
        ]

    def register(self, tenant: str, request_id: str, study_uids: Sequence[str]) -> None:
        """Record ``study_uids`` as priors of the request before they are sent: never
        routed. 404 unknown request; 409 closed (answered or past its deadline)."""
        uids = _uids(study_uids)
        with self.db.write() as session:
            row = self._locked(session, tenant, request_id)
            self._check_open(row)
            if row.study_instance_uid in uids:
                raise Unprocessable("a study is not its own prior")
            self._add_priors(session, row, uids)

    def answer(
        self,
        tenant: str,
        request_id: str,
        outcome: PriorOutcome,
        reason: str | None,
        study_uids: Sequence[str],
    ) -> None:
        """The gateway's answer (module docstring, step 3). 404 unknown request; 409
        closed; 422 ``found`` naming a study with no instance here, or none at all."""
        now = self.clock()
        uids = _uids(study_uids)
        with self.db.read() as session:
            peek = self._locked(session, tenant, request_id, lock=False)
            self._check_open(peek)
        if outcome is PriorOutcome.FOUND:
            if not uids:
                raise Unprocessable("outcome 'found' names no study_instance_uids")
            if peek.study_instance_uid in uids:
                raise Unprocessable("a study is not its own prior")
            instances: list[tuple[str, str, str, str]] = []
            for uid in uids:
                stored = self.store.find_instances(tenant, uid)
                if not stored:
                    raise Unprocessable(f"No instance of study {uid} at the hub")
                instances += [
                    (uid, s.series_instance_uid, s.sop_instance_uid, s.sop_class_uid)
                    for s in stored
                ]
        with self.worklist.writing() as session:
            row = self._locked(session, tenant, request_id)
            self._check_open(row)
            if outcome is PriorOutcome.FOUND:
                self._add_priors(session, row, uids)
                self._close(session, row, PriorRequestState.FOUND, reason, now)
                self._with(session, row, prior_information(instances))
            else:
                why = reason or (
                    "no prior study found" if outcome is PriorOutcome.NONE else "search failed"
                )
                state = PriorRequestState(outcome.value)
                self._close(session, row, state, why, now)
                self._without(session, row, why)

    # -- helpers ------------------------------------------------------------------------

    def _locked(
        self, session: Session, tenant: str, request_id: str, *, lock: bool = True
    ) -> PriorRequest:
        """The tenant's request (row-locked on PostgreSQL); 404 when it has none."""
        statement = select(PriorRequest).where(
            col(PriorRequest.tenant) == tenant, col(PriorRequest.request_id) == request_id
        )
        if lock and not self.db.is_sqlite:
            statement = statement.with_for_update()
        row = session.exec(statement).first()
        if row is None:
            raise NotFound(f"No prior request {request_id}")
        return row

    def _check_open(self, row: PriorRequest) -> None:
        if row.state != PriorRequestState.OPEN.value:
            raise Conflict(f"Prior request {row.request_id} is closed ({row.state})")
        if as_utc(row.deadline) <= self.clock():
            raise Conflict(
                f"Prior request {row.request_id} expired: its workitem went ahead without priors"
            )

    def _add_priors(self, session: Session, row: PriorRequest, uids: list[str]) -> None:
        known = set(
            session.exec(
                select(PriorStudy.study_instance_uid).where(
                    col(PriorStudy.request_pk) == row.pk,
                )
            ).all()
        )
        for uid in uids:
            if uid not in known and uid != row.study_instance_uid:
                assert row.pk is not None
                session.add(
                    PriorStudy(tenant=row.tenant, request_pk=row.pk, study_instance_uid=uid)
                )

    @staticmethod
    def _close(
        session: Session,
        row: PriorRequest,
        state: PriorRequestState,
        reason: str | None,
        now: datetime,
    ) -> None:
        row.state = state.value
        row.reason = reason
        row.answered_at = now
        session.add(row)

    def _current_items(self, session: Session, row: PriorRequest) -> list[DicomJson] | None:
        workitem = session.exec(
            select(Workitem.attributes).where(
                col(Workitem.tenant) == row.tenant,
                col(Workitem.sop_instance_uid) == row.workitem_uid,
            )
        ).first()
        if workitem is None:
            return None
        ds = unpack_json(workitem)
        return [i for i in dicom_json.items(ds, INPUT_INFORMATION) if not is_prior_item(i)]

    def _with(self, session: Session, row: PriorRequest, priors: list[DicomJson]) -> None:
        current = self._current_items(session, row)
        if current is None:
            return
        self.worklist.set_inputs_in(
            session, row.tenant, row.workitem_uid, "READY", current + priors
        )

    def _without(self, session: Session, row: PriorRequest, reason: str) -> None:
        item = priors_unavailable_item(reason)
        self.worklist.set_inputs_in(
            session,
            row.tenant,
            row.workitem_uid,
            "READY",
            attributes={SCHEDULED_PROCESSING_PARAMETERS: {"vr": "SQ", "Value": [item]}},
        )


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
"""A UID (PS3.5 §9.1; ASCII digits only, as the API's body model checks)."""


def _uids(study_uids: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(u.strip() for u in study_uids))
    for uid in out:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise InvalidRequest(f"{uid!r} is not a Study Instance UID")
    return out
