"""The store path's SQL, compiled once per dialect and run with ``exec_driver_sql``.

Building a Core statement, computing its cache key and looking it up costs more (~2 ms
per transaction) than SQLite takes to run it, so :class:`Statements` compiles the
statements of a ``put`` (and of the instance look-ups WADO-RS asks for every request) once
and binds values through the column types' bind processors: rows are stored as the ORM
stores them. The index tables as Core :class:`~sqlalchemy.Table` objects are here too, for
the store's and the QIDO-RS modules' statements.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ClauseElement, Dialect, Table, bindparam, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from aifi.hub.persistence.tables import Instance, Series, Study

log = logging.getLogger("aifi.hub.store.repository")

STUDY: Table = Study.__table__  # type: ignore[attr-defined]
SERIES: Table = Series.__table__  # type: ignore[attr-defined]
INSTANCE: Table = Instance.__table__  # type: ignore[attr-defined]
INSTANCE_ORDER = (
    SERIES.c.series_number.is_(None),
    SERIES.c.series_number,
    SERIES.c.pk,
    INSTANCE.c.instance_number.is_(None),
    INSTANCE.c.instance_number,
    INSTANCE.c.pk,
)
"""The order instances are listed in (WADO-RS, metadata): by series, then instance number."""


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this type before the driver gets it (e.g. the
    text form of a datetime on SQLite)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


class Compiled:
    """A Core statement compiled once for a dialect, run with ``exec_driver_sql``."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters (positional or named) from values by bind name."""
        return values if self.order is None else tuple(values[name] for name in self.order)


class Insert(Compiled):
    """An INSERT of all columns but the primary key, with the columns' bind processors."""

    def __init__(self, table: Table, dialect: Dialect, returning: bool) -> None:
        self.table = table.name
        self.columns = [c.name for c in table.c if not c.primary_key]
        self.processors = [_bind_processor(table.c[name].type, dialect) for name in self.columns]
        self.lengths = [getattr(table.c[name].type, "length", None) for name in self.columns]
        statement = insert(table).values({name: bindparam(name) for name in self.columns})
        # inline(): no implicit RETURNING of the primary key (PostgreSQL) when not asked
        super().__init__(
            statement.returning(table.c.pk) if returning else statement.inline(), dialect
        )

    def row(self, row: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The row's parameters, bound as SQLAlchemy would bind them. Text is clipped to
        its column's length: PostgreSQL refuses longer values, and one odd header value
        must not fail a whole batch (the stored file keeps the full value)."""
        values = {}
        for name, process, length in zip(self.columns, self.processors, self.lengths, strict=True):
            value = row[name]
            if length is not None and isinstance(value, str) and len(value) > length:
                log.info("clipping %s.%s to %d characters", self.table, name, length)
                value = value[:length]
            values[name] = value if process is None or value is None else process(value)
        return self.params(values)


class Statements:
    """The store path's statements for one dialect (see the module docstring). Study and
    series rows are read ``FOR UPDATE`` (PostgreSQL locks them; SQLite renders nothing, its
    write transaction being exclusive already)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.study = Insert(STUDY, dialect, returning=True)
        self.series = Insert(SERIES, dialect, returning=True)
        self.instance = Insert(INSTANCE, dialect, returning=False)
        self.update_series = Compiled(
            update(SERIES)
            .where(SERIES.c.pk == bindparam("b_pk"))
            .values(number_of_instances=SERIES.c.number_of_instances + bindparam("b_added")),
            dialect,
        )
        self.update_study = Compiled(
            update(STUDY)
            .where(STUDY.c.pk == bindparam("b_pk"))
            .values(
                number_of_instances=STUDY.c.number_of_instances + bindparam("b_instances"),
                number_of_series=STUDY.c.number_of_series + bindparam("b_series"),
                modalities_in_study=bindparam("b_modalities"),
                sop_classes_in_study=bindparam("b_sop_classes"),
                updated_at=bindparam("b_updated_at", type_=STUDY.c.updated_at.type),
            ),
            dialect,
        )
        self._updated_at = _bind_processor(STUDY.c.updated_at.type, dialect)

    def updated_at(self, now: datetime) -> Any:
        return now if self._updated_at is None else self._updated_at(now)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one instance per store, kept for its life
    def select_instances(self, count: int) -> Compiled:
        columns = (INSTANCE.c.sop_instance_uid, INSTANCE.c.sha256)
        return self._select_in(INSTANCE, columns, columns[0], count)

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def select_studies(self, count: int) -> Compiled:
        columns = (
            STUDY.c.pk,
            STUDY.c.study_instance_uid,
            STUDY.c.modalities_in_study,
            STUDY.c.sop_classes_in_study,
        )
        return self._select_in(STUDY, columns, columns[1], count, lock=True)

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def select_series(self, count: int) -> Compiled:
        columns = (SERIES.c.pk, SERIES.c.series_instance_uid)
        return self._select_in(SERIES, columns, columns[1], count, lock=True)

    def _select_in(
        self, table: Table, columns: tuple[Any, ...], uid: Any, count: int, lock: bool = False
    ) -> Compiled:
        """``columns`` of the tenant's rows whose ``uid`` is one of ``count`` values (bind
        names ``b_tenant``, ``b_0``, ``b_1``, …: see :meth:`uids`)."""
        statement = sa_select(*columns).where(
            table.c.tenant == bindparam("b_tenant"),
            uid.in_([bindparam(f"b_{i}") for i in range(count)]),
        )
        return Compiled(statement.with_for_update() if lock else statement, self.dialect)

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def instance_rows(self, columns: tuple[Any, ...], series: bool, sop: bool) -> Compiled:
        """``columns`` of the instances of a study (or of one of its series, or one
        instance), in series then instance order (bind names ``b_tenant``, ``b_study``,
        ``b_series``, ``b_sop``)."""
        statement = (
            sa_select(*columns)
            .join(SERIES, SERIES.c.pk == INSTANCE.c.series_pk)
            .join(STUDY, STUDY.c.pk == INSTANCE.c.study_pk)
            .where(
                INSTANCE.c.tenant == bindparam("b_tenant"),
                STUDY.c.study_instance_uid == bindparam("b_study"),
            )
        )
        if series:
            statement = statement.where(SERIES.c.series_instance_uid == bindparam("b_series"))
        if sop:
            statement = statement.where(INSTANCE.c.sop_instance_uid == bindparam("b_sop"))
        return Compiled(statement.order_by(*INSTANCE_ORDER), self.dialect)

    @staticmethod
    def uids(tenant: str, uids: Sequence[str]) -> dict[str, Any]:
        return {"b_tenant": tenant, **{f"b_{i}": uid for i, uid in enumerate(uids)}}
