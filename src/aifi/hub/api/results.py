"""The review gate and the results of the AI workitems (``/api/v1``, JSON).

IHE AIR results the hub accepted (:mod:`aifi.hub.results.gate`) end in one AI result per routed
workitem. Supervised products' results wait for a person (the review gate); autonomous
ones are released at once. Released results go to the tenant's PACS destinations through
the delivery outbox (:mod:`aifi.hub.delivery.deliverer`).

``GET /api/v1/results`` — newest first; filters ``review_state`` (not-required,
awaiting-review, accepted, rejected), ``outcome`` (positive, negative, measured, failed,
cancelled), ``study`` (Study Instance UID), ``product`` (product code); ``limit`` (default
100, at most 1000) and ``offset``. Answer: ``{"results": [...], "total": n}``.

**The released-results feed** (issue 15: how a hospital's gateway learns about results
without the hub ever connecting into the hospital): ``GET /api/v1/results?released_after=
CURSOR&limit=N``. With ``released_after`` present (the empty string: from the beginning)
the answer lists only released results (``released_at`` set: autonomous results at
completion, supervised ones once accepted — never rejected or awaiting ones — and failed
or cancelled ones when they end), oldest release first (``released_at``, then the row),
each with an extra ``"cursor"``; beside ``"results"`` and ``"total"`` (how many released
results follow the given cursor, this page included) it has ``"next_cursor"``: the last
item's cursor, or the given one when the page is empty — the client passes it as the next
``released_after``. The cursor is opaque (URL-safe base64 of ``"<released_at>|<row>"``);
one this hub did not give out is a 400. The other filters combine with it; ``offset``
does not (400). Release order is commit order (:func:`aifi.hub.results.release.
serialize_releases`), so a client that follows the cursor misses nothing.

``GET /api/v1/results/{workitem_uid}`` — the result with its instances (and their
summaries), the problems recorded for the workitem (refused results, refused completions),
its deliveries (destination, state, attempts, last_error, delivered_at; "hub-store" when
the tenant has no PACS destination: the results stay in the hub's own store) and timings
(workitem created, completed, released, delivered). Before the workitem ended (or when it
ended without a result, e.g. an attempt the Task Manager retried) ``state`` says where the
workitem is ("scheduled", "in-progress", "ended") and ``result`` is null. 404 when there
is no such workitem.

``POST /api/v1/results/{workitem_uid}/accept`` and ``/reject`` with
``{"reviewer": "...", "reason": "..."}`` (reason required to reject): 200 with the result;
409 when it is not awaiting review; 404 when unknown; 400 for a bad body. Accepting
releases the result and queues its deliveries in the same transaction
(:func:`aifi.hub.results.release.release`); a rejected result is withheld (never delivered).

``POST /api/v1/results/{workitem_uid}/deliveries/{destination}/retry`` — a failed delivery
back in the queue now (404 when there is no such delivery).

``GET /api/v1/notifications`` — urgent findings, oldest first; ``since`` (a notification
id: only later ones; or an ISO 8601 date-time), ``limit`` (default 100).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from aifi.clock import Clock
from aifi.errors import Conflict, InvalidRequest, NotFound
from aifi.hub.api.deps import ClockDep, DatabaseDep, DelivererDep, DestinationsDep
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import (
    AiResult,
    Delivery,
    Notification,
    ResultInstance,
    ResultProblem,
    Workitem,
)
from aifi.hub.persistence.tables.results import ReviewState
from aifi.hub.results.release import Enqueuer, release, serialize_releases
from aifi.principal import PrincipalDep

router = APIRouter(tags=["aifi-hub results"])

HUB_STORE = "hub-store"
"""The delivery shown when the tenant has no PACS destination."""

_STATES = {"SCHEDULED": "scheduled", "IN PROGRESS": "in-progress"}


class Review(BaseModel):
    reviewer: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str | None, Field(max_length=4000)] = None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SQLite returns naive UTC
    return moment.isoformat()


def epoch_seconds(value: str) -> float:
    """A timestamp of this API (ISO 8601, UTC; :func:`_iso`) as epoch seconds, for clients
    that compare it with their own clock (the demo, the turnaround benchmark)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _result_json(result: AiResult) -> dict[str, Any]:
    return {
        "workitem_uid": result.workitem_uid,
        "study_instance_uid": result.study_instance_uid,
        "product": result.product,
        "supervision": result.supervision,
        "outcome": result.outcome,
        "urgent": result.urgent,
        "summary": result.summary,
        "reason": result.reason,
        "review_state": result.review_state,
        "reviewer": result.reviewer,
        "review_reason": result.review_reason,
        "reviewed_at": _iso(result.reviewed_at),
        "completed_at": _iso(result.completed_at),
        "released_at": _iso(result.released_at),
        "created_at": _iso(result.created_at),
    }


