"""The gateway's FHIR R4 facade for the EPD (issue 17 points 1 and 2), against a real hub
process behind it (:mod:`tests.support.gateway_fhir`).

One chain for the module: the EPD of hospital A asks for bone age through its gateway
(a ServiceRequest and a Task naming the hospital's own accession number and Patient ID)
before the study exists; the PHI-planted study (:func:`tests.support.gateway.planted_study`)
then arrives at the gateway, is pseudonymised and forwarded, the hub routes it, the
reference performer answers, and everything the EPD reads back carries the hospital's
identities. Searches are driven by :data:`aifi.fhir.search.SEARCH_PARAMS`, so a parameter
the hub gains later is covered without touching this file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.diagnosticreport import DiagnosticReport as SmartReport
from fhirclient.models.imagingstudy import ImagingStudy as SmartStudy
from fhirclient.models.task import Task as SmartTask

from aifi.conformance.pilot_studies import hand_xray
from aifi.fhir.codes import PATIENT_ID_SYSTEM, V2_0203
from aifi.fhir.mapping.imaging import patient_id
from aifi.fhir.resources import validated
from aifi.fhir.search import SEARCH_PARAMS, index_entries
from aifi.fhir.views import PatientView
from aifi.gateway.fhir.backend import GATEWAY_TYPES
from tests.support.gateway import HAND_PATIENT, Planted, Scanner, planted_study
from tests.support.gateway_fhir import (
    FHIR_JSON,
    PRODUCT,
    FhirChain,
    entries,
    fhir_chain,
    gateway_settings,
    served_gateway,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BODY = {"Content-Type": "application/fhir+json", **FHIR_JSON}
SEARCHED = sorted(GATEWAY_TYPES - {"Subscription"})


def _acsn(value: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": value}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirChain]:
    root = tmp_path_factory.mktemp("gateway-fhir")
    with fhir_chain(root) as chain:
        planted = Planted()
        study = planted_study(hand_xray(age_years=9), HAND_PATIENT, planted)
        issuer = str(study[0].get("IssuerOfPatientID", ""))
        system = f"{PATIENT_ID_SYSTEM}:{issuer}" if issuer else PATIENT_ID_SYSTEM
        patient = {"identifier": {"system": system, "value": HAND_PATIENT.patient_id}}
        with chain.a.client() as epd:
            order = epd.post(
                "/ServiceRequest",
                headers=BODY,
                json={
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": patient,
                    "identifier": [_acsn(HAND_PATIENT.accession)],
                },
            )
            assert order.status_code == 201, order.text
            task = epd.post(
                "/Task",
                headers=BODY,
                json={
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "code": {"coding": [{"system": "urn:aifi:product", "code": PRODUCT}]},
                    "focus": {"identifier": _acsn(HAND_PATIENT.accession)},
                    "for": patient,
                    "basedOn": [{"reference": f"ServiceRequest/{order.json()['id']}"}],
                    "requester": {"display": "Dr. Gateway"},
                },
            )
            assert task.status_code == 201, task.text
            task_id = task.json()["id"]
            waiting = epd.get(f"/Task/{task_id}").json()
        chain.context.update(
            planted=planted,
            study=study,
            system=system,
            order=order.json(),
            created=task.json(),
            waiting=waiting,
            task_id=task_id,
        )
        chain.a.stow(study)

        def done() -> dict[str, Any] | None:
            with chain.a.client() as epd:
                current = epd.get(f"/Task/{task_id}").json()
            return current if current.get("status") in {"completed", "failed"} else None

        chain.context["done"] = wait_until(done, 90, "the EPD's Task to finish")
        yield chain


# -- asking for AI through the gateway -----------------------------------------------------------


def test_a_task_for_a_study_not_yet_received_waits_then_runs(chain: FhirChain) -> None:
    created, waiting, done = (chain.context[k] for k in ("created", "waiting", "done"))
    study = chain.context["study"]
    assert created["focus"]["identifier"]["value"] == HAND_PATIENT.accession
    assert created["for"]["identifier"]["value"] == HAND_PATIENT.patient_id
    assert waiting["status"] == "requested"
    assert waiting["businessStatus"]["coding"][0]["code"] == "waiting-for-study"
    assert done["status"] == "completed", done
    assert done["focus"]["reference"] == f"ImagingStudy/{study[0].StudyInstanceUID}"
    assert done["requester"] == {"display": "Dr. Gateway"}
    validated(done)


def test_the_report_comes_back_with_the_hospitals_identities(chain: FhirChain) -> None:
    study = chain.context["study"]
    study_uid = str(study[0].StudyInstanceUID)
    system = chain.context["system"]
    with chain.a.client() as epd:
        found = epd.get(
            "/DiagnosticReport",
            params={"patient:identifier": f"{system}|{HAND_PATIENT.patient_id}"},
        )
        assert found.status_code == 200, found.text
        [report] = entries(found.json())
        validated(report)
        assert report["subject"]["identifier"] == {
            "system": system,
            "value": HAND_PATIENT.patient_id,
        }
        assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study_uid}"}]
        imaging = epd.get(f"/ImagingStudy/{study_uid}")
        assert imaging.status_code == 200, imaging.text
        body = imaging.json()
    validated(body)
    assert body["id"] == study_uid
    values = {i["value"] for i in body["identifier"]}
    assert {f"urn:oid:{study_uid}", HAND_PATIENT.accession} <= values
    started = date.fromisoformat(body["started"][:10])
    assert started.strftime("%Y%m%d") == str(study[0].StudyDate)
    if "StudyDescription" in study[0]:
        assert body["description"] == str(study[0].StudyDescription)
    [endpoint] = body["contained"]
    assert endpoint["address"] == chain.a.public_url + "/dicomweb"
    series = {s["uid"] for s in body["series"]}
    assert str(study[0].SeriesInstanceUID) in series
    instances = {i["uid"] for s in body["series"] for i in s.get("instance", [])}
    assert str(study[0].SOPInstanceUID) in instances
    expected_patient = patient_id(
        PatientView(HAND_PATIENT.patient_id, str(study[0].get("IssuerOfPatientID", "")) or None)
    )
    assert body["subject"]["reference"] == f"Patient/{expected_patient}"


def _no_pseudonym_in(chain: FhirChain, text: str) -> None:
    pseudonyms = {
        str(p) for (p,) in _query(chain, "SELECT pseudo FROM gw_uid_map") if ":" not in str(p)
    }
    pseudonyms |= {str(p) for (p,) in _query(chain, "SELECT pseudo_id FROM gw_patient")}
    pseudonyms |= {
        str(p) for (p,) in _query(chain, "SELECT accession_pseudo FROM gw_study_map") if p
    }
    leaked = {p for p in pseudonyms if p in text}
    assert not leaked, leaked


def _query(chain: FhirChain, sql: str) -> list[tuple[Any, ...]]:
    with chain.a.gateway.db.read() as session:
        return [tuple(row) for row in session.connection().exec_driver_sql(sql).fetchall()]


def test_nothing_the_epd_reads_carries_a_pseudonym(chain: FhirChain) -> None:
    with chain.a.client() as epd:
        for kind in SEARCHED:
            bundle = epd.get(f"/{kind}", params={"_count": "500"})
            assert bundle.status_code == 200, bundle.text
            resources = entries(bundle.json())
            if kind not in {"Device", "Communication"}:  # the chain's product flags no finding
                assert resources, f"the chain made no {kind}"
            _no_pseudonym_in(chain, bundle.text)
            for resource in resources:
                read = epd.get(f"/{kind}/{resource['id']}")
                assert read.status_code == 200, (kind, read.text)
                version = (resource.get("meta") or {}).get("versionId")
                if read.json()["meta"]["versionId"] == version:
                    assert read.json() == resource
                else:  # the chain changed it since the search (e.g. a result arrived)
                    assert version is not None
                    assert int(read.json()["meta"]["versionId"]) > int(version)
                _no_pseudonym_in(chain, read.text)


def test_includes_come_back_reidentified(chain: FhirChain) -> None:
    study_uid = str(chain.context["study"][0].StudyInstanceUID)
    with chain.a.client() as epd:
        reports = epd.get(
            "/DiagnosticReport",
            params={"_include": "DiagnosticReport:result", "_count": "500"},
        )
        studies = epd.get(
            "/ImagingStudy", params={"_id": study_uid, "_include": "ImagingStudy:patient"}
        )
    included = entries(reports.json(), "include")
    assert included and {r["resourceType"] for r in included} == {"Observation"}
    [patient] = entries(studies.json(), "include")
    assert patient["identifier"][0]["value"] == HAND_PATIENT.patient_id
    assert patient["identifier"][0]["system"] == chain.context["system"]
    _no_pseudonym_in(chain, reports.text + studies.text)


def test_the_epd_cancels_its_waiting_task(chain: FhirChain) -> None:
    accession = "ZZACC-NOT-YET"
    with chain.a.client() as epd:
        created = epd.post(
            "/Task",
            headers=BODY,
            json={
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": "urn:aifi:product", "code": PRODUCT}]},
                "focus": {"identifier": _acsn(accession)},
            },
        )
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["focus"]["identifier"]["value"] == accession
        found = epd.get("/Task", params={"focus:identifier": accession})
        assert [t["id"] for t in entries(found.json())] == [task["id"]]
        task["status"] = "cancelled"
        updated = epd.put(f"/Task/{task['id']}", headers=BODY, json=task)
        assert updated.status_code == 200, updated.text
        assert updated.json()["status"] == "cancelled"
        assert updated.json()["focus"]["identifier"]["value"] == accession
        assert epd.get(f"/Task/{task['id']}").json()["status"] == "cancelled"


def test_an_unknown_or_chained_parameter_is_reported_not_relayed(chain: FhirChain) -> None:
    with chain.a.client() as epd:
        found = epd.get(
            "/Task", params={"subject.identifier": HAND_PATIENT.patient_id, "status": "completed"}
        )
        assert found.status_code == 200, found.text
        [outcome] = entries(found.json(), "outcome")
        assert "subject.identifier" in outcome["issue"][0]["diagnostics"]
        strict = epd.get(
            "/Task",
            params={"subject.identifier": HAND_PATIENT.patient_id},
            headers={"Prefer": "handling=strict"},
        )
        assert strict.status_code == 400
        assert strict.json()["resourceType"] == "OperationOutcome"


# -- every search parameter, with the hospital's identifiers ----------------------------------


def _criteria(resource: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For every search parameter of the resource's type, queries that must find it: from
    its own values (:func:`aifi.fhir.search.index_entries`), else ``:missing=true``."""
    kind = resource["resourceType"]
    rows = index_entries(resource)
    out: dict[str, list[tuple[str, str]]] = {}
    for name, param in SEARCH_PARAMS[kind].items():
        queries: list[tuple[str, str]] = []
        if name == "_id":
            queries.append(("_id", resource["id"]))
        elif name == "_lastUpdated":
            queries.append(("_lastUpdated", "ge" + resource["meta"]["lastUpdated"][:10]))
        for row_name, system, value in rows:
            if row_name == name:
                if param.kind == "token":
                    queries.append((name, f"{system}|{value}" if system else value))
                elif param.kind == "date":
                    queries.append((name, "eq" + value[:10]))
                elif param.kind in {"reference", "uri"}:
                    queries.append((name, value))
            elif row_name == f"{name}:identifier":
                queries.append((row_name, f"{system}|{value}" if system else value))
            elif row_name == f"{name}:exact":
                queries.append((name, value[:4]))
                queries.append((row_name, value))
        if not queries:
            queries.append((f"{name}:missing", "true"))
        out[name] = queries
    return out


