"""The delivery outbox against a real PACS: Orthanc (Debian ``orthanc`` +
``orthanc-dicomweb``) receives released AI results from the hub over DICOMweb STOW-RS
(PS3.18 §10.5) and over DIMSE C-STORE (PS3.4 Annex B), with the real clients of
:mod:`aifi.hub.delivery.destinations`, and files them in the original study; while Orthanc is
stopped the deliveries wait with the reason, and once it is back each instance arrives
exactly once.

The original study (generated radiographs) is in Orthanc first, as in a hospital; the
results are reference Basic Text SRs of one workitem in that study, stored in the hub's
store with their ``ResultInstance`` rows (``tests/contract/test_delivery.py``).
Skipped with the reason when Orthanc or its plugin is missing, except under CI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

import aifi.conformance.orthanc as orthanc_module
from aifi.conformance.orthanc import OrthancPeer
from aifi.conformance.synthetic import Patient, radiograph_study
from aifi.hub.delivery.deliverer import Deliverer
from aifi.hub.delivery.destinations import (
    Destination,
    DestinationsConfig,
    OutgoingInstance,
    PacsClient,
    SendOutcome,
    client_for,
)
from aifi.hub.persistence.database import Database
from aifi.hub.store.repository import SqlDicomStore
from tests.contract.test_delivery import (
    TENANT,
    Released,
    confirmed,
    deliveries,
    enqueue,
    open_hub_database,
    store_result,
)
from tests.support.clock import Clock
from tests.support.dicom import to_bytes
from tests.support.orthanc import needs_orthanc

pytestmark = pytest.mark.orthanc

KINDS = ("dicomweb", "dimse")


@pytest.fixture
def hub(database_url: str | None, tmp_path: Path) -> Iterator[tuple[Database, SqlDicomStore]]:
    db, store = open_hub_database(database_url, tmp_path)
    try:
        yield db, store
    finally:
        store.close()
        db.dispose()


def destination(kind: str, peer: OrthancPeer, name: str = "orthanc") -> DestinationsConfig:
    if kind == "dicomweb":
        entry: dict[str, Any] = {"kind": "dicomweb", "name": name, "url": peer.dicomweb_url}
    else:
        entry = {
            "kind": "dimse",
            "name": name,
            "host": "127.0.0.1",
            "port": peer.dicom_port,
            "called_ae": "ORTHANC",
        }
    entry["timeout_seconds"] = 10
    return DestinationsConfig.model_validate({"tenants": {TENANT: [entry]}})


class Spy:
    """The real clients, with a record of what each PACS confirmed (per SOP Instance UID)."""

    def __init__(self) -> None:
        self.confirmed: Counter[str] = Counter()
        self.attempted: Counter[str] = Counter()

    def __call__(self, dest: Destination) -> PacsClient:
        return _SpyClient(client_for(dest), self)


class _SpyClient:
    def __init__(self, inner: PacsClient, spy: Spy) -> None:
        self.inner = inner
        self.spy = spy
        self.name = inner.name

    def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        outcomes = self.inner.send(files)
        for outcome in outcomes:
            self.spy.attempted[outcome.sop_instance_uid] += 1
            if outcome.delivered:
                self.spy.confirmed[outcome.sop_instance_uid] += 1
        return outcomes

    def close(self) -> None:
        self.inner.close()


def new_study(peer: OrthancPeer) -> Iterator[bytes]:
    """A generated study, already in the PACS (uploaded to Orthanc's REST API)."""
    data = list(
        radiograph_study(
            2,
            patient=Patient(name="Delivery^Orthanc", patient_id="AIFI-DLV-1"),
            study_uid=str(generate_uid()),
        )
    )
    for item in data:
        peer.upload(item)
    return iter(data)


def instances_in_study(peer: OrthancPeer, study_uid: str) -> list[dict[str, Any]]:
    """Orthanc's instances of the study, found with its own query (``/tools/find``)."""
    found: list[dict[str, Any]] = peer.request(
        "POST",
        "/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
    ).json()
    return found


def sop_uids(found: list[dict[str, Any]]) -> list[str]:
    return [str(i["MainDicomTags"]["SOPInstanceUID"]) for i in found]


@pytest.mark.parametrize("kind", KINDS)
def test_released_results_arrive_in_the_original_study_in_orthanc(
    orthanc: OrthancPeer, hub: tuple[Database, SqlDicomStore], kind: str
):
    db, store = hub
    spy = Spy()
    deliverer = Deliverer(db, store, destination(kind, orthanc), client_factory=spy)
    released = store_result(db, store, instances=2, study=new_study(orthanc))
    enqueue(deliverer, released)

    assert deliverer.tick() == 1
    row = deliveries(db, released)["orthanc"]
    assert (row.state, row.attempts, row.last_error) == ("delivered", 1, None), row.last_error
    assert sorted(confirmed(row)) == sorted(released.sop_uids)

    found = instances_in_study(orthanc, released.study_instance_uid)
    uids = sop_uids(found)
    assert sorted(uids) == sorted(
        [str(ds.SOPInstanceUID) for ds in released.inputs] + released.sop_uids
    )
    # one study in Orthanc: the results joined the radiographs' study, in their own series
    series_ids = {i["ParentSeries"] for i in found}
    assert len({orthanc.resource("series", s)["ParentStudy"] for s in series_ids}) == 1
    result_series = {
        i["ParentSeries"]
        for i in found
        if i["MainDicomTags"]["SOPInstanceUID"] in released.sop_uids
    }
    assert len(result_series) == 1
    series = orthanc.resource("series", result_series.pop())
    assert series["MainDicomTags"]["Modality"] == "SR"
    # Orthanc holds the hub's stored result, element for element (C-STORE sends the data
    # set without its File Meta Information, which Orthanc writes anew: PS3.10 §7.1)
    orthanc_id = orthanc.find_id("instances", released.sop_uids[0])
    assert orthanc_id is not None
    held = dcmread(BytesIO(orthanc.instance_file(orthanc_id)))
    assert held == dcmread(BytesIO(to_bytes(released.instances[0])))
    assert all(spy.confirmed[uid] == 1 for uid in released.sop_uids)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")  # pynetdicom 3.0.4
def test_while_orthanc_is_down_deliveries_wait_with_the_reason_then_arrive_once(
    hub: tuple[Database, SqlDicomStore],
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    needs_orthanc()
    db, store = hub
    workdir = tmp_path / "orthanc"
    peer = OrthancPeer(workdir=workdir).start()
    try:
        ports = (peer.http_port, peer.dicom_port)
        clock = Clock()
        spy = Spy()
        deliverer = Deliverer(db, store, destination(kind, peer), clock=clock, client_factory=spy)
        before = store_result(db, store, instances=1, study=new_study(peer))
        enqueue(deliverer, before)
        assert deliverer.tick() == 1
        assert deliveries(db, before)["orthanc"].state == "delivered"
        study = new_study(peer)
        peer.stop()  # the PACS goes down (its storage folder is kept)

        released: Released = store_result(db, store, instances=2, study=study)
        enqueue(deliverer, released)
        for attempt in (1, 2):
            assert deliverer.tick() == 1
            row = deliveries(db, released)["orthanc"]
            assert (row.state, row.attempts) == ("pending", attempt)
            assert row.last_error is not None
            assert "'orthanc'" in row.last_error
            assert all(uid in row.last_error for uid in released.sop_uids)
            assert "cannot reach" in row.last_error or "cannot connect" in row.last_error, (
                row.last_error
            )
            clock.advance(3600)

        # the PACS comes back, same address, same archive
        reuse = iter(ports)
        monkeypatch.setattr(orthanc_module, "_free_port", lambda: next(reuse))
        peer.start()
        assert (peer.http_port, peer.dicom_port) == ports
        assert deliverer.tick() == 1
        row = deliveries(db, released)["orthanc"]
        assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
        assert deliverer.tick() == 0

        found = sop_uids(instances_in_study(peer, released.study_instance_uid))
        assert sorted(found) == sorted(
            [str(ds.SOPInstanceUID) for ds in released.inputs] + released.sop_uids
        )
        # exactly once: the PACS confirmed each result instance once, and holds it once
        for uid in [*before.sop_uids, *released.sop_uids]:
            assert spy.confirmed[uid] == 1
            assert len([i for i in peer.lookup(uid) if i.get("Type") == "Instance"]) == 1
        assert len(peer.ids("instances")) == 2 + 1 + 2 + 2
    finally:
        peer.stop()