# -- list ---------------------------------------------------------------------------------

_COLUMNS = {
    "review_state": AiResult.review_state,
    "outcome": AiResult.outcome,
    "study": AiResult.study_instance_uid,
    "product": AiResult.product,
}
"""The list's filters (query parameter -> column)."""


def _list(
    db: Database,
    tenant: str,
    filters: dict[str, str | None],
    limit: int,
    offset: int,
) -> dict[str, Any]:
    statement = select(AiResult).where(col(AiResult.tenant) == tenant)
    for name, value in filters.items():
        if value:
            statement = statement.where(col(_COLUMNS[name]) == value)
    with db.read() as session:
        total = session.exec(select(func.count()).select_from(statement.subquery())).one()
        rows = session.exec(
            statement.order_by(col(AiResult.created_at).desc(), col(AiResult.pk).desc())
            .offset(offset)
            .limit(limit)
        ).all()
    return {"results": [_result_json(r) for r in rows], "total": total}


# -- the released-results feed -------------------------------------------------------------


def encode_cursor(released_at: datetime, pk: int) -> str:
    """The feed position just after one result: URL-safe base64 of ``"<released_at
    ISO 8601>|<pk>"`` (opaque to clients)."""
    raw = f"{_iso(released_at)}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, int]:
    """``(released_at, pk)`` of a cursor :func:`encode_cursor` made; InvalidRequest else."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        moment_text, pk_text = raw.split("|")
        moment = datetime.fromisoformat(moment_text)
        pk = int(pk_text)
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise InvalidRequest(
            f"released_after: {value[:60]!r} is not a cursor of this feed; start with "
            "released_after= (empty) and pass each answer's next_cursor"
        ) from exc
    if moment.tzinfo is None or pk < 0 or not pk_text.isdigit():
        raise InvalidRequest(f"released_after: {value[:60]!r} is not a cursor of this feed")
    return moment.astimezone(UTC), pk


def _feed(
    db: Database,
    tenant: str,
    released_after: str,
    filters: dict[str, str | None],
    limit: int,
) -> dict[str, Any]:
    statement = select(AiResult).where(
        col(AiResult.tenant) == tenant, col(AiResult.released_at).is_not(None)
    )
    if released_after:
        moment, pk = decode_cursor(released_after)
        statement = statement.where(
            or_(
                col(AiResult.released_at) > moment,
                and_(col(AiResult.released_at) == moment, col(AiResult.pk) > pk),
            )
        )
    for name, value in filters.items():
        if value:
            statement = statement.where(col(_COLUMNS[name]) == value)
    with db.read() as session:
        total = session.exec(select(func.count()).select_from(statement.subquery())).one()
        rows = session.exec(
            statement.order_by(col(AiResult.released_at), col(AiResult.pk)).limit(limit)
        ).all()
    results = []
    for row in rows:
        assert row.released_at is not None and row.pk is not None
        results.append({**_result_json(row), "cursor": encode_cursor(row.released_at, row.pk)})
    return {
        "results": results,
        "total": total,
        "next_cursor": results[-1]["cursor"] if results else released_after,
    }


@router.get("/results")
async def list_results(
    db: DatabaseDep,
    principal: PrincipalDep,
    review_state: str | None = None,
    outcome: str | None = None,
    study: str | None = None,
    product: str | None = None,
    released_after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQL BIGINT: larger is a 500
) -> dict[str, Any]:
    """AI results, newest first; with ``released_after``, the released-results feed."""
    filters = {"review_state": review_state, "outcome": outcome, "study": study, "product": product}
    if released_after is not None:
        if offset:
            raise InvalidRequest("offset: the feed (released_after) pages by cursor only")
        return await run_in_threadpool(_feed, db, principal.tenant, released_after, filters, limit)
    return await run_in_threadpool(_list, db, principal.tenant, filters, limit, offset)


# -- one ----------------------------------------------------------------------------------


def _result_row(session: Session, tenant: str, uid: str, *, lock: bool = False) -> AiResult | None:
    statement = select(AiResult).where(
        col(AiResult.tenant) == tenant, col(AiResult.workitem_uid) == uid
    )
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def _detail(db: Database, tenant: str, uid: str, destinations: list[Any]) -> dict[str, Any]:
    with db.read() as session:
        workitem = session.exec(
            select(Workitem).where(
                col(Workitem.tenant) == tenant, col(Workitem.sop_instance_uid) == uid
            )
        ).first()
        result = _result_row(session, tenant, uid)
        if workitem is None and result is None:
            raise NotFound(f"No workitem {uid}")
        instances = session.exec(
            select(ResultInstance)
            .where(col(ResultInstance.tenant) == tenant, col(ResultInstance.workitem_uid) == uid)
            .order_by(col(ResultInstance.pk))
        ).all()
        problems = session.exec(
            select(ResultProblem)
            .where(col(ResultProblem.tenant) == tenant, col(ResultProblem.workitem_uid) == uid)
            .order_by(col(ResultProblem.pk))
        ).all()
        deliveries = (
            session.exec(
                select(Delivery)
                .where(col(Delivery.result_pk) == result.pk)
                .order_by(col(Delivery.pk))
            ).all()
            if result is not None
            else []
        )
    state: str
    if result is not None:
        state = result.review_state
    elif workitem is not None:
        state = _STATES.get(workitem.procedure_step_state, "ended")
    delivered: list[dict[str, Any]] = [
        {
            "destination": d.destination,
            "state": d.state,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "next_attempt_at": _iso(d.next_attempt_at) if d.state == "pending" else None,
            "delivered_at": _iso(d.delivered_at),
        }
        for d in deliveries
    ]
    if result is not None and result.released_at is not None and instances and not destinations:
        delivered.append(
            {
                "destination": HUB_STORE,
                "state": "delivered",
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
                "delivered_at": _iso(result.released_at),
            }
        )
    all_done = bool(delivered) and all(d["state"] == "delivered" for d in delivered)
    times = [d["delivered_at"] for d in delivered if d["delivered_at"]]
    return {
        "workitem_uid": uid,
        "state": state,
        "workitem": {
            "state": workitem.procedure_step_state if workitem else None,
            "product": workitem.product if workitem else None,
            "attempt": workitem.attempt if workitem else None,
            "study_instance_uid": workitem.study_instance_uid if workitem else None,
        },
        "result": _result_json(result) if result is not None else None,
        "instances": [
            {
                "sop_instance_uid": i.sop_instance_uid,
                "sop_class_uid": i.sop_class_uid,
                "series_instance_uid": i.series_instance_uid,
                "kind": i.kind,
                "summary": i.summary,
                "positive": i.positive,
                "stored_at": _iso(i.created_at),
            }
            for i in instances
        ],
        "problems": [
            {
                "sop_instance_uid": p.sop_instance_uid,
                "problem": p.problem,
                "at": _iso(p.created_at),
            }
            for p in problems
        ],
        "deliveries": delivered,
        "timings": {
            "workitem_created": _iso(
                workitem.created_at if workitem else result.workitem_created_at if result else None
            ),
            "completed": _iso(result.completed_at) if result else None,
            "released": _iso(result.released_at) if result else None,
            "delivered": max(times) if all_done and times else None,
        },
    }


@router.get("/results/{workitem_uid}")
async def get_result(
    workitem_uid: str, db: DatabaseDep, destinations: DestinationsDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One workitem's result, instances, problems, deliveries and timings."""
    tenant = principal.tenant
    return await run_in_threadpool(
        _detail, db, tenant, workitem_uid, list(destinations.for_tenant(tenant))
    )


