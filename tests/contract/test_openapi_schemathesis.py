"""Schemathesis against the hub's own OpenAPI document (issue 6 §7): every operation, with
requests generated from its declared parameters and bodies, sent to a live hub in
``auth=builtin`` mode with a VALID token, never answers a server error (5xx).

Two clients: a hospital with every scope it may hold (DICOMweb, the worklist as requester,
results, FHIR ``system/*.cruds``), and an administrator for the operations only
administrators reach (routing explanations, delivery retries, the audit trail). The hub holds
a stored study and a workitem, so reads meet real rows. A hub in development mode (no
authentication) gets the same run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid
from schemathesis.checks import not_a_server_error

from aifi.fhir.capability import INTERACTIONS
from aifi.hub.auth.clients import DEFAULT_SCOPES
from aifi.hub.auth.policy import RULES
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.support.auth import bearer, register, secured_hub, token_for
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.ups import new_workitem

EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

NOT_IN_THE_DOCUMENT = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

ADMIN_ONLY = r"/routing$|/retry$|^/fhir/\{resource_type\}"
"""Operations the administrator run covers (FHIR: the AuditEvent trail is theirs)."""


@dataclass(frozen=True)
class Target:
    server: LiveServer
    headers: dict[str, str]
    admin_headers: dict[str, str]
    known: dict[str, list[str]]
    """Path parameter → identifiers that exist, so generated requests also meet real rows."""


def _seed(http: httpx.Client, headers: dict[str, str]) -> dict[str, list[str]]:
    datasets = make_study(1, 2)
    body, content_type = multipart_related([to_bytes(ds) for ds in datasets])
    stored = http.post(
        "/dicomweb/studies", content=body, headers={**headers, "Content-Type": content_type}
    )
    assert stored.status_code == 200, stored.text
    workitem = str(generate_uid())
    created = http.post(
        f"/dicomweb/workitems?workitem={workitem}",
        json=[new_workitem(study_uid=str(datasets[0].StudyInstanceUID))],
        headers=headers,
    )
    assert created.status_code == 201, created.headers.get("warning")
    order: dict[str, Any] = {"resourceType": "ServiceRequest", "status": "active"}
    order["intent"] = "order"
    order["subject"] = {"reference": "Patient/PID-0001"}
    ordered = http.post(
        "/fhir/ServiceRequest",
        json=order,
        headers={**headers, "Content-Type": "application/fhir+json"},
    )
    assert ordered.status_code == 201, ordered.text
    study = str(datasets[0].StudyInstanceUID)
    series = str(datasets[0].SeriesInstanceUID)
    return {
        "study": [study],
        "StudyInstanceUID": [study],
        "series": [series],
        "SeriesInstanceUID": [series],
        "instance": [str(datasets[0].SOPInstanceUID)],
        "frames": ["1", "1,2", "0"],
        "path": ["7FE00010", "00081199/0/00081150"],
        "workitem": [workitem],
        "workitem_uid": [workitem],
        "resource_type": sorted(INTERACTIONS),
        "resource_id": [str(ordered.json()["id"]), workitem, study],
        "version_id": ["1", "2"],
        "ae_title": ["AIFI_TEST"],
        "destination": ["pacs"],
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis-builtin")
    with (
        secured_hub(data_dir, access_token_seconds=3600) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        hospital = register(server, tenant="default")
        admin = register(server, tenant="default", role="admin")
        headers = bearer(token_for(hospital, DEFAULT_SCOPES["hospital"]))
        admin_headers = bearer(token_for(admin, [*DEFAULT_SCOPES["admin"], "system/AuditEvent.rs"]))
        yield Target(server, headers, admin_headers, _seed(http, headers))


@pytest.fixture(scope="module")
def development(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis-dev")
    settings_ = Settings(data_dir=data_dir, auth="off", dev_mode=True)
    with (
        running_hub(settings_) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        yield Target(server, {}, {}, _seed(http, {}))


def _schema(target: Target) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(target.server.url + "/openapi.json")


@pytest.fixture(scope="module")
def secured_schema(secured: Target) -> schemathesis.BaseSchema:
    return _schema(secured)


@pytest.fixture(scope="module")
def development_schema(development: Target) -> schemathesis.BaseSchema:
    return _schema(development)


OPERATIONS = sorted(
    (method, path.replace("{path:path}", "{path}"))
    for method, path in RULES
    if method != "WEBSOCKET" and path not in NOT_IN_THE_DOCUMENT
)
"""Every route of the policy table (so a route added later is covered): the document
describes each of them."""


def _no_server_error(
    schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    headers: dict[str, str],
    known: dict[str, list[str]],
) -> None:
    operation = schema[path][method]

    @given(case=operation.as_strategy(), data=st.data())
    @EXAMPLES
    def call(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        for name in list(case.path_parameters or {}):
            if name in known and data.draw(st.booleans(), label=f"real {name}"):
                value = data.draw(st.sampled_from(known[name]), label=name)
                case.path_parameters[name] = value
        case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)

    call()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_error_with_a_hospital_token(
    secured_schema: schemathesis.BaseSchema, secured: Target, method: str, path: str
) -> None:
    _no_server_error(secured_schema, method, path, secured.headers, secured.known)


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p in OPERATIONS if re.search(ADMIN_ONLY, p)]
)
def test_no_server_error_with_an_admin_token(
    secured_schema: schemathesis.BaseSchema, secured: Target, method: str, path: str
) -> None:
    _no_server_error(secured_schema, method, path, secured.admin_headers, secured.known)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_error_in_development_mode(
    development_schema: schemathesis.BaseSchema, development: Target, method: str, path: str
) -> None:
    if path.startswith(("/oauth/", "/.well-known/", "/fhir/.well-known/")):
        pytest.skip("development mode serves no authorization server")
    _no_server_error(development_schema, method, path, {}, development.known)
