"""Database engines and transactions.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so that a commit
that was acknowledged survives a crash or power loss; write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing on upgrade.
PostgreSQL is used as it is (row locks via ``SELECT … FOR UPDATE``).
The schema is created and upgraded by Alembic (``migrations/``), never by ``create_all``.

Write sessions record which ORM objects they add or change (``session.info["changed"]``,
filled after each flush) and run the database's ``before_commit`` hooks inside the
transaction, and its ``after_commit`` hooks once it committed: the FHIR projection
(:mod:`aifi.hub.fhir_projection`) notes there what changed, in the same commit, and is
woken to bring the FHIR resources in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"

CommitHook = Callable[[Session], None]


@event.listens_for(Session, "after_flush")
def _record_changes(session: Session, _context: Any) -> None:
    changed = session.info.get("changed")
    if changed is not None:
        changed.extend(session.new)
        changed.extend(session.dirty)


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
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
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A reader and a writer engine over one database URL."""

    def __init__(self, url: str, *, migrations: Path = MIGRATIONS) -> None:
        self.url = url
        self.migrations = migrations
        """The Alembic script folder of this database's schema (the hub's, or the
        gateway's own: :mod:`aifi.gateway.migrations`)."""
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.reader = _sqlite_engine(url, immediate=False)
            self.writer = _sqlite_engine(url, immediate=True)
        else:
            self.reader = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.writer = self.reader
        self.before_commit: list[CommitHook] = []
        """Called with each write session before it commits (see the module docstring)."""
        self.after_commit: list[CommitHook] = []
        """Called with each write session after it committed."""
        self.before_dispose: list[Callable[[], None]] = []
        """Called before the engines close (e.g. the audit writer writes what it holds)."""

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
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
        for hook in self.before_dispose:
            hook()
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
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
