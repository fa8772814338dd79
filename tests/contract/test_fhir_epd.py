"""An EPD against a real uvicorn hub over FHIR R4: rest-hook Subscriptions (R5 Backport IG for
R4: handshake, event-notification, $status, error and recovery), the per-hospital push of
final DiagnosticReports as a transaction Bundle (http.html#transaction, conditional create),
and the API refusing bad input with an OperationOutcome. The EPD is a real HTTP server
(tests/support/epd.py). The projection and the notifier are ticked by the test (no
background loop), so every "nothing was sent" is exact; a retry waits a real backoff of
50 ms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from aifi.fhir.resources import validated
from aifi.fhir.subscriptions import PAYLOAD_CONTENT_URL, STATUS_PROFILE
from aifi.hub.fhir.notify import FhirNotifier
from aifi.hub.fhir.projection import FhirProjector
from aifi.hub.persistence.tables import FhirOutbox
from aifi.hub.settings import Settings
from tests.conftest import running_hub
from tests.contract.test_fhir_chain import accession_focus, bone_age_report, perform, request_task
from tests.contract.test_results import Hub, fracture_report, rules_file
from tests.support.epd import FakeEpd, Recorded, running_epd
from tests.support.wait import wait_until

FHIR_JSON = "application/fhir+json"
HEADERS = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
CODES = ["AIFI-FRACTURE", "AIFI-BONEAGE"]


def fhir_body(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's FHIR body: the expected status, FHIR JSON, valid R4."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    validated(body)
    return body


def refused(response: httpx.Response, status: int, *words: str) -> None:
    outcome = fhir_body(response, status)
    assert outcome["resourceType"] == "OperationOutcome"
    text = " ".join(i.get("diagnostics", "") for i in outcome["issue"])
    for word in words:
        assert word in text, (word, text)


def subscription(
    criteria: str, endpoint: str, content: str = "full-resource", channel: str = "rest-hook"
) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "the EPD's inbox",
        "criteria": criteria,
        "channel": {
            "type": channel,
            "endpoint": endpoint,
            "payload": FHIR_JSON,
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": content}]},
        },
    }


def value(params: dict[str, Any], name: str) -> Any:
    [found] = [p for p in params["parameter"] if p["name"] == name]
    return next(v for k, v in found.items() if k.startswith("value"))


def status_params(bundle: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = bundle["entry"][0]["resource"]
    assert params["resourceType"] == "Parameters"
    assert params["meta"]["profile"] == [STATUS_PROFILE]
    return params


def event_number(bundle: dict[str, Any]) -> str:
    [event] = [p for p in status_params(bundle)["parameter"] if p["name"] == "notification-event"]
    return str(next(p["valueString"] for p in event["part"] if p["name"] == "event-number"))


@dataclass
class Setup:
    hub: Hub
    epd: FakeEpd
    fhir: httpx.Client
    notifier: FhirNotifier
    projector: FhirProjector

    def read(self, path: str) -> dict[str, Any]:
        return fhir_body(self.fhir.get(path), 200)

    def subscribe(self, criteria: str, hook: str, content: str = "full-resource") -> str:
        body = subscription(criteria, self.epd.hook(hook), content)
        created = fhir_body(self.fhir.post("/Subscription", json=body), 201)
        assert created["status"] == "requested"
        sid = str(created["id"])
        self.tick_until(lambda: self.read(f"/Subscription/{sid}")["status"] == "active")
        [handshake] = self.received(hook)
        assert value(status_params(handshake), "type") == "handshake"
        return sid

    def received(self, hook: str, since: int = 0) -> list[dict[str, Any]]:
        """Every notification the hook got (valid R4, type history), from the ``since``-th."""
        bundles = []
        for request in self.epd.posts(f"/hooks/{hook}")[since:]:
            assert isinstance(request.body, dict)
            validated(request.body)
            assert request.body["type"] == "history"
            bundles.append(request.body)
        return bundles

    def events(self, hook: str, since: int = 0) -> list[dict[str, Any]]:
        return [
            b
            for b in self.received(hook, since)
            if value(status_params(b), "type") == "event-notification"
        ]

    def tick(self) -> None:
        """What the hub's loops do: the projection after a commit, then the notifications."""
        self.projector.tick()
        self.notifier.tick()

    def tick_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run the loops' rounds until ``done()`` holds after one."""

        def ticked_and_done() -> bool:
            self.tick()
            return done()

        wait_until(ticked_and_done, timeout, "done before the deadline")

    def transactions(self) -> list[Recorded]:
        return [r for r in self.epd.posts("/fhir") if isinstance(r.body, dict)]

    def pushes(self) -> list[FhirOutbox]:
        with self.hub.server.app.state.hub.db.read() as session:
            rows = session.exec(
                select(FhirOutbox)
                .where(col(FhirOutbox.channel) == "epd-push")
                .order_by(col(FhirOutbox.pk))
            ).all()
            return list(rows)


