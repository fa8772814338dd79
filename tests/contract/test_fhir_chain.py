"""FHIR R4 for the EPD, end to end on a real uvicorn hub: every AI request is a Task in step
with its UPS workitem; every result a DiagnosticReport with Observations, a Device and a
Provenance; the EPD can ask for AI itself. Read with plain httpx and with the SMART
``fhirclient`` library; every resource the hub emits is validated with fhir.resources R4B."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fhirclient import client as smart_client
from fhirclient.models.diagnosticreport import DiagnosticReport as SmartReport
from fhirclient.models.task import Task as SmartTask
from pydicom import Dataset
from pydicom.uid import generate_uid
from sqlmodel import col, select

from aifi.conformance.synthetic import radiograph_study
from aifi.fhir.resources import validated
from aifi.hub.persistence.tables import ResultInstance
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes
from aifi.principal import Principal
from tests.conftest import LiveServer, database_for
from tests.contract.test_results import QUIET, Hub, algorithm, fracture_report, results_hub

FHIR = {"Accept": "application/fhir+json"}
PRODUCT_SYSTEM = "urn:aifi:product"


class Epd:
    """The EPD's view: the hub's FHIR API through httpx."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.http = httpx.Client(base_url=hub.server.url + "/fhir", headers=FHIR, timeout=30)

    def read(self, path: str) -> dict[str, Any]:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        validated(body)
        return body

    def search(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        validated(bundle)
        return bundle

    def create_task(self, task: dict[str, Any]) -> httpx.Response:
        return self.http.post("/Task", json=task, headers={"Content-Type": "application/fhir+json"})


@contextlib.contextmanager
def clients(server: LiveServer, now: list[datetime]) -> Iterator[tuple[Hub, Epd]]:
    hub = Hub(server, now)
    epd = Epd(hub)
    try:
        yield hub, epd
    finally:
        epd.http.close()
        hub.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with results_hub(tmp_path, ["AIFI-FRACTURE", "AIFI-BONEAGE"]) as (server, now):
        client = Hub(server, now)
        yield client
        client.close()


@pytest.fixture
def epd(hub: Hub) -> Iterator[Epd]:
    client = Epd(hub)
    yield client
    client.http.close()


def bone_age_report(inputs: list[Dataset]) -> Dataset:
    report = air.measurement_report(
        list(inputs),
        algorithm("AIFI-BONEAGE"),
        measurements=[
            air.Measurement(air.BONE_AGE, 10.5, air.YEARS, "bone age", codes.HAND, codes.LEFT)
        ],
    )
    return copy.deepcopy(report)


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode
    ]


def perform(hub: Hub, uid: str, report: Dataset) -> None:
    txn = hub.claim(uid)
    assert hub.stow([report]).status_code == 200
    assert hub.complete(uid, txn, [report]).status_code == 200


# -- Task in step with the workitem --------------------------------------------------------


