"""IHE AIR results on the hub: the gate at the door.

**The gate** (:class:`ResultGate`, a :class:`~aifi.dicomweb.store.DicomStore` in front of
the hub's own store, used by STOW-RS). IHE AIW-I has the Task Performer store its results
into the inputs' study while the workitem is IN PROGRESS (RAD-85 follows); IHE RAD TF AIR
defines what a result object must carry. So an incoming instance is checked with
:func:`aifi.ihe_profiles.air.validate` against the :class:`~aifi.ihe_profiles.air.InputContext`
of its workitem (the instances the Input Information Sequence references — or the stored
instances of a listed series — and the patient of the stored inputs) when

* its study has a workitem IN PROGRESS, its SOP Class is a result class
  (:data:`~aifi.ihe_profiles.air.RESULT_SOP_CLASSES`) and it is not one of that workitem's
  inputs, or
* it declares itself an AI result (:func:`~aifi.ihe_profiles.air.is_ai_result`: a result
  class with a Contributing Equipment item of purpose 109102 "Processing Equipment").

With several workitems IN PROGRESS for the study, the result's algorithm identification
(Manufacturer's Model Name of the Contributing Equipment) picks the product
(``model_name``, else ``name`` or ``code`` of :class:`~aifi.ihe_profiles.rules.Product`;
:mod:`aifi.hub.results.attribution`).
A declared AI result for a study without a workitem IN PROGRESS is refused.

A refused instance is not stored: :attr:`~aifi.dicomweb.store.StoreStatus.REFUSED`, which
STOW-RS answers with a Failed SOP Sequence item, its Failure Reason and the violations in a
``Warning`` header (PS3.18 §10.5.3), and a :class:`~aifi.hub.persistence.tables.ResultProblem` row
(the
workitem records why). Failure Reason codes — two, so that a performer can tell a broken
object from a misplaced one:

* **A900** (PS3.18 Table I.2-2 "data set does not match SOP Class") when any violation is
  about the object itself: its IOD or template (algorithm identification, TID 1500 rows,
  TID 4019, units, SEG segment algorithm...);
* **C410** (implementation-specific, in the Cxxx "cannot understand" range as the hub's
  other specific codes) when the object is fine but does not belong where it was sent
  (IHE AIW-I): other patient or study than the inputs, references to instances that are
  not inputs, no workitem IN PROGRESS for the study, or a workitem that cannot be told.

**A restricted caller** (an AI product's Task Performer, issue 6: :meth:`ResultGate.put`
with ``products``) may store nothing but AI results of IN PROGRESS workitems of its own
products — result objects checked as above, or Structured Reports of other classes (a Basic
Text SR) into such a workitem's study, stored as they are from anyone. Every other
instance — an image, an input sent again, a result for a study where none of its products'
workitems is IN PROGRESS (whether or not the study or another product's workitem exists) —
is refused with **0124** "Refused: Not Authorized" (PS3.4
Annex C status codes) and one fixed reason, so the answer says nothing about other data.

An accepted result is stored as usual and gets a
:class:`~aifi.hub.persistence.tables.ResultInstance` row with its summary
(:func:`aifi.ihe_profiles.air.summarise`, read once here and kept with the row:
:mod:`aifi.hub.results.summary`), written right after the store's own transaction; if the
process dies in between, the performer's re-send (an identical instance: "already stored")
writes it, and the completion check refuses to complete until then. The hot path stays
cheap: a batch without any instance of a result SOP class costs nothing, a batch with some
costs one query for the studies' IN PROGRESS workitems.

**A tenant that requires de-identified data** (issue 15, :mod:`aifi.hub.store.deidentified`):
an unrestricted caller's instances whose Patient Identity Removed (0012,0062) is not YES
are refused with **C411** before anything else; performers are not checked (their results
copy the pseudonymised inputs' patient, which the hub accepted).

The answer of each workitem (its AI result) is :mod:`aifi.hub.results.completion`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from aifi import dicom_json
from aifi.dicomweb.store import (
    IncomingInstance,
    StoreInFront,
    StoreOutcome,
    StoreStatus,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import (
    ResultInstance,
    ResultProblem,
    Workitem,
)
from aifi.hub.results.attribution import (
    SR_DOCUMENT_PREFIX,
    Candidate,
    model_name,
    own_report,
    pick,
    score,
)
from aifi.hub.results.summary import result_row
from aifi.hub.results.workitem import product_of
from aifi.hub.store.deidentified import (
    PATIENT_IDENTITY_NOT_REMOVED,
    PATIENT_IDENTITY_NOT_REMOVED_REASON,
    TenantPolicy,
    is_deidentified,
)
from aifi.ihe_profiles import air
from aifi.ihe_profiles.aiw import (
    INPUT_INFORMATION,
    REFERENCED_SOP_INSTANCE,
    REFERENCED_SOP_SEQUENCE,
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    input_uids,
)
from aifi.ihe_profiles.rules import RulesConfig
from aifi.ihe_profiles.ups import ProcedureStepState

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MISMATCH_WITH_SOP_CLASS = 0xA900
"""Failure Reason: the result does not conform to its IOD / template (PS3.18 Table I.2-2)."""
NOT_THIS_WORKITEM = 0xC410
"""Failure Reason (implementation-specific): the result does not fit its workitem (AIW-I)."""
NOT_AUTHORIZED = 0x0124
"""Failure Reason "Refused: Not Authorized" (PS3.4 Annex C; PS3.18 §10.5.3)."""
NOT_AUTHORIZED_REASON = (
    "not authorized: this client may store only AI results of its own products' workitems "
    "while they are IN PROGRESS (IHE AIW-I)"
)

NO_WORKITEM = (
    "no workitem in progress for this study: store results into the inputs' study while "
    "the workitem is IN PROGRESS (IHE AIW-I)"
)

PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"


def _person_name(value: Any) -> str:
    """A DICOM JSON PN value as pydicom's ``str(PersonName)`` gives it."""
    if isinstance(value, dict):
        groups = [str(value.get(k, "")) for k in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return str(value or "")


# -- the gate -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Verdict:
    workitem: Candidate | None
    reason: str = ""
    failure: int | None = None
    summary: air.ResultSummary | None = None

    @property
    def accepted(self) -> bool:
        return self.failure is None


class ResultGate(StoreInFront):
    """The hub's :class:`~aifi.dicomweb.store.DicomStore` with the IHE AIR gate in front
    of :meth:`put` (see the module docstring); everything else goes to ``inner``."""

    def __init__(
        self,
        inner: Any,
        db: Database,
        rules: RulesConfig,
        *,
        tenants: TenantPolicy | None = None,
    ) -> None:
        super().__init__(inner)
        self.db = db
        self.rules = rules
        self.tenants = tenants
        """Whether a tenant accepts only de-identified instances
        (:mod:`aifi.hub.store.deidentified`);
        None: every instance may be identified."""

    # -- delegated ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Everything else of the hub's store (``root``, ``ensure_tenant``, ``close``...)."""
        return getattr(self.inner, name)

    # -- put ---------------------------------------------------------------------------

    def put(
        self,
        tenant: str,
        instances: Sequence[IncomingInstance],
        *,
        products: frozenset[str] | None = None,
    ) -> list[StoreOutcome]:
        """Store what passes the gate. ``products``: the caller is restricted to these
        products' workitems (see the module docstring), anything else is refused 0124.
        An unrestricted caller (a hospital, an administrator, development mode) of a tenant
        that requires de-identified data has every instance not marked Patient Identity
        Removed = YES refused C411 first (:mod:`aifi.hub.store.deidentified`)."""
        if (
            products is None
            and self.tenants is not None
            and self.tenants.require_deidentified(tenant)
        ):
            identified = {n for n, i in enumerate(instances) if not is_deidentified(i.header)}
            if identified:
                return self._refuse_identified(tenant, instances, identified)
        return self._put(tenant, instances, products)

    def _refuse_identified(
        self, tenant: str, instances: Sequence[IncomingInstance], identified: set[int]
    ) -> list[StoreOutcome]:
        """Refuse the instances at ``identified`` (C411), store the others as usual."""
        log.info("refused %d instances not marked de-identified (C411)", len(identified))
        for n in identified:
            instances[n].staged_path.unlink(missing_ok=True)  # put consumes what it is given
        rest = [i for n, i in enumerate(instances) if n not in identified]
        stored = iter(self._put(tenant, rest, None) if rest else [])
        refused = StoreOutcome(
            StoreStatus.REFUSED, PATIENT_IDENTITY_NOT_REMOVED_REASON, PATIENT_IDENTITY_NOT_REMOVED
        )
        return [refused if n in identified else next(stored) for n in range(len(instances))]

    def _put(
        self,
        tenant: str,
        instances: Sequence[IncomingInstance],
        products: frozenset[str] | None,
    ) -> list[StoreOutcome]:
        results = [
            i for i in instances if str(i.header.get("SOPClassUID", "")) in air.RESULT_SOP_CLASSES
        ]
        if not results and products is None:  # the usual case (images): no query at all
            return list(self.inner.put(tenant, instances))
        gated = (
            results
            if products is None
            else [
                i
                for i in instances
                if str(i.header.get("SOPClassUID", "")).startswith(SR_DOCUMENT_PREFIX)
                or i in results
            ]
        )
        studies = {str(i.header.StudyInstanceUID) for i in gated}
        candidates = self._in_progress(tenant, studies) if studies else {}
        if products is not None:
            candidates = {
                study: own
                for study, found in candidates.items()
                if (own := [c for c in found if (c.row.product or c.row.workitem_code) in products])
            }
        contexts: dict[str, air.InputContext] = {}
        verdicts = [
            self._check(tenant, i, candidates, contexts, restricted=products is not None)
            for i in instances
        ]
        passing = []
        for instance, verdict in zip(instances, verdicts, strict=True):
            if verdict is None or verdict.accepted:
                passing.append(instance)
            else:
                instance.staged_path.unlink(missing_ok=True)  # put consumes what it is given
        stored = iter(list(self.inner.put(tenant, passing)) if passing else [])
        outcomes: list[StoreOutcome] = []
        accepted: list[ResultInstance] = []
        problems: list[ResultProblem] = []
        for instance, verdict in zip(instances, verdicts, strict=True):
            header = instance.header
            if verdict is not None and not verdict.accepted:
                outcomes.append(StoreOutcome(StoreStatus.REFUSED, verdict.reason, verdict.failure))
                log.info("an AI result was refused: %04X", verdict.failure)
                log.debug(
                    "refused AI result %s (workitem %s)",
                    header.SOPInstanceUID,
                    verdict.workitem.row.sop_instance_uid if verdict.workitem else "-",
                )
                if verdict.workitem is not None:
                    problems.append(
                        ResultProblem(
                            tenant=tenant,
                            workitem_uid=verdict.workitem.row.sop_instance_uid,
                            sop_instance_uid=str(header.SOPInstanceUID),
                            problem=verdict.reason,
                        )
                    )
                continue
            outcome = next(stored)
            outcomes.append(outcome)
            if (
                verdict is not None
                and verdict.workitem is not None
                and outcome.status in (StoreStatus.STORED, StoreStatus.ALREADY_STORED)
            ):
                accepted.append(
                    result_row(
                        tenant, verdict.workitem.row.sop_instance_uid, header, verdict.summary
                    )
                )
        if accepted or problems:
            self._record(tenant, accepted, problems)
        return outcomes

    def _in_progress(self, tenant: str, studies: set[str]) -> dict[str, list[Candidate]]:
        """The IN PROGRESS workitems of the studies (one query), oldest first."""
        with self.db.read() as session:
            rows = session.exec(
                select(Workitem)
                .where(
                    col(Workitem.tenant) == tenant,
                    col(Workitem.study_instance_uid).in_(sorted(studies)),
                    col(Workitem.procedure_step_state) == ProcedureStepState.IN_PROGRESS.value,
                )
                .order_by(col(Workitem.pk))
            ).all()
        out: dict[str, list[Candidate]] = {}
        for row in rows:
            attributes = dicom_json.unpack(row.attributes)
            out.setdefault(row.study_instance_uid or "", []).append(
                Candidate(row, attributes, input_uids(attributes), product_of(self.rules, row))
            )
        return out

    def _check(
        self,
        tenant: str,
        instance: IncomingInstance,
        candidates: dict[str, list[Candidate]],
        contexts: dict[str, air.InputContext],
        *,
        restricted: bool = False,
    ) -> _Verdict | None:
        """None: not a result the gate looks at; else accepted or refused. ``restricted``:
        ``candidates`` hold only the caller's products' workitems, and whatever is not a
        result of one of them is refused 0124."""
        header = instance.header
        sop_class = str(header.get("SOPClassUID", ""))
        if sop_class not in air.RESULT_SOP_CLASSES:
            if restricted and not own_report(instance, candidates):
                return _Verdict(None, NOT_AUTHORIZED_REASON, NOT_AUTHORIZED)
            return None
        sop = str(header.SOPInstanceUID)
        in_study = candidates.get(str(header.StudyInstanceUID), [])
        open_ = [c for c in in_study if sop not in c.inputs]
        declared = air.is_ai_result(header)
        if not open_ and restricted:
            return _Verdict(None, NOT_AUTHORIZED_REASON, NOT_AUTHORIZED)
        if not open_:
            if not declared or in_study:  # an ordinary instance, or an input sent again
                return None
            return self._misplaced(tenant, header, contexts)
        chosen = pick(open_, header)
        if chosen is None:
            names = ", ".join(c.row.product or c.row.workitem_code or "?" for c in open_)
            return _Verdict(
                open_[0],
                f"several workitems are IN PROGRESS for this study ({names}) and the "
                "result's algorithm identification (Contributing Equipment, Manufacturer's "
                "Model Name) names none of their products (IHE AIR)",
                NOT_THIS_WORKITEM,
            )
        uid = chosen.row.sop_instance_uid
        if uid not in contexts:
            contexts[uid] = self._context(tenant, chosen)
        violations = air.validate(header, contexts[uid])
        if violations:
            own = any(not v.rule.startswith("AIW-I") for v in violations)
            return _Verdict(
                chosen,
                "; ".join(str(v) for v in violations),
                MISMATCH_WITH_SOP_CLASS if own else NOT_THIS_WORKITEM,
            )
        return _Verdict(chosen, summary=air.summarise(header))

    def _misplaced(
        self, tenant: str, header: Dataset, contexts: dict[str, air.InputContext]
    ) -> _Verdict:
        """A declared AI result for a study without a workitem IN PROGRESS: refused. When
        the product it names has exactly one workitem IN PROGRESS (a result sent into the
        wrong study, say), that workitem records the refusal with the violations against
        its inputs (one more query, on this rare path only)."""
        with self.db.read() as session:
            rows = session.exec(
                select(Workitem)
                .where(
                    col(Workitem.tenant) == tenant,
                    col(Workitem.procedure_step_state) == ProcedureStepState.IN_PROGRESS.value,
                )
                .order_by(col(Workitem.pk))
                .limit(200)
            ).all()
        model = model_name(header)
        named = [
            c
            for c in (
                Candidate(r, a, input_uids(a), product_of(self.rules, r))
                for r, a in ((r, dicom_json.unpack(r.attributes)) for r in rows)
            )
            if score(c, model) > 0
        ]
        if len(named) != 1:
            return _Verdict(None, NO_WORKITEM, NOT_THIS_WORKITEM)
        [chosen] = named
        uid = chosen.row.sop_instance_uid
        if uid not in contexts:
            contexts[uid] = self._context(tenant, chosen)
        violations = air.validate(header, contexts[uid])
        own = any(not v.rule.startswith("AIW-I") for v in violations)
        reason = "; ".join([NO_WORKITEM, *(str(v) for v in violations)])
        return _Verdict(chosen, reason, MISMATCH_WITH_SOP_CLASS if own else NOT_THIS_WORKITEM)

    def _context(self, tenant: str, candidate: Candidate) -> air.InputContext:
        """What the workitem's results must agree with: its inputs (the Input Information
        Sequence's instances, or every stored instance of a series listed without them)
        and the patient of the stored inputs (else of the workitem)."""
        ds = candidate.attributes
        study = candidate.row.study_instance_uid or str(
            dicom_json.first(ds, STUDY_INSTANCE_UID) or ""
        )
        uids = set(candidate.inputs)
        first: tuple[str, str | None, str | None] | None = None
        for item in dicom_json.items(ds, INPUT_INFORMATION):
            item_study = str(dicom_json.first(item, STUDY_INSTANCE_UID) or study)
            series = dicom_json.first(item, SERIES_INSTANCE_UID)
            refs = [
                str(dicom_json.first(r, REFERENCED_SOP_INSTANCE))
                for r in dicom_json.items(item, REFERENCED_SOP_SEQUENCE)
                if dicom_json.first(r, REFERENCED_SOP_INSTANCE)
            ]
            if not refs and series:
                refs = [
                    s.sop_instance_uid
                    for s in self.inner.find_instances(tenant, item_study, str(series))
                ]
                uids.update(refs)
            if first is None and refs:
                first = (item_study, str(series) if series else None, refs[0])
        patient_id = str(dicom_json.first(ds, PATIENT_ID) or "")
        patient_name = _person_name(dicom_json.first(ds, PATIENT_NAME))
        if first is not None:
            stored = self.inner.instance_metadata(tenant, first[0], first[1], first[2])
            if stored:
                patient_id = str(dicom_json.first(stored[0], PATIENT_ID) or "")
                patient_name = _person_name(dicom_json.first(stored[0], PATIENT_NAME))
        return air.InputContext(
            study_instance_uid=study,
            patient_id=patient_id,
            patient_name=patient_name,
            sop_instance_uids=frozenset(uids),
        )

    def _record(
        self, tenant: str, accepted: list[ResultInstance], problems: list[ResultProblem]
    ) -> None:
        """ResultInstance rows (an instance sent again keeps its row) and ResultProblems."""
        for attempt in range(3):
            try:
                with self.db.write() as session:
                    known = set(
                        session.exec(
                            select(ResultInstance.sop_instance_uid).where(
                                col(ResultInstance.tenant) == tenant,
                                col(ResultInstance.sop_instance_uid).in_(
                                    [r.sop_instance_uid for r in accepted]
                                ),
                            )
                        ).all()
                    )
                    for row in accepted:
                        if row.sop_instance_uid not in known:
                            known.add(row.sop_instance_uid)
                            session.add(row.model_copy())
                    for problem in problems:
                        session.add(problem.model_copy())
                return
            except IntegrityError:  # a concurrent re-send wrote the same row first
                if attempt == 2:
                    raise