@contextmanager
def epd_hub(tmp_path: Path, epd: FakeEpd, **changes: Any) -> Iterator[Setup]:
    """A hub like results_hub's (Task Manager on the test's clock) with FHIR settings."""
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path, CODES),
        task_manager=False,
        fhir_notify_backoff_seconds=0.05,
        **changes,
    )
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        state = server.app.state
        state.hub.clock.set(lambda: now[0])
        hub = Hub(server, now)
        fhir = httpx.Client(base_url=server.url + "/fhir", headers=HEADERS, timeout=30)
        try:
            yield Setup(hub, epd, fhir, state.hub.notifier, state.hub.projector)
        finally:
            fhir.close()
            hub.close()
            state.hub.notifier.close()


@pytest.fixture
def epd() -> Iterator[FakeEpd]:
    with running_epd() as server:
        yield server


@pytest.fixture
def setup(tmp_path: Path, epd: FakeEpd) -> Iterator[Setup]:
    with epd_hub(tmp_path, epd) as built:
        yield built


# -- subscriptions -----------------------------------------------------------------------------


def test_final_reports_reach_a_subscribed_epd_once(setup: Setup) -> None:
    sid = setup.subscribe("DiagnosticReport?status=final", "reports")
    answer = setup.read(f"/Subscription/{sid}/$status")
    assert answer["type"] == "searchset" and answer["total"] == 1
    [status] = [e["resource"] for e in answer["entry"]]
    assert status["meta"]["profile"] == [STATUS_PROFILE]
    assert value(status, "status") == "active" and value(status, "type") == "query-status"
    assert value(status, "events-since-subscription-start") == "0"

    study, items = setup.hub.routed_study()
    fracture, bone_age = items["AIFI-FRACTURE"], items["AIFI-BONEAGE"]
    perform(setup.hub, fracture, fracture_report(study))
    setup.tick()
    assert setup.read(f"/DiagnosticReport/{fracture}")["status"] == "preliminary"
    assert setup.events("reports") == []  # supervised: nothing until a radiologist accepts

    accepted = setup.hub.api.post(f"/results/{fracture}/accept", json={"reviewer": "dr. Jansen"})
    assert accepted.status_code == 200, accepted.text
    setup.tick_until(lambda: len(setup.events("reports")) == 1)
    perform(setup.hub, bone_age, bone_age_report(study))  # autonomous: final at once
    setup.tick_until(lambda: len(setup.events("reports")) == 2)
    setup.tick()

    first, second = setup.events("reports")
    for bundle, uid, number in ((first, fracture, "1"), (second, bone_age, "2")):
        params = status_params(bundle)
        assert value(params, "subscription")["reference"].endswith(f"/Subscription/{sid}")
        assert value(params, "topic") == "DiagnosticReport?status=final"
        assert event_number(bundle) == number
        [entry] = bundle["entry"][1:]
        assert entry["fullUrl"].endswith(f"/fhir/DiagnosticReport/{uid}")
        assert entry["resource"]["id"] == uid and entry["resource"]["status"] == "final"
    [status] = [e["resource"] for e in setup.read(f"/Subscription/{sid}/$status")["entry"]]
    assert value(status, "events-since-subscription-start") == "2"


