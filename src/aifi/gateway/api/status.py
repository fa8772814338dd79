"""The gateway's status page: ``GET /api/v1/gateway/status`` (JSON) and
``aifi gateway status`` (the same, as tables).

What a hospital's operator needs to see at a glance::

    {"instances": {"received": n, "forwarding": n, "forwarded": n, "quarantined": n,
                   "failed": n},                      # the forwarding queue per state
     "studies": {"open": n, "due": n, "signalled": n, "failed": n},   # completion signals
     "last_errors": [{"kind": "instance"|"study", "study_instance_uid", "sop_instance_uid",
                      "state", "attempts", "error", "at"}],          # newest first
     "quarantined": [{"study_instance_uid", "sop_instance_uid", "reason", "received_at"}],
     "studies_progress": [{"study_instance_uid", "received", "forwarded", "quarantined",
                           "failed", "completion", "first_received_at", "last_received_at"}],
     "results": {...}}              # the way back: aifi.gateway.results.results_status

The page shows original UIDs: it is served inside the hospital, on the gateway's own port,
never sent to the hub; only the configured readers may have it (the route,
:mod:`aifi.gateway.api.routes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, func, or_, select

from aifi.gateway.ingest.allowed import Network
from aifi.gateway.persistence.tables import (
    CompletionState,
    InstanceState,
    ReceivedInstance,
    StudyProgress,
)
from aifi.hub.persistence.database import Database

_INSTANCE: Table = ReceivedInstance.__table__  # type: ignore[attr-defined]
_STUDY: Table = StudyProgress.__table__  # type: ignore[attr-defined]

ResultsStatus = Callable[[Database], dict[str, Any]]
"""The way back's part of the page (:func:`aifi.gateway.results.results_status`)."""


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def gateway_status(
    db: Database, *, limit: int = 50, results: ResultsStatus | None = None
) -> dict[str, Any]:
    """The status page's content (see the module docstring); lists hold at most ``limit``
    rows, newest first."""
    with db.reader.connect() as conn:
        instances = dict.fromkeys((s.value for s in InstanceState), 0)
        for state, count in conn.execute(
            select(_INSTANCE.c.state, func.count()).group_by(_INSTANCE.c.state)
        ):
            instances[str(state)] = int(count)
        studies = dict.fromkeys((s.value for s in CompletionState), 0)
        for state, count in conn.execute(
            select(_STUDY.c.completion, func.count()).group_by(_STUDY.c.completion)
        ):
            studies[str(state)] = int(count)

        errors: list[dict[str, Any]] = []
        for row in conn.execute(
            select(_INSTANCE)
            .where(
                or_(
                    _INSTANCE.c.last_error.is_not(None),
                    _INSTANCE.c.state == InstanceState.FAILED.value,
                )
            )
            .order_by(_INSTANCE.c.next_attempt_at.desc(), _INSTANCE.c.pk.desc())
            .limit(limit)
        ).mappings():
            errors.append(
                {
                    "kind": "instance",
                    "study_instance_uid": row["study_instance_uid"],
                    "sop_instance_uid": row["sop_instance_uid"],
                    "state": row["state"],
                    "attempts": row["attempts"],
                    "error": row["last_error"] or row["reason"],
                    "at": _iso(row["next_attempt_at"]),
                }
            )
        for row in conn.execute(
            select(_STUDY)
            .where(_STUDY.c.last_error.is_not(None))
            .order_by(_STUDY.c.next_attempt_at.desc(), _STUDY.c.pk.desc())
            .limit(limit)
        ).mappings():
            errors.append(
                {
                    "kind": "study",
                    "study_instance_uid": row["study_instance_uid"],
                    "sop_instance_uid": None,
                    "state": row["completion"],
                    "attempts": row["attempts"],
                    "error": row["last_error"],
                    "at": _iso(row["next_attempt_at"]),
                }
            )
        errors.sort(key=lambda e: e["at"] or "", reverse=True)

        quarantined = [
            {
                "study_instance_uid": row["study_instance_uid"],
                "sop_instance_uid": row["sop_instance_uid"],
                "reason": row["reason"],
                "received_at": _iso(row["received_at"]),
            }
            for row in conn.execute(
                select(_INSTANCE)
                .where(_INSTANCE.c.state == InstanceState.QUARANTINED.value)
                .order_by(_INSTANCE.c.pk.desc())
                .limit(limit)
            ).mappings()
        ]

        recent = list(
            conn.execute(
                select(_STUDY)
                .order_by(_STUDY.c.last_received_at.desc(), _STUDY.c.pk.desc())
                .limit(limit)
            ).mappings()
        )
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        if recent:
            uids = [row["study_instance_uid"] for row in recent]
            for uid, state, count in conn.execute(
                select(_INSTANCE.c.study_instance_uid, _INSTANCE.c.state, func.count())
                .where(_INSTANCE.c.study_instance_uid.in_(uids))
                .group_by(_INSTANCE.c.study_instance_uid, _INSTANCE.c.state)
            ):
                counts[str(uid)][str(state)] = int(count)
        progress = []
        for row in recent:
            per_state = counts[row["study_instance_uid"]]
            progress.append(
                {
                    "study_instance_uid": row["study_instance_uid"],
                    "received": sum(per_state.values()),
                    "forwarded": per_state.get(InstanceState.FORWARDED.value, 0),
                    "quarantined": per_state.get(InstanceState.QUARANTINED.value, 0),
                    "failed": per_state.get(InstanceState.FAILED.value, 0),
                    "completion": row["completion"],
                    "first_received_at": _iso(row["first_received_at"]),
                    "last_received_at": _iso(row["last_received_at"]),
                }
            )
    return {
        "instances": instances,
        "studies": studies,
        "last_errors": errors[:limit],
        "quarantined": quarantined,
        "studies_progress": progress,
        "results": results(db) if results is not None else None,
    }


