"""The FHIR R4 REST API (aifi.fhir.api) under a real uvicorn server, driven by httpx and by
the SMART ``fhirclient`` library: capabilities, read with ETags, every search parameter of
Task and DiagnosticReport, _include, paging, versioning, client writes and the errors a
client meets. The app here is the router over :class:`SqlFhirStore` with a thin generic
backend, so the tests are about the REST layer, not the hub's rules."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from aifi.errors import HubError
from aifi.fhir.api import build_router, outcome_response
from aifi.fhir.search import SEARCH_PARAMS
from aifi.fhir.types import Resource, SearchQuery, SearchResult, StoredResource, WriteResult
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Tenant
from aifi.principal import Principal
from tests.conftest import database_for, run_live_server

# fhirclient's models ship no type information (no py.typed): used as Any.
smart_client = importlib.import_module("fhirclient.client")
SmartTask = importlib.import_module("fhirclient.models.task").Task
SmartReport = importlib.import_module("fhirclient.models.diagnosticreport").DiagnosticReport

FHIR_JSON = "application/fhir+json"
PRODUCT = "urn:aifi:product"
DICOM_UID = "urn:dicom:uid"
PATIENT = "pat-5f1d2c3b4a5968778695a4b3"
STUDY = "1.2.826.0.1.3680043.8.498.12345"
UIDS = [f"1.2.826.0.1.3680043.8.498.2000{n}" for n in range(1, 6)]
"""Five workitems: five Tasks; reports for the first three."""
STATUSES = ["completed", "completed", "completed", "in-progress", "ready"]
OTHER_TENANT_TASK = "1.2.826.0.1.3680043.8.498.99999"


class GenericBackend:
    """Reads and searches straight through; every type writable (the router decides)."""

    def __init__(self, db: Database, store: SqlFhirStore) -> None:
        self.db = db
        self.store = store

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        return self.store.read(tenant, resource_type, resource_id)

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        return self.store.search(tenant, query)

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        with self.db.write() as session:
            return self.store.create(session, tenant, resource, if_none_exist=if_none_exist)

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        with self.db.write() as session:
            return self.store.update(session, tenant, resource, if_match=if_match)

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        with self.db.write() as session:
            self.store.delete(session, tenant, resource_type, resource_id)


def _tenant(request: Request) -> Principal:
    return Principal(tenant=request.headers.get("x-tenant", "north"), subject="test-client")


def fhir_app(db: Database, store: SqlFhirStore) -> FastAPI:
    app = FastAPI()
    app.include_router(build_router(), prefix="/fhir")
    app.state.fhir_backend = GenericBackend(db, store)
    app.state.principal_resolver = _tenant

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, error: HubError) -> Response:
        return outcome_response(error)

    return app


# --- realistic resources, as the hub's mapping writes them ---------------------------------


def _ref_patient() -> Resource:
    return {
        "reference": f"Patient/{PATIENT}",
        "identifier": {"system": "urn:aifi:patient-id", "value": "PID-0042"},
    }


def task(n: int) -> Resource:
    uid = UIDS[n]
    resource: Resource = {
        "resourceType": "Task",
        "id": uid,
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{uid}"}],
        "status": STATUSES[n],
        "businessStatus": {
            "coding": [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "COMPLETED" if STATUSES[n] == "completed" else "SCHEDULED",
                }
            ]
        },
        "intent": "order",
        "code": {"coding": [{"system": PRODUCT, "code": "AIFI-BONEAGE" if n < 4 else "AIFI-CXR"}]},
        "focus": {"reference": f"ImagingStudy/{STUDY}"},
        "for": _ref_patient(),
        "authoredOn": f"2026-03-0{n + 1}T08:00:00+01:00",
        "lastModified": f"2026-03-0{n + 1}T09:30:00Z",
        "owner": {"reference": "Device/AIFI-BONEAGE" if n < 4 else "Device/AIFI-CXR"},
    }
    if n == 4:
        resource["basedOn"] = [{"reference": "ServiceRequest/order-17"}]
    return resource


def report(n: int) -> Resource:
    uid = UIDS[n]
    return {
        "resourceType": "DiagnosticReport",
        "id": uid,
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{uid}"}],
        "basedOn": [{"reference": f"ServiceRequest/order-{n}"}],
        "status": "final" if n < 2 else "preliminary",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}
        ],
        "code": {"coding": [{"system": PRODUCT, "code": "AIFI-BONEAGE"}]},
        "subject": _ref_patient(),
        "effectiveDateTime": f"2026-03-0{n + 1}T09:00:00Z",
        "issued": f"2026-03-0{n + 1}T10:00:00.000Z",
        "result": [{"reference": f"Observation/{uid}-{k}"} for k in (1, 2)],
        "conclusion": "Bone age 11.5 years",
    }


def observation(n: int, k: int) -> Resource:
    uid = UIDS[n]
    return {
        "resourceType": "Observation",
        "id": f"{uid}-{k}",
        "identifier": [{"system": "urn:aifi:observation", "value": f"{uid}-{k}"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85151-1"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "device": {"reference": "Device/AIFI-BONEAGE"},
        "valueQuantity": {
            "value": 11.5 + k,
            "unit": "a",
            "system": "http://unitsofmeasure.org",
            "code": "a",
        },
    }


@dataclass
class Fhir:
    base: str
    db: Database
    store: SqlFhirStore
    http: httpx.Client

    def search(self, path: str, **headers: str) -> httpx.Response:
        return self.http.get(f"{self.base}/{path}", headers=headers)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fhir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fhir]:
    folder: Path = tmp_path_factory.mktemp("fhir-api")
    with database_for(request.param) as url:
        db = Database(url or f"sqlite:///{folder}/hub.db")
        db.migrate()
        store = SqlFhirStore(db)
        with db.write() as session:
            session.add(Tenant(id="north"))
            session.add(Tenant(id="south"))
            session.flush()
            for n in range(5):
                store.put(session, "north", task(n), workitem_uid=UIDS[n])
            for n in range(3):
                store.put(session, "north", report(n), workitem_uid=UIDS[n])
                for k in (1, 2):
                    store.put(session, "north", observation(n, k), workitem_uid=UIDS[n])
            other = {**task(0), "id": OTHER_TENANT_TASK}
            store.put(session, "south", other)
        app = fhir_app(db, store)
        try:
            with run_live_server(app) as server, httpx.Client(timeout=30) as http:
                base = server.url + "/fhir"
                app.state.fhir_base_url = base
                yield Fhir(base=base, db=db, store=store, http=http)
        finally:
            db.dispose()


def smart(fhir: Fhir) -> Any:
    return smart_client.FHIRClient(settings={"app_id": "aifi-test", "api_base": fhir.base + "/"})


def assert_outcome(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert (issue["severity"], issue["code"]) == ("error", code)
    for word in words:
        assert word in issue["diagnostics"]


def bundle_ids(body: Resource, mode: str = "match") -> list[str]:
    return [
        e["resource"]["id"]
        for e in body.get("entry", ())
        if e.get("search", {}).get("mode") == mode
    ]


# --- capabilities ---------------------------------------------------------------------------


def test_metadata_says_what_the_server_does(fhir: Fhir):
    response = fhir.http.get(f"{fhir.base}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert (statement["fhirVersion"], statement["format"]) == ("4.0.1", ["json"])
    assert statement["kind"] == "instance"
    assert statement["software"]["name"] == "aifi-hub"
    assert statement["implementation"]["url"] == fhir.base
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == set(SEARCH_PARAMS)

    def codes(kind: str) -> set[str]:
        return {i["code"] for i in resources[kind]["interaction"]}

    assert {"read", "search-type", "create", "update"} <= codes("Task")
    assert "delete" not in codes("Task")
    assert "create" not in codes("DiagnosticReport")
    assert {"create", "update", "delete"} <= codes("Subscription")
    assert resources["Task"]["conditionalCreate"] is True
    assert resources["Subscription"]["conditionalCreate"] is False
    assert resources["Task"]["versioning"] == "versioned"
    assert resources["Task"]["readHistory"] is False
    assert "DiagnosticReport:result" in resources["DiagnosticReport"]["searchInclude"]
    task_params = {p["name"]: p["type"] for p in resources["Task"]["searchParam"]}
    assert task_params["authored-on"] == "date"
    assert task_params["patient"] == "reference"
    assert set(task_params) == set(SEARCH_PARAMS["Task"])
    assert "rest-hook" in resources["Subscription"]["documentation"]
    assert "append-only" in resources["AuditEvent"]["documentation"]

    client = smart(fhir)
    client.prepare()
    assert client.server.capabilityStatement.fhirVersion == "4.0.1"


# --- read -----------------------------------------------------------------------------------


def test_read_with_etag_last_modified_and_not_modified(fhir: Fhir):
    response = fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith(" GMT")
    body = response.json()
    assert (body["id"], body["meta"]["versionId"]) == (UIDS[0], "1")
    again = fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}", headers={"If-None-Match": 'W/"1"'})
    assert (again.status_code, again.content) == (304, b"")
    stale = fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}", headers={"If-None-Match": 'W/"0"'})
    assert stale.status_code == 200
    vread = fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}/_history/1")
    assert vread.json()["id"] == UIDS[0]
    assert_outcome(fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}/_history/7"), 404, "not-found")
    assert_outcome(fhir.http.get(f"{fhir.base}/Task/nope"), 404, "not-found", "Task/nope")


def test_fhirclient_reads_and_searches(fhir: Fhir):
    server = smart(fhir).server
    read = SmartTask.read(UIDS[3], server)
    assert (read.id, read.status, read.focus.reference) == (
        UIDS[3],
        "in-progress",
        f"ImagingStudy/{STUDY}",
    )
    found = SmartTask.where(struct={"status": "completed"}).perform_resources_iter(server)
    assert sorted(t.id for t in found) == UIDS[:3]
    reports = SmartReport.where(
        struct={"subject": f"Patient/{PATIENT}", "status": "final"}
    ).perform_resources_iter(server)
    assert sorted(r.id for r in reports) == UIDS[:2]


# --- search: every parameter of Task and DiagnosticReport ------------------------------------

TASK_CASES = [
    ("_id", f"{UIDS[1]},{UIDS[2]}", UIDS[1:3]),
    ("_lastUpdated", "gt2020-01-01", UIDS),
    ("status", "in-progress,ready", UIDS[3:]),
    ("status:not", "completed", UIDS[3:]),
    ("business-status", "http://dicom.nema.org/resources/ontology/DCM|SCHEDULED", UIDS[3:]),
    ("focus", f"ImagingStudy/{STUDY}", UIDS),
    ("patient", PATIENT, UIDS),
    ("patient:identifier", "urn:aifi:patient-id|PID-0042", UIDS),
    ("subject", f"https://elsewhere.example/fhir/Patient/{PATIENT}", UIDS),
    ("owner", "Device/AIFI-CXR", UIDS[4:]),
    ("code", f"{PRODUCT}|AIFI-CXR", UIDS[4:]),
    ("identifier", f"{DICOM_UID}|urn:oid:{UIDS[2]}", UIDS[2:3]),
    ("based-on", "ServiceRequest/order-17", UIDS[4:]),
    ("authored-on", "2026-03-02", UIDS[1:2]),
    ("authored-on", "ge2026-03-04T07:00:00Z", UIDS[3:]),
    ("modified", "lt2026-03-02", UIDS[:1]),
]
REPORT_CASES = [
    ("_id", UIDS[0], UIDS[:1]),
    ("_lastUpdated", "ge2020-01-01T00:00:00Z", UIDS[:3]),
    ("patient", f"Patient/{PATIENT}", UIDS[:3]),
    ("subject", PATIENT, UIDS[:3]),  # any type: subject has several target types
    ("subject:Patient", PATIENT, UIDS[:3]),
    ("status", "final", UIDS[:2]),
    ("based-on", "ServiceRequest/order-2", UIDS[2:3]),
    ("code", "AIFI-BONEAGE", UIDS[:3]),
    ("date", "2026-03-01", UIDS[:1]),
    ("date", "sa2026-03-01", UIDS[1:3]),
    ("issued", "le2026-03-02T10:00:00Z", UIDS[:2]),
    ("identifier", f"urn:oid:{UIDS[1]}", UIDS[1:2]),
    ("result", f"Observation/{UIDS[2]}-2", UIDS[2:3]),
    ("category", "http://terminology.hl7.org/CodeSystem/v2-0074|RAD", UIDS[:3]),
]


@pytest.mark.parametrize(
    ("resource_type", "name", "value", "expected"),
    [("Task", *case) for case in TASK_CASES] + [("DiagnosticReport", *c) for c in REPORT_CASES],
)
def test_search_parameter(fhir: Fhir, resource_type, name, value, expected):
    response = fhir.http.get(f"{fhir.base}/{resource_type}", params={name: value})
    assert response.status_code == 200, response.text
    body = response.json()
    Bundle.model_validate(body)
    assert (body["type"], body["total"]) == ("searchset", len(expected))
    assert sorted(bundle_ids(body)) == sorted(expected)
    for entry in body.get("entry", ()):
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{fhir.base}/{resource_type}/{resource['id']}"


def test_every_task_and_report_parameter_is_covered():
    for resource_type, cases in (("Task", TASK_CASES), ("DiagnosticReport", REPORT_CASES)):
        covered = {name.split(":")[0] for name, _, _ in cases}
        assert covered == set(SEARCH_PARAMS[resource_type])


def test_post_search_with_a_form_body(fhir: Fhir):
    response = fhir.http.post(
        f"{fhir.base}/Task/_search",
        content="status=completed&_count=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = response.json()
    assert (response.status_code, body["total"], len(body["entry"])) == (200, 3, 2)
    wrong = fhir.http.post(
        f"{fhir.base}/Task/_search", content="{}", headers={"Content-Type": FHIR_JSON}
    )
    assert_outcome(wrong, 415, "not-supported")


def test_include_brings_the_observations_of_the_reports(fhir: Fhir):
    body = fhir.search("DiagnosticReport?status=final&_include=DiagnosticReport:result").json()
    Bundle.model_validate(body)
    assert body["total"] == 2
    assert sorted(bundle_ids(body)) == UIDS[:2]
    assert sorted(bundle_ids(body, "include")) == [f"{u}-{k}" for u in UIDS[:2] for k in (1, 2)]
    included = [e for e in body["entry"] if e["search"]["mode"] == "include"]
    assert all(e["resource"]["resourceType"] == "Observation" for e in included)
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "_include=DiagnosticReport%3Aresult" in self_link


def test_paging_with_next_links_until_exhausted(fhir: Fhir):
    url: str | None = f"{fhir.base}/Task?_count=2&_sort=-authored-on"
    seen: list[str] = []
    pages = 0
    while url:
        body = fhir.http.get(url).json()
        assert body["total"] == 5
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert links["self"].startswith(f"{fhir.base}/Task?")
        assert ("previous" in links) == (pages > 0)
        seen.extend(bundle_ids(body))
        url = links.get("next")
        pages += 1
    assert (pages, seen) == (3, list(reversed(UIDS)))

    everything = SmartTask.where(struct={"_count": "2"}).perform_resources_iter(smart(fhir).server)
    assert sorted(t.id for t in everything) == UIDS


def test_summary_count_and_count_zero_give_the_total_only(fhir: Fhir):
    for query in ("_summary=count", "_count=0"):
        body = fhir.search(f"Task?status=completed&{query}").json()
        Bundle.model_validate(body)
        assert (body["total"], "entry" in body) == (3, False)


def test_lenient_and_strict_unknown_parameters(fhir: Fhir):
    body = fhir.search("Task?colour=red&status=ready").json()
    assert bundle_ids(body) == UIDS[4:]
    report = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert len(report) == 1
    issue = report[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and "colour" in issue["diagnostics"]
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "colour" not in self_link and "status=ready" in self_link
    strict = fhir.search("Task?colour=red&status=ready", Prefer="handling=strict")
    assert_outcome(strict, 400, "invalid", "colour")
    modifier = fhir.search("Task?status:text=ready", Prefer="handling=strict")
    assert_outcome(modifier, 400, "invalid", ":text")
    assert_outcome(fhir.search("Task?authored-on=soon"), 400, "invalid", "authored-on")
    assert_outcome(fhir.search("Task?_format=xml"), 406, "not-supported")
    assert_outcome(
        fhir.search(f"Task/{UIDS[0]}?_format=application/fhir+xml"), 406, "not-supported"
    )


# --- versions and client writes -------------------------------------------------------------


def test_a_changed_resource_gets_version_2_and_a_stale_if_match_fails(fhir: Fhir):
    changed = {**task(3), "status": "completed"}
    with fhir.db.write() as session:
        assert fhir.store.put(session, "north", changed) is not None
        assert fhir.store.put(session, "north", changed) is None
    response = fhir.http.get(f"{fhir.base}/Task/{UIDS[3]}")
    assert (response.headers["etag"], response.json()["meta"]["versionId"]) == ('W/"2"', "2")
    body = {**response.json(), "status": "in-progress"}
    stale = fhir.http.put(
        f"{fhir.base}/Task/{UIDS[3]}",
        json=body,
        headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert_outcome(stale, 412, "conflict", "version 2 is current")
    fresh = fhir.http.put(
        f"{fhir.base}/Task/{UIDS[3]}",
        json=body,
        headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"2"'},
    )
    assert fresh.status_code == 200, fresh.text
    assert (fresh.headers["etag"], fresh.json()["status"]) == ('W/"3"', "in-progress")
    mismatch = fhir.http.put(
        f"{fhir.base}/Task/{UIDS[2]}", json=body, headers={"Content-Type": FHIR_JSON}
    )
    assert_outcome(mismatch, 400, "invalid", UIDS[2])


def test_create_conditional_create_and_prefer(fhir: Fhir):
    order = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:epd:order", "value": "ORD-1"}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": PRODUCT, "code": "AIFI-BONEAGE"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    headers = {"Content-Type": FHIR_JSON, "If-None-Exist": "identifier=urn:epd:order|ORD-1"}
    created = fhir.http.post(f"{fhir.base}/ServiceRequest", json=order, headers=headers)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    assert created.headers["location"] == f"{fhir.base}/ServiceRequest/{new_id}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    again = fhir.http.post(f"{fhir.base}/ServiceRequest", json=order, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, new_id)

    minimal = fhir.http.post(
        f"{fhir.base}/ServiceRequest",
        json=order,
        headers={"Content-Type": "application/json", "Prefer": "return=minimal"},
    )
    assert (minimal.status_code, minimal.content) == (201, b"")
    assert minimal.headers["location"].startswith(f"{fhir.base}/ServiceRequest/")
    report_back = fhir.http.post(
        f"{fhir.base}/ServiceRequest",
        json=order,
        headers={"Content-Type": FHIR_JSON, "Prefer": "return=OperationOutcome"},
    )
    assert report_back.json()["resourceType"] == "OperationOutcome"
    found = fhir.search("ServiceRequest?identifier=urn:epd:order|ORD-1").json()
    assert found["total"] == 3


# --- errors ---------------------------------------------------------------------------------


def test_bad_bodies(fhir: Fhir):
    url = f"{fhir.base}/ServiceRequest"
    malformed = fhir.http.post(
        url, content=b'{"resourceType": ', headers={"Content-Type": FHIR_JSON}
    )
    assert_outcome(malformed, 400, "structure", "JSON")
    array = fhir.http.post(url, content=b"[]", headers={"Content-Type": FHIR_JSON})
    assert_outcome(array, 400, "structure")
    other_type = fhir.http.post(
        url, json={"resourceType": "Task"}, headers={"Content-Type": FHIR_JSON}
    )
    assert_outcome(other_type, 400, "structure", "ServiceRequest")
    xml = fhir.http.post(
        url, content=b"<ServiceRequest/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert_outcome(xml, 415, "not-supported", "application/fhir+xml")
    huge: Resource = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    huge["note"] = [{"text": "x" * (1024 * 1024)}]
    too_large = fhir.http.post(url, content=json.dumps(huge), headers={"Content-Type": FHIR_JSON})
    assert_outcome(too_large, 413, "too-long")
    invalid = fhir.http.post(
        url,
        json={"resourceType": "ServiceRequest", "status": "active"},
        headers={"Content-Type": FHIR_JSON},
    )
    assert_outcome(invalid, 400, "required", "ServiceRequest.subject")  # required in R4
    assert invalid.json()["issue"][0]["expression"] == ["ServiceRequest.subject"]
    bad_code = fhir.http.post(
        url,
        json={
            "resourceType": "ServiceRequest",
            "status": "bogus",
            "intent": "order",
            "subject": {"reference": "Patient/p"},
        },
        headers={"Content-Type": FHIR_JSON},
    )
    assert_outcome(bad_code, 400, "value", "ServiceRequest.status")


def test_unknown_types_and_unsupported_interactions(fhir: Fhir):
    assert_outcome(fhir.search("Basic"), 404, "not-supported", "Basic")
    assert_outcome(fhir.search("Basic/1"), 404, "not-supported")
    denied = [
        fhir.http.delete(f"{fhir.base}/Task/{UIDS[0]}"),
        fhir.http.post(
            f"{fhir.base}/DiagnosticReport",
            json={"resourceType": "DiagnosticReport"},
            headers={"Content-Type": FHIR_JSON},
        ),
        fhir.http.put(
            f"{fhir.base}/Observation/{UIDS[0]}-1",
            json=observation(0, 1),
            headers={"Content-Type": FHIR_JSON},
        ),
        fhir.http.patch(f"{fhir.base}/Task/{UIDS[0]}", json=[]),
        fhir.http.delete(f"{fhir.base}/Task"),
    ]
    assert [r.headers["allow"] for r in denied] == [
        "GET, PUT",
        "GET",
        "GET",
        "GET, PUT",
        "GET, POST",
    ]
    for response in denied:
        assert response.status_code == 405, response.request
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.headers["content-type"].startswith(FHIR_JSON)
    assert fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}").status_code == 200


def test_another_tenants_resources_are_not_there(fhir: Fhir):
    assert_outcome(fhir.http.get(f"{fhir.base}/Task/{OTHER_TENANT_TASK}"), 404, "not-found")
    body = fhir.search(f"Task?_id={OTHER_TENANT_TASK}").json()
    assert body["total"] == 0
    assert fhir.search("Task").json()["total"] == 5
    theirs = fhir.http.get(f"{fhir.base}/Task", headers={"X-Tenant": "south"}).json()
    assert bundle_ids(theirs) == [OTHER_TENANT_TASK]
    mine = fhir.http.get(f"{fhir.base}/Task/{UIDS[0]}", headers={"X-Tenant": "south"})
    assert mine.status_code == 404
