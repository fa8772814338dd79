r"""The audit trail's writer (issue 6): :class:`AuditTrail` stores each
:class:`~aifi.hub.audit.events.AuditEntry` as one append-only ``audit_event`` row, with the
patient filled in from what the hub knows.

Who reports to it (:mod:`aifi.hub.audit`): the request recording
(:class:`aifi.hub.audit.recording.AuditMiddleware`) :meth:`~AuditTrail.submit`\ s an entry
once the response has been sent, for a writer thread to commit; the hub's exports
(:mod:`aifi.hub.audit.exports`) and the CLI :meth:`~AuditTrail.record` synchronously. A failure
to write is logged here (``aifi.hub.audit.trail``) and counted (:attr:`AuditTrail.failures`),
and never reaches the caller.

**The patient.** An entry without one gets the Patient ID (and issuer) of its study, looked
up in ``study`` (the study of a workitem or AI result, when only that is named), or else,
with a FHIR store, the patient a FHIR resource refers to (its ``subject``/``for``/``patient``,
the Patient itself) or a FHIR search names (``patient=``/``subject=``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Protocol
from urllib.parse import parse_qsl

from sqlalchemy import insert
from sqlmodel import Session, col, select

from aifi.clock import Clock, utc_now
from aifi.dicom_json import first, unpack
from aifi.fhir.search import reference_key
from aifi.fhir.types import StoredResource
from aifi.hub.audit.events import AuditEntry, patient_of_identifier
from aifi.hub.audit.rows import row_values
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AiResult, AuditRecord, Study, Workitem

log = logging.getLogger(__name__)

_PATIENT_PARAMS = ("patient", "subject")

WRITE_BATCH = 500
"""Most rows the writer commits in one transaction."""
GATHER_SECONDS = 0.2
"""How long the writer collects rows before it commits them: at most ~5 audit commits a
second compete for the database writer with the requests' own transactions."""


class FhirResources(Protocol):
    """The FHIR store as the patient lookup reads it
    (:class:`aifi.hub.fhir.store.SqlFhirStore`)."""

    def get(
        self, session: Session, tenant: str, resource_type: str, resource_id: str
    ) -> StoredResource | None: ...


