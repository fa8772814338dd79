"""``GET /metrics`` at the hub (issue 19 point 4), read with prometheus-client's own parser
after a chain run: a hand radiograph stored with STOW-RS, routed by the Task Manager, its
bone-age workitem performed by the reference product over UPS-RS; then the expected series
with the expected values, no UID or patient identifier in any label, and the route's
authorisation (``admin`` of the operator's tenant)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aifi.conformance.pilot_studies import hand_xray
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.hub.settings import Settings
from aifi.vendors.performer import Performer, part10
from aifi.vendors.products import PRODUCTS
from tests.conftest import LiveServer, running_hub
from tests.support.auth import bearer, register, secured_hub, token_for

UID_LIKE = re.compile(r"^\d+(\.\d+){3,}$")
BONE_AGE = PRODUCTS["skeletal-age"]
STOW_ROUTE = "/dicomweb/studies"


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The value of the one sample ``name`` whose labels include ``labels``."""
    matching = [s for s in found if s.name == name and labels.items() <= dict(s.labels).items()]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0].value


@pytest.fixture
def chain_hub(
    tmp_path: Path, database_url: str | None
) -> Iterator[tuple[LiveServer, list[timedelta]]]:
    """A hub whose Task Manager runs when the test ticks it; its clock runs with the wall
    clock plus an offset the test moves forward (past the quiet period)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, task_manager=False)
    with running_hub(settings) as server:
        offset = [timedelta(0)]
        server.app.state.hub.clock.set(lambda: datetime.now(UTC) + offset[0])
        yield server, offset


def test_metrics_after_a_chain_run(chain_hub: tuple[LiveServer, list[timedelta]]):
    server, offset = chain_hub
    study = hand_xray(age_years=11.5)
    boundary = new_boundary()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        stored = client.post(
            STOW_ROUTE,
            content=encode([("application/dicom", part10(ds)) for ds in study], boundary),
            headers={"Content-Type": content_type("application/dicom", boundary)},
        )
        assert stored.status_code == 200, stored.text
        offset[0] = timedelta(minutes=5)  # past the quiet period: the study is complete
        created = server.app.state.hub.task_manager.tick().created
        assert created, "the Task Manager routed nothing"
        with Performer(
            server.dicomweb, BONE_AGE.code, BONE_AGE.ae_title, BONE_AGE.factory(), timeout=30
        ) as performer:
            assert performer.run_once() == "COMPLETED"
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)

    assert value(found, "aifi_studies_received_total", tenant="default") == 1
    # the input images, and the bone-age report and its secondary capture stored into the study
    assert value(found, "aifi_instances_received_total", tenant="default") == len(study) + 2
    assert value(found, "aifi_workitems", product=BONE_AGE.code, state="COMPLETED") == 1
    assert value(found, "aifi_results_total", product=BONE_AGE.code, outcome="measured") == 1
    assert value(found, "aifi_turnaround_seconds_count", product=BONE_AGE.code) == 1
    turnaround = value(found, "aifi_turnaround_seconds_sum", product=BONE_AGE.code)
    assert 0 < turnaround < 30
    assert value(found, "aifi_turnaround_seconds_bucket", product=BONE_AGE.code, le="30.0") == 1
    assert value(found, "aifi_queue_depth", queue="delivery") == 0
    # requests by route template: the PACS's STOW-RS of the study, the performer's of its results
    stows = value(found, "aifi_http_requests_total", method="POST", route=STOW_ROUTE, code="200")
    assert stows == 2
    assert value(found, "aifi_http_request_duration_seconds_count", route=STOW_ROUTE) == 2
    assert any(s.name == "aifi_db_query_duration_seconds_count" and s.value > 0 for s in found)

    patient = {str(study[0].PatientID), str(study[0].PatientName)}
    for sample in found:
        for name, label in sample.labels.items():
            assert not UID_LIKE.match(label), (sample.name, name, label)
            assert label not in patient and str(study[0].StudyInstanceUID) not in label
            if name == "route":
                assert label == "unmatched" or label.startswith("/"), label


def test_metrics_need_an_operators_admin_token(tmp_path: Path):
    with secured_hub(tmp_path / "data") as server, httpx.Client(base_url=server.url) as client:
        operator = token_for(register(server, role="admin"), ["admin"])
        hospital = token_for(register(server, role="hospital"), ["dicomweb.read"])
        other_admin = token_for(register(server, tenant="alpha", role="admin"), ["admin"])
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(hospital)).status_code == 403
        assert client.get("/metrics", headers=bearer(other_admin)).status_code == 403
        answer = client.get("/metrics", headers=bearer(operator))
        assert answer.status_code == 200
        assert "aifi_queue_depth" in {f.name for f in text_string_to_metric_families(answer.text)}