# -- HTTP ----------------------------------------------------------------------------------


class StatusService:
    """What the status route needs (:data:`aifi.gateway.api.deps.StatusServiceDep`)."""

    def __init__(
        self,
        db: Database,
        *,
        limit: int,
        results: ResultsStatus | None,
        allowed_addresses: tuple[Network, ...] = (),
    ) -> None:
        self.db = db
        self.limit = limit
        self.results = results
        self.allowed_addresses = allowed_addresses
        """Who may read it (:class:`aifi.gateway.config.StatusConfig`; empty: anyone)."""


# -- text ----------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def render_status(data: dict[str, Any]) -> str:
    """The status page as plain-text tables (``aifi gateway status``)."""
    out = []
    instances = data.get("instances", {})
    out.append("Instances: " + ", ".join(f"{k} {v}" for k, v in instances.items()))
    studies = data.get("studies", {})
    out.append("Studies:   " + ", ".join(f"{k} {v}" for k, v in studies.items()))
    progress = data.get("studies_progress") or []
    if progress:
        out.append("")
        out.append(
            _table(
                ["STUDY", "RECEIVED", "FORWARDED", "QUARANTINED", "FAILED", "COMPLETION", "LAST"],
                [
                    [
                        str(p["study_instance_uid"]),
                        str(p["received"]),
                        str(p["forwarded"]),
                        str(p["quarantined"]),
                        str(p["failed"]),
                        str(p["completion"]),
                        str(p["last_received_at"] or ""),
                    ]
                    for p in progress
                ],
            )
        )
    quarantined = data.get("quarantined") or []
    if quarantined:
        out.append("")
        out.append("Quarantined:")
        out.append(
            _table(
                ["SOP INSTANCE", "REASON"],
                [[str(q["sop_instance_uid"]), str(q["reason"] or "")] for q in quarantined],
            )
        )
    errors = data.get("last_errors") or []
    if errors:
        out.append("")
        out.append("Last errors:")
        out.append(
            _table(
                ["AT", "KIND", "UID", "STATE", "ATTEMPTS", "ERROR"],
                [
                    [
                        str(e["at"] or ""),
                        str(e["kind"]),
                        str(e["sop_instance_uid"] or e["study_instance_uid"]),
                        str(e["state"]),
                        str(e["attempts"]),
                        str(e["error"] or ""),
                    ]
                    for e in errors
                ],
            )
        )
    results = data.get("results")
    if isinstance(results, dict):
        out.append("")
        for key in ("results", "deliveries"):
            counts = results.get(key)
            if isinstance(counts, dict):
                label = "Results:   " if key == "results" else "Deliveries:"
                out.append(label + " " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(out)
