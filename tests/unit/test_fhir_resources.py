"""Validation of FHIR resources against the R4(B) models (aifi.fhir.resources): what a
client sends is accepted as R4 JSON or refused with the path of every problem; what the hub
emits round-trips unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from aifi.errors import InvalidRequest
from aifi.fhir.resources import InvalidResource, operation_outcome, parse_resource, validated


def epd_task(**changes) -> dict[str, Any]:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
        "authoredOn": "2024-05-02T10:15:00+02:00",
        "lastModified": "2024-05-02T08:15:00.250000+00:00",
    }
    task.update(changes)
    return task


def test_a_valid_task_comes_back_as_r4_json():
    parsed = parse_resource(epd_task(), expected_type="Task")
    assert parsed["status"] == "requested"
    assert parsed["authoredOn"] == "2024-05-02T10:15:00+02:00"
    assert parsed["lastModified"] == "2024-05-02T08:15:00.250000Z"
    assert parsed["code"]["coding"][0]["code"] == "AIFI-BONEAGE"


def test_decimals_stay_json_numbers():
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Bone age"},
        "valueQuantity": {"value": 10.5, "unit": "a"},
    }
    assert parse_resource(obs)["valueQuantity"]["value"] == 10.5


def test_empty_lists_are_dropped_when_reading():
    assert "note" not in parse_resource(epd_task(note=[]))


@pytest.mark.parametrize(
    ("data", "expected", "message"),
    [
        ([1, 2], "Task", "JSON object"),
        ({"status": "requested"}, "Task", "resourceType is missing"),
        ({"resourceType": "Foo"}, None, "Unknown resource type 'Foo'"),
        ({"resourceType": "Coding", "code": "x"}, None, "Unknown resource type 'Coding'"),
        (epd_task(), "ServiceRequest", "resourceType must be 'ServiceRequest', not 'Task'"),
    ],
)
def test_not_a_resource_of_the_expected_type(data, expected, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_resource(data, expected_type=expected)


def test_each_invalid_element_is_named_by_its_path():
    task = epd_task(
        input=[{"type": {"coding": [{"system": 7, "colour": "red"}]}, "valueString": "x"}]
    )
    with pytest.raises(InvalidResource) as caught:
        parse_resource(task, expected_type="Task")
    reason = caught.value.reason
    assert "Task.input[0].type.coding[0].system: Input should be a valid string" in reason
    assert "Task.input[0].type.coding[0].colour: Extra inputs are not permitted" in reason
    assert caught.value.issue_code == "structure"
    assert caught.value.expressions == [
        "Task.input[0].type.coding[0].system",
        "Task.input[0].type.coding[0].colour",
    ]


def test_missing_required_element_is_issue_type_required():
    task = epd_task()
    del task["intent"]
    with pytest.raises(InvalidResource, match=r"Task\.intent") as caught:
        parse_resource(task)
    assert caught.value.issue_code == "required"


def test_a_time_without_zone_is_a_bad_value():
    with pytest.raises(InvalidResource, match=r"Task\.authoredOn") as caught:
        parse_resource(epd_task(authoredOn="2024-05-02T10:15:00"))
    assert caught.value.issue_code == "value"


def test_codes_outside_a_required_binding_are_refused():
    with pytest.raises(InvalidResource, match=r"Task.status: 'bogus' is not one of") as caught:
        parse_resource(epd_task(status="bogus"))
    assert caught.value.issue_code == "value"
    assert caught.value.expressions == ["Task.status"]
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "results",
        "criteria": "DiagnosticReport?status=final",
        "channel": {"type": "carrier-pigeon", "endpoint": "https://epd.example/hook"},
    }
    with pytest.raises(InvalidResource, match=r"Subscription.channel.type: 'carrier-pigeon'"):
        parse_resource(subscription)


def test_r4b_only_bundle_type_is_not_r4():
    bundle = {"resourceType": "Bundle", "type": "subscription-notification"}
    with pytest.raises(InvalidResource, match=r"Bundle\.type"):
        parse_resource(bundle)
    assert parse_resource({"resourceType": "Bundle", "type": "history"})["type"] == "history"


def test_ids_longer_than_64_characters_are_refused():
    with pytest.raises(InvalidResource, match=r"Task\.id"):
        parse_resource(epd_task(id="1" * 65))
    assert parse_resource(epd_task(id="1.2." + "3" * 60))["id"] == "1.2." + "3" * 60


def test_validated_returns_an_unchanged_copy_or_raises_value_error():
    task = epd_task(id="t1", lastModified="2024-05-02T08:15:00Z")
    assert validated(task) == task
    with pytest.raises(ValueError, match=r"Task\.intent"):
        validated({k: v for k, v in task.items() if k != "intent"})


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"note": []}, "Task.note"),
        ({"code": {}}, "Task.code"),
        ({"description": ""}, "Task.description"),
    ],
)
def test_validated_refuses_empty_elements(change, path):
    with pytest.raises(ValueError, match=path):
        validated(epd_task(**change))


def test_operation_outcome_is_valid():
    outcome = operation_outcome(
        "required", "Task.intent: missing", expression=["Task.intent"], severity="error"
    )
    assert validated(outcome) == outcome
    assert outcome["issue"] == [
        {
            "severity": "error",
            "code": "required",
            "diagnostics": "Task.intent: missing",
            "expression": ["Task.intent"],
        }
    ]
    assert "expression" not in operation_outcome("not-found", "no such Task")["issue"][0]
