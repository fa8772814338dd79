"""FHIR rest-hook Subscriptions (Subscriptions R5 Backport IG for R4) and the EPD push, against
a real SQLite database, the real FHIR store and a real HTTP peer (tests/support/epd.py).

The notifier runs on a clock the tests move, so backoff and heartbeats are exact; HTTP
timeouts are real (and short)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlmodel import Session, col, select

from aifi.errors import Unprocessable
from aifi.fhir.epd_client import report_transaction
from aifi.fhir.search import parse_search
from aifi.fhir.subscriptions import (
    HEARTBEAT_PERIOD_URL,
    PAYLOAD_CONTENT_URL,
    STATUS_PROFILE,
    parse_subscription,
)
from aifi.fhir.types import StoredResource
from aifi.hub.fhir.notify import FhirNotifier, Matcher, run_fhir_notify_loop
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import FhirOutbox, Tenant
from aifi.hub.persistence.tables.fhir import FhirOutboxState
from tests.support.clock import Clock
from tests.support.epd import FakeEpd, Recorded, running_epd
from tests.support.wait import async_wait_until, returns_of

TENANT = "t1"
OTHER = "t2"


@dataclass
class Hub:
    db: Database
    store: SqlFhirStore
    notifier: FhirNotifier
    clock: Clock
    epd: FakeEpd

    @property
    def base(self) -> str:
        return self.notifier.base_url

    def subscribe(
        self,
        criteria: str,
        hook: str,
        *,
        tenant: str = TENANT,
        content: str | None = "id-only",
        heartbeat: int | None = None,
        headers: list[str] | None = None,
    ) -> str:
        channel: dict[str, Any] = {"type": "rest-hook", "endpoint": self.epd.hook(hook)}
        if content is not None:
            channel["payload"] = "application/fhir+json"
            channel["_payload"] = {
                "extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": content}]
            }
        if heartbeat is not None:
            channel["extension"] = [{"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": heartbeat}]
        if headers:
            channel["header"] = headers
        resource = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "test",
            "criteria": criteria,
            "channel": channel,
        }
        parse_subscription(resource)  # what the hub backend checks first
        with self.db.write() as session:
            result = self.store.create(session, tenant, resource)
            self.notifier.subscription_created(session, tenant, result.stored)
        return result.stored.resource_id

    def put(self, resource: dict[str, Any], tenant: str = TENANT) -> None:
        with self.db.write() as session:
            self.store.put(session, tenant, resource)

    def subscription(self, subscription_id: str, tenant: str = TENANT) -> StoredResource:
        return self.store.read(tenant, "Subscription", subscription_id)

    def outbox(self) -> list[FhirOutbox]:
        with self.db.read() as session:
            return list(session.exec(select(FhirOutbox).order_by(col(FhirOutbox.pk))).all())


def _matcher(store: SqlFhirStore) -> Matcher:
    """The criteria test the app wires: the search parser and the store's own SQL."""

    def matches(session: Session, tenant: str, criteria: str, stored: StoredResource) -> bool:
        kind, _, query = criteria.partition("?")
        parsed = parse_search(kind, parse_qsl(query, keep_blank_values=True), strict=False)
        return store.matches(session, tenant, parsed, stored.resource_type, stored.resource_id)

    return matches


@pytest.fixture
def epd() -> Iterator[FakeEpd]:
    with running_epd() as server:
        yield server