def test_completed_tasks_reach_an_id_only_subscription(setup: Setup) -> None:
    setup.subscribe("Task?status=completed,failed", "tasks", content="id-only")
    study, items = setup.hub.routed_study()
    uid = items["AIFI-BONEAGE"]
    txn = setup.hub.claim(uid)
    setup.tick()
    assert setup.events("tasks") == []  # in progress is not asked for
    report = bone_age_report(study)
    assert setup.hub.stow([report]).status_code == 200
    assert setup.hub.complete(uid, txn, [report]).status_code == 200
    setup.tick_until(lambda: len(setup.events("tasks")) >= 1)
    setup.tick()

    [bundle] = setup.events("tasks")  # one event: the Task became completed
    assert event_number(bundle) == "1"
    assert value(status_params(bundle), "topic") == "Task?status=completed,failed"
    [entry] = bundle["entry"][1:]
    assert "resource" not in entry  # id-only
    assert entry["fullUrl"].endswith(f"/fhir/Task/{uid}")
    # the EPD follows the id
    assert setup.read(entry["fullUrl"].split("/fhir", 1)[1])["status"] == "completed"


def test_a_subscription_in_error_recovers_without_losing_or_repeating(setup: Setup) -> None:
    sid = setup.subscribe("DiagnosticReport?status=final", "inbox", content="id-only")
    setup.epd.down()
    for _ in range(2):
        study, items = setup.hub.routed_study()
        perform(setup.hub, items["AIFI-BONEAGE"], bone_age_report(study))
    setup.tick()
    failing = setup.read(f"/Subscription/{sid}")
    assert failing["status"] == "error"
    assert "503" in failing["error"] and "maintenance" in failing["error"]
    [status] = [e["resource"] for e in setup.read(f"/Subscription/{sid}/$status")["entry"]]
    assert value(status, "status") == "error" and "503" in value(status, "error")["text"]
    assert len(setup.epd.posts("/hooks/inbox")) == 2  # the handshake, then one try of event 1

    setup.epd.up()
    since = len(setup.epd.posts("/hooks/inbox"))
    setup.tick_until(lambda: len(setup.events("inbox", since)) == 2)
    setup.tick()
    assert [event_number(b) for b in setup.received("inbox", since)] == ["1", "2"]
    recovered = setup.read(f"/Subscription/{sid}")
    assert recovered["status"] == "active" and "error" not in recovered


# -- the push to the hospital's EPD ------------------------------------------------------------


def test_final_reports_are_pushed_to_the_hospitals_epd_once(tmp_path: Path, epd: FakeEpd) -> None:
    with epd_hub(tmp_path, epd, epd_fhir_urls={"default": epd.fhir_base}) as setup:
        study, items = setup.hub.routed_study()
        uid = items["AIFI-FRACTURE"]
        perform(setup.hub, uid, fracture_report(study))
        setup.tick()
        assert setup.transactions() == []  # preliminary stays at the hub
        accepted = setup.hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. Jansen"})
        assert accepted.status_code == 200, accepted.text
        setup.tick_until(lambda: len(setup.transactions()) == 1)

        [push] = setup.transactions()
        assert isinstance(push.body, dict)
        bundle = validated(push.body)
        assert bundle["type"] == "transaction"
        kinds = [e["request"]["url"] for e in bundle["entry"]]
        assert kinds[0] == "DiagnosticReport" and set(kinds[1:]) == {"Observation"}
        assert all(e["request"]["method"] == "POST" for e in bundle["entry"])
        assert bundle["entry"][0]["request"]["ifNoneExist"] == (
            f"identifier=urn:dicom:uid|urn:oid:{uid}"
        )
        assert all(e["request"].get("ifNoneExist") for e in bundle["entry"])
        [report] = epd.resources["DiagnosticReport"].values()
        assert report["status"] == "final"
        assert len(epd.resources["Observation"]) == len(kinds) - 1
        assert [r.state for r in setup.pushes()] == ["delivered"]

        # the same report again (the outbox row sent once more): the EPD creates nothing
        with setup.hub.server.app.state.hub.db.write() as session:
            row = session.exec(select(FhirOutbox).where(col(FhirOutbox.focus_id) == uid)).one()
            row.state, row.next_attempt_at = "pending", datetime.now(UTC) - timedelta(seconds=1)
            session.add(row)
        setup.tick_until(lambda: len(setup.transactions()) == 2)
        assert len(epd.resources["DiagnosticReport"]) == 1
        assert len(epd.resources["Observation"]) == len(kinds) - 1

        # the EPD is down: retried, arrives once it is up
        epd.down()
        study, items = setup.hub.routed_study()
        perform(setup.hub, items["AIFI-BONEAGE"], bone_age_report(study))
        setup.tick()
        waiting = setup.pushes()[-1]
        assert waiting.state == "pending" and "503" in (waiting.last_error or "")
        epd.up()
        setup.tick_until(lambda: len(epd.resources["DiagnosticReport"]) == 2)
        setup.tick()
        assert [r.state for r in setup.pushes()] == ["delivered", "delivered"]
        assert len(setup.transactions()) == 4  # 2 above, the refused try, the delivery