@pytest.mark.parametrize("kind", SEARCHED)
def test_every_search_parameter_finds_with_original_identifiers(
    chain: FhirChain, kind: str
) -> None:
    with chain.a.client() as epd:
        resources = entries(epd.get(f"/{kind}", params={"_count": "500"}).json())
        if not resources:
            pytest.skip(f"the chain made no {kind}")  # only Device may be absent
        target = max(resources, key=lambda r: len(index_entries(r)))
        for name, queries in _criteria(target).items():
            for query in queries:
                answer = epd.get(f"/{kind}", params=[query])
                assert answer.status_code == 200, (query, answer.text)
                ids = [r["id"] for r in entries(answer.json())]
                assert target["id"] in ids, (kind, name, query, answer.text[:500])


def test_started_with_and_without_a_patient(chain: FhirChain) -> None:
    """ImagingStudy.started is shifted at the hub: with a patient the criterion is shifted
    by the patient's offset, without one the gateway widens and filters."""
    study = chain.context["study"]
    day = str(study[0].StudyDate)
    iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    system = chain.context["system"]
    patient = f"{system}|{HAND_PATIENT.patient_id}"
    with chain.a.client() as epd:
        for params in (
            {"started": iso},
            {"started": iso, "patient:identifier": patient},
            {"started": f"ge{iso}", "patient:identifier": patient},
            {"started": f"le{iso}T23:59:59Z"},
            {"started": iso[:7]},
        ):
            found = epd.get("/ImagingStudy", params=params)
            assert found.status_code == 200, found.text
            assert [r["id"] for r in entries(found.json())] == [str(study[0].StudyInstanceUID)]
            assert found.json()["total"] == 1
        for params in (
            {"started": "1900-01-01"},
            {"started": "1900-01-01", "patient:identifier": patient},
            {"started": f"gt{iso}", "patient:identifier": patient},
        ):
            found = epd.get("/ImagingStudy", params=params)
            assert found.status_code == 200, found.text
            assert found.json()["total"] == 0 and "entry" not in found.json()


