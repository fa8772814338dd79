"""The gateway's own database (in the hospital; the hub never sees it).

- :mod:`~aifi.gateway.persistence.tables` — :class:`~aifi.gateway.persistence.tables.GatewayModel`
  (the ``gw_`` tables' own metadata) and the tables of ingest and forwarding
  (``gw_instance``, ``gw_study``) and of the pseudonym map (``gw_uid_map``,
  ``gw_patient``, ``gw_study_map``);
- :mod:`~aifi.gateway.persistence.result_tables` — the tables of the way back (``gw_result*``);
- :mod:`~aifi.gateway.persistence.migrations` — the Alembic migrations of these tables
  (``GATEWAY_MIGRATIONS``, the script location handed to
  :class:`aifi.hub.persistence.database.Database`).

The code that reads and writes the pseudonym map is
:mod:`aifi.gateway.forward.pseudonym_map`.

May import: :mod:`aifi.hub.persistence.database` (the engine and migration runner),
SQLModel/SQLAlchemy. Never any other gateway package: everything else imports this one.
"""
