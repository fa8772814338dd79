"""Alembic environment: runs on the connection the hub hands over (``Database.migrate``),
or on ``sqlalchemy.url`` when alembic is called from the command line."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import aifi.hub.persistence.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from aifi.hub.persistence.database import run_migrations

run_migrations(context, SQLModel.metadata)
