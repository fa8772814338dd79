"""The FHIR search parser and index extraction (FHIR R4 search.html), without a database."""

from __future__ import annotations

import pytest

from aifi.errors import InvalidRequest, NotAcceptable
from aifi.fhir.search import SEARCH_PARAMS, date_range, index_entries, parse_search
from aifi.fhir.types import Criterion

UID = "1.2.826.0.1.3680043.8.498.1"


def one(resource_type: str, name: str, value: str, *, strict: bool = True) -> Criterion:
    query = parse_search(resource_type, [(name, value)], strict=strict)
    assert len(query.criteria) == 1
    return query.criteria[0]


# --- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("final", (None, "final")),
        ("urn:aifi:product|AIFI-BONEAGE", ("urn:aifi:product", "AIFI-BONEAGE")),
        ("|A123", ("", "A123")),
        ("urn:dicom:uid|", ("urn:dicom:uid", "")),
        (r"urn:x|a\|b", ("urn:x", "a|b")),
    ],
)
def test_token_forms(text, expected):
    assert one("DiagnosticReport", "code", text).values == (expected,)


def test_comma_ors_and_repetition_ands():
    query = parse_search(
        "Task", [("status", "ready,in-progress"), ("code", "urn:aifi:product|X")], strict=True
    )
    assert [c.param for c in query.criteria] == ["status", "code"]
    assert query.criteria[0].values == ((None, "ready"), (None, "in-progress"))


def test_escaped_comma_is_part_of_the_value():
    assert one("Device", "manufacturer", r"Acme\, Inc").values == (("", "acme, inc"),)


def test_not_modifier_on_a_token():
    criterion = one("Task", "status:not", "completed")
    assert criterion.modifier == "not"
    assert criterion.values == ((None, "completed"),)


# --- references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("patient", "pat-1", "Patient/pat-1"),
        ("patient", "Patient/pat-1", "Patient/pat-1"),
        ("patient", "https://hub.example/fhir/Patient/pat-1", "Patient/pat-1"),
        ("result", f"{UID}-1", f"Observation/{UID}-1"),
        ("based-on", "Task/abc", "Task/abc"),
        ("based-on", "abc", "abc"),  # several target types: any type with that id
        ("subject:Patient", "pat-1", "Patient/pat-1"),
    ],
)
def test_reference_forms(name, text, expected):
    criterion = one("DiagnosticReport", name, text)
    assert criterion.values == (("", expected),)
    assert criterion.modifier is None


def test_a_reference_to_the_wrong_type_is_refused():
    with pytest.raises(InvalidRequest, match="patient"):
        parse_search("Task", [("patient", "Device/AIFI-BONEAGE")], strict=False)


def test_identifier_modifier_takes_a_token():
    criterion = one("Task", "patient:identifier", "urn:aifi:patient-id|P1")
    assert criterion.modifier == "identifier"
    assert criterion.values == (("urn:aifi:patient-id", "P1"),)


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lower", "upper"),
    [
        ("2024", "2024-01-01T00:00:00", "2024-12-31T23:59:59"),
        ("2024-02", "2024-02-01T00:00:00", "2024-02-29T23:59:59"),
        ("2024-12", "2024-12-01T00:00:00", "2024-12-31T23:59:59"),
        ("2024-03-05", "2024-03-05T00:00:00", "2024-03-05T23:59:59"),
        ("2024-03-05T10:15", "2024-03-05T10:15:00", "2024-03-05T10:15:59"),
        ("2024-03-05T10:15:30Z", "2024-03-05T10:15:30", "2024-03-05T10:15:30"),
        ("2024-03-05T10:15:30.250+02:00", "2024-03-05T08:15:30", "2024-03-05T08:15:30"),
    ],
)
def test_date_precision_gives_utc_bounds(text, lower, upper):
    criterion = one("DiagnosticReport", "date", text)
    assert criterion.values == (("eq", lower),)
    assert criterion.bounds == ((lower, upper),)


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_date_prefixes(prefix):
    criterion = one("Task", "authored-on", f"{prefix}2024-03-05")
    assert criterion.values == ((prefix, "2024-03-05T00:00:00"),)


def test_ap_is_treated_as_eq():
    assert one("Task", "modified", "ap2024").values == (("eq", "2024-01-01T00:00:00"),)


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01", "2024-3-5", "gt"])
def test_a_bad_date_is_an_error_even_when_lenient(bad):
    with pytest.raises(InvalidRequest, match="authored-on"):
        parse_search("Task", [("authored-on", bad)], strict=False)


def test_last_updated_is_a_date_for_every_type():
    for resource_type in SEARCH_PARAMS:
        criterion = one(resource_type, "_lastUpdated", "ge2024-01-01")
        assert criterion.kind == "date"


# --- strings --------------------------------------------------------------------------------


def test_strings_fold_case_and_accents():
    assert one("Device", "device-name", "BÖNE").values == (("", "bone"),)


def test_exact_keeps_the_text_and_contains_is_a_modifier():
    assert one("Device", "device-name:exact", "BoneAge").values == (("", "BoneAge"),)
    assert one("Device", "manufacturer:contains", "Med").modifier == "contains"


# --- result parameters ----------------------------------------------------------------------


def test_result_parameters():
    query = parse_search(
        "DiagnosticReport",
        [
            ("_count", "10"),
            ("_offset", "20"),
            ("_include", "DiagnosticReport:result"),
            ("_sort", "-date,_lastUpdated"),
            ("_total", "accurate"),
            ("_format", "application/fhir+json"),
        ],
        strict=True,
    )
    assert (query.count, query.offset) == (10, 20)
    assert query.include == ("DiagnosticReport:result",)
    assert query.sort == ("-date", "_lastUpdated")
    assert query.criteria == ()
    assert not query.summary_count


