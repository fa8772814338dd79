"""An AI product's Task Performer sees only its own products' workitems, their inputs and
its own results (issue 6, "who is who"), against a real hub under uvicorn over real HTTP.

The principal comes from a small resolver installed for the test: a request with
``X-Test-Performer: <product>`` is a performer of that one product (scopes of a performer
client), any other request the hospital (development principal, every right). Another
product's workitem answers exactly like an unknown one, its inputs and results and studies
without a workitem exactly like nothing stored, and a STOW-RS of anything but a result of
the performer's own workitem IN PROGRESS is refused with 0124 and stores nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from starlette.requests import HTTPConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.hub.settings import Settings
from aifi.principal import Principal
from aifi.vendors.performer import Performer
from aifi.vendors.reference import ReferenceAnalyzer, reference_report
from tests.conftest import LiveServer, running_hub
from tests.support.dicom import make_ct, make_study, multipart_related, to_bytes
from tests.support.ups import element, new_workitem, state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
DICOM = {"Accept": 'multipart/related; type="application/dicom"'}
HEADER = "X-Test-Performer"
A, B = "PROD-A", "PROD-B"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
STATE = "00741000"
SOP_UID = "00080018"
SERIES_UID = "0020000E"
STUDY_UID = "0020000D"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
NOT_AUTHORIZED = 0x0124
PERFORMER_SCOPES = frozenset({"dicomweb.read", "dicomweb.write", "worklist.performer"})


def install_resolver(server: LiveServer) -> None:
    hospital = Principal(tenant="default", subject="hospital", role="dev")

    def resolve(connection: HTTPConnection) -> Principal:
        product = connection.headers.get(HEADER)
        if not product:
            return hospital
        return Principal(
            tenant="default",
            subject=f"performer-{product}",
            scopes=PERFORMER_SCOPES,
            role="performer",
            products=frozenset({product}),
        )

    server.app.state.principal_resolver = resolve


@dataclass
class World:
    """Studies and workitems as a hospital set them up."""

    server: LiveServer
    hospital: httpx.Client
    study_a: list[Dataset]
    """Three instances; PROD-A's workitem lists the first two, PROD-B's the third."""
    study_b: list[Dataset]
    """PROD-B's workitem lists both."""
    study_none: list[Dataset]
    """No workitem at all."""
    wa: str
    wb: str
    wb_in_a: str

    def client(self, product: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.dicomweb, headers={**JSON, HEADER: product}, timeout=30
        )


def stow(client: httpx.Client, datasets: list[Dataset]) -> httpx.Response:
    body, ctype = multipart_related(to_bytes(ds) for ds in datasets)
    return client.post(
        "/studies", content=body, headers={"Content-Type": ctype, "Accept": JSON["Accept"]}
    )


def workitem_for(product: str, inputs: list[Dataset]) -> dict[str, Any]:
    first = inputs[0]
    ds = new_workitem(study_uid=str(first.StudyInstanceUID), product=product)
    ds["00404021"] = element(
        "SQ",
        {
            STUDY_UID: element("UI", str(first.StudyInstanceUID)),
            SERIES_UID: element("UI", str(first.SeriesInstanceUID)),
            "00081199": element(
                "SQ",
                *[
                    {
                        "00081150": element("UI", str(i.SOPClassUID)),
                        "00081155": element("UI", str(i.SOPInstanceUID)),
                    }
                    for i in inputs
                ],
            ),
            "0040E020": element("CS", "DICOM"),
        },
    )
    return ds


def create(client: httpx.Client, product: str, inputs: list[Dataset]) -> str:
    uid = str(generate_uid())
    response = client.post(f"/workitems?workitem={uid}", json=workitem_for(product, inputs))
    assert response.status_code == 201, response.headers.get("warning")
    return uid


@pytest.fixture
def world(sqlite_settings: Settings) -> Iterator[World]:
    with (
        running_hub(sqlite_settings) as server,
        httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=30) as hospital,
    ):
        install_resolver(server)
        study_a = make_study(n_series=1, per_series=3)
        study_b = make_study(n_series=1, per_series=2, patient_id="PID-B")
        study_none = make_study(n_series=1, per_series=1, patient_id="PID-N")
        for study in (study_a, study_b, study_none):
            assert stow(hospital, study).status_code == 200
        yield World(
            server,
            hospital,
            study_a,
            study_b,
            study_none,
            wa=create(hospital, A, study_a[:2]),
            wb=create(hospital, B, study_b),
            wb_in_a=create(hospital, B, study_a[2:]),
        )


def uids(response: httpx.Response, tag: str = SOP_UID) -> set[str]:
    if response.status_code == 204 or not response.content:
        return set()
    assert response.status_code == 200, response.text
    return {ds[tag]["Value"][0] for ds in response.json()}