# -- review -------------------------------------------------------------------------------


def _review(
    db: Database,
    deliverer: Enqueuer,
    clock: Clock,
    tenant: str,
    uid: str,
    review: Review,
    accept: bool,
) -> dict[str, Any]:
    with db.write() as session:
        result = _result_row(session, tenant, uid, lock=not db.is_sqlite)
        if result is None:
            raise NotFound(f"No AI result for workitem {uid}")
        if result.review_state != ReviewState.AWAITING_REVIEW:
            raise Conflict(f"The result is not awaiting review (it is {result.review_state})")
        serialize_releases(session)  # then the clock: the feed's order is the commit order
        now = clock()
        result.review_state = ReviewState.ACCEPTED if accept else ReviewState.REJECTED
        result.reviewer = review.reviewer
        result.review_reason = review.reason
        result.reviewed_at = now
        if accept:
            release(session, result, now, deliverer)
        else:
            session.add(result)
    return _result_json(result)


@router.post("/results/{workitem_uid}/accept")
async def accept_result(
    workitem_uid: str,
    review: Review,
    db: DatabaseDep,
    deliverer: DelivererDep,
    clock: ClockDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Accept a supervised result: it is released and delivered."""
    return await run_in_threadpool(
        _review, db, deliverer, clock, principal.tenant, workitem_uid, review, True
    )


@router.post("/results/{workitem_uid}/reject")
async def reject_result(
    workitem_uid: str,
    review: Review,
    db: DatabaseDep,
    deliverer: DelivererDep,
    clock: ClockDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Reject a supervised result (a reason is required): it is withheld."""
    if not (review.reason or "").strip():
        raise InvalidRequest("reason: a rejection needs a reason")
    return await run_in_threadpool(
        _review, db, deliverer, clock, principal.tenant, workitem_uid, review, False
    )


@router.post("/results/{workitem_uid}/deliveries/{destination}/retry")
async def retry_delivery(
    workitem_uid: str,
    destination: str,
    db: DatabaseDep,
    deliverer: DelivererDep,
    destinations: DestinationsDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Queue a failed (or backing-off) delivery again now, with a fresh set of attempts;
    answers the result's detail. 404 when the result has no delivery to ``destination``."""
    tenant = principal.tenant
    await run_in_threadpool(deliverer.retry, tenant, workitem_uid, destination)
    return await run_in_threadpool(
        _detail, db, tenant, workitem_uid, list(destinations.for_tenant(tenant))
    )


# -- notifications ------------------------------------------------------------------------


def _notifications(db: Database, tenant: str, since: str | None, limit: int) -> dict[str, Any]:
    statement = select(Notification).where(col(Notification.tenant) == tenant)
    if since:
        if since.isdigit():
            statement = statement.where(col(Notification.pk) > int(since))
        else:
            try:
                moment = datetime.fromisoformat(since)
            except ValueError as exc:
                raise InvalidRequest(
                    f"since: {since[:40]!r} is neither a notification id nor an ISO date-time"
                ) from exc
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            statement = statement.where(col(Notification.created_at) > moment)
    with db.read() as session:
        rows = session.exec(statement.order_by(col(Notification.pk)).limit(limit)).all()
    return {
        "notifications": [
            {
                "id": n.pk,
                "kind": n.kind,
                "workitem_uid": n.workitem_uid,
                "study_instance_uid": n.study_instance_uid,
                "product": n.product,
                "text": n.text,
                "created_at": _iso(n.created_at),
            }
            for n in rows
        ],
        "last_id": rows[-1].pk if rows else (int(since) if since and since.isdigit() else None),
    }


@router.get("/notifications")
async def list_notifications(
    db: DatabaseDep,
    principal: PrincipalDep,
    since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Urgent findings (and other notifications), oldest first."""
    return await run_in_threadpool(_notifications, db, principal.tenant, since, limit)
