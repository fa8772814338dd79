"""Prior studies at the hub (issue 17, the "Contract C → D"): a comparison product's workitem
waits INCOMPLETE for the patient's earlier studies, which a hospital's gateway finds and
sends through ``/api/v1/prior-requests``; the reference follow-up product reports the change
since the prior, or says that none was available (PS3.4 CC.2.5.1.3; IHE RAD TF AIW-I).

The hub runs in-process under uvicorn with its Task Manager driven by the test
(``tick()``) and a clock of the test's own; the follow-up product is the real reference
performer (UPS-RS claim, WADO-RS of its inputs and priors, STOW-RS of its results, through
the hub's IHE AIR result gate).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom import Dataset
from pydicom.uid import generate_uid

from aifi.conformance.pilot_studies import study_json
from aifi.conformance.prior_studies import hand_follow_up
from aifi.hub.settings import Settings
from aifi.ihe_profiles.aiw import prior_inputs, priors_unavailable_reason
from aifi.ihe_profiles.rules import StudyFacts, evaluate, explain, load_rules
from aifi.vendors.performer import Performer
from aifi.vendors.products import reference_product
from tests.conftest import LiveServer, running_hub
from tests.support.auth import auth_settings, bearer, register, token_for
from tests.support.dicom import multipart_related
from tests.support.ups import state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
FU = "AIFI-BONEAGE-FU"
QUIET = 0.4
WAIT = 120


def rules_file(tmp_path: Path, tenants: tuple[str, ...] = ("default",)) -> Path:
    """The shipped rules, short quiet periods, plus the follow-up product with ``priors``
    (its commented example in default_rules.yaml) for ``tenants``."""
    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = dict.fromkeys(("DX", "CR", "CT", "MR", "default"), QUIET)
    config["products"].append(
        {
            "code": FU,
            "name": "Bone age follow-up",
            "vendor": "reference",
            "version": "1.0",
            "model_name": "bone-age-follow-up",
            "mode": "pull",
            "supervision": "autonomous",
            "norm_turnaround_minutes": 30,
            "priority": "LOW",
            "claim_timeout_minutes": 10,
            "run_timeout_minutes": 15,
            "max_attempts": 3,
            "when": [
                {"kind": "modality", "values": ["DX", "CR"]},
                {"kind": "body_part", "values": ["HAND"]},
                {"kind": "age", "max_years": 19},
            ],
            "priors": {
                "count": 1,
                "same_modality": True,
                "same_body_part": True,
                "within_days": 1825,
                "wait_seconds": WAIT,
            },
        }
    )
    for tenant in tenants:
        config["tenants"][tenant] = [*config["tenants"]["default"], FU]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def clocked(settings: Settings) -> Iterator[tuple[LiveServer, list[datetime]]]:
    """A hub whose Task Manager rounds the test runs, on a clock the test sets."""
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        server.app.state.hub.clock.set(lambda: now[0])
        yield server, now


def route(server: LiveServer, now: list[datetime], seconds: float = QUIET + 1) -> Any:
    now[0] += timedelta(seconds=seconds)
    return server.app.state.hub.task_manager.tick()


def stow(server: LiveServer, instances: list[Dataset], headers: dict[str, str] | None = None):
    body, content_type = multipart_related([_part10(ds) for ds in instances])
    response = httpx.post(
        server.dicomweb + "/studies",
        content=body,
        headers={**(headers or {}), "Content-Type": content_type, "Accept": JSON["Accept"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def value(ds: dict[str, Any], tag: str) -> Any:
    return (ds.get(tag, {}).get("Value") or [None])[0]


def workitems(server: LiveServer, study_uid: str, code: str | None = None) -> list[dict[str, Any]]:
    query = {"StudyInstanceUID": study_uid}
    if code:
        query["ScheduledWorkitemCodeSequence.CodeValue"] = code
    response = httpx.get(server.dicomweb + "/workitems", params=query, headers=JSON, timeout=30)
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json() if response.content else []
    return found


def api(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", timeout=30)


def perform(server: LiveServer) -> str | None:
    product = reference_product("bone-age-follow-up")
    with Performer(
        server.dicomweb, product.code, product.ae_title, product.factory(), timeout=30
    ) as performer:
        return performer.run_once()


def result_instances(server: LiveServer, study_uid: str) -> list[Dataset]:
    """The follow-up product's result instances in the study (WADO-RS metadata)."""
    response = httpx.get(
        f"{server.dicomweb}/studies/{study_uid}/metadata", headers={"Accept": JSON["Accept"]}
    )
    assert response.status_code == 200
    found = [
        Dataset.from_json({k: v for k, v in m.items() if "BulkDataURI" not in v})
        for m in response.json()
    ]
    return [ds for ds in found if "follow-up" in str(ds.get("SeriesDescription", ""))]