def instances(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    boundary = parse_media_type(response.headers["content-type"]).params["boundary"]
    return {
        str(dcmread(io.BytesIO(body)).SOPInstanceUID)
        for _h, body in read_parts(response.content, boundary)
    }


def sop(ds: Dataset) -> str:
    return str(ds.SOPInstanceUID)


def study_of(datasets: list[Dataset]) -> str:
    return str(datasets[0].StudyInstanceUID)


def path_of(ds: Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop(ds)}"


# -- UPS-RS -----------------------------------------------------------------------------


def test_another_products_workitem_is_as_unknown_as_a_missing_one(world: World):
    unknown = str(generate_uid())
    with world.client(A) as perf:
        found = perf.get("/workitems")
        assert uids(found) == {world.wa}
        assert uids(perf.get("/workitems", params={STATE: "SCHEDULED"})) == {world.wa}
        assert (
            uids(perf.get("/workitems", params={"StudyInstanceUID": study_of(world.study_b)}))
            == set()
        )

        def same_as_unknown(send: Any) -> None:
            theirs, missing = send(world.wb), send(unknown)
            assert theirs.status_code == missing.status_code == 404
            assert theirs.headers.get("warning", "").replace(world.wb, "?") == missing.headers.get(
                "warning", ""
            ).replace(unknown, "?")

        txn = str(generate_uid())
        same_as_unknown(lambda uid: perf.get(f"/workitems/{uid}"))
        same_as_unknown(
            lambda uid: perf.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn))
        )
        same_as_unknown(
            lambda uid: perf.post(
                f"/workitems/{uid}?transaction={txn}",
                json={"00741002": element("SQ", {"00741004": element("DS", "10")})},
            )
        )
        same_as_unknown(lambda uid: perf.post(f"/workitems/{uid}/cancelrequest"))
        same_as_unknown(lambda uid: perf.post(f"/workitems/{uid}/subscribers/PERFA"))
        same_as_unknown(lambda uid: perf.delete(f"/workitems/{uid}/subscribers/PERFA"))
    # The hospital still sees B's workitem untouched.
    [ds] = world.hospital.get(f"/workitems/{world.wb}").json()
    assert ds[STATE]["Value"] == ["SCHEDULED"]
    assert uids(world.hospital.get("/workitems")) == {world.wa, world.wb, world.wb_in_a}


