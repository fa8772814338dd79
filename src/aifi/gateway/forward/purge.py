"""The purge of local originals: once the hub holds an instance (``FORWARDED``) and the
retention time has passed, the gateway deletes its original Part 10 file (issue 15: local
copies are purged once the hub has acknowledged them and retention allows). The row stays,
with ``file`` = None and ``purged_at``: it still tells what was received and forwarded, and
the pseudonym map stays for re-identification. Quarantined and failed originals (never
sent: an operator looks at them) are kept longer, ``retention.quarantined_days`` after they
were received (:func:`purge_unsent`).

Folders under ``instances/`` are left in place (the ingest side may be writing a new file
into one at this moment).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from aifi.gateway.persistence.tables import InstanceState, ReceivedInstance
from aifi.hub.persistence.database import Database

log = logging.getLogger(__name__)


def purge_forwarded(
    db: Database, data_dir: Path, *, now: datetime, retention_seconds: float, limit: int
) -> int:
    """Delete the originals forwarded at or before ``now - retention_seconds`` (at most
    ``limit``, oldest first); returns how many were purged.

    Each file is deleted inside the transaction that records it, so once committed no row
    points at a deleted file; a crash before the commit leaves the row as it was, and the
    next purge finds the file already gone. PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two
    gateways over one database purge different rows."""
    cutoff = now - timedelta(seconds=retention_seconds)
    return _purge(
        db,
        data_dir,
        select(ReceivedInstance)
        .where(
            col(ReceivedInstance.state) == InstanceState.FORWARDED,
            col(ReceivedInstance.file).is_not(None),
            col(ReceivedInstance.forwarded_at) <= cutoff,
        )
        .order_by(col(ReceivedInstance.forwarded_at), col(ReceivedInstance.pk))
        .limit(limit),
        now=now,
    )


def purge_unsent(
    db: Database, data_dir: Path, *, now: datetime, retention_seconds: float, limit: int
) -> int:
    """Delete the originals of quarantined and failed instances received at or before
    ``now - retention_seconds`` (their rows, with the reason, stay)."""
    cutoff = now - timedelta(seconds=retention_seconds)
    return _purge(
        db,
        data_dir,
        select(ReceivedInstance)
        .where(
            col(ReceivedInstance.state).in_([InstanceState.QUARANTINED, InstanceState.FAILED]),
            col(ReceivedInstance.file).is_not(None),
            col(ReceivedInstance.received_at) <= cutoff,
        )
        .order_by(col(ReceivedInstance.received_at), col(ReceivedInstance.pk))
        .limit(limit),
        now=now,
    )


def _purge(
    db: Database, data_dir: Path, stmt: SelectOfScalar[ReceivedInstance], *, now: datetime
) -> int:
    if not db.is_sqlite:
        stmt = stmt.with_for_update(skip_locked=True)
    purged = 0
    with db.write() as session:
        for row in session.exec(stmt).all():
            assert row.file is not None
            try:
                (data_dir / row.file).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("instance row %s: cannot purge its file: %s", row.pk, exc)
                continue
            row.file = None
            row.purged_at = now
            purged += 1
    return purged