# -- bad input through the API ------------------------------------------------------------------


def test_bad_subscriptions_are_refused_with_an_operation_outcome(setup: Setup) -> None:
    hook = setup.epd.hook("x")
    post = setup.fhir.post
    for channel in ("websocket", "email"):
        body = subscription("DiagnosticReport?status=final", hook, channel=channel)
        refused(post("/Subscription", json=body), 422, channel)
    unknown = subscription("DiagnosticReport?colour=red", hook)
    refused(post("/Subscription", json=unknown), 422, "colour")
    refused(post("/Subscription", json=subscription("Patient?name=x", hook)), 422, "Patient")
    ftp = subscription("Task?status=completed", "ftp://epd.example/inbox")
    refused(post("/Subscription", json=ftp), 422, "endpoint")
    refused(post("/Subscription", content=b'{"resourceType": "Subscription",'), 400, "JSON")
    huge = subscription("Task?status=completed", hook)
    huge["reason"] = "x" * (2 * 1024 * 1024)
    refused(post("/Subscription", json=huge), 413)
    assert setup.read("/Subscription")["total"] == 0
    assert setup.epd.posts("/hooks/x") == []

    sid = setup.subscribe("Task?status=completed", "x")  # version 1 requested, 2 active
    current = setup.read(f"/Subscription/{sid}")
    stale = {**current, "reason": "changed"}
    answer = setup.fhir.put(f"/Subscription/{sid}", json=stale, headers={"If-Match": 'W/"1"'})
    refused(answer, 412)
    assert setup.read(f"/Subscription/{sid}") == current


def test_the_epd_changes_only_its_own_tasks_and_only_to_cancel(setup: Setup) -> None:
    _study, items = setup.hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    mirrored = setup.read(f"/Task/{uid}")
    for status in ("completed", "cancelled"):
        changed = {**mirrored, "status": status}
        refused(setup.fhir.put(f"/Task/{uid}", json=changed), 422, "Task")
    assert setup.read(f"/Task/{uid}") == mirrored

    ask = request_task("AIFI-FRACTURE", accession_focus("ACC-NOT-YET-HERE"))
    created = fhir_body(setup.fhir.post("/Task", json=ask), 201)
    assert created["status"] == "requested"
    cancel = {**created, "status": "cancelled", "statusReason": {"text": "ordered twice"}}
    answered = fhir_body(setup.fhir.put(f"/Task/{created['id']}", json=cancel), 200)
    assert answered["status"] == "cancelled"
    after = setup.read(f"/Task/{created['id']}")
    assert after["status"] == "cancelled"
    assert after["requester"] == {"display": "Dr. Emergency"}
