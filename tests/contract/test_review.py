"""The review gate (``/api/v1/results``) against a real uvicorn hub: supervised results wait
for a person, accepting releases them (and queues their deliveries), rejecting withholds
them; the results list and its filters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aifi.hub.settings import Settings
from tests.conftest import running_hub
from tests.contract.test_results import Hub, fracture_report, results_hub, rules_file


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with results_hub(tmp_path, ["AIFI-FRACTURE"]) as (server, now):
        client = Hub(server, now)
        yield client
        client.close()


def completed(hub: Hub, *, present: bool = True) -> str:
    """A routed fracture workitem, performed and completed; its UID."""
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    txn = hub.claim(uid)
    report = fracture_report(study, present=present)
    assert hub.stow([report]).status_code == 200
    assert hub.complete(uid, txn, [report]).status_code == 200
    return uid


def test_a_supervised_result_awaits_review_and_accepting_releases_it(hub: Hub):
    uid = completed(hub)
    detail = hub.result(uid)
    assert detail["state"] == "awaiting-review"
    assert detail["result"]["released_at"] is None and detail["deliveries"] == []
    accepted = hub.api.post(
        f"/results/{uid}/accept", json={"reviewer": "dr. Jansen", "reason": "agree"}
    )
    assert accepted.status_code == 200
    body = accepted.json()
    assert body["review_state"] == "accepted" and body["reviewer"] == "dr. Jansen"
    assert body["review_reason"] == "agree" and body["released_at"] and body["reviewed_at"]
    detail = hub.result(uid)
    [delivery] = detail["deliveries"]
    assert delivery["destination"] == "hub-store" and delivery["state"] == "delivered"
    assert detail["timings"]["released"] == body["released_at"]
    again = hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. Jansen"})
    assert again.status_code == 409
    assert "not awaiting review" in again.json()["detail"]


def test_rejecting_withholds_the_result(hub: Hub):
    uid = completed(hub)
    no_reason = hub.api.post(f"/results/{uid}/reject", json={"reviewer": "dr. Jansen"})
    assert no_reason.status_code == 400
    rejected = hub.api.post(
        f"/results/{uid}/reject", json={"reviewer": "dr. Jansen", "reason": "artefact"}
    )
    assert rejected.status_code == 200
    body = rejected.json()
    assert body["review_state"] == "rejected" and body["released_at"] is None
    detail = hub.result(uid)
    assert detail["deliveries"] == [] and detail["timings"]["delivered"] is None
    assert hub.api.post(f"/results/{uid}/accept", json={"reviewer": "x"}).status_code == 409


def test_bad_review_requests(hub: Hub):
    uid = completed(hub)
    assert hub.api.post(f"/results/{uid}/accept", json={}).status_code == 400
    assert hub.api.post(f"/results/{uid}/accept", json={"reviewer": ""}).status_code == 400
    assert hub.api.post(f"/results/{uid}/accept", content=b"not json").status_code == 400
    missing = hub.api.post("/results/1.2.3.4/accept", json={"reviewer": "x"})
    assert missing.status_code == 404
    assert hub.api.get("/results/1.2.3.4").status_code == 404
    assert hub.api.get("/results", params={"limit": 0}).status_code == 400


def test_the_results_list_filters_and_pages_newest_first(hub: Hub):
    first = completed(hub, present=True)
    hub.now[0] += timedelta(seconds=1)
    second = completed(hub, present=False)
    everything = hub.api.get("/results").json()
    assert [r["workitem_uid"] for r in everything["results"]] == [second, first]
    assert everything["total"] == 2
    positive = hub.api.get("/results", params={"outcome": "positive"}).json()
    assert [r["workitem_uid"] for r in positive["results"]] == [first]
    hub.api.post(f"/results/{first}/accept", json={"reviewer": "r"})
    waiting = hub.api.get("/results", params={"review_state": "awaiting-review"}).json()
    assert [r["workitem_uid"] for r in waiting["results"]] == [second]
    study = hub.result(second)["result"]["study_instance_uid"]
    by_study = hub.api.get("/results", params={"study": study}).json()
    assert [r["workitem_uid"] for r in by_study["results"]] == [second]
    paged = hub.api.get("/results", params={"limit": 1, "offset": 1}).json()
    assert [r["workitem_uid"] for r in paged["results"]] == [first] and paged["total"] == 2
    other = hub.api.get("/results", params={"product": "AIFI-IPE"}).json()
    assert other == {"results": [], "total": 0}


def test_accepting_queues_a_delivery_per_pacs_destination(tmp_path: Path):
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "default": [
                        {"kind": "dicomweb", "name": "main-pacs", "url": "http://127.0.0.1:9/x"}
                    ]
                }
            }
        )
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path, ["AIFI-FRACTURE"]),
        destinations_file=destinations,
        task_manager=False,
    )
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        server.app.state.hub.clock.set(lambda: now[0])
        hub = Hub(server, now)
        uid = completed(hub)
        assert hub.result(uid)["deliveries"] == []  # not released yet
        assert hub.api.post(f"/results/{uid}/accept", json={"reviewer": "r"}).status_code == 200
        [delivery] = hub.result(uid)["deliveries"]
        assert delivery["destination"] == "main-pacs" and delivery["state"] == "pending"
        assert delivery["attempts"] == 0 and delivery["delivered_at"] is None
        assert hub.result(uid)["timings"]["delivered"] is None
        hub.close()
