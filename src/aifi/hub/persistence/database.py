"""Database engines and transactions.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so that a commit
that was acknowledged survives a crash or power loss; write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing on upgrade.
PostgreSQL is used as it is (row locks via ``SELECT … FOR UPDATE``).
The schema is created and upgraded by Alembic (``migrations/``), never by ``create_all``.

Write sessions record which ORM objects they add or change (``session.info["changed"]``,
filled after each flush) and run the database's ``before_commit`` hooks inside the
transaction, and its ``after_commit`` hooks once it committed: the FHIR projection
(:mod:`aifi.hub.fhir.projection`) notes there what changed, in the same commit, and is
woken to bring the FHIR resources in step.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"

CommitHook = Callable[[Session], None]
EngineWatcher = Callable[[Engine], None]
"""Given each engine once, when it is made (e.g. the metrics' query timer, issue 19)."""


@event.listens_for(Session, "after_flush")
def _record_changes(session: Session, _context: Any) -> None:
    changed = session.info.get("changed")
    if changed is not None:
        changed.extend(session.new)
        changed.extend(session.dirty)


LOCK_POLL_FIRST_SECONDS = 0.0001
LOCK_POLL_LONGEST_SECONDS = 0.002
LOCK_WAIT_SECONDS = 30.0


def begin_polling(dbapi_connection: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock by trying again after 0.1 ms,
    doubled up to 2 ms (for ``LOCK_WAIT_SECONDS`` at most). SQLite's own busy handler
    sleeps 1, 2, 5, 10 … ms between its looks: a writer queued behind another's commit of
    a millisecond waited three."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = LOCK_POLL_FIRST_SECONDS
    while True:
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, LOCK_POLL_LONGEST_SECONDS)


def _sqlite_engine(url: str, *, immediate: bool, poll_lock: bool = False) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={0 if poll_lock else 30000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if poll_lock:
            begin_polling(conn.connection.driver_connection)
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A reader and a writer engine over one database URL."""

    def __init__(
        self,
        url: str,
        *,
        migrations: Path = MIGRATIONS,
        poll_write_lock: bool = False,
        before_commit: Sequence[CommitHook] = (),
        after_commit: Sequence[CommitHook] = (),
        engine_watchers: Sequence[EngineWatcher] = (),
    ) -> None:
        self.url = url
        self.migrations = migrations
        """The Alembic script folder of this database's schema (the hub's, or the
        gateway's own: :mod:`aifi.gateway.persistence.migrations`)."""
        # poll_write_lock (SQLite): the writer waits for the write lock by short looks of
        # its own (begin_polling), for a latency-bound writer such as the gateway's
        # C-STORE path sharing the database with another process.
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.reader = _sqlite_engine(url, immediate=False)
            self.writer = _sqlite_engine(url, immediate=True, poll_lock=poll_write_lock)
        else:
            self.reader = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.writer = self.reader
        for watch in engine_watchers:
            for engine in {id(e): e for e in (self.reader, self.writer)}.values():
                watch(engine)
        self.before_commit: tuple[CommitHook, ...] = tuple(before_commit)
        """Called with each write session before it commits (see the module docstring)."""
        self.after_commit: tuple[CommitHook, ...] = tuple(after_commit)
        """Called with each write session after it committed."""

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        # Alembic is imported here: a process that only uses a migrated database (the
        # gateway's workers) does not carry it.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.migrations))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.writer.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.reader) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with Session(self.writer, expire_on_commit=False) as session, session.begin():
            session.info["changed"] = []
            yield session
            for hook in self.before_commit:
                hook(session)
        for hook in self.after_commit:
            hook(session)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction on a Core connection, without an ORM session (less work per
        transaction on the STOW-RS path): committed on success, rolled back on error."""
        with self.writer.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()


def run_migrations(context: Any, target_metadata: MetaData) -> None:
    """The body of an Alembic ``env.py`` (the hub's and the gateway's): migrate on the
    connection :meth:`Database.migrate` hands over, else on ``sqlalchemy.url`` (Alembic
    from the command line). ``context`` is ``alembic.context``."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()  # its pooled connection is closed, not left to the garbage collector
