"""PACS destinations: the YAML configuration, and what a STOW-RS answer means per instance
(PS3.18 §10.5.3, Store Instances Response Module Table 10.5.3-2). Pure code, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aifi.hub.delivery.destinations import (
    DestinationsConfig,
    DicomwebDestination,
    DicomwebPacs,
    DimseDestination,
    DimsePacs,
    OutgoingInstance,
    SendOutcome,
    client_for,
    load_destinations,
    parse_store_response,
    status_meaning,
    stow_outcomes,
)
from aifi.hub.delivery.dimse_client import MAX_CONTEXTS, _batches, requested_contexts

EXAMPLE = """
tenants:
  st-elsewhere:
    - kind: dicomweb
      name: main-pacs
      url: https://pacs.st-elsewhere.example/dicom-web/
      timeout_seconds: 60
      headers:
        Authorization: Bearer 0123456789abcdef
    - kind: dimse
      name: reading-room
      host: 10.1.2.3
      port: 104
      called_ae: " RR_ARCHIVE "
  general-hospital: []
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "destinations.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_configuration_is_read(tmp_path: Path) -> None:
    config = load_destinations(_write(tmp_path, EXAMPLE))
    web, dimse = config.for_tenant("st-elsewhere")
    assert isinstance(web, DicomwebDestination)
    assert web.url == "https://pacs.st-elsewhere.example/dicom-web"
    assert web.stow_url == "https://pacs.st-elsewhere.example/dicom-web/studies"
    assert web.timeout_seconds == 60
    assert web.headers == {"Authorization": "Bearer 0123456789abcdef"}
    assert isinstance(dimse, DimseDestination)
    assert (dimse.host, dimse.port, dimse.called_ae, dimse.calling_ae) == (
        "10.1.2.3",
        104,
        "RR_ARCHIVE",  # non-significant spaces removed (PS3.5 §6.2)
        "AIFI-HUB",
    )
    assert dimse.timeout_seconds == 30
    assert config.for_tenant("general-hospital") == []
    assert config.destination("st-elsewhere", "reading-room") == dimse
    assert config.destination("st-elsewhere", "nowhere") is None


def test_unknown_tenant_and_no_file_have_no_destinations(tmp_path: Path) -> None:
    assert load_destinations(None).for_tenant("st-elsewhere") == []
    assert load_destinations(_write(tmp_path, EXAMPLE)).for_tenant("unknown") == []
    assert load_destinations(_write(tmp_path, "")).tenants == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenants: [unclosed", "not valid YAML"),
        ("- just a list", "expected a mapping with 'tenants'"),
        (
            "tenants:\n  t1:\n    - {kind: ftp, name: x}\n",
            "does not match any of the expected tags",
        ),
        ("tenants:\n  t1:\n    - {kind: dimse, name: x, host: h, port: 104}\n", "called_ae"),
        (
            "tenants:\n  t1:\n    - {kind: dimse, name: x, host: h, port: 104,"
            " called_ae: THIS_TITLE_IS_TOO_LONG}\n",
            "1-16 characters",
        ),
        (
            "tenants:\n  t1:\n    - {kind: dimse, name: x, host: h, port: 104,"
            " called_ae: 'BACK\\\\SLASH'}\n",
            "no backslash",
        ),
        (
            "tenants:\n  t1:\n    - {kind: dimse, name: x, host: h, port: 104, called_ae: '  '}\n",
            "1-16 characters",
        ),
        ("tenants:\n  t1:\n    - {kind: dimse, name: x, host: h, port: 0, called_ae: A}\n", "port"),
        (
            "tenants:\n  t1:\n    - {kind: dicomweb, name: a, url: 'http://h/dw'}\n"
            "    - {kind: dimse, name: a, host: h, port: 104, called_ae: A}\n",
            "destination name 'a' is used twice",
        ),
        ("tenants:\n  t1:\n    - {kind: dicomweb, name: a, url: 'ftp://h/dw'}\n", "http"),
        (
            "tenants:\n  t1:\n    - {kind: dicomweb, name: a, url: 'http://h/dw', extra: 1}\n",
            "extra",
        ),
        (
            "tenants:\n  t1:\n    - {kind: dicomweb, name: a, url: 'http://h/dw',"
            " headers: {Content-Type: x}}\n",
            "set by the STOW-RS client",
        ),
        (
            "tenants:\n  Bad Tenant:\n    - {kind: dicomweb, name: a, url: 'http://h/dw'}\n",
            "invalid tenant id",
        ),
        ("tenants:\n  t1:\n    - {kind: dicomweb, name: 'a b', url: 'http://h/dw'}\n", "name"),
        (
            "tenants:\n  t1:\n    - {kind: dicomweb, name: a, url: 'http://h',"
            " timeout_seconds: 0}\n",
            "timeout_seconds",
        ),
    ],
)
def test_invalid_configuration_names_the_file_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as raised:
        load_destinations(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ValueError, match=r"absent\.yaml: cannot read"):
        load_destinations(path)


