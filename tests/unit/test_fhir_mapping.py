"""The hub's state as FHIR R4 resources (aifi.fhir.mapping): every resource is valid R4
(round-trips through the R4B models unchanged), ids and references agree across resources,
Task follows the UPS state and the result's review, an EPD's own Task keeps what the EPD
wrote, and a real TID 1500 report read back by summarise() becomes coded Observations."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydicom import Dataset, dcmread

from aifi.conformance.synthetic import radiograph_study
from aifi.fhir import mapping
from aifi.fhir.codes import coding, fhir_system, uid_identifier
from aifi.fhir.resources import validated
from aifi.fhir.views import (
    FindingView,
    InstanceView,
    MeasurementView,
    PatientView,
    ProductView,
    ResultObjectView,
    ResultView,
    SeriesView,
    StudyView,
    TaskView,
)
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes as air_codes

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
WORKITEM = "1.2.826.0.1.3680043.8.498.9"
SC_SERIES = "1.2.826.0.1.3680043.8.498.20"
SC = "1.2.826.0.1.3680043.8.498.21"
SR = "1.2.826.0.1.3680043.8.498.22"
BASE = "https://hub.example/dicomweb"
T0 = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)

PATIENT = PatientView("PID-17", issuer="HOSPITAL-A")
PRODUCT = ProductView(
    code="AIFI-FRACTURE",
    name="Fracture detection",
    vendor="aifi vendors",
    version="2.1",
    supervised=True,
    model_name="fracture-detection",
    device_uid="2.25.329800735698586629295641978511506172918",
    software_versions="2.1\\build 77",
)
FRACTURE = ("125605004", "SCT", "Fracture of bone")
WRIST = ("8205005", "SCT", "Wrist")
LEFT = ("7771000", "SCT", "Left")
BONE_AGE = ("85151-9", "LN", "Bone age")


def result(**changes) -> ResultView:
    view = ResultView(
        workitem_uid=WORKITEM,
        study_instance_uid=STUDY,
        product=PRODUCT,
        outcome="positive",
        review_state="accepted",
        summary="Fracture of bone: present (wrist, left)",
        reviewer="Dr. Weber",
        reviewed_at=T0 + timedelta(minutes=30),
        completed_at=T0 + timedelta(minutes=5),
        objects=(
            ResultObjectView(SR, SC_SERIES, "1.2.840.10008.5.1.4.1.1.88.34", "SR"),
            ResultObjectView(SC, SC_SERIES, "1.2.840.10008.5.1.4.1.1.7", "SC"),
        ),
        findings=(FindingView(FRACTURE, True, WRIST, LEFT, SR),),
        measurements=(MeasurementView(BONE_AGE, 10.5, "a", SR),),
    )
    return replace(view, **changes)


def task_view(**changes) -> TaskView:
    view = TaskView(
        task_id=WORKITEM,
        workitem_uid=WORKITEM,
        state="SCHEDULED",
        product=PRODUCT,
        study_instance_uid=STUDY,
        patient=PATIENT,
        accession_number="ACC-1",
        authored_on=T0,
        last_modified=T0 + timedelta(minutes=1),
    )
    return replace(view, **changes)


def study_view(**changes) -> StudyView:
    view = StudyView(
        study_instance_uid=STUDY,
        patient=PATIENT,
        accession_number="ACC-1",
        started=datetime(2024, 5, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        description="XR hand left",
        series=(
            SeriesView(
                SERIES,
                "DX",
                series_number=1,
                description="hand pa",
                instances=(
                    InstanceView("1.2.3.1", "1.2.840.10008.5.1.4.1.1.1.1", 1),
                    InstanceView("1.2.3.2", "1.2.840.10008.5.1.4.1.1.1.1"),
                ),
            ),
            SeriesView(SC_SERIES, None),
        ),
        wado_rs_base=BASE,
    )
    return replace(view, **changes)


def valid(resource: dict[str, Any] | None) -> dict[str, Any]:
    """The resource passes the R4(B) model and round-trips unchanged."""
    assert resource is not None
    assert validated(resource) == resource
    return resource


# -- codes --------------------------------------------------------------------------------


def test_dicom_schemes_become_fhir_systems():
    assert fhir_system("SCT") == "http://snomed.info/sct"
    assert fhir_system("LN") == "http://loinc.org"
    assert fhir_system("DCM") == "http://dicom.nema.org/resources/ontology/DCM"
    assert fhir_system("UCUM") == "http://unitsofmeasure.org"
    assert fhir_system("99LOCAL") == "urn:dicom:scheme:99LOCAL"
    assert coding(BONE_AGE) == {
        "system": "http://loinc.org",
        "code": "85151-9",
        "display": "Bone age",
    }
    assert uid_identifier("1.2.3") == {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}


# -- Patient, Device, ImagingStudy --------------------------------------------------------


def test_patient_id_is_a_stable_hash_of_issuer_and_id():
    pid = mapping.patient_id(PATIENT)
    assert pid.startswith("pat-") and len(pid) == 28
    assert pid == mapping.patient_id(PatientView("PID-17", issuer="HOSPITAL-A"))
    assert pid != mapping.patient_id(PatientView("PID-17"))
    patient = valid(mapping.patient(PATIENT))
    assert patient == {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:aifi:patient-id:HOSPITAL-A", "value": "PID-17"}],
    }
    assert mapping.patient_reference(PatientView("X"))["identifier"] == {
        "system": "urn:aifi:patient-id",
        "value": "X",
    }


def test_device_names_the_product_and_the_algorithm():
    device = valid(mapping.device(PRODUCT))
    assert device["id"] == "AIFI-FRACTURE"
    assert device["identifier"] == [
        {"system": "urn:aifi:product", "value": "AIFI-FRACTURE"},
        uid_identifier(str(PRODUCT.device_uid)),
    ]
    assert device["manufacturer"] == "aifi vendors"
    assert device["deviceName"] == [
        {"name": "Fracture detection", "type": "user-friendly-name"},
        {"name": "fracture-detection", "type": "model-name"},
    ]
    assert [v["value"] for v in device["version"]] == ["2.1", "build 77"]
    assert device["status"] == "active"
    assert "Supervised" in device["note"][0]["text"]


def test_device_of_an_autonomous_product_without_results_yet():
    product = ProductView("AIFI-BONEAGE", "Bone age", "v", "1.0", supervised=False)
    device = valid(mapping.device(product))
    assert device["identifier"] == [{"system": "urn:aifi:product", "value": "AIFI-BONEAGE"}]
    assert device["deviceName"][1] == {"name": "Bone age", "type": "model-name"}
    assert device["version"] == [{"value": "1.0"}]
    assert "Autonomous" in device["note"][0]["text"]


def test_imaging_study_with_series_instances_and_wado_endpoint():
    study = valid(mapping.imaging_study(study_view()))
    assert study["id"] == STUDY
    assert study["identifier"][0] == uid_identifier(STUDY)
    assert study["identifier"][1]["value"] == "ACC-1"
    assert study["identifier"][1]["type"]["coding"][0]["code"] == "ACSN"
    assert study["status"] == "available"
    assert study["subject"] == mapping.patient_reference(PATIENT)
    assert study["started"] == "2024-05-01T14:30:05+02:00"
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 2)
    assert [m["code"] for m in study["modality"]] == ["DX", "OT"]
    first = study["series"][0]
    assert first["uid"] == SERIES and first["number"] == 1 and first["numberOfInstances"] == 2
    assert first["modality"]["code"] == "DX"
    assert first["instance"][0]["sopClass"] == {
        "system": "urn:ietf:rfc:3986",
        "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1.1",
    }
    assert "number" not in first["instance"][1]
    assert study["endpoint"] == [{"reference": "#wado"}]
    endpoint = study["contained"][0]
    assert endpoint["address"] == BASE
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"


def test_imaging_study_without_patient_or_dicomweb():
    study = valid(mapping.imaging_study(study_view(patient=None, wado_rs_base="", series=())))
    assert study["subject"] == {"display": "Patient not identified by the study"}
    assert "endpoint" not in study and "contained" not in study and "series" not in study
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (0, 0)


# -- Task ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "business"),
    [
        ({}, "ready", None),
        ({"input_readiness": "INCOMPLETE"}, "requested", None),
        ({"state": "IN PROGRESS", "progress": 40.0}, "in-progress", None),
        ({"state": "COMPLETED"}, "completed", None),
        (
            {"state": "COMPLETED", "result": result(review_state="awaiting-review")},
            "completed",
            "awaiting-review",
        ),
        (
            {"state": "COMPLETED", "result": result(review_state="rejected")},
            "completed",
            "rejected",
        ),
        ({"state": "COMPLETED", "result": result()}, "completed", "accepted"),
        ({"state": "COMPLETED", "result": result(delivered=True)}, "completed", "delivered"),
        (
            {"state": "COMPLETED", "result": result(review_state="not-required")},
            "completed",
            "released",
        ),
        ({"state": "CANCELED", "cancelled_by_requester": True}, "cancelled", None),
        ({"state": "CANCELED", "reason": "deadline passed"}, "failed", None),
        (
            {"state": None, "workitem_uid": None, "waiting_for_study": True},
            "requested",
            "waiting-for-study",
        ),
        ({"state": None, "workitem_uid": None, "request_failed": True}, "failed", None),
        ({"state": None, "workitem_uid": None, "cancelled_by_requester": True}, "cancelled", None),
    ],
)
def test_task_status_follows_the_workitem_and_its_result(changes, status, business):
    task = valid(mapping.task(task_view(**changes)))
    assert task["status"] == status
    if business is None:
        assert "businessStatus" not in task
    else:
        assert task["businessStatus"]["coding"] == [
            {
                "system": "urn:aifi:business-status",
                "code": business,
                "display": task["businessStatus"]["text"],
            }
        ]


def test_task_of_a_scheduled_workitem():
    task = valid(mapping.task(task_view(priority="HIGH")))
    assert task["id"] == WORKITEM
    assert task["identifier"] == [uid_identifier(WORKITEM)]
    assert task["intent"] == "order"
    assert task["priority"] == "urgent"
    assert task["code"]["coding"] == [
        {"system": "urn:aifi:product", "code": "AIFI-FRACTURE", "display": "Fracture detection"}
    ]
    assert task["description"] == "Fracture detection"
    assert task["focus"] == {
        "reference": f"ImagingStudy/{STUDY}",
        "identifier": uid_identifier(STUDY),
    }
    assert task["input"] == [{"type": {"text": "ImagingStudy"}, "valueReference": task["focus"]}]
    assert task["for"] == mapping.patient_reference(PATIENT)
    assert task["owner"] == {"reference": "Device/AIFI-FRACTURE"}
    assert task["authoredOn"] == "2024-05-02T08:00:00Z"
    assert task["lastModified"] == "2024-05-02T08:01:00Z"
    assert "output" not in task and "statusReason" not in task
    assert mapping.task(task_view(priority="LOW"))["priority"] == "routine"


def test_failed_and_cancelled_tasks_say_why():
    failed = valid(mapping.task(task_view(state="CANCELED", reason="attempts exhausted")))
    assert failed["statusReason"] == {"text": "attempts exhausted"}
    request = valid(
        mapping.task(
            task_view(
                state=None, workitem_uid=None, request_failed=True, reason="no study within 24 h"
            )
        )
    )
    assert (request["status"], request["statusReason"]["text"]) == (
        "failed",
        "no study within 24 h",
    )
    assert "identifier" not in request


def test_completed_task_outputs_the_report_and_the_result_instances():
    view = task_view(state="COMPLETED", result=result(), output_instance_uids=(SR, SC))
    task = valid(mapping.task(view))
    assert task["output"] == [
        {
            "type": {"text": "DiagnosticReport"},
            "valueReference": {"reference": f"DiagnosticReport/{WORKITEM}"},
        },
        {"type": {"text": "DICOM instance"}, "valueIdentifier": uid_identifier(SR)},
        {"type": {"text": "DICOM instance"}, "valueIdentifier": uid_identifier(SC)},
    ]
    report = mapping.diagnostic_report(result(), patient=PATIENT, wado_rs_base=BASE)
    assert report is not None
    assert task["output"][0]["valueReference"]["reference"] == f"DiagnosticReport/{report['id']}"


def test_a_failed_result_gives_no_report_output():
    view = task_view(state="COMPLETED", result=result(outcome="failed"))
    task = valid(mapping.task(view))
    assert "output" not in task and "businessStatus" not in task


def test_a_request_naming_only_an_accession_focuses_on_it():
    view = task_view(state=None, workitem_uid=None, study_instance_uid=None, waiting_for_study=True)
    task = valid(mapping.task(view))
    assert task["focus"]["identifier"]["value"] == "ACC-1"
    assert "reference" not in task["focus"]
    assert task["input"][0]["valueReference"] == task["focus"]


EPD_TASK = {
    "resourceType": "Task",
    "id": "8f14e45fceea167a5a36dedd4bea2543",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-02T07:59:00Z"},
    "identifier": [{"system": "urn:epd:order", "value": "E-77"}],
    "basedOn": [{"reference": "ServiceRequest/order-17"}],
    "status": "requested",
    "intent": "order",
    "priority": "asap",
    "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-FRACTURE"}]},
    "focus": {
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                ]
            },
            "value": "ACC-1",
        }
    },
    "for": {"reference": "Patient/epd-patient-1"},
    "authoredOn": "2024-05-02T09:59:00+02:00",
    "requester": {"display": "Dr. House"},
    "note": [{"text": "please hurry"}],
}


def test_an_epd_task_keeps_what_the_epd_wrote():
    waiting = task_view(
        task_id=EPD_TASK["id"],
        state=None,
        workitem_uid=None,
        study_instance_uid=None,
        patient=None,
        waiting_for_study=True,
        last_modified=None,
        request=EPD_TASK,
    )
    task = valid(mapping.task(waiting))
    for kept in ("identifier", "basedOn", "priority", "code", "focus", "for", "requester", "note"):
        assert task[kept] == EPD_TASK[kept], kept
    assert task["authoredOn"] == EPD_TASK["authoredOn"]
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "waiting-for-study"
    assert task["owner"]["reference"] == "Device/AIFI-FRACTURE"
    assert "lastModified" not in task
    assert EPD_TASK["status"] == "requested" and "owner" not in EPD_TASK  # not modified

    done = replace(
        waiting,
        state="COMPLETED",
        workitem_uid=WORKITEM,
        study_instance_uid=STUDY,
        patient=PATIENT,
        waiting_for_study=False,
        last_modified=T0 + timedelta(hours=1),
        result=result(delivered=True),
        request=task,  # the stored Task of the previous refresh
    )
    updated = valid(mapping.task(done))
    assert updated["id"] == EPD_TASK["id"]
    assert updated["identifier"] == [*EPD_TASK["identifier"], uid_identifier(WORKITEM)]
    assert updated["basedOn"] == EPD_TASK["basedOn"]
    assert updated["requester"] == EPD_TASK["requester"] and updated["note"] == EPD_TASK["note"]
    assert updated["status"] == "completed"
    assert updated["businessStatus"]["coding"][0]["code"] == "delivered"
    assert updated["focus"]["reference"] == f"ImagingStudy/{STUDY}"
    assert updated["for"] == mapping.patient_reference(PATIENT)
    assert updated["lastModified"] == "2024-05-02T09:00:00Z"
    assert updated["output"][0]["valueReference"]["reference"] == f"DiagnosticReport/{WORKITEM}"
    again = mapping.task(replace(done, request=updated))
    assert again == updated  # refreshing is idempotent (no duplicate identifiers)


# -- results ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("review", "status"),
    [
        ("awaiting-review", "preliminary"),
        ("accepted", "final"),
        ("not-required", "final"),
        ("rejected", "cancelled"),
    ],
)
def test_report_and_observations_share_the_review_status(review, status):
    view = result(
        review_state=review, review_reason="not a fracture" if review == "rejected" else None
    )
    resources = mapping.result_resources(
        view, task_ids=[WORKITEM], patient=PATIENT, wado_rs_base=BASE
    )
    for resource in resources:
        valid(resource)
    report, *observations, provenance = resources
    assert report["status"] == status
    assert {o["status"] for o in observations} == {status}
    assert provenance["resourceType"] == "Provenance"
    if review == "rejected":
        assert report["conclusion"].startswith(
            "The AI result was rejected by Dr. Weber: not a fracture"
        )
    reviewed = review in ("accepted", "rejected")
    assert ("resultsInterpreter" in report) is reviewed
    assert (len(provenance["agent"]) == 2) is reviewed


def test_diagnostic_report_of_an_accepted_result():
    report = valid(
        mapping.diagnostic_report(
            result(released_at=T0 + timedelta(minutes=31)),
            orders=["ServiceRequest/order-17"],
            patient=PATIENT,
            wado_rs_base=BASE + "/",
        )
    )
    assert report["id"] == WORKITEM
    assert report["identifier"] == [uid_identifier(WORKITEM)]
    assert report["basedOn"] == [{"reference": "ServiceRequest/order-17"}]
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    assert report["code"]["coding"][0]["code"] == "AIFI-FRACTURE"
    assert report["subject"] == mapping.patient_reference(PATIENT)
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{STUDY}"}]
    assert report["effectiveDateTime"] == "2024-05-02T08:05:00Z"
    assert report["issued"] == "2024-05-02T08:31:00Z"
    assert report["resultsInterpreter"] == [{"display": "Dr. Weber"}]
    assert report["conclusion"] == "Fracture of bone: present (wrist, left)"
    assert report["result"] == [
        {"reference": f"Observation/{WORKITEM}-1"},
        {"reference": f"Observation/{WORKITEM}-2"},
    ]
    assert report["presentedForm"] == [
        {
            "contentType": "image/jpeg",
            "url": f"{BASE}/studies/{STUDY}/series/{SC_SERIES}/instances/{SC}/rendered",
            "title": "AI result summary page",
        }
    ]


def test_issued_falls_back_to_review_then_completion():
    reviewed = mapping.diagnostic_report(result(), patient=None, wado_rs_base=BASE)
    assert reviewed is not None and reviewed["issued"] == "2024-05-02T08:30:00Z"
    assert "basedOn" not in reviewed and "subject" not in reviewed
    autonomous = result(review_state="not-required", reviewer=None, reviewed_at=None)
    report = mapping.diagnostic_report(autonomous, patient=None, wado_rs_base="")
    assert report is not None and report["issued"] == "2024-05-02T08:05:00Z"
    assert "presentedForm" not in report  # no DICOMweb base to render from


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_failed_or_cancelled_results_have_no_report(outcome):
    view = result(outcome=outcome)
    assert mapping.diagnostic_report(view, patient=PATIENT, wado_rs_base=BASE) is None
    assert mapping.observations(view, patient=PATIENT) == []
    assert mapping.provenance(view, task_ids=[WORKITEM], observation_ids=[]) is None
    assert (
        mapping.result_resources(view, task_ids=[WORKITEM], patient=PATIENT, wado_rs_base=BASE)
        == []
    )


def test_observations_of_a_finding_and_a_measurement():
    finding, measurement = (valid(o) for o in mapping.observations(result(), patient=PATIENT))
    assert finding["id"] == f"{WORKITEM}-1"
    assert finding["identifier"] == [{"system": "urn:aifi:observation", "value": f"{WORKITEM}-1"}]
    assert finding["category"][0]["coding"][0]["code"] == "imaging"
    assert finding["code"] == {"coding": [coding(FRACTURE)], "text": "Fracture of bone"}
    assert finding["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "52101004",
        "display": "Present",
    }
    assert finding["interpretation"][0]["coding"][0]["code"] == "POS"
    assert finding["bodySite"] == {"coding": [coding(WRIST)], "text": "Wrist, Left"}
    assert finding["device"]["reference"] == "Device/AIFI-FRACTURE"
    assert finding["derivedFrom"] == [{"reference": f"ImagingStudy/{STUDY}"}]
    assert finding["subject"] == mapping.patient_reference(PATIENT)
    assert finding["effectiveDateTime"] == "2024-05-02T08:05:00Z"
    assert finding["issued"] == "2024-05-02T08:30:00Z"
    assert measurement["id"] == f"{WORKITEM}-2"
    assert measurement["code"]["coding"] == [coding(BONE_AGE)]
    assert measurement["valueQuantity"] == {
        "value": 10.5,
        "unit": "a",
        "system": "http://unitsofmeasure.org",
        "code": "a",
    }


def test_an_absent_finding_without_site_and_an_uncoded_concept():
    view = result(
        outcome="negative",
        findings=(FindingView(FRACTURE, False), FindingView(("", "", "Nodule"), False)),
        measurements=(),
    )
    absent, uncoded = (valid(o) for o in mapping.observations(view, patient=None))
    assert absent["valueCodeableConcept"]["coding"][0]["code"] == "2667000"
    assert absent["interpretation"][0]["coding"][0]["code"] == "NEG"
    assert "bodySite" not in absent and "subject" not in absent
    assert uncoded["code"] == {"text": "Nodule"}


def test_report_results_provenance_targets_and_observation_ids_agree():
    resources = mapping.result_resources(
        result(), task_ids=[WORKITEM, "epd-1"], patient=PATIENT, wado_rs_base=BASE
    )
    report, *observations, provenance = resources
    observation_ids = [o["id"] for o in observations]
    assert [r["reference"] for r in report["result"]] == [
        f"Observation/{i}" for i in observation_ids
    ]
    assert [t["reference"] for t in provenance["target"]] == [
        f"DiagnosticReport/{report['id']}",
        *(f"Observation/{i}" for i in observation_ids),
    ]
    assert provenance["id"] == WORKITEM
    assert provenance["recorded"] == "2024-05-02T08:05:00Z"
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"
    performer, verifier = provenance["agent"]
    assert performer["type"]["coding"][0]["code"] == "performer"
    assert performer["who"]["reference"] == "Device/AIFI-FRACTURE"
    assert verifier["type"]["coding"][0]["code"] == "verifier"
    assert verifier["who"] == {"display": "Dr. Weber"}
    assert [e["what"]["reference"] for e in provenance["entity"]] == [
        f"ImagingStudy/{STUDY}",
        f"Task/{WORKITEM}",
        "Task/epd-1",
    ]
    assert {e["role"] for e in provenance["entity"]} == {"source"}


def test_observation_ids_stay_valid_fhir_ids_for_64_character_uids():
    long_uid = "1.2.826.0.1.3680043.8.498." + "1" * 38
    assert len(long_uid) == 64
    view = result(workitem_uid=long_uid)
    report, first, second, _provenance = mapping.result_resources(
        view, task_ids=[long_uid], patient=PATIENT, wado_rs_base=BASE
    )
    assert valid(first)["id"] == mapping.observation_id(long_uid, 1)
    assert first["id"].startswith("obs-") and first["id"].endswith("-1")
    assert len(first["id"]) <= 64 and first["id"] != valid(second)["id"]
    assert first["identifier"][0]["value"] == first["id"]
    assert [r["reference"] for r in valid(report)["result"]] == [
        f"Observation/{first['id']}",
        f"Observation/{second['id']}",
    ]
    assert mapping.observation_id(WORKITEM, 3) == f"{WORKITEM}-3"


def test_naive_times_are_utc_and_offsets_are_kept():
    assert mapping.fhir_datetime(datetime(2024, 5, 2, 8, 0)) == "2024-05-02T08:00:00Z"
    assert (
        mapping.fhir_datetime(
            datetime(2024, 5, 2, 8, 0, 0, 5000, tzinfo=timezone(timedelta(hours=-5)))
        )
        == "2024-05-02T08:00:00.005000-05:00"
    )


# -- from a real TID 1500 report ----------------------------------------------------------


def reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer, stop_before_pixels=True)


def test_summarise_gives_the_codes_the_observations_carry():
    inputs = [dcmread(io.BytesIO(raw)) for raw in radiograph_study(2)]
    algorithm = air.AlgorithmIdentity(
        manufacturer="aifi-hub tests",
        model_name="fracture-detection",
        software_version="1.0",
        device_uid="2.25.329800735698586629295641978511506172918",
    )
    sr = air.measurement_report(
        inputs,
        algorithm,
        findings=[
            air.QualitativeFinding(
                air.FRACTURE,
                True,
                "fracture 1",
                finding_site=air_codes.WRIST,
                laterality=air_codes.LEFT,
                regions=[air.Region(inputs[0], "POINT", [(10.0, 12.0)])],
            )
        ],
        measurements=[
            air.Measurement(
                air.BONE_AGE, 10.5, air.YEARS, "bone age", air_codes.HAND, air_codes.LEFT
            )
        ],
    )
    summary = air.summarise(reread(sr))
    (finding,) = summary.findings
    assert finding.concept == FRACTURE
    assert finding.site_code == WRIST
    assert finding.laterality_code == LEFT
    assert (finding.site, finding.laterality) == ("Wrist", "Left")  # as before
    (measurement,) = summary.measurements
    assert measurement.concept == BONE_AGE
    assert measurement == air.MeasurementSummary("Bone age", 10.5, "a")  # equality unchanged

    view = result(
        findings=(
            FindingView(
                finding.concept, finding.present, finding.site_code, finding.laterality_code
            ),
        ),
        measurements=(MeasurementView(measurement.concept, measurement.value, measurement.unit),),
    )
    fracture, bone_age = (valid(o) for o in mapping.observations(view, patient=PATIENT))
    assert fracture["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "125605004",
        "display": "Fracture of bone",
    }
    assert fracture["bodySite"]["coding"][0]["code"] == "8205005"
    assert fracture["bodySite"]["text"] == "Wrist, Left"
    assert bone_age["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "85151-9",
        "display": "Bone age",
    }
    assert bone_age["valueQuantity"]["code"] == "a"
