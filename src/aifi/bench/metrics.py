"""``aifi bench metrics``: the server time of the hub's ``GET /metrics`` with many results
stored (issue 19 target: p95 under 50 ms with 10,000 results).

The hub is built in this process (development mode, SQLite in a temporary folder unless
``database_url`` names a PostgreSQL database) and seeded by direct inserts into its tables,
not through the chain: ``results`` UPS workitems (COMPLETED, three products, two tenants),
their AI results (outcomes mixed, turnaround 1 to 40 minutes) and one PACS delivery each
(states mixed). Then ``rounds`` requests go through the whole ASGI app (middleware,
authorisation, the collector's queries, the exposition) with Starlette's test client;
the time of each, from request to the last byte, is the server time (no network between).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert

from aifi.hub.persistence.tables import AiResult, Delivery, Workitem
from aifi.hub.settings import Settings

TARGET_P95_MS = 50.0
PRODUCTS = ("AIFI-BONEAGE", "AIFI-FRACTURE", "AIFI-IPE")
OUTCOMES = ("positive", "negative", "measured", "failed")
DELIVERY_STATES = ("delivered", "delivered", "pending", "failed")
TENANTS = ("default", "bench-b")


@dataclass(frozen=True)
class MetricsBenchConfig:
    results: int = 10_000
    rounds: int = 100
    database_url: str | None = None


@dataclass(frozen=True)
class MetricsBenchResult:
    results: int
    rounds: int
    database: str
    p50_ms: float
    p95_ms: float
    body_bytes: int
    series: int


def _rows(count: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    workitems, results = [], []
    for i in range(count):
        tenant, product = TENANTS[i % len(TENANTS)], PRODUCTS[i % len(PRODUCTS)]
        uid = f"2.25.{uuid.uuid4().int}"
        created = now - timedelta(hours=1, seconds=i)
        completed = created + timedelta(seconds=60 + (i * 37) % 2340)
        workitems.append(
            {
                "tenant": tenant,
                "sop_instance_uid": uid,
                "procedure_step_state": "COMPLETED",
                "priority": "MEDIUM",
                "input_readiness_state": "READY",
                "study_instance_uid": f"2.25.{uuid.uuid4().int}",
                "workitem_code": product,
                "product": product,
                "attempt": 1,
                "attributes": b"{}",
                "created_at": created,
                "updated_at": completed,
            }
        )
        results.append(
            {
                "pk": i + 1,
                "tenant": tenant,
                "workitem_uid": uid,
                "study_instance_uid": workitems[-1]["study_instance_uid"],
                "product": product,
                "supervision": "autonomous",
                "outcome": OUTCOMES[i % len(OUTCOMES)],
                "urgent": False,
                "summary": "",
                "review_state": "not-required",
                "workitem_created_at": created,
                "completed_at": completed,
                "released_at": completed,
                "created_at": completed,
            }
        )
    return workitems, results


def _deliveries(results: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "tenant": r["tenant"],
            "result_pk": r["pk"],
            "destination": "pacs",
            "state": DELIVERY_STATES[i % len(DELIVERY_STATES)],
            "attempts": 1,
            "next_attempt_at": now,
            "delivered_sop_uids": "[]",
            "created_at": now,
        }
        for i, r in enumerate(results)
    ]


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def run(config: MetricsBenchConfig) -> MetricsBenchResult:
    """Seed, then time ``config.rounds`` scrapes (after one untimed warm-up)."""
    from fastapi.testclient import TestClient

    from aifi.hub.app import create_app

    with tempfile.TemporaryDirectory(prefix="aifi-bench-metrics-") as folder:
        settings = Settings(
            data_dir=Path(folder),
            database_url=config.database_url,
            auth="off",
            dev_mode=True,
            task_manager=False,
            delivery=False,
            fhir_notify=False,
        )
        app = create_app(settings)
        hub = app.state.hub
        try:
            for tenant in TENANTS:
                hub.store.ensure_tenant(tenant)
            now = datetime.now(UTC)
            workitems, results = _rows(config.results, now)
            with hub.db.transaction() as conn:
                conn.execute(insert(_table(Workitem)), workitems)
                conn.execute(insert(_table(AiResult)), results)
                conn.execute(insert(_table(Delivery)), _deliveries(results, now))
            with TestClient(app) as client:
                body = client.get("/metrics").content
                times = []
                for _ in range(config.rounds):
                    started = time.perf_counter()
                    response = client.get("/metrics")
                    times.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
        finally:
            hub.close()
    times.sort()
    return MetricsBenchResult(
        results=config.results,
        rounds=config.rounds,
        database="postgresql" if config.database_url else "sqlite",
        p50_ms=statistics.median(times),
        p95_ms=times[max(0, int(len(times) * 0.95) - 1)],
        body_bytes=len(body),
        series=sum(1 for line in body.decode().splitlines() if line and line[0] != "#"),
    )


def report(result: MetricsBenchResult) -> str:
    verdict = "meets" if result.p95_ms < TARGET_P95_MS else "MISSES"
    return (
        f"GET /metrics with {result.results} results ({result.database}), "
        f"{result.rounds} scrapes: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms "
        f"({verdict} the {TARGET_P95_MS:.0f} ms target); {result.series} samples, "
        f"{result.body_bytes} bytes"
    )


def to_json(result: MetricsBenchResult) -> dict[str, Any]:
    return {**result.__dict__, "target_p95_ms": TARGET_P95_MS}
