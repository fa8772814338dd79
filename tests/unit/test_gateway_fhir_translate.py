"""Re-identification of the hub's FHIR answers at the gateway, without a hub
(:meth:`aifi.gateway.fhir.translate.FhirTranslator.reidentify`; PS3.15 E.1.2): patient
identifiers and references, hub Patient ids, accession numbers, study/series/instance UIDs
(AI-created UIDs stay), ImagingStudy ``started``/Endpoint/description, links into the hub,
Bundles. Over the in-memory map of :mod:`tests.support.fhir_translation`.
"""

from __future__ import annotations

import copy

import pytest

from aifi.errors import NotFound, Unidentifiable
from aifi.fhir.codes import PATIENT_ID_SYSTEM, uid_identifier
from aifi.gateway.deid import PatientIdentity, StudyIdentity
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.fhir.translate import FhirTranslator, identity_text
from tests.support.fhir_translation import (
    AI_UID,
    GATEWAY,
    HUB,
    KEY,
    PROFILE,
    UNKNOWN_PATIENT,
    MemoryIdentities,
    Resource,
    Seen,
    acsn,
    translator_over,
    world,
)


@pytest.fixture
def ids() -> MemoryIdentities:
    w = world()
    return MemoryIdentities(w.a, w.b, w.c)


@pytest.fixture
def fhir(ids: MemoryIdentities) -> FhirTranslator:
    return translator_over(ids)


# -- re-identification: ImagingStudy ----------------------------------------------------------


def test_a_hub_imaging_study_comes_back_with_the_hospitals_identities(
    fhir: FhirTranslator,
) -> None:
    a = world().a
    hub = a.hub_study
    study = fhir.reidentify(hub)
    original = a.original
    assert study["id"] == original.StudyInstanceUID
    assert study["identifier"] == [
        uid_identifier(original.StudyInstanceUID),
        acsn("ACC-7731"),
    ]
    assert study["subject"] == {
        "reference": f"Patient/{a.gateway_patient}",
        "identifier": {"system": f"{PATIENT_ID_SYSTEM}:HOSP-A", "value": "MRN-7731"},
    }
    assert study["started"] == "2026-01-15T10:15:00Z"  # shifted back to the original date
    assert hub["started"] != study["started"]
    [series] = study["series"]
    assert series["uid"] == original.SeriesInstanceUID
    assert series["instance"][0]["uid"] == original.SOPInstanceUID
    assert series["instance"][0]["sopClass"] == hub["series"][0]["instance"][0]["sopClass"]
    assert study["contained"][0]["address"] == GATEWAY + "/dicomweb"
    assert study["description"] == "X hand left"  # restored from the study's identity
    assert study["numberOfInstances"] == 1
    assert hub["id"] == a.study.pseudo_study_uid  # the hub's answer is left as it was


def test_a_patient_without_an_issuer_gets_the_plain_system(fhir: FhirTranslator) -> None:
    b = world().b
    study = fhir.reidentify(b.hub_study)
    assert study["subject"]["identifier"] == {"system": PATIENT_ID_SYSTEM, "value": "MRN-7731"}
    assert study["subject"]["reference"] == f"Patient/{b.gateway_patient}"
    assert b.gateway_patient != world().a.gateway_patient


def _without_study_row(ids: MemoryIdentities, seen: Seen) -> None:
    """The study is not in the study map; its UID is still in the UID map (a study the EPD
    named before it arrived, with an ImagingStudy the hub made)."""
    del ids.studies[seen.study.pseudo_study_uid]
    ids.uids[seen.study.pseudo_study_uid] = seen.study.original_study_uid
    ids.accessions[seen.study.accession_pseudo] = str(
        identity_text(seen.study.identity, "00080050")
    )


@pytest.mark.parametrize("subject", ["identifier", "reference"])
def test_started_is_shifted_by_the_subjects_patient_without_a_study_row(
    ids: MemoryIdentities, fhir: FhirTranslator, subject: str
) -> None:
    a = world().a
    _without_study_row(ids, a)
    hub = copy.deepcopy(a.hub_study)
    del hub["subject"][{"identifier": "reference", "reference": "identifier"}[subject]]
    study = fhir.reidentify(hub)
    assert study["started"] == "2026-01-15T10:15:00Z"
    assert study["description"] == "hand"  # nothing to restore it from


