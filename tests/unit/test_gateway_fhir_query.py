"""Pseudonymisation of the EPD's bodies and searches at the gateway, without a hub
(:meth:`aifi.gateway.fhir.translate.FhirTranslator.pseudonymise_resource`,
:meth:`~aifi.gateway.fhir.translate.FhirTranslator.pseudonymise_query` and
:mod:`aifi.gateway.fhir.query`; FHIR R4 search.html, PS3.15 E.3.6 for date shifts). Over the
in-memory map of :mod:`tests.support.fhir_translation`.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from aifi.errors import InvalidRequest, Unprocessable
from aifi.fhir.codes import DICOM_UID_SYSTEM, PATIENT_ID_SYSTEM, uid_identifier
from aifi.fhir.mapping.imaging import patient_id
from aifi.fhir.search import parse_search
from aifi.fhir.types import Criterion
from aifi.fhir.views import PatientView
from aifi.gateway.deid import PatientIdentity
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.fhir.query import (
    hub_patient_id,
    matches_date,
    precision_text,
    serialise,
    shift_fhir_datetime,
)
from aifi.gateway.fhir.translate import FhirTranslator
from tests.support.fhir_translation import (
    GATEWAY,
    KEY,
    PROFILE,
    MemoryIdentities,
    Resource,
    acsn,
    translator_over,
    world,
)

PID = PATIENT_ID_SYSTEM
COUNT = ("_count", "50")
KEYED = Keyed(KEY)


@pytest.fixture
def ids() -> MemoryIdentities:
    w = world()
    return MemoryIdentities(w.a, w.b, w.c)


@pytest.fixture
def fhir(ids: MemoryIdentities) -> FhirTranslator:
    return translator_over(ids)


# -- pseudonymisation of bodies ----------------------------------------------------------------


def test_a_task_body_gets_the_hubs_pseudonyms(fhir: FhirTranslator) -> None:
    a, c = world().a, world().c
    study_uid = str(a.original.StudyInstanceUID)
    task: Resource = {
        "resourceType": "Task",
        "focus": {"reference": f"{GATEWAY}/fhir/ImagingStudy/{study_uid}"},
        "for": {
            "reference": f"Patient/{c.gateway_patient}",
            "identifier": {"system": f"{PATIENT_ID_SYSTEM}:HOSP-A", "value": "MRN-42"},
        },
        "basedOn": [{"reference": "ServiceRequest/sr-1"}, {"reference": "#contained"}],
        "input": [
            {"valueIdentifier": acsn("ACC-7731")},
            {"valueIdentifier": uid_identifier(study_uid)},
            {"valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": study_uid}},
            {"valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": 7}},
            {"valueIdentifier": {"system": PATIENT_ID_SYSTEM, "value": ""}},
            {"valueIdentifier": {"type": acsn("")["type"], "value": ""}},
            {"valueString": "MRN-42"},
        ],
    }
    body = fhir.pseudonymise_resource(task)
    assert body["focus"] == {"reference": f"ImagingStudy/{a.study.pseudo_study_uid}"}
    assert body["for"] == {
        "reference": f"Patient/{c.hub_patient}",
        "identifier": {"system": PATIENT_ID_SYSTEM, "value": c.patient.pseudo_id},
    }
    assert body["basedOn"] == task["basedOn"]
    pseudo_uid = uid_identifier(a.study.pseudo_study_uid)
    assert [i["valueIdentifier"] for i in body["input"][:3]] == [
        acsn(a.study.accession_pseudo),
        pseudo_uid,
        pseudo_uid,
    ]
    assert body["input"][3:] == task["input"][3:]
    assert task["focus"]["reference"].endswith(study_uid)  # the EPD's body is left as it was


def test_a_patient_without_issuer_and_an_unknown_patient_reference(fhir: FhirTranslator) -> None:
    b = world().b
    request: Resource = {
        "resourceType": "ServiceRequest",
        "subject": {
            "reference": "Patient/pat-000000000000000000000000",
            "identifier": {"system": PATIENT_ID_SYSTEM, "value": "MRN-7731"},
        },
        "requester": {"reference": "Patient/" + b.gateway_patient},
    }
    body = fhir.pseudonymise_resource(request)
    assert body["subject"] == {
        "identifier": {"system": PATIENT_ID_SYSTEM, "value": b.patient.pseudo_id},
    }
    assert body["requester"] == {"reference": "Patient/" + b.hub_patient}
    # a hub id is not a gateway Patient id: without an identifier the body is refused
    unknown = {**request, "performer": [{"reference": "Patient/" + b.hub_patient}]}
    with pytest.raises(Unprocessable, match="not known at this gateway"):
        fhir.pseudonymise_resource(unknown)


def test_free_text_does_not_leave_the_hospital(fhir: FhirTranslator) -> None:
    b = world().b
    task: Resource = {
        "resourceType": "Task",
        "text": {"status": "generated", "div": "<div>Jan Jansen, MRN-7731</div>"},
        "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": "Jansen"}]}],
        "description": "AI for Jan Jansen",
        "note": [{"text": "patient Jansen fell"}],
        "reasonCode": {
            "coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Fall"}],
            "text": "Jansen fell",
        },
        "for": {"reference": "Patient/" + b.gateway_patient, "display": "Jansen, Jan"},
    }
    body = fhir.pseudonymise_resource(task)
    assert "Jansen" not in json.dumps(body)
    assert body["reasonCode"]["coding"][0]["display"] == "Fall"  # terminology stays
    assert body["for"] == {"reference": "Patient/" + b.hub_patient}


def test_a_system_that_only_starts_like_the_patient_system_is_not_a_patient_id(
    fhir: FhirTranslator,
) -> None:
    other = {"system": PATIENT_ID_SYSTEM + "s", "value": "MRN-7731"}
    body = {"resourceType": "ServiceRequest", "identifier": [other]}
    assert fhir.pseudonymise_resource(body) == body
    ids = MemoryIdentities()
    translator_over(ids).remember(body)
    assert ids.patients == {}


def test_remember_records_what_an_epd_body_names(fhir: FhirTranslator) -> None:
    ids = MemoryIdentities()
    translator = translator_over(ids)
    keyed = Keyed(KEY)
    request: Resource = {
        "resourceType": "Task",
        "focus": {"reference": "ImagingStudy/1.2.3.4.5"},
        "basedOn": [{"reference": "ServiceRequest/1.2.3"}, {"reference": 5}],
        "input": [
            {"valueIdentifier": uid_identifier("1.2.3.4.6")},
            {"valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": "1.2.3.4.7"}},
            {"valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": 8}},
            {"valueIdentifier": acsn("ACC-NEW")},
            {"valueIdentifier": acsn("")},
            {"valueIdentifier": {**acsn(""), "value": 9}},
        ],
        "for": {"identifier": {"system": f"{PATIENT_ID_SYSTEM}:HOSP-B", "value": "MRN-9"}},
        "owner": {"identifier": {"system": PATIENT_ID_SYSTEM, "value": "MRN-10"}},
        "requester": {"identifier": {"system": PATIENT_ID_SYSTEM, "value": ""}},
        "note": [[{"identifier": {"system": PATIENT_ID_SYSTEM, "value": 11}}]],
        "restriction": {"recipient": [{"identifier": {"system": PATIENT_ID_SYSTEM, "value": "M"}}]},
    }
    translator.remember(request)
    assert ids.uids == {keyed.uid(u): u for u in ("1.2.3.4.5", "1.2.3.4.6", "1.2.3.4.7")}
    assert ids.accessions == {keyed.accession("ACC-NEW"): "ACC-NEW"}
    world_a = world().a  # the pseudonymiser's own pseudonym of a Patient ID and issuer
    assert translator.pseudo_patient("MRN-7731", "HOSP-A") == world_a.patient.pseudo_id
    assert ids.patients == {
        translator.pseudo_patient("MRN-9", "HOSP-B"): PatientIdentity(
            translator.pseudo_patient("MRN-9", "HOSP-B"), "MRN-9", "HOSP-B", 0
        ),
        translator.pseudo_patient("MRN-10", ""): PatientIdentity(
            translator.pseudo_patient("MRN-10", ""), "MRN-10", "", 0
        ),
        translator.pseudo_patient("M", ""): PatientIdentity(
            translator.pseudo_patient("M", ""), "M", "", 0
        ),
    }
    # What was remembered re-identifies the hub's answer to the body.
    named = {k: request[k] for k in ("resourceType", "focus", "for", "owner")}
    named["input"] = request["input"][:4]
    back = translator.reidentify(translator.pseudonymise_resource(named))
    assert back["input"][1]["valueIdentifier"] == uid_identifier("1.2.3.4.7")  # urn:oid: form
    back["input"][1] = named["input"][1]
    assert back == named


def test_subscription_criteria_are_pseudonymised_as_a_search(fhir: FhirTranslator) -> None:
    a = world().a
    subscription = {
        "resourceType": "Subscription",
        "criteria": f"DiagnosticReport?patient:identifier={PATIENT_ID_SYSTEM}:HOSP-A|MRN-7731"
        "&status=final&_count=5&_offset=10&foo=bar",
        "channel": {"type": "rest-hook", "endpoint": "https://epd.example/hook"},
    }
    body = fhir.pseudonymise_resource(subscription)
    assert body["criteria"] == (
        "DiagnosticReport?patient%3Aidentifier="
        f"{PATIENT_ID_SYSTEM.replace(':', '%3A')}%7C{a.patient.pseudo_id}&status=final"
    )
    assert body["channel"] == subscription["channel"]
    assert fhir.pseudonymise_criteria("Task") == "Task"
    assert fhir.pseudonymise_criteria("Task?_count=3") == "Task"
    assert fhir.pseudonymise_criteria("Task?patient:identifier=MRN-NONE") == (
        "Task?_id=unknown-to-this-gateway"
    )
    other = {"resourceType": "Basic", "criteria": "Task?patient:identifier=MRN-NONE"}
    assert fhir.pseudonymise_resource(other) == other
    odd = {"resourceType": "Subscription", "criteria": 5}
    assert fhir.pseudonymise_resource(odd) == odd


def test_blank_criteria_values_are_refused_not_dropped(fhir: FhirTranslator) -> None:
    with pytest.raises(InvalidRequest):
        fhir.pseudonymise_criteria("Task?status=")


# -- searches: patients -------------------------------------------------------------------------


def _hub(fhir: FhirTranslator, kind: str, *params: tuple[str, str]) -> list[tuple[str, str]] | None:
    return fhir.pseudonymise_query(kind, list(params))


def test_a_patient_by_reference_or_id(fhir: FhirTranslator) -> None:
    a = world().a
    hub_ref = ("patient", f"Patient/{a.hub_patient}")
    assert _hub(fhir, "Task", ("patient", f"Patient/{a.gateway_patient}")) == [hub_ref, COUNT]
    assert _hub(fhir, "Task", ("patient", a.gateway_patient)) == [hub_ref, COUNT]
    assert _hub(fhir, "Task", ("subject", a.gateway_patient)) == [("subject", a.hub_patient), COUNT]
    assert _hub(fhir, "Patient", ("_id", a.gateway_patient)) == [("_id", a.hub_patient), COUNT]
    assert hub_patient_id(a.patient.pseudo_id) == patient_id(PatientView(a.patient.pseudo_id))


def test_a_patient_by_identifier_with_and_without_system(fhir: FhirTranslator) -> None:
    a, b, c = world().a, world().b, world().c
    with_issuer = _hub(fhir, "DiagnosticReport", ("patient:identifier", f"{PID}:HOSP-A|MRN-7731"))
    assert with_issuer == [("patient:identifier", f"{PID}|{a.patient.pseudo_id}"), COUNT]
    without_issuer = _hub(fhir, "Task", ("subject:identifier", f"{PID}|MRN-7731"))
    assert without_issuer == [("subject:identifier", f"{PID}|{b.patient.pseudo_id}"), COUNT]
    any_issuer = _hub(fhir, "Task", ("patient:identifier", "MRN-7731"))
    both = f"{PID}|{a.patient.pseudo_id},{PID}|{b.patient.pseudo_id}"
    assert any_issuer == [("patient:identifier", both), COUNT]
    no_system = _hub(fhir, "Patient", ("identifier", "|MRN-42"))
    assert no_system == [("identifier", f"{PID}|{c.patient.pseudo_id}"), COUNT]
    some_known = _hub(fhir, "Task", ("patient:identifier", "MRN-NONE,MRN-42"))
    assert some_known == [("patient:identifier", f"{PID}|{c.patient.pseudo_id}"), COUNT]


@pytest.mark.parametrize(
    ("kind", "param", "value"),
    [
        ("Task", "patient:identifier", "MRN-NONE"),
        ("Task", "patient:identifier", "http://other.example|MRN-7731"),
        ("DiagnosticReport", "patient", "Patient/pat-000000000000000000000000"),
        ("Patient", "_id", "pat-000000000000000000000000"),
        ("Patient", "identifier", "MRN-NONE"),
    ],
)
def test_an_unknown_patient_finds_nothing(
    fhir: FhirTranslator, kind: str, param: str, value: str
) -> None:
    assert _hub(fhir, kind, ("status", "final"), (param, value), ("code", "x")) is None


# -- searches: studies, accessions, orders, other references ------------------------------------


def test_study_uids_accessions_and_ids(fhir: FhirTranslator) -> None:
    a = world().a
    uid, pseudo = str(a.original.StudyInstanceUID), a.study.pseudo_study_uid
    acc = a.study.accession_pseudo
    cases = {
        ("ImagingStudy", "identifier", f"{DICOM_UID_SYSTEM}|urn:oid:{uid}"): (
            f"{DICOM_UID_SYSTEM}|urn:oid:{pseudo}"
        ),
        ("ImagingStudy", "identifier", f"{DICOM_UID_SYSTEM}|{uid}"): (
            f"{DICOM_UID_SYSTEM}|urn:oid:{pseudo}"
        ),
        ("ImagingStudy", "identifier", f"urn:oid:{uid}"): f"urn:oid:{pseudo}",
        ("ImagingStudy", "identifier", "ACC-7731"): acc,
        ("ImagingStudy", "identifier", "|ACC-7731"): f"|{acc}",
        ("ImagingStudy", "identifier", "http://ris.example|ACC-7731"): f"http://ris.example|{acc}",
        ("ImagingStudy", "_id", uid): pseudo,
        ("ImagingStudy", "_id", "1.2.3.4.5"): KEYED.uid("1.2.3.4.5"),  # not seen: still computed
        ("ServiceRequest", "identifier", "ACC-7731"): acc,
        ("ServiceRequest", "identifier", f"{DICOM_UID_SYSTEM}|urn:oid:{uid}"): (
            f"{DICOM_UID_SYSTEM}|urn:oid:{pseudo}"
        ),
        ("ServiceRequest", "identifier", "http://epd.example|ORD\\,1\\$2"): (
            "http://epd.example|ORD\\,1\\$2"
        ),
        ("Task", "focus", f"ImagingStudy/{uid}"): f"ImagingStudy/{pseudo}",
        ("Task", "focus", uid): pseudo,
        ("Task", "focus", "123"): "123",
        ("Task", "focus", "order-1"): "order-1",
        ("Task", "focus", "ServiceRequest/sr-1"): "ServiceRequest/sr-1",
        ("Task", "focus:identifier", "ACC-7731"): acc,
        ("Task", "focus:identifier", f"{DICOM_UID_SYSTEM}|urn:oid:{uid}"): (
            f"{DICOM_UID_SYSTEM}|urn:oid:{pseudo}"
        ),
        ("Task", "based-on", "ServiceRequest/sr-1"): "ServiceRequest/sr-1",
        ("Task", "based-on:identifier", "|ACC-7731"): f"|{acc}",
        ("Task", "_id", "task-1"): "task-1",
        ("Task", "identifier", "wi-1"): "wi-1",
        ("Patient", "_lastUpdated", "ge2026"): "ge2026",
        ("ImagingStudy", "identifier:missing", "true"): "true",
        ("Task", "patient:missing", "true"): "true",
        ("Task", "status:not", "completed"): "completed",
        ("DiagnosticReport", "result", "Observation/o-1"): "Observation/o-1",
        ("Device", "manufacturer", "Acme\\, Inc"): "acme\\, inc",
        ("Device", "device-name:exact", "Bone\\|Age"): "Bone\\|Age",
    }
    for (kind, param, value), expected in cases.items():
        assert _hub(fhir, kind, (param, value)) == [(param, expected), COUNT], (kind, param)


def test_unknown_chained_and_unsupported_parameters_are_not_sent(fhir: FhirTranslator) -> None:
    params = [
        ("subject.identifier", "MRN-7731"),
        ("foo", "MRN-7731"),
        ("status:exact", "MRN-7731"),
        ("_summary", "text"),
        ("_sort", "status"),
        ("_include", "Task:nothing"),
        ("status", "completed"),
    ]
    assert _hub(fhir, "Task", *params) == [("status", "completed"), COUNT]


def test_result_parameters_pass(fhir: FhirTranslator) -> None:
    params = [
        ("code", "x"),
        ("_count", "5"),
        ("_offset", "10"),
        ("_include", "DiagnosticReport:result"),
        ("_include", "DiagnosticReport:subject"),
        ("_sort", "-date"),
        ("_sort", "_lastUpdated"),
        ("_summary", "count"),
        ("_total", "accurate"),
    ]
    assert _hub(fhir, "DiagnosticReport", *params) == [
        ("code", "x"),
        ("_count", "5"),
        ("_offset", "10"),
        ("_include", "DiagnosticReport:result"),
        ("_include", "DiagnosticReport:subject"),
        ("_sort", "-date,_lastUpdated"),
        ("_summary", "count"),
    ]
    assert _hub(fhir, "Task", ("_offset", "0"), ("_summary", "false")) == [COUNT]


# -- searches: ImagingStudy.started ---------------------------------------------------------------


def _days(text: str, days: int) -> str:
    return (date.fromisoformat(text) + timedelta(days=days)).isoformat()


def test_started_with_one_patient_is_shifted_by_their_offset(fhir: FhirTranslator) -> None:
    a = world().a
    offset = a.patient.date_offset_days
    moved = _days("2026-01-15", offset)
    ident = ("patient:identifier", f"{PID}|{a.patient.pseudo_id}")
    for given, sent in [
        ("2026-01-15", f"eq{moved}"),
        ("ge2026-01-15T10:15:00Z", f"ge{moved}T10:15:00Z"),
        ("lt2026-01-15T10:15+01:00", f"lt{moved}T09:15Z"),
        ("ap2026-01-15", f"eq{moved}"),
    ]:
        params = [("status", "available"), ("started", given)]
        hub = _hub(fhir, "ImagingStudy", *params, ("patient:identifier", f"{PID}:HOSP-A|MRN-7731"))
        assert hub == [("status", "available"), ("started", sent), ident, COUNT], given
    # the same patient named twice, by reference and by identifier: still one offset
    twice = [("subject", a.gateway_patient), ("started", "2026-01-15")]
    twice.append(("patient:identifier", f"{PID}:HOSP-A|MRN-7731"))
    hub = _hub(fhir, "ImagingStudy", *twice)
    assert hub == [("subject", a.hub_patient), ("started", f"eq{moved}"), ident, COUNT]
    by_reference = [("started", "2026-01-15"), ("patient", f"Patient/{a.gateway_patient}")]
    hub = _hub(fhir, "ImagingStudy", *by_reference)
    assert hub == [("started", f"eq{moved}"), ("patient", f"Patient/{a.hub_patient}"), COUNT]
    missing = _hub(fhir, "ImagingStudy", ("started:missing", "false"), ("subject", "x"))
    assert missing == [("started:missing", "false"), ("subject", "x"), COUNT]


def _widened(low: str, high: str) -> tuple[str, str]:
    first = datetime.fromisoformat(low) + timedelta(days=PROFILE.date_offset_min_days)
    last = datetime.fromisoformat(high) + timedelta(days=PROFILE.date_offset_max_days)
    return f"ge{first.isoformat()}Z", f"le{last.isoformat()}Z"


def test_started_without_one_patient_is_widened_and_filtered(fhir: FhirTranslator) -> None:
    ge, le = _widened("2026-01-15T00:00:00", "2026-01-15T23:59:59")
    for given, sent in [
        ("2026-01-15", [ge, le]),
        ("ge2026-01-15", [ge]),
        ("gt2026-01-15", [ge]),
        ("sa2026-01-15", [ge]),
        ("le2026-01-15", [le]),
        ("lt2026-01-15", [le]),
        ("eb2026-01-15", [le]),
        ("ne2026-01-15", []),
        ("2026-01-15,2026-02-01", []),
    ]:
        query = parse_search(
            "ImagingStudy", [("started", given), ("_summary", "count")], strict=False
        )
        search = fhir.pseudonymise_search(query)
        assert search is not None
        assert search.params == [("started", s) for s in sent], given
        assert search.post_filter == (query.criteria[0],)
    a, b = world().a, world().b
    assert a.patient.date_offset_days != b.patient.date_offset_days
    month = _widened("2026-01-01T00:00:00", "2026-01-31T23:59:59")
    for patient in [
        ("patient:identifier", "MRN-7731"),  # two patients, two offsets
        ("patient:missing", "false"),
        ("patient", f"Patient/{a.gateway_patient}"),  # month precision: no exact shift
    ]:
        hub = _hub(fhir, "ImagingStudy", patient, ("started", "2026-01"), ("_count", "9"))
        assert hub is not None and hub[-2:] == [("started", month[0]), ("started", month[1])]
    assert (
        _hub(fhir, "ImagingStudy", ("patient:identifier", "MRN-NONE"), ("started", "2026")) is None
    )
    assert _hub(fhir, "Task", ("authored-on", "2026-01")) == [("authored-on", "eq2026-01"), COUNT]


def test_a_started_range_without_a_patient_is_filtered_by_both_ends(fhir: FhirTranslator) -> None:
    """``started=ge..&started=le..`` (search.html#combining: ANDed): the re-identified
    studies must meet both criteria, not only the last one."""
    params = [("started", "ge2026-01-10"), ("started", "le2026-01-31")]
    query = parse_search("ImagingStudy", params, strict=False)
    search = fhir.pseudonymise_search(query)
    assert search is not None and search.post_filter == query.criteria
    ge = _widened("2026-01-10T00:00:00", "2026-01-10T23:59:59")[0]
    le = _widened("2026-01-31T00:00:00", "2026-01-31T23:59:59")[1]
    assert search.params == [("started", ge), ("started", le)]
    assert matches_date(search.post_filter, "2026-01-20T10:00:00Z")
    assert not matches_date(search.post_filter, "2025-06-01T10:00:00Z")
    assert not matches_date(search.post_filter, "2026-02-01T10:00:00Z")
    subject = ("subject", world().a.gateway_patient)
    with_patient = fhir.pseudonymise_search(
        parse_search("ImagingStudy", [*params, subject], strict=False)
    )
    assert with_patient is not None and with_patient.post_filter is None


# -- dates and criteria ---------------------------------------------------------------------------


def test_shift_fhir_datetime_moves_whole_days_in_the_same_form() -> None:
    assert shift_fhir_datetime("2024-03-01", -1) == "2024-02-29"
    assert shift_fhir_datetime("2024-02-29T23:30:00+01:00", 1) == "2024-03-01T23:30:00+01:00"
    assert shift_fhir_datetime("2024-03", -400) == "2024-03"
    assert shift_fhir_datetime("2024", 3) == "2024"


def test_precision_text_and_serialise() -> None:
    assert precision_text("2026-01-01T00:00:00", "2026-12-31T23:59:59") == "2026"
    assert precision_text("2026-02-01T00:00:00", "2026-02-28T23:59:59") == "2026-02"
    assert precision_text("2026-02-03T00:00:00", "2026-02-03T23:59:59") == "2026-02-03"
    assert precision_text("2026-02-03T04:05:00", "2026-02-03T04:05:59") == "2026-02-03T04:05Z"
    assert precision_text("2026-02-03T04:05:06", "2026-02-03T04:05:06") == "2026-02-03T04:05:06Z"
    assert precision_text("2026-02-03T00:00:00", "2026-02-04T23:59:59") is None
    odd = Criterion(
        "started",
        "date",
        (("ge", "2026-02-03T00:00:00"), ("lt", "2026-03-01T00:00:00")),
        bounds=(("2026-02-03T00:00:00", "2026-02-04T23:59:59"), ("2026-03-01T00:00:00",) * 2),
    )
    assert serialise(odd) == ("started", "ge2026-02-03T00:00:00Z,lt2026-03-01T00:00:00Z")
    token = Criterion("code", "token", ((None, "a,b"), ("", "c$"), ("s|x", "d\\e")))
    assert serialise(token) == ("code", "a\\,b,|c\\$,s\\|x|d\\\\e")


def _started(value: str) -> Criterion:
    return parse_search("ImagingStudy", [("started", value)], strict=True).criteria[0]


@pytest.mark.parametrize(
    ("criterion", "hits", "misses"),
    [
        ("2026-01-15", ["2026-01-15T10:15:00Z", "2026-01-15"], ["2026-01-16", "2026-01-14"]),
        ("ap2026-01-15", ["2026-01-15T23:59:59Z"], ["2026-01-16T00:00:00Z"]),
        ("ne2026-01-15", ["2026-01-16", "2026-01-14"], ["2026-01-15", "2026-01-15T23:59:59Z"]),
        ("gt2026-01-15", ["2026-01-16"], ["2026-01-15T23:59:59Z"]),
        ("sa2026-01-15", ["2026-01-16"], ["2026-01-15T23:59:59Z"]),
        ("lt2026-01-15", ["2026-01-14T23:59:59Z"], ["2026-01-15"]),
        ("eb2026-01-15", ["2026-01-14T23:59:59Z"], ["2026-01-15"]),
        ("ge2026-01-15", ["2026-01-15", "2026-02-01"], ["2026-01-14T23:59:59Z"]),
        ("le2026-01-15", ["2026-01-15T23:59:59Z", "2026-01"], ["2026-01-16"]),
        ("2026-01-01,2026-02-01", ["2026-02-01T05:00:00Z", "2026-01-01"], ["2026-01-02"]),
    ],
)
def test_matches_date_as_the_hubs_index(criterion: str, hits: list[str], misses: list[str]) -> None:
    parsed = _started(criterion)
    assert all(matches_date(parsed, value) for value in hits)
    assert not any(matches_date(parsed, value) for value in [*misses, None, "not a date"])


def test_matches_date_with_an_empty_or_unknown_prefix() -> None:
    parsed = _started("2026-01-15")
    bare = Criterion("started", "date", (("", parsed.values[0][1]),), bounds=parsed.bounds)
    assert matches_date(bare, "2026-01-15T12:00:00Z")
    assert not matches_date(bare, "2026-01-16")
    odd = Criterion("started", "date", (("zz", parsed.values[0][1]),), bounds=parsed.bounds)
    assert not matches_date(odd, "2026-01-15T12:00:00Z")
    assert not matches_date(odd, "2026-01-16")
