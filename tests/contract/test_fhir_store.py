"""The FHIR resource store on SQLite and PostgreSQL: versions, the search index, searches
with every kind of parameter, _include, paging, tenants, and the change listeners."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from sqlmodel import Session

from aifi.errors import NotFound, PreconditionFailed
from aifi.fhir.search import parse_search
from aifi.fhir.types import Resource, StoredResource
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import Tenant
from tests.conftest import database_for

UID1 = "1.2.826.0.1.3680043.8.498.101"
UID2 = "1.2.826.0.1.3680043.8.498.102"
STUDY = "1.2.826.0.1.3680043.8.498.900"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 5, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=10)
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, StoredResource, StoredResource | None]] = []

    def on_change(self, session: Session, tenant: str, stored, previous) -> None:
        self.changes.append((tenant, stored, previous))


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[Database]:
    with database_for(backend) as url:
        database = Database(url or f"sqlite:///{folder}/hub.db")
        database.migrate()
        with database.write() as session:
            session.add(Tenant(id="north"))
            session.add(Tenant(id="south"))
        yield database
        database.dispose()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, SqlFhirStore]]:
    """One seeded database per backend for the many read-only search cases."""
    with fresh_database(request.param, tmp_path_factory.mktemp("fhir")) as database:
        store = SqlFhirStore(database, clock=Clock())
        seed(store, database)
        yield database, store


def task(uid: str, status: str, **extra: object) -> Resource:
    return {
        "resourceType": "Task",
        "id": uid,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "focus": {"reference": f"ImagingStudy/{STUDY}"},
        "for": {
            "reference": "Patient/pat-0123456789abcdef01234567",
            "identifier": {"system": "urn:aifi:patient-id", "value": "P1"},
        },
        "authoredOn": "2026-03-05T09:00:00+01:00",
        **extra,
    }


def report(uid: str, n_results: int) -> Resource:
    return {
        "resourceType": "DiagnosticReport",
        "id": uid,
        "status": "final",
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "subject": {"reference": "Patient/pat-0123456789abcdef01234567"},
        "effectiveDateTime": "2026-03-05T09:30:00Z",
        "result": [{"reference": f"Observation/{uid}-{n}"} for n in range(1, n_results + 1)],
    }


def observation(uid: str, n: int) -> Resource:
    return {
        "resourceType": "Observation",
        "id": f"{uid}-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85151-1"}]},
        "subject": {"reference": "Patient/pat-0123456789abcdef01234567"},
        "valueQuantity": {"value": 11.5, "unit": "a", "system": "http://unitsofmeasure.org"},
    }


def search(store: SqlFhirStore, resource_type: str, query: str, tenant: str = "north"):
    return store.search(tenant, parse_search(resource_type, parse_qsl(query), strict=True))


def ids(result) -> list[str]:
    return [s.resource_id for s in result.matches]


def test_put_versions_only_real_changes_and_tells_the_listeners(db: Database):
    store = SqlFhirStore(db, clock=Clock())
    recorder = Recorder()
    store.listeners.append(recorder)
    with db.write() as session:
        first = store.put(session, "north", task(UID1, "ready"), workitem_uid=UID1)
        same = store.put(session, "north", task(UID1, "ready"))
    with db.write() as session:
        second = store.put(session, "north", task(UID1, "in-progress"))
    assert first is not None and second is not None and same is None
    assert (first.version_id, second.version_id) == (1, 2)
    assert second.content["meta"]["versionId"] == "2"
    assert second.content["meta"]["lastUpdated"] == "2026-03-05T10:00:20.000+00:00"
    assert [(t, s.version_id, p.version_id if p else None) for t, s, p in recorder.changes] == [
        ("north", 1, None),
        ("north", 2, 1),
    ]
    stored = store.read("north", "Task", UID1)
    assert stored.version_id == 2
    assert stored.last_updated == datetime(2026, 3, 5, 10, 0, 20, tzinfo=UTC)
    assert stored.etag == 'W/"2"'
    assert ids(search(store, "Task", "status=ready")) == []
    assert ids(search(store, "Task", "status=in-progress")) == [UID1]


def test_meta_profile_is_kept_and_a_stale_meta_is_no_change(db: Database):
    store = SqlFhirStore(db, clock=Clock())
    profiled = task(UID1, "ready", meta={"profile": ["http://example.org/p"]})
    with db.write() as session:
        stored = store.put(session, "north", profiled)
        assert stored is not None
        echo = {**profiled, "meta": {**stored.content["meta"], "versionId": "7"}}
        assert store.put(session, "north", echo) is None
    assert store.read("north", "Task", UID1).content["meta"]["profile"] == ["http://example.org/p"]


def seed(store: SqlFhirStore, db: Database) -> None:
    with db.write() as session:
        store.put(session, "north", task(UID1, "completed", lastModified="2026-03-05T10:00:00Z"))
        store.put(
            session,
            "north",
            task(
                UID2,
                "in-progress",
                businessStatus={"text": "x", "coding": [{"system": "urn:s", "code": "IP"}]},
                owner={"reference": "Device/AIFI-BONEAGE"},
                basedOn=[{"reference": "ServiceRequest/sr-1"}],
                authoredOn="2026-03-06",
            ),
        )
        store.put(session, "north", report(UID1, 2))
        store.put(session, "north", report(UID2, 1))
        for n in (1, 2):
            store.put(session, "north", observation(UID1, n))
        store.put(session, "north", observation(UID2, 1))
        store.put(session, "south", task("9.9.9", "ready"))
        store.put(
            session,
            "north",
            {
                "resourceType": "Device",
                "id": "AIFI-BONEAGE",
                "manufacturer": "Ünion Medical 50%",
                "deviceName": [{"name": "BoneAge", "type": "model-name"}],
            },
        )


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Task", "", [UID1, UID2]),
        ("Task", "status=completed,in-progress", [UID1, UID2]),
        ("Task", "status:not=completed", [UID2]),
        ("Task", "status:not=completed,in-progress", []),
        ("Task", "business-status=urn:s|IP", [UID2]),
        ("Task", "business-status=|IP", []),
        ("Task", "code=urn:aifi:product|AIFI-BONEAGE", [UID1, UID2]),
        ("Task", "code=urn:aifi:product|", [UID1, UID2]),
        ("Task", f"identifier=urn:dicom:uid|urn:oid:{UID2}", [UID2]),
        ("Task", f"_id={UID1}", [UID1]),
        ("Task", f"_id:not={UID1}", [UID2]),
        ("Task", f"focus=ImagingStudy/{STUDY}", [UID1, UID2]),
        ("Task", f"focus={STUDY}", [UID1, UID2]),
        ("Task", "patient=pat-0123456789abcdef01234567", [UID1, UID2]),
        ("Task", "subject=Patient/pat-0123456789abcdef01234567", [UID1, UID2]),
        ("Task", "patient:identifier=urn:aifi:patient-id|P1", [UID1, UID2]),
        ("Task", "patient:identifier=P2", []),
        ("Task", "owner=Device/AIFI-BONEAGE", [UID2]),
        ("Task", "owner:missing=true", [UID1]),
        ("Task", "based-on=ServiceRequest/sr-1", [UID2]),
        ("Task", "based-on=sr-1", [UID2]),
        ("Task", "authored-on=2026-03-05", [UID1]),
        ("Task", "authored-on=2026-03-05T08:00:00Z", [UID1]),
        ("Task", "authored-on=gt2026-03-05T08:00:00Z", [UID2]),
        ("Task", "authored-on=ge2026-03-05T08:00:00Z", [UID1, UID2]),
        ("Task", "authored-on=lt2026-03-06", [UID1]),
        ("Task", "authored-on=le2026-03-06", [UID1, UID2]),
        ("Task", "authored-on=ne2026-03-06", [UID1]),
        ("Task", "authored-on=sa2026-03-05", [UID2]),
        ("Task", "authored-on=eb2026-03-06", [UID1]),
        ("Task", "authored-on=2026-03", [UID1, UID2]),
        ("Task", "authored-on=ge2026-03-05&authored-on=lt2026-03-06", [UID1]),
        ("Task", "modified=2026-03-05", [UID1]),
        ("Task", "_lastUpdated=2026-03-05", [UID1, UID2]),
        ("Task", "_lastUpdated=gt2026-03-05T10:00:10Z", [UID2]),
        ("Task", "_lastUpdated=le2026-03-05T10:00:10Z", [UID1]),
        ("Task", "_lastUpdated=lt2026", []),
        ("DiagnosticReport", "result=Observation/" + UID2 + "-1", [UID2]),
        ("DiagnosticReport", "date=2026-03-05", [UID1, UID2]),
        ("DiagnosticReport", "status=final&code=AIFI-BONEAGE", [UID1, UID2]),
        ("Device", "manufacturer=union", ["AIFI-BONEAGE"]),
        ("Device", "manufacturer=medical", []),
        ("Device", "manufacturer:contains=MEDICAL", ["AIFI-BONEAGE"]),
        ("Device", "manufacturer:contains=50%25", ["AIFI-BONEAGE"]),
        ("Device", "manufacturer:contains=_", []),
        ("Device", "device-name:exact=BoneAge", ["AIFI-BONEAGE"]),
        ("Device", "device-name:exact=boneage", []),
    ],
)
def test_search_criteria(seeded, resource_type: str, query: str, expected: list[str]):
    db, store = seeded
    result = search(store, resource_type, query)
    assert sorted(ids(result)) == sorted(expected)
    assert result.total == len(expected)
    with db.read() as session:
        parsed = parse_search(resource_type, parse_qsl(query), strict=True)
        matching = [
            rid
            for rid in (UID1, UID2, "AIFI-BONEAGE")
            if store.matches(session, "north", parsed, resource_type, rid)
        ]
    assert sorted(matching) == sorted(expected)


def test_include_paging_and_sorting(db: Database):
    store = SqlFhirStore(db, clock=Clock())
    seed(store, db)
    result = search(store, "DiagnosticReport", "_include=DiagnosticReport:result")
    assert ids(result) == [UID1, UID2]
    assert sorted(s.resource_id for s in result.included) == [
        f"{UID1}-1",
        f"{UID1}-2",
        f"{UID2}-1",
    ]
    page = search(store, "DiagnosticReport", "_include=DiagnosticReport:result&_count=1&_offset=1")
    assert (page.total, ids(page)) == (2, [UID2])
    assert [s.resource_id for s in page.included] == [f"{UID2}-1"]
    assert ids(search(store, "Task", "_sort=-authored-on")) == [UID2, UID1]
    assert ids(search(store, "Task", "_sort=-_lastUpdated")) == [UID2, UID1]
    counted = search(store, "Task", "_summary=count")
    assert (counted.total, counted.matches) == (2, ())
    assert search(store, "Task", "_count=0").matches == ()


def test_tenants_do_not_see_each_other(db: Database):
    store = SqlFhirStore(db, clock=Clock())
    seed(store, db)
    with pytest.raises(NotFound):
        store.read("north", "Task", "9.9.9")
    assert ids(search(store, "Task", "", tenant="south")) == ["9.9.9"]
    assert ids(search(store, "Task", "_id=9.9.9")) == []


def test_client_create_update_delete(db: Database):
    store = SqlFhirStore(db, clock=Clock())
    request: Resource = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    request["subject"] = {"reference": "Patient/pat-1"}
    condition = parse_search("ServiceRequest", [("subject", "Patient/pat-1")], strict=True)
    with db.write() as session:
        created = store.create(session, "north", request, if_none_exist=condition)
        again = store.create(session, "north", request, if_none_exist=condition)
    assert created.created and not again.created
    assert again.stored.resource_id == created.stored.resource_id
    assert len(created.stored.resource_id) == 32
    changed = {**created.stored.content, "status": "revoked"}
    with db.write() as session, pytest.raises(PreconditionFailed, match="version 1 is current"):
        store.update(session, "north", changed, if_match=3)
    with db.write() as session:
        updated = store.update(session, "north", changed, if_match=1)
    assert (updated.stored.version_id, updated.created) == (2, False)
    with db.write() as session, pytest.raises(NotFound):
        store.update(session, "north", {**changed, "id": "nope"})
    with db.write() as session:
        store.create(session, "north", request)
    with db.write() as session, pytest.raises(PreconditionFailed, match="2 resources"):
        store.create(session, "north", request, if_none_exist=condition)
    with db.write() as session:
        store.delete(session, "north", "ServiceRequest", created.stored.resource_id)
    with pytest.raises(NotFound):
        store.read("north", "ServiceRequest", created.stored.resource_id)
    assert search(store, "ServiceRequest", "status=revoked").total == 0
    with db.write() as session, pytest.raises(NotFound):
        store.delete(session, "north", "ServiceRequest", created.stored.resource_id)
