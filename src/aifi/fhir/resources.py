"""FHIR resources in and out: validation against the FHIR models, and OperationOutcome.

The models are those of ``fhir.resources`` (8.x) for **FHIR R4B** (4.3.0,
``fhir.resources.R4B``); the package's root modules are R5 and must not be used. The hub
speaks R4 (4.0.1). R4B is a wire-compatible superset of R4 for the resources the hub emits
or accepts — checked element by element against the R4 models of ``fhirclient`` 4.4.0:

- Task, DiagnosticReport, Observation, Communication, ImagingStudy, Device, Provenance,
  Patient, Subscription, ServiceRequest, Bundle, OperationOutcome and Endpoint have the same
  elements, types and cardinalities in R4B as in R4 (R4B's changes are elsewhere: the
  medication definition resources, new resources such as SubscriptionTopic,
  SubscriptionStatus, Citation, Evidence*). The R4 Subscriptions Backport IG is what R4
  servers use instead of SubscriptionTopic/SubscriptionStatus.
- Value sets grew in R4B: ``Bundle.type`` gained ``subscription-notification`` (R4
  notifications are ``history`` Bundles, Backport IG); an R4 client rejects it.

What the R4B models do not check, and this module adds (FHIR R4 json.html, datatypes.html):

- Required bindings: the models accept any code (``Task.status = "bogus"`` passes).
  :data:`REQUIRED_CODES` lists the R4 required value sets of the status-like elements of
  our resources; :func:`parse_resource` and :func:`validated` enforce them.
- Empty elements: ``{}``, ``[]`` and ``""`` are accepted (and ``[]`` silently dropped) by the
  models, but R4 forbids them (json.html "empty", ele-1). :func:`validated` rejects them in
  what the hub emits; :func:`parse_resource` lets the model drop them.
- ``id`` length (at most 64 characters, datatypes.html#id) is not checked by the models;
  both functions check it.
- Reference targets: the models know each Reference's allowed target types but do not check
  them; neither does this module. The hub puts ``Task`` references in
  ``DiagnosticReport.basedOn``, which R4 limits to CarePlan, ImmunizationRecommendation,
  MedicationRequest, NutritionOrder and ServiceRequest (the HL7 validator warns/errs).

Serialisation: ``model_dump_json()`` (aliases, no ``None``) parsed back gives R4 JSON:
instants and dateTimes keep their offset (``+00:00`` becomes ``Z``; a fraction of a second
is written with 6 digits or, when zero, left out), decimals stay JSON numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource as ResourceModel
from pydantic import ValidationError

from aifi.errors import InvalidRequest
from aifi.fhir.types import Resource

_REQUEST_PRIORITY = frozenset({"routine", "urgent", "asap", "stat"})
_REPORT_STATUS = frozenset(
    {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)

REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "Task": {
        "status": frozenset(
            {
                "draft",
                "requested",
                "received",
                "accepted",
                "rejected",
                "ready",
                "cancelled",
                "in-progress",
                "on-hold",
                "failed",
                "completed",
                "entered-in-error",
            }
        ),
        "intent": frozenset(
            {
                "unknown",
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
        "priority": _REQUEST_PRIORITY,
    },
    "ServiceRequest": {
        "status": frozenset(
            {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "directive",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
        "priority": _REQUEST_PRIORITY,
    },
    "Subscription": {
        "status": frozenset({"requested", "active", "error", "off"}),
        "channel.type": frozenset({"rest-hook", "websocket", "email", "sms", "message"}),
    },
    "DiagnosticReport": {"status": _REPORT_STATUS},
    "Observation": {"status": _REPORT_STATUS - {"partial", "appended"}},
    "Communication": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "not-done",
                "on-hold",
                "stopped",
                "completed",
                "entered-in-error",
                "unknown",
            }
        ),
        "priority": _REQUEST_PRIORITY,
    },
    "ImagingStudy": {
        "status": frozenset({"registered", "available", "cancelled", "entered-in-error", "unknown"})
    },
    "Device": {"status": frozenset({"active", "inactive", "entered-in-error", "unknown"})},
    "Endpoint": {
        "status": frozenset({"active", "suspended", "error", "off", "entered-in-error", "test"})
    },
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
    "Bundle": {
        "type": frozenset(
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
            }
        )
    },
    "OperationOutcome": {"issue.severity": frozenset({"fatal", "error", "warning", "information"})},
}
"""Type → element path → the codes of its R4 *required* binding (the element pages of
task.html, servicerequest.html, subscription.html, diagnosticreport.html, observation.html,
communication.html, imagingstudy.html, device.html, endpoint.html, patient.html, bundle.html,
operationoutcome.html). Codes that R4B added (``Bundle.type`` subscription-notification)
are left out on purpose: R4 clients reject them."""

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

_REQUIRED_ERRORS = frozenset({"missing", "model_field_validation.missing"})
_STRUCTURE_ERRORS = frozenset(
    {
        "extra_forbidden",
        "model_type",
        "list_type",
        "dict_type",
        "fhir-validation-wrong-resource-type",
    }
)


class InvalidResource(InvalidRequest):
    """A resource the R4 models reject (HTTP 400). ``issue_code`` is the OperationOutcome
    issue type (operationoutcome.html, IssueType): ``required`` for a missing element,
    ``structure`` for an unknown element or a wrong JSON type, ``value`` for a bad value;
    ``expressions`` are the FHIRPath locations of the problems."""

    def __init__(self, reason: str, *, issue_code: str, expressions: list[str]) -> None:
        super().__init__(reason)
        self.issue_code = issue_code
        self.expressions = expressions


def _path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a FHIRPath expression (``Task.input[0].type``)."""
    text = resource_type
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}"
    return text


