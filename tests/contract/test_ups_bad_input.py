"""UPS-RS bad input (PS3.18 ch. 11, PS3.4 Annex CC) against a real uvicorn server, with httpx.

The issue's "Bad input" clause: malformed workitems, illegal state transitions, wrong or
missing Transaction UIDs, duplicate creates, subscriptions to unknown workitems all get the
standard's status and a reason (``Warning: 299``), and no workitem is ever left in a state
the standard does not allow. Three parts:

* a table of malformed requests, each checked for its status, its Warning and that the
  workitem it aimed at is unchanged afterwards;
* a seeded random walk of valid and invalid operations over ten workitems, compared after
  every step with a model of Table CC.1.1-2 kept here (deliberately not imported from
  ``aifi``, so that a wrong table there is caught);
* eight threads claiming, completing and cancelling the same few workitems at once.

The single cases of ``test_ups_rs.py`` (happy paths, duplicate create, the 8-claimer race)
are not repeated here. Cases with a ``bug=`` note were bugs this file found (a 500, or a
malformed value stored), fixed by checking DICOM JSON payloads (``aifi.dicomweb.json_model``).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.support.ups import completion, element, new_workitem, state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
GLOBAL = "1.2.840.10008.5.1.4.34.5"
SOP_INSTANCE = "00080018"
STATE = "00741000"
TRANSACTION = "00081195"
LABEL = "00741204"
PROGRESS_INFORMATION = "00741002"
CANCELLATION_DATETIME = "00404052"
PERFORMED_PROCEDURE = "00741216"
OUTPUT_INFORMATION = "00404033"
SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
STATES = {SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED}
FINAL = {COMPLETED, CANCELED}

STANDARD_STATUSES = {
    "create": {201, 400, 409, 413, 415},
    "retrieve": {200, 400, 404, 406},
    "update": {200, 400, 404, 409, 413, 415},
    "state": {200, 400, 404, 409, 413, 415},
    "cancelrequest": {202, 400, 404, 409, 413, 415},
    "search": {200, 400, 406, 413},
}
"""The statuses PS3.18 §11.4-§11.9 list for each transaction (plus 406/413/415 of §8.7)."""


def new_uid() -> str:
    return str(generate_uid())


def warning(response: httpx.Response) -> str:
    return str(response.headers.get("warning", ""))


def client_for(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=60)


@contextlib.contextmanager
def own_hub(tmp_path: Path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """A hub of its own, for tests whose bad input may spoil the server for others."""
    with running_hub(Settings(data_dir=tmp_path / "data")) as server, client_for(server) as client:
        yield server, client


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_hub(Settings(data_dir=tmp_path_factory.mktemp("ups-bad") / "data")) as server:
        yield server


@pytest.fixture
def hub(shared_server: LiveServer) -> Iterator[httpx.Client]:
    with client_for(shared_server) as client:
        yield client


def create(client: httpx.Client, dataset: dict[str, Any] | None = None) -> str:
    uid = new_uid()
    response = client.post(f"/workitems?workitem={uid}", json=dataset or new_workitem())
    assert response.status_code == 201, warning(response)
    return uid


def retrieve(client: httpx.Client, uid: str) -> dict[str, Any]:
    response = client.get(f"/workitems/{uid}")
    assert response.status_code == 200, (response.status_code, warning(response))
    [ds] = response.json()
    assert isinstance(ds, dict)
    return ds


def claim(client: httpx.Client, uid: str) -> str:
    txn = new_uid()
    response = client.put(f"/workitems/{uid}/state", json=state_change(IN_PROGRESS, txn))
    assert response.status_code == 200, warning(response)
    return txn


def value(ds: dict[str, Any], tag: str) -> Any:
    values = (ds.get(tag) or {}).get("Value") or [None]
    return values[0]


def assert_allowed(ds: dict[str, Any], secrets: Collection[str] = ()) -> None:
    """The invariants of a stored workitem (PS3.4 CC.1.1, Table CC.2.5-3, PS3.18 §11.5)."""
    state = value(ds, STATE)
    assert state in STATES, ds
    assert TRANSACTION not in ds, "the Transaction UID is never disclosed"
    text = json.dumps(ds)
    for secret in secrets:
        assert secret not in text, "a Transaction UID leaked into the workitem"
    if state == COMPLETED:
        performed = value(ds, PERFORMED_PROCEDURE)
        assert isinstance(performed, dict) and OUTPUT_INFORMATION in performed, ds
    if state == CANCELED:
        items = (ds.get(PROGRESS_INFORMATION) or {}).get("Value") or []
        assert any(isinstance(i, dict) and value(i, CANCELLATION_DATETIME) for i in items), ds


# -- 1. the table of malformed requests -------------------------------------------------------

NO_BODY = object()
HUGE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Bad:
    """One malformed request. ``path`` may name ``{uid}`` (a fresh workitem, claimed with
    ``{txn}`` when ``claimed``) and ``{new}`` (a UID no workitem has)."""

    method: str
    path: str
    status: tuple[int, ...]
    reason: str
    body: Any = NO_BODY
    content: bytes | None = None
    headers: dict[str, str] | None = None
    claimed: bool = False


def bad(
    case_id: str,
    method: str,
    path: str,
    status: int | tuple[int, ...],
    reason: str,
    *,
    bug: str | None = None,
    **kwargs: Any,
) -> Any:
    statuses = (status,) if isinstance(status, int) else status
    return pytest.param(Bad(method, path, statuses, reason, **kwargs), id=case_id)


UPDATE = "/workitems/{uid}"
UPDATE_HELD = "/workitems/{uid}?transaction={txn}"
STATE_PATH = "/workitems/{uid}/state"
CANCEL = "/workitems/{uid}/cancelrequest"
NOT_DATASET = "not a DICOM JSON data set"
TRUNCATED = b'{"00741204": {"vr": "LO", "Value": ["Bo'


def _claim_body(txn_element: Any) -> dict[str, Any]:
    return {STATE: element("CS", IN_PROGRESS), TRANSACTION: txn_element}


PAYLOADS = [
    # Not JSON, not one data set.
    bad("update-truncated-json", "POST", UPDATE, 400, "not valid JSON", content=TRUNCATED),
    bad("update-invalid-utf8", "POST", UPDATE, 400, "not valid JSON", content=b'{"\xff": 1}'),
    bad("update-json-number", "POST", UPDATE, 400, NOT_DATASET, content=b"42"),
    bad("update-json-string", "POST", UPDATE, 400, NOT_DATASET, content=b'"00741204"'),
    bad("update-json-null", "POST", UPDATE, 400, NOT_DATASET, content=b"null"),
    bad("update-array-of-0", "POST", UPDATE, 400, "not 0", body=[]),
    bad("update-array-of-2", "POST", UPDATE, 400, "not 2", body=[{}, {}]),
    bad("update-array-of-strings", "POST", UPDATE, 400, NOT_DATASET, body=["x"]),
    bad("update-non-hex-tag", "POST", UPDATE, 400, NOT_DATASET, body={"0074120G": {"vr": "LO"}}),
    bad("update-short-tag", "POST", UPDATE, 400, NOT_DATASET, body={"741204": {"vr": "LO"}}),
    bad("update-keyword-tag", "POST", UPDATE, 400, NOT_DATASET, body={"PatientID": {"vr": "LO"}}),
    bad("update-element-a-string", "POST", UPDATE, 400, NOT_DATASET, body={LABEL: "x"}),
    bad("update-element-a-list", "POST", UPDATE, 400, NOT_DATASET, body={LABEL: ["x"]}),
    bad(
        "update-huge-truncated",
        "POST",
        UPDATE,
        (400, 413),
        "",
        content=TRUNCATED + b"x" * HUGE,
    ),
    bad(
        "update-huge-two-datasets",
        "POST",
        UPDATE,
        (400, 413),
        "",
        body=[{LABEL: element("LO", "x" * HUGE)}, {}],
    ),
    bad(
        "update-xml",
        "POST",
        UPDATE,
        415,
        "application/dicom+json",
        content=b"<x/>",
        headers={"Content-Type": "application/xml"},
    ),
    bad(
        "update-untyped",
        "POST",
        UPDATE,
        415,
        "application/dicom+json",
        content=b"{}",
        headers={"Content-Type": ""},
    ),
    # Wrong VR shapes (PS3.18 F.2.2-F.2.5: "vr" required; "Value" an array; SQ items objects).
    bad(
        "update-type1-value-not-a-list",
        "POST",
        UPDATE,
        400,
        "Procedure Step Label",
        body={LABEL: {"vr": "LO", "Value": "Left hand"}},
    ),
    bad(
        "update-value-not-a-list",
        "POST",
        UPDATE,
        400,
        "00100020",
        body={"00100020": {"vr": "LO", "Value": "PAT-2"}},
        bug="a Value that is not a JSON array is stored as is (ups_rs._dataset checks only "
        "the top level of the data set)",
    ),
    bad(
        "update-element-without-vr",
        "POST",
        UPDATE,
        400,
        "vr",
        body={"00100020": {"Value": ["PAT-2"]}},
        bug="an attribute without the required 'vr' is stored (PS3.18 F.2.2)",
    ),
    bad(
        "update-unknown-vr",
        "POST",
        UPDATE,
        400,
        "ZZ",
        body={"00100020": {"vr": "ZZ", "Value": ["PAT-2"]}},
        bug="an attribute with VR 'ZZ' is stored",
    ),
    bad(
        "update-sq-item-not-an-object",
        "POST",
        UPDATE_HELD,
        400,
        "Progress Information",
        body={PROGRESS_INFORMATION: {"vr": "SQ", "Value": ["x"]}},
        claimed=True,
        bug="a sequence item that is not an object is stored (and later breaks Discontinue)",
    ),
    bad(
        "update-sq-value-an-object",
        "POST",
        UPDATE,
        400,
        "00404018",
        body={"00404018": {"vr": "SQ", "Value": {"00080100": element("SH", "X")}}},
        bug="500: worklist_events._code_of indexes Value[0] of a dict (KeyError: 0)",
    ),
    bad(
        "update-enumerated-value-a-list",
        "POST",
        UPDATE,
        400,
        "Priority",
        body={"00741200": {"vr": "CS", "Value": [["HIGH"]]}},
        bug="500: ups._enumerated_problems does `value not in frozenset` on a list",
    ),
    bad(
        "update-enumerated-value-an-object",
        "POST",
        UPDATE,
        400,
        "Input Readiness State",
        body={"00404041": {"vr": "CS", "Value": [{"x": 1}]}},
        bug="500: ups._enumerated_problems does `value not in frozenset` on a dict",
    ),
    # Update rules (PS3.4 CC.2.6, Table CC.2.5-3).
    bad("update-unknown-workitem", "POST", "/workitems/{new}", 404, "does not exist", body={}),
    bad(
        "update-sets-the-state",
        "POST",
        UPDATE,
        400,
        "may not be set",
        body={STATE: element("CS", COMPLETED)},
    ),
    bad(
        "update-sets-the-sop-instance-uid",
        "POST",
        UPDATE,
        400,
        "may not be set",
        body={SOP_INSTANCE: element("UI", "1.2.3")},
    ),
    bad(
        "update-empties-a-type-1-attribute",
        "POST",
        UPDATE,
        400,
        "Procedure Step Label",
        body={LABEL: {"vr": "LO"}},
    ),
    bad(
        "update-claimed-without-transaction",
        "POST",
        UPDATE,
        400,
        "Transaction UID is missing",
        body={LABEL: element("LO", "x")},
        claimed=True,
    ),
    bad(
        "update-claimed-transaction-not-a-uid",
        "POST",
        "/workitems/{uid}?transaction=abc",
        400,
        "Transaction UID",
        body={LABEL: element("LO", "x")},
        claimed=True,
    ),
    # Change Workitem State (PS3.18 §11.7, PS3.4 CC.2.1).
    bad("state-no-payload", "PUT", STATE_PATH, 400, "no payload"),
    bad("state-truncated-json", "PUT", STATE_PATH, 400, "not valid JSON", content=TRUNCATED),
    bad(
        "state-unknown-state",
        "PUT",
        STATE_PATH,
        400,
        "not a Procedure Step State",
        body=state_change("DONE", "1.2.3"),
    ),
    bad(
        "state-lower-case-state",
        "PUT",
        STATE_PATH,
        400,
        "not a Procedure Step State",
        body=state_change("in progress", "1.2.3"),
    ),
    bad(
        "state-back-to-scheduled",
        "PUT",
        STATE_PATH,
        400,
        "only become SCHEDULED",
        body=state_change(SCHEDULED, "{txn}"),
        claimed=True,
    ),
    bad(
        "state-missing-state",
        "PUT",
        STATE_PATH,
        400,
        "no Procedure Step State",
        body={TRANSACTION: element("UI", "1.2.3")},
    ),
    bad(
        "state-value-not-a-list",
        "PUT",
        STATE_PATH,
        400,
        "Procedure Step State",
        body={STATE: {"vr": "CS", "Value": IN_PROGRESS}, TRANSACTION: element("UI", "1.2.3")},
    ),
    bad(
        "state-missing-transaction",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID is missing",
        body=state_change(IN_PROGRESS, None),
    ),
    bad(
        "state-transaction-not-a-uid",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body(element("UI", "hello")),
    ),
    bad(
        "state-transaction-leading-zero",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body(element("UI", "1.02.3")),
    ),
    bad(
        "state-transaction-too-long",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body(element("UI", "1." + "2" * 70)),
    ),
    bad(
        "state-transaction-empty",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body(element("UI", "")),
    ),
    bad(
        "state-transaction-an-object",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body({"vr": "UI", "Value": [{}]}),
    ),
    bad(
        "state-transaction-value-not-a-list",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body({"vr": "UI", "Value": "1.2.3"}),
        bug="the string '1.2.3' is indexed: the workitem is claimed with Transaction UID '1' "
        "(ups_rs.change_workitem_state takes (Value or [None])[0] of a str)",
    ),
    bad(
        "state-transaction-a-number",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID",
        body=_claim_body({"vr": "UI", "Value": [12]}),
        bug="a JSON number is taken as the Transaction UID '12' and claims the workitem "
        "(UI values are JSON strings, PS3.18 F.2.3)",
    ),
    bad(
        "state-claimed-wrong-transaction",
        "PUT",
        STATE_PATH,
        400,
        "Transaction UID is incorrect",
        body=state_change(CANCELED, "9.9.9"),
        claimed=True,
    ),
    # Request Cancellation (PS3.18 §11.8).
    bad("cancel-truncated-json", "POST", CANCEL, 400, "not valid JSON", content=TRUNCATED),
    bad("cancel-array-of-2", "POST", CANCEL, 400, "not 2", body=[{}, {}]),
    bad("cancel-non-hex-tag", "POST", CANCEL, 400, NOT_DATASET, body={"Reason": "x"}),
    bad("cancel-element-a-string", "POST", CANCEL, 400, NOT_DATASET, body={"00741238": "x"}),
    bad(
        "cancel-xml",
        "POST",
        CANCEL,
        415,
        "application/dicom+json",
        content=b"<x/>",
        headers={"Content-Type": "application/xml"},
    ),
    bad(
        "cancel-reason-value-not-a-list",
        "POST",
        CANCEL,
        400,
        "Reason",
        body={"00741238": {"vr": "LT", "Value": "Ordered twice"}},
        bug="202 and the SCHEDULED workitem is canceled with Reason For Cancellation 'O' "
        "(worklist._cancellation_info takes _text() = Value[0] of a str)",
    ),
    bad("cancel-unknown-workitem", "POST", "/workitems/{new}/cancelrequest", 404, "not exist"),
    # Create (PS3.18 §11.4): nothing is created.
    bad(
        "create-value-not-a-list",
        "POST",
        "/workitems?workitem={new}",
        400,
        "00100020",
        body={**new_workitem(), "00100020": {"vr": "LO", "Value": "PAT-1"}},
        bug="201: a Value that is not a JSON array is stored",
    ),
    bad(
        "create-enumerated-value-an-object",
        "POST",
        "/workitems?workitem={new}",
        400,
        "Priority",
        body={**new_workitem(), "00741200": {"vr": "CS", "Value": [{"x": 1}]}},
        bug="500: ups._enumerated_problems does `value not in frozenset` on a dict",
    ),
    bad(
        "create-sop-instance-uid-differs",
        "POST",
        "/workitems?workitem={new}",
        400,
        "differs",
        body={**new_workitem(), SOP_INSTANCE: element("UI", "1.2.3")},
    ),
    # Subscriptions (PS3.18 §11.10-§11.12).
    bad("subscribe-unknown-workitem", "POST", "/workitems/{new}/subscribers/AE1", 404, "exist"),
    bad("unsubscribe-unknown-workitem", "DELETE", "/workitems/{new}/subscribers/AE1", 404, "exist"),
    bad(
        "suspend-a-workitem-subscription",
        "POST",
        "/workitems/{uid}/subscribers/AE1/suspend",
        400,
        "global or filtered",
    ),
    bad(
        "suspend-without-subscription",
        "POST",
        f"/workitems/{GLOBAL}/subscribers/NOBODY/suspend",
        404,
        "no subscription",
    ),
    bad(
        "subscribe-deletionlock-not-boolean",
        "POST",
        "/workitems/{uid}/subscribers/AE1?deletionlock=yes",
        400,
        "deletionlock",
    ),
    bad(
        "subscribe-workitem-with-matching-keys",
        "POST",
        "/workitems/{uid}/subscribers/AE1?PatientID=X",
        400,
        "filtered",
    ),
]

BAD_UIDS = ["1" * 65, "1.02.3", "1.2.a", "1..2", "01.2", "1.2."]
UID_PATHS = [
    ("retrieve", "GET", "/workitems/{bad}", NO_BODY),
    ("update", "POST", "/workitems/{bad}", {}),
    ("state", "PUT", "/workitems/{bad}/state", state_change(IN_PROGRESS, "1.2.3")),
    ("cancel", "POST", "/workitems/{bad}/cancelrequest", NO_BODY),
    ("subscribe", "POST", "/workitems/{bad}/subscribers/AE1", NO_BODY),
    ("unsubscribe", "DELETE", "/workitems/{bad}/subscribers/AE1", NO_BODY),
    ("create", "POST", "/workitems?workitem={bad}", new_workitem()),
]
UIDS = [
    bad(f"{name}-uid-{uid[:8]}-{len(uid)}", method, path.replace("{bad}", uid), 400, "UID", body=b)
    for uid in BAD_UIDS
    for name, method, path, b in UID_PATHS
]

BAD_AES = ["A" * 17, "A%5CB", "%20%20%20", "%09TAB", "%C3%A9"]
AES = [
    bad(f"{name}-ae-{i}", method, path.replace("{ae}", ae), 400, "AE Title")
    for i, ae in enumerate(BAD_AES)
    for name, method, path in [
        ("subscribe", "POST", "/workitems/{uid}/subscribers/{ae}"),
        ("unsubscribe", "DELETE", "/workitems/{uid}/subscribers/{ae}"),
        ("suspend", "POST", f"/workitems/{GLOBAL}/subscribers/{{ae}}/suspend"),
    ]
]


def _send(client: httpx.Client, case: Bad, **names: str) -> httpx.Response:
    path = case.path.format(**names)
    content = case.content
    if content is None and case.body is not NO_BODY:
        content = json.dumps(case.body).replace("{txn}", names["txn"]).encode()
    return client.request(case.method, path, content=content, headers=case.headers)


@pytest.mark.parametrize("case", PAYLOADS + UIDS + AES)
def test_a_malformed_request_is_refused_with_a_reason_and_changes_nothing(
    hub: httpx.Client, case: Bad
) -> None:
    uid = create(hub)
    txn = claim(hub, uid) if case.claimed else new_uid()
    before = retrieve(hub, uid)
    fresh = new_uid()

    response = _send(hub, case, uid=uid, txn=txn, new=fresh)

    assert response.status_code in case.status, (response.status_code, warning(response))
    assert warning(response).startswith("299 "), response.headers
    reason = case.reason
    if re.fullmatch(r"[0-9A-F]{8}", reason):  # a tag is named as (gggg,eeee) in reasons
        reason = f"({reason[:4]},{reason[4:]})"
    assert reason.lower() in warning(response).lower()
    assert retrieve(hub, uid) == before
    assert hub.get(f"/workitems/{fresh}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/workitems/{uid}?colour=blue", NO_BODY),
        ("PUT", "/workitems/{uid}/state?colour=blue", state_change("DONE", "1.2.3")),
        ("POST", "/workitems/{uid}/cancelrequest?colour=blue", [{}, {}]),
    ],
    ids=["retrieve", "state", "cancelrequest"],
)
def test_unknown_query_parameters_are_ignored_or_refused_never_a_500(
    hub: httpx.Client, method: str, path: str, body: Any
) -> None:
    """PS3.18 defines no such parameter; ignoring it (the request's own outcome) or a 400 with
    a reason are both acceptable, anything else is not."""
    uid = create(hub)
    before = retrieve(hub, uid)
    content = None if body is NO_BODY else json.dumps(body).encode()
    response = hub.request(method, path.format(uid=uid), content=content)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert warning(response).startswith("299 ")
    assert retrieve(hub, uid) == before


def test_subscriptions_are_idempotent_and_unknown_ones_are_404(hub: httpx.Client) -> None:
    uid = create(hub)
    before = retrieve(hub, uid)
    for _ in range(2):  # PS3.18 §11.10: subscribing again is not an error
        response = hub.post(f"/workitems/{uid}/subscribers/TWICE")
        assert response.status_code == 201, warning(response)
    assert hub.delete(f"/workitems/{uid}/subscribers/TWICE").status_code == 200
    again = hub.delete(f"/workitems/{uid}/subscribers/TWICE")
    assert again.status_code == 404
    assert warning(again).startswith("299 ") and "no subscription" in warning(again)
    assert hub.post(f"/workitems/{GLOBAL}/subscribers/TWICE").status_code == 201
    assert hub.post(f"/workitems/{GLOBAL}/subscribers/TWICE").status_code == 201
    assert hub.post(f"/workitems/{GLOBAL}/subscribers/TWICE/suspend").status_code == 200
    suspend = hub.post(f"/workitems/{uid}/subscribers/TWICE/suspend")
    assert suspend.status_code == 400 and warning(suspend).startswith("299 ")
    assert hub.delete(f"/workitems/{GLOBAL}/subscribers/TWICE").status_code == 200
    assert retrieve(hub, uid) == before


@pytest.mark.parametrize("claimed", [True, False], ids=["discontinue", "cancelrequest"])
def test_a_malformed_progress_sequence_does_not_strand_the_workitem(
    tmp_path: Path, claimed: bool
) -> None:
    with own_hub(tmp_path) as (_, client):
        uid = create(client)
        txn = claim(client, uid) if claimed else None
        query = f"?transaction={txn}" if txn else ""
        malformed = {PROGRESS_INFORMATION: {"vr": "SQ", "Value": ["x", 1, None]}}
        update = client.post(f"/workitems/{uid}{query}", json=malformed)
        assert update.status_code in (200, 400), update.status_code
        if claimed:
            end = client.put(f"/workitems/{uid}/state", json=state_change(CANCELED, txn))
            assert end.status_code == 200, (end.status_code, warning(end))
        else:
            end = client.post(f"/workitems/{uid}/cancelrequest")
            assert end.status_code == 202, (end.status_code, warning(end))
        ds = retrieve(client, uid)
        assert value(ds, STATE) == CANCELED
        assert_allowed(ds)


def test_a_malformed_sequence_item_in_a_create_does_not_break_search(tmp_path: Path) -> None:
    with own_hub(tmp_path) as (_, client):
        good = create(client)
        uid = new_uid()
        malformed = {**new_workitem(), "00404021": {"vr": "SQ", "Value": ["x", 3]}}
        response = client.post(f"/workitems?workitem={uid}", json=malformed)
        search = client.get("/workitems")
        assert search.status_code == 200, search.status_code
        assert good in {value(ds, SOP_INSTANCE) for ds in search.json()}
        assert response.status_code == 400, response.status_code


# -- 2. a seeded random walk compared with a model of Table CC.1.1-2 ---------------------------


@dataclass
class Model:
    """What the test expects of one workitem."""

    uid: str
    state: str = SCHEDULED
    held: str | None = None
    label: str = "Bone age"
    completion: bool = False


Expected = tuple[int, str]
"""HTTP status and a fragment of the Warning text ("" = no Warning header)."""


def expect_state_change(m: Model, target: str, given: str | None) -> Expected:
    """Change Workitem State (PS3.4 Table CC.1.1-2, CC.2.1.3; PS3.18 §11.7)."""
    if target == SCHEDULED:
        return 400, "only become SCHEDULED"
    if given is None:
        return 400, "Transaction UID is missing"
    wrong = m.held is not None and given != m.held
    if target == IN_PROGRESS:
        if m.state == SCHEDULED:
            return 200, ""
        if wrong:
            return 400, "Transaction UID is incorrect"
        if m.state == IN_PROGRESS:
            return 409, "already IN PROGRESS"
        return 409, "may no longer be updated"
    if m.state == SCHEDULED:
        return 409, "did not reference a claimed Workitem"
    if wrong:
        return 400, "Transaction UID is incorrect"
    if target == COMPLETED:
        if m.state == IN_PROGRESS:
            return (200, "") if m.completion else (409, "final state requirements")
        if m.state == COMPLETED:
            return 200, "already in the requested state of COMPLETED"
        return 409, "may no longer be updated"
    if m.state == IN_PROGRESS:
        return 200, ""
    if m.state == CANCELED:
        return 200, "already in the requested state of CANCELED"
    return 409, "may no longer be updated"


def expect_update(m: Model, given: str | None) -> Expected:
    """Update Workitem (PS3.4 CC.2.6.3; PS3.18 §11.6)."""
    if m.state in FINAL:  # §11.6.2: 400 for an update of a final workitem
        return 400, "inconsistent with the current state of the Workitem"
    if m.state == SCHEDULED:
        return 200, ""
    if given is None:
        return 400, "Transaction UID is missing"
    if given != m.held:
        return 400, "Transaction UID is incorrect"
    return 200, ""


def expect_cancel_request(m: Model) -> Expected:
    """Request Cancellation (PS3.4 CC.2.2.3; PS3.18 §11.8)."""
    return {
        SCHEDULED: (202, ""),
        IN_PROGRESS: (202, ""),
        COMPLETED: (409, "already COMPLETED"),
        CANCELED: (202, "already in the requested state of CANCELED"),
    }[m.state]


def check_response(response: httpx.Response, kind: str, expected: Expected, step: str) -> None:
    status, fragment = expected
    assert response.status_code in STANDARD_STATUSES[kind], (step, response.status_code)
    assert response.status_code == status, (step, response.status_code, warning(response))
    if fragment or status >= 400:
        assert warning(response).startswith("299 "), (step, response.headers)
        assert fragment.lower() in warning(response).lower(), (step, warning(response))
    else:
        assert "warning" not in response.headers, (step, warning(response))


OPERATIONS = (
    *("claim", "claim", "claim", "complete", "complete", "discontinue", "cancel"),
    *("update", "update", "update"),
    *("retrieve", "search", "junk"),
)
"""The random walk's operations, weighted by repetition."""


class Walk:
    """One random walk: the operations, the model, and the comparison after each step."""

    def __init__(self, client: httpx.Client, seed: int, workitems: int = 10) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.patient = f"WALK-{seed}"
        self.models = [
            Model(create(client, new_workitem(patient_id=self.patient))) for _ in range(workitems)
        ]
        self.secrets: set[str] = set()
        self.finals: dict[str, str] = {}
        self.seen: set[tuple[str, str, int]] = set()
        """(operation, state before, status) of every step, to show what the walk covered."""

    def txn(self, m: Model, *, claiming: bool = False) -> str | None:
        """The held one, none, another workitem's, or a new one."""
        roll = self.rng.random()
        if roll < (0.2 if claiming else 0.55) and m.held:
            return m.held
        if roll < 0.65:
            return None if roll >= 0.5 else new_uid()
        others = [o.held for o in self.models if o.held and o.held != m.held]
        if roll < 0.8 and others:
            return self.rng.choice(others)
        return new_uid()

    def step(self, number: int, m: Model | None = None, op: str | None = None) -> None:
        """One operation; a random one on a random workitem unless told."""
        live = [m for m in self.models if m.state not in FINAL]
        if len(live) < 3:  # keep the walk busy with workitems that can still change
            live.append(Model(create(self.client, new_workitem(patient_id=self.patient))))
            self.models.append(live[-1])
        m = m or self.rng.choice(live if self.rng.random() < 0.5 else self.models)
        op = op or self.rng.choice(OPERATIONS)
        where = f"step {number}: {op} on {m.state} {m.uid}"
        before = m.state
        if op in ("claim", "complete", "discontinue"):
            target = {"claim": IN_PROGRESS, "complete": COMPLETED, "discontinue": CANCELED}[op]
            given = self.txn(m, claiming=op == "claim")
            if given:
                self.secrets.add(given)
            expected = expect_state_change(m, target, given)
            response = self.client.put(
                f"/workitems/{m.uid}/state", json=state_change(target, given)
            )
            check_response(response, "state", expected, f"{where} with {given}")
            if expected == (200, "") and target == IN_PROGRESS:
                m.state, m.held = IN_PROGRESS, given
            elif expected == (200, ""):
                m.state = target
        elif op == "update":
            given = self.txn(m)
            kind = self.rng.choice(["label", "completion", "completion", "progress"])
            label = f"Label {number}"
            changes: dict[str, Any] = {
                "label": {LABEL: element("LO", label)},
                "completion": completion(("1.2.3", "1.2.3.4", new_uid())),
                "progress": {PROGRESS_INFORMATION: element("SQ", {"00741004": element("DS", 50)})},
            }[kind]
            query = f"?transaction={given}" if given else ""
            expected = expect_update(m, given)
            response = self.client.post(f"/workitems/{m.uid}{query}", json=changes)
            check_response(response, "update", expected, f"{where} ({kind}) with {given}")
            if expected[0] == 200:
                m.label = label if kind == "label" else m.label
                m.completion = m.completion or kind == "completion"
        elif op == "cancel":
            expected = expect_cancel_request(m)
            body = self.rng.choice([None, {"00741238": element("LT", "Ordered twice")}])
            response = self.client.post(f"/workitems/{m.uid}/cancelrequest", json=body)
            check_response(response, "cancelrequest", expected, where)
            if m.state == SCHEDULED:
                m.state, m.held = CANCELED, None
        elif op == "retrieve":
            response = self.client.get(f"/workitems/{m.uid}")
            check_response(response, "retrieve", (200, ""), where)
            [ds] = response.json()
            self.compare(m, ds, where)
        elif op == "search":
            state = self.rng.choice(sorted(STATES))
            response = self.client.get(
                "/workitems", params={"PatientID": self.patient, "ProcedureStepState": state}
            )
            check_response(response, "search", (200, ""), where)
            found = {value(ds, SOP_INSTANCE) for ds in response.json()}
            assert found == {o.uid for o in self.models if o.state == state}, where
        else:
            response = self.junk(m, where)
        self.seen.add((op, before, response.status_code))
        self.check_all(where)

    def junk(self, m: Model, where: str) -> httpx.Response:
        """A malformed or impossible request: refused, nothing changes."""
        choice = self.rng.randrange(5)
        url = f"/workitems/{m.uid}"
        if choice == 0:
            response = self.client.put(f"{url}/state", json=state_change("DONE", m.held or "1.2"))
            check_response(response, "state", (400, "not a Procedure Step State"), where)
        elif choice == 1:
            response = self.client.put(f"{url}/state", content=b'{"00741000": ')
            check_response(response, "state", (400, "not valid JSON"), where)
        elif choice == 2:
            response = self.client.post(url, json=[{}, {}])
            check_response(response, "update", (400, "not 2"), where)
        elif choice == 3:
            response = self.client.post(
                url, content=b"<x/>", headers={"Content-Type": "application/xml"}
            )
            check_response(response, "update", (415, "application/dicom+json"), where)
        else:
            response = self.client.put(
                f"{url}/state", json={STATE: element("CS", IN_PROGRESS), TRANSACTION: "1.2"}
            )
            check_response(response, "state", (400, NOT_DATASET), where)
        return response

    def compare(self, m: Model, ds: dict[str, Any], where: str) -> None:
        assert_allowed(ds, self.secrets)
        assert value(ds, STATE) == m.state, (where, m, value(ds, STATE))
        assert value(ds, LABEL) == m.label, (where, m, value(ds, LABEL))
        if m.state in FINAL:
            frozen = json.dumps(ds, sort_keys=True)
            assert self.finals.setdefault(m.uid, frozen) == frozen, f"{where}: a final UPS changed"

    def check_all(self, where: str) -> None:
        response = self.client.get("/workitems", params={"PatientID": self.patient})
        check_response(response, "search", (200, ""), where)
        found = {value(ds, SOP_INSTANCE): ds for ds in response.json()}
        assert set(found) == {m.uid for m in self.models}, where
        for m in self.models:
            self.compare(m, found[m.uid], where)


STEPS = 240


@pytest.mark.parametrize("seed", [20261123, 7, 1999])
def test_a_random_walk_of_valid_and_invalid_operations_keeps_the_standard(
    tmp_path: Path, seed: int
) -> None:
    with own_hub(tmp_path) as (_, client):
        walk = Walk(client, seed)
        for number in range(STEPS):
            walk.step(number)
        # A last sweep: every operation on every workitem, whatever state the walk left it in.
        for op in ("claim", "complete", "discontinue", "update", "cancel", "junk"):
            for m in list(walk.models):
                walk.step(STEPS, m, op)
    # Else the walk tested less than it claims: every state change was tried from every
    # state, and the walk ended workitems both ways.
    for op in ("claim", "complete", "discontinue", "update", "cancel"):
        assert {state for o, state, _ in walk.seen if o == op} == STATES, (op, walk.seen)
    assert {state for _, state, status in walk.seen if status < 300} == STATES


# -- 3. eight threads at once -------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    thread: int
    op: str
    uid: str
    txn: str | None
    status: int
    warning: str


def test_eight_threads_of_random_operations_leave_every_workitem_consistent(
    tmp_path: Path,
) -> None:
    with own_hub(tmp_path) as (server, client):
        uids = [create(client) for _ in range(4)]
        for uid in uids[:2]:  # these two can be completed by whoever claims them
            assert client.post(f"/workitems/{uid}", json=completion()).status_code == 200
        barrier = threading.Barrier(8)

        def worker(thread: int) -> list[Done]:
            rng = random.Random(4242 + thread)
            mine: dict[str, str] = {}
            done: list[Done] = []
            with client_for(server) as own:
                barrier.wait()
                for _ in range(30):
                    uid = rng.choice(uids)
                    op = rng.choice(["claim", "claim", "complete", "discontinue", "cancel"])
                    txn = mine.get(uid) if rng.random() < 0.8 else new_uid()
                    if op == "claim":
                        txn = new_uid()
                        r = own.put(f"/workitems/{uid}/state", json=state_change(IN_PROGRESS, txn))
                        if r.status_code == 200:
                            mine[uid] = txn
                        kind = "state"
                    elif op in ("complete", "discontinue"):
                        target = COMPLETED if op == "complete" else CANCELED
                        txn = txn or new_uid()
                        r = own.put(f"/workitems/{uid}/state", json=state_change(target, txn))
                        kind = "state"
                    else:
                        txn = None
                        r = own.post(f"/workitems/{uid}/cancelrequest")
                        kind = "cancelrequest"
                    assert r.status_code in STANDARD_STATUSES[kind], (op, r.status_code)
                    if r.status_code >= 400:
                        assert warning(r).startswith("299 "), (op, r.status_code)
                    done.append(Done(thread, op, uid, txn, r.status_code, warning(r)))
            return done

        with ThreadPoolExecutor(8) as pool:
            log = [d for part in pool.map(worker, range(8)) for d in part]

        secrets = {d.txn for d in log if d.txn}
        for uid in uids:
            claims = [d.txn for d in log if d.uid == uid and d.op == "claim" and d.status == 200]
            ends = [
                d
                for d in log
                if d.uid == uid
                and d.op in ("complete", "discontinue")
                and d.status == 200
                and not d.warning
            ]
            ds = retrieve(client, uid)
            assert_allowed(ds, secrets)
            state = value(ds, STATE)
            assert len(claims) <= 1, (uid, claims)  # a UPS is claimed once in its life
            if state == IN_PROGRESS:
                assert len(claims) == 1 and not ends, (uid, claims, ends)
            if state == SCHEDULED:
                assert not claims and not ends, (uid, claims, ends)
            if state == COMPLETED:
                assert len(claims) == 1 and [d.txn for d in ends] == claims, (uid, ends)
            if ends:  # only the claimer's Transaction UID ended it
                assert [d.txn for d in ends] == claims, (uid, ends, claims)
            if state == IN_PROGRESS:  # the holder can still finish it, nobody else
                [holder] = claims
                other = client.put(f"/workitems/{uid}/state", json=state_change(CANCELED, "1.2"))
                assert other.status_code == 400
                own_end = client.put(f"/workitems/{uid}/state", json=state_change(CANCELED, holder))
                assert own_end.status_code == 200, warning(own_end)
                assert_allowed(retrieve(client, uid), secrets)
