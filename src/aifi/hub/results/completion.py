"""IHE AIR results on the hub: the answer of each workitem the Task Manager routed.

The hook (:class:`ResultsHook`, called by :class:`~aifi.hub.worklist.service.SqlWorklist` in
the transaction that ends a workitem the Task Manager routed, i.e. with a product):

* COMPLETED: every instance named in the Output Information Sequence (PS3.4 Table
  CC.2.5-3) must be an accepted result of this workitem; an instance of a non-result SOP
  Class stored in the hub passes unchecked (the gate does not look at it either). Else the
  completion is refused (C304, the reasons in the Warning) and a ResultProblem recorded.
  A completion whose Output Information Sequence names no instance at all is an AiResult
  "failed" with the reason "no result objects", released at once: IHE AIW-I/AIR, the
  absence of a result must never read as a negative (a product that found nothing says
  so in a result object, e.g. a TID 1500 report with the finding absent).
  Otherwise the :class:`~aifi.hub.persistence.tables.AiResult`: positive when a result instance
  reports a
  present finding, "measured" when they report measurements
  only (a quantification such as bone age), else negative; urgent when positive and the product has
  ``urgent_findings`` (a :class:`~aifi.hub.persistence.tables.Notification` and a WARNING log line,
  UIDs only); supervised products await review, autonomous ones are released at once and
  handed to the delivery outbox.
* CANCELED: an AiResult "failed" (Task Manager deadline, performer discontinued) or
  "cancelled" (requester) with the reason, released at once (nothing to review; the
  released-results feed tells the hospital) — only when no further attempt follows. The Task
  Manager retries a workitem it ended for a deadline while ``attempt < max_attempts``
  (:meth:`aifi.hub.orchestration.task_manager.TaskManager.sweep`); those attempts get no AiResult,
  the
  retry's workitem gets the answer. So there is one AiResult per routed study, product
  and input set.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from aifi.clock import Clock, utc_now
from aifi.dicom_json import DicomJson
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import (
    AiResult,
    Instance,
    Notification,
    ResultInstance,
    ResultProblem,
    Workitem,
)
from aifi.hub.persistence.tables.results import REPORTED_OUTCOMES, Outcome, ReviewState
from aifi.hub.results.release import Enqueuer, release, serialize_releases
from aifi.hub.results.workitem import Cause, cancellation_reason, output_uids, product_of
from aifi.ihe_profiles import air
from aifi.ihe_profiles.rules import Product, RulesConfig
from aifi.ihe_profiles.ups import ProcedureStepState

log = logging.getLogger(__name__)

NO_RESULT = "no result objects"
"""The reason of a COMPLETED workitem whose Output Information Sequence names nothing."""


class ResultsHook:
    """Called by :class:`~aifi.hub.worklist.service.SqlWorklist` inside the transaction that ends a
    workitem (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        rules: RulesConfig,
        *,
        deliverer: Enqueuer | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.rules = rules
        self.deliverer = deliverer
        self.clock = clock

    def on_final(
        self,
        session: Session,
        row: Workitem,
        ds: DicomJson,
        state: ProcedureStepState,
        cause: Cause,
    ) -> str | None:
        """Create the workitem's AiResult; or return why it may not complete (then the
        caller refuses the change and calls :meth:`refused` after rolling back)."""
        if not row.product:
            return None  # not requested by the hub's Task Manager: not the hub's result
        exists = session.exec(
            select(AiResult.pk).where(
                col(AiResult.tenant) == row.tenant,
                col(AiResult.workitem_uid) == row.sop_instance_uid,
            )
        ).first()
        if exists is not None:
            return None
        serialize_releases(session)
        product = product_of(self.rules, row)
        if state is ProcedureStepState.COMPLETED:
            return self._completed(session, row, ds, product)
        if cause == "manager" and product is not None and row.attempt < product.max_attempts:
            return None  # the Task Manager retries: the last attempt gives the answer
        reason = (
            cancellation_reason(ds)
            or {
                "performer": "discontinued by the performer",
                "requester": "cancelled at the requester's request",
                "manager": "ended by the Task Manager",
            }[cause]
        )
        session.add(
            self._result(
                row,
                product,
                outcome=Outcome.CANCELLED if cause == "requester" else Outcome.FAILED,
                summary="",
                reason=reason,
                final=True,  # final at once: nothing to review, nothing to deliver
            )
        )
        return None

    def _completed(
        self, session: Session, row: Workitem, ds: DicomJson, product: Product | None
    ) -> str | None:
        instances = session.exec(
            select(ResultInstance)
            .where(
                col(ResultInstance.tenant) == row.tenant,
                col(ResultInstance.workitem_uid) == row.sop_instance_uid,
            )
            .order_by(col(ResultInstance.pk))
        ).all()
        outputs = output_uids(ds)
        reasons = self._output_problems(
            session, row, outputs, {r.sop_instance_uid for r in instances}
        )
        if reasons:
            return (
                "the Output Information Sequence names instances that are not accepted "
                "results of this workitem (IHE AIR): " + "; ".join(reasons)
            )
        if not outputs:
            # IHE AIW-I: the absence of a result must never read as a negative.
            session.add(
                self._result(
                    row, product, outcome=Outcome.FAILED, summary="", reason=NO_RESULT, final=True
                )
            )
            return None
        positive = any(r.positive for r in instances)
        if positive:
            outcome = Outcome.POSITIVE
        elif not any(r.findings for r in instances) and any(r.measurements for r in instances):
            outcome = Outcome.MEASURED  # quantification only (bone age): nothing to be absent
        else:
            outcome = Outcome.NEGATIVE
        texts: list[str] = []
        for r in instances:
            if r.summary and r.summary not in texts:
                texts.append(r.summary)
        supervised = product is None or product.supervision == "supervised"
        urgent = positive and product is not None and product.urgent_findings
        result = self._result(
            row,
            product,
            outcome=outcome,
            summary="; ".join(texts) if texts else "no result instances",
            reason=None,
            final=False,
        )
        result.urgent = urgent
        if supervised:  # awaits review: released when a reviewer accepts it
            session.add(result)
            session.flush()
        else:
            release(session, result, result.created_at, self.deliverer)
        if urgent:
            session.add(
                Notification(
                    tenant=row.tenant,
                    kind="urgent-finding",
                    workitem_uid=row.sop_instance_uid,
                    study_instance_uid=result.study_instance_uid,
                    product=result.product,
                    text=result.summary,
                    created_at=self.clock(),
                )
            )
            log.warning(  # the workitem, not the study: no patient identifiers in logs
                "urgent finding: product %s, workitem %s", result.product, row.sop_instance_uid
            )
        return None

    @staticmethod
    def _output_problems(
        session: Session, row: Workitem, outputs: list[str], accepted: set[str]
    ) -> list[str]:
        missing = [u for u in outputs if u not in accepted]
        if not missing:
            return []
        refused: dict[str, str] = {}
        for uid, problem in session.exec(
            select(ResultProblem.sop_instance_uid, ResultProblem.problem)
            .where(
                col(ResultProblem.tenant) == row.tenant,
                col(ResultProblem.workitem_uid) == row.sop_instance_uid,
                col(ResultProblem.sop_instance_uid).in_(missing),
            )
            .order_by(col(ResultProblem.pk))
        ).all():
            refused[str(uid)] = problem
        stored = dict(
            session.exec(
                select(Instance.sop_instance_uid, Instance.sop_class_uid).where(
                    col(Instance.tenant) == row.tenant,
                    col(Instance.sop_instance_uid).in_(missing),
                )
            ).all()
        )
        reasons = []
        for uid in missing:
            if uid in stored and stored[uid] not in air.RESULT_SOP_CLASSES:
                continue  # not an AI result object: the hub neither checks nor delivers it
            if uid in refused:
                reasons.append(f"{uid} was refused at STOW-RS ({refused[uid]})")
            elif uid not in stored:
                reasons.append(f"{uid} is not stored in the hub")
            else:
                reasons.append(
                    f"{uid} was not stored as a result of this workitem while it was IN PROGRESS"
                )
        return reasons

    def _result(
        self,
        row: Workitem,
        product: Product | None,
        *,
        outcome: Outcome,
        summary: str,
        reason: str | None,
        final: bool,
    ) -> AiResult:
        """The workitem's AiResult, completed now; ``final``: released as it is created (a
        failed or cancelled outcome), else not yet (see :mod:`aifi.hub.results.release`)."""
        now = self.clock()
        supervised = product is None or product.supervision == "supervised"
        review = ReviewState.NOT_REQUIRED
        if outcome in REPORTED_OUTCOMES and supervised:
            review = ReviewState.AWAITING_REVIEW
        return AiResult(
            tenant=row.tenant,
            workitem_uid=row.sop_instance_uid,
            study_instance_uid=row.study_instance_uid or "",
            product=row.product or "",
            supervision="supervised" if supervised else "autonomous",
            outcome=outcome,
            summary=summary,
            reason=reason,
            review_state=review,
            workitem_created_at=row.created_at,
            completed_at=now,
            released_at=now if final else None,
            created_at=now,
        )

    def refused(self, tenant: str, uid: str, problem: str) -> None:
        """Record why a completion was refused (after its transaction rolled back)."""
        with self.db.write() as session:
            session.add(ResultProblem(tenant=tenant, workitem_uid=uid, problem=problem))
