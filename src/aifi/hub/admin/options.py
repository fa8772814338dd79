"""What the operator commands share: the options that name the hub's database, and opening
it as ``aifi serve`` would (migrated to the newest schema)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aifi.hub.persistence.database import Database
    from aifi.hub.settings import Settings

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The hub's data folder (env AIFI_DATA_DIR)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="The hub's database (env AIFI_DATABASE_URL)."),
]


def open_database(data_dir: Path | None, database_url: str | None) -> tuple[Database, Settings]:
    """The hub's settings from the options and the environment, and its database, migrated.
    (Imported here, not at the top: ``aifi --help`` stays quick.)"""
    from aifi.hub.persistence.database import Database
    from aifi.hub.serve import build_settings

    settings = build_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db, settings
