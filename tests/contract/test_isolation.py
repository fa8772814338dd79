"""Isolation between hospitals (issue 6 point 4), proven from the application's route table.

Hospital B ("default") stores a study, creates a UPS workitem, an EPD Task, a ServiceRequest
and a Subscription; its accesses leave AuditEvents. Then an administrator of hospital A
("alpha") — a client holding every scope — calls EVERY route of the application
(:func:`aifi.hub.auth.policy.iter_routes`, so routes added later are covered without touching
this test) twice: once with B's identifiers in the path and once with identifiers that exist
nowhere. The two answers must have the same status (A cannot even infer that B's objects
exist), and no answer may carry anything of B's (patient name, patient id, accession,
subscription endpoint). Afterwards B's data is unchanged. A route with a path parameter this
test does not know how to fill fails the test: add its filler below.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from pydicom.uid import generate_uid

from aifi.fhir.codes import PRODUCT_SYSTEM
from aifi.hub.auth.policy import RULES, iter_routes, route_methods
from tests.conftest import LiveServer
from tests.support.auth import bearer, register, secured_hub, token_for
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.ups import new_workitem

B_MARKERS = ("Bravo^Hidden", "BRAVO-SECRET-PID", "BRAVO-ACC-77", "bravo-epd.example")
"""Strings only hospital B's data contains; none may ever reach hospital A."""

ALL_SCOPES = [
    "dicomweb.read",
    "dicomweb.write",
    "worklist.performer",
    "worklist.requester",
    "results.read",
    "results.review",
    "admin",
    "system/*.cruds",
]


@dataclass
class World:
    hub: LiveServer
    a_token: str
    b_token: str
    b_admin_token: str
    b: dict[str, str]
    fhir: dict[str, str] = field(default_factory=dict)


def _seed_b(hub: LiveServer, token: str) -> tuple[dict[str, str], dict[str, str]]:
    study = make_study(
        n_series=1,
        per_series=2,
        patient_name="Bravo^Hidden",
        patient_id="BRAVO-SECRET-PID",
        accession="BRAVO-ACC-77",
    )
    body, content_type = multipart_related([to_bytes(ds) for ds in study])
    stored = httpx.post(
        hub.dicomweb + "/studies",
        content=body,
        headers={**bearer(token), "Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    workitem_uid = str(generate_uid())
    created = httpx.post(
        hub.dicomweb + f"/workitems?{workitem_uid}",
        json=[
            new_workitem(
                study_uid=str(study[0].StudyInstanceUID),
                patient_id="BRAVO-SECRET-PID",
                patient_name="Bravo^Hidden",
            )
        ],
        headers={**bearer(token), "Content-Type": "application/dicom+json"},
    )
    assert created.status_code == 201, created.text
    ids = {
        "study": str(study[0].StudyInstanceUID),
        "series": str(study[0].SeriesInstanceUID),
        "instance": str(study[0].SOPInstanceUID),
        "workitem": workitem_uid,
    }
    fhir: dict[str, str] = {}
    fhir_headers = {**bearer(token), "Content-Type": "application/fhir+json"}
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "B's inbox",
        "criteria": "Task?status=completed",
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://bravo-epd.example/hook",
            "payload": "application/fhir+json",
        },
    }
    response = httpx.post(hub.url + "/fhir/Subscription", json=subscription, headers=fhir_headers)
    assert response.status_code == 201, response.text
    fhir["Subscription"] = response.json()["id"]
    order = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"display": "Bravo^Hidden"},
        "code": {"text": "X-ray hand"},
        "identifier": [{"system": "urn:epd:acc", "value": "BRAVO-ACC-77"}],
    }
    response = httpx.post(hub.url + "/fhir/ServiceRequest", json=order, headers=fhir_headers)
    assert response.status_code == 201, response.text
    fhir["ServiceRequest"] = response.json()["id"]
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": PRODUCT_SYSTEM, "code": "AIFI-BONEAGE"}]},
        "focus": {
            "identifier": {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": "BRAVO-ACC-77",
            }
        },
        "requester": {"display": "Dr. Bravo"},
    }
    response = httpx.post(hub.url + "/fhir/Task", json=task, headers=fhir_headers)
    assert response.status_code == 201, response.text
    fhir["Task"] = response.json()["id"]
    return ids, fhir


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with secured_hub(tmp_path_factory.mktemp("isolation") / "data") as hub:
        b_hospital = register(hub, tenant="default", role="hospital")
        b_token = token_for(b_hospital, [*ALL_SCOPES[:2], "worklist.requester", "system/*.cruds"])
        b_admin = token_for(register(hub, tenant="default", role="admin"), ["system/AuditEvent.rs"])
        a_admin = register(hub, tenant="alpha", role="admin")
        a_token = token_for(a_admin, [*ALL_SCOPES, "system/AuditEvent.rs"])
        ids, fhir = _seed_b(hub, b_token)
        # Rows are written just after each response: wait for them, or a loaded machine
        # can ask before the writer thread got to B's accesses.
        assert hub.app.state.hub.audit.flush()
        audit = httpx.get(hub.url + "/fhir/AuditEvent?_count=1", headers=bearer(b_admin)).json()
        assert audit["entry"], "B's accesses left no AuditEvent"
        fhir["AuditEvent"] = audit["entry"][0]["resource"]["id"]
        yield World(hub, a_token, b_token, b_admin, ids, fhir)