def measurements(sr: Dataset) -> dict[str, float]:
    """Code Meaning → value of every NUM item of a TID 1500 report."""
    out: dict[str, float] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.get("ValueType") == "NUM":
                name = item.ConceptNameCodeSequence[0].CodeMeaning
                out[str(name)] = float(item.MeasuredValueSequence[0].NumericValue)
            walk(item.get("ContentSequence", []))

    walk(sr.get("ContentSequence", []))
    return out


def test_a_comparison_workitem_waits_for_its_prior_and_reports_the_change(
    tmp_path: Path, database_url: str | None
):
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rules_file=rules_file(tmp_path),
        task_manager=False,
    )
    with clocked(settings) as (server, now), api(server) as hub:
        follow = hand_follow_up(age_years=10.0, interval_days=365)
        current_uid = str(follow.current[0].StudyInstanceUID)
        prior_uid = str(follow.prior[0].StudyInstanceUID)
        stow(server, follow.current)
        route(server, now)

        # Created at once, INCOMPLETE; the other products of the study are READY as before.
        [item] = workitems(server, current_uid, FU)
        uid = value(item, "00080018")
        assert value(item, "00404041") == "INCOMPLETE"
        assert value(workitems(server, current_uid, "AIFI-BONEAGE")[0], "00404041") == "READY"

        # A performer cannot claim it yet (PS3.4 CC.2.5.1.3): 409 with the reason.
        claim = httpx.put(
            f"{server.dicomweb}/workitems/{uid}/state",
            json=state_change("IN PROGRESS", str(generate_uid())),
            headers=JSON,
        )
        assert claim.status_code == 409
        assert "not ready" in claim.headers["warning"] and "INCOMPLETE" in claim.headers["warning"]

        # The gateway's view: one open request with what it needs to search its PACS.
        [request] = hub.get("/prior-requests").json()["items"]
        assert request["study_instance_uid"] == current_uid
        assert request["patient_id"] == "AIFI-PILOT-FU"
        assert request["product"] == FU
        assert (request["count"], request["same_modality"], request["same_body_part"]) == (
            1,
            True,
            True,
        )
        assert request["within_days"] == 1825
        assert request["modalities"] == ["DX"] and request["body_parts"] == ["HAND"]
        deadline = datetime.fromisoformat(request["deadline"].replace("Z", "+00:00"))
        assert timedelta(seconds=WAIT - 5) < deadline - now[0] <= timedelta(seconds=WAIT)

        # Registered, then sent: the prior is never routed itself.
        registered = hub.post(
            f"/prior-requests/{request['id']}/studies", json={"study_instance_uids": [prior_uid]}
        )
        assert registered.status_code == 204, registered.text
        stow(server, follow.prior)
        assert route(server, now).created == []
        assert workitems(server, prior_uid) == []

        answered = hub.post(
            f"/prior-requests/{request['id']}/answer",
            json={"outcome": "found", "study_instance_uids": [prior_uid]},
        )
        assert answered.status_code == 204, answered.text
        [item] = workitems(server, current_uid, FU)
        assert value(item, "00404041") == "READY"
        [prior] = prior_inputs(item)
        assert prior.study_instance_uid == prior_uid
        assert prior.sop_instance_uids == (str(follow.prior[0].SOPInstanceUID),)
        marked = [i for i in item["00404021"]["Value"] if "0040A170" in i]
        assert value(value(marked[0], "0040A170"), "00080100") == "121079"  # DCM Baseline
        assert priors_unavailable_reason(item) is None
        assert hub.get("/prior-requests").json()["items"] == []
        again = hub.post(f"/prior-requests/{request['id']}/answer", json={"outcome": "none"})
        assert again.status_code == 409

        # The reference product fetches the prior like any input and reports the change.
        assert perform(server) == "COMPLETED"
        [sr] = [ds for ds in result_instances(server, current_uid) if ds.Modality == "SR"]
        found = measurements(sr)
        assert found["Bone age"] == pytest.approx(10.0, abs=0.11)
        assert found["Bone age at prior study"] == pytest.approx(9.0, abs=0.11)
        assert found["Bone age change since prior study"] == pytest.approx(1.0, abs=0.21)
        assert found["Interval since prior study"] == pytest.approx(12.0, abs=0.1)
        result = hub.get(f"/results/{uid}").json()
        assert result["state"] != "scheduled" and result["result"] is not None
        assert not result["problems"], result["problems"]