def test_client_for_each_kind() -> None:
    config = DestinationsConfig.model_validate(
        {
            "tenants": {
                "t1": [
                    {"kind": "dicomweb", "name": "web", "url": "http://127.0.0.1:1/dw"},
                    {
                        "kind": "dimse",
                        "name": "dimse",
                        "host": "127.0.0.1",
                        "port": 1,
                        "called_ae": "PACS",
                        "timeout_seconds": 2,
                    },
                ]
            }
        }
    )
    web, dimse = (client_for(d) for d in config.for_tenant("t1"))
    try:
        assert isinstance(web, DicomwebPacs)
        assert web.stow_url == "http://127.0.0.1:1/dw/studies"
        assert web.name == "web"
        assert isinstance(dimse, DimsePacs)
        assert (dimse.called_ae, dimse.calling_ae, dimse.timeout_seconds) == ("PACS", "AIFI-HUB", 2)
        assert web.send([]) == [] and dimse.send([]) == []
    finally:
        web.close()
        dimse.close()


# --- STOW-RS answers ------------------------------------------------------------------------

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
FILES = [OutgoingInstance(CT, f"1.2.3.{i}", EXPLICIT, Path(f"/nowhere/{i}.dcm")) for i in (1, 2, 3)]


def _items(*pairs: tuple[str, str, int | None]) -> dict[str, object]:
    items = []
    for uid, reason_tag, code in pairs:
        item: dict[str, object] = {
            "00081150": {"vr": "UI", "Value": [CT]},
            "00081155": {"vr": "UI", "Value": [uid]},
        }
        if code is not None:
            item[reason_tag] = {"vr": "US", "Value": [code]}
        items.append(item)
    return {"vr": "SQ", "Value": items}


def _response(referenced=(), failed=(), other=()) -> bytes:
    module: dict[str, object] = {"00081190": {"vr": "UR", "Value": ["http://pacs/studies/1"]}}
    if referenced:
        module["00081199"] = _items(*[(uid, "00081196", code) for uid, code in referenced])
    if failed:
        module["00081198"] = _items(*[(uid, "00081197", code) for uid, code in failed])
    if other:
        module["0008119A"] = {
            "vr": "SQ",
            "Value": [{"00081197": {"vr": "US", "Value": [c]}} for c in other],
        }
    return json.dumps(module).encode()


def _by_uid(outcomes: list[SendOutcome]) -> dict[str, SendOutcome]:
    assert [o.sop_instance_uid for o in outcomes] == [f.sop_instance_uid for f in FILES]
    return {o.sop_instance_uid: o for o in outcomes}


def test_200_all_referenced_is_delivered() -> None:
    parsed = parse_store_response(_response(referenced=[(f.sop_instance_uid, None) for f in FILES]))
    assert set(parsed.referenced) == {f.sop_instance_uid for f in FILES}
    outcomes = stow_outcomes(FILES, 200, parsed, pacs="PACS 'main'")
    assert len(outcomes) == len(FILES)  # one for each instance
    assert all(o.delivered and not o.retryable for o in outcomes)
    assert all(o.reason == "stored by PACS 'main' (HTTP 200)" for o in outcomes)


def test_202_partial_gives_each_instance_its_own_fate() -> None:
    body = _response(
        referenced=[("1.2.3.1", 0xB000)],
        failed=[("1.2.3.2", 0xA900), ("1.2.3.3", 0xA700)],
    )
    outcomes = _by_uid(stow_outcomes(FILES, 202, parse_store_response(body), pacs="P"))
    warned, refused, busy = outcomes["1.2.3.1"], outcomes["1.2.3.2"], outcomes["1.2.3.3"]
    assert warned.delivered and "warning 0xB000 (Coercion of Data Elements)" in warned.reason
    assert not refused.delivered and not refused.retryable
    assert "refused: 0xA900 (Data Set Does Not Match SOP Class) (HTTP 202)" in refused.reason
    assert not busy.delivered and busy.retryable
    assert "0xA700 (Refused: Out of Resources)" in busy.reason


def test_202_without_mention_is_retryable() -> None:
    body = _response(referenced=[("1.2.3.1", None)])
    outcomes = _by_uid(stow_outcomes(FILES, 202, parse_store_response(body), pacs="P"))
    assert outcomes["1.2.3.1"].delivered
    assert (
        outcomes["1.2.3.2"].retryable and "did not list this instance" in outcomes["1.2.3.2"].reason
    )


