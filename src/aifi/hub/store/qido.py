"""QIDO-RS queries (PS3.18 §10.6) over the SQL index: the same results on SQLite and PostgreSQL.

How a :class:`~aifi.dicomweb.qido_query.QidoQuery` runs:

1. The path UIDs (``/studies/{study}/series/{series}/…``) are resolved to row keys.
2. Every match key the index can answer becomes a SQL condition (table ``_COLUMNS``): UIDs
   and UID lists, PatientID, AccessionNumber, StudyID, StudyDescription, Modality, names,
   StudyDate and StudyTime (single, range, and combined through ``study_datetime``),
   PPS start date, ModalitiesInStudy, SOPClassesInStudy, the counters, the instance
   columns. Wildcards become ``GLOB`` on SQLite (case-sensitive, and it uses the index
   for a literal prefix) and ``LIKE … ESCAPE '\\'`` on PostgreSQL, with ``%``/``_``/``[``
   escaped so they match themselves.
3. Person names match case-insensitively through the ``*_ci`` columns; with
   ``fuzzymatching=true`` through the ``*_fuzzy`` columns (see :mod:`aifi.dicomweb.matching`
   for the semantics).
4. Keys the index cannot answer are matched in Python against the stored DICOM JSON
   (:func:`~aifi.dicomweb.matching.match_dataset`) — correct for any attribute the hub
   keeps at that level, but it reads every candidate row, so a search with only such keys
   over more than :data:`MAX_PYTHON_CANDIDATES` rows is refused with 413 (PS3.18 §10.6.3:
   "narrower query").
5. Results come in a stable order (row key = arrival order), ``offset``/``limit`` applied,
   and the number of further matches counted only when the page is full (PS3.18
   §8.3.4.4.1). Each page is built with one query per table, never one per result.

Returned attributes: :mod:`aifi.hub.store.qido_attributes`. The Retrieve URL is added by
the router, which knows the service URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from aifi.dicomweb.matching import DateTimeMatcher, Matcher, MatchKind, match_dataset
from aifi.dicomweb.qido_query import QidoQuery, QueryResult
from aifi.dicomweb.query_attributes import (
    ANY_LEVEL,
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SERIES_INSTANCE_UID,
    SOP_CLASSES_IN_STUDY,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    QueryLevel,
)
from aifi.dicomweb.vr_values import fuzzy_patterns
from aifi.errors import PayloadTooLarge
from aifi.hub.persistence.database import Database
from aifi.hub.store.qido_attributes import ResultBuilder, level_record, record_source
from aifi.hub.store.statements import INSTANCE, SERIES, STUDY

MAX_PYTHON_CANDIDATES = 50_000
"""Most rows a search may read to match keys the index cannot answer."""

_TABLE = {QueryLevel.STUDY: STUDY, QueryLevel.SERIES: SERIES, QueryLevel.IMAGE: INSTANCE}

# -- match keys the index answers ---------------------------------------------------------

_TEXT, _UID, _INT, _DATE, _TIME, _MEMBERS, _NAME = (
    "text",
    "uid",
    "int",
    "date",
    "time",
    "members",
    "name",
)


@dataclass(frozen=True, slots=True)
class _Column:
    table: sa.Table
    column: str
    kind: str
    extra: str = ""
    """For names: the fuzzy column."""


_COLUMNS: dict[str, _Column] = {
    STUDY_INSTANCE_UID: _Column(STUDY, "study_instance_uid", _UID),
    "00100020": _Column(STUDY, "patient_id", _TEXT),
    "00080050": _Column(STUDY, "accession_number", _TEXT),
    "00200010": _Column(STUDY, "study_id", _TEXT),
    "00081030": _Column(STUDY, "study_description", _TEXT),
    "00080020": _Column(STUDY, "study_date", _DATE),
    "00080030": _Column(STUDY, "study_datetime", _TIME),
    "00100010": _Column(STUDY, "patient_name_ci", _NAME, "patient_name_fuzzy"),
    "00080090": _Column(
        STUDY, "referring_physician_name_ci", _NAME, "referring_physician_name_fuzzy"
    ),
    MODALITIES_IN_STUDY: _Column(STUDY, "modalities_in_study", _MEMBERS),
    SOP_CLASSES_IN_STUDY: _Column(STUDY, "sop_classes_in_study", _MEMBERS),
    NUMBER_OF_STUDY_RELATED_SERIES: _Column(STUDY, "number_of_series", _INT),
    NUMBER_OF_STUDY_RELATED_INSTANCES: _Column(STUDY, "number_of_instances", _INT),
    SERIES_INSTANCE_UID: _Column(SERIES, "series_instance_uid", _UID),
    "00080060": _Column(SERIES, "modality", _TEXT),
    "00200011": _Column(SERIES, "series_number", _INT),
    "00400244": _Column(SERIES, "pps_start_date", _DATE),
    NUMBER_OF_SERIES_RELATED_INSTANCES: _Column(SERIES, "number_of_instances", _INT),
    SOP_INSTANCE_UID: _Column(INSTANCE, "sop_instance_uid", _UID),
    "00080016": _Column(INSTANCE, "sop_class_uid", _UID),
    "00200013": _Column(INSTANCE, "instance_number", _INT),
    "00280008": _Column(INSTANCE, "number_of_frames", _INT),
    "00280010": _Column(INSTANCE, "rows", _INT),
    "00280011": _Column(INSTANCE, "columns", _INT),
}


class _Dialect:
    """Wildcard matching that is case-sensitive and index-friendly on both databases."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite

    def wildcard(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """``*``/``?`` are the DICOM wildcards; every other character matches itself."""
        if self.sqlite:
            return column.op("GLOB")(pattern.replace("[", "[[]"))
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _sql_condition(m: Matcher, dialect: _Dialect) -> ColumnElement[bool] | None:
    """The SQL form of a match key, or None when it must be matched in Python."""
    if len(m.path.tags) != 1 or m.kind is MatchKind.UNIVERSAL:
        return None
    spec = _COLUMNS.get(m.path.tag)
    if spec is None:
        return None
    col = spec.table.c[spec.column]
    if spec.kind == _UID:
        if m.kind is MatchKind.LIST:
            return col.in_(m.values)
        return col == m.values[0]
    if spec.kind == _TEXT:
        if m.kind is MatchKind.LIST:
            return col.in_(m.values)
        if m.kind is MatchKind.WILDCARD:
            return dialect.wildcard(col, m.values[0])
        return col == m.values[0]
    if spec.kind == _INT:
        number = float(m.values[0])
        if not number.is_integer():
            return sa.false()
        return col == int(number)
    if spec.kind == _DATE:
        conditions = []
        if m.low is not None:
            conditions.append(col >= m.low)
        if m.high is not None:
            conditions.append(col <= m.high)
        return sa.and_(*conditions)
    if spec.kind == _TIME:
        # The normalised time of day follows the 8-digit date; no time, no match.
        clock = sa.func.substr(col, 9)
        conditions = [sa.func.length(col) > 8]
        if m.low is not None:
            conditions.append(clock >= m.low)
        if m.high is not None:
            conditions.append(clock <= m.high)
        return sa.and_(*conditions)
    if spec.kind == _MEMBERS:
        if m.kind is MatchKind.WILDCARD:
            return None
        members = m.values if m.kind is MatchKind.LIST else (m.values[0],)
        return sa.or_(*(dialect.wildcard(col, f"*|{v}|*") for v in members))
    if spec.kind == _NAME:
        if m.fuzzy:
            fuzzy = spec.table.c[spec.extra]
            return sa.or_(*(dialect.wildcard(fuzzy, p) for p in fuzzy_patterns(m.value)))
        wanted = m.values[0]
        if m.kind is MatchKind.WILDCARD:
            return sa.or_(dialect.wildcard(col, wanted), dialect.wildcard(col, wanted + "=*"))
        exact = col == wanted
        if "=" in wanted:
            return exact
        # Without "=", the value may also be the alphabetic group of a multi-group name.
        return sa.or_(exact, dialect.wildcard(col, wanted + "=*"))
    return None


def _combined_condition(c: DateTimeMatcher) -> ColumnElement[bool] | None:
    """StudyDate + StudyTime as one range over ``study_datetime`` (PS3.4 C.2.2.2.5.1).
    A study without a time of day is matched on its date alone."""
    if c.date.tag != "00080020":
        return None
    col = STUDY.c.study_datetime
    conditions: list[ColumnElement[bool]] = []
    if c.low is not None:
        # The date-only prefix bounds the index range; the rest is checked per row.
        conditions.append(col >= c.low[:8])
        conditions.append(sa.or_(col >= c.low, sa.func.length(col) == 8))
    if c.high is not None:
        conditions.append(col <= c.high)
    return sa.and_(*conditions)


# -- running a query ----------------------------------------------------------------------


def _from_clause(level: QueryLevel, tables: set[sa.Table]) -> sa.FromClause:
    if level is QueryLevel.STUDY:
        return STUDY
    if level is QueryLevel.SERIES:
        if STUDY in tables:
            return SERIES.join(STUDY, STUDY.c.pk == SERIES.c.study_pk)
        return SERIES
    joined: sa.FromClause = INSTANCE
    if SERIES in tables:
        joined = joined.join(SERIES, SERIES.c.pk == INSTANCE.c.series_pk)
    if STUDY in tables:
        joined = joined.join(STUDY, STUDY.c.pk == INSTANCE.c.study_pk)
    return joined


def _record_level(m: Matcher, query_level: QueryLevel) -> QueryLevel:
    return query_level if m.path.tag in ANY_LEVEL else m.path.level


def run_query(db: Database, tenant: str, query: QidoQuery) -> QueryResult:
    """Run a validated QIDO-RS query for one tenant (see the module docstring)."""
    dialect = _Dialect(db.is_sqlite)
    base = _TABLE[query.level]
    with db.reader.connect() as conn:
        path: list[ColumnElement[bool]] = []
        if query.study_instance_uid is not None:
            study_pk = conn.execute(
                sa.select(STUDY.c.pk).where(
                    STUDY.c.tenant == tenant,
                    STUDY.c.study_instance_uid == query.study_instance_uid,
                )
            ).scalar()
            if study_pk is None:
                return QueryResult()
            path.append(base.c.study_pk == study_pk)
        if query.series_instance_uid is not None:
            series_pk = conn.execute(
                sa.select(SERIES.c.pk).where(
                    SERIES.c.tenant == tenant,
                    SERIES.c.series_instance_uid == query.series_instance_uid,
                    *([SERIES.c.study_pk == study_pk] if query.study_instance_uid else []),
                )
            ).scalar()
            if series_pk is None:
                return QueryResult()
            path.append(base.c.series_pk == series_pk)

        conditions: dict[sa.Table, list[ColumnElement[bool]]] = {}
        unique_keys: set[sa.Table] = set()
        python_matchers: list[Matcher] = []
        for m in query.matchers:
            condition = _sql_condition(m, dialect)
            if condition is not None:
                spec = _COLUMNS[m.path.tag]
                conditions.setdefault(spec.table, []).append(condition)
                if spec.kind == _UID:
                    unique_keys.add(spec.table)
            elif m.kind is not MatchKind.UNIVERSAL:
                python_matchers.append(m)
        python_combined: list[DateTimeMatcher] = []
        for c in query.combined:
            condition = _combined_condition(c)
            if condition is None:
                python_combined.append(c)
            else:
                conditions.setdefault(STUDY, []).append(condition)
        where = _where(tenant, base, path, conditions, base in unique_keys)

        if python_matchers or python_combined:
            page, remaining = _filter_in_python(
                conn, query, base, where, python_matchers, python_combined
            )
        else:
            page, remaining = _page_in_sql(conn, tenant, query, base, where)
        matches = ResultBuilder(conn, query).build(page)
    return QueryResult(matches=matches, remaining=remaining)


def _where(
    tenant: str,
    base: sa.Table,
    path: list[ColumnElement[bool]],
    conditions: dict[sa.Table, list[ColumnElement[bool]]],
    unique_key: bool,
) -> list[ColumnElement[bool]]:
    """The WHERE clause over the base table alone.

    Keys of a higher level become ``study_pk IN (SELECT pk FROM study WHERE …)`` (and
    likewise for series), so that the planner can start from the few matching studies and
    reach their series or instances through ``ix_*_study``/``ix_*_series`` instead of
    joining every row of the tenant. The base table's own tenant test is written as
    ``tenant || '' = ?`` — the same filter, but not an index the planner could prefer to the
    primary-key order or to those subqueries — unless the base table has keys of its own
    and no higher-level ones, or a UID key (SQLite plans without statistics; the plans were
    checked with ``EXPLAIN QUERY PLAN`` at 100,000 instances).
    """
    own = conditions.get(base, [])
    higher = [t for t in (STUDY, SERIES) if t is not base and t in conditions]
    indexed_tenant = unique_key or (own and not higher)
    tenant_test = base.c.tenant == tenant if indexed_tenant else base.c.tenant.concat("") == tenant
    where = [tenant_test, *path, *own]
    for table in higher:
        keys = sa.select(table.c.pk).where(table.c.tenant == tenant, *conditions[table])
        link = base.c.study_pk if table is STUDY else base.c.series_pk
        where.append(link.in_(keys))
    return where


def _page_in_sql(
    conn: Connection,
    tenant: str,
    query: QidoQuery,
    base: sa.Table,
    where: list[ColumnElement[bool]],
) -> tuple[list[int], int]:
    stmt = (
        sa.select(base.c.pk)
        .where(*where)
        .order_by(base.c.pk)
        .limit(query.limit)
        .offset(query.offset)
    )
    page = list(conn.execute(stmt).scalars())
    if len(page) < query.limit and (page or query.offset == 0):
        return page, 0  # the last page: nothing further to count
    if len(where) == 1:
        # Only the tenant: count over its index (the page query avoided it for pk order).
        count = sa.select(sa.func.count()).select_from(base).where(base.c.tenant == tenant)
    else:
        count = sa.select(sa.func.count()).select_from(base).where(*where)
    total = conn.execute(count).scalar()
    return page, max(0, int(total or 0) - query.offset - len(page))


def _filter_in_python(
    conn: Connection,
    query: QidoQuery,
    base: sa.Table,
    where: list[ColumnElement[bool]],
    matchers: list[Matcher],
    combined: list[DateTimeMatcher],
) -> tuple[list[int], int]:
    """Match keys the index cannot answer, against each candidate's stored JSON."""
    by_level: dict[QueryLevel, list[Matcher]] = {}
    for m in matchers:
        by_level.setdefault(_record_level(m, query.level), []).append(m)
    combined_by_level: dict[QueryLevel, list[DateTimeMatcher]] = {}
    for c in combined:
        combined_by_level.setdefault(c.date.level, []).append(c)
    levels = [lv for lv in QueryLevel if lv in by_level or lv in combined_by_level]

    columns: list[Any] = [base.c.pk]
    record_columns: dict[QueryLevel, list[Any]] = {}
    tables = {base}
    for level in levels:
        table = _TABLE[level]
        tables.add(table)
        record_columns[level] = [table.c.pk, *record_source(table)]
        columns += record_columns[level]
    source = _from_clause(query.level, tables)
    count = conn.execute(sa.select(sa.func.count()).select_from(base).where(*where)).scalar()
    if int(count or 0) > MAX_PYTHON_CANDIDATES:
        names = ", ".join(sorted({m.path.name for m in matchers}))
        raise PayloadTooLarge(
            f"The search would examine {count} records to match {names}; narrow it with an "
            "indexed key (e.g. PatientID, StudyDate, StudyInstanceUID)"
        )
    stmt = sa.select(*columns).select_from(source).where(*where).order_by(base.c.pk)
    cache: dict[tuple[QueryLevel, int], bool] = {}
    matched: list[int] = []
    for row in conn.execute(stmt):
        offset = 1
        ok = True
        for level in levels:  # the order their columns were selected in
            width = len(record_columns[level])
            values = row[offset : offset + width]
            offset += width
            key = (level, int(values[0]))
            if key not in cache:
                record = level_record(level, values[1:])
                cache[key] = match_dataset(
                    by_level.get(level, ()), record, combined_by_level.get(level, ())
                )
            if not cache[key]:
                ok = False
                break
        if ok:
            matched.append(int(row[0]))
    page = matched[query.offset : query.offset + query.limit]
    return page, max(0, len(matched) - query.offset - len(page))