def test_fhirclient_searches_and_reads_with_the_hospitals_identifiers(chain: FhirChain) -> None:
    study_uid = str(chain.context["study"][0].StudyInstanceUID)
    patient = f"{chain.context['system']}|{HAND_PATIENT.patient_id}"
    smart = smart_client.FHIRClient(
        settings={"app_id": "epd-tests", "api_base": chain.a.fhir_url + "/"}
    )
    tasks = list(
        SmartTask.where(struct={"patient:identifier": patient}).perform_resources_iter(smart.server)
    )
    assert chain.context["task_id"] in [t.id for t in tasks]
    reports = list(
        SmartReport.where(struct={"patient:identifier": patient}).perform_resources_iter(
            smart.server
        )
    )
    assert len(reports) == 1
    assert reports[0].imagingStudy[0].reference == f"ImagingStudy/{study_uid}"
    studies = SmartStudy.where(
        struct={"identifier": f"|{HAND_PATIENT.accession}"}
    ).perform_resources(smart.server)
    assert [s.id for s in studies] == [study_uid]
    read = SmartStudy.read(study_uid, smart.server)
    assert read.subject.identifier.value == HAND_PATIENT.patient_id
    task = SmartTask.read(chain.context["task_id"], smart.server)
    assert task.status == "completed"


