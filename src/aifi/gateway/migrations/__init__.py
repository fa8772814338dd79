"""Alembic migrations of the gateway's own database (the ``gw_`` tables)."""

from pathlib import Path

GATEWAY_MIGRATIONS = Path(__file__).parent
