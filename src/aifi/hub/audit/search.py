"""FHIR AuditEvent read and search answered straight from the ``audit_event`` table.

The audit trail is written once per access (:mod:`aifi.hub.audit.trail`); turning every row into a
stored FHIR resource with its search index cost about 7 ms of CPU per access, on the hub's
hot path. Instead, a search runs as SQL on the table's typed, indexed columns and only the
page it returns is built as AuditEvents (``aifi.hub.audit.events.audit_event_resource``,
IHE BALP). The resources are immutable: version 1, ``lastUpdated`` = ``recorded``.

Search parameters (FHIR R4 auditevent.html#search, those of ``SEARCH_PARAMS["AuditEvent"]``):
``_id``, ``_lastUpdated``, ``date`` (with prefixes), ``patient`` (``Patient/<id>`` or
``:identifier``), ``entity`` (a reference, or ``:identifier`` a UID), ``agent``
(``:identifier`` the OAuth2 client), ``type``, ``subtype``, ``action``, ``outcome``
(``:not`` and ``:missing`` on tokens), ``address`` (starts with), ``site`` (the tenant);
``_count``, ``_offset``, ``_summary=count``, ``_sort`` (``date``/``_lastUpdated``, ``-``
descending; default oldest first).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, not_, or_
from sqlmodel import col, select

from aifi.errors import InvalidRequest, NotFound
from aifi.fhir.codes import DICOM_UID_SYSTEM, patient_id_system
from aifi.fhir.types import Criterion, SearchQuery, SearchResult, StoredResource
from aifi.hub.audit.events import CLIENT_SYSTEM, audit_event_resource
from aifi.hub.audit.rows import entry_of_row
from aifi.hub.fhir.store import column_date, instant
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AuditRecord

ID_PREFIX = "audit-"


def _pk(resource_id: str) -> int | None:
    if not resource_id.startswith(ID_PREFIX) or not resource_id[len(ID_PREFIX) :].isdigit():
        return None
    return int(resource_id[len(ID_PREFIX) :])


class AuditEventSearch:
    """``read`` and ``search`` of AuditEvent for one tenant (rows without a tenant —
    refused requests without a usable token — belong to the operator's tenant)."""

    def __init__(
        self,
        db: Database,
        *,
        operator_tenant: str,
        source_id: str = "aifi-hub",
    ) -> None:
        self.db = db
        self.operator_tenant = operator_tenant
        self.source_id = source_id

    def _tenant_clause(self, tenant: str) -> ColumnElement[bool]:
        if tenant == self.operator_tenant:
            return or_(col(AuditRecord.tenant) == tenant, col(AuditRecord.tenant).is_(None))
        return col(AuditRecord.tenant) == tenant

    def _stored(self, row: AuditRecord) -> StoredResource:
        entry = entry_of_row(row)
        resource = audit_event_resource(entry, f"{ID_PREFIX}{row.pk}", source_id=self.source_id)
        recorded = entry.recorded_at
        resource["meta"] = {"versionId": "1", "lastUpdated": instant(recorded)}
        return StoredResource("AuditEvent", f"{ID_PREFIX}{row.pk}", 1, recorded, resource)

    def read(self, tenant: str, resource_id: str) -> StoredResource:
        pk = _pk(resource_id)
        if pk is not None:
            with self.db.read() as session:
                row = session.exec(
                    select(AuditRecord).where(
                        col(AuditRecord.pk) == pk, self._tenant_clause(tenant)
                    )
                ).first()
                if row is not None:
                    return self._stored(row)
        raise NotFound(f"AuditEvent/{resource_id} is not known")

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        if query.include:
            raise InvalidRequest("AuditEvent has no _include targets")
        clauses = [self._tenant_clause(tenant), *(self._criterion(c) for c in query.criteria)]
        order: list[Any] = []
        for key in query.sort:
            name = key.lstrip("-")
            if name not in ("date", "_lastUpdated"):
                raise InvalidRequest(f"AuditEvent cannot be sorted by {name!r}")
            column = col(AuditRecord.recorded_at)
            order.append(column.desc() if key.startswith("-") else column.asc())
        order.append(
            col(AuditRecord.pk).desc()
            if query.sort[:1] and query.sort[0].startswith("-")
            else col(AuditRecord.pk)
        )
        with self.db.read() as session:
            total = session.exec(
                select(func.count()).select_from(AuditRecord).where(*clauses)
            ).one()
            if query.summary_count:
                return SearchResult(total=int(total))
            rows = session.exec(
                select(AuditRecord)
                .where(*clauses)
                .order_by(*order)
                .offset(query.offset)
                .limit(query.count)
            ).all()
            matches = [self._stored(row) for row in rows]
        return SearchResult(total=int(total), matches=matches)

    # -- criteria ----------------------------------------------------------------------

    def _criterion(self, criterion: Criterion) -> ColumnElement[bool]:
        name, modifier = criterion.param, criterion.modifier
        if name in ("date", "_lastUpdated"):
            return or_(
                *(
                    column_date(prefix or "eq", lower, upper, col(AuditRecord.recorded_at))
                    for (prefix, _), (lower, upper) in zip(
                        criterion.values, criterion.bounds, strict=True
                    )
                )
            )
        column = _TOKEN_COLUMNS.get(name)
        if modifier == "missing":
            target = column if column is not None else _MISSING_COLUMNS.get(name)
            if target is None:
                raise InvalidRequest(f"{name}:missing is not supported for AuditEvent")
            missing = criterion.values[0][1] == "true"
            presence: ColumnElement[bool] = target.is_(None) if missing else target.is_not(None)
            return presence
        if name == "_id":
            ids = [_pk(code) for _, code in criterion.values]
            matched = col(AuditRecord.pk).in_([i for i in ids if i is not None])
            return not_(matched) if modifier == "not" else matched
        if column is not None:
            if modifier not in (None, "not"):
                raise InvalidRequest(f"{name}:{modifier} is not supported for AuditEvent")
            codes = [_token_value(name, system, code) for system, code in criterion.values]
            known = [c for c in codes if c is not None]
            tokens: ColumnElement[bool] = column.in_(known) if known else false()
            return not_(tokens) if modifier == "not" else tokens
        alternatives = [self._value(criterion, system, value) for system, value in criterion.values]
        return or_(*alternatives)

    def _value(self, criterion: Criterion, system: str | None, value: str) -> ColumnElement[bool]:
        name, modifier = criterion.param, criterion.modifier
        if name == "address":
            if modifier not in (None, "exact"):
                raise InvalidRequest(f"address:{modifier} is not supported for AuditEvent")
            column = col(AuditRecord.address)
            return column == value if modifier == "exact" else column.startswith(value)
        if name == "patient":
            if modifier == "identifier":
                return _patient_identifier(system, value)
            if modifier not in (None, "Patient"):
                raise InvalidRequest(f"patient:{modifier} is not supported for AuditEvent")
            kind, _, rid = value.rpartition("/")
            if kind not in ("", "Patient"):
                return false()
            return col(AuditRecord.patient_ref) == rid
        if name == "agent":
            if modifier == "identifier":
                if system not in (None, CLIENT_SYSTEM):
                    return false()
                return col(AuditRecord.client_id) == value
            raise InvalidRequest("search agents with agent:identifier=<client system>|<client id>")
        if name == "entity":
            if modifier == "identifier":
                if system not in (None, DICOM_UID_SYSTEM):
                    return _patient_identifier(system, value)
                return or_(
                    col(AuditRecord.study_uid) == value,
                    col(AuditRecord.entity).contains(f'"{value}"'),
                )
            if modifier is not None:
                raise InvalidRequest(f"entity:{modifier} is not supported for AuditEvent")
            kind, _, rid = value.rpartition("/")
            if kind == "Patient":
                return col(AuditRecord.patient_ref) == rid
            if kind == "ImagingStudy":
                return or_(
                    col(AuditRecord.study_uid) == rid, col(AuditRecord.entity).contains(f'"{rid}"')
                )
            fhir_entity = f'"type":"{kind}","id":"{rid}"'
            return (
                col(AuditRecord.entity).contains(fhir_entity)
                if kind
                else col(AuditRecord.entity).contains(f'"{rid}"')
            )
        raise InvalidRequest(f"AuditEvent cannot be searched by {name!r}")


def _patient_identifier(system: str | None, value: str) -> ColumnElement[bool]:
    clause = col(AuditRecord.patient_id) == value
    if system is None:
        return clause
    issuer = _issuer_of_system(system)
    if issuer is False:
        return false()
    if issuer is None:
        return and_(clause, col(AuditRecord.patient_issuer).is_(None))
    return and_(clause, col(AuditRecord.patient_issuer) == issuer)


def _issuer_of_system(system: str) -> str | bool | None:
    """The Issuer of Patient ID a patient identifier system stands for; False when the
    system is not one the hub writes."""
    if system == patient_id_system(None):
        return None
    prefix = patient_id_system("X")[: -len("X")]
    if system.startswith(prefix):
        return system[len(prefix) :]
    return False


def _token_value(name: str, system: str | None, code: str) -> Any:
    if name == "outcome":
        return int(code) if code.isdigit() else None
    return code


_TOKEN_COLUMNS: dict[str, Any] = {
    "type": col(AuditRecord.event_code),
    "subtype": col(AuditRecord.subtype),
    "action": col(AuditRecord.action),
    "outcome": col(AuditRecord.outcome),
    "site": col(AuditRecord.tenant),
}
_MISSING_COLUMNS: dict[str, Any] = {
    "patient": col(AuditRecord.patient_id),
    "address": col(AuditRecord.address),
}