def test_paging_links_point_at_the_gateway_with_the_epds_parameters(chain: FhirChain) -> None:
    patient = f"{chain.context['system']}|{HAND_PATIENT.patient_id}"
    with chain.a.client() as epd:
        found = epd.get("/Observation", params={"patient:identifier": patient, "_count": "1"})
    bundle = found.json()
    assert bundle["total"] >= 1
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    for url in links.values():
        assert url.startswith(chain.a.public_url + "/fhir/Observation?"), url
        parsed = httpx.URL(url).params
        assert parsed["patient:identifier"] == patient
    _no_pseudonym_in(chain, json.dumps(bundle))


# -- what a gateway does not know ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("Task", {"patient:identifier": f"{PATIENT_ID_SYSTEM}|NO-SUCH-PATIENT"}),
        ("DiagnosticReport", {"patient:identifier": "NO-SUCH-PATIENT"}),
        ("DiagnosticReport", {"patient": "Patient/pat-000000000000000000000000"}),
        ("ImagingStudy", {"identifier": "urn:dicom:uid|urn:oid:1.2.3.4.5.6"}),
        ("ImagingStudy", {"identifier": "NO-SUCH-ACCESSION"}),
        ("ImagingStudy", {"_id": "1.2.3.4.5.6"}),
        ("Patient", {"identifier": "NO-SUCH-PATIENT"}),
        ("Patient", {"_id": "pat-000000000000000000000000"}),
        ("Task", {"focus": "ImagingStudy/1.2.3.4.5.6"}),
        ("Task", {"patient:identifier": f"http://other.example|{HAND_PATIENT.patient_id}"}),
    ],
)
def test_an_unknown_identifier_finds_nothing(
    chain: FhirChain, kind: str, params: dict[str, str]
) -> None:
    with chain.a.client() as epd:
        found = epd.get(f"/{kind}", params=params)
    assert found.status_code == 200, found.text
    bundle = found.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 0 and "entry" not in bundle


