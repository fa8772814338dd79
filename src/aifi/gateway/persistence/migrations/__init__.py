"""Alembic migrations of the gateway's own database (the ``gw_`` tables of
:mod:`aifi.gateway.persistence.tables` and :mod:`aifi.gateway.persistence.result_tables`).

:data:`GATEWAY_MIGRATIONS` is the script location for
``Database(url, migrations=GATEWAY_MIGRATIONS)``. May import only those table modules and
:func:`aifi.hub.persistence.database.run_migrations` (in ``env.py``).
"""

from pathlib import Path

GATEWAY_MIGRATIONS = Path(__file__).parent