def _events(ws: ClientConnection, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every event report that arrives until the channel is quiet for ``quiet`` s."""
    out = []
    while True:
        try:
            out.append(json.loads(ws.recv(timeout=quiet)))
        except (TimeoutError, ConnectionClosed):
            return out


def test_a_global_subscription_brings_only_own_products_events(world: World):
    ws_url = world.server.dicomweb.replace("http", "ws", 1) + "/subscribers/PERFA"
    with world.client(A) as perf:
        assert perf.post(f"/workitems/{GLOBAL}/subscribers/PERFA").status_code == 201
        later_a = create(world.hospital, A, world.study_a[:1])
        later_b = create(world.hospital, B, world.study_b[:1])
        # B's workitems change too: nothing of it may reach PERFA.
        txn = str(generate_uid())
        claimed = world.hospital.put(
            f"/workitems/{world.wb}/state", json=state_change("IN PROGRESS", txn)
        )
        assert claimed.status_code == 200
        with connect(ws_url, additional_headers={HEADER: A}) as ws:
            seen = {e["00001000"]["Value"][0] for e in _events(ws)}
    assert seen == {world.wa, later_a}
    # Nothing of B was even queued for PERFA: an unrestricted reader of the channel finds
    # no event left over.
    with connect(ws_url) as ws:
        assert _events(ws, quiet=0.6) == []
    assert later_b


# -- QIDO-RS / WADO-RS ------------------------------------------------------------------


def test_only_own_inputs_are_searchable_and_retrievable(world: World):
    a_inputs = {sop(ds) for ds in world.study_a[:2]}
    with world.client(A) as perf:
        # WADO-RS: own inputs yes, the rest of the study and other studies as if absent
        assert instances(perf.get(f"/studies/{study_of(world.study_a)}", headers=DICOM)) == a_inputs
        for gone in (world.study_b[0], world.study_none[0], world.study_a[2]):
            assert perf.get(path_of(gone), headers=DICOM).status_code == 404
            assert perf.get(path_of(gone) + "/metadata").status_code == 404
        for study in (world.study_b, world.study_none):
            for suffix in ("", "/metadata", "/series/" + str(study[0].SeriesInstanceUID)):
                accept = {} if suffix == "/metadata" else DICOM
                response = perf.get(f"/studies/{study_of(study)}{suffix}", headers=accept)
                assert response.status_code == 404, suffix
        metadata = perf.get(f"/studies/{study_of(world.study_a)}/metadata")
        assert uids(metadata) == a_inputs
        # QIDO-RS: the same picture
        assert uids(perf.get("/studies"), STUDY_UID) == {study_of(world.study_a)}
        assert uids(perf.get("/instances")) == a_inputs
        assert uids(perf.get(f"/studies/{study_of(world.study_a)}/instances")) == a_inputs
        for study in (world.study_b, world.study_none):
            assert uids(perf.get(f"/studies/{study_of(study)}/instances")) == set()
            assert uids(perf.get(f"/studies/{study_of(study)}/series")) == set()
            assert uids(perf.get("/studies", params={"StudyInstanceUID": study_of(study)})) == set()
        assert (
            uids(perf.get("/instances", params={"SOPInstanceUID": sop(world.study_a[2])})) == set()
        )
    # The hospital sees everything.
    assert len(uids(world.hospital.get("/instances"))) == 6


# -- the whole job, and STOW-RS ---------------------------------------------------------


def test_a_performer_does_its_whole_job_and_sees_its_own_results_only(world: World):
    with world.client(A) as perf_a, world.client(B) as perf_b:
        performer = Performer(
            world.server.dicomweb,
            A,
            "PERFA",
            ReferenceAnalyzer(),
            client=perf_a,
            timeout=30,
            backoff=0.05,
            watch_cancel=False,
        )
        assert performer.run_once() == "COMPLETED"
        assert performer.run_once() is None  # B's workitems are not A's to claim
        [done] = perf_a.get(f"/workitems/{world.wa}").json()
        assert done[STATE]["Value"] == ["COMPLETED"]
        output = done["00741216"]["Value"][0]["00404033"]["Value"][0]
        result = output["00081199"]["Value"][0]["00081155"]["Value"][0]
        study = study_of(world.study_a)
        # A finds and retrieves its result ...
        assert result in uids(perf_a.get(f"/studies/{study}/instances"))
        assert result in instances(perf_a.get(f"/studies/{study}", headers=DICOM))
        # ... B, with a workitem in the same study, sees only its own input there
        assert uids(perf_b.get(f"/studies/{study}/instances")) == {sop(world.study_a[2])}
        assert instances(perf_b.get(f"/studies/{study}", headers=DICOM)) == {sop(world.study_a[2])}
        series = output[SERIES_UID]["Value"][0]
        url = f"/studies/{study}/series/{series}/instances/{result}"
        assert perf_b.get(url, headers=DICOM).status_code == 404
        assert perf_b.get(url + "/metadata").status_code == 404
    [ds] = world.hospital.get(f"/workitems/{world.wb_in_a}").json()
    assert ds[STATE]["Value"] == ["SCHEDULED"]


def failure_reasons(response: httpx.Response) -> list[int]:
    body = response.json()
    return [
        item[FAILURE_REASON]["Value"][0]
        for item in body.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    ]


def test_stow_of_anything_but_an_own_result_is_refused_not_authorized(world: World):
    txn = str(generate_uid())
    with world.client(A) as perf_a, world.client(B) as perf_b:
        assert (
            perf_a.put(
                f"/workitems/{world.wa}/state", json=state_change("IN PROGRESS", txn)
            ).status_code
            == 200
        )
        assert (
            perf_b.put(
                f"/workitems/{world.wb}/state", json=state_change("IN PROGRESS", txn)
            ).status_code
            == 200
        )
        image = make_ct(study_uid=study_of(world.study_a), sop_uid=str(generate_uid()))
        for_b = reference_report(world.study_b, "B's finding", manufacturer="A")
        no_workitem = reference_report(world.study_none, "nobody asked", manufacturer="A")
        unknown_study = reference_report(
            make_study(n_series=1, per_series=1), "x", manufacturer="A"
        )
        refused = [image, for_b, no_workitem, unknown_study]
        answers = [stow(perf_a, [ds]) for ds in refused]
        for response in answers:
            assert response.status_code == 409, response.text
            assert failure_reasons(response) == [NOT_AUTHORIZED]
        # One reason for all: nothing tells which study exists or has B's workitem
        assert (
            len(
                {
                    r.headers.get("warning", "").replace(sop(ds), "?")
                    for r, ds in zip(answers, refused, strict=True)
                }
            )
            == 1
        )
        # ... and nothing was stored
        for ds in refused:
            assert (
                uids(world.hospital.get("/instances", params={"SOPInstanceUID": sop(ds)})) == set()
            )
        # The same result for its own workitem is accepted
        own = reference_report(world.study_a[:2], "A's finding", manufacturer="A")
        accepted = stow(perf_a, [own])
        assert accepted.status_code == 200, accepted.headers.get("warning")
        assert uids(world.hospital.get("/instances", params={"SOPInstanceUID": sop(own)})) == {
            sop(own)
        }
        # A mixed batch: the result stored, the image refused
        image2 = make_ct(study_uid=study_of(world.study_a), sop_uid=str(generate_uid()))
        own2 = reference_report(world.study_a[:2], "again", manufacturer="A")
        mixed = stow(perf_a, [own2, image2])
        assert mixed.status_code == 202, mixed.text
        assert failure_reasons(mixed) == [NOT_AUTHORIZED]
