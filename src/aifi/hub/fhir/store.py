"""The FHIR resource store: the current version of each resource (``fhir_resource``) and
its search index (``fhir_search_token``), on SQLite and PostgreSQL.

Writes happen in the caller's write session, so that the hub's projection and its own
state change in one commit. Versions follow FHIR R4 http.html#versioning: ``versionId``
grows by one on each change, ``lastUpdated`` is when it changed. Searches turn each
:class:`~aifi.fhir.types.Criterion` (search.html) into a sub-select on the index.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, func, insert, not_, nulls_last, or_, true
from sqlmodel import Session, col, select

from aifi.clock import Clock, utc_now
from aifi.errors import InvalidRequest, NotFound, PreconditionFailed
from aifi.fhir.search import INDEX_FORMAT, SEARCH_PARAMS, index_entries
from aifi.fhir.types import (
    Criterion,
    Resource,
    SearchQuery,
    SearchResult,
    StoredResource,
    WriteResult,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import FhirResource, FhirSearchToken


class ChangeListener(Protocol):
    """Told about every new resource version, inside the write session that made it
    (subscriptions: R5 Subscriptions Backport IG for R4, "Topic-Based Subscriptions")."""

    def on_change(
        self,
        session: Session,
        tenant: str,
        stored: StoredResource,
        previous: StoredResource | None,
    ) -> None: ...


def instant(moment: datetime) -> str:
    """A FHIR ``instant`` (datatypes.html#instant): UTC with milliseconds and offset."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _without_version(resource: Resource) -> Resource:
    """The resource without the server-kept ``meta.versionId``/``lastUpdated``/``source``:
    what decides whether something changed."""
    content = dict(resource)
    meta = content.pop("meta", None)
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in {"versionId", "lastUpdated"}}
        if rest:
            content["meta"] = rest
    return content