def test_none_found_and_the_deadline_run_without_priors(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path / "data", rules_file=rules_file(tmp_path), task_manager=False
    )
    with clocked(settings) as (server, now), api(server) as hub:
        first = hand_follow_up(patient_id="AIFI-FU-NONE")
        second = hand_follow_up(patient_id="AIFI-FU-LATE")
        stow(server, first.current)
        stow(server, second.current)
        route(server, now)
        by_study = {r["study_instance_uid"]: r for r in hub.get("/prior-requests").json()["items"]}
        first_uid = str(first.current[0].StudyInstanceUID)
        second_uid = str(second.current[0].StudyInstanceUID)
        assert set(by_study) == {first_uid, second_uid}

        # none: READY at once, saying why; the product says there was nothing to compare.
        reason = "no earlier hand radiograph in the PACS"
        answered = hub.post(
            f"/prior-requests/{by_study[first_uid]['id']}/answer",
            json={"outcome": "none", "reason": reason},
        )
        assert answered.status_code == 204
        [item] = workitems(server, first_uid, FU)
        assert value(item, "00404041") == "READY"
        assert prior_inputs(item) == []
        assert priors_unavailable_reason(item) == reason
        assert perform(server) == "COMPLETED"
        [page] = [ds for ds in result_instances(server, first_uid) if ds.Modality != "SR"]
        assert "no prior study available for comparison" in str(page.ImageComments)
        assert reason in str(page.ImageComments)

        # The deadline: the round makes it READY without; a late answer is refused.
        late = by_study[second_uid]["id"]
        assert route(server, now, WAIT - 5).priors_expired == []
        assert hub.get("/prior-requests").json()["items"][0]["id"] == late
        report = route(server, now, 10)
        assert report.priors_expired == [late]
        [item] = workitems(server, second_uid, FU)
        assert value(item, "00404041") == "READY"
        assert f"within {WAIT} seconds" in (priors_unavailable_reason(item) or "")
        assert hub.get("/prior-requests").json()["items"] == []
        refused = hub.post(
            f"/prior-requests/{late}/answer",
            json={"outcome": "found", "study_instance_uids": [second_uid]},
        )
        assert refused.status_code == 409
        assert "expired" in refused.json()["detail"]
        too_late = hub.post(
            f"/prior-requests/{late}/studies", json={"study_instance_uids": ["1.2.3"]}
        )
        assert too_late.status_code == 409
        assert perform(server) == "COMPLETED"
        [page] = [ds for ds in result_instances(server, second_uid) if ds.Modality != "SR"]
        assert "no prior study available for comparison" in str(page.ImageComments)


