"""The hub's state as FHIR R4 resources, kept in step with it.

ARCHITECTURE.md step 3 and 5: every UPS workitem has a Task that mirrors it; every AI result
becomes a DiagnosticReport + Observations + Provenance, with a Device per product (and an
urgent finding a Communication, FHIR R4 communication.html); every
routed study an ImagingStudy (and its Patient, identifier only). The mapping itself is pure
(:mod:`aifi.fhir.mapping`); this module reads the hub's rows into the mapping's views
(:mod:`aifi.fhir.views`) and writes the resources with :meth:`SqlFhirStore.put`, which
raises the version only when the content changed and tells the subscription notifier.

Whatever a write transaction changes (a workitem's state, an AI result's review, a delivery
confirmed, an EPD's request) is noted in that transaction (``fhir_pending``, a
``before_commit`` hook of :class:`~aifi.hub.persistence.database.Database`) and projected right
after the
commit by the projection loop, off the path of the performer's UPS transaction (mapping a
completed result costs tens of milliseconds; in the transaction it lengthened every claim
and completion). The FHIR API first works off what is pending for the caller's hospital,
so an EPD never reads a Task behind a change that was acknowledged before it asked; a
restart loses nothing (the notes are in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, cast

import anyio.to_thread
from pydicom import Dataset
from sqlalchemy import delete
from sqlmodel import Session, col, select

from aifi.clock import as_utc_or_none, utc_now
from aifi.dicom_json import DicomJson, first, items, values
from aifi.dicom_json import unpack as unpack_json
from aifi.errors import NotFound
from aifi.fhir import mapping
from aifi.fhir.views import (
    FindingView,
    MeasurementView,
    PatientView,
    ProductView,
    ResultObjectView,
    ResultView,
    TaskView,
)
from aifi.hub.fhir.changes import STUDY, WORKITEM, ChangeNotes
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.fhir.study_view import (
    STUDY_INSTANCE_UID,
    patient_of,
    study_view,
    text_of,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import (
    AiRequest,
    AiResult,
    Delivery,
    FhirPending,
    Instance,
    ResultInstance,
    Workitem,
)
from aifi.hub.persistence.tables.results import REPORTED_OUTCOMES
from aifi.hub.results.summary import reported
from aifi.ihe_profiles.air.summary import FindingSummary, MeasurementSummary, summarise
from aifi.ihe_profiles.rules import Product, RulesConfig

log = logging.getLogger(__name__)


ACCESSION_NUMBER = "00080050"
PRIORITY = "00741200"
PROGRESS_INFORMATION = "00741002"
PROGRESS = "00741004"
REPLACED_PROCEDURE_STEP = "00741224"
CANCELLATION_REASON = "00741238"
CONTRIBUTING_EQUIPMENT = "0018A001"
DEVICE_UID = "00181002"
SOFTWARE_VERSIONS = "00181020"

SR_KINDS = ("SR",)
SR_CACHE_SIZE = 4096


class FhirProjector:
    """Writes the FHIR resources for what a transaction changed (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        store: SqlFhirStore,
        rules: RulesConfig,
        *,
        base_url: Callable[[], str],
        notes: ChangeNotes,
        instances: Callable[[str, str], list[DicomJson]] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.rules = rules
        self.base_url = base_url
        """The DICOMweb service root the resources point at (WADO-RS)."""
        self.instances = instances
        """A study's instances as DICOM JSON (the store's ``instance_metadata``)."""
        self.doorbell = notes.doorbell
        """Rung after a commit that noted something (the projection loop listens)."""
        self.batch_size = 200
        self._said: OrderedDict[tuple[str, str], tuple[list[FindingView], list[MeasurementView]]]
        self._said = OrderedDict()

    def note_routed_study(self, tenant: str, metadata: Sequence[DicomJson]) -> None:
        """The router's ``study_seen``: note the study of ``metadata`` (its instances)."""
        uid = first(metadata[0], STUDY_INSTANCE_UID) if metadata else None
        if uid:
            self.note_study(tenant, str(uid))

    def note_study(self, tenant: str, study_uid: str) -> None:
        """The Task Manager saw the study complete: its ImagingStudy (and Patient) are
        projected by the loop, not in the Task Manager's round."""
        with self.db.write() as session:
            session.add(FhirPending(tenant=tenant, kind=STUDY, key=study_uid))
            session.info["fhir_pending"] = True

    def pending(self, tenant: str) -> bool:
        with self.db.read() as session:
            return (
                session.exec(
                    select(FhirPending.pk).where(col(FhirPending.tenant) == tenant).limit(1)
                ).first()
                is not None
            )

    def tick(self, tenant: str | None = None) -> int:
        """Bring the FHIR resources of what is pending in step (at most :attr:`batch_size`
        notes; several notes of one workitem are done once). One short write transaction
        per workitem, so that the projection never holds the database's write lock (one
        writer at a time on SQLite) for long: claims and completions pass in between. Run
        by the projection loop after commits that noted something, and by the FHIR API
        before it answers a hospital that has notes pending, so a client reads what it
        just did. Returns how many notes were worked off."""
        with self.db.read() as session:
            statement = select(FhirPending).order_by(col(FhirPending.pk)).limit(self.batch_size)
            if tenant is not None:
                statement = statement.where(col(FhirPending.tenant) == tenant)
            notes = session.exec(statement).all()
        grouped: dict[tuple[str, str, str], list[int]] = {}
        for note in notes:
            assert note.pk is not None
            grouped.setdefault((note.tenant, note.kind, note.key), []).append(note.pk)
        for key, pks in grouped.items():
            try:
                with self.db.write() as session:
                    taken = session.execute(
                        delete(FhirPending).where(col(FhirPending.pk).in_(pks))
                    ).rowcount  # type: ignore[attr-defined]
                    if taken:  # another process (or reader) did not take them first
                        self._refresh(session, *key)
            except Exception:
                # One that cannot be projected must not stall the others, nor the FHIR
                # API that works notes off before it answers: logged and dropped; the
                # next change of the same workitem notes it again.
                log.exception("FHIR projection of %s %s failed", key[1], key[2])
                with self.db.write() as session:
                    session.execute(delete(FhirPending).where(col(FhirPending.pk).in_(pks)))
        return len(notes)

    def catch_up(self, tenant: str) -> None:
        """Work off the tenant's notes before answering it (bounded: notes that other
        processes are projecting at this moment are theirs)."""
        for _ in range(10):
            if not self.pending(tenant) or self.tick(tenant) == 0:
                return

    def _refresh(self, session: Session, tenant: str, kind: str, key: str) -> None:
        if kind == STUDY:
            if self.instances is not None:
                self.study(session, tenant, self.instances(tenant, key))
            return
        if kind == WORKITEM:
            self.refresh_workitem(session, tenant, key)
            return
        request = session.exec(
            select(AiRequest).where(col(AiRequest.tenant) == tenant, col(AiRequest.task_id) == key)
        ).first()
        if request is not None and request.workitem_uid:
            self.refresh_workitem(session, tenant, request.workitem_uid)
        elif request is not None:
            self.refresh_request(session, request)

    # -- devices and studies -------------------------------------------------------------

    def product_view(
        self, product: Product, equipment: tuple[str | None, str | None] = (None, None)
    ) -> ProductView:
        return ProductView(
            code=product.code,
            name=product.name,
            vendor=product.vendor,
            version=product.version,
            supervised=product.supervision == "supervised",
            model_name=product.model_name,
            device_uid=equipment[0],
            software_versions=equipment[1],
        )

    def devices(self, session: Session, tenant: str) -> None:
        """A Device for every product the tenant uses (Task.owner never dangles)."""
        try:
            products = self.rules.products_for(tenant)
        except NotFound:  # a tenant without rules has no products
            return
        for product in products:
            if self.store.get(session, tenant, "Device", product.code) is None:
                self.store.put(session, tenant, mapping.device(self.product_view(product)))

    def study(self, session: Session, tenant: str, metadata: Sequence[DicomJson]) -> None:
        """ImagingStudy and Patient for a study the Task Manager has seen complete."""
        if not metadata:
            return
        view = study_view(metadata, self.base_url())
        if view.patient is not None:
            self.store.put(session, tenant, mapping.patient(view.patient))
        self.store.put(session, tenant, mapping.imaging_study(view))

    # -- workitems and results -----------------------------------------------------------

    def refresh_workitem(self, session: Session, tenant: str, uid: str) -> None:
        row = session.exec(
            select(Workitem).where(
                col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
            )
        ).first()
        if row is None or not row.product:
            return  # not requested by the hub's Task Manager: no Task of the hub
        try:
            product = self.rules.product(row.product)
        except NotFound:
            log.warning("workitem %s: product %s is not in the rules", uid, row.product)
            return
        ds = unpack_json(row.attributes)
        self._follow_replacement(session, tenant, uid, ds)
        result_row = session.exec(
            select(AiResult).where(
                col(AiResult.tenant) == tenant, col(AiResult.workitem_uid) == uid
            )
        ).first()
        objects = session.exec(
            select(ResultInstance)
            .where(col(ResultInstance.tenant) == tenant, col(ResultInstance.workitem_uid) == uid)
            .order_by(col(ResultInstance.pk))
        ).all()
        product_view = self.product_view(product)
        if result_row is not None and objects:
            # the algorithm's identity as its results state it (Device UID, versions)
            product_view = self.product_view(product, self._equipment(session, tenant, objects))
            self.store.put(session, tenant, mapping.device(product_view))
        patient = patient_of(ds)
        result = (
            self._result_view(session, tenant, result_row, product_view, objects)
            if result_row is not None
            else None
        )
        requests = session.exec(
            select(AiRequest).where(
                col(AiRequest.tenant) == tenant, col(AiRequest.workitem_uid) == uid
            )
        ).all()
        task_ids = [uid] + [r.task_id for r in requests]
        base = self._task_view(row, ds, product_view, patient, result, objects)
        self.store.put(session, tenant, mapping.task(base), workitem_uid=uid)
        orders: list[str] = []
        for request in requests:
            stored = self.store.get(session, tenant, "Task", request.task_id)
            original = dict(stored.content) if stored is not None else None
            if original is not None:
                original.pop("meta", None)
                orders += [
                    str(b.get("reference"))
                    for b in original.get("basedOn") or []
                    if str(b.get("reference") or "").startswith("ServiceRequest/")
                ]
            view = replace(base, task_id=request.task_id, request=original)
            self.store.put(session, tenant, mapping.task(view), workitem_uid=uid)
        if result is not None:
            for resource in mapping.result_resources(
                result,
                task_ids=task_ids,
                patient=patient,
                wado_rs_base=self.base_url(),
                orders=orders,
            ):
                self.store.put(session, tenant, resource, workitem_uid=uid)
            # an urgent finding: the Communication that tells the hospital (subscriptions
            # and the webhook follow it through the store's listeners)
            message = mapping.urgent_communication(result, tenant=tenant, patient=patient)
            if message is not None:
                self.store.put(session, tenant, message, workitem_uid=uid)

    def refresh_request(self, session: Session, request: AiRequest) -> None:
        """The Task of an EPD request that has no workitem (yet): waiting for its study,
        failed, or withdrawn."""
        stored = self.store.get(session, request.tenant, "Task", request.task_id)
        if stored is None:
            return
        try:
            product = self.product_view(self.rules.product(request.product))
        except NotFound:
            return
        original = dict(stored.content)
        original.pop("meta", None)
        view = TaskView(
            task_id=request.task_id,
            workitem_uid=None,
            state=None,
            product=product,
            study_instance_uid=request.study_instance_uid,
            accession_number=request.accession_number,
            authored_on=as_utc_or_none(request.created_at),
            last_modified=utc_now() if request.state != "waiting" else None,
            reason=request.reason,
            waiting_for_study=request.state == "waiting",
            request_failed=request.state == "failed",
            cancelled_by_requester=request.state == "cancelled",
            request=original,
        )
        self.store.put(session, request.tenant, mapping.task(view))

    def _follow_replacement(self, session: Session, tenant: str, uid: str, ds: DicomJson) -> None:
        """A workitem that replaces an earlier attempt (Replaced Procedure Step Sequence)
        takes over the EPD requests that followed the earlier one."""
        for item in items(ds, REPLACED_PROCEDURE_STEP):
            old = text_of(item, "00081155")  # Referenced SOP Instance UID
            if not old:
                continue
            for request in session.exec(
                select(AiRequest).where(
                    col(AiRequest.tenant) == tenant, col(AiRequest.workitem_uid) == old
                )
            ).all():
                request.workitem_uid = uid
                session.add(request)

    def _task_view(
        self,
        row: Workitem,
        ds: DicomJson,
        product: ProductView,
        patient: PatientView | None,
        result: ResultView | None,
        objects: Sequence[ResultInstance],
    ) -> TaskView:
        progress_items = items(ds, PROGRESS_INFORMATION)
        progress = first(progress_items[0], PROGRESS) if progress_items else None
        state = cast(
            Literal["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"],
            row.procedure_step_state,
        )
        priority = cast(Literal["HIGH", "MEDIUM", "LOW"], text_of(ds, PRIORITY) or "MEDIUM")
        reason = None
        if state == "CANCELED":
            reason = (result.reason if result is not None else None) or text_of(
                ds, CANCELLATION_REASON
            )
        elif result is not None and result.outcome == "failed":
            reason = result.reason  # COMPLETED without result objects (IHE AIW-I)
        return TaskView(
            task_id=row.sop_instance_uid,
            workitem_uid=row.sop_instance_uid,
            state=state,
            product=product,
            study_instance_uid=row.study_instance_uid,
            patient=patient,
            accession_number=text_of(ds, ACCESSION_NUMBER),
            input_readiness=row.input_readiness_state,
            priority=priority if priority in ("HIGH", "MEDIUM", "LOW") else "MEDIUM",
            authored_on=as_utc_or_none(row.created_at),
            last_modified=as_utc_or_none(row.updated_at),
            reason=reason,
            cancelled_by_requester=result is not None and result.outcome == "cancelled",
            progress=float(progress) if isinstance(progress, int | float) else None,
            output_instance_uids=tuple(o.sop_instance_uid for o in objects),
            result=result,
        )

    def _equipment(
        self, session: Session, tenant: str, objects: Sequence[ResultInstance]
    ) -> tuple[str | None, str | None]:
        """Device UID and Software Versions from the Contributing Equipment of the newest
        result object that names them (IHE AIR algorithm identification)."""
        for obj in reversed(objects):
            ds = self._instance_json(session, tenant, obj.sop_instance_uid)
            for item in items(ds, CONTRIBUTING_EQUIPMENT):
                device_uid = text_of(item, DEVICE_UID)
                versions = values(item, SOFTWARE_VERSIONS)
                if device_uid or versions:
                    return device_uid, "\\".join(str(v) for v in versions) or None
        return None, None

    def _instance_json(self, session: Session, tenant: str, sop_uid: str) -> DicomJson:
        blob = session.exec(
            select(Instance.attributes).where(
                col(Instance.tenant) == tenant, col(Instance.sop_instance_uid) == sop_uid
            )
        ).first()
        return unpack_json(blob) if blob is not None else {}

    def _result_view(
        self,
        session: Session,
        tenant: str,
        row: AiResult,
        product: ProductView,
        objects: Sequence[ResultInstance],
    ) -> ResultView:
        findings: list[FindingView] = []
        measurements: list[MeasurementView] = []
        if row.outcome in REPORTED_OUTCOMES:
            for obj in objects:
                if obj.kind not in SR_KINDS:
                    continue
                f, m = self._read_sr(session, tenant, obj)
                findings += f
                measurements += m
        deliveries = session.exec(
            select(Delivery.state).where(col(Delivery.result_pk) == row.pk)
        ).all()
        return ResultView(
            workitem_uid=row.workitem_uid,
            study_instance_uid=row.study_instance_uid,
            product=product,
            outcome=cast(Any, row.outcome),
            review_state=cast(Any, row.review_state),
            summary=row.summary,
            reason=row.reason,
            urgent=row.urgent,
            reviewer=row.reviewer,
            review_reason=row.review_reason,
            reviewed_at=as_utc_or_none(row.reviewed_at),
            completed_at=as_utc_or_none(row.completed_at),
            released_at=as_utc_or_none(row.released_at),
            delivered=bool(deliveries) and all(s == "delivered" for s in deliveries),
            objects=tuple(
                ResultObjectView(
                    sop_instance_uid=o.sop_instance_uid,
                    series_instance_uid=o.series_instance_uid,
                    sop_class_uid=o.sop_class_uid,
                    kind=o.kind,
                    summary=o.summary,
                )
                for o in objects
            ),
            findings=tuple(findings),
            measurements=tuple(measurements),
        )

    def _read_sr(
        self, session: Session, tenant: str, obj: ResultInstance
    ) -> tuple[list[FindingView], list[MeasurementView]]:
        """What a stored TID 1500 report says: as the gate summarised it when it accepted
        the instance (:func:`aifi.hub.results.summary.reported`). An instance stored before
        the gate kept that is read back with :func:`aifi.ihe_profiles.air.summary.summarise`
        (its DICOM JSON index copy: no file read); a stored instance never changes, so what
        it says is kept for the next refresh of the same result (review, delivery)."""
        sop_uid = obj.sop_instance_uid
        said = reported(obj)
        if said is not None:
            return _views(sop_uid, said.findings, said.measurements)
        key = (tenant, sop_uid)
        cached = self._said.get(key)
        if cached is None:
            cached = self._summarise(session, tenant, sop_uid)
            self._said[key] = cached
            if len(self._said) > SR_CACHE_SIZE:
                self._said.popitem(last=False)
        return list(cached[0]), list(cached[1])

    def _summarise(
        self, session: Session, tenant: str, sop_uid: str
    ) -> tuple[list[FindingView], list[MeasurementView]]:
        ds_json = self._instance_json(session, tenant, sop_uid)
        if not ds_json:
            return [], []
        try:
            summary = summarise(Dataset.from_json(ds_json))
        except Exception as exc:  # the gate accepted it; a reading problem is not fatal
            log.warning("a result could not be read back for FHIR: %s", exc)
            log.debug("result %s could not be read back for FHIR", sop_uid)
            return [], []
        return _views(sop_uid, summary.findings, summary.measurements)


def _views(
    sop_uid: str,
    findings: Iterable[FindingSummary],
    measurements: Iterable[MeasurementSummary],
) -> tuple[list[FindingView], list[MeasurementView]]:
    """A result object's findings (those it says are present or absent) and measurements
    as the FHIR mapping's views."""
    return [
        FindingView(
            code=f.concept or ("", "", f.name),
            present=f.present,
            site=f.site_code,
            laterality=f.laterality_code,
            sop_instance_uid=sop_uid,
        )
        for f in findings
        if f.present is not None
    ], [
        MeasurementView(
            code=m.concept or ("", "", m.name),
            value=m.value,
            unit=m.unit,
            sop_instance_uid=sop_uid,
        )
        for m in measurements
    ]


def project_devices(projector: FhirProjector, db: Database, tenants: Iterable[str]) -> None:
    """Devices for every tenant's products (at start-up)."""
    with db.write() as session:
        for tenant in tenants:
            projector.devices(session, tenant)


async def run_projection_loop(
    projector: FhirProjector, poll_seconds: float, settle_seconds: float = 0.5
) -> None:
    """The projection in a worker thread: when a commit noted something, wait
    ``settle_seconds`` so that the changes of one workitem that come close together (claim,
    progress reports, completion, delivery) are projected once, in one transaction, then
    work off everything pending; and every ``poll_seconds`` for notes of other processes.
    Readers of the FHIR API never wait for it (they work off their hospital's notes
    themselves). An error in one round is logged; the loop goes on. Cancelling waits for
    the round under way (anyio's thread, as :func:`aifi.hub.persistence.outbox.run_outbox_loop`)."""
    with projector.doorbell.listen() as bell:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bell.wait(), poll_seconds)
            await asyncio.sleep(settle_seconds)
            bell.clear()  # before looking: a ring during the round is not lost
            try:
                while await anyio.to_thread.run_sync(projector.tick) >= projector.batch_size:
                    pass
            except Exception:
                log.exception("FHIR projection round failed")
