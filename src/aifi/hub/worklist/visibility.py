"""What an AI product's Task Performer may see and store on the hub (issue 6, "who is
who"): :class:`aifi.dicomweb.visibility.VisibilityProvider` on the workitems and results.

Visible to a performer of ``products`` are

* the instances the Input Information Sequence (0040,4021) of one of its products'
  workitems references (IHE AIW-I RAD-83 retrieves them), whatever the workitem's state —
  or every stored instance of a series an item lists without instance references;
* the result instances its products' workitems stored (``result_instance``, IHE AIR),
  and the instances of the workitem's study its Output Information Sequence (0040,4033)
  lists (results of classes outside IHE AIR, such as a Basic Text SR; only the performer
  that held the workitem could write that list).

Per request this costs two indexed queries (the workitems of the asked study and products —
``ix_workitem_study`` — and their results — ``ix_result_instance_workitem``), and only those
workitems' DICOM JSON is read. A workitem's product is its routed product, else the Code
Value of its Scheduled Workitem Code Sequence (:func:`aifi.hub.worklist.events.of_products`).

Storing goes through :class:`aifi.hub.results.gate.ResultGate` with the products: AI results of
the performer's workitems IN PROGRESS only, anything else refused 0124.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlmodel import col, select

from aifi.dicom_json import first, items
from aifi.dicom_json import unpack as unpack_json
from aifi.dicomweb.store import IncomingInstance, StoreOutcome
from aifi.dicomweb.visibility import Visible
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import PriorRequest, PriorStudy, ResultInstance, Workitem
from aifi.hub.results.gate import ResultGate
from aifi.hub.results.workitem import OUTPUT_INFORMATION, PERFORMED_PROCEDURE
from aifi.hub.worklist.events import of_products
from aifi.ihe_profiles.aiw import (
    INPUT_INFORMATION,
    REFERENCED_SOP_INSTANCE,
    REFERENCED_SOP_SEQUENCE,
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)


class HubVisibility:
    """:class:`aifi.dicomweb.visibility.VisibilityProvider` of the hub (module docstring)."""

    def __init__(self, db: Database, gate: ResultGate) -> None:
        self.db = db
        self.gate = gate

    def visible(
        self, tenant: str, products: frozenset[str], studies: Collection[str] | None
    ) -> Visible:
        if not products:
            return Visible()
        workitems = select(
            Workitem.sop_instance_uid, Workitem.study_instance_uid, Workitem.attributes
        ).where(col(Workitem.tenant) == tenant, of_products(products))
        results = (
            select(
                ResultInstance.study_instance_uid,
                ResultInstance.series_instance_uid,
                ResultInstance.sop_instance_uid,
            )
            .join(
                Workitem,
                (col(Workitem.tenant) == col(ResultInstance.tenant))
                & (col(Workitem.sop_instance_uid) == col(ResultInstance.workitem_uid)),
            )
            .where(col(ResultInstance.tenant) == tenant, of_products(products))
        )
        if studies is not None:
            asked = sorted(set(studies))
            # A result lives in its workitem's study (the gate refuses it elsewhere); a prior
            # study (issue 17) is asked for by the workitems it is a prior of, and only the
            # instances in their Input Information Sequence become visible.
            as_prior = (
                select(PriorRequest.workitem_uid)
                .join(PriorStudy, col(PriorStudy.request_pk) == col(PriorRequest.pk))
                .where(
                    col(PriorStudy.tenant) == tenant,
                    col(PriorStudy.study_instance_uid).in_(asked),
                )
            )
            # Two indexed look-ups, not one OR (which SQLite answers by scanning every
            # workitem of the tenant): by study (ix_workitem_study), then by UID.
            lookups = [
                workitems.where(col(Workitem.study_instance_uid).in_(asked)),
                workitems.where(col(Workitem.sop_instance_uid).in_(as_prior)),
            ]
            results = results.where(col(Workitem.study_instance_uid).in_(asked))
        else:
            lookups = [workitems]
        with self.db.read() as session:
            by_uid = {row[0]: row for lookup in lookups for row in session.exec(lookup).all()}
            rows = list(by_uid.values())
            stored = session.exec(results).all() if rows else []
        study_uids: set[str] = set()
        series_uids: set[str] = set()
        sop_uids: set[str] = set()
        for result_study, result_series, result_sop in stored:
            study_uids.add(result_study)
            series_uids.add(result_series)
            sop_uids.add(result_sop)
        for _workitem, own_study, blob in rows:
            ds = unpack_json(blob)
            default_study = str(first(ds, STUDY_INSTANCE_UID) or own_study or "")
            outputs = [
                item
                for performed in items(ds, PERFORMED_PROCEDURE)
                for item in items(performed, OUTPUT_INFORMATION)
                # results belong in the inputs' study (IHE AIW-I); nothing elsewhere counts
                if str(first(item, STUDY_INSTANCE_UID) or default_study) == default_study
            ]
            for item in [*items(ds, INPUT_INFORMATION), *outputs]:
                study = str(first(item, STUDY_INSTANCE_UID) or default_study)
                series = first(item, SERIES_INSTANCE_UID)
                series = str(series) if series else None
                refs = [
                    str(uid)
                    for ref in items(item, REFERENCED_SOP_SEQUENCE)
                    if (uid := first(ref, REFERENCED_SOP_INSTANCE))
                ]
                if not refs and series and study:
                    # A series listed without its instances: all of its stored instances.
                    found = self.gate.find_instances(tenant, study, series)
                    refs = [i.sop_instance_uid for i in found]
                if not refs:
                    continue
                sop_uids.update(refs)
                if study:
                    study_uids.add(study)
                if series:
                    series_uids.add(series)
        return Visible(frozenset(study_uids), frozenset(series_uids), frozenset(sop_uids))

    def visible_studies(self, tenant: str, products: frozenset[str]) -> frozenset[str]:
        if not products:
            return frozenset()
        with self.db.read() as session:
            rows = session.exec(
                select(Workitem.study_instance_uid)
                .where(col(Workitem.tenant) == tenant, of_products(products))
                .distinct()
            ).all()
        return frozenset(uid for uid in rows if uid)

    def put(
        self, tenant: str, products: frozenset[str], instances: Sequence[IncomingInstance]
    ) -> list[StoreOutcome]:
        return self.gate.put(tenant, instances, products=products)
