"""Subscriptions relayed to the EPD and the EPD push at the gateway (issue 17), against a real
hub on uvicorn (its FHIR API, the bone-age reference product doing its work) and the
stand-in EPD (tests/support/epd.py, a real HTTP server).

The gateway's side runs in the test's process over its own database: the EPD's
Subscriptions (:class:`GatewaySubscriptions`, what the facade routes Subscription
interactions to), the relay and the push (ticked by the test, as the worker process's loops
do). The relay reaches the hub through a front door the test can close: a second uvicorn
server over the same hub app on a port of its own, stopped for "the hub is down" (the
connection is refused, as for a hub that is really gone) and started again on that port.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from sqlmodel import select

from aifi.errors import NotFound, Unprocessable
from aifi.fhir.codes import PATIENT_ID_SYSTEM
from aifi.fhir.search import parse_search
from aifi.fhir.subscriptions import HEARTBEAT_PERIOD_URL, PAYLOAD_CONTENT_URL, STATUS_PROFILE
from aifi.gateway.app import build_gateway
from aifi.gateway.deid import Profile, Pseudonymiser
from aifi.gateway.fhir.backend import SqlFhirIdentities
from aifi.gateway.fhir.changes import ChangeFollower
from aifi.gateway.fhir.epd_push import EpdPusher
from aifi.gateway.fhir.hub_fhir import HubFhir
from aifi.gateway.fhir.subscription_relay import SubscriptionRelay
from aifi.gateway.fhir.subscriptions import GatewaySubscriptions
from aifi.gateway.fhir.translate import FhirTranslator, hub_patient_id
from aifi.gateway.persistence.fhir_tables import EpdPushRow, RelayState
from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.settings import GatewaySettings
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, free_port, run_live_server, running_hub
from tests.contract.test_gateway_results import KEY, Sent, perform, send_study
from tests.support.epd import FakeEpd, Recorded, running_epd
from tests.support.migrations import downgrade, migrated_gateway_database, schema_differences
from tests.support.wait import wait_until

pytestmark = pytest.mark.filterwarnings(
    # as in test_gateway_results: the bone-age product's results for a pseudonymous name
    "ignore:The string .* is unlikely to represent the intended person name:UserWarning"
)
T = TypeVar("T")
TENANT = "default"
GATEWAY_BASE = "https://gateway.hospital.test/fhir"


# -- the hub and its front door -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A hub with its background loops and the bone-age product for the default tenant."""
    folder = tmp_path_factory.mktemp("hub")
    rules = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    rules["tenants"] = {"default": ["AIFI-BONEAGE"]}
    (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
    settings = Settings(data_dir=folder / "data", rules_file=folder / "rules.yaml")
    with running_hub(settings, lifespan=True) as server:
        yield server


class FrontDoor:
    """A uvicorn server over the hub's app on a fixed port, that can be closed and opened
    again (the hub unreachable, then back)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 20, "the door")

    def close(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
        self._server = self._thread = None


@pytest.fixture
def front(hub: LiveServer) -> Iterator[FrontDoor]:
    door = FrontDoor(hub.app)
    door.open()
    yield door
    door.close()


@pytest.fixture
def epd() -> Iterator[FakeEpd]:
    with running_epd() as server:
        yield server


# -- the gateway's FHIR relay -------------------------------------------------------------------


@dataclass
class Relay:
    """The gateway's side: its database (with the pseudonym map), the EPD's Subscriptions,
    the relay and (optionally) the EPD push."""

    db: Database
    pseudonymiser: Pseudonymiser
    subscriptions: GatewaySubscriptions
    relay: SubscriptionRelay
    pusher: EpdPusher | None

    def tick(self) -> int:
        """One round of each worker, as the worker process's loops run them."""
        worked = self.relay.tick()
        if self.pusher is not None:
            worked += self.pusher.tick()
        return worked

    def until(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Tick until ``condition()`` is truthy; its value."""

        def look() -> T:
            self.tick()
            return condition()

        return wait_until(look, timeout, what)

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self.subscriptions.read(TENANT, "Subscription", subscription_id).content

    def until_status(
        self, subscription_id: str, status: str, timeout: float = 15
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            self.tick()
            content = self.subscription(subscription_id)
            return content if content.get("status") == status else None

        return wait_until(
            reached,
            timeout,
            lambda: (
                f"Subscription/{subscription_id} {status}: {self.subscription(subscription_id)}"
            ),
        )

    def subscribe(
        self,
        epd: FakeEpd,
        criteria: str,
        hook: str,
        *,
        content: str = "full-resource",
        heartbeat: int | None = None,
    ) -> str:
        channel: dict[str, Any] = {
            "type": "rest-hook",
            "endpoint": epd.hook(hook),
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": content}]},
        }
        if heartbeat is not None:
            channel["extension"] = [{"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": heartbeat}]
        resource = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "AI results for the EPD",
            "criteria": criteria,
            "channel": channel,
        }
        created = self.subscriptions.create(TENANT, resource)
        assert created.created and created.stored.content["status"] == "requested"
        return created.stored.resource_id


@contextlib.contextmanager
def relay(folder: Path, hub_url: str, *, epd_url: str | None = None) -> Iterator[Relay]:
    """The gateway's relay over a database in ``folder`` (the same folder again: the same
    gateway restarted), reaching the hub at ``hub_url``; with ``epd_url`` also the push."""
    folder.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{folder / 'gateway.db'}", migrations=GATEWAY_MIGRATIONS)
    db.migrate()
    hub_fhir = HubFhir(httpx.Client(base_url=hub_url, timeout=10))
    translator = _translator(db, f"{GATEWAY_BASE.rsplit('/fhir', 1)[0]}/dicomweb")
    first, longest = 0.2, 0.5  # backoff: short, so a recovery shows at once
    follower = ChangeFollower(db, hub_fhir, backoff_seconds=first, max_backoff_seconds=longest)
    subscriptions = GatewaySubscriptions(db, base_url=GATEWAY_BASE)
    worker = SubscriptionRelay(
        db,
        follower,
        translator,
        base_url=GATEWAY_BASE,
        timeout_seconds=5,
        backoff_seconds=first,
        max_backoff_seconds=longest,
    )
    pusher = None
    if epd_url is not None:
        epd = httpx.Client(timeout=10)
        pusher = EpdPusher(
            db,
            follower,
            hub_fhir,
            translator,
            epd_url,
            epd,
            backoff_seconds=first,
            max_backoff_seconds=longest,
        )
    try:
        yield Relay(db, Pseudonymiser(Profile(), KEY), subscriptions, worker, pusher)
    finally:
        worker.close()
        if pusher is not None:
            pusher.close()
        hub_fhir.close()
        db.dispose()


def _translator(db: Database, dicomweb_base: str) -> FhirTranslator:
    return FhirTranslator(SqlFhirIdentities(db), KEY, Profile(), dicomweb_base)


# -- helpers ------------------------------------------------------------------------------------


def bodies(epd: FakeEpd, hook: str) -> list[dict[str, Any]]:
    return [r.body for r in epd.posts(f"/hooks/{hook}") if isinstance(r.body, dict)]


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The SubscriptionStatus Parameters of a notification, as name → value."""
    params = bundle["entry"][0]["resource"]
    assert params["meta"]["profile"] == [STATUS_PROFILE]
    out: dict[str, Any] = {}
    for p in params["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        out.setdefault(p["name"], []).append(value)
    return out


def kind_of(bundle: dict[str, Any]) -> str:
    return str(status_of(bundle)["type"][0])


def events(epd: FakeEpd, hook: str) -> list[dict[str, Any]]:
    return [b for b in bodies(epd, hook) if kind_of(b) == "event-notification"]


def assert_no_pseudonym(data: object, sent: Sent) -> None:
    """No UID, patient or accession pseudonym, nor the hub's Patient id, anywhere."""
    text = json.dumps(data)
    hub_ids = {hub_patient_id(fact.patient.pseudo_id) for fact in sent.facts}
    for pseudonym in sent.pseudonyms | hub_ids:
        assert pseudonym not in text, f"pseudonym {pseudonym} reached the EPD: {text[:400]}"


# -- tests --------------------------------------------------------------------------------------


def test_the_epd_gets_a_handshake_reidentified_events_heartbeats_and_one_push(
    tmp_path: Path, hub: LiveServer, front: FrontDoor, epd: FakeEpd
):
    patient_id = "GW-SUB-4711"
    with relay(tmp_path / "gw", front.url, epd_url=epd.fhir_base) as gw:
        gw.tick()  # the push follows from here on
        patient = f"{PATIENT_ID_SYSTEM}|{patient_id}"
        tasks = gw.subscribe(epd, f"Task?patient:identifier={patient}", "tasks", heartbeat=1)
        reports = gw.subscribe(
            epd, f"DiagnosticReport?patient:identifier={patient}&status=final", "reports"
        )
        for sid in (tasks, reports):
            gw.until_status(sid, "active")
        handshake = bodies(epd, "tasks")[0]
        assert kind_of(handshake) == "handshake"
        assert status_of(handshake)["subscription"][0]["reference"] == (
            f"{GATEWAY_BASE}/Subscription/{tasks}"
        )
        # the EPD's own criteria in the notification, never the hub's pseudonymised query
        assert status_of(handshake)["topic"][0] == f"Task?patient:identifier={patient}"

        epd.failing.add("/fhir")  # the EPD's FHIR server down when the report is final
        sent = send_study(gw, hub, "Sub^Scriber", patient_id)  # type: ignore[arg-type]
        perform(hub)

        report_events = gw.until(lambda: events(epd, "reports"), 60, "the report's notification")
        report = report_events[0]["entry"][1]["resource"]
        assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
        assert report["subject"]["identifier"]["value"] == patient_id
        assert report_events[0]["entry"][1]["fullUrl"].startswith(GATEWAY_BASE + "/")

        task_events = gw.until(lambda: events(epd, "tasks"), 20, "Task events")
        numbers = [
            int(status_of(e)["notification-event"][0][0]["valueString"]) for e in task_events
        ]
        assert numbers == list(range(1, len(numbers) + 1)), "numbered from 1, without gaps"
        task = task_events[-1]["entry"][1]["resource"]
        assert task["for"]["identifier"]["value"] == patient_id
        focus = task["focus"]["reference"]
        assert focus == f"ImagingStudy/{sent.study_uid}", "the original study UID"
        for bundle in bodies(epd, "tasks") + bodies(epd, "reports"):
            assert_no_pseudonym(bundle, sent)

        # heartbeats while nothing happens (period 1 s)
        def beats() -> list[dict[str, Any]]:
            return [b for b in bodies(epd, "tasks") if kind_of(b) == "heartbeat"]

        # the hub saw only pseudonymised searches: the original identifiers are nowhere in
        # its database or files (the EPD subscribed with them and was notified with them)
        hub_data = Path(hub.app.state.hub.settings.data_dir)
        hub_files = [p for p in hub_data.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in hub_files), "the scan looks at the hub's database"
        for path in hub_files:
            data = path.read_bytes()
            for original in (patient_id, sent.study_uid, str(sent.originals[0].AccessionNumber)):
                assert original.encode() not in data, f"{original} at the hub in {path}"

        beat = status_of(gw.until(beats, 15, "a heartbeat")[0])
        assert int(beat["events-since-subscription-start"][0]) >= len(task_events)

        # the push: tried, refused by the EPD (503), kept for a retry
        def push_waits() -> str | None:
            with gw.db.read() as session:
                row = session.exec(select(EpdPushRow)).first()
            return row.last_error if row is not None and row.last_error else None

        assert "503" in str(gw.until(push_waits, 20, "a failed push attempt"))

    # the gateway restarts (the same database); the EPD is back
    epd.failing.discard("/fhir")
    with relay(tmp_path / "gw", front.url, epd_url=epd.fhir_base) as gw:
        assert gw.subscription(tasks)["status"] == "active", "subscriptions survive a restart"

        def pushed() -> list[Recorded]:
            return [r for r in epd.posts("/fhir") if "DiagnosticReport" in epd.resources]

        first = gw.until(pushed, 20, "the push of the final report")[-1].body
        assert first["type"] == "transaction"
        assert all(
            e["request"]["method"] == "POST" and e["request"]["ifNoneExist"] for e in first["entry"]
        )
        pushed_report = first["entry"][0]["resource"]
        assert pushed_report["resourceType"] == "DiagnosticReport"
        assert pushed_report["subject"]["identifier"]["value"] == patient_id
        assert_no_pseudonym(first, sent)
        assert len(epd.resources["DiagnosticReport"]) == 1
        observations = len(epd.resources.get("Observation", {}))
        posts = len(epd.posts("/fhir"))

        # sent again (a lost answer, a retry): nothing is created twice
        with gw.db.write() as session:
            row = session.exec(select(EpdPushRow)).one()
            assert row.state == RelayState.DELIVERED
            row.state = RelayState.PENDING
            session.add(row)
        gw.until(lambda: len(epd.posts("/fhir")) == posts + 1, 20, "a second push")
        assert len(epd.resources["DiagnosticReport"]) == 1
        assert len(epd.resources.get("Observation", {})) == observations
        for _ in range(3):
            gw.tick()  # the report is seen again at each poll: still one row, one push
        with gw.db.read() as session:
            assert len(session.exec(select(EpdPushRow)).all()) == 1
        assert len(epd.posts("/fhir")) == posts + 1


def test_the_epd_endpoint_down_shows_as_error_with_the_reason_and_up_as_active(
    tmp_path: Path, front: FrontDoor, epd: FakeEpd
):
    with relay(tmp_path / "gw", front.url) as gw:
        epd.failing.add("/hooks/down")
        sid = gw.subscribe(epd, "Task?status=completed", "down", heartbeat=1)
        failed = gw.until_status(sid, "error")
        assert "handshake failed" in failed["error"] and "503" in failed["error"], failed
        epd.failing.discard("/hooks/down")
        active = gw.until_status(sid, "active")
        assert "error" not in active
        # a heartbeat that cannot be delivered: error again, then active on the next success
        epd.failing.add("/hooks/down")
        again = gw.until_status(sid, "error")
        assert "heartbeat failed" in again["error"], again
        epd.failing.discard("/hooks/down")
        gw.until_status(sid, "active")
        kinds = [kind_of(b) for b in bodies(epd, "down")]
        assert kinds[0] == "handshake" and "heartbeat" in kinds


def test_the_hub_down_shows_as_error_naming_the_hub_and_recovers(
    tmp_path: Path, front: FrontDoor, epd: FakeEpd
):
    with relay(tmp_path / "gw", front.url) as gw:
        sid = gw.subscribe(epd, "DiagnosticReport?status=final", "hubdown")
        gw.until_status(sid, "active")
        front.close()
        failed = gw.until_status(sid, "error")
        assert failed["error"].startswith("hub unreachable"), failed
        query = parse_search("Subscription", [("status", "error")], strict=True)
        search = gw.subscriptions.search(TENANT, query)
        assert [s.resource_id for s in search.matches] == [sid]
        front.open()
        recovered = gw.until_status(sid, "active")
        assert "error" not in recovered


def test_subscriptions_are_read_searched_updated_and_deleted_like_at_the_hub(
    tmp_path: Path, front: FrontDoor, epd: FakeEpd
):
    with relay(tmp_path / "gw", front.url) as gw:
        with pytest.raises(Unprocessable):
            gw.subscriptions.create(
                TENANT,
                {
                    "resourceType": "Subscription",
                    "criteria": "Task?status=completed",
                    "channel": {"type": "websocket"},
                },
            )
        sid = gw.subscribe(epd, "Task?status=completed", "crud")
        gw.until_status(sid, "active")
        found = gw.subscriptions.search(TENANT, parse_search("Subscription", [], strict=True))
        assert [s.resource_id for s in found.matches] == [sid]
        current = gw.subscriptions.read(TENANT, "Subscription", sid)
        off = gw.subscriptions.update(TENANT, {**current.content, "status": "off"})
        assert off.stored.content["status"] == "off"
        assert off.stored.version_id > current.version_id
        status = gw.subscriptions.status_bundle(TENANT, sid)
        assert status["entry"][0]["resource"]["parameter"][2]["valueCode"] == "off"
        with pytest.raises(NotFound):
            gw.subscriptions.read("another-hospital", "Subscription", sid)
        gw.subscriptions.delete(TENANT, "Subscription", sid)
        with pytest.raises(NotFound):
            gw.subscriptions.read(TENANT, "Subscription", sid)


def test_the_epd_subscribes_through_the_gateways_fhir_api(
    tmp_path: Path, hub: LiveServer, epd: FakeEpd
):
    """The whole gateway (in-process workers): Subscription create/read/search/$status/
    delete at ``/fhir``, the handshake from the worker's relay."""
    (tmp_path / "gateway.yaml").write_text("fhir:\n  poll_seconds: 0.2\n")
    settings = GatewaySettings(
        data_dir=tmp_path / "data",
        hub=hub.url,
        dev_mode=True,
        auth="off",
        worker_process=False,
        dimse_port=free_port(),
        config_file=tmp_path / "gateway.yaml",
        fsync=False,
    )
    gateway = build_gateway(settings)
    assert "fhir-subscriptions" in [w.name for w in gateway.workers]
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "AI results",
        "criteria": "Task?status=completed",
        "channel": {
            "type": "rest-hook",
            "endpoint": epd.hook("api"),
            "payload": "application/fhir+json",
        },
    }
    with (
        run_live_server(gateway.app, lifespan=True) as server,
        httpx.Client(base_url=server.url + "/fhir", timeout=10) as client,
    ):
        created = client.post("/Subscription", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "requested"
        sid = created.json()["id"]

        def active() -> dict[str, Any] | None:
            current = client.get(f"/Subscription/{sid}").json()
            return current if current["status"] == "active" else None

        wait_until(active, 15, "the handshake")
        assert kind_of(bodies(epd, "api")[0]) == "handshake"
        found = client.get("/Subscription", params={"status": "active"}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [sid]
        status = client.get(f"/Subscription/{sid}/$status").json()
        assert status["entry"][0]["resource"]["parameter"][2]["valueCode"] == "active"
        bad = client.post("/Subscription", json={**body, "channel": {"type": "email"}})
        assert bad.status_code == 422 and bad.json()["resourceType"] == "OperationOutcome"
        assert client.delete(f"/Subscription/{sid}").status_code == 204
        assert client.get(f"/Subscription/{sid}").status_code == 404


def test_the_migration_builds_exactly_the_relay_tables_and_goes_back(tmp_path: Path):
    with migrated_gateway_database(tmp_path) as db:
        relay_tables = ("gw_fhir_", "gw_epd_push")
        differences = schema_differences(db)
        assert [d for d in differences if any(t in str(d) for t in relay_tables)] == []
        tables = downgrade(db, "0004")
        assert "gw_result" in tables and not any(t.startswith(relay_tables) for t in tables)
