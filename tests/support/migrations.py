"""The gateway's Alembic migrations against its models (tests only): a migrated SQLite
database, what differs between it and :class:`GatewayModel`'s tables, and a downgrade that
answers the tables left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.persistence.tables import GatewayModel
from aifi.hub.persistence.database import Database


@contextmanager
def migrated_gateway_database(folder: Path) -> Iterator[Database]:
    """The gateway's database in ``folder``, at the newest revision; disposed afterwards."""
    db = Database(f"sqlite:///{folder / 'gateway.db'}", migrations=GATEWAY_MIGRATIONS)
    db.migrate()
    try:
        yield db
    finally:
        db.dispose()


def schema_differences(db: Database) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the gateway's models."""
    with db.writer.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), GatewayModel.metadata))


def downgrade(db: Database, revision: str) -> set[str]:
    """Downgrade the gateway's database to ``revision``; the tables left."""
    config = Config()
    config.set_main_option("script_location", str(GATEWAY_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url)
    with db.writer.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
    return set(inspect(db.writer).get_table_names())
