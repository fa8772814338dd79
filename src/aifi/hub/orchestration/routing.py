"""Routing a study to the AI products its hospital's rules select (IHE AIW-I Task
Requester): the decisions, their explanation, and the workitems they create.

The Task Manager (:mod:`aifi.hub.orchestration.task_manager`) calls :meth:`StudyRouter.route`
when a study is complete; an EPD's request for AI (:mod:`aifi.hub.fhir.requests`) calls
:meth:`StudyRouter.create_workitem` for a product the rules leave to a request. For a match the
workitem of :func:`aifi.ihe_profiles.aiw.new_workitem` is created (SCHEDULED, Input Readiness
READY, claim deadline from the product's policy); a SCHEDULED workitem whose inputs changed
gets the new Input Information Sequence; one a performer has claimed gets a successor for
the new input set.

A product whose rules declare ``priors`` (issue 17) gets its workitem at once, INCOMPLETE,
and a prior request (:class:`aifi.hub.priors.service.PriorRequests`); its claim deadline
starts after the wait. A study registered as another study's prior is never routed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from pydicom.uid import generate_uid
from sqlmodel import Session, col, select

from aifi import dicom_json
from aifi.clock import Clock, as_utc, utc_now
from aifi.dicom_json import DicomJson
from aifi.dicom_json import unpack as unpack_json
from aifi.dicomweb.store import DicomStore
from aifi.errors import NotFound
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import StudyRouting, Workitem
from aifi.hub.priors.service import PriorRequests, study_profile
from aifi.hub.worklist.service import SqlWorklist, expiry
from aifi.ihe_profiles.aiw import (
    STUDY_INSTANCE_UID,
    current_input_uids,
    decision_uids,
    input_information,
    new_workitem,
    prior_items,
    study_level,
)
from aifi.ihe_profiles.rules import Decision, RulesConfig, StudyFacts, evaluate, explain
from aifi.ihe_profiles.ups import ProcedureStepState

log = logging.getLogger(__name__)

_S = ProcedureStepState.SCHEDULED.value
_P = ProcedureStepState.IN_PROGRESS.value
_D = ProcedureStepState.COMPLETED.value


class StudyRouter:
    """The routing service: rules in, workitems out."""

    def __init__(
        self,
        db: Database,
        store: DicomStore,
        worklist: SqlWorklist,
        rules: RulesConfig,
        *,
        clock: Clock = utc_now,
        study_seen: Callable[[str, list[DicomJson]], None] | None = None,
        priors: PriorRequests | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.worklist = worklist
        self.rules = rules
        self.clock = clock
        self.study_seen = study_seen
        """Called with a study's instances when it is routed (the FHIR ImagingStudy)."""
        self.priors = priors
        """Prior-study requests of comparison products (issue 17)."""

    def decisions(self, tenant: str, study_uid: str) -> list[Decision]:
        metadata = self.store.instance_metadata(tenant, study_uid)
        if not metadata:
            raise NotFound(f"No study {study_uid} for tenant {tenant}")
        return evaluate(self.rules, tenant, StudyFacts.from_metadata(metadata))

    def explain(self, tenant: str, study_uid: str) -> str:
        return explain(self.decisions(tenant, study_uid))

    def route(self, tenant: str, study_uid: str, version: datetime) -> tuple[list[str], list[str]]:
        """Route a complete study (one version of it): create the workitems its matched
        products need, bring SCHEDULED ones up to date with late instances, and record the
        version routed. Answers the workitems created and those updated."""
        created: list[str] = []
        updated: list[str] = []
        metadata: list[DicomJson] = []
        try:
            metadata = self.store.instance_metadata(tenant, study_uid)
            decisions = (
                evaluate(self.rules, tenant, StudyFacts.from_metadata(metadata))
                if metadata and not self._is_prior(tenant, study_uid)
                else []
            )
        except NotFound:
            decisions = []  # a tenant without rules: nothing to route
        except ValueError as exc:
            # no identifiers at INFO and above (issue 6); the study UID for debugging only
            log.warning("a study cannot be routed: %s", exc)
            log.debug("study %s cannot be routed", study_uid)
            decisions = []
        header = study_level(metadata) if decisions else {}
        existing = self.worklist.workitems_for_study(tenant, study_uid)
        now = self.clock()
        for decision in decisions:
            if not decision.matched or decision.product.on_request:
                continue
            product = decision.product
            mine = [w for w in existing if w.product == product.code]
            latest = mine[-1] if mine else None
            wanted = decision_uids(decision)
            if latest is None:
                created.append(self._create(tenant, decision, header, now, metadata=metadata))
                continue
            attributes = unpack_json(latest.attributes)
            have = current_input_uids(attributes)
            if latest.procedure_step_state == _S:
                # a workitem still waiting for its priors stays INCOMPLETE (issue 17)
                readiness = (
                    "INCOMPLETE"
                    if product.priors is not None
                    and self.priors is not None
                    and self.priors.waiting(tenant, latest.sop_instance_uid)
                    else "READY"
                )
                if have != wanted or latest.input_readiness_state != readiness:
                    inputs = input_information(study_uid, decision) + prior_items(attributes)
                    if self.worklist.set_inputs(tenant, latest.sop_instance_uid, readiness, inputs):
                        updated.append(latest.sop_instance_uid)
                        continue
                    latest = self._reload(tenant, latest.sop_instance_uid)
                else:
                    continue
            if latest.procedure_step_state in (_P, _D) and wanted - have:
                created.append(self._create(tenant, decision, header, now, metadata=metadata))
        with self.db.write() as session:
            row = routing_row(session, tenant, study_uid)
            if row.routed_version is None or as_utc(row.routed_version) < version:
                row.routed_version = version
        if metadata and self.study_seen is not None:
            self.study_seen(tenant, metadata)  # after the workitems: not on their path
        return created, updated

    def create_workitem(self, tenant: str, decision: Decision, study_uid: str) -> str:
        """A workitem for a matched decision outside the routing round (an EPD asked for
        the product): the same workitem the round would create."""
        metadata = self.store.instance_metadata(tenant, study_uid)
        return self._create(
            tenant, decision, study_level(metadata), self.clock(), metadata=metadata
        )

    def _is_prior(self, tenant: str, study_uid: str) -> bool:
        """A study the hospital's gateway registered as another's prior: input to that
        study's workitem, not a new examination to route."""
        return self.priors is not None and self.priors.is_prior(tenant, study_uid)

    def _reload(self, tenant: str, uid: str) -> Workitem:
        with self.db.read() as session:
            return session.exec(
                select(Workitem).where(
                    col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
                )
            ).one()

    def _create(
        self,
        tenant: str,
        decision: Decision,
        header: dict[str, object],
        now: datetime,
        *,
        attempt: int = 1,
        replaces: tuple[str, ...] = (),
        metadata: list[DicomJson] | None = None,
    ) -> str:
        uid = str(generate_uid())
        product = decision.product
        deadline = expiry(product.claim_timeout_minutes, now)
        if product.priors is not None and deadline is not None:
            deadline += timedelta(seconds=product.priors.wait_seconds)  # claimable after
        also: Callable[[Session], None] | None = None
        priors = self.priors
        if product.priors is not None and priors is not None:
            study_uid = str(dicom_json.first(header, STUDY_INSTANCE_UID) or "")
            profile = study_profile(metadata or [], decision.input_series)

            def also(session: Session) -> None:
                priors.open(session, tenant, uid, product, study_uid, profile, now)

        self.worklist.create(
            tenant,
            uid,
            new_workitem(decision, header, now, replaces=replaces),
            product=product.code,
            attempt=attempt,
            deadline=deadline,
            also=also,
        )
        log.info("workitem %s: %s (attempt %d)", uid, product.code, attempt)
        return uid


def routing_row(session: Session, tenant: str, study_uid: str) -> StudyRouting:
    """The study's routing row, added to the session when it has none yet."""
    row = session.exec(
        select(StudyRouting).where(
            col(StudyRouting.tenant) == tenant,
            col(StudyRouting.study_instance_uid) == study_uid,
        )
    ).first()
    if row is None:
        row = StudyRouting(tenant=tenant, study_instance_uid=study_uid)
        session.add(row)
    return row