def test_bad_requests(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path / "data", rules_file=rules_file(tmp_path), task_manager=False
    )
    with clocked(settings) as (server, now), api(server) as hub:
        follow = hand_follow_up()
        stow(server, follow.current)
        route(server, now)
        [request] = hub.get("/prior-requests").json()["items"]
        rid = request["id"]
        unknown = "0" * 32
        body = {"study_instance_uids": ["1.2.3"]}
        assert hub.post(f"/prior-requests/{unknown}/studies", json=body).status_code == 404
        for payload in ({"outcome": "none"}, {"outcome": "found", "study_instance_uids": ["1.2"]}):
            assert hub.post(f"/prior-requests/{unknown}/answer", json=payload).status_code == 404
        # a study the hub has no instance of, or "found" naming none: 422
        missing = hub.post(
            f"/prior-requests/{rid}/answer",
            json={"outcome": "found", "study_instance_uids": [str(generate_uid())]},
        )
        assert missing.status_code == 422 and "No instance" in missing.json()["detail"]
        empty = hub.post(f"/prior-requests/{rid}/answer", json={"outcome": "found"})
        assert empty.status_code == 422
        itself = {"study_instance_uids": [request["study_instance_uid"]]}
        assert hub.post(f"/prior-requests/{rid}/studies", json=itself).status_code == 422
        itself["outcome"] = "found"  # type: ignore[assignment]
        assert hub.post(f"/prior-requests/{rid}/answer", json=itself).status_code == 422
        # malformed bodies
        malformed: list[tuple[str, dict[str, Any]]] = [
            ("answer", {"outcome": "maybe"}),
            ("studies", {"study_instance_uids": ["not a uid"]}),
            ("studies", {"study_instance_uids": []}),
        ]
        for path, payload in malformed:
            assert hub.post(f"/prior-requests/{rid}/{path}", json=payload).status_code == 400
        assert hub.get("/prior-requests", params={"limit": 0}).status_code == 400
        # still open after all that
        assert [r["id"] for r in hub.get("/prior-requests").json()["items"]] == [rid]
        [item] = workitems(server, str(follow.current[0].StudyInstanceUID), FU)
        assert value(item, "00404041") == "INCOMPLETE"


def test_another_hospital_sees_nothing(tmp_path: Path):
    settings = auth_settings(
        tmp_path / "data",
        rules_file=rules_file(tmp_path),
        task_manager=False,
    )
    with clocked(settings) as (server, now):
        own = register(server, tenant="default", role="hospital")
        other = register(server, tenant="alpha", role="hospital")
        own_token = token_for(own, ["dicomweb.write", "worklist.requester"])
        other_token = token_for(other, ["dicomweb.write", "worklist.requester"])
        follow = hand_follow_up()
        stow(server, follow.current, bearer(own_token))
        route(server, now)
        base = server.url + "/api/v1/prior-requests"
        [request] = httpx.get(base, headers=bearer(own_token)).json()["items"]
        assert httpx.get(base, headers=bearer(other_token)).json() == {"items": []}
        for path, payload in (
            ("studies", {"study_instance_uids": ["1.2.3"]}),
            ("answer", {"outcome": "none", "reason": "alpha says so"}),
        ):
            response = httpx.post(
                f"{base}/{request['id']}/{path}", json=payload, headers=bearer(other_token)
            )
            assert response.status_code == 404
        # without the scope: refused
        reader = token_for(register(server, tenant="default", role="hospital"), ["dicomweb.read"])
        assert httpx.get(base, headers=bearer(reader)).status_code == 403
        [again] = httpx.get(base, headers=bearer(own_token)).json()["items"]
        assert again["id"] == request["id"]


def test_rules_declare_priors_and_explain_them(tmp_path: Path):
    rules = load_rules(rules_file(tmp_path))
    priors = rules.product(FU).priors
    assert priors is not None and (priors.count, priors.wait_seconds) == (1, WAIT)
    assert rules.product("AIFI-BONEAGE").priors is None
    facts = StudyFacts.from_metadata(study_json(hand_follow_up().current))
    text = explain(evaluate(rules, "default", facts))
    assert "priors: needs 1 prior study (same modality, same body part) within 1825 days" in text
    config = yaml.safe_load(rules_file(tmp_path).read_text())
    for bad in ({"count": 0}, {"wait_seconds": 0}, {"within_days": -1}, {"how_many": 2}):
        config["products"][-1]["priors"] = bad
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(ValueError, match="priors"):
            load_rules(path)