class AuditTrail:
    """Writes audit rows (module docstring). Requests :meth:`submit` their rows to one
    writer thread that commits whatever has queued up in one transaction (group commit:
    no wait at low load, one fsync per batch under load instead of one per request); the
    row is written after the response was sent, and at most :data:`GATHER_SECONDS` later,
    so a hard crash can lose the accesses of that last fraction of a second. Exports and the CLI
    :meth:`record` synchronously.

    ``fhir_store`` (optional) finds the patient of a FHIR access; ``operator_tenant`` owns the
    rows without a tenant (an unidentified caller); ``source_id`` names the hub as an agent
    and audit source; ``clock`` dates the entries its reporters build. Whoever owns ``db``
    stops the writer (:meth:`close`, what is queued written) before disposing of it: the
    app's lifespan and :meth:`aifi.hub.wiring.Hub.close`."""

    def __init__(
        self,
        db: Database,
        fhir_store: FhirResources | None = None,
        *,
        operator_tenant: str = "default",
        source_id: str = "aifi-hub",
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.fhir_store = fhir_store
        self.operator_tenant = operator_tenant
        self.source_id = source_id
        self.clock = clock
        self.recorded = 0
        self.failures = 0
        """Rows that could not be written (logged); a monitoring signal."""
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[AuditEntry | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._closed = False

    def count_failure(self) -> None:
        """Count an entry lost before it reached the trail (a reporter's own failure)."""
        with self._lock:
            self.failures += 1

    # -- writing ------------------------------------------------------------------------

    def submit(self, entry: AuditEntry) -> None:
        """Queue a row for the writer thread (never blocks, never raises)."""
        if self._closed:  # the database is closing: nothing can be written any more
            log.warning("audit record after shutdown not written (%s %s)", entry.method, entry.path)
            with self._lock:
                self.failures += 1
            return
        with self._lock:
            self._pending += 1
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="audit-writer", daemon=True
                )
                self._writer.start()
        self._queue.put(entry)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row is written; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer (before the database closes)."""
        self.flush()
        self._closed = True
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout=5)

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            until = time.monotonic() + GATHER_SECONDS
            while len(batch) < WRITE_BATCH:
                try:
                    more = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self._write_batch(batch)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _write_batch(self, batch: list[AuditEntry]) -> None:
        try:
            with self.db.transaction() as connection:
                with Session(bind=connection) as session:
                    patients: dict[tuple[str, str], tuple[str, str | None]] = {}
                    entries = [self._with_patient(session, entry, patients) for entry in batch]
                connection.execute(insert(AuditRecord), [row_values(e) for e in entries])
        except Exception:
            log.exception("%d audit records could not be written in one go", len(batch))
            for entry in batch:  # one by one, so that one bad row loses only itself
                self.record(entry)
            return
        with self._lock:
            self.recorded += len(batch)

    def record(self, entry: AuditEntry) -> int | None:
        """Write one row (with the patient looked up); its key, or None when it could not
        be written (logged and counted; never raises)."""
        try:
            with self.db.transaction() as connection:
                with Session(bind=connection) as session:
                    entry = self._with_patient(session, entry)
                result = connection.execute(
                    insert(AuditRecord).values(**row_values(entry)).returning(col(AuditRecord.pk))
                )
                pk = result.scalar_one()
        except Exception:
            log.exception("audit record could not be written (%s %s)", entry.method, entry.path)
            with self._lock:
                self.failures += 1
            return None
        with self._lock:
            self.recorded += 1
        return pk

    def _with_patient(
        self,
        session: Session,
        entry: AuditEntry,
        patients: dict[tuple[str, str], tuple[str, str | None]] | None = None,
    ) -> AuditEntry:
        """Fill in the study and patient from what the hub knows (cheap lookups by key;
        ``patients`` remembers each study's patient across one batch, whose rows mostly
        name the same few studies)."""
        tenant = entry.tenant
        if tenant is None or entry.patient_id:
            return entry
        study_uid = entry.study_uid
        patient: tuple[str, str | None] | None = None
        if study_uid is None:
            workitem = next((e["id"] for e in entry.entities if e.get("kind") == "workitem"), None)
            if workitem:
                study_uid = (
                    session.exec(
                        select(Workitem.study_instance_uid).where(
                            col(Workitem.tenant) == tenant,
                            col(Workitem.sop_instance_uid) == workitem,
                        )
                    ).first()
                    or session.exec(
                        select(AiResult.study_instance_uid).where(
                            col(AiResult.tenant) == tenant, col(AiResult.workitem_uid) == workitem
                        )
                    ).first()
                )
        if study_uid:
            key = (tenant, study_uid)
            patient = patients.get(key) if patients is not None else None
            if patient is None:
                patient = self._study_patient(session, tenant, study_uid)
                if patients is not None and patient is not None:
                    patients[key] = patient  # only found ones: the study may arrive later
        if patient is None and self.fhir_store is not None:
            patient = self._fhir_patient(session, tenant, entry)
        return replace(
            entry,
            study_uid=study_uid or None,
            patient_id=patient[0] if patient else None,
            patient_issuer=patient[1] if patient else None,
        )

    @staticmethod
    def _study_patient(
        session: Session, tenant: str, study_uid: str
    ) -> tuple[str, str | None] | None:
        row = session.exec(
            select(Study.patient_id, Study.attributes).where(
                col(Study.tenant) == tenant, col(Study.study_instance_uid) == study_uid
            )
        ).first()
        if row is None or not row[0]:
            return None
        issuer = first(unpack(row[1]), "00100021")  # IssuerOfPatientID
        return str(row[0]), str(issuer) if issuer else None

    def _fhir_patient(
        self, session: Session, tenant: str, entry: AuditEntry
    ) -> tuple[str, str | None] | None:
        """The patient a FHIR resource refers to (its ``subject``/``for``/``patient``, or the
        Patient itself), or the Patient a search names (``patient=``/``subject=``)."""
        assert self.fhir_store is not None
        targets: list[tuple[str, str]] = [
            (e["type"], e["id"]) for e in entry.entities if e.get("kind") == "fhir"
        ]
        if not targets and entry.query:
            for name, value in parse_qsl(entry.query):
                if name.split(":")[0] in _PATIENT_PARAMS:
                    key = reference_key(value) or f"Patient/{value}"
                    kind, _, rid = key.partition("/")
                    if kind == "Patient":
                        targets.append((kind, rid))
        for kind, rid in targets[:2]:
            stored = self.fhir_store.get(session, tenant, kind, rid)
            if stored is None:
                continue
            content = stored.content
            if kind == "Patient":
                for identifier in content.get("identifier") or ():
                    found = patient_of_identifier(identifier)
                    if found:
                        return found
                continue
            for element in ("subject", "for", "patient"):
                ref = content.get(element)
                if isinstance(ref, dict):
                    found = patient_of_identifier(ref.get("identifier"))
                    if found:
                        return found
        return None


__all__ = ["GATHER_SECONDS", "WRITE_BATCH", "AuditTrail", "FhirResources"]
