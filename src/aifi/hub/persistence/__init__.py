"""What every concept of the hub stores its state with.

- :mod:`~aifi.hub.persistence.database` — :class:`Database`: a reader and a writer engine
  over one URL (SQLite in WAL mode, or PostgreSQL), write transactions with commit hooks,
  Alembic migrations;
- :mod:`~aifi.hub.persistence.tables` — the tables, one module per concern (DICOM index,
  worklist, orchestration, results, delivery, FHIR, auth, audit);
- :mod:`~aifi.hub.persistence.migrations` — the Alembic scripts;
- :mod:`~aifi.hub.persistence.outbox` — the outbox engine (claim with a lease, backoff,
  record an attempt, wake-up) that PACS delivery, FHIR notifications and the gateway's
  forwarding run on.

May import: SQLAlchemy/SQLModel/Alembic, :mod:`aifi.clock`, :mod:`aifi.errors`, and the
doorbell of :mod:`aifi.dicomweb.worklist` (the outbox's wake-up); nothing else of aifi (the
gateway uses it too).
"""
