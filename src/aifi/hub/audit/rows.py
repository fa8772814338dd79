"""The ``audit_event`` rows (:class:`aifi.hub.persistence.tables.AuditRecord`) and the
:class:`~aifi.hub.audit.events.AuditEntry` each holds: the one translation both ways, which
the trail (writing), the AuditEvent search and the syslog export (reading) share.

A row keeps the entry's fields cut to their column widths, the entities as JSON and the
``patient_ref`` searched by ``AuditEvent?patient=``; a row read back gives its moment as UTC
(SQLite returns naive datetimes for what was written as UTC).
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import col, select

from aifi.clock import as_utc
from aifi.hub.audit.events import AuditEntry, patient_ref
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AuditRecord


def entry_of_row(row: AuditRecord) -> AuditEntry:
    """The :class:`AuditEntry` of a stored row."""
    return AuditEntry(
        action=row.action,
        interaction=row.interaction,
        event_code=row.event_code,
        subtype=row.subtype,
        outcome=row.outcome,
        client_id=row.client_id,
        recorded_at=as_utc(row.recorded_at),
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


def row_values(entry: AuditEntry) -> dict[str, Any]:
    """The column values of ``entry``'s row (an INSERT's parameters)."""
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


def records(db: Database, tenant: str | None = None) -> list[AuditRecord]:
    """Every row (of a tenant), oldest first: for the CLI and tests."""
    with db.read() as session:
        stmt = select(AuditRecord).order_by(col(AuditRecord.pk))
        if tenant is not None:
            stmt = stmt.where(col(AuditRecord.tenant) == tenant)
        return list(session.exec(stmt).all())


def entity_ids(row: AuditRecord, kind: str) -> list[str]:
    """The ids of the row's entities of one ``kind`` (``instance``, ``destination``, ...)."""
    return [e["id"] for e in json.loads(row.entity) if e.get("kind") == kind]


__all__ = ["entity_ids", "entry_of_row", "records", "row_values"]
