"""The EPD asks for AI: a FHIR Task naming a study and a product becomes a UPS workitem.

An EPD creates a Task (FHIR R4 task.html; intent ``order``) with

- the product in ``code`` (a coding of :data:`aifi.fhir.codes.PRODUCT_SYSTEM`, e.g.
  ``AIFI-FRACTURE``) or in ``owner`` (``Device/AIFI-FRACTURE``);
- the study in ``focus``: a literal reference ``ImagingStudy/<Study Instance UID>`` (it must
  exist for this hospital), or a logical one by identifier — the Study Instance UID
  (``urn:dicom:uid`` / ``urn:oid:…``) or the Accession Number (identifier type v2-0203
  ``ACSN``) — which may arrive later; or in a ServiceRequest named in ``basedOn`` that
  carries the accession number as its identifier.

Checked at once (422 OperationOutcome, nothing stored): the product is known and enabled
for the hospital; a literal study reference resolves; a ``basedOn`` ServiceRequest exists.
Then the request waits until the study is there and the Task Manager has seen it complete
(its quiet period or completion signal; IHE AIW-I), and is served in the Task Manager's
round:

1. a workitem for that product and study already exists (the routing rules scheduled it):
   the Task follows that workitem — the product does not run twice on the same inputs;
2. otherwise, if the study meets the product's conditions (the same rules, e.g. a product
   marked ``on_request`` is only scheduled this way), a workitem is created for it;
3. otherwise the Task fails, ``statusReason`` saying which condition failed with the values
   seen; a study that does not arrive within ``wait`` fails it too.

From then on the projection (:mod:`aifi.hub.fhir.projection`) keeps the EPD's Task in step
with the workitem, keeping what the EPD wrote (identifier, requester, basedOn, note).
Setting the Task's status to ``cancelled`` asks the performer to stop (RAD-83 Request
Cancellation) or withdraws a waiting request.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, or_, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.errors import HubError, NotFound, Unprocessable
from aifi.fhir.types import Resource, WriteResult
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.orchestration.routing import StudyRouter
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AiRequest, Study, StudyRouting, Workitem
from aifi.hub.worklist.service import SqlWorklist
from aifi.ihe_profiles.rules import RulesConfig

log = logging.getLogger(__name__)

PRODUCT_SYSTEM = "urn:aifi:product"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ACSN = "ACSN"


def _is_accession(identifier: dict[str, Any]) -> bool:
    codings = ((identifier.get("type") or {}).get("coding")) or []
    return any(c.get("code") == ACSN for c in codings)


def _study_keys(identifier: dict[str, Any]) -> tuple[str | None, str | None]:
    """(Study Instance UID, Accession Number) named by an identifier."""
    value = str(identifier.get("value") or "").strip()
    if not value:
        return None, None
    if _is_accession(identifier):
        return None, value
    if identifier.get("system") == DICOM_UID_SYSTEM or value.startswith("urn:oid:"):
        return value.removeprefix("urn:oid:"), None
    return None, None


class AiRequests:
    """EPD requests for AI (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        store: SqlFhirStore,
        rules: RulesConfig,
        worklist: SqlWorklist,
        router: StudyRouter,
        *,
        wait: timedelta = timedelta(hours=24),
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.store = store
        self.rules = rules
        self.worklist = worklist
        self.router = router
        self.wait = wait
        self.clock = clock

    # -- creation (POST /fhir/Task) ------------------------------------------------------

    def create(self, tenant: str, task: Resource) -> WriteResult:
        task = dict(task)
        task.pop("id", None)
        if task.get("intent") not in (None, "order"):
            raise Unprocessable("A Task asking for AI must have intent 'order'")
        if task.get("status") not in (None, "requested", "draft", "ready"):
            raise Unprocessable(
                f"A new Task asking for AI must have status 'requested', not {task['status']!r}"
            )
        task["intent"] = "order"
        task["status"] = "requested"
        product = self._product(tenant, task)
        with self.db.write() as session:
            study_uid, accession = self._study(session, tenant, task)
            result = self.store.create(session, tenant, task)
            session.add(
                AiRequest(
                    tenant=tenant,
                    task_id=result.stored.resource_id,
                    product=product,
                    study_instance_uid=study_uid,
                    accession_number=accession,
                    deadline=self.clock() + self.wait,
                    created_at=self.clock(),
                )
            )
        log.info("EPD request %s: %s", result.stored.resource_id, product)
        return result

    def _product(self, tenant: str, task: Resource) -> str:
        codes = [
            c.get("code")
            for c in ((task.get("code") or {}).get("coding") or [])
            if c.get("system") == PRODUCT_SYSTEM and c.get("code")
        ]
        owner = str((task.get("owner") or {}).get("reference") or "")
        if owner.startswith("Device/"):
            codes.append(owner.removeprefix("Device/"))
        if not codes:
            raise Unprocessable(
                f"The Task names no AI product: give Task.code with a coding of system "
                f"{PRODUCT_SYSTEM} (or Task.owner Device/<product code>)"
            )
        if len(set(codes)) > 1:
            raise Unprocessable(f"The Task names more than one product: {sorted(set(codes))}")
        code = str(codes[0])
        try:
            self.rules.product(code)
        except NotFound:
            raise Unprocessable(f"Unknown AI product {code!r}") from None
        try:
            enabled = [p.code for p in self.rules.products_for(tenant)]
        except NotFound:
            enabled = []
        if code not in enabled:
            raise Unprocessable(f"AI product {code!r} is not enabled for this hospital")
        return code

    def _study(
        self, session: Session, tenant: str, task: Resource
    ) -> tuple[str | None, str | None]:
        focus = task.get("focus") or {}
        reference = str(focus.get("reference") or "")
        if reference:
            if not reference.startswith("ImagingStudy/"):
                raise Unprocessable(f"Task.focus must reference an ImagingStudy, not {reference!r}")
            literal = reference.removeprefix("ImagingStudy/")
            if self._find_study(session, tenant, literal, None) is None:
                raise Unprocessable(f"{reference} does not exist")
            return literal, None
        study_uid, accession = _study_keys(focus.get("identifier") or {})
        for based_on in task.get("basedOn") or []:
            ref = str(based_on.get("reference") or "")
            if not ref.startswith("ServiceRequest/"):
                continue
            request = self.store.get(session, tenant, "ServiceRequest", ref.split("/", 1)[1])
            if request is None:
                raise Unprocessable(f"{ref} (Task.basedOn) does not exist")
            for identifier in request.content.get("identifier") or []:
                uid, acc = _study_keys(identifier)
                if uid is None and acc is None:
                    continue
                study_uid, accession = study_uid or uid, accession or acc
        if not study_uid and not accession:
            raise Unprocessable(
                "The Task names no study: give Task.focus as ImagingStudy/<Study Instance "
                "UID>, or an identifier with the Study Instance UID (urn:dicom:uid) or the "
                "Accession Number (type ACSN), or basedOn a ServiceRequest with the accession"
            )
        return study_uid, accession

    @staticmethod
    def _find_study(
        session: Session, tenant: str, uid: str | None, accession: str | None
    ) -> Study | None:
        conditions = []
        if uid:
            conditions.append(col(Study.study_instance_uid) == uid)
        if accession:
            conditions.append(col(Study.accession_number) == accession)
        if not conditions:
            return None
        return session.exec(
            select(Study)
            .where(col(Study.tenant) == tenant, or_(*conditions))
            .order_by(col(Study.pk).desc())
        ).first()

    # -- cancellation (PUT /fhir/Task/{id} with status cancelled) ------------------------

    def cancel(self, tenant: str, task_id: str, reason: str) -> None:
        with self.db.write() as session:
            request = self._request(session, tenant, task_id)
            workitem = request.workitem_uid
            if workitem is None:
                if request.state == "waiting":
                    request.state = "cancelled"
                    request.reason = reason
                    session.add(request)
                return
        info = {"00741238": {"vr": "LT", "Value": [reason[:10240]]}}
        try:
            self.worklist.request_cancel(tenant, workitem, info)
        except HubError as exc:
            raise Unprocessable(f"The workitem cannot be cancelled: {exc.reason}") from exc

    def _request(self, session: Session, tenant: str, task_id: str) -> AiRequest:
        request = session.exec(
            select(AiRequest).where(
                col(AiRequest.tenant) == tenant, col(AiRequest.task_id) == task_id
            )
        ).first()
        if request is None:
            raise Unprocessable(
                f"Task/{task_id} mirrors a workitem of the hub: only Tasks an EPD created "
                "can be changed (cancel the workitem through UPS-RS)"
            )
        return request

    def is_request(self, tenant: str, task_id: str) -> bool:
        with self.db.read() as session:
            return (
                session.exec(
                    select(AiRequest.pk).where(
                        col(AiRequest.tenant) == tenant, col(AiRequest.task_id) == task_id
                    )
                ).first()
                is not None
            )

    # -- serving (the Task Manager's round) ----------------------------------------------

    def after_round(self, now: datetime) -> None:
        """The Task Manager's hook (:attr:`TaskManager.after_round`)."""
        self.tick(now)

    def tick(self, now: datetime | None = None) -> int:
        """Serve the waiting requests whose study is there and routed; fail those whose
        study did not come in time. Returns how many changed."""
        now = now or self.clock()
        with self.db.read() as session:
            waiting = session.exec(
                select(AiRequest)
                .where(col(AiRequest.state) == "waiting")
                .order_by(col(AiRequest.pk))
            ).all()
        changed = 0
        for request in waiting:
            try:
                changed += self._serve(request, now)
            except Exception:
                log.exception("EPD request %s could not be served", request.task_id)
        return changed

    def _serve(self, request: AiRequest, now: datetime) -> int:
        tenant = request.tenant
        with self.db.read() as session:
            study = self._find_study(
                session, tenant, request.study_instance_uid, request.accession_number
            )
            routing = (
                session.exec(
                    select(StudyRouting).where(
                        col(StudyRouting.tenant) == tenant,
                        col(StudyRouting.study_instance_uid) == study.study_instance_uid,
                    )
                ).first()
                if study is not None
                else None
            )
        if study is None:
            deadline = as_utc(request.deadline) if request.deadline else None
            if deadline is not None and now >= deadline:
                hours = self.wait.total_seconds() / 3600
                return self._finish(
                    request, None, f"the study did not arrive within {hours:g} hours"
                )
            return 0
        routed = (
            as_utc(routing.routed_version)
            if routing is not None and routing.routed_version
            else None
        )
        updated = as_utc(study.updated_at)
        if routed is None or (updated is not None and routed < updated):
            return 0  # still arriving, or not yet seen complete by the Task Manager
        uid = study.study_instance_uid
        existing = self._workitem(tenant, uid, request.product)
        if existing is None:
            decision = next(
                (
                    d
                    for d in self.router.decisions(tenant, uid)
                    if d.product.code == request.product
                ),
                None,
            )
            if decision is None:
                return self._finish(request, None, f"{request.product} is not enabled")
            if not decision.matched:
                failing = "; ".join(
                    f"{c.condition} ({c.detail.strip()})" if c.detail.strip() else c.condition
                    for c in decision.checks
                    if not c.passed
                )
                return self._finish(
                    request, None, f"the study does not meet the product's conditions: {failing}"
                )
            existing = self.router.create_workitem(tenant, decision, uid)
        return self._finish(request, existing, None, study_uid=uid)

    def _workitem(self, tenant: str, study_uid: str, product: str) -> str | None:
        with self.db.read() as session:
            return session.exec(
                select(Workitem.sop_instance_uid)
                .where(
                    col(Workitem.tenant) == tenant,
                    col(Workitem.study_instance_uid) == study_uid,
                    col(Workitem.product) == product,
                )
                .order_by(col(Workitem.pk).desc())
            ).first()

    def _finish(
        self,
        request: AiRequest,
        workitem_uid: str | None,
        reason: str | None,
        *,
        study_uid: str | None = None,
    ) -> int:
        with self.db.write() as session:
            row = session.get(AiRequest, request.pk)
            if row is None or row.state != "waiting":
                return 0
            row.state = "linked" if workitem_uid else "failed"
            row.workitem_uid = workitem_uid
            row.reason = reason
            if study_uid:
                row.study_instance_uid = study_uid
            session.add(row)
        log.info(
            "EPD request %s: %s",
            request.task_id,
            f"workitem {workitem_uid}" if workitem_uid else reason,
        )
        return 1
