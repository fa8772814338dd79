"""Alembic environment of the gateway's own database (``Database(url,
migrations=GATEWAY_MIGRATIONS).migrate()``), or on ``sqlalchemy.url`` from the command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from aifi.gateway.models import GatewayModel
from aifi.gateway.results import models as _results  # noqa: F401  (gw_result* tables)

config = context.config
target_metadata = GatewayModel.metadata


def run() -> None:
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


run()
