"""IHE AIR results at the hub, against a real uvicorn hub: the gate at the door (STOW-RS of
a performer's results while its workitem is IN PROGRESS; PS3.18 §10.5.3 failures), the
completion check (Output Information Sequence, PS3.4 Table CC.2.5-3) and the AI result of
each routed workitem (outcome, urgent notification, failed after the last attempt)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import yaml
from pydicom import Dataset
from pydicom.uid import generate_uid

from aifi.conformance.synthetic import radiograph_study
from aifi.hub.settings import Settings
from aifi.ihe_profiles import air
from tests.conftest import LiveServer, database_for, running_hub
from tests.support.dicom import multipart_related, to_bytes
from tests.support.ups import completion, element, state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
QUIET = 0.2
NAMES = {
    "AIFI-BONEAGE": "Skeletal age (bone age)",
    "AIFI-FRACTURE": "Fracture detection",
    "AIFI-IPE": "Incidental pulmonary embolism",
}


def rules_file(tmp_path: Path, codes: Sequence[str], **changes: Any) -> Path:
    """The shipped products, each routed for any hand radiograph (tests need no CT), the
    tenant subscribed to ``codes`` only."""
    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = dict.fromkeys(("DX", "CR", "CT", "MR", "default"), QUIET)
    for product in config["products"]:
        product["when"] = [
            {"kind": "modality", "values": ["DX", "CR"]},
            {"kind": "body_part", "values": ["HAND"]},
        ]
        product.pop("model_name", None)  # the tests' results name the products by their name
        product.update(changes)
    config["tenants"] = {"default": list(codes)}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def results_hub(
    tmp_path: Path, codes: Sequence[str], *, database_url: str | None = None, **changes: Any
) -> Iterator[tuple[LiveServer, list[datetime]]]:
    """A hub whose Task Manager runs when the test ticks it, on the test's clock."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rules_file=rules_file(tmp_path, codes, **changes),
        task_manager=False,
    )
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        state = server.app.state
        state.hub.clock.set(lambda: now[0])
        yield server, now


class Hub:
    def __init__(self, server: LiveServer, now: list[datetime]) -> None:
        self.server = server
        self.now = now
        self.web = httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=30)
        self.api = httpx.Client(base_url=server.url + "/api/v1", timeout=30)

    def close(self) -> None:
        self.web.close()
        self.api.close()

    def stow(self, datasets: Sequence[Dataset]) -> httpx.Response:
        body, ctype = multipart_related(to_bytes(ds) for ds in datasets)
        return self.web.post(
            "/studies", content=body, headers={"Content-Type": ctype, "Accept": JSON["Accept"]}
        )

    def routed_study(self, images: int = 2) -> tuple[list[Dataset], dict[str, str]]:
        """A hand study stored and routed: its datasets and {product code: workitem UID}."""
        study_uid = str(generate_uid())
        study: list[Dataset] = [
            pydicom.dcmread(io.BytesIO(data))
            for data in radiograph_study(images, study_uid=study_uid)
        ]
        assert self.stow(study).status_code == 200
        # past the quiet period of the study just stored (its time is real, the hub's clock
        # the test's: a slow machine must not leave it unrouted)
        self.now[0] = max(self.now[0], datetime.now(UTC)) + timedelta(seconds=QUIET + 1)
        created = self.server.app.state.hub.task_manager.tick().created
        out = {}
        for uid in created:
            [ds] = self.web.get(f"/workitems/{uid}").json()
            code = ds["00404018"]["Value"][0]["00080100"]["Value"][0]
            out[code] = uid
        return study, out

    def claim(self, uid: str) -> str:
        txn = str(generate_uid())
        response = self.web.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn))
        assert response.status_code == 200, response.headers.get("warning")
        return txn

    def complete(self, uid: str, txn: str, outputs: Sequence[Dataset | str]) -> httpx.Response:
        body = completion()
        output_items = []
        for out in outputs:
            sop, series, cls = (
                (str(out.SOPInstanceUID), str(out.SeriesInstanceUID), str(out.SOPClassUID))
                if isinstance(out, Dataset)
                else (out, str(generate_uid()), "1.2.840.10008.5.1.4.1.1.88.34")
            )
            output_items.append(
                {
                    "0020000D": element("UI", "1.2.3"),
                    "0020000E": element("UI", series),
                    "00081199": element(
                        "SQ",
                        {"00081150": element("UI", cls), "00081155": element("UI", sop)},
                    ),
                }
            )
        body["00741216"]["Value"][0]["00404033"] = element("SQ", *output_items)
        response = self.web.post(f"/workitems/{uid}?transaction={txn}", json=body)
        assert response.status_code == 200, response.headers.get("warning")
        return self.web.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))

    def result(self, uid: str) -> dict[str, Any]:
        response = self.api.get(f"/results/{uid}")
        assert response.status_code == 200, response.text
        detail: dict[str, Any] = response.json()
        return detail

    def stored(self, ds: Dataset) -> bool:
        response = self.web.get(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/metadata"
        )
        return response.status_code == 200


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with results_hub(tmp_path, ["AIFI-FRACTURE"]) as (server, now):
        client = Hub(server, now)
        yield client
        client.close()