def _fill(path: str, ids: dict[str, str], resource_type: str, resource_id: str) -> str:
    fillers = {
        "study": ids["study"],
        "StudyInstanceUID": ids["study"],
        "series": ids["series"],
        "SeriesInstanceUID": ids["series"],
        "instance": ids["instance"],
        "frames": "1",
        "path:path": "00100010",
        "workitem": ids["workitem"],
        "workitem_uid": ids["workitem"],
        "ae_title": "BRAVO_AE",
        "destination": "pacs",
        "request_id": "0" * 32,  # a prior request (issue 17); B has none to leak
        "resource_type": resource_type,
        "resource_id": resource_id,
        "version_id": "1",
        "subscription_id": resource_id,
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in fillers:
            pytest.fail(f"{path}: no filler for path parameter {{{name}}}; add one to this test")
        return fillers[name]

    return re.sub(r"\{([^}]+)\}", fill, path)


def _unknown_ids() -> dict[str, str]:
    return {
        "study": str(generate_uid()),
        "series": str(generate_uid()),
        "instance": str(generate_uid()),
        "workitem": str(generate_uid()),
    }


def _call(hub: LiveServer, method: str, url: str, token: str) -> httpx.Response:
    headers = bearer(token)
    body: bytes | None = None
    if method in ("POST", "PUT", "PATCH"):
        if "/fhir/" in url:
            headers["Content-Type"] = "application/fhir+json"
            body = b'{"resourceType": "Task", "status": "cancelled", "intent": "order"}'
        elif "/dicomweb/workitems" in url:
            headers["Content-Type"] = "application/dicom+json"
            body = b"{}"
        elif "/api/v1/" in url:
            headers["Content-Type"] = "application/json"
            body = b'{"reviewer": "Alpha^Admin"}'
        else:
            headers["Content-Type"] = 'multipart/related; type="application/dicom"; boundary=x'
            body = b"--x--\r\n"
    return httpx.request(method, hub.url + url, headers=headers, content=body, timeout=30)


def _cases(world: World) -> Iterator[tuple[str, str, str, str]]:
    """(method, path template, url with B's ids, url with unknown ids) for every route."""
    for path, route in iter_routes(world.hub.app):
        for method in route_methods(route):
            rule = RULES[(method, path)]
            if rule.public or method == "WEBSOCKET":
                continue
            types = list(world.fhir) if "{resource_type}" in path else [""]
            for kind in types:
                if "{subscription_id}" in path and kind != "Subscription":
                    continue
                resource_id = world.fhir.get(kind, "")
                if "{subscription_id}" in path:
                    resource_id = world.fhir["Subscription"]
                b_url = _fill(path, world.b, kind, resource_id)
                unknown = _fill(path, _unknown_ids(), kind, uuid.uuid4().hex)
                yield method, path, b_url, unknown


def _normalise(text: str, b_url: str, unknown_url: str) -> str:
    for b_part, u_part in zip(b_url.split("/"), unknown_url.split("/"), strict=True):
        if b_part != u_part:
            text = text.replace(u_part, "<id>").replace(b_part, "<id>")
    return text


def test_every_route_hides_another_hospitals_data(world: World) -> None:
    checked: list[str] = []
    for method, path, b_url, unknown_url in _cases(world):
        with_b = _call(world.hub, method, b_url, world.a_token)
        with_unknown = _call(world.hub, method, unknown_url, world.a_token)
        where = f"{method} {path}"
        assert with_b.status_code < 500, f"{where}: {with_b.status_code} {with_b.text[:300]}"
        assert with_b.status_code == with_unknown.status_code, (
            f"{where}: {with_b.status_code} for B's ids but {with_unknown.status_code} for "
            f"unknown ids: A can tell that B's object exists ({with_b.text[:200]})"
        )
        for marker in B_MARKERS:
            assert marker not in with_b.text, f"{where} revealed {marker!r}"
        if with_b.headers.get("content-type", "").startswith(
            ("application/json", "application/fhir")
        ):
            b_body = _normalise(with_b.text, b_url, unknown_url)
            unknown_body = _normalise(with_unknown.text, b_url, unknown_url)
            if with_b.status_code >= 400:
                assert _strip_volatile(b_body) == _strip_volatile(unknown_body), where
        checked.append(where)
    assert len(checked) >= 40, checked


def _strip_volatile(text: str) -> str:
    text = re.sub(r'"(id|lastUpdated|timestamp)":\s*"[^"]*"', '"<v>"', text)
    return re.sub(r"[0-9a-f]{32}", "<hex>", text)


def test_searches_never_return_another_hospitals_data(world: World) -> None:
    hub, token = world.hub, world.a_token
    searches = [
        "/dicomweb/studies?PatientName=Bravo*",
        "/dicomweb/studies",
        "/dicomweb/series",
        "/dicomweb/instances",
        "/dicomweb/workitems",
        "/api/v1/results",
        "/api/v1/notifications",
        *(f"/fhir/{kind}" for kind in world.fhir),
        "/fhir/Task?_include=Task:focus",
        "/fhir/AuditEvent?_count=500",
    ]
    # B's own searches find B's data: A's answers below are empty although there is data
    theirs = {
        "/dicomweb/studies?PatientName=Bravo*": "Bravo^Hidden",
        "/dicomweb/studies": world.b["study"],
        "/dicomweb/series": world.b["series"],
        "/dicomweb/instances": world.b["instance"],
        "/dicomweb/workitems": world.b["workitem"],
        "/fhir/Subscription": "bravo-epd.example",
        "/fhir/ServiceRequest": "BRAVO-ACC-77",
        "/fhir/Task": "BRAVO-ACC-77",
        "/fhir/Task?_include=Task:focus": "BRAVO-ACC-77",
    }
    assert set(theirs) <= set(searches)
    for search, marker in theirs.items():
        response = httpx.get(hub.url + search, headers=bearer(world.b_token), timeout=30)
        assert marker in response.text, f"B's own {search} does not show {marker!r}"
    for search in searches:
        response = httpx.get(hub.url + search, headers=bearer(token), timeout=30)
        assert response.status_code in (200, 204), f"{search}: {response.status_code}"
        # A's own audit trail names the UIDs A itself asked for (test above), nothing more
        uids = (
            () if search.startswith("/fhir/AuditEvent") else (world.b["study"], world.b["workitem"])
        )
        for marker in (*B_MARKERS, *uids):
            assert marker not in response.text, f"{search} revealed {marker!r}"
        if response.status_code == 200 and response.headers["content-type"].startswith(
            "application/fhir"
        ):
            assert response.json()["total"] in (0, None) or search.startswith("/fhir/AuditEvent")
    by_patient = httpx.get(
        hub.url + "/fhir/AuditEvent?patient=BRAVO-SECRET-PID", headers=bearer(token)
    ).json()
    assert by_patient["total"] == 0 and not by_patient.get("entry")


def test_another_hospitals_event_channel_stays_silent(world: World) -> None:
    from websockets.sync.client import connect

    url = world.hub.url.replace("http", "ws", 1) + "/dicomweb/subscribers/BRAVO_AE"
    subscribe = httpx.post(
        world.hub.dicomweb + "/workitems/1.2.840.10008.5.1.4.34.5/subscribers/BRAVO_AE",
        headers=bearer(world.b_token),
    )
    assert subscribe.status_code in (200, 201), subscribe.text
    uid = str(generate_uid())
    with connect(url, additional_headers=bearer(world.a_token), open_timeout=5) as socket:
        created = httpx.post(
            world.hub.dicomweb + f"/workitems?{uid}",
            json=[new_workitem(patient_name="Bravo^Hidden", patient_id="BRAVO-SECRET-PID")],
            headers={**bearer(world.b_token), "Content-Type": "application/dicom+json"},
        )
        assert created.status_code == 201
        with pytest.raises(TimeoutError):
            socket.recv(timeout=1.0)
    # B's performer on the same channel gets the event report A did not
    performer = register(world.hub, tenant="default", role="performer", products=["AIFI-BONEAGE"])
    b_performer = token_for(performer, ["worklist.performer"])
    reported: list[str] = []  # Affected SOP Instance UIDs, the existing workitems' first
    with connect(url, additional_headers=bearer(b_performer), open_timeout=5) as socket:
        while uid not in reported:
            reported += json.loads(socket.recv(timeout=10))["00001000"]["Value"]


def test_hospital_b_data_is_untouched_afterwards(world: World) -> None:
    hub, token = world.hub, world.b_token
    metadata = httpx.get(
        hub.dicomweb + f"/studies/{world.b['study']}/metadata", headers=bearer(token)
    )
    assert metadata.status_code == 200 and len(metadata.json()) == 2
    workitem = httpx.get(hub.dicomweb + f"/workitems/{world.b['workitem']}", headers=bearer(token))
    assert workitem.status_code == 200
    assert workitem.json()[0]["00741000"]["Value"] == ["SCHEDULED"]
    for kind, resource_id in world.fhir.items():
        if kind == "AuditEvent":
            continue
        response = httpx.get(hub.url + f"/fhir/{kind}/{resource_id}", headers=bearer(token))
        assert response.status_code == 200, kind
        assert response.json()["meta"]["versionId"] in ("1", "2"), kind