def _to_stored(row: FhirResource) -> StoredResource:
    updated = row.last_updated
    if updated.tzinfo is None:  # SQLite keeps no offset; the store writes UTC
        updated = updated.replace(tzinfo=UTC)
    return StoredResource(
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version_id=row.version_id,
        last_updated=updated,
        content=json.loads(row.content),
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _as_datetime(text: str) -> datetime:
    return datetime.strptime(text, INDEX_FORMAT).replace(tzinfo=UTC)


class SqlFhirStore:
    """Versioned FHIR resources per tenant, with their search index."""

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock
        self.listeners: list[ChangeListener] = []
        """Told of every change in the writer's transaction (:meth:`subscribe`)."""

    def subscribe(self, listener: ChangeListener) -> None:
        """Tell ``listener`` of every change from now on. The composition root subscribes
        the subscription notifier, which reads from this store too, once both exist."""
        self.listeners.append(listener)

    # --- reads ------------------------------------------------------------------------------

    def _row(
        self,
        session: Session,
        tenant: str,
        resource_type: str,
        resource_id: str,
        *,
        lock: bool = False,
    ) -> FhirResource | None:
        statement = select(FhirResource).where(
            FhirResource.tenant == tenant,
            FhirResource.resource_type == resource_type,
            FhirResource.resource_id == resource_id,
        )
        if lock:  # PostgreSQL: writers of one resource queue (SQLite has one writer anyway)
            statement = statement.with_for_update()
        return session.exec(statement).first()

    def get(
        self, session: Session, tenant: str, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        """The current version, or None (also for another tenant's resource)."""
        row = self._row(session, tenant, resource_type, resource_id)
        return _to_stored(row) if row is not None else None

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        """The current version (FHIR R4 http.html#read), or :class:`NotFound`."""
        with self.db.read() as session:
            stored = self.get(session, tenant, resource_type, resource_id)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        return stored

    # --- writes -----------------------------------------------------------------------------

    def put(
        self,
        session: Session,
        tenant: str,
        resource: Resource,
        *,
        workitem_uid: str | None = None,
    ) -> StoredResource | None:
        """Store ``resource`` as the new current version, unless it is the same as the
        stored one apart from ``meta.versionId``/``lastUpdated`` (then None: no new
        version, no listeners called). ``meta.profile``/``tag``/``security`` are kept."""
        resource_type = str(resource.get("resourceType") or "")
        resource_id = str(resource.get("id") or "")
        if not resource_type or not resource_id:
            raise InvalidRequest("A stored resource needs resourceType and id")
        row = self._row(session, tenant, resource_type, resource_id, lock=True)
        previous = _to_stored(row) if row is not None else None
        wanted = _without_version(resource)
        if previous is not None and _without_version(previous.content) == wanted:
            if row is not None and workitem_uid is not None and row.workitem_uid is None:
                row.workitem_uid = workitem_uid
                session.add(row)
            return None
        now = self.clock().astimezone(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        version = previous.version_id + 1 if previous is not None else 1
        meta = {**dict(wanted.get("meta") or {}), "versionId": str(version)}
        meta["lastUpdated"] = instant(now)
        content: Resource = {"resourceType": resource_type, "id": resource_id, "meta": meta}
        content.update((k, v) for k, v in wanted.items() if k not in content)
        text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
        if row is None:
            row = FhirResource(
                tenant=tenant,
                resource_type=resource_type,
                resource_id=resource_id,
                version_id=version,
                last_updated=now,
                workitem_uid=workitem_uid,
                content=text,
            )
        else:
            row.version_id = version
            row.last_updated = now
            row.content = text
            if workitem_uid is not None:
                row.workitem_uid = workitem_uid
        session.add(row)
        session.flush()
        assert row.pk is not None
        session.execute(delete(FhirSearchToken).where(col(FhirSearchToken.resource_pk) == row.pk))
        tokens = [
            {
                "resource_pk": row.pk,
                "tenant": tenant,
                "resource_type": resource_type,
                "param": param,
                "system": system,
                "value": value,
            }
            for param, system, value in index_entries(content)
        ]
        if tokens:  # one multi-row INSERT: the projection runs inside UPS transactions
            session.execute(insert(FhirSearchToken), tokens)
        stored = StoredResource(resource_type, resource_id, version, now, content)
        for listener in list(self.listeners):
            listener.on_change(session, tenant, stored, previous)
        return stored

    def create(
        self,
        session: Session,
        tenant: str,
        resource: Resource,
        *,
        if_none_exist: SearchQuery | None = None,
    ) -> WriteResult:
        """A client's create (http.html#create): the server assigns the id (uuid4 hex).
        With ``if_none_exist`` (http.html#ccreate): one match is returned as it is,
        several are :class:`PreconditionFailed`."""
        if if_none_exist is not None:
            found = self._search(session, tenant, if_none_exist)
            if found.total == 1:
                return WriteResult(stored=found.matches[0], created=False)
            if found.total > 1:
                raise PreconditionFailed(
                    f"If-None-Exist matches {found.total} resources; it must match at most one"
                )
        new = {**resource, "id": uuid.uuid4().hex}
        stored = self.put(session, tenant, new)
        assert stored is not None  # a new id is always a change
        return WriteResult(stored=stored, created=True)

    def update(
        self,
        session: Session,
        tenant: str,
        resource: Resource,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """A client's update of an existing resource (http.html#update; no update-as-create).
        ``if_match`` is the version the client last saw (http.html#concurrency)."""
        resource_type = str(resource.get("resourceType") or "")
        resource_id = str(resource.get("id") or "")
        current = self.get(session, tenant, resource_type, resource_id)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        if if_match is not None and if_match != current.version_id:
            raise PreconditionFailed(
                f"{resource_type}/{resource_id}: version {current.version_id} is current, "
                f"not {if_match}"
            )
        stored = self.put(session, tenant, resource)
        return WriteResult(stored=stored or current, created=False)

    def delete(self, session: Session, tenant: str, resource_type: str, resource_id: str) -> None:
        """Remove the resource and its index rows (http.html#delete)."""
        row = self._row(session, tenant, resource_type, resource_id)
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        session.execute(delete(FhirSearchToken).where(col(FhirSearchToken.resource_pk) == row.pk))
        session.delete(row)
        session.flush()

    # --- search -----------------------------------------------------------------------------

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        """The matches of ``query`` (search.html): total, one page, and ``_include``d
        resources."""
        with self.db.read() as session:
            return self._search(session, tenant, query)

    def matches(
        self,
        session: Session,
        tenant: str,
        query: SearchQuery,
        resource_type: str,
        resource_id: str,
    ) -> bool:
        """Whether the resource satisfies the criteria of ``query`` (the same SQL as
        :meth:`search`, restricted to one resource; used for subscription filters)."""
        if query.resource_type != resource_type:
            return False
        statement = (
            select(FhirResource.pk)
            .where(*self._where(tenant, query), FhirResource.resource_id == resource_id)
            .limit(1)
        )
        return session.exec(statement).first() is not None

    def _search(self, session: Session, tenant: str, query: SearchQuery) -> SearchResult:
        where = self._where(tenant, query)
        total = session.exec(select(func.count()).select_from(FhirResource).where(*where)).one()
        if query.summary_count or query.count == 0:
            return SearchResult(total=int(total))
        statement = (
            select(FhirResource)
            .where(*where)
            .order_by(*self._order(query))
            .offset(query.offset)
            .limit(query.count)
        )
        rows = list(session.exec(statement))
        matches = [_to_stored(row) for row in rows]
        included = self._included(session, tenant, query, rows) if query.include else []
        return SearchResult(total=int(total), matches=matches, included=included)

    def _where(self, tenant: str, query: SearchQuery) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            col(FhirResource.tenant) == tenant,
            col(FhirResource.resource_type) == query.resource_type,
        ]
        clauses.extend(self._criterion(tenant, query.resource_type, c) for c in query.criteria)
        return clauses

    def _criterion(
        self, tenant: str, resource_type: str, criterion: Criterion
    ) -> ColumnElement[bool]:
        if criterion.param == "_id":
            ids = [code for _, code in criterion.values]
            matched = col(FhirResource.resource_id).in_(ids)
            return not_(matched) if criterion.modifier == "not" else matched
        if criterion.param == "_lastUpdated":
            return or_(
                *(
                    _column_date(prefix or "eq", lower, upper)
                    for (prefix, _), (lower, upper) in zip(
                        criterion.values, criterion.bounds, strict=True
                    )
                )
            )
        token = FhirSearchToken
        param = criterion.param
        if criterion.modifier == "identifier":
            param = f"{param}:identifier"
        elif criterion.modifier == "exact":
            param = f"{param}:exact"
        scope = [
            col(token.tenant) == tenant,
            col(token.resource_type) == resource_type,
            col(token.param) == param,
        ]
        if criterion.modifier == "missing":
            present = col(FhirResource.pk).in_(select(token.resource_pk).where(*scope))
            return not_(present) if criterion.values[0][1] == "true" else present
        alternatives = [_value_clause(criterion, i) for i in range(len(criterion.values))]
        matched = col(FhirResource.pk).in_(
            select(token.resource_pk).where(*scope, or_(*alternatives))
        )
        return not_(matched) if criterion.modifier == "not" else matched

    @staticmethod
    def _order(query: SearchQuery) -> list[Any]:
        order: list[Any] = []
        dates = SEARCH_PARAMS.get(query.resource_type, {})
        for key in query.sort:
            descending = key.startswith("-")
            name = key.removeprefix("-")
            if name == "_lastUpdated":
                expression: Any = col(FhirResource.last_updated)
            elif name == "_id":
                expression = col(FhirResource.resource_id)
            elif name in dates:
                expression = (
                    select(func.min(FhirSearchToken.value))
                    .where(
                        col(FhirSearchToken.resource_pk) == FhirResource.pk,
                        col(FhirSearchToken.param) == name,
                    )
                    .scalar_subquery()
                )
            else:
                continue
            order.append(nulls_last(expression.desc() if descending else expression.asc()))
        order.append(col(FhirResource.pk).asc())
        return order

    def _included(
        self, session: Session, tenant: str, query: SearchQuery, rows: Sequence[FhirResource]
    ) -> list[StoredResource]:
        """Resources the page refers to through ``_include`` parameters (search.html#include)."""
        pks = [row.pk for row in rows if row.pk is not None]
        seen = {(row.resource_type, row.resource_id) for row in rows}
        included: list[StoredResource] = []
        for include in query.include:
            parts = include.split(":")
            if len(parts) < 2 or parts[0] != query.resource_type or not pks:
                continue
            values = session.exec(
                select(FhirSearchToken.value).where(
                    col(FhirSearchToken.resource_pk).in_(pks),
                    FhirSearchToken.param == parts[1],
                )
            ).all()
            wanted: dict[str, set[str]] = {}
            for value in values:
                kind, _, resource_id = value.partition("/")
                if len(parts) == 3 and kind != parts[2]:
                    continue
                if (kind, resource_id) not in seen:
                    wanted.setdefault(kind, set()).add(resource_id)
            for kind, ids in sorted(wanted.items()):
                found = session.exec(
                    select(FhirResource)
                    .where(
                        FhirResource.tenant == tenant,
                        FhirResource.resource_type == kind,
                        col(FhirResource.resource_id).in_(sorted(ids)),
                    )
                    .order_by(col(FhirResource.pk))
                )
                for row in found:
                    seen.add((row.resource_type, row.resource_id))
                    included.append(_to_stored(row))
        return included


def _value_clause(criterion: Criterion, index: int) -> ColumnElement[bool]:
    """One ORed value of a criterion against ``fhir_search_token`` (search.html)."""
    system, value = criterion.values[index]
    column = col(FhirSearchToken.value)
    if criterion.kind == "token" or criterion.modifier == "identifier":
        clauses = []
        if system is not None:
            clauses.append(col(FhirSearchToken.system) == system)
        if value or system is None:
            clauses.append(column == value)
        return and_(*clauses) if clauses else true()
    if criterion.kind == "reference":
        if "/" in value:
            return column == value
        return column.like("%/" + _like_escape(value), escape="\\")
    if criterion.kind == "date":
        lower, upper = criterion.bounds[index]
        return _text_date(system or "eq", column, lower, upper)
    if criterion.kind == "string":
        if criterion.modifier == "exact":
            return column == value
        if criterion.modifier == "contains":
            return column.like("%" + _like_escape(value) + "%", escape="\\")
        return column.like(_like_escape(value) + "%", escape="\\")
    return column == value  # uri


def _text_date(prefix: str, column: Any, lower: str, upper: str) -> ColumnElement[bool]:
    """A stored instant (UTC seconds as text) against a value's ``[lower, upper]`` range
    (search.html#prefix)."""
    if prefix in {"gt", "sa"}:
        return column > upper  # type: ignore[no-any-return]
    if prefix == "ge":
        return column >= lower  # type: ignore[no-any-return]
    if prefix in {"lt", "eb"}:
        return column < lower  # type: ignore[no-any-return]
    if prefix == "le":
        return column <= upper  # type: ignore[no-any-return]
    inside = and_(column >= lower, column <= upper)
    return not_(inside) if prefix == "ne" else inside


def _column_date(
    prefix: str,
    lower_text: str,
    upper_text: str,
    column: Any = None,
) -> ColumnElement[bool]:
    """``_lastUpdated`` against the row's ``last_updated`` (or another timestamp
    ``column``; sub-second precision: the range's upper end is exclusive one second after
    ``upper``)."""
    target = col(FhirResource.last_updated)
    if column is not None:
        target = column
    lower = _as_datetime(lower_text)
    after = _as_datetime(upper_text) + timedelta(seconds=1)
    if prefix in {"gt", "sa"}:
        return target >= after
    if prefix == "ge":
        return target >= lower
    if prefix in {"lt", "eb"}:
        return target < lower
    if prefix == "le":
        return target < after
    inside = and_(target >= lower, target < after)
    return not_(inside) if prefix == "ne" else inside


column_date = _column_date

__all__ = ["ChangeListener", "Clock", "SqlFhirStore", "column_date", "instant"]