def test_a_routed_workitem_is_a_task_in_step_with_it(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    study_uid = str(study[0].StudyInstanceUID)
    task = epd.read(f"/Task/{uid}")
    assert task["status"] == "ready" and task["intent"] == "order"
    assert task["focus"]["reference"] == f"ImagingStudy/{study_uid}"
    assert task["owner"]["reference"] == "Device/AIFI-FRACTURE"
    assert task["for"]["reference"].startswith("Patient/")
    assert task["code"]["coding"][0] == {
        "system": PRODUCT_SYSTEM,
        "code": "AIFI-FRACTURE",
        "display": task["code"]["coding"][0]["display"],
    }
    assert task["meta"]["versionId"] == "1"
    # the focus, owner and patient exist
    imaging = epd.read(f"/ImagingStudy/{study_uid}")
    assert imaging["numberOfInstances"] == len(study)
    endpoint = imaging["contained"][0]
    assert endpoint["address"].endswith("/dicomweb")
    assert imaging["endpoint"] == [{"reference": "#" + endpoint["id"]}]
    assert epd.read("/Device/AIFI-FRACTURE")["manufacturer"]
    patient = epd.read("/" + task["for"]["reference"])
    assert patient["identifier"][0]["value"] == str(study[0].PatientID)

    txn = hub.claim(uid)
    claimed = epd.http.get(f"/Task/{uid}")
    assert claimed.json()["status"] == "in-progress"
    assert claimed.headers["ETag"] == 'W/"2"'
    # the ETag answers If-None-Match
    assert epd.http.get(f"/Task/{uid}", headers={"If-None-Match": 'W/"2"'}).status_code == 304
    report = fracture_report(study)
    assert hub.stow([report]).status_code == 200
    assert hub.complete(uid, txn, [report]).status_code == 200
    done = epd.read(f"/Task/{uid}")
    assert done["status"] == "completed"
    assert done["businessStatus"]["coding"][0]["code"] == "awaiting-review"
    assert {"reference": f"DiagnosticReport/{uid}"} in [
        o.get("valueReference") for o in done["output"]
    ]


def test_a_supervised_result_is_preliminary_until_accepted_then_final(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    perform(hub, uid, fracture_report(study))
    report = epd.read(f"/DiagnosticReport/{uid}")
    assert report["status"] == "preliminary"
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    assert report["code"]["coding"][0]["code"] == "AIFI-FRACTURE"
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study[0].StudyInstanceUID}"}]
    assert "basedOn" not in report  # no EPD order: R4 allows no Task there
    [ref] = report["result"]
    observation = epd.read("/" + ref["reference"])
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "52101004"  # present
    assert observation["interpretation"][0]["coding"][0]["code"] == "POS"
    assert observation["device"] == {"reference": "Device/AIFI-FRACTURE"}
    assert observation["derivedFrom"][0]["reference"].startswith("ImagingStudy/")
    provenance = epd.read(f"/Provenance/{uid}")
    assert {"reference": f"DiagnosticReport/{uid}"} in provenance["target"]
    whats = [e["what"]["reference"] for e in provenance["entity"]]
    assert f"Task/{uid}" in whats and f"ImagingStudy/{study[0].StudyInstanceUID}" in whats
    assert provenance["agent"][0]["who"] == {"reference": "Device/AIFI-FRACTURE"}

    accepted = hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. Jansen"})
    assert accepted.status_code == 200
    final = epd.read(f"/DiagnosticReport/{uid}")
    assert final["status"] == "final" and final["meta"]["versionId"] == "2"
    assert epd.read("/" + ref["reference"])["status"] == "final"
    task = epd.read(f"/Task/{uid}")
    assert task["businessStatus"]["coding"][0]["code"] in ("accepted", "delivered")


def test_a_rejected_result_is_cancelled(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    perform(hub, uid, fracture_report(study))
    rejected = hub.api.post(
        f"/results/{uid}/reject", json={"reviewer": "dr. Jansen", "reason": "artefact"}
    )
    assert rejected.status_code == 200
    report = epd.read(f"/DiagnosticReport/{uid}")
    assert report["status"] == "cancelled"
    assert "artefact" in report.get("conclusion", "")
    assert epd.read(f"/Task/{uid}")["businessStatus"]["coding"][0]["code"] == "rejected"


def test_a_result_kept_without_its_summary_reads_back_the_same(hub: Hub, epd: Epd):
    """The gate keeps what a result says with its row; a row stored before it did (migration
    0009: ``summary_json`` NULL) is summarised from the stored instance, to the same
    Observation."""
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    report = fracture_report(study)
    perform(hub, uid, report)
    [ref] = epd.read(f"/DiagnosticReport/{uid}")["result"]
    kept = epd.read("/" + ref["reference"])
    with hub.server.app.state.hub.db.write() as session:
        row = session.exec(
            select(ResultInstance).where(
                col(ResultInstance.sop_instance_uid) == str(report.SOPInstanceUID)
            )
        ).one()
        assert row.summary_json is not None
        row.summary_json = None
        session.add(row)

    accepted = hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. Jansen"})
    assert accepted.status_code == 200
    final = epd.read(f"/DiagnosticReport/{uid}")
    assert final["status"] == "final" and final["result"] == [ref]
    summarised = epd.read("/" + ref["reference"])
    assert summarised["status"] == "final"
    said = ("code", "valueCodeableConcept", "interpretation", "bodySite", "derivedFrom")
    assert {k: summarised.get(k) for k in said} == {k: kept.get(k) for k in said}
    assert kept["valueCodeableConcept"]["coding"][0]["code"] == "52101004"  # present


def test_an_autonomous_bone_age_is_final_at_once_with_a_ucum_quantity(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    uid = items["AIFI-BONEAGE"]
    perform(hub, uid, bone_age_report(study))
    report = epd.read(f"/DiagnosticReport/{uid}")
    assert report["status"] == "final"
    [observation] = [epd.read("/" + r["reference"]) for r in report["result"]]
    assert (
        observation["code"]["coding"][0]
        == {
            "system": "http://loinc.org",
            "code": "85151-9",
            "display": observation["code"]["coding"][0].get("display"),
        }
        or observation["code"]["coding"][0]["code"] == "85151-9"
    )
    quantity = observation["valueQuantity"]
    assert quantity["value"] == 10.5
    assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"] == "a"
    device = epd.read("/Device/AIFI-BONEAGE")
    assert {"system": "urn:dicom:uid", "value": "urn:oid:2.25.1234567890123456789"} in device[
        "identifier"
    ]


def test_a_cancelled_request_and_a_discontinued_one(hub: Hub, epd: Epd):
    _study, items = hub.routed_study()
    cancel = hub.web.post(
        f"/workitems/{items['AIFI-FRACTURE']}/cancelrequest",
        json={"00741238": {"vr": "LT", "Value": ["patient left"]}},
    )
    assert cancel.status_code == 202, cancel.headers.get("warning")
    task = epd.read(f"/Task/{items['AIFI-FRACTURE']}")
    assert task["status"] == "cancelled"
    assert "patient left" in task["statusReason"]["text"]


# -- search as an EPD does it ----------------------------------------------------------------


def test_the_epd_searches_reports_and_tasks(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    perform(hub, items["AIFI-BONEAGE"], bone_age_report(study))
    perform(hub, items["AIFI-FRACTURE"], fracture_report(study))
    task = epd.read(f"/Task/{items['AIFI-FRACTURE']}")
    patient = task["for"]["reference"]

    finals = epd.search(
        "/DiagnosticReport",
        patient=patient,
        status="final",
        _include="DiagnosticReport:result",
    )
    assert [r["id"] for r in entries(finals)] == [items["AIFI-BONEAGE"]]
    assert [o["resourceType"] for o in entries(finals, "include")] == ["Observation"]
    by_code = epd.search("/DiagnosticReport", code=f"{PRODUCT_SYSTEM}|AIFI-FRACTURE")
    assert [r["id"] for r in entries(by_code)] == [items["AIFI-FRACTURE"]]
    assert by_code["total"] == 1
    completed = epd.search("/Task", status="completed", patient=patient)
    assert completed["total"] == 2
    owned = epd.search("/Task", owner="Device/AIFI-BONEAGE")
    assert [t["id"] for t in entries(owned)] == [items["AIFI-BONEAGE"]]
    focus = epd.search("/Task", focus=f"ImagingStudy/{study[0].StudyInstanceUID}", _count=1)
    assert focus["total"] == 2 and len(entries(focus)) == 1
    assert any(link["relation"] == "next" for link in focus["link"])
    counted = epd.search("/Task", _summary="count")
    assert counted["total"] == 2 and "entry" not in counted
    imaging = epd.search(
        "/ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study[0].StudyInstanceUID}"
    )
    assert imaging["total"] == 1
    bone = epd.search("/Observation", code="http://loinc.org|85151-9", patient=patient)
    assert bone["total"] == 1

    # and with the SMART on FHIR python client
    smart = smart_client.FHIRClient(
        settings={"app_id": "epd-tests", "api_base": hub.server.url + "/fhir/"}
    )
    reports = SmartReport.where(struct={"patient": patient}).perform_resources_iter(smart.server)
    assert sorted(r.id for r in reports) == sorted(items.values())
    read = SmartTask.read(items["AIFI-FRACTURE"], smart.server)
    assert read.status == "completed" and read.focus.reference.startswith("ImagingStudy/")


# -- the EPD asks for AI ------------------------------------------------------------------


def request_task(product: str, focus: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": PRODUCT_SYSTEM, "code": product}]},
        "focus": focus,
        "identifier": [{"system": "urn:epd:order", "value": str(generate_uid())}],
        "requester": {"display": "Dr. Emergency"},
    }


def accession_focus(accession: str) -> dict[str, Any]:
    return {
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                ]
            },
            "value": accession,
        }
    }


def store_hand_study(hub: Hub, **changes: Any) -> list[pydicom.FileDataset]:
    study = [
        pydicom.dcmread(io.BytesIO(data))
        for data in radiograph_study(2, study_uid=str(generate_uid()))
    ]
    for ds in study:
        for key, value in changes.items():
            setattr(ds, key, value)
    assert hub.stow(study).status_code == 200
    return study


def route(hub: Hub) -> list[str]:
    """One Task Manager round past the quiet period of what was stored until now (the hub's
    clock is the test's; the studies' times are real)."""
    hub.now[0] = max(hub.now[0], datetime.now(UTC)) + timedelta(seconds=QUIET + 1)
    created: list[str] = hub.server.app.state.hub.task_manager.tick().created
    return created


def test_the_epd_asks_for_ai_before_the_study_arrives(tmp_path: Path):
    with (
        results_hub(tmp_path, ["AIFI-FRACTURE"], on_request=True) as (server, now),
        clients(server, now) as (hub, epd),
    ):
        accession = "ACC" + str(generate_uid())[-8:]
        order_response = epd.http.post(
            "/ServiceRequest",
            json={
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"display": "the patient"},
                "identifier": [accession_focus(accession)["identifier"]],
            },
            headers={"Content-Type": "application/fhir+json"},
        )
        assert order_response.status_code == 201, order_response.text
        order = order_response.json()["id"]
        task = request_task("AIFI-FRACTURE", {})
        del task["focus"]
        task["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
        created = epd.create_task(task)
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        assert created.headers["Location"].endswith(f"/Task/{task_id}/_history/1")
        waiting = epd.read(f"/Task/{task_id}")
        assert waiting["status"] == "requested"
        assert waiting["businessStatus"]["coding"][0]["code"] == "waiting-for-study"
        assert waiting["requester"] == {"display": "Dr. Emergency"}

        study = store_hand_study(hub, AccessionNumber=accession)
        assert route(hub) == []  # on request only: nothing by the rules alone…
        hub.server.app.state.hub.task_manager.tick()  # …the request is served in the round
        linked = epd.read(f"/Task/{task_id}")
        assert linked["status"] == "ready", linked
        assert linked["focus"]["reference"] == f"ImagingStudy/{study[0].StudyInstanceUID}"
        assert linked["requester"] == {"display": "Dr. Emergency"}  # the EPD's fields stay
        workitem = next(
            i["value"].removeprefix("urn:oid:")
            for i in linked["identifier"]
            if i["system"] == "urn:dicom:uid"
        )
        perform(hub, workitem, fracture_report(study))
        done = epd.read(f"/Task/{task_id}")
        assert done["status"] == "completed"
        report = epd.read(f"/DiagnosticReport/{workitem}")
        assert report["basedOn"] == [{"reference": f"ServiceRequest/{order}"}]
        found = epd.search("/DiagnosticReport", **{"based-on": f"ServiceRequest/{order}"})
        assert [r["id"] for r in entries(found)] == [workitem]
        provenance = epd.read(f"/Provenance/{workitem}")
        assert f"Task/{task_id}" in [e["what"]["reference"] for e in provenance["entity"]]


def test_a_request_for_a_present_study_follows_its_routed_workitem(hub: Hub, epd: Epd):
    study, items = hub.routed_study()
    uid = str(study[0].StudyInstanceUID)
    created = epd.create_task(request_task("AIFI-FRACTURE", {"reference": f"ImagingStudy/{uid}"}))
    assert created.status_code == 201, created.text
    hub.server.app.state.hub.task_manager.tick()
    task = epd.read(f"/Task/{created.json()['id']}")
    assert task["status"] == "ready"
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{items['AIFI-FRACTURE']}"} in task[
        "identifier"
    ]