def _issue_code(error_type: str) -> str:
    if error_type in _REQUIRED_ERRORS:
        return "required"
    if error_type in _STRUCTURE_ERRORS or error_type.endswith("_type"):
        return "structure"
    return "value"


def _message(msg: str) -> str:
    return " ".join(msg.removeprefix("Value error, ").split())


def _values(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    """The values at a dotted element path, with their FHIRPath locations."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _values(item, parts, f"{path}[{i}]")
        return
    if not parts:
        yield path, node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _values(node[parts[0]], parts[1:], f"{path}.{parts[0]}")


def _binding_problems(resource: Resource) -> list[tuple[str, str]]:
    """(path, message) for every code outside its required value set, and a bad id."""
    resource_type = str(resource.get("resourceType", ""))
    problems: list[tuple[str, str]] = []
    rid = resource.get("id")
    if isinstance(rid, str) and not _ID.fullmatch(rid):
        problems.append((f"{resource_type}.id", f"{rid!r} is not a FHIR id (datatypes.html#id)"))
    for element, codes in REQUIRED_CODES.get(resource_type, {}).items():
        for path, value in _values(resource, element.split("."), resource_type):
            if isinstance(value, str) and value not in codes:
                allowed = ", ".join(sorted(codes))
                problems.append((path, f"{value!r} is not one of the codes {allowed}"))
    return problems


def _model(resource_type: str) -> type[ResourceModel]:
    try:
        model = get_fhir_model_class(resource_type)
    except ValueError:
        model = None
    if model is None or not issubclass(model, ResourceModel):
        raise InvalidResource(
            f"Unknown resource type {resource_type!r}",
            issue_code="not-supported",
            expressions=[],
        )
    return model


def _validate(data: object, expected_type: str | None) -> Resource:
    """The resource as the R4B model serialises it, or :class:`InvalidResource`."""
    if not isinstance(data, dict):
        raise InvalidResource(
            "A FHIR resource must be a JSON object", issue_code="structure", expressions=[]
        )
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource(
            "resourceType is missing", issue_code="required", expressions=["resourceType"]
        )
    if expected_type is not None and resource_type != expected_type:
        raise InvalidResource(
            f"resourceType must be {expected_type!r}, not {resource_type!r}",
            issue_code="structure",
            expressions=["resourceType"],
        )
    model = _model(resource_type)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [f"{_path(resource_type, tuple(e['loc']))}: {_message(e['msg'])}" for e in errors]
        raise InvalidResource(
            f"Invalid {resource_type}: " + "; ".join(lines),
            issue_code=_issue_code(str(errors[0]["type"])) if errors else "structure",
            expressions=[_path(resource_type, tuple(e["loc"])) for e in errors],
        ) from exc
    result: Resource = json.loads(parsed.model_dump_json())
    problems = _binding_problems(result)
    if problems:
        raise InvalidResource(
            f"Invalid {resource_type}: " + "; ".join(f"{p}: {m}" for p, m in problems),
            issue_code="value",
            expressions=[p for p, _ in problems],
        )
    return result


def parse_resource(data: object, *, expected_type: str | None = None) -> Resource:
    """A client's resource checked against the FHIR R4(B) model of its ``resourceType``
    (FHIR R4 http.html#create: "the server SHALL reject the resource if it is not valid"),
    returned as the model serialises it (unknown ``None``/empty lists dropped, instants
    normalised).

    Raises :class:`InvalidResource` (an ``InvalidRequest``, HTTP 400) for a non-object, a
    missing or unknown ``resourceType``, one that is not ``expected_type``, or invalid
    content; the reason names each problem as ``<FHIRPath>: <message>``."""
    return _validate(data, expected_type)


def _empty_paths(node: Any, path: str) -> Iterator[str]:
    if isinstance(node, dict):
        if not node:
            yield path
        for key, value in node.items():
            yield from _empty_paths(value, f"{path}.{key}")
    elif isinstance(node, list):
        if not node:
            yield path
        for i, item in enumerate(node):
            yield from _empty_paths(item, f"{path}[{i}]")
    elif node == "" or node is None:
        yield path


def validated(resource: Resource) -> Resource:
    """``resource`` round-tripped through its R4B model — what the hub emits must pass.

    Stricter than :func:`parse_resource`: empty objects, arrays and strings and ``null``
    are errors (FHIR R4 json.html), not dropped. Raises ``ValueError`` naming the problem."""
    empty = list(_empty_paths(resource, str(resource.get("resourceType", "?"))))
    if empty:
        raise ValueError(f"Empty or null elements (json.html): {', '.join(empty)}")
    try:
        return _validate(resource, None)
    except InvalidRequest as exc:
        raise ValueError(exc.reason) from exc


def operation_outcome(
    code: str,
    diagnostics: str,
    *,
    severity: str = "error",
    expression: list[str] | None = None,
) -> Resource:
    """An OperationOutcome with one issue (FHIR R4 operationoutcome.html): ``code`` from the
    IssueType value set (``structure``, ``required``, ``value``, ``not-found``,
    ``not-supported``, ``conflict``, ``processing`` ...), ``expression`` FHIRPath locations."""
    issue: Resource = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}
