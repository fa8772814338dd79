"""The purge of re-identified results: a file under ``results/`` carries the patient's
identity, and once every PACS it goes to has confirmed all of it the PACS is where it
lives. ``retention.delivered_results_days`` after the last confirmation the gateway deletes
its files; the ``gw_result_instance`` rows stay, with ``purged_at``, as the record of what
was delivered where. Kept: results without any PACS (the gateway's own store is then their
only home), and results a PACS has not confirmed (failed or still pending: an operator looks
at them, and a retry needs the files).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import case, func
from sqlmodel import col, select

from aifi.gateway.persistence.result_tables import DeliveryState, ResultDelivery, ResultFile
from aifi.hub.persistence.database import Database

log = logging.getLogger(__name__)


def purge_delivered_results(
    db: Database, data_dir: Path, *, now: datetime, retention_seconds: float, limit: int
) -> int:
    """Delete the files of results whose every PACS delivery was confirmed at or before
    ``now - retention_seconds`` (at most ``limit`` files); returns how many were deleted.
    Each file is deleted inside the transaction that records it (as
    :func:`aifi.gateway.forward.purge.purge_forwarded`)."""
    cutoff = now - timedelta(seconds=retention_seconds)
    undelivered = case((col(ResultDelivery.state) != DeliveryState.DELIVERED.value, 1), else_=0)
    delivered = (
        select(ResultDelivery.result_pk)
        .group_by(col(ResultDelivery.result_pk))
        .having(
            func.sum(undelivered) == 0,
            func.max(col(ResultDelivery.delivered_at)) <= cutoff,
        )
    )
    stmt = (
        select(ResultFile)
        .where(col(ResultFile.purged_at).is_(None), col(ResultFile.result_pk).in_(delivered))
        .order_by(col(ResultFile.pk))
        .limit(limit)
    )
    if not db.is_sqlite:
        stmt = stmt.with_for_update(skip_locked=True)
    purged = 0
    with db.write() as session:
        for row in session.exec(stmt).all():
            try:
                (data_dir / row.file).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("result file row %s: cannot purge it: %s", row.pk, exc)
                continue
            row.purged_at = now
            purged += 1
    return purged
