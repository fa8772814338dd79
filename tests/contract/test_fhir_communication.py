"""Urgent AI findings reach people (issue 19 point 3), on a real uvicorn hub: a FHIR R4
Communication (communication.html) per urgent finding, found by the FHIR searches, delivered
to a subscribed EPD (rest-hook Subscription, Subscriptions R5 Backport IG for R4), and the
urgent-finding webhook (ids only, retried on the FHIR outbox, audited as an export).

The hub runs without its background loops: the tests tick the FHIR projection and the
notifier themselves and poll with a deadline. The EPD and the webhook receiver are one real
HTTP server (tests/support/epd.py)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydicom import Dataset
from sqlmodel import col, select

from aifi.fhir import mapping
from aifi.fhir.resources import validated
from aifi.fhir.subscriptions import PAYLOAD_CONTENT_URL
from aifi.fhir.views import PatientView, ProductView, ResultView
from aifi.gateway.fhir.backend import GATEWAY_TYPES
from aifi.hub.persistence.tables import AuditRecord, FhirOutbox
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.contract.test_results import Hub, fracture_report, rules_file
from tests.support.epd import FakeEpd, Recorded, running_epd
from tests.support.fhir_translation import MemoryIdentities, translator_over, world
from tests.support.wait import wait_until

FHIR = {"Accept": "application/fhir+json"}
PAGER = "/hooks/pager"
EPD_HOOK = "/hooks/epd"
CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
T = TypeVar("T")


class Chain:
    """The hub (DICOMweb, API), the EPD's FHIR client, and the peer that receives hooks."""

    def __init__(self, server: LiveServer, now: list[datetime], peer: FakeEpd) -> None:
        self.hub = Hub(server, now)
        self.peer = peer
        self.state = server.app.state.hub
        self.fhir = httpx.Client(base_url=server.url + "/fhir", headers=FHIR, timeout=30)

    def close(self) -> None:
        self.fhir.close()
        self.hub.close()

    def search(self, path: str, **params: Any) -> list[dict[str, Any]]:
        response = self.fhir.get(path, params=params)
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        validated(bundle)
        return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]

    def subscribe(self, criteria: str) -> str:
        channel = {
            "type": "rest-hook",
            "endpoint": self.peer.url + EPD_HOOK,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": "full-resource"}]},
        }
        resource = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "urgent findings",
            "criteria": criteria,
            "channel": channel,
        }
        response = self.fhir.post(
            "/Subscription", json=resource, headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code == 201, response.text
        sid = str(response.json()["id"])
        self.until(lambda: self.status(sid) == "active", message="handshake")
        return sid

    def status(self, sid: str) -> str:
        return str(self.fhir.get(f"/Subscription/{sid}").json()["status"])

    def notify(self) -> None:
        """One round of the FHIR projection and of the notifier (the loops' work)."""
        self.state.projector.tick()
        self.state.notifier.tick()

    def until(self, condition: Callable[[], T | None], message: str) -> T:
        """Run rounds of :meth:`notify` until ``condition()`` holds (with a deadline)."""

        def ticked() -> T | None:
            self.notify()
            return condition()

        return wait_until(ticked, message=message)

    def ipe_result(self, present: bool) -> tuple[list[Dataset], str]:
        """An AIFI-IPE workitem performed with an embolism present or absent."""
        study, items = self.hub.routed_study()
        uid = items["AIFI-IPE"]
        txn = self.hub.claim(uid)
        report = fracture_report(study, present=present, code="AIFI-IPE")
        assert self.hub.stow([report]).status_code == 200
        assert self.hub.complete(uid, txn, [report]).status_code == 200
        self.notify()
        return study, uid

    def outbox(self, channel: str) -> list[FhirOutbox]:
        with self.state.db.read() as session:
            statement = select(FhirOutbox).where(col(FhirOutbox.channel) == channel)
            return list(session.exec(statement.order_by(col(FhirOutbox.pk))).all())


@pytest.fixture
def peer() -> Iterator[FakeEpd]:
    with running_epd() as server:
        yield server


@contextlib.contextmanager
def chain_for(
    tmp_path: Path, peer: FakeEpd, database_url: str | None = None, **options: Any
) -> Iterator[Chain]:
    """A hub subscribed to AIFI-IPE only, whose webhook is the peer's ``/hooks/pager``."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rules_file=rules_file(tmp_path, ["AIFI-IPE"]),
        task_manager=False,
        fhir_notify=False,
        fhir_notify_backoff_seconds=0.2,
        **{"notify_webhook_url": peer.url + PAGER, **options},
    )
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        server.app.state.hub.clock.set(lambda: now[0])
        chain = Chain(server, now, peer)
        try:
            yield chain
        finally:
            chain.close()


def identifiers_of(study: list[Dataset]) -> set[str]:
    """What must never appear in a webhook body: the patient's and the study's identifiers."""
    ds = study[0]
    return {
        str(v)
        for v in (ds.PatientID, ds.get("PatientName"), ds.StudyInstanceUID, ds.AccessionNumber)
        if v
    }


def events(posts: list[Recorded]) -> list[dict[str, Any]]:
    """The focus resources of the event notifications among rest-hook posts."""
    found = []
    for post in posts:
        bundle = post.body
        if not isinstance(bundle, dict):
            continue
        found += [
            e["resource"]
            for e in bundle.get("entry", [])[1:]
            if e.get("resource", {}).get("resourceType") == "Communication"
        ]
    return found


# -- the Communication -----------------------------------------------------------------------


def test_an_urgent_finding_is_one_communication_found_by_the_searches(
    tmp_path: Path, peer: FakeEpd, database_url: str | None
):
    with chain_for(tmp_path, peer, database_url) as chain:
        study, uid = chain.ipe_result(present=True)
        [message] = chain.search("/Communication")
        validated(message)
        assert message["id"] == uid
        assert message["status"] == "completed" and message["priority"] == "urgent"
        assert message["category"][0]["coding"][0] == {
            "system": CATEGORY,
            "code": "alert",
            "display": "Alert",
        }
        about = [a["reference"] for a in message["about"]]
        assert about == [f"DiagnosticReport/{uid}", f"ImagingStudy/{study[0].StudyInstanceUID}"]
        report = chain.fhir.get(f"/DiagnosticReport/{uid}").json()
        assert message["subject"] == report["subject"]
        assert message["recipient"] == [
            {
                "type": "Organization",
                "identifier": {"system": "urn:aifi:tenant", "value": "default"},
                "display": "default",
            }
        ]
        assert message["sender"] == {"reference": "Device/AIFI-IPE"}
        assert message["sent"] and message["topic"]["coding"][0]["code"] == "AIFI-IPE"
        text = message["payload"][0]["contentString"]
        assert text.startswith("Incidental pulmonary embolism: ")
        assert "Pulmonary embolism: present" in text
        assert message["reasonCode"]
        # read and the searches an EPD makes
        assert chain.fhir.get(f"/Communication/{uid}").json()["id"] == uid
        patient = message["subject"]["reference"]
        for params in (
            {"about": f"DiagnosticReport/{uid}"},
            {"priority": "urgent"},
            {"subject": patient},
            {"patient": patient},
            {"category": f"{CATEGORY}|alert", "status": "completed"},
            {"recipient:identifier": "urn:aifi:tenant|default"},
        ):
            assert [m["id"] for m in chain.search("/Communication", **params)] == [uid], params
        assert chain.search("/Communication", priority="routine") == []
        # further refreshes of the same result (review) make no second one, nor a new version
        accepted = chain.hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. A"})
        assert accepted.status_code == 200
        chain.notify()
        [again] = chain.search("/Communication")
        assert again["meta"]["versionId"] == "1"


def test_a_negative_study_makes_no_communication_and_calls_no_webhook(
    tmp_path: Path, peer: FakeEpd
):
    with chain_for(tmp_path, peer) as chain:
        _study, uid = chain.ipe_result(present=False)
        assert chain.hub.result(uid)["result"]["outcome"] == "negative"
        assert chain.fhir.get(f"/DiagnosticReport/{uid}").status_code == 200
        assert chain.search("/Communication") == []
        assert chain.outbox("webhook") == [] and peer.posts(PAGER) == []


def test_the_capability_statement_lists_communication(tmp_path: Path, peer: FakeEpd):
    with chain_for(tmp_path, peer) as chain:
        statement = chain.fhir.get("/metadata").json()
        [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Communication"]
        names = {p["name"] for p in entry["searchParam"]}
        assert {"about", "priority", "subject", "patient", "status", "category"} <= names
        assert {i["code"] for i in entry["interaction"]} == {"read", "vread", "search-type"}


# -- delivery to people ----------------------------------------------------------------------


def test_the_communication_is_delivered_to_a_subscribed_epd(tmp_path: Path, peer: FakeEpd):
    with chain_for(tmp_path, peer) as chain:
        chain.subscribe("Communication?priority=urgent")
        chain.ipe_result(present=False)  # no Communication: nothing for the subscriber
        _study, uid = chain.ipe_result(present=True)
        delivered = chain.until(
            lambda: events(peer.posts(EPD_HOOK)),
            message="the Communication at the EPD",
        )
        [message] = delivered
        assert message["id"] == uid and message["priority"] == "urgent"
        assert message["payload"][0]["contentString"].startswith("Incidental pulmonary embolism")
        chain.notify()
        assert len(events(peer.posts(EPD_HOOK))) == 1


def test_the_webhook_is_called_once_retried_after_a_503_and_carries_no_identifier(
    tmp_path: Path, peer: FakeEpd
):
    peer.failing.add(PAGER)
    with chain_for(tmp_path, peer) as chain:
        study, uid = chain.ipe_result(present=True)
        chain.until(lambda: peer.posts(PAGER), message="a first call")
        [refused] = peer.posts(PAGER)
        [row] = chain.outbox("webhook")
        assert row.state == "pending" and "503" in (row.last_error or "")
        peer.failing.discard(PAGER)
        chain.until(
            lambda: chain.outbox("webhook")[0].state == "delivered",
            message="the retry delivered",
        )
        chain.notify()
        first, second = peer.posts(PAGER)  # one refused, one taken: no further call
        assert first.body == second.body == refused.body
        [message] = chain.search("/Communication")
        assert second.body == {
            "type": "urgent-finding",
            "tenant": "default",
            "product": "AIFI-IPE",
            "communication": f"Communication/{uid}",
            "diagnosticReport": f"DiagnosticReport/{uid}",
            "sent": message["sent"],
        }
        text = json.dumps(second.body)
        for identifier in identifiers_of(study):
            assert identifier not in text
        assert "Patient" not in text

        def exports() -> list[AuditRecord] | None:
            with chain.state.db.read() as session:
                rows = session.exec(
                    select(AuditRecord).where(col(AuditRecord.subtype) == "urgent-finding webhook")
                ).all()
            return list(rows) if len(rows) >= 2 else None

        audited = wait_until(exports, message="two audited webhook attempts")
        assert [r.outcome for r in audited] == [4, 0]
        assert all(r.interaction == "export" and r.tenant == "default" for r in audited)


def test_a_tenant_webhook_overrides_the_default(tmp_path: Path, peer: FakeEpd):
    urls = {"default": peer.url + "/hooks/ward"}
    with chain_for(tmp_path, peer, notify_webhook_urls=urls) as chain:
        _study, uid = chain.ipe_result(present=True)
        [call] = chain.until(lambda: peer.posts("/hooks/ward"), message="the tenant's hook")
        assert call.body["communication"] == f"Communication/{uid}"
        assert peer.posts(PAGER) == []


# -- at the gateway: the EPD sees the hospital's identities ------------------------------------


def test_the_gateway_reidentifies_a_communication_and_pseudonymises_its_searches():
    a = world().a
    ids = MemoryIdentities(a)
    fhir = translator_over(ids)
    product = ProductView("AIFI-IPE", "Incidental pulmonary embolism", "v", "1", True)
    workitem = "2.25.98765432109876543210"  # the hub's, not a pseudonym: it stays
    result = ResultView(
        workitem_uid=workitem,
        study_instance_uid=a.study.pseudo_study_uid,
        product=product,
        outcome="positive",
        review_state="awaiting-review",
        summary="Pulmonary embolism: present",
        urgent=True,
        completed_at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    )
    hub_message = mapping.urgent_communication(
        result, tenant="default", patient=PatientView(patient_id=a.patient.pseudo_id)
    )
    assert hub_message is not None
    assert "Communication" in GATEWAY_TYPES
    local = fhir.reidentify(copy.deepcopy(hub_message))
    validated(local)
    assert local["subject"]["reference"] == f"Patient/{a.gateway_patient}"
    assert local["subject"]["identifier"]["value"] == a.patient.original_id
    assert local["about"] == [
        {"reference": f"DiagnosticReport/{workitem}"},
        {"reference": f"ImagingStudy/{a.original.StudyInstanceUID}"},
    ]
    assert local["recipient"] == hub_message["recipient"]
    assert local["payload"] == hub_message["payload"]
    # the EPD's search by its own patient reaches the hub as the pseudonym
    search = fhir.pseudonymise_query(
        "Communication", [("subject", f"Patient/{a.gateway_patient}"), ("priority", "urgent")]
    )
    assert search is not None
    sent = dict(search)
    assert sent["subject"] == f"Patient/{a.hub_patient}" and sent["priority"] == "urgent"