def test_a_request_the_study_does_not_qualify_for_fails_with_the_reason(hub: Hub, epd: Epd):
    study = store_hand_study(
        hub, BodyPartExamined="CHEST", StudyDescription="Chest PA", SeriesDescription="Chest PA"
    )
    assert route(hub) == []
    created = epd.create_task(
        request_task(
            "AIFI-FRACTURE",
            {
                "identifier": {
                    "system": "urn:dicom:uid",
                    "value": f"urn:oid:{study[0].StudyInstanceUID}",
                }
            },
        )
    )
    assert created.status_code == 201
    hub.server.app.state.hub.task_manager.tick()
    task = epd.read(f"/Task/{created.json()['id']}")
    assert task["status"] == "failed"
    assert "body part" in task["statusReason"]["text"].lower()


def test_bad_requests_for_ai_are_refused_with_an_operation_outcome(hub: Hub, epd: Epd):
    study, _ = hub.routed_study()
    uid = str(study[0].StudyInstanceUID)
    cases = {
        "unknown product": request_task("NO-SUCH-AI", {"reference": f"ImagingStudy/{uid}"}),
        "not enabled": request_task("AIFI-IPE", {"reference": f"ImagingStudy/{uid}"}),
        "no study": request_task("AIFI-FRACTURE", {}),
        "unknown study": request_task("AIFI-FRACTURE", {"reference": "ImagingStudy/1.2.3.4"}),
    }
    before = epd.search("/Task", _summary="count")["total"]
    for name, task in cases.items():
        response = epd.create_task(task)
        assert response.status_code == 422, (name, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome", name
        assert outcome["issue"][0]["diagnostics"], name
    assert epd.search("/Task", _summary="count")["total"] == before  # nothing stored


def test_another_hospitals_study_cannot_be_named(hub: Hub, epd: Epd):
    """A Task of hospital B naming hospital A's study is refused as if it did not exist,
    and B never sees A's Tasks."""
    study, items = hub.routed_study()
    state = hub.server.app.state
    state.dicom_store.ensure_tenant("other")
    state.principal_resolver = lambda request: Principal(
        tenant=request.headers.get("X-Tenant", "default"), subject="test"
    )
    other = {"X-Tenant": "other"}
    response = epd.http.post(
        "/Task",
        json=request_task(
            "AIFI-FRACTURE", {"reference": f"ImagingStudy/{study[0].StudyInstanceUID}"}
        ),
        headers={"Content-Type": "application/fhir+json", **other},
    )
    assert response.status_code == 422
    # A's Task is there for A ...
    assert epd.http.get(f"/Task/{items['AIFI-FRACTURE']}").status_code == 200
    assert epd.http.get("/Task").json()["total"] >= 1
    # ... and not for B
    assert epd.http.get(f"/Task/{items['AIFI-FRACTURE']}", headers=other).status_code == 404
    assert epd.http.get("/Task", headers=other).json()["total"] == 0


def test_the_capability_statement_tells_what_the_hub_does(epd: Epd):
    statement = epd.read("/metadata")
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {
        "Task",
        "ImagingStudy",
        "DiagnosticReport",
        "Observation",
        "Communication",
        "Device",
        "Provenance",
        "Patient",
        "ServiceRequest",
        "Subscription",
        "AuditEvent",
    }
    interactions = {t: {i["code"] for i in r["interaction"]} for t, r in resources.items()}
    assert "create" in interactions["Task"] and "create" not in interactions["DiagnosticReport"]
    assert interactions["AuditEvent"] == {"read", "vread", "search-type"}
    assert resources["Subscription"]["operation"][0]["name"] == "status"
    assert "DiagnosticReport:result" in resources["DiagnosticReport"]["searchInclude"]


@pytest.mark.postgres
def test_tasks_reports_and_requests_on_postgresql(tmp_path: Path):
    """The projection and the EPD requests on PostgreSQL (row locks, its own SQL)."""
    with (
        database_for("postgresql") as url,
        results_hub(tmp_path, ["AIFI-FRACTURE"], database_url=url) as (server, now),
        clients(server, now) as (hub, epd),
    ):
        study, items = hub.routed_study()
        uid = items["AIFI-FRACTURE"]
        assert epd.read(f"/Task/{uid}")["status"] == "ready"
        created = epd.create_task(
            request_task(
                "AIFI-FRACTURE", {"reference": f"ImagingStudy/{study[0].StudyInstanceUID}"}
            )
        )
        assert created.status_code == 201, created.text
        server.app.state.hub.task_manager.tick()
        perform(hub, uid, fracture_report(study))
        assert hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. J"}).status_code == 200
        assert epd.read(f"/DiagnosticReport/{uid}")["status"] == "final"
        assert epd.read(f"/Task/{created.json()['id']}")["status"] == "completed"
        finals = epd.search("/DiagnosticReport", status="final", _include="DiagnosticReport:result")
        assert finals["total"] == 1 and len(entries(finals, "include")) == 1


def test_a_workitem_that_cannot_be_projected_does_not_stall_the_api(
    hub: Hub, epd: Epd, monkeypatch: pytest.MonkeyPatch
):
    _study, items = hub.routed_study()
    fracture, bone_age = items["AIFI-FRACTURE"], items["AIFI-BONEAGE"]
    assert epd.read(f"/Task/{fracture}")["status"] == "ready"
    projector = hub.server.app.state.hub.projector
    original = projector.refresh_workitem

    def broken(session: Any, tenant: str, uid: str) -> None:
        if uid == fracture:
            raise RuntimeError("a mapping bug")
        original(session, tenant, uid)

    monkeypatch.setattr(projector, "refresh_workitem", broken)
    hub.claim(fracture)
    hub.claim(bone_age)
    assert epd.read(f"/Task/{bone_age}")["status"] == "in-progress"
    assert epd.read(f"/Task/{fracture}")["status"] == "ready"  # behind, but answered
    assert not projector.pending("default")