def test_another_hospitals_gateway_finds_nothing_of_this_one(chain: FhirChain) -> None:
    study_uid = str(chain.context["study"][0].StudyInstanceUID)
    patient = f"{chain.context['system']}|{HAND_PATIENT.patient_id}"
    with chain.b.client() as other:
        for kind in SEARCHED:
            if kind == "Device":
                continue  # the product catalogue is the same for every hospital
            found = other.get(f"/{kind}", params={"_count": "500"})
            assert found.status_code == 200, found.text
            assert found.json()["total"] == 0, (kind, found.text[:300])
        for params in (
            {"patient:identifier": patient},
            {"patient:identifier": HAND_PATIENT.patient_id},
        ):
            found = other.get("/Task", params=params)
            assert found.json()["total"] == 0
        assert other.get(f"/ImagingStudy/{study_uid}").status_code == 404
        assert other.get(f"/Task/{chain.context['task_id']}").status_code == 404
        report = other.get(
            "/ImagingStudy", params={"identifier": f"|{HAND_PATIENT.accession}"}
        ).json()
        assert report["total"] == 0


# -- bad input ------------------------------------------------------------------------------------


def _hub_requests(chain: FhirChain, path: str) -> int:
    return sum(1 for line in chain.hub.log.read_text(errors="replace").splitlines() if path in line)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"resourceType": "Observation", "status": "final"}).encode(),
        json.dumps(
            {"resourceType": "Task", "status": "no-such-status", "intent": "order"}
        ).encode(),
    ],
)
def test_a_malformed_body_is_400_and_never_reaches_the_hub(chain: FhirChain, body: bytes) -> None:
    before = _hub_requests(chain, "POST /fhir/Task ")
    assert before >= 1  # the set-up's Task: the hub's access log shows them
    searches = _hub_requests(chain, "GET /fhir/Device?")
    with chain.a.client() as epd:
        answer = epd.post("/Task", content=body, headers=BODY)
        assert answer.status_code == 400, answer.text
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"
        assert epd.get("/Device").status_code == 200  # a request that does reach the hub…
    wait_until(lambda: _hub_requests(chain, "GET /fhir/Device?") > searches, 10, "the hub's log")
    assert _hub_requests(chain, "POST /fhir/Task ") == before  # …logged after the bad one


def test_a_hub_refusal_is_passed_on_reidentified(chain: FhirChain) -> None:
    """The hub's 4xx OperationOutcome reaches the EPD with the hub's status."""
    with chain.a.client() as epd:
        answer = epd.post(
            "/Task",
            headers=BODY,
            json={
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-NO-SUCH"}]},
                "focus": {"identifier": _acsn(HAND_PATIENT.accession)},
            },
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    _no_pseudonym_in(chain, answer.text)


def test_the_hub_down_is_503_with_an_operation_outcome(tmp_path: Path) -> None:
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    settings = gateway_settings(tmp_path / "gw", dead, None, "http://gateway-down.test")
    with served_gateway(settings) as gateway, gateway.client() as epd:
        for answer in (
            epd.get("/Task", params={"status": "completed"}),
            epd.get("/DiagnosticReport/some-report"),
            epd.post(
                "/ServiceRequest",
                headers=BODY,
                json={
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"display": "a patient"},
                },
            ),
        ):
            assert answer.status_code == 503, answer.text
            outcome = answer.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"


def test_the_capability_statement_names_the_gateway(chain: FhirChain) -> None:
    with chain.a.client() as epd:
        statement = epd.get("/metadata").json()
    validated(statement)
    assert statement["software"]["name"] == "aifi gateway"
    assert statement["implementation"]["url"] == chain.a.public_url + "/fhir"
    served = {r["type"] for r in statement["rest"][0]["resource"]}
    assert served == set(GATEWAY_TYPES)
    task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
    assert {p["name"] for p in task["searchParam"]} == set(SEARCH_PARAMS["Task"])


# -- privacy: the hub holds no original identifier ----------------------------------------


def test_the_hub_holds_no_original_identifier_after_the_epds_requests(chain: FhirChain) -> None:
    planted: Planted = chain.context["planted"]
    scanner = Scanner(planted)
    sent = b"".join(
        ds.PatientID.encode() + ds.AccessionNumber.encode() for ds in chain.context["study"]
    )
    assert {HAND_PATIENT.patient_id, HAND_PATIENT.accession} <= scanner.found(sent)
    findings, files = scanner.scan_tree(chain.hub_dir)
    assert files > 3
    findings += scanner.scan(chain.hub.log.read_bytes(), "hub.log")
    assert not findings, "\n".join(str(f) for f in findings[:20])
