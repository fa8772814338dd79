"""The audit trail (issue 6 point 5; IHE BALP, DICOM PS3.15 A.5) against a real hub under
uvicorn, driven by httpx: every access to patient data writes one row with who, what, when,
from where, the outcome and the patient; the rows are append-only in the database (SQLite
and PostgreSQL); administrators search them as FHIR AuditEvents, which cannot be written;
a PACS delivery is recorded as an export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aifi.fhir import mapping
from aifi.fhir.views import PatientView
from aifi.hub.audit.events import AuditEntry
from aifi.hub.audit.exports import PacsDeliveryAudit
from aifi.hub.audit.rows import entity_ids, records
from aifi.hub.audit.trail import AuditTrail
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import AuditRecord
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.contract.test_delivery import (
    FakePacs,
    destinations,
    enqueue,
    open_hub_database,
    refuse,
    store_result,
)
from tests.support.clock import Clock
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.wait import wait_until

PATIENT = "AUDIT-PAT-1"
FHIR_JSON = "application/fhir+json"


def wait_rows(hub: LiveServer, count: int) -> list[AuditRecord]:
    """The audit rows once there are ``count`` (they are written just after the response)."""
    rows: list[AuditRecord] = []

    def enough() -> bool:
        rows[:] = records(hub.app.state.hub.db)
        return len(rows) >= count

    wait_until(
        enough, 10, lambda: f"{count} audit rows; seen: {[(r.method, r.path) for r in rows]}"
    )
    return rows


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("audit") / "data", auth="off", dev_mode=True
    )
    with running_hub(settings) as server:
        yield server


@pytest.fixture(scope="module")
def accesses(hub: LiveServer) -> dict[str, AuditRecord]:
    """A STOW, a QIDO, a WADO, a 404, a FHIR create/read/search: one row each."""
    study = make_study(1, 2, patient_id=PATIENT)
    uid = str(study[0].StudyInstanceUID)
    body, content_type = multipart_related([to_bytes(ds) for ds in study])
    steps = []
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
        steps.append(("stow", r.status_code, 200))
        r = client.get("/dicomweb/studies", params={"PatientID": PATIENT})
        steps.append(("qido", r.status_code, 200))
        r = client.get(f"/dicomweb/studies/{uid}/metadata")
        steps.append(("wado", r.status_code, 200))
        r = client.get("/dicomweb/studies/1.2.826.0.1.3680043.8.498.404/metadata")
        steps.append(("missing", r.status_code, 404))
        order = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {
                "reference": "Patient/" + mapping.patient_id(PatientView(PATIENT)),
                "identifier": {"system": "urn:aifi:patient-id", "value": PATIENT},
            },
        }
        r = client.post("/fhir/ServiceRequest", json=order, headers={"Content-Type": FHIR_JSON})
        steps.append(("fhir-create", r.status_code, 201))
        order_id = r.json()["id"]
        r = client.get(f"/fhir/ServiceRequest/{order_id}")
        steps.append(("fhir-read", r.status_code, 200))
        r = client.get("/fhir/ServiceRequest", params={"status": "active"})
        steps.append(("fhir-search", r.status_code, 200))
        # no patient data: not audited
        assert client.get("/healthz").status_code == 200
        assert client.get("/fhir/metadata").status_code == 200
    for name, got, expected in steps:
        assert got == expected, name
    rows = wait_rows(hub, len(steps))
    assert len(rows) == len(steps), [(r.method, r.path) for r in rows]
    return {name: row for (name, _, _), row in zip(steps, rows, strict=True)} | {
        "study": rows[0],
        "order": order_id,
    }


def test_each_access_writes_one_row_with_who_what_where_outcome_and_patient(accesses):
    study_uid = accesses["stow"].study_uid
    assert study_uid
    expected = {
        "stow": ("C", "create", "110104", "STOW-RS", 0, "/dicomweb/studies"),
        "qido": ("E", "search", "110112", "QIDO-RS", 0, "/dicomweb/studies"),
        "wado": ("R", "read", "110103", "WADO-RS", 0, "/dicomweb/studies/{study}/metadata"),
        "missing": ("R", "read", "110103", "WADO-RS", 4, "/dicomweb/studies/{study}/metadata"),
        "fhir-create": ("C", "create", "rest", "create", 0, "/fhir/{resource_type}"),
        "fhir-read": ("R", "read", "rest", "read", 0, "/fhir/{resource_type}/{resource_id}"),
        "fhir-search": ("E", "search", "rest", "search-type", 0, "/fhir/{resource_type}"),
    }
    for name, (action, interaction, code, subtype, outcome, path) in expected.items():
        row: AuditRecord = accesses[name]
        got = (row.action, row.interaction, row.event_code, row.subtype, row.outcome, row.path)
        assert got == (action, interaction, code, subtype, outcome, path), name
        assert (row.tenant, row.client_id, row.role) == ("default", "anonymous", "dev")
        assert row.address == "127.0.0.1"
        assert row.recorded_at is not None
    for name in ("stow", "qido", "wado", "fhir-create", "fhir-read"):
        assert accesses[name].patient_id == PATIENT, name
    assert accesses["wado"].study_uid == study_uid
    assert accesses["qido"].query == f"PatientID={PATIENT}"
    assert accesses["fhir-search"].query == "status=active"
    missing = accesses["missing"]
    assert (missing.http_status, missing.patient_id) == (404, None)
    assert missing.study_uid == "1.2.826.0.1.3680043.8.498.404"
    assert entity_ids(accesses["fhir-read"], "fhir") == [accesses["order"]]


def _search(hub: LiveServer, **params: str) -> dict[str, Any]:
    r = httpx.get(hub.url + "/fhir/AuditEvent", params=params, timeout=30)
    assert r.status_code == 200, r.text
    bundle: dict[str, Any] = r.json()
    return bundle


def test_audit_events_are_searchable_through_fhir(hub, accesses):
    pat = "Patient/" + mapping.patient_id(PatientView(PATIENT))
    stow = _search(hub, action="C", patient=pat, subtype="STOW-RS")
    assert [e["resource"]["id"] for e in stow["entry"]] == [f"audit-{accesses['stow'].pk}"]
    event = stow["entry"][0]["resource"]
    assert event["type"]["code"] == "110104"
    assert event["outcome"] == "0"
    client = event["agent"][0]
    assert client["requestor"] is True
    assert client["who"]["identifier"]["value"] == "anonymous"
    assert client["network"] == {"address": "127.0.0.1", "type": "2"}
    roles = {e["role"]["code"] for e in event["entity"]}
    assert roles == {"1", "3"}  # the patient and the study

    failed = _search(hub, outcome="4")
    assert f"audit-{accesses['missing'].pk}" in {e["resource"]["id"] for e in failed["entry"]}
    assert all(e["resource"]["outcome"] == "4" for e in failed["entry"])

    today = datetime.now(UTC).date().isoformat()
    assert _search(hub, date=f"ge{today}", patient=pat)["total"] >= 5
    assert _search(hub, date="lt2000-01-01")["total"] == 0
    query = _search(hub, subtype="QIDO-RS", type="110112")
    assert query["total"] == 1
    entity = {e["role"]["code"]: e for e in query["entry"][0]["resource"]["entity"]}
    assert "24" in entity  # the BALP Query entity with the base64 query
    by_client = _search(hub, **{"agent:identifier": "urn:aifi:oauth-client|anonymous"})
    assert by_client["total"] >= 7
    page = _search(hub, _count="2")
    assert len(page["entry"]) == 2
    assert any(link["relation"] == "next" for link in page["link"])
    rest = _search(hub, type="rest", action="R", entity=f"ServiceRequest/{accesses['order']}")
    assert rest["total"] == 1


def test_audit_events_cannot_be_written_through_fhir(hub, accesses):
    event_id = f"audit-{accesses['stow'].pk}"
    body = {"resourceType": "AuditEvent", "id": event_id}
    with httpx.Client(base_url=hub.url + "/fhir", timeout=30) as client:
        current = client.get(f"/AuditEvent/{event_id}")
        assert current.status_code == 200
        for response in (
            client.post("/AuditEvent", json=body, headers={"Content-Type": FHIR_JSON}),
            client.put(f"/AuditEvent/{event_id}", json=body, headers={"Content-Type": FHIR_JSON}),
            client.delete(f"/AuditEvent/{event_id}"),
        ):
            assert response.status_code == 405
            assert response.json()["resourceType"] == "OperationOutcome"
        assert client.get(f"/AuditEvent/{event_id}").json() == current.json()
    metadata = httpx.get(hub.url + "/fhir/metadata").json()
    (audit,) = [r for r in metadata["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "search-type"}
    assert "append-only" in audit["documentation"]


def _entry(**kwargs: object) -> AuditEntry:
    values: dict[str, object] = {
        "action": "R",
        "interaction": "read",
        "event_code": "110103",
        "subtype": "WADO-RS",
        "outcome": 0,
        "client_id": "pacs-gateway",
        "tenant": "default",
    }
    return AuditEntry(**(values | kwargs))  # type: ignore[arg-type]


def test_audit_rows_cannot_be_updated_or_deleted(database_url: str | None, tmp_path: Path):
    db, store = open_hub_database(database_url, tmp_path)
    try:
        trail = AuditTrail(db)
        pk = trail.record(_entry())
        assert pk is not None
        for statement in (
            "UPDATE audit_event SET client_id = 'someone-else'",
            "DELETE FROM audit_event",
        ):
            with pytest.raises(DBAPIError, match="append-only"), db.transaction() as conn:
                conn.execute(text(statement))
        (row,) = records(db)
        assert (row.pk, row.client_id) == (pk, "pacs-gateway")
        assert trail.failures == 0
        # appending still works, and the export cursor (another table) moves
        assert trail.record(_entry(outcome=4)) == pk + 1
        with db.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_cursor (name, last_pk, updated_at) "
                    "VALUES ('x', 1, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(text("UPDATE audit_cursor SET last_pk = 2 WHERE name = 'x'"))
    finally:
        store.close()
        db.dispose()


def test_a_failing_audit_write_is_counted_and_never_raises(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no migration: no table
    try:
        trail = AuditTrail(db)
        assert trail.record(_entry()) is None
        assert trail.failures == 1
    finally:
        db.dispose()


def test_a_pacs_delivery_writes_an_export_event(database_url: str | None, tmp_path: Path):
    from aifi.hub.delivery.deliverer import Deliverer

    db, store = open_hub_database(database_url, tmp_path)
    pacs = FakePacs()
    try:
        trail = AuditTrail(db)
        config = destinations("pacs-a")
        deliverer = Deliverer(
            db,
            store,
            config,
            clock=Clock(),
            client_factory=pacs.client,
            audit=PacsDeliveryAudit(trail, config),
        )
        released = store_result(db, store, instances=2)
        enqueue(deliverer, released)
        assert deliverer.tick() == 1
        (row,) = records(db)
        assert (row.interaction, row.action, row.event_code) == ("export", "R", "110104")
        assert (row.subtype, row.outcome, row.client_id) == ("PACS delivery", 0, "aifi-hub")
        assert row.study_uid == released.study_instance_uid
        assert row.patient_id == str(released.inputs[0].PatientID)
        assert sorted(entity_ids(row, "instance")) == sorted(released.sop_uids)
        assert entity_ids(row, "destination") == ["pacs-a"]

        pacs.behaviour = refuse
        refused = store_result(db, store, instances=1)
        enqueue(deliverer, refused)
        assert deliverer.tick() == 1
        last = records(db)[-1]
        assert (last.interaction, last.outcome) == ("export", 8)
        assert "0xA900" in last.entity
    finally:
        store.close()
        db.dispose()
