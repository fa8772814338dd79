"""The audit trail (issue 6): every access to patient-related data is recorded, following
the IHE Basic Audit Log Patterns (BALP) and DICOM PS3.15 A.5.

**Recording.** :func:`install` adds an ASGI middleware. After each HTTP response whose
route the policy (:mod:`aifi.hub.auth.policy`) marks ``patient_data`` — the rule the
resolver left on ``request.state.rule``, or else the policy's rule of the matched route —
one ``audit_event`` row is written, whatever the status (a 401, 403 or 404 too): who (the
principal's client id, role and tenant; ``unknown`` without a principal), from where (the
peer address of the connection), what (the policy's action, the route's path template, the
DICOMweb service or FHIR interaction, the study, series, instance, workitem or FHIR
resource in the path, the query string of a search: BALP Query pattern), when, the outcome
(HTTP status → AuditEvent.outcome) and which patient (the Patient ID of the study, looked
up in ``study``; for FHIR, the patient the resource refers to). The row is written in a
worker thread once the response has been sent; a failure to write is logged and counted
(:attr:`AuditTrail.failures`) and never changes the response. Tokens are never recorded
(an ``access_token`` query parameter is cut from the recorded query).

The hub's own exports are recorded the same way (``interaction`` ``export``): each attempt
to deliver an AI result to a PACS (:mod:`aifi.hub.delivery.deliverer`: DCM 110104 DICOM Instances
Transferred) and each EPD push or subscription notification carrying a resource
(:mod:`aifi.hub.fhir.notify`: DCM 110106 Export).

**Append-only.** Migration 0007 makes the database refuse UPDATE and DELETE on
``audit_event``; the FHIR API serves AuditEvent read and search only (405 otherwise).

**FHIR.** AuditEvent read and search are answered from the table itself
(:mod:`aifi.hub.audit.search`: SQL on its indexed columns, only the returned page built as
AuditEvents by :func:`aifi.hub.audit.events.audit_event_resource`), so a search sees every
access recorded before it and recording costs one INSERT (a projection into the FHIR store
cost ~7 ms of CPU per access and held the SQLite writer; removed). Rows without a tenant — an
unidentified caller — belong to the operator's tenant, ``settings.default_tenant``.

**Syslog.** :mod:`aifi.hub.audit.syslog` sends the rows as DICOM audit messages (RFC 5424)
to an ATNA audit record repository; :func:`run_audit_loop` does it continuously when
``audit_syslog_url`` is set, from a cursor kept in ``audit_cursor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from sqlalchemy import insert
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifi.fhir.search import reference_key
from aifi.fhir.types import SearchQuery, SearchResult, StoredResource
from aifi.hub.audit.events import (
    EXPORT,
    TRANSFERRED,
    UNKNOWN,
    AuditEntry,
    classify,
    outcome_of_status,
    patient_of_identifier,
)
from aifi.hub.audit.search import AuditEventSearch, patient_ref
from aifi.hub.auth.policy import RULES, Rule, iter_routes
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AiResult, AuditRecord, Study, Workitem
from aifi.hub.store.repository import unpack_json

log = logging.getLogger(__name__)

_BODY_LIMIT = 1 << 20
_SECRET_PARAMS = frozenset({"access_token", "token", "client_secret", "client_assertion"})
_STUDY_IN_BODY = re.compile(rb"/studies/([0-9.]{1,64})")
_PATIENT_PARAMS = ("patient", "subject")
_STUDY_KEYS = ("study", "StudyInstanceUID")
_SERIES_KEYS = ("series", "SeriesInstanceUID")
_INSTANCE_KEYS = ("instance", "SOPInstanceUID")
_WORKITEM_KEYS = ("workitem", "workitem_uid")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def entry_of_row(row: AuditRecord) -> AuditEntry:
    """The :class:`AuditEntry` of a stored row."""
    return AuditEntry(
        action=row.action,
        interaction=row.interaction,
        event_code=row.event_code,
        subtype=row.subtype,
        outcome=row.outcome,
        client_id=row.client_id,
        recorded_at=_utc(row.recorded_at),
        tenant=row.tenant,
        role=row.role,
        address=row.address,
        method=row.method,
        path=row.path,
        http_status=row.http_status,
        patient_id=row.patient_id,
        patient_issuer=row.patient_issuer,
        study_uid=row.study_uid,
        entities=AuditEntry.entities_of(row.entity),
        query=row.query,
    )


def _clean_query(raw: str) -> str:
    """The query string without credentials (RFC 6750 §2.3 allows ``access_token`` there)."""
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
        return raw
    return urlencode([(n, v) for n, v in pairs if n.lower() not in _SECRET_PARAMS])


class AuditTrail:
    """Writes audit rows (module docstring). Requests :meth:`submit` their rows to one
    writer thread that commits whatever has queued up in one transaction (group commit:
    no wait at low load, one fsync per batch under load instead of one per request); the
    row is written after the response was sent, and at most :data:`GATHER_SECONDS` later,
    so a hard crash can lose the accesses of that last fraction of a second. Exports and the CLI
    :meth:`record` synchronously."""

    def __init__(
        self,
        db: Database,
        fhir_store: SqlFhirStore | None = None,
        *,
        operator_tenant: str = "default",
        source_id: str = "aifi-hub",
    ) -> None:
        self.db = db
        self.fhir_store = fhir_store
        self.operator_tenant = operator_tenant
        self.source_id = source_id
        self.recorded = 0
        self.failures = 0
        """Rows that could not be written (logged); a monitoring signal."""
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[AuditEntry | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._closed = False
        db.before_dispose.append(self.close)

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
                connection.execute(insert(AuditRecord), [self._values(e) for e in entries])
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
                    insert(AuditRecord).values(**self._values(entry)).returning(col(AuditRecord.pk))
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

    @staticmethod
    def _values(entry: AuditEntry) -> dict[str, Any]:
        return {
            "tenant": entry.tenant,
            "recorded_at": entry.recorded_at,
            "action": entry.action,
            "interaction": entry.interaction,
            "event_code": entry.event_code,
            "subtype": entry.subtype[:40],
            "outcome": entry.outcome,
            "http_status": entry.http_status,
            "client_id": entry.client_id[:64],
            "role": entry.role[:16],
            "address": entry.address[:64] if entry.address else None,
            "method": entry.method[:8],
            "path": entry.path[:200],
            "patient_id": entry.patient_id[:64] if entry.patient_id else None,
            "patient_issuer": entry.patient_issuer[:64] if entry.patient_issuer else None,
            "patient_ref": (
                patient_ref(entry.patient_id, entry.patient_issuer) if entry.patient_id else None
            ),
            "study_uid": entry.study_uid[:64] if entry.study_uid else None,
            "entity": entry.entity_json,
            "query": entry.query,
        }

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
        issuer = ((unpack_json(row[1]).get("00100021") or {}).get("Value") or [None])[0]
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

    # -- the hub's own exports ----------------------------------------------------------------

    def record_export(
        self,
        *,
        tenant: str,
        channel: str,
        destination: str,
        address: str | None,
        outcome: int,
        event_code: str = EXPORT,
        study_uid: str | None = None,
        entities: tuple[dict[str, str], ...] = (),
        error: str | None = None,
    ) -> int | None:
        """Record data the hub sent out on its own (BALP export; PS3.15 A.5.3.4/A.5.3.6):
        the hub is the requestor, the destination the other agent."""
        target: dict[str, str] = {"kind": "destination", "id": destination}
        if address:
            target["address"] = address
        if error:
            target["error"] = error[:1000]
        return self.record(
            AuditEntry(
                action="R",
                interaction="export",
                event_code=event_code,
                subtype=channel,
                outcome=outcome,
                client_id=self.source_id,
                tenant=tenant,
                role="hub",
                study_uid=study_uid,
                entities=(target, *entities),
            )
        )

    def delivery_hook(self, addresses: Callable[[str, str], str | None]) -> DeliveryAudit:
        """The hook :class:`aifi.hub.delivery.deliverer.Deliverer` calls after each recorded
        attempt."""

        def audit(
            tenant: str,
            result_pk: int,
            destination: str,
            state: str,
            confirmed: list[str],
            error: str | None,
        ) -> None:
            with self.db.read() as session:
                result = session.get(AiResult, result_pk)
            entities: list[dict[str, str]] = [{"kind": "instance", "id": u} for u in confirmed]
            study_uid = None
            if result is not None:
                study_uid = result.study_instance_uid or None
                entities.insert(0, {"kind": "workitem", "id": result.workitem_uid})
            outcome = 0 if state == "delivered" else 8 if state == "failed" else 4
            self.record_export(
                tenant=tenant,
                channel="PACS delivery",
                destination=destination,
                address=addresses(tenant, destination),
                outcome=outcome,
                event_code=TRANSFERRED,
                study_uid=study_uid,
                entities=tuple(entities),
                error=error if outcome else None,
            )

        return audit

    def notify_hook(self, push_targets: dict[str, str]) -> NotifyAudit:
        """The hook :class:`aifi.hub.fhir.notify.FhirNotifier` calls after each attempt to
        send a resource (EPD push, subscription event notification)."""

        def audit(
            tenant: str,
            channel: str,
            subscription_id: str | None,
            focus: tuple[str, str] | None,
            error: str | None,
            retryable: bool,
        ) -> None:
            entities: list[dict[str, str]] = []
            if focus is not None:
                entities.append({"kind": "fhir", "type": focus[0], "id": focus[1]})
            if subscription_id:
                entities.append({"kind": "subscription", "id": subscription_id})
            push = channel == "epd-push"
            self.record_export(
                tenant=tenant,
                channel="EPD push" if push else "subscription notification",
                destination="EPD" if push else f"Subscription/{subscription_id}",
                address=push_targets.get(tenant) if push else None,
                outcome=0 if error is None else 4 if retryable else 8,
                entities=tuple(entities),
                error=error,
            )

        return audit


WRITE_BATCH = 500
"""Most rows the writer commits in one transaction."""
GATHER_SECONDS = 0.2
"""How long the writer collects rows before it commits them: at most ~5 audit commits a
second compete for the database writer with the requests' own transactions."""