def test_started_stays_without_a_known_patient(ids: MemoryIdentities, fhir: FhirTranslator) -> None:
    a = world().a
    _without_study_row(ids, a)
    for subject in ({"display": "no patient"}, {"reference": "Group/g1"}, {"reference": "#p"}):
        hub = {**a.hub_study, "subject": subject}
        assert fhir.reidentify(hub)["started"] == a.hub_study["started"]


def test_the_study_rows_patient_shifts_started_without_a_subject(fhir: FhirTranslator) -> None:
    a = world().a
    hub = {**a.hub_study, "subject": {"display": "Patient not identified by the study"}}
    assert fhir.reidentify(hub)["started"] == "2026-01-15T10:15:00Z"


def test_a_study_row_without_patient_falls_back_to_the_subject(
    ids: MemoryIdentities, fhir: FhirTranslator
) -> None:
    a = world().a
    study = a.study
    identity = {k: v for k, v in study.identity.items() if k != "00081030"}
    ids.studies[study.pseudo_study_uid] = StudyIdentity(
        study.pseudo_study_uid, study.original_study_uid, "", study.accession_pseudo, identity
    )
    hub = {**a.hub_study, "description": "hand"}
    result = fhir.reidentify(hub)
    assert result["started"] == "2026-01-15T10:15:00Z"
    assert result["description"] == "hand"  # the identity has no Study Description


def test_a_patient_without_date_offset_keeps_started(
    ids: MemoryIdentities, fhir: FhirTranslator
) -> None:
    a = world().a
    ids.patients[a.patient.pseudo_id] = PatientIdentity(
        a.patient.pseudo_id, "MRN-7731", "HOSP-A", 0
    )
    assert fhir.reidentify(a.hub_study)["started"] == a.hub_study["started"]


def test_only_the_wado_endpoint_is_pointed_at_the_gateway(fhir: FhirTranslator) -> None:
    hub = copy.deepcopy(world().a.hub_study)
    other = {"resourceType": "Endpoint", "id": "other", "address": "https://pacs.example"}
    not_endpoint = {"resourceType": "Device", "id": "wado", "address": "https://x.example"}
    hub["contained"] += [other, not_endpoint]
    contained = fhir.reidentify(hub)["contained"]
    assert [c["address"] for c in contained] == [
        GATEWAY + "/dicomweb",
        "https://pacs.example",
        "https://x.example",
    ]


def test_an_empty_study_description_is_not_restored(
    ids: MemoryIdentities, fhir: FhirTranslator
) -> None:
    a = world().a
    identity = {**a.study.identity, "00081030": {"vr": "LO", "Value": [""]}}
    ids.studies[a.study.pseudo_study_uid] = StudyIdentity(
        a.study.pseudo_study_uid, a.study.original_study_uid, a.patient.pseudo_id,
        a.study.accession_pseudo, identity,
    )  # fmt: skip
    assert fhir.reidentify(a.hub_study)["description"] == "hand"
    assert identity_text({"00081030": {"vr": "LO"}}, "00081030") is None
    assert identity_text({"00081030": {"Value": [None]}}, "00081030") is None
    assert identity_text({"00081030": {"Value": [""]}}, "00081030") is None
    assert identity_text({"00081030": {"Value": ["x", "y"]}}, "00081030") == "x"


# -- re-identification: identifiers, references, texts ---------------------------------------