def test_count_defaults_to_50_and_is_capped_at_500():
    assert parse_search("Task", [], strict=True).count == 50
    assert parse_search("Task", [("_count", "9999")], strict=True).count == 500
    assert parse_search("Task", [("_count", "0")], strict=True).count == 0


@pytest.mark.parametrize("bad", ["-1", "ten", ""])
def test_a_bad_count_is_an_error(bad):
    with pytest.raises(InvalidRequest, match="_count"):
        parse_search("Task", [("_count", bad)], strict=False)


def test_summary_count():
    assert parse_search("Task", [("_summary", "count")], strict=True).summary_count


def test_format_other_than_json_is_not_acceptable():
    with pytest.raises(NotAcceptable):
        parse_search("Task", [("_format", "xml")], strict=False)


# --- strict and lenient handling ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("colour", "red", "colour"),
        ("status:text", "done", ":text"),
        ("patient:contains", "x", ":contains"),
        ("_include", "DiagnosticReport:status", "DiagnosticReport:status"),
        ("_include", "Observation:subject", "Observation:subject"),
        ("_sort", "status", "status"),
        ("_summary", "true", "_summary"),
        ("_elements", "id", "_elements"),
    ],
)
def test_strict_names_the_unsupported_parameter_and_lenient_skips_it(name, value, named):
    with pytest.raises(InvalidRequest, match=named):
        parse_search("DiagnosticReport", [(name, value)], strict=True)
    query = parse_search("DiagnosticReport", [(name, value), ("status", "final")], strict=False)
    assert query.ignored and named.strip(":") in " ".join(query.ignored)
    assert [c.param for c in query.criteria] == ["status"]


def test_an_unknown_type_cannot_be_searched():
    with pytest.raises(InvalidRequest, match="Basic"):
        parse_search("Basic", [], strict=False)


# --- the index ------------------------------------------------------------------------------


def test_index_entries_of_a_task():
    task = {
        "resourceType": "Task",
        "id": UID,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{UID}"}],
        "status": "in-progress",
        "businessStatus": {"coding": [{"system": "urn:dicom:ups-state", "code": "IN PROGRESS"}]},
        "intent": "order",
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "focus": {"reference": "ImagingStudy/1.2.3"},
        "for": {
            "reference": "https://hub.example/fhir/Patient/pat-abc/_history/2",
            "identifier": {"system": "urn:aifi:patient-id", "value": "P1"},
        },
        "owner": {"reference": "Device/AIFI-BONEAGE"},
        "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "authoredOn": "2024-03-05T10:15:30+01:00",
        "lastModified": "2024-03-05",
    }
    rows = set(index_entries(task))
    assert rows == {
        ("identifier", "urn:dicom:uid", f"urn:oid:{UID}"),
        ("status", "", "in-progress"),
        ("business-status", "urn:dicom:ups-state", "IN PROGRESS"),
        ("code", "urn:aifi:product", "AIFI-BONEAGE"),
        ("focus", "", "ImagingStudy/1.2.3"),
        ("patient", "", "Patient/pat-abc"),
        ("patient:identifier", "urn:aifi:patient-id", "P1"),
        ("subject", "", "Patient/pat-abc"),
        ("subject:identifier", "urn:aifi:patient-id", "P1"),
        ("owner", "", "Device/AIFI-BONEAGE"),
        ("based-on", "", "ServiceRequest/sr1"),
        ("authored-on", "", "2024-03-05T09:15:30"),
        ("modified", "", "2024-03-05T00:00:00"),
    }


def test_index_entries_of_a_report_and_an_observation():
    report = {
        "resourceType": "DiagnosticReport",
        "id": UID,
        "status": "final",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5"}]}],
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "subject": {"reference": "Patient/pat-abc"},
        "effectivePeriod": {"start": "2024-03-05T10:00:00Z"},
        "issued": "2024-03-05T11:00:00.123Z",
        "result": [{"reference": f"Observation/{UID}-1"}, {"reference": "#contained"}],
    }
    rows = set(index_entries(report))
    assert ("date", "", "2024-03-05T10:00:00") in rows
    assert ("issued", "", "2024-03-05T11:00:00") in rows
    assert ("result", "", f"Observation/{UID}-1") in rows
    assert ("category", "http://loinc.org", "LP29684-5") in rows
    assert not any(value == "#contained" for _, _, value in rows)

    observation = {
        "resourceType": "Observation",
        "id": f"{UID}-1",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "123"}]},
        "subject": {"reference": "Device/AIFI-BONEAGE"},
        "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "52101004"}]
        },
        "device": {"reference": "Device/AIFI-BONEAGE"},
        "derivedFrom": [{"reference": "ImagingStudy/1.2.3"}],
        "effectiveDateTime": "2024-03-05",
    }
    rows = set(index_entries(observation))
    assert ("value-concept", "http://snomed.info/sct", "52101004") in rows
    assert ("subject", "", "Device/AIFI-BONEAGE") in rows
    assert not any(p == "patient" for p, _, _ in rows)  # the subject is not a Patient
    assert ("date", "", "2024-03-05T00:00:00") in rows


def test_strings_are_indexed_folded_and_as_given():
    device = {
        "resourceType": "Device",
        "id": "AIFI-BONEAGE",
        "manufacturer": "Ünion Medical",
        "deviceName": [{"name": "BoneAge", "type": "model-name"}],
    }
    rows = set(index_entries(device))
    assert ("manufacturer", "", "union medical") in rows
    assert ("device-name:exact", "", "BoneAge") in rows


def test_date_range_of_a_leap_year_month():
    lower, upper = date_range("2023-02")
    assert (lower.day, upper.day, upper.hour) == (1, 28, 23)
