"""What the gateway's status page (``/api/v1/gateway/status``, ``aifi gateway status``)
shows of the way back: results per state, the refused ones with their reasons, the PACS
deliveries per state and their last errors, and where the results feed stands."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydicom.uid import UID
from sqlalchemy import func
from sqlmodel import col, select

from aifi.gateway.persistence.result_tables import (
    DeliveryState,
    GatewayResult,
    ResultDelivery,
    ResultFeed,
    ResultState,
)
from aifi.hub.delivery.destinations import SendOutcome
from aifi.hub.persistence.database import Database

_ERROR_ITEMS = 5
LISTED = 20
"""Refused/failed results and delivery errors listed (newest first)."""


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def results_status(db: Database) -> dict[str, Any]:
    """The results part of the gateway's status, as JSON-ready data::

    {"results": {"pending": n, "stored": n, "refused": n, "failed": n},
     "deliveries": {"pending": n, "delivering": n, "delivered": n, "failed": n},
     "kept_without_pacs": n,  # stored results with no PACS delivery (none configured)
     "refused": [{"workitem_uid", "study_instance_uid", "product", "outcome", "reason"}],
     "failed": [...same...],
     "pending_errors": [{"workitem_uid", "attempts", "last_error"}],
     "delivery_errors": [{"workitem_uid", "destination", "state", "attempts",
                          "last_error"}],
     "feed": {"cursor", "polled_at", "next_poll_at", "attempts", "last_error"} | None}
    """
    with db.read() as session:
        results = dict.fromkeys((s.value for s in ResultState), 0)
        for state, count in session.exec(
            select(GatewayResult.state, func.count()).group_by(col(GatewayResult.state))
        ).all():
            results[str(state)] = int(count)
        deliveries = dict.fromkeys((s.value for s in DeliveryState), 0)
        for state, count in session.exec(
            select(ResultDelivery.state, func.count()).group_by(col(ResultDelivery.state))
        ).all():
            deliveries[str(state)] = int(count)
        with_delivery = select(ResultDelivery.result_pk).distinct()
        kept = session.exec(
            select(func.count())
            .select_from(GatewayResult)
            .where(
                col(GatewayResult.state) == ResultState.STORED,
                col(GatewayResult.pk).not_in(with_delivery),
            )
        ).one()

        def ended(state: ResultState) -> list[dict[str, Any]]:
            rows = session.exec(
                select(GatewayResult)
                .where(col(GatewayResult.state) == state)
                .order_by(col(GatewayResult.pk).desc())
                .limit(LISTED)
            ).all()
            return [
                {
                    "workitem_uid": r.workitem_uid,
                    "study_instance_uid": r.study_instance_uid,
                    "product": r.product,
                    "outcome": r.outcome,
                    "reason": r.reason,
                }
                for r in rows
            ]

        pending = session.exec(
            select(GatewayResult)
            .where(
                col(GatewayResult.state) == ResultState.PENDING,
                col(GatewayResult.last_error).is_not(None),
            )
            .order_by(col(GatewayResult.pk).desc())
            .limit(LISTED)
        ).all()
        errors = session.exec(
            select(ResultDelivery, GatewayResult.workitem_uid)
            .join(GatewayResult, col(GatewayResult.pk) == col(ResultDelivery.result_pk))
            .where(
                col(ResultDelivery.last_error).is_not(None),
                col(ResultDelivery.state) != DeliveryState.DELIVERED,
            )
            .order_by(col(ResultDelivery.pk).desc())
            .limit(LISTED)
        ).all()
        feeds = session.exec(select(ResultFeed).order_by(col(ResultFeed.name))).all()
        out: dict[str, Any] = {
            "results": results,
            "deliveries": deliveries,
            "kept_without_pacs": int(kept),
            "refused": ended(ResultState.REFUSED),
            "failed": ended(ResultState.FAILED),
            "pending_errors": [
                {"workitem_uid": r.workitem_uid, "attempts": r.attempts, "last_error": r.last_error}
                for r in pending
            ],
            "delivery_errors": [
                {
                    "workitem_uid": uid,
                    "destination": d.destination,
                    "state": str(d.state),
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                }
                for d, uid in errors
            ],
            "feed": None,
        }
        if feeds:
            feed = feeds[0]
            out["feed"] = {
                "cursor": feed.cursor,
                "polled_at": _iso(feed.polled_at),
                "next_poll_at": _iso(feed.next_poll_at),
                "attempts": feed.attempts,
                "last_error": feed.last_error,
            }
    return out


def describe_failures(
    attempt: int, destination: str, failures: dict[str, SendOutcome], classes: dict[str, str]
) -> str:
    """A delivery's ``last_error``: ``attempt N to 'dest': uid (SOP class name): reason;
    …``, instances grouped by the PACS's reason (a PACS that is down gives one for all)."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for uid, outcome in failures.items():
        by_reason[outcome.reason or "no reason given"].append(uid)
    parts = []
    for reason, uids in by_reason.items():
        named = []
        for uid in uids[:_ERROR_ITEMS]:
            sop_class = classes.get(uid, "")
            name = UID(sop_class).name if sop_class else ""
            named.append(f"{uid} ({name})" if name else uid)
        if len(uids) > _ERROR_ITEMS:
            named.append(f"and {len(uids) - _ERROR_ITEMS} more")
        parts.append(f"{', '.join(named)}: {reason}")
    return f"attempt {attempt} to {destination!r}: " + "; ".join(parts)
