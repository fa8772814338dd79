"""The gateway's index of received instances (``gw_instance``, ``gw_study``) as the
ingest (:mod:`aifi.gateway.ingest.pipeline`) writes it: the SQLite database with the ingest's
durability settings, the few statements of the C-STORE path compiled once, and one write
transaction driven by hand on the SQLite connection.

Why by hand: per CT image the C-STORE path runs three statements in one transaction, and
SQLAlchemy's begin, execution contexts and commit cost as much as SQLite's own work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Table, bindparam, event, insert, select, update
from sqlalchemy.sql.compiler import SQLCompiler

from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.persistence.tables import ReceivedInstance, StudyProgress
from aifi.hub.persistence.database import Database, begin_polling

INSTANCE: Table = ReceivedInstance.__table__  # type: ignore[attr-defined]
STUDY: Table = StudyProgress.__table__  # type: ignore[attr-defined]


def ingest_database(url: str) -> Database:
    """The gateway database as the ingest writes it: SQLite WAL with
    ``synchronous=NORMAL`` on this connection pool (see :mod:`aifi.gateway.ingest.pipeline`: the
    files are fsync'd before the acknowledgement, and lost rows are recovered from them); the write
    lock, which the workers' process takes for its own short commits, is waited for by
    short looks (:func:`aifi.hub.persistence.database.begin_polling`), not SQLite's 1, 2, 5 ms
    sleeps."""
    db = Database(url, migrations=GATEWAY_MIGRATIONS, poll_write_lock=True)
    if not db.is_sqlite:
        raise ValueError(f"the gateway's index is an SQLite database, not {url}")

    @event.listens_for(db.writer, "connect")
    def _normal(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return db


class Statement:
    """A Core statement compiled once for the database's dialect and run on the DBAPI
    connection (:func:`write_transaction`): building, caching and executing a Core statement
    through SQLAlchemy costs more than SQLite takes to run it (the C-STORE path runs three
    per instance). Datetimes go through the column type's bind processor, so rows are
    stored as the ORM stores them."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None
        processor = DateTime().dialect_impl(dialect).bind_processor(dialect)
        self._datetime = processor

    def run(self, dbapi: sqlite3.Connection, values: dict[str, Any]) -> sqlite3.Cursor:
        if self._datetime is not None:
            convert = self._datetime
            values = {k: convert(v) if isinstance(v, datetime) else v for k, v in values.items()}
        params = values if self.order is None else tuple(values[name] for name in self.order)
        return dbapi.execute(self.sql, params)


class IngestStatements:
    """The statements of the C-STORE path (:class:`aifi.gateway.ingest.pipeline.Ingest`)."""

    def __init__(self, dialect: Dialect) -> None:
        self.find = Statement(
            select(INSTANCE.c.sha256).where(INSTANCE.c.sop_instance_uid == bindparam("sop")),
            dialect,
        )
        columns = (
            "sop_instance_uid",
            "sop_class_uid",
            "study_instance_uid",
            "series_instance_uid",
            "transfer_syntax_uid",
            "source",
            "association",
            "file",
            "size",
            "sha256",
            "state",
            "attempts",
            "next_attempt_at",
            "received_at",
        )
        self.insert_instance = Statement(
            insert(INSTANCE).values({c: bindparam(c) for c in columns}).inline(), dialect
        )
        self.touch_study = Statement(
            update(STUDY)
            .where(STUDY.c.study_instance_uid == bindparam("study"))
            .values(last_received_at=bindparam("now"), completion=bindparam("completion")),
            dialect,
        )
        self.insert_study = Statement(
            insert(STUDY)
            .values(
                study_instance_uid=bindparam("study"),
                first_received_at=bindparam("now"),
                last_received_at=bindparam("now"),
                completion=bindparam("completion"),
                attempts=bindparam("attempts"),
                next_attempt_at=bindparam("now"),
            )
            .inline(),
            dialect,
        )


@contextmanager
def write_transaction(db: Database) -> Iterator[sqlite3.Connection]:
    """One write transaction on a pooled SQLite connection of ``db``'s writer, driven by
    hand: ``BEGIN IMMEDIATE`` (waiting for the write lock by short looks,
    :func:`~aifi.hub.persistence.database.begin_polling`), then ``COMMIT``, or ``ROLLBACK`` on any
    error."""
    proxy = db.writer.raw_connection()
    try:
        dbapi = proxy.driver_connection
        assert isinstance(dbapi, sqlite3.Connection)
        begin_polling(dbapi)
        try:
            yield dbapi
            dbapi.execute("COMMIT")
        except BaseException:
            if dbapi.in_transaction:
                dbapi.execute("ROLLBACK")
            raise
    finally:
        proxy.close()