DeliveryAudit = Callable[[str, int, str, str, list[str], str | None], None]
NotifyAudit = Callable[[str, str, str | None, tuple[str, str] | None, str | None, bool], None]


# -- the middleware ---------------------------------------------------------------------------


class AuditMiddleware:
    """ASGI middleware that writes one audit row per patient-data request (module docstring).
    Pure ASGI (not ``BaseHTTPMiddleware``): streamed WADO-RS responses pass untouched; only
    a STOW-RS response body is looked at (for the Study Instance UIDs it stored)."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail
        self._templates: dict[int, str] | None = None

    def _template(self, scope: Scope, route: Any) -> str | None:
        if self._templates is None:
            self._templates = {id(r): path for path, r in iter_routes(scope["app"])}
        return self._templates.get(id(route))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None
        location: str | None = None
        body: list[bytes] | None = None
        size = 0

        async def sending(message: Message) -> None:
            nonlocal status, location, body, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers") or ():
                    if name.lower() == b"location":
                        location = value.decode("latin-1")
                if scope["method"] == "POST" and scope["path"].startswith("/dicomweb/studies"):
                    body = []
            elif message["type"] == "http.response.body" and body is not None:
                chunk = message.get("body", b"")
                if size < _BODY_LIMIT:
                    body.append(chunk)
                    size += len(chunk)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            entry = self._entry(scope, status or 500, location, body)
            if entry is not None:
                self.trail.record(entry)  # the request failed: no thread hop on this path
            raise
        entry = self._entry(scope, status, location, body)
        if entry is not None:
            self.trail.submit(entry)

    def _entry(
        self, scope: Scope, status: int | None, location: str | None, body: list[bytes] | None
    ) -> AuditEntry | None:
        try:
            return self._build(scope, status, location, body)
        except Exception:
            log.exception("audit entry could not be built")
            self.trail.failures += 1
            return None

    def _build(
        self, scope: Scope, status: int | None, location: str | None, body: list[bytes] | None
    ) -> AuditEntry | None:
        state: dict[str, Any] = scope.get("state") or {}
        route = scope.get("route")
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        template = self._template(scope, route) if route is not None else None
        rule: Rule | None = state.get("rule")
        if rule is None and template is not None:
            rule = RULES.get((method, template))
        if rule is None or not rule.patient_data or rule.action is None:
            return None
        template = template or scope["path"]
        principal = state.get("principal")
        params: dict[str, str] = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
        query = _clean_query(scope.get("query_string", b"").decode("latin-1")) or None
        event_code, subtype, action = classify(method, template, rule.action)
        entities: list[dict[str, str]] = []
        patient_id: str | None = None
        issuer: str | None = None
        study_uid = next((params[k] for k in _STUDY_KEYS if params.get(k)), None)
        for kind, keys in (
            ("series", _SERIES_KEYS),
            ("instance", _INSTANCE_KEYS),
            ("workitem", _WORKITEM_KEYS),
        ):
            value = next((params[k] for k in keys if params.get(k)), None)
            if value:
                entities.append({"kind": kind, "id": value})
        if template.startswith("/fhir/"):
            kind = params.get("resource_type", "")
            rid = params.get("resource_id")
            if rid is None and location and rule.action == "create":
                key = reference_key(location.split("?")[0])
                if key:
                    kind, _, rid = key.partition("/")
            if kind and rid:
                entities.append({"kind": "fhir", "type": kind, "id": rid})
        elif query and rule.action == "search":
            for name, value in parse_qsl(query):
                if not value or "," in value or "*" in value or "?" in value:
                    continue  # only a single, literal key names one study or patient
                if name in ("StudyInstanceUID", "0020000D") and study_uid is None:
                    study_uid = value
                elif name in ("PatientID", "00100020"):
                    patient_id = value
                elif name in ("IssuerOfPatientID", "00100021"):
                    issuer = value
        if body and study_uid is None:
            found = list(dict.fromkeys(m.decode() for m in _STUDY_IN_BODY.findall(b"".join(body))))
            if found:
                study_uid = found[0]
                entities += [{"kind": "study", "id": uid} for uid in found[1:]]
        client = scope.get("client")
        return AuditEntry(
            action=action,
            interaction=rule.action,
            event_code=event_code,
            subtype=subtype,
            outcome=outcome_of_status(status),
            http_status=status,
            client_id=str(getattr(principal, "subject", None) or UNKNOWN),
            tenant=getattr(principal, "tenant", None),
            role=str(getattr(principal, "role", "") or ""),
            address=str(client[0]) if client else None,
            method=method,
            path=template,
            study_uid=study_uid,
            patient_id=patient_id,
            patient_issuer=issuer if patient_id else None,
            entities=tuple(entities),
            query=query if rule.action == "search" else None,
        )


# -- FHIR read/search in step -----------------------------------------------------------------


class AuditingFhirBackend:
    """The app's FHIR backend with AuditEvent read and search answered from the audit
    table (:class:`aifi.hub.audit.search.AuditEventSearch`)."""

    def __init__(self, inner: Any, trail: AuditTrail) -> None:
        self.inner = inner
        self.trail = trail
        self.audit_events = AuditEventSearch(
            trail.db,
            operator_tenant=trail.operator_tenant,
            entry_of_row=entry_of_row,
            source_id=trail.source_id,
        )

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        if resource_type == "AuditEvent":
            return self.audit_events.read(tenant, resource_id)
        result: StoredResource = self.inner.read(tenant, resource_type, resource_id)
        return result

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        if query.resource_type == "AuditEvent":
            return self.audit_events.search(tenant, query)
        result: SearchResult = self.inner.search(tenant, query)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def install(app: FastAPI, trail: AuditTrail) -> None:
    """Record every patient-data request of ``app``; keep AuditEvent reads in step; hook the
    PACS delivery and the FHIR notifier (when the app has them) into the trail."""
    app.add_middleware(AuditMiddleware, trail=trail)
    app.state.audit_trail = trail
    backend = getattr(app.state, "fhir_backend", None)
    if backend is not None and not isinstance(backend, AuditingFhirBackend):
        app.state.fhir_backend = AuditingFhirBackend(backend, trail)
    deliverer = getattr(app.state, "deliverer", None)
    if deliverer is not None:

        def address(tenant: str, name: str) -> str | None:
            found = deliverer.destinations.destination(tenant, name)
            if found is None:
                return None
            url = getattr(found, "url", None)
            if url:
                return str(url)
            host, port = getattr(found, "host", None), getattr(found, "port", None)
            return f"{host}:{port}" if host else None

        deliverer.audit = trail.delivery_hook(address)
    notifier = getattr(app.state, "fhir_notifier", None)
    if notifier is not None:
        notifier.audit = trail.notify_hook(dict(notifier.push_targets))


async def run_audit_loop(trail: AuditTrail, exporter: Any | None, poll_seconds: float) -> None:
    """Keep the syslog export (an :class:`aifi.hub.audit.syslog.SyslogExporter`, when
    configured) up to date, every ``poll_seconds``, until cancelled. An error in one round
    is logged; the next goes on from the cursor, so nothing is lost across restarts."""
    while True:
        if exporter is not None:
            try:
                await asyncio.to_thread(exporter.export_pending)
            except Exception as exc:
                log.warning("audit syslog export failed (retried): %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(poll_seconds)


def start_audit_loop(
    trail: AuditTrail, exporter: Any | None, poll_seconds: float
) -> Callable[[], Awaitable[None]]:
    """Start :func:`run_audit_loop` as a task; returns the coroutine function that stops it
    (for the app's lifespan)."""
    task = asyncio.create_task(run_audit_loop(trail, exporter, poll_seconds))

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(trail.close)  # the last queued rows are written
        if exporter is not None:
            exporter.close()

    return stop


def build_trail(app: FastAPI, settings: Any) -> tuple[AuditTrail, Any | None]:
    """The app's :class:`AuditTrail` (over its database and FHIR store) and, when
    ``settings.audit_syslog_url`` is set, its :class:`~aifi.hub.audit.syslog.SyslogExporter`;
    the trail installed on ``app`` (:func:`install`)."""
    from aifi.hub.audit.syslog import SyslogExporter

    trail = AuditTrail(
        app.state.db,
        getattr(app.state, "fhir_store", None),
        operator_tenant=settings.default_tenant,
    )
    install(app, trail)
    url = getattr(settings, "audit_syslog_url", None)
    exporter = (
        SyslogExporter(app.state.db, url, ca_file=getattr(settings, "audit_syslog_ca_file", None))
        if url
        else None
    )
    return trail, exporter


def records(db: Database, tenant: str | None = None) -> list[AuditRecord]:
    """Every row (of a tenant), oldest first: for the CLI and tests."""
    with db.read() as session:
        stmt = select(AuditRecord).order_by(col(AuditRecord.pk))
        if tenant is not None:
            stmt = stmt.where(col(AuditRecord.tenant) == tenant)
        return list(session.exec(stmt).all())


def entity_ids(row: AuditRecord, kind: str) -> list[str]:
    return [e["id"] for e in json.loads(row.entity) if e.get("kind") == kind]


__all__ = [
    "AuditMiddleware",
    "AuditTrail",
    "AuditingFhirBackend",
    "DeliveryAudit",
    "NotifyAudit",
    "build_trail",
    "entity_ids",
    "entry_of_row",
    "install",
    "records",
    "run_audit_loop",
    "start_audit_loop",
]