@pytest.mark.parametrize("status", [400, 409, 415])
def test_refusal_is_not_retryable_and_carries_the_failure_reason(status: int) -> None:
    body = _response(failed=[("1.2.3.1", 0xC122), ("1.2.3.2", 0x0122)], other=[0xC000])
    outcomes = _by_uid(
        stow_outcomes(FILES, status, parse_store_response(body), pacs="P", detail="Warning: 299 x")
    )
    assert not any(o.delivered or o.retryable for o in outcomes.values())
    assert "0xC122 (Referenced Transfer Syntax not supported)" in outcomes["1.2.3.1"].reason
    assert "0x0122 (Refused: SOP Class Not Supported)" in outcomes["1.2.3.2"].reason
    unlisted = outcomes["1.2.3.3"].reason
    assert f"refused the request (HTTP {status}, Warning: 299 x)" in unlisted
    assert "other failures: 0xC000 (Cannot Understand)" in unlisted


@pytest.mark.parametrize("status", [408, 429, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    outcomes = stow_outcomes(FILES, status, None, pacs="P", retry_after="120")
    assert len(outcomes) == len(FILES)  # one for each instance
    assert all(not o.delivered and o.retryable for o in outcomes)
    assert f"P is unavailable for now (HTTP {status}, Retry-After: 120)" == outcomes[0].reason


@pytest.mark.parametrize("status", [401, 403, 404, 500, 302])
def test_other_statuses_are_refusals(status: int) -> None:
    outcomes = stow_outcomes(FILES, status, None, pacs="P")
    assert len(outcomes) == len(FILES)  # one for each instance
    assert all(not o.delivered and not o.retryable for o in outcomes)


def test_200_without_a_body_means_all_stored() -> None:
    outcomes = stow_outcomes(FILES, 200, None, pacs="P")
    assert len(outcomes) == len(FILES)  # one for each instance
    assert all(o.delivered for o in outcomes)


@pytest.mark.parametrize("body", [b"", b"   ", b"<NativeDicomModel/>", b"[1, 2]", b"{broken"])
def test_unreadable_store_response_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_store_response(body)


def test_store_response_is_read_tolerantly() -> None:
    # Wrapped in a one-element array; an item without a UID and a non-numeric reason.
    body = json.dumps(
        [
            {
                "00081198": {
                    "vr": "SQ",
                    "Value": [
                        {"00081197": {"vr": "US", "Value": [0xC000]}},
                        {
                            "00081155": {"vr": "UI", "Value": ["1.2.3.1"]},
                            "00081197": {"vr": "US", "Value": ["x"]},
                        },
                    ],
                },
                "00081199": {"vr": "SQ"},
            }
        ]
    ).encode()
    parsed = parse_store_response(body)
    assert parsed.failed == {"1.2.3.1": None}
    assert parsed.referenced == {}
    [outcome] = stow_outcomes(FILES[:1], 409, parsed, pacs="P")
    assert "no Failure Reason given" in outcome.reason


def test_status_meanings() -> None:
    assert status_meaning(0xA702) == "Refused: Out of Resources"
    assert status_meaning(0xB007) == "Data Set Does Not Match SOP Class"
    assert status_meaning(0xC122) == "Referenced Transfer Syntax not supported"
    assert status_meaning(0x1234) == "unknown status"


def test_a_delivered_outcome_is_never_retryable() -> None:
    with pytest.raises(ValueError):
        SendOutcome("1.2", delivered=True, retryable=True, reason="")


# --- DIMSE presentation contexts -------------------------------------------------------------

JPEG = "1.2.840.10008.1.2.4.50"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
IMPLICIT = "1.2.840.10008.1.2"


def test_contexts_offer_the_stored_syntax_then_explicit_and_implicit_vr_little_endian() -> None:
    files = [
        OutgoingInstance(CT, "1.1", JPEG, Path("a")),
        OutgoingInstance(CT, "1.2", EXPLICIT, Path("b")),
        OutgoingInstance(SR, "1.3", EXPLICIT, Path("c")),
        OutgoingInstance(SR, "1.4", IMPLICIT, Path("d")),
    ]
    offered = [
        (str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax])
        for cx in requested_contexts(files)
    ]
    assert offered == [
        (CT, [JPEG]),
        (CT, [EXPLICIT]),
        (CT, [IMPLICIT]),
        (SR, [EXPLICIT]),
        (SR, [IMPLICIT]),
    ]


def test_many_sop_classes_are_split_over_associations() -> None:
    files = [
        OutgoingInstance(f"1.2.826.0.1.3680043.8.498.{i}", f"9.{i}", JPEG, Path("x"))
        for i in range(100)
    ]  # three contexts each
    per_association = MAX_CONTEXTS // 3
    batches = _batches(files)
    assert [len(b) for b in batches] == [
        per_association,
        per_association,
        100 - 2 * per_association,
    ]
    assert [i for b in batches for i in b] == list(range(100))
    for batch in batches:
        assert len(requested_contexts([files[i] for i in batch])) <= MAX_CONTEXTS