def test_a_hub_patient_and_references_to_it(fhir: FhirTranslator) -> None:
    a = world().a
    patient = {
        "resourceType": "Patient",
        "id": a.hub_patient,
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": a.patient.pseudo_id}],
    }
    assert fhir.reidentify(patient) == {
        "resourceType": "Patient",
        "id": a.gateway_patient,
        "identifier": [{"system": f"{PATIENT_ID_SYSTEM}:HOSP-A", "value": "MRN-7731"}],
    }
    report = {
        "resourceType": "DiagnosticReport",
        "subject": {"reference": f"{HUB}/fhir/Patient/{a.hub_patient}"},
        "imagingStudy": [{"reference": f"ImagingStudy/{a.study.pseudo_study_uid}"}],
        "conclusion": f"Patient {a.patient.pseudo_id}^ seen; study {a.study.pseudo_study_uid}.",
        "presentedForm": [{"url": f"{HUB}/results/{a.study.pseudo_study_uid}/summary"}],
        "note": [{"text": "1.2.25.99 and 12.25.77 are not ours"}],
        "count": 3,
        "flags": [True, 3, "pat-x"],
    }
    result = fhir.reidentify(report)
    assert result["subject"] == {"reference": f"{GATEWAY}/fhir/Patient/{a.gateway_patient}"}
    assert result["imagingStudy"] == [{"reference": f"ImagingStudy/{a.original.StudyInstanceUID}"}]
    assert result["conclusion"] == f"Patient MRN-7731^ seen; study {a.original.StudyInstanceUID}."
    assert result["presentedForm"][0]["url"] == (
        f"{GATEWAY}/results/{a.original.StudyInstanceUID}/summary"
    )
    assert result["note"] == report["note"]
    assert result["count"] == 3
    assert result["flags"] == [True, 3, "pat-x"]


def test_uids_in_lists_and_ai_created_uids(fhir: FhirTranslator) -> None:
    a = world().a
    series = a.pseudo(a.original.SeriesInstanceUID)
    resource = {
        "resourceType": "Observation",
        "derivedFrom": [{"identifier": uid_identifier(AI_UID)}],
        "component": [[series, AI_UID, f"{series},{AI_UID}"]],
    }
    result = fhir.reidentify(resource)
    assert result["derivedFrom"] == resource["derivedFrom"]
    original = str(a.original.SeriesInstanceUID)
    assert result["component"] == [[original, AI_UID, f"{original},{AI_UID}"]]


def test_an_accession_number_comes_back(fhir: FhirTranslator) -> None:
    a = world().a
    task: Resource = {
        "resourceType": "Task",
        "focus": {"type": "ImagingStudy", "identifier": acsn(a.study.accession_pseudo)},
        "input": [{"valueIdentifier": {"type": {"text": "no coding"}, "value": "kept"}}],
        "output": [
            {"valueIdentifier": {"type": {"coding": ["ACSN", {"code": "X"}]}, "value": "k"}}
        ],
    }
    result = fhir.reidentify(task)
    assert result["focus"] == {"type": "ImagingStudy", "identifier": acsn("ACC-7731")}
    assert result["input"] == task["input"]
    assert result["output"] == task["output"]
    no_value = {"resourceType": "Task", "focus": {"identifier": {"type": acsn("")["type"]}}}
    assert fhir.reidentify(no_value) == no_value


def test_a_remembered_accession_and_a_study_only_in_the_study_map(
    ids: MemoryIdentities, fhir: FhirTranslator
) -> None:
    ids.accessions[fhir.pseudo_accession("ACC-NEW")] = "ACC-NEW"
    a = world().a
    del ids.uids[a.study.pseudo_study_uid]
    task: Resource = {
        "resourceType": "Task",
        "focus": {"identifier": acsn(fhir.pseudo_accession("ACC-NEW"))},
        "basedOn": [{"reference": f"ImagingStudy/{a.study.pseudo_study_uid}"}],
    }
    result = fhir.reidentify(task)
    assert result["focus"]["identifier"]["value"] == "ACC-NEW"
    assert result["basedOn"][0]["reference"] == f"ImagingStudy/{a.original.StudyInstanceUID}"


NEVER_SEEN = Keyed(KEY).uid("1.2.3.never.seen")


@pytest.mark.parametrize(
    ("part", "why"),
    [
        ({"identifier": {"system": PATIENT_ID_SYSTEM, "value": UNKNOWN_PATIENT}}, "a patient"),
        ({"identifier": {"system": f"{PATIENT_ID_SYSTEM}:HOSP-A"}}, "a patient"),
        ({"identifier": acsn("UNKNOWNACCESSION")}, "an accession number"),
        ({"identifier": acsn("")}, "an accession number"),
        ({"reference": "Patient/pat-" + "0" * 24}, f"Patient/pat-{'0' * 24}"),
        ({"reference": f"ImagingStudy/{NEVER_SEEN}"}, f"UID {NEVER_SEEN}"),
        ({"display": f"Patient {UNKNOWN_PATIENT}^"}, "a patient pseudonym"),
    ],
)
def test_a_single_unidentifiable_resource_raises(
    fhir: FhirTranslator, part: Resource, why: str
) -> None:
    with pytest.raises(Unidentifiable, match="is not in this gateway's") as raised:
        fhir.reidentify({"resourceType": "Task", "for": part})
    assert isinstance(raised.value, NotFound)
    assert str(raised.value).startswith(why)