@contextmanager
def hub_with(
    tmp_path: Path, epd: FakeEpd, database_url: str | None, **options: Any
) -> Iterator[Hub]:
    """A hub (database, store, notifier) with notifier ``options`` over the defaults, on
    SQLite (``database_url`` None) or the given PostgreSQL database."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'hub.db'}")
    db.migrate()
    with db.write() as session:
        session.add(Tenant(id=TENANT))
        session.add(Tenant(id=OTHER))
    store = SqlFhirStore(db)
    clock = Clock()
    settings: dict[str, Any] = {
        "base_url": "http://hub.example/fhir",
        "push_targets": {TENANT: epd.fhir_base},
        "backoff_seconds": 2.0,
        "max_backoff_seconds": 60.0,
        "timeout_seconds": 2.0,
        "max_attempts": 5,
        "clock": clock,
    }
    settings.update(options)
    notifier = FhirNotifier(db, store, matcher=_matcher(store), **settings)
    store.listeners.append(notifier)
    try:
        yield Hub(db=db, store=store, notifier=notifier, clock=clock, epd=epd)
    finally:
        notifier.close()
        db.dispose()


@pytest.fixture
def hub(tmp_path: Path, epd: FakeEpd, database_url: str | None) -> Iterator[Hub]:
    with hub_with(tmp_path, epd, database_url) as built:
        yield built


# -- helpers -------------------------------------------------------------------------------


def _valid(body: Any) -> dict[str, Any]:
    """Every Bundle the hub emits must be valid R4 (R4B models, wire-compatible)."""
    assert isinstance(body, dict)
    Bundle.model_validate(body)
    return body


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    """The SubscriptionStatus Parameters of a notification, as name → value (or parts)."""
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters"
    assert first["meta"]["profile"] == [STATUS_PROFILE]
    out: dict[str, Any] = {"notification-event": []}
    for p in first["parameter"]:
        if p["name"] == "notification-event":
            out["notification-event"].append({part["name"]: _value(part) for part in p["part"]})
        else:
            out[p["name"]] = _value(p)
    return out


def _value(param: dict[str, Any]) -> Any:
    for key, value in param.items():
        if key.startswith("value"):
            return value["reference"] if key == "valueReference" else value
    return None


def _notifications(epd: FakeEpd, hook: str) -> list[dict[str, Any]]:
    return [_valid(r.body) for r in epd.posts(f"/hooks/{hook}")]


def _report(
    report_id: str, status: str, observations: int = 0, *, conclusion: str = ""
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{report_id}"}],
        "status": status,
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "subject": {
            "reference": "Patient/pat-1",
            "identifier": {"system": "urn:aifi:patient-id", "value": "P1"},
        },
        "imagingStudy": [
            {
                "reference": "ImagingStudy/1.2.9",
                "identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.9"},
            }
        ],
        "result": [
            {"reference": f"Observation/{report_id}-{n}"} for n in range(1, observations + 1)
        ],
    }
    if conclusion:
        resource["conclusion"] = conclusion
    return resource


def _observation(report_id: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{report_id}-{n}",
        "identifier": [{"system": "urn:aifi:observation", "value": f"{report_id}-{n}"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85151-1"}]},
        "subject": {
            "reference": "Patient/pat-1",
            "identifier": {"system": "urn:aifi:patient-id", "value": "P1"},
        },
        "device": {
            "reference": "Device/AIFI-BONEAGE",
            "identifier": {"system": "urn:aifi:product", "value": "AIFI-BONEAGE"},
        },
        "valueQuantity": {"value": 10 + n, "unit": "a", "system": "http://unitsofmeasure.org"},
    }


def _task(task_id: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
    }


# -- subscriptions ---------------------------------------------------------------------------


def test_handshake_activates_the_subscription(hub: Hub) -> None:
    sid = hub.subscribe("DiagnosticReport?status=final", "a", headers=["Authorization: Bearer s3"])
    assert hub.subscription(sid).content["status"] == "requested"

    assert hub.notifier.tick() == 1

    [handshake] = _notifications(hub.epd, "a")
    assert handshake["type"] == "history"
    status = _status(handshake)
    assert status["type"] == "handshake"
    assert status["status"] == "requested"
    assert status["subscription"] == f"{hub.base}/Subscription/{sid}"
    assert status["topic"] == "DiagnosticReport?status=final"
    assert status["events-since-subscription-start"] == "0"
    [request] = hub.epd.posts("/hooks/a")
    assert request.headers["Authorization"] == "Bearer s3"
    assert request.headers["Content-Type"].startswith("application/fhir+json")
    current = hub.subscription(sid)
    assert current.content["status"] == "active"
    assert current.version_id == 2
    assert hub.notifier.tick() == 0  # nothing more to send


def test_final_report_sends_an_id_only_notification_with_its_event_number(hub: Hub) -> None:
    sid = hub.subscribe("DiagnosticReport?status=final", "a")
    other = hub.subscribe("DiagnosticReport?status=final", "b", tenant=OTHER)
    hub.notifier.tick()

    hub.put(_report("1.2.3", "preliminary"))
    hub.notifier.tick()
    assert len(_notifications(hub.epd, "a")) == 1  # the handshake only: not final yet

    hub.put(_report("1.2.3", "final"))
    hub.notifier.tick()

    _handshake, event = _notifications(hub.epd, "a")
    status = _status(event)
    assert status["type"] == "event-notification"
    assert status["status"] == "active"
    assert status["events-since-subscription-start"] == "1"
    [notified] = status["notification-event"]
    assert notified["event-number"] == "1"
    assert notified["focus"] == f"{hub.base}/DiagnosticReport/1.2.3"
    assert notified["timestamp"].startswith("2026-03-01T08:00:00")
    focus = event["entry"][1]
    assert focus["fullUrl"] == f"{hub.base}/DiagnosticReport/1.2.3"
    assert "resource" not in focus  # id-only
    assert focus["request"] == {"method": "PUT", "url": "DiagnosticReport/1.2.3"}
    # another tenant's subscription hears nothing of it
    assert len(_notifications(hub.epd, "b")) == 1
    assert hub.subscription(other, OTHER).content["status"] == "active"
    assert sid


def test_full_resource_payload_carries_the_resource_and_empty_carries_no_ids(hub: Hub) -> None:
    hub.subscribe("DiagnosticReport?status=final", "full", content="full-resource")
    hub.subscribe("DiagnosticReport", "empty", content=None)
    hub.notifier.tick()

    hub.put(_report("1.2.4", "final", conclusion="bone age 11 y"))
    hub.notifier.tick()

    _, full = _notifications(hub.epd, "full")
    entry = full["entry"][1]
    assert entry["resource"]["resourceType"] == "DiagnosticReport"
    assert entry["resource"]["id"] == "1.2.4"
    assert entry["resource"]["conclusion"] == "bone age 11 y"
    assert entry["resource"]["meta"]["versionId"] == "1"
    assert entry["request"] == {"method": "POST", "url": "DiagnosticReport"}

    _, empty = _notifications(hub.epd, "empty")
    assert len(empty["entry"]) == 1
    [notified] = _status(empty)["notification-event"]
    assert notified["event-number"] == "1"
    assert "focus" not in notified


def test_task_criteria_with_two_statuses_matches_only_those(hub: Hub) -> None:
    hub.subscribe("Task?status=completed,failed", "tasks")
    hub.notifier.tick()

    for task_id, status in [
        ("t-a", "in-progress"),
        ("t-b", "completed"),
        ("t-c", "cancelled"),
        ("t-d", "failed"),
        ("t-e", "ready"),
    ]:
        hub.put(_task(task_id, status))
    hub.put(_report("1.2.5", "final"))  # another type: not this subscription's
    hub.notifier.tick()

    events = _notifications(hub.epd, "tasks")[1:]
    seen = [
        (_status(e)["notification-event"][0]["event-number"], e["entry"][1]["fullUrl"])
        for e in events
    ]
    assert seen == [("1", f"{hub.base}/Task/t-b"), ("2", f"{hub.base}/Task/t-d")]


def test_heartbeat_after_the_period_without_traffic(hub: Hub) -> None:
    sid = hub.subscribe("Task?status=completed", "hb", heartbeat=30)
    hub.notifier.tick()  # handshake

    hub.clock.advance(20)
    hub.notifier.tick()
    assert len(_notifications(hub.epd, "hb")) == 1

    hub.clock.advance(11)
    hub.notifier.tick()
    _, heartbeat = _notifications(hub.epd, "hb")
    status = _status(heartbeat)
    assert status["type"] == "heartbeat"
    assert status["status"] == "active"
    assert status["subscription"] == f"{hub.base}/Subscription/{sid}"

    hub.clock.advance(29)  # the heartbeat itself counts as traffic
    hub.notifier.tick()
    assert len(_notifications(hub.epd, "hb")) == 2


def test_endpoint_down_retries_with_backoff_then_delivers_in_order(hub: Hub) -> None:
    sid = hub.subscribe("DiagnosticReport?status=final", "a")
    hub.notifier.tick()
    hub.epd.down()

    hub.put(_report("1.3.1", "final"))
    hub.put(_report("1.3.2", "final"))
    hub.notifier.tick()

    # one attempt, for event 1 only: event 2 waits behind it
    assert len(hub.epd.posts("/hooks/a")) == 2
    current = hub.subscription(sid).content
    assert current["status"] == "error"
    assert "503" in current["error"]
    status = _status(hub.notifier.status_bundle(TENANT, sid))
    assert status["type"] == "query-status"
    assert status["status"] == "error"
    assert "503" in status["error"]["text"]
    assert status["events-since-subscription-start"] == "2"
    _valid(hub.notifier.status_bundle(TENANT, sid))

    hub.notifier.tick()  # backoff (2 s) not over: nothing sent
    assert len(hub.epd.posts("/hooks/a")) == 2
    hub.clock.advance(2)
    hub.notifier.tick()  # attempt 2 fails; the next wait is 4 s
    assert len(hub.epd.posts("/hooks/a")) == 3
    hub.clock.advance(2)
    hub.notifier.tick()
    assert len(hub.epd.posts("/hooks/a")) == 3
    version_while_failing = hub.subscription(sid).version_id

    hub.epd.up()
    hub.clock.advance(2)
    hub.notifier.tick()

    numbers = [
        _status(n)["notification-event"][0]["event-number"]
        for n in _notifications(hub.epd, "a")[1:]
    ]
    assert numbers == ["1", "1", "1", "2"]  # two failed tries of event 1, then 1 and 2
    current_stored = hub.subscription(sid)
    assert current_stored.content["status"] == "active"
    assert "error" not in current_stored.content
    assert current_stored.version_id > version_while_failing
    assert [r.state for r in hub.outbox() if r.channel == "subscription"] == ["delivered"] * 3


def test_a_backlog_behind_a_failing_endpoint_does_not_hold_up_others(hub: Hub) -> None:
    hub.subscribe("Task?status=completed", "stuck")
    hub.subscribe("DiagnosticReport?status=final", "fine")
    hub.notifier.tick()
    hub.notifier.batch_size = 2
    hub.epd.failing.add("/hooks/stuck")
    for n in range(12):
        hub.put(_task(f"t-{n}", "completed"))
    hub.notifier.tick()  # event 1 of "stuck" fails and waits; 2..12 wait behind it

    hub.put(_report("1.2.77", "final"))
    hub.notifier.tick()

    assert len(_notifications(hub.epd, "fine")) == 2
    assert len(hub.epd.posts("/hooks/stuck")) == 2  # handshake + one try of event 1


def test_endpoint_that_never_answers_costs_bounded_attempts(
    tmp_path: Path, epd: FakeEpd, database_url: str | None
) -> None:
    with hub_with(
        tmp_path, epd, database_url, timeout_seconds=0.3, max_attempts=2, lease_seconds=5
    ) as hub:
        sid = hub.subscribe("DiagnosticReport?status=final", "slow")
        hub.notifier.tick()
        hub.epd.slow(30)
        hub.put(_report("1.4.1", "final"))

        started = time.monotonic()
        hub.notifier.tick()
        hub.clock.advance(2)
        hub.notifier.tick()
        hub.clock.advance(60)
        hub.notifier.tick()  # nothing left to try
        assert time.monotonic() - started < 5

        [event] = [r for r in hub.outbox() if r.kind == "event-notification"]
        assert event.state == "failed"
        assert event.attempts == 2
        assert "gave up after 2 attempts" in (event.last_error or "")
        assert "in time" in (event.last_error or "")
        assert hub.subscription(sid).content["status"] == "error"

        # the endpoint is back: the next event goes out, its number shows the gap
        hub.epd.up()
        hub.put(_report("1.4.2", "final"))
        hub.notifier.tick()
        last = hub.epd.posts("/hooks/slow")[-1].body
        assert _status(_valid(last))["notification-event"][0]["event-number"] == "2"
        assert hub.subscription(sid).content["status"] == "active"


def test_handshake_that_fails_for_good_leaves_the_subscription_in_error(
    tmp_path: Path, epd: FakeEpd, database_url: str | None
) -> None:
    with hub_with(tmp_path, epd, database_url, max_attempts=2) as hub:
        hub.epd.down(close=True)
        sid = hub.subscribe("DiagnosticReport?status=final", "gone")
        hub.notifier.tick()
        hub.clock.advance(5)
        hub.notifier.tick()
        current = hub.subscription(sid).content
        assert current["status"] == "error"
        assert "not reachable" in current["error"]
        hub.epd.up()
        hub.put(_report("1.5.1", "final"))  # no events for a subscription never confirmed
        hub.notifier.tick()
        assert len(hub.epd.posts("/hooks/gone")) == 2
        assert all(r.kind != "event-notification" for r in hub.outbox())


def test_deleted_subscription_drops_its_queue(hub: Hub) -> None:
    sid = hub.subscribe("DiagnosticReport?status=final", "del")
    hub.notifier.tick()
    hub.epd.down()
    hub.put(_report("1.6.1", "final"))
    hub.notifier.tick()
    with hub.db.write() as session:
        hub.store.delete(session, TENANT, "Subscription", sid)
        hub.notifier.subscription_removed(session, TENANT, sid)
    assert [
        r for r in hub.outbox() if r.channel == "subscription" and r.state in ("pending", "sending")
    ] == []
    hub.put(_report("1.6.2", "final"))
    assert [r for r in hub.outbox() if r.state == "pending" and r.channel == "subscription"] == []


def test_invalid_subscriptions_are_refused_with_the_reason() -> None:
    base = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "x",
        "criteria": "DiagnosticReport?status=final",
    }
    with pytest.raises(Unprocessable, match="websocket"):
        parse_subscription({**base, "channel": {"type": "websocket"}})
    with pytest.raises(Unprocessable, match="endpoint"):
        parse_subscription({**base, "channel": {"type": "rest-hook", "endpoint": "hooks/a"}})
    with pytest.raises(Unprocessable, match="application/fhir\\+xml"):
        parse_subscription(
            {
                **base,
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "https://epd.example/hook",
                    "payload": "application/fhir+xml",
                },
            }
        )
    with pytest.raises(Unprocessable, match="Patient"):
        parse_subscription(
            {
                **base,
                "criteria": "Patient?name=x",
                "channel": {"type": "rest-hook", "endpoint": "https://epd.example/hook"},
            }
        )
    spec = parse_subscription(
        {
            **base,
            "channel": {
                "type": "rest-hook",
                "endpoint": "https://epd.example/hook",
                "payload": "application/fhir+json",
            },
        }
    )
    assert spec.content == "id-only"
    assert spec.criteria == "DiagnosticReport?status=final"


def test_doorbell_sends_at_once_under_the_loop(
    tmp_path: Path, epd: FakeEpd, database_url: str | None
) -> None:
    with hub_with(tmp_path, epd, database_url, clock=lambda: datetime.now(UTC)) as hub:

        async def scenario(hub: Hub) -> float:
            rounds = returns_of(hub.notifier, "tick")
            loop = asyncio.create_task(run_fhir_notify_loop(hub.notifier, poll_seconds=60))
            # the loop has looked once and waits for the bell
            await async_wait_until(lambda: rounds, 10, "the loop's first round")
            started = time.monotonic()
            await asyncio.to_thread(hub.subscribe, "Task?status=completed", "bell")
            arrived = await asyncio.to_thread(
                hub.epd.wait_for, lambda: bool(hub.epd.posts("/hooks/bell")), 10.0
            )
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
            assert arrived
            return time.monotonic() - started

        assert asyncio.run(scenario(hub)) < 5


# -- the EPD push ------------------------------------------------------------------------------


def _push_final_report(hub: Hub, report_id: str) -> None:
    with hub.db.write() as session:
        for n in (1, 2):
            hub.store.put(session, TENANT, _observation(report_id, n))
        hub.store.put(session, TENANT, _report(report_id, "preliminary", 2))
    hub.put(_report(report_id, "final", 2))


def _transactions(epd: FakeEpd) -> list[Recorded]:
    return [r for r in epd.posts("/fhir") if isinstance(r.body, dict)]


def test_final_report_is_pushed_once_with_its_observations(hub: Hub) -> None:
    _push_final_report(hub, "1.7.1")
    hub.put(_report("1.7.1", "final", 2, conclusion="amended text"))  # still final: no 2nd push
    hub.notifier.tick()

    [push] = _transactions(hub.epd)
    bundle = _valid(push.body)
    assert bundle["type"] == "transaction"
    assert [e["request"]["url"] for e in bundle["entry"]] == [
        "DiagnosticReport",
        "Observation",
        "Observation",
    ]
    assert bundle["entry"][0]["request"]["ifNoneExist"] == (
        "identifier=urn:dicom:uid|urn:oid:1.7.1"
    )
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])
    report = hub.epd.resources["DiagnosticReport"]
    assert len(report) == 1
    [stored_report] = report.values()
    assert stored_report["conclusion"] == "amended text"  # re-read at send time
    observations = hub.epd.resources["Observation"]
    assert len(observations) == 2
    assert sorted(r["reference"] for r in stored_report["result"]) == sorted(
        f"Observation/{i}" for i in observations
    )
    # references to what the EPD does not hold are logical: identifier kept, reference dropped
    assert stored_report["subject"] == {
        "identifier": {"system": "urn:aifi:patient-id", "value": "P1"},
        "type": "Patient",
    }
    assert "reference" not in stored_report["imagingStudy"][0]
    assert all("id" not in e["resource"] for e in bundle["entry"])
    [row] = [r for r in hub.outbox() if r.channel == "epd-push"]
    assert row.state == "delivered"


def test_a_repeated_push_after_a_lost_answer_creates_nothing(hub: Hub) -> None:
    _push_final_report(hub, "1.8.1")
    hub.notifier.tick()
    assert len(hub.epd.resources["Observation"]) == 2

    # the process died after the EPD answered and before the outcome was recorded
    with hub.db.write() as session:
        row = session.exec(select(FhirOutbox).where(col(FhirOutbox.channel) == "epd-push")).one()
        row.state = FhirOutboxState.SENDING
        row.lease_until = hub.clock.now - timedelta(seconds=1)
        session.add(row)
    hub.notifier.tick()

    first, second = _transactions(hub.epd)
    assert first.body == second.body
    assert len(hub.epd.resources["DiagnosticReport"]) == 1
    assert len(hub.epd.resources["Observation"]) == 2


def test_push_retries_while_the_epd_is_down(hub: Hub) -> None:
    hub.epd.down()
    _push_final_report(hub, "1.9.1")
    _push_final_report(hub, "1.9.2")
    hub.notifier.tick()
    assert len(hub.epd.posts("/fhir")) == 1  # one probe; the second report waits
    [first, second] = [r for r in hub.outbox() if r.channel == "epd-push"]
    assert first.state == "pending"
    assert "HTTP 503" in (first.last_error or "")
    assert "maintenance" in (first.last_error or "")
    assert second.attempts == 0

    hub.epd.up()
    hub.clock.advance(2)
    hub.notifier.tick()
    assert len(hub.epd.resources["DiagnosticReport"]) == 2
    assert all(r.state == "delivered" for r in hub.outbox() if r.channel == "epd-push")


def test_transaction_without_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="identifier"):
        report_transaction({"resourceType": "DiagnosticReport", "id": "x"}, [])
