"""UPS-RS (PS3.18 ch. 11) against a real uvicorn server, driven with httpx and a real
WebSocket client: every transaction, its statuses and Warning texts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from websockets.sync.client import ClientConnection, connect

from tests.conftest import LiveServer, hub_for_backend
from tests.support.ups import completion, element, new_workitem, state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"
STATE = "00741000"
TRANSACTION = "00081195"


@pytest.fixture
def hub(sqlite_live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_live_server.dicomweb, headers=JSON, timeout=30) as client:
        yield client


def create(client: httpx.Client, uid: str | None = None, **kwargs: object) -> str:
    uid = uid or str(generate_uid())
    response = client.post(f"/workitems?workitem={uid}", json=new_workitem(**kwargs))  # type: ignore[arg-type]
    assert response.status_code == 201, response.headers.get("warning")
    return uid


def retrieve(client: httpx.Client, uid: str) -> dict[str, Any]:
    response = client.get(f"/workitems/{uid}")
    assert response.status_code == 200
    [ds] = response.json()
    assert isinstance(ds, dict)
    return ds


def claim(client: httpx.Client, uid: str, txn: str | None = None) -> str:
    txn = txn or str(generate_uid())
    response = client.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn))
    assert response.status_code == 200, response.headers.get("warning")
    return txn


def warning(response: httpx.Response) -> str:
    return str(response.headers.get("warning", ""))


# -- create / retrieve --------------------------------------------------------------------


def test_create_answers_201_with_the_location_and_retrieve_returns_the_workitem(hub):
    uid = str(generate_uid())
    response = hub.post(f"/workitems?workitem={uid}", json=[new_workitem(patient_id="P-42")])
    assert response.status_code == 201
    assert response.headers["content-location"].endswith(f"/dicomweb/workitems/{uid}")
    ds = retrieve(hub, uid)
    assert ds[STATE]["Value"] == ["SCHEDULED"]
    assert ds["00080016"]["Value"] == ["1.2.840.10008.5.1.4.34.6.1"]  # UPS Push SOP Class
    assert ds["00080018"]["Value"] == [uid]
    assert ds["00100020"]["Value"] == ["P-42"]
    assert "00404010" in ds  # Scheduled Procedure Step Modification DateTime, set by the SCP


def test_create_without_a_uid_gets_one_and_older_query_forms_work(hub):
    response = hub.post("/workitems", json=new_workitem())
    assert response.status_code == 201
    generated = response.headers["content-location"].rsplit("/", 1)[1]
    assert retrieve(hub, generated)["00080018"]["Value"] == [generated]
    bare = str(generate_uid())
    assert hub.post(f"/workitems?{bare}", json=new_workitem()).status_code == 201
    retrieve(hub, bare)
    named = str(generate_uid())
    response = hub.post(f"/workitems?AffectedSOPInstanceUID={named}", json=new_workitem())
    assert response.status_code == 201
    retrieve(hub, named)


def test_a_second_create_with_the_same_uid_is_409_and_keeps_the_first(hub):
    uid = create(hub, patient_id="FIRST")
    response = hub.post(f"/workitems?workitem={uid}", json=new_workitem(patient_id="SECOND"))
    assert response.status_code == 409
    assert "already exists" in warning(response)
    assert retrieve(hub, uid)["00100020"]["Value"] == ["FIRST"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda ds: ds.pop("00741200"), "Scheduled Procedure Step Priority"),
        (lambda ds: ds.update({STATE: element("CS", "IN PROGRESS")}), "SCHEDULED"),
        (lambda ds: ds.update({TRANSACTION: element("UI", "1.2.3")}), "Transaction UID"),
        (lambda ds: ds.update({"00741200": element("CS", "URGENT")}), "URGENT"),
    ],
)
def test_invalid_workitems_are_refused_with_a_reason(hub, mutate, reason):
    ds = new_workitem()
    mutate(ds)
    uid = str(generate_uid())
    response = hub.post(f"/workitems?workitem={uid}", json=ds)
    assert response.status_code == 400
    assert reason in warning(response)
    assert hub.get(f"/workitems/{uid}").status_code == 404


def test_bad_payloads_and_media_types(hub):
    uid = str(generate_uid())
    assert hub.post(f"/workitems?workitem={uid}", content=b"{nope").status_code == 400
    assert hub.post(f"/workitems?workitem={uid}", json=[{}, {}]).status_code == 400
    assert hub.post(f"/workitems?workitem={uid}", json={"PatientID": "x"}).status_code == 400
    response = hub.post(
        f"/workitems?workitem={uid}",
        content=b"<xml/>",
        headers={"Content-Type": "application/xml"},
    )
    assert response.status_code == 415
    assert hub.post("/workitems?workitem=not-a-uid", json=new_workitem()).status_code == 400


def test_retrieve_unknown_and_malformed(hub):
    response = hub.get(f"/workitems/{generate_uid()}")
    assert response.status_code == 404
    assert hub.get("/workitems/1..2").status_code == 400
    uid = create(hub)
    assert hub.get(f"/workitems/{uid}", headers={"Accept": "application/xml"}).status_code == 406


# -- the state machine over HTTP ------------------------------------------------------------


def test_claim_hides_the_transaction_uid_and_a_second_claimer_is_refused(hub):
    uid = create(hub)
    txn = claim(hub, uid)
    ds = retrieve(hub, uid)
    assert ds[STATE]["Value"] == ["IN PROGRESS"]
    assert TRANSACTION not in ds
    assert txn not in json.dumps(ds)
    # Another performer: its Transaction UID is not the one held (PS3.4 CC.2.1.2 Note).
    other = hub.put(
        f"/workitems/{uid}/state", json=state_change("IN PROGRESS", str(generate_uid()))
    )
    assert other.status_code == 400
    assert "Transaction UID is incorrect" in warning(other)
    # The holder claiming again: already IN PROGRESS.
    again = hub.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn))
    assert again.status_code == 409
    assert "already IN PROGRESS" in warning(again)


def test_state_change_errors(hub):
    uid = create(hub)
    missing = hub.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", None))
    assert missing.status_code == 400
    assert "Transaction UID is missing" in warning(missing)
    early = hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", "1.2.3"))
    assert early.status_code == 409
    assert "claimed" in warning(early)
    back = hub.put(f"/workitems/{uid}/state", json=state_change("SCHEDULED", "1.2.3"))
    assert back.status_code == 400
    assert "SCHEDULED" in warning(back)
    assert hub.put(f"/workitems/{uid}/state", json={}).status_code == 400
    assert (
        hub.put(
            f"/workitems/{generate_uid()}/state", json=state_change("IN PROGRESS", "1.2")
        ).status_code
        == 404
    )
    claim(hub, uid)
    wrong = hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", "9.9.9"))
    assert wrong.status_code == 400
    assert "incorrect" in warning(wrong)
    assert retrieve(hub, uid)[STATE]["Value"] == ["IN PROGRESS"]


def test_update_needs_the_transaction_uid_once_claimed(hub):
    uid = create(hub)
    label = {"00741204": element("LO", "Bone age, left hand")}
    assert hub.post(f"/workitems/{uid}", json=label).status_code == 200
    assert retrieve(hub, uid)["00741204"]["Value"] == ["Bone age, left hand"]
    txn = claim(hub, uid)
    progress = {"00741002": element("SQ", {"00741004": element("DS", "50")})}
    assert hub.post(f"/workitems/{uid}", json=progress).status_code == 400
    assert hub.post(f"/workitems/{uid}?transaction=9.9.9", json=progress).status_code == 400
    assert hub.post(f"/workitems/{uid}?transaction={txn}", json=progress).status_code == 200
    assert retrieve(hub, uid)["00741002"]["Value"][0]["00741004"]["Value"] == [50] or retrieve(
        hub, uid
    )["00741002"]["Value"][0]["00741004"]["Value"] == ["50"]
    sneaky = {STATE: element("CS", "COMPLETED")}
    response = hub.post(f"/workitems/{uid}?transaction={txn}", json=sneaky)
    assert response.status_code == 400
    assert retrieve(hub, uid)[STATE]["Value"] == ["IN PROGRESS"]


def test_complete_requires_the_final_state_attributes(hub):
    uid = create(hub)
    txn = claim(hub, uid)
    early = hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
    assert early.status_code == 409
    assert "final state" in warning(early)
    result = ("1.2.3", "1.2.3.4", str(generate_uid()))
    assert (
        hub.post(f"/workitems/{uid}?transaction={txn}", json=completion(result)).status_code == 200
    )
    done = hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
    assert done.status_code == 200
    ds = retrieve(hub, uid)
    assert ds[STATE]["Value"] == ["COMPLETED"]
    output = ds["00741216"]["Value"][0]["00404033"]["Value"][0]
    assert output["00081199"]["Value"][0]["00081155"]["Value"] == [result[2]]
    again = hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
    assert again.status_code == 200
    assert "already in the requested state of COMPLETED" in warning(again)
    late = hub.post(f"/workitems/{uid}?transaction={txn}", json={"00741204": element("LO", "x")})
    assert late.status_code == 400  # PS3.18 §11.6.2
    assert "inconsistent with the current state" in warning(late)


def test_cancel_request_on_scheduled_cancels_at_once(hub):
    uid = create(hub)
    reason = {"00741238": element("LT", "Ordered twice")}
    response = hub.post(f"/workitems/{uid}/cancelrequest", json=reason)
    assert response.status_code == 202
    ds = retrieve(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    item = ds["00741002"]["Value"][0]
    assert item["00741238"]["Value"] == ["Ordered twice"]
    assert item["00404052"]["Value"]  # Procedure Step Cancellation DateTime
    again = hub.post(f"/workitems/{uid}/cancelrequest")
    assert again.status_code == 202
    assert "already in the requested state of CANCELED" in warning(again)
    assert hub.post(f"/workitems/{generate_uid()}/cancelrequest").status_code == 404


def test_cancel_request_on_in_progress_leaves_it_to_the_performer(hub):
    uid = create(hub)
    txn = claim(hub, uid)
    assert hub.post(f"/workitems/{uid}/cancelrequest").status_code == 202
    assert retrieve(hub, uid)[STATE]["Value"] == ["IN PROGRESS"]
    stop = hub.put(f"/workitems/{uid}/state", json=state_change("CANCELED", txn))
    assert stop.status_code == 200
    ds = retrieve(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    assert ds["00741002"]["Value"][0]["00404052"]["Value"]


def test_cancel_request_on_completed_is_409(hub):
    uid = create(hub)
    txn = claim(hub, uid)
    hub.post(f"/workitems/{uid}?transaction={txn}", json=completion())
    assert (
        hub.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn)).status_code == 200
    )
    response = hub.post(f"/workitems/{uid}/cancelrequest")
    assert response.status_code == 409
    assert "COMPLETED" in warning(response)


# -- search --------------------------------------------------------------------------------


def test_search_matches_like_qido_and_pages(hub):
    scheduled = [create(hub, patient_id="SRCH-1", priority="HIGH") for _ in range(3)]
    started = create(hub, patient_id="SRCH-2")
    claim(hub, started)
    response = hub.get(
        "/workitems", params={"ProcedureStepState": "SCHEDULED", "PatientID": "SRCH-1"}
    )
    assert response.status_code == 200
    found = {ds["00080018"]["Value"][0] for ds in response.json()}
    assert found == set(scheduled)
    response = hub.get(
        "/workitems", params={"PatientID": "SRCH-*", "ProcedureStepState": "IN PROGRESS"}
    )
    assert [ds["00080018"]["Value"][0] for ds in response.json()] == [started]
    assert all(TRANSACTION not in ds for ds in response.json())
    page = hub.get("/workitems", params={"PatientID": "SRCH-1", "limit": "2"})
    assert len(page.json()) == 2
    assert "1 additional results" in warning(page)
    rest = hub.get("/workitems", params={"PatientID": "SRCH-1", "limit": "2", "offset": "2"})
    assert len(rest.json()) == 1
    assert hub.get("/workitems", params={"PatientID": "NOBODY"}).json() == []
    assert hub.get("/workitems", params={"NoSuchKeyword": "x"}).status_code == 400
    seq = hub.get(
        "/workitems",
        params={"ScheduledWorkitemCodeSequence.CodeValue": "AIFI-BONEAGE", "PatientID": "SRCH-1"},
    )
    assert len(seq.json()) == 3


# -- subscriptions and events ----------------------------------------------------------------


def events(ws: ClientConnection, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]


def channel(server: LiveServer, ae: str) -> ClientConnection:
    return connect(server.dicomweb.replace("http", "ws", 1) + f"/subscribers/{ae}")


def test_subscription_errors(hub):
    uid = create(hub)
    assert hub.post(f"/workitems/{generate_uid()}/subscribers/AE1").status_code == 404
    assert hub.post(f"/workitems/{uid}/subscribers/WAY_TOO_LONG_AE_TITLE").status_code == 400
    assert hub.post(f"/workitems/{uid}/subscribers/AE1?deletionlock=maybe").status_code == 400
    assert hub.delete(f"/workitems/{uid}/subscribers/AE1").status_code == 404
    assert hub.post(f"/workitems/{uid}/subscribers/AE1/suspend").status_code == 400
    assert hub.post(f"/workitems/{FILTERED}/subscribers/AE1").status_code == 400
    assert hub.post(f"/workitems/{FILTERED}/subscribers/AE1?Bogus=1").status_code == 400
    response = hub.post(f"/workitems/{uid}/subscribers/AE1?deletionlock=true")
    assert response.status_code == 201
    assert response.headers["content-location"].startswith("ws://")
    assert hub.delete(f"/workitems/{uid}/subscribers/AE1").status_code == 200


def test_events_reach_a_subscriber_over_the_websocket(sqlite_live_server: LiveServer, hub):
    uid = create(hub)
    with channel(sqlite_live_server, "PERFORMER1") as ws:
        assert hub.post(f"/workitems/{uid}/subscribers/PERFORMER1").status_code == 201
        [initial] = events(ws, 1)
        assert initial["00001000"]["Value"] == [uid]
        assert initial["00001002"]["Value"] == [1]  # State Report
        assert initial[STATE]["Value"] == ["SCHEDULED"]
        txn = claim(hub, uid)
        [claimed] = events(ws, 1)
        assert claimed[STATE]["Value"] == ["IN PROGRESS"]
        progress = {"00741002": element("SQ", {"00741004": element("DS", "40")})}
        hub.post(f"/workitems/{uid}?transaction={txn}", json=progress)
        [report] = events(ws, 1)
        assert report["00001002"]["Value"] == [3]  # Progress Report
        hub.post(
            f"/workitems/{uid}/cancelrequest", json={"00741238": element("LT", "No longer needed")}
        )
        [cancel] = events(ws, 1)
        assert cancel["00001002"]["Value"] == [2]  # Cancel Requested
        assert cancel["00741238"]["Value"] == ["No longer needed"]
        assigned = {
            "00404034": element(
                "SQ", {"00404009": element("SQ", {"00080100": element("SH", "R1")})}
            )
        }
        hub.post(f"/workitems/{uid}?transaction={txn}", json=assigned)
        [assign] = events(ws, 1)
        assert assign["00001002"]["Value"] == [5]  # Assigned


def test_global_subscription_covers_new_workitems_until_suspended(
    sqlite_live_server: LiveServer, hub
):
    before = create(hub)
    assert hub.post(f"/workitems/{GLOBAL}/subscribers/WATCHER").status_code == 201
    with channel(sqlite_live_server, "WATCHER") as ws:
        [existing] = events(ws, 1)  # queued while the channel was closed
        assert existing["00001000"]["Value"] == [before]
        after = create(hub)
        [new] = events(ws, 1)
        assert new["00001000"]["Value"] == [after]
        assert hub.post(f"/workitems/{GLOBAL}/subscribers/WATCHER/suspend").status_code == 200
        unseen = create(hub)
        claim(hub, after)  # still subscribed to the existing workitem
        [claimed] = events(ws, 1)
        assert claimed["00001000"]["Value"] == [after]
        claim(hub, unseen)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
    assert hub.delete(f"/workitems/{GLOBAL}/subscribers/WATCHER").status_code == 200
    assert hub.delete(f"/workitems/{after}/subscribers/WATCHER").status_code == 404


def test_filtered_subscription_only_sees_matching_workitems(sqlite_live_server: LiveServer, hub):
    response = hub.post(
        f"/workitems/{FILTERED}/subscribers/URGENT?ScheduledProcedureStepPriority=HIGH"
    )
    assert response.status_code == 201
    with channel(sqlite_live_server, "URGENT") as ws:
        create(hub, priority="LOW")
        high = create(hub, priority="HIGH")
        [event] = events(ws, 1)
        assert event["00001000"]["Value"] == [high]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)


# -- two performers never hold the same workitem ------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_eight_concurrent_claimers_one_winner(backend: str, tmp_path: Path):
    with (
        hub_for_backend(backend, tmp_path / "data") as server,
        httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=60) as client,
    ):
        for _round in range(5):
            uid = create(client)
            barrier = threading.Barrier(8)

            def attempt(
                _: int, uid: str = uid, barrier: threading.Barrier = barrier
            ) -> tuple[int, str]:
                txn = str(generate_uid())
                with httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=60) as own:
                    barrier.wait()
                    r = own.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn))
                return r.status_code, txn

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(attempt, range(8)))
            winners = [txn for status, txn in results if status == 200]
            assert len(winners) == 1, results
            assert sorted(s for s, _ in results) == [200] + [400] * 7  # C301 for the others
            # Only the winner's Transaction UID completes it.
            client.post(f"/workitems/{uid}?transaction={winners[0]}", json=completion())
            for _status, txn in results:
                if txn != winners[0]:
                    r = client.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
                    assert r.status_code == 400
            r = client.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", winners[0]))
            assert r.status_code == 200
