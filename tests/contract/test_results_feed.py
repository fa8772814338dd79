"""The released-results feed (``GET /api/v1/results?released_after=…``, issue 15: how a
hospital's gateway learns of results without the hub connecting into the hospital) and
the answer of a workitem completed without result objects (IHE AIW-I: a failure, never a
negative), against a real uvicorn hub."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from aifi.hub.api.results import decode_cursor, encode_cursor
from aifi.hub.persistence.tables import AiResult, Tenant
from tests.contract.test_results import Hub, fracture_report, results_hub

FHIR = {"Accept": "application/fhir+json"}


def feed(hub: Hub, cursor: str = "", limit: int = 100, **params: Any) -> dict[str, Any]:
    response = hub.api.get("/results", params={"released_after": cursor, "limit": limit, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def uids(page: dict[str, Any]) -> list[str]:
    return [r["workitem_uid"] for r in page["results"]]


def performed(hub: Hub, *, present: bool = True) -> str:
    """A routed fracture workitem claimed and completed with a report; its UID."""
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    txn = hub.claim(uid)
    report = fracture_report(study, present=present)
    assert hub.stow([report]).status_code == 200
    assert hub.complete(uid, txn, [report]).status_code == 200
    return uid


@pytest.fixture
def autonomous(tmp_path: Path) -> Iterator[Hub]:
    with results_hub(tmp_path, ["AIFI-FRACTURE"], supervision="autonomous") as (server, now):
        client = Hub(server, now)
        yield client
        client.close()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Hub]:
    with results_hub(tmp_path, ["AIFI-FRACTURE"], supervision="supervised") as (server, now):
        client = Hub(server, now)
        yield client
        client.close()


# -- the feed ---------------------------------------------------------------------------------


def test_released_results_come_in_release_order_page_by_page(autonomous: Hub):
    hub = autonomous
    released = [performed(hub) for _ in range(3)]
    first = feed(hub, limit=2)
    assert uids(first) == released[:2] and first["total"] == 3
    assert first["next_cursor"] == first["results"][-1]["cursor"]
    assert all(r["released_at"] and r["outcome"] == "positive" for r in first["results"])
    second = feed(hub, first["next_cursor"], limit=2)
    assert uids(second) == released[2:] and second["total"] == 1
    empty = feed(hub, second["next_cursor"])
    assert empty["results"] == [] and empty["total"] == 0
    assert empty["next_cursor"] == second["next_cursor"]  # the given one, to ask again
    later = performed(hub)
    assert uids(feed(hub, empty["next_cursor"])) == [later]
    # without released_after the list is as before: newest first, no cursors
    listed = hub.api.get("/results").json()
    assert [r["workitem_uid"] for r in listed["results"]] == [later, *reversed(released)]
    assert "next_cursor" not in listed and "cursor" not in listed["results"][0]


def test_results_released_at_the_same_moment_are_each_listed_once(
    tmp_path: Path, database_url: str | None
):
    with results_hub(
        tmp_path, ["AIFI-FRACTURE"], database_url=database_url, supervision="autonomous"
    ) as (server, now):
        hub = Hub(server, now)
        try:
            _page_through_ties(hub)
        finally:
            hub.close()


def _page_through_ties(hub: Hub) -> None:
    routed = []
    for _ in range(3):
        study, items = hub.routed_study()
        routed.append((study, items["AIFI-FRACTURE"]))
    for study, uid in routed:  # the hub's clock stands still: one released_at for all
        txn = hub.claim(uid)
        report = fracture_report(study)
        assert hub.stow([report]).status_code == 200
        assert hub.complete(uid, txn, [report]).status_code == 200
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page = feed(hub, cursor, limit=1)
        seen += uids(page)
        cursor = page["next_cursor"]
    assert seen == [uid for _, uid in routed]


def test_supervised_results_appear_once_accepted_and_rejected_ones_never(supervised: Hub):
    hub = supervised
    kept, refused = performed(hub), performed(hub)
    assert feed(hub)["results"] == []  # awaiting review: not released
    reject = hub.api.post(f"/results/{refused}/reject", json={"reviewer": "dr. B", "reason": "no"})
    assert reject.status_code == 200
    assert feed(hub)["results"] == []
    accept = hub.api.post(f"/results/{kept}/accept", json={"reviewer": "dr. A"})
    assert accept.status_code == 200
    page = feed(hub)
    assert uids(page) == [kept]
    [item] = page["results"]
    assert (
        item["review_state"] == "accepted" and item["released_at"] == accept.json()["released_at"]
    )
    detail = hub.result(kept)
    assert detail["result"]["study_instance_uid"] == item["study_instance_uid"]
    assert {"sop_instance_uid", "sop_class_uid", "series_instance_uid"} <= set(
        detail["instances"][0]
    )


def test_failed_and_cancelled_results_are_in_the_feed_with_their_reason(supervised: Hub):
    hub = supervised
    _study, items = hub.routed_study()
    empty = items["AIFI-FRACTURE"]
    assert hub.complete(empty, hub.claim(empty), []).status_code == 200
    _study, items = hub.routed_study()
    withdrawn = items["AIFI-FRACTURE"]
    body = {"00741238": {"vr": "LT", "Value": ["ordered twice"]}}
    assert hub.web.post(f"/workitems/{withdrawn}/cancelrequest", json=body).status_code == 202
    page = feed(hub)
    assert [(r["workitem_uid"], r["outcome"], r["reason"]) for r in page["results"]] == [
        (empty, "failed", "no result objects"),
        (withdrawn, "cancelled", "ordered twice"),
    ]
    assert all(r["review_state"] == "not-required" for r in page["results"])


def test_another_tenants_results_never_appear(autonomous: Hub):
    hub = autonomous
    own = performed(hub)
    db = hub.server.app.state.hub.db
    with db.write() as session:
        session.add(Tenant(id="other", name="other"))
        session.flush()
        template = session.exec(select(AiResult)).one()
        session.add(
            AiResult(
                **template.model_dump(exclude={"pk", "tenant", "workitem_uid"}),
                tenant="other",
                workitem_uid="2.25.4711",
            )
        )
    page = feed(hub)
    assert uids(page) == [own] and page["total"] == 1
    assert "2.25.4711" not in uids(feed(hub, page["next_cursor"]))


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        base64.urlsafe_b64encode(b"garbage").decode(),
        base64.urlsafe_b64encode(b"2026-12-07T10:00:00+00:00|x").decode(),
        base64.urlsafe_b64encode(b"2026-12-07T10:00:00|3").decode(),  # no time zone
        base64.urlsafe_b64encode(b"\xff\xfe|3").decode(),
    ],
)
def test_a_malformed_cursor_is_a_400_that_says_so(autonomous: Hub, cursor: str):
    response = autonomous.api.get("/results", params={"released_after": cursor})
    assert response.status_code == 400
    assert "released_after" in response.text and "cursor" in response.text


def test_the_feed_pages_by_cursor_only(autonomous: Hub):
    response = autonomous.api.get("/results", params={"released_after": "", "offset": 5})
    assert response.status_code == 400 and "offset" in response.text


def test_a_cursor_round_trips():
    from datetime import UTC, datetime

    moment = datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=UTC)
    cursor = encode_cursor(moment, 42)
    assert "|" not in cursor and "=" not in cursor
    assert decode_cursor(cursor) == (moment, 42)
    assert decode_cursor(encode_cursor(moment.replace(tzinfo=None), 7)) == (moment, 7)


# -- completed without result objects (IHE AIW-I) ----------------------------------------------


def test_a_completion_naming_no_result_object_is_a_failure_not_a_negative(supervised: Hub):
    hub = supervised
    _study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    assert hub.complete(uid, hub.claim(uid), []).status_code == 200
    detail = hub.result(uid)
    result = detail["result"]
    assert (result["outcome"], result["reason"]) == ("failed", "no result objects")
    assert result["review_state"] == "not-required" and result["released_at"]
    assert detail["instances"] == [] and detail["deliveries"] == []  # nothing to deliver
    with httpx.Client(base_url=hub.server.url + "/fhir", headers=FHIR, timeout=30) as fhir:
        task = fhir.get(f"/Task/{uid}").json()
        assert task["status"] == "failed"
        assert task["statusReason"]["text"] == "no result objects"
        assert "businessStatus" not in task
        assert not any("valueReference" in o for o in task.get("output", []))
        assert fhir.get(f"/DiagnosticReport/{uid}").status_code == 404  # no misleading report


def test_nothing_found_in_a_result_object_stays_negative(supervised: Hub):
    hub = supervised
    uid = performed(hub, present=False)
    result = hub.result(uid)["result"]
    assert result["outcome"] == "negative" and result["review_state"] == "awaiting-review"
    with httpx.Client(base_url=hub.server.url + "/fhir", headers=FHIR, timeout=30) as fhir:
        assert fhir.get(f"/Task/{uid}").json()["status"] == "completed"
        assert fhir.get(f"/DiagnosticReport/{uid}").status_code == 200