def test_a_string_that_only_looks_like_a_pseudonym_stays(fhir: FhirTranslator) -> None:
    a = world().a
    pseudo, study = a.patient.pseudo_id, a.study.pseudo_study_uid
    texts = [f"x{pseudo}", f"{pseudo}A", f"-{pseudo}", "pat-" + "0" * 23, "2.25.0", "x"]
    texts += ["a-pat-" + "0" * 24, "pat-" + "0" * 24 + "x", f"1.{study}", f"9{study}"]
    texts += [f"{study}1" if len(study) == 44 else "x"]
    resource = {"resourceType": "Task", "note": [{"text": t} for t in texts]}
    assert fhir.reidentify(resource) == resource


def test_links_outside_the_hub_stay(fhir: FhirTranslator) -> None:
    resource = {"resourceType": "Task", "note": [{"text": "see https://hub.example.org/x"}]}
    resource["url"] = "https://hub.example.org/fhir/Task/1"
    assert fhir.reidentify(resource) == resource
    plain = FhirTranslator(MemoryIdentities(), KEY, PROFILE, GATEWAY + "/dicomweb")
    linked = {"resourceType": "Task", "url": f"{HUB}/fhir/Task/1"}
    assert plain.reidentify(linked) == linked


# -- re-identification: Bundles ----------------------------------------------------------------


def test_a_bundle_drops_unidentifiable_entries_and_lowers_total(fhir: FhirTranslator) -> None:
    a = world().a
    unknown = {"resourceType": "Task", "for": {"reference": "Patient/pat-" + "0" * 24}}
    bundle: Resource = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 3,
        "entry": [
            {"fullUrl": "no resource"},
            {"resource": unknown},
            {"resource": unknown, "search": {"mode": "match"}},
            {
                "fullUrl": f"{HUB}/fhir/ImagingStudy/{a.study.pseudo_study_uid}",
                "resource": a.hub_study,
                "search": {"mode": "match"},
            },
            {"resource": unknown, "search": {"mode": "include"}},
        ],
    }
    result = fhir.reidentify(bundle)
    assert result["total"] == 1
    [entry] = result["entry"]
    assert entry["resource"]["id"] == a.original.StudyInstanceUID
    assert entry["search"] == {"mode": "match"}
    assert bundle["entry"][3]["resource"] is a.hub_study


def test_a_bundle_of_nothing_identifiable_has_no_entries(fhir: FhirTranslator) -> None:
    unknown = {"resourceType": "Task", "for": {"reference": "Patient/pat-" + "0" * 24}}
    bundle = {"resourceType": "Bundle", "total": 1, "entry": [{"resource": unknown}] * 2}
    assert fhir.reidentify(bundle) == {"resourceType": "Bundle", "total": 0}
    no_total = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": unknown}]}
    assert fhir.reidentify(no_total) == {"resourceType": "Bundle", "type": "history"}
    odd_total = {"resourceType": "Bundle", "total": "2", "entry": []}
    assert fhir.reidentify(odd_total) == {"resourceType": "Bundle", "total": "2"}
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    assert fhir.reidentify(empty) == empty


def test_only_trailing_slashes_are_cut_from_the_bases(ids: MemoryIdentities) -> None:
    a = world().a
    fhir = FhirTranslator(ids, KEY, PROFILE, GATEWAY + "/AX/", hub_base=HUB + "/BX//")
    assert fhir.reidentify(a.hub_study)["contained"][0]["address"] == GATEWAY + "/AX"
    linked = {"resourceType": "Task", "url": f"{HUB}/BX/fhir/Task/1"}
    assert fhir.reidentify(linked)["url"] == f"{GATEWAY}/AX/fhir/Task/1"