def algorithm(code: str) -> air.AlgorithmIdentity:
    return air.AlgorithmIdentity(
        manufacturer="aifi-hub tests",
        model_name=NAMES[code],
        software_version="1.0",
        device_uid="2.25.1234567890123456789",
    )


def fracture_report(
    inputs: Sequence[Dataset], present: bool = True, code: str = "AIFI-FRACTURE"
) -> Dataset:
    finding = air.QualitativeFinding(
        finding=air.PULMONARY_EMBOLISM if code == "AIFI-IPE" else air.FRACTURE,
        present=present,
        tracking_id="finding 1",
    )
    report = air.measurement_report(list(inputs), algorithm(code), findings=[finding])
    return copy.deepcopy(report)  # the tests change reports: share no element with inputs


def failure_of(response: httpx.Response) -> int:
    [item] = response.json()["00081198"]["Value"]
    code: int = item["00081197"]["Value"][0]
    return code


# -- the gate ---------------------------------------------------------------------------------


def test_a_conformant_result_is_stored_and_recorded(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    hub.claim(uid)
    report = fracture_report(study)
    response = hub.stow([report])
    assert response.status_code == 200, response.headers.get("warning")
    assert hub.stored(report)
    detail = hub.result(uid)
    assert detail["state"] == "in-progress" and detail["result"] is None
    [instance] = detail["instances"]
    assert instance["sop_instance_uid"] == report.SOPInstanceUID
    assert instance["kind"] == "SR" and instance["positive"] is True
    assert "Fracture of bone: present" in instance["summary"]
    assert detail["problems"] == []


def _without_equipment(ds: Dataset, _study: list[Dataset]) -> Dataset:
    del ds.ContributingEquipmentSequence
    return ds


def _other_patient(ds: Dataset, _study: list[Dataset]) -> Dataset:
    ds.PatientID = "SOMEONE-ELSE"
    return ds


def _broken_tree(ds: Dataset, _study: list[Dataset]) -> Dataset:
    ds.ContentSequence = [
        item
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue != "121058"  # Procedure reported
    ]
    return ds


BROKEN = {
    "missing Contributing Equipment": (
        _without_equipment,
        0xA900,
        "algorithm identification (Contributing Equipment",
    ),
    "wrong patient": (_other_patient, 0xC410, "AIW-I: result for the inputs' patient"),
    "broken SR tree": (_broken_tree, 0xA900, "TID 1500 row 4 Procedure reported"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_non_conformant_result_is_refused_with_the_rule(hub: Hub, case: str):
    change, code, rule = BROKEN[case]
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    hub.claim(uid)
    report = change(fracture_report(study), study)
    response = hub.stow([report])
    assert response.status_code == 409
    assert failure_of(response) == code
    warning = response.headers.get("warning", "")
    assert rule in warning and f"[{code:04X}]" in warning
    assert not hub.stored(report)
    detail = hub.result(uid)
    assert detail["instances"] == []
    [problem] = detail["problems"]
    assert problem["sop_instance_uid"] == report.SOPInstanceUID and rule in problem["problem"]


def test_a_reference_to_an_instance_that_is_not_an_input_is_refused(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    hub.claim(uid)
    stranger = Dataset()
    stranger.update(study[0])
    stranger.SOPInstanceUID = generate_uid()
    stranger.file_meta = study[0].file_meta
    report = fracture_report([*study, stranger])
    response = hub.stow([report])
    assert response.status_code == 409 and failure_of(response) == 0xC410
    assert "AIW-I: result references only the inputs" in response.headers["warning"]
    assert str(stranger.SOPInstanceUID) in hub.result(uid)["problems"][0]["problem"]


def test_a_result_in_another_study_is_refused_and_its_workitem_says_why(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    hub.claim(uid)
    report = fracture_report(study)
    report.StudyInstanceUID = generate_uid()
    response = hub.stow([report])
    assert response.status_code == 409 and failure_of(response) == 0xC410
    warning = response.headers["warning"]
    assert "no workitem in progress for this study" in warning
    assert "AIW-I: result in the inputs' study" in warning
    assert "result in the inputs' study" in hub.result(uid)["problems"][0]["problem"]


def test_an_ai_result_without_any_workitem_in_progress_is_refused(hub: Hub):
    study, _items = hub.routed_study()  # SCHEDULED, never claimed
    report = fracture_report(study)
    response = hub.stow([report])
    assert response.status_code == 409 and failure_of(response) == 0xC410
    assert "no workitem in progress for this study" in response.headers["warning"]
    assert not hub.stored(report)


def test_ordinary_instances_are_stored_unchanged_while_a_workitem_runs(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    hub.claim(uid)
    more = [
        pydicom.dcmread(io.BytesIO(data))
        for data in radiograph_study(2, study_uid=str(study[0].StudyInstanceUID))
    ]
    text = Dataset()  # a Basic Text SR without algorithm identification: not gated
    text.update(study[0])
    del text.PixelData
    text.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    text.SOPInstanceUID = generate_uid()
    text.SeriesInstanceUID = generate_uid()
    text.Modality = "SR"
    text.file_meta = copy.deepcopy(study[0].file_meta)
    text.file_meta.MediaStorageSOPClassUID = text.SOPClassUID
    text.file_meta.MediaStorageSOPInstanceUID = text.SOPInstanceUID
    response = hub.stow([*more, text])
    assert response.status_code == 200, response.headers.get("warning")
    assert hub.result(uid)["instances"] == []


# -- completion -------------------------------------------------------------------------------


def test_completion_naming_a_refused_or_unknown_instance_is_refused(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    txn = hub.claim(uid)
    good = fracture_report(study)
    bad = _other_patient(fracture_report(study), study)
    assert hub.stow([good]).status_code == 200
    assert hub.stow([bad]).status_code == 409
    refused = hub.complete(uid, txn, [good, bad])
    assert refused.status_code == 409
    assert "refused at STOW-RS" in refused.headers["warning"]
    unknown_uid = str(generate_uid())
    unknown = hub.complete(uid, txn, [good, unknown_uid])
    assert unknown.status_code == 409
    assert f"{unknown_uid} is not stored in the hub" in unknown.headers["warning"]
    detail = hub.result(uid)
    assert detail["state"] == "in-progress"
    assert any("Output Information Sequence" in p["problem"] for p in detail["problems"])
    done = hub.complete(uid, txn, [good])
    assert done.status_code == 200, done.headers.get("warning")
    assert hub.result(uid)["result"]["outcome"] == "positive"


def test_a_negative_result_gets_an_ai_result_too(hub: Hub):
    study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    txn = hub.claim(uid)
    report = fracture_report(study, present=False)
    assert hub.stow([report]).status_code == 200
    assert hub.complete(uid, txn, [report]).status_code == 200
    result = hub.result(uid)["result"]
    assert result["outcome"] == "negative" and result["urgent"] is False
    assert "absent" in result["summary"]
    assert result["review_state"] == "awaiting-review"  # fracture detection is supervised


def test_an_autonomous_result_is_released_at_once(tmp_path: Path):
    with results_hub(tmp_path, ["AIFI-BONEAGE"]) as (server, now):
        hub = Hub(server, now)
        study, items = hub.routed_study()
        uid = items["AIFI-BONEAGE"]
        txn = hub.claim(uid)
        report = air.measurement_report(
            list(study),
            algorithm("AIFI-BONEAGE"),
            measurements=[
                air.Measurement(
                    name=air.BONE_AGE, value=10.5, unit=air.YEARS, tracking_id="bone age"
                )
            ],
        )
        assert hub.stow([report]).status_code == 200
        assert hub.complete(uid, txn, [report]).status_code == 200
        detail = hub.result(uid)
        result = detail["result"]
        assert result["review_state"] == "not-required" and result["released_at"]
        assert result["outcome"] == "measured" and "10.5" in result["summary"]
        [delivery] = detail["deliveries"]
        assert delivery["destination"] == "hub-store" and delivery["state"] == "delivered"
        timings = detail["timings"]
        assert timings["workitem_created"] <= timings["completed"] <= timings["released"]
        assert timings["delivered"] == timings["released"]
        hub.close()


def test_a_positive_urgent_finding_notifies(tmp_path: Path):
    with results_hub(tmp_path, ["AIFI-IPE"]) as (server, now):
        hub = Hub(server, now)
        assert hub.api.get("/notifications").json()["notifications"] == []
        study, items = hub.routed_study()
        uid = items["AIFI-IPE"]
        txn = hub.claim(uid)
        report = fracture_report(study, code="AIFI-IPE")
        assert hub.stow([report]).status_code == 200
        assert hub.complete(uid, txn, [report]).status_code == 200
        result = hub.result(uid)["result"]
        assert result["urgent"] is True and result["outcome"] == "positive"
        [note] = hub.api.get("/notifications").json()["notifications"]
        assert note["kind"] == "urgent-finding" and note["workitem_uid"] == uid
        assert "Pulmonary embolism: present" in note["text"]
        later = hub.api.get("/notifications", params={"since": note["id"]}).json()
        assert later["notifications"] == [] and later["last_id"] == note["id"]
        hub.close()


def test_two_products_running_on_one_study_each_get_their_own_results(tmp_path: Path):
    with results_hub(tmp_path, ["AIFI-FRACTURE", "AIFI-IPE"]) as (server, now):
        hub = Hub(server, now)
        study, items = hub.routed_study()
        for uid in items.values():
            hub.claim(uid)
        for code, uid in items.items():
            report = fracture_report(study, code=code)
            assert hub.stow([report]).status_code == 200
            [instance] = hub.result(uid)["instances"]
            assert instance["sop_instance_uid"] == report.SOPInstanceUID
        hub.close()


# -- cancellation ----------------------------------------------------------------------------


def test_a_workitem_cancelled_after_its_last_attempt_fails_with_the_reason(tmp_path: Path):
    with results_hub(tmp_path, ["AIFI-FRACTURE"], claim_timeout_minutes=1, max_attempts=2) as (
        server,
        now,
    ):
        hub = Hub(server, now)
        _study, items = hub.routed_study()
        first = items["AIFI-FRACTURE"]
        now[0] += timedelta(seconds=61)
        manager = server.app.state.hub.task_manager
        assert first in manager.tick().expired
        assert hub.result(first)["result"] is None  # retried: no answer from this attempt
        assert hub.result(first)["state"] == "ended"
        now[0] += timedelta(seconds=61)
        [second] = manager.tick().expired
        result = hub.result(second)["result"]
        assert result["outcome"] == "failed" and result["review_state"] == "not-required"
        assert "no attempts left" in result["reason"]
        listed = hub.api.get("/results", params={"product": "AIFI-FRACTURE"}).json()
        assert [r["workitem_uid"] for r in listed["results"]] == [second]
        hub.close()


def test_a_performer_that_discontinues_fails_and_a_requester_cancel_is_cancelled(hub: Hub):
    _study, items = hub.routed_study()
    uid = items["AIFI-FRACTURE"]
    txn = hub.claim(uid)
    body = {"00741002": element("SQ", {"00741238": element("LT", "input images unreadable")})}
    assert hub.web.post(f"/workitems/{uid}?transaction={txn}", json=body).status_code == 200
    assert (
        hub.web.put(f"/workitems/{uid}/state", json=state_change("CANCELED", txn)).status_code
        == 200
    )
    result = hub.result(uid)["result"]
    assert result["outcome"] == "failed" and result["reason"] == "input images unreadable"

    _study, items = hub.routed_study()
    other = items["AIFI-FRACTURE"]
    request = {"00741238": element("LT", "ordered twice")}
    assert hub.web.post(f"/workitems/{other}/cancelrequest", json=request).status_code == 202
    result = hub.result(other)["result"]
    assert result["outcome"] == "cancelled" and result["reason"] == "ordered twice"


# -- both databases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_gate_completion_and_review_on_both_databases(backend: str, tmp_path: Path):
    with (
        database_for(backend) as url,
        results_hub(tmp_path, ["AIFI-FRACTURE"], database_url=url) as (server, now),
    ):
        hub = Hub(server, now)
        study, items = hub.routed_study()
        uid = items["AIFI-FRACTURE"]
        txn = hub.claim(uid)
        good = fracture_report(study)
        bad = _other_patient(fracture_report(study), study)
        response = hub.stow([good, bad])
        assert response.status_code == 202
        assert hub.stored(good) and not hub.stored(bad)
        assert hub.complete(uid, txn, [bad]).status_code == 409
        assert hub.complete(uid, txn, [good]).status_code == 200
        accepted = hub.api.post(f"/results/{uid}/accept", json={"reviewer": "dr. A"})
        assert accepted.status_code == 200 and accepted.json()["review_state"] == "accepted"
        detail = hub.result(uid)
        assert len(detail["problems"]) == 2 and len(detail["instances"]) == 1
        hub.close()
