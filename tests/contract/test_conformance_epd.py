"""``aifi conformance epd`` (issue 18 point 3) against the test EPD server
(:mod:`tests.support.epd`, a real HTTP server on a loopback port): it passes against the
honest server, fails ``push.idempotent`` against one that duplicates on a second push, and
names a rest-hook endpoint that answers 500; the report files are written every time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from aifi.cli import app
from aifi.oauth_client import Credentials
from tests.support.epd import Recorded, running_epd

REQUIRED = {
    "metadata",
    "types.DiagnosticReport",
    "types.Observation",
    "push.transaction",
    "push.idempotent",
    "push.outcome",
    "hook.handshake",
    "hook.heartbeat",
    "hook.notification",
}


def _run(report_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["conformance", "epd", *args, "--report", str(report_dir)])
    data = (
        json.loads((report_dir / "report.json").read_text())
        if (report_dir / "report.json").exists()
        else {}
    )
    return result.exit_code, data, result.output


def _cases(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in data["cases"]}


def _files_written(report_dir: Path) -> None:
    for name in ("report.json", "report.html", "junit.xml"):
        assert (report_dir / name).stat().st_size > 0, name


def _notification_types(posts: list[Recorded]) -> list[str]:
    kinds = []
    for post in posts:
        assert post.body["resourceType"] == "Bundle"
        assert post.body["type"] == "history"
        status = post.body["entry"][0]["resource"]
        assert status["resourceType"] == "Parameters"
        kinds.append(next(p["valueCode"] for p in status["parameter"] if p["name"] == "type"))
    return kinds


def test_passes_against_the_test_epd(tmp_path: Path) -> None:
    with running_epd() as server:
        code, data, output = _run(
            tmp_path,
            "--fhir",
            server.fhir_base,
            "--endpoint",
            server.hook("kit"),
            "--hook-header",
            "X-Hook-Secret: generated",
        )
        posts = server.posts("/hooks/kit")
        held = {kind: len(found) for kind, found in server.resources.items()}
    assert code == 0, output
    _files_written(tmp_path)
    cases = _cases(data)
    assert data["kind"] == "epd" and data["passed"] is True
    assert data["target"]["fhir"] == server.fhir_base
    assert data["target"]["endpoint"] == server.hook("kit")
    for case_id in REQUIRED:
        assert cases[case_id]["required"] is True, case_id
        assert cases[case_id]["status"] == "pass", (case_id, cases[case_id]["message"])
    assert cases["hook.error"]["required"] is False
    assert cases["hook.error"]["status"] == "pass"
    # pushed twice, held once; the invalid report was refused with an OperationOutcome
    assert held == {"DiagnosticReport": 1, "Observation": 2}
    outcome = cases["push.outcome"]["evidence"][-1]
    assert outcome["status"] == 400 and outcome["resourceType"] == "OperationOutcome"
    assert cases["push.idempotent"]["evidence"][-1]["entries"] == [
        "DiagnosticReport: 200",
        "Observation: 200",
        "Observation: 200",
    ]
    # the notifications as the hub sends them, with the Subscription's header
    assert _notification_types(posts) == [
        "handshake",
        "heartbeat",
        "event-notification",
        "event-notification",
    ]
    assert all(post.headers.get("X-Hook-Secret") == "generated" for post in posts)
    assert cases["hook.notification"]["timings"]["timeout"] == 10.0
    # a generated patient, never a real one
    [report] = (e["resource"] for e in posts[2].body["entry"][1:])
    assert report["subject"]["identifier"]["system"].endswith("AIFI-CONFORMANCE-KIT")


def test_a_duplicating_epd_fails_push_idempotent(tmp_path: Path) -> None:
    with running_epd(duplicates=True) as server:
        code, data, output = _run(tmp_path, "--fhir", server.fhir_base)
        held = {kind: len(found) for kind, found in server.resources.items()}
    assert code == 1, output
    _files_written(tmp_path)
    cases = _cases(data)
    assert data["passed"] is False
    idempotent = cases["push.idempotent"]
    assert idempotent["status"] == "fail"
    assert "DiagnosticReport" in idempotent["message"]
    assert "Observation" in idempotent["message"]
    found = idempotent["evidence"][-1]["found_by_identifier"]
    assert sorted(found.values()) == [2, 2, 2]
    assert held == {"DiagnosticReport": 2, "Observation": 4}
    assert cases["push.transaction"]["status"] == "pass"
    assert "FAIL  push.idempotent" in output


def test_hook_cases_are_optional_and_skipped_without_an_endpoint(tmp_path: Path) -> None:
    with running_epd() as server:
        code, data, output = _run(tmp_path, "--fhir", server.fhir_base, "--token", "kit-token")
        transactions = server.posts("/fhir")
    assert code == 0, output
    cases = _cases(data)
    for case_id in ("hook.handshake", "hook.heartbeat", "hook.notification", "hook.error"):
        assert cases[case_id]["status"] == "skip"
        assert cases[case_id]["required"] is False
        assert "--endpoint" in cases[case_id]["message"]
    assert data["target"]["auth"] == "bearer token (given)"
    assert "kit-token" not in (tmp_path / "report.json").read_text()
    assert transactions
    assert all(t.headers.get("Authorization") == "Bearer kit-token" for t in transactions)


def test_a_hook_that_answers_500_fails_with_its_status(tmp_path: Path) -> None:
    with running_epd() as server:
        server.hook_status["/hooks/broken"] = 500
        code, data, output = _run(
            tmp_path, "--fhir", server.fhir_base, "--endpoint", server.hook("broken")
        )
    assert code == 1, output
    _files_written(tmp_path)
    cases = _cases(data)
    for case_id in ("hook.handshake", "hook.heartbeat", "hook.notification"):
        assert cases[case_id]["status"] == "fail"
        assert "500" in cases[case_id]["message"]
        assert cases[case_id]["evidence"][-1]["status"] == 500
    assert cases["hook.error"]["status"] == "warn"
    assert cases["push.transaction"]["status"] == "pass"


def test_credentials_whose_token_endpoint_does_not_answer_fail_auth(tmp_path: Path) -> None:
    credentials = tmp_path / "epd-client.json"
    Credentials(
        client_id="kit", token_url="http://127.0.0.1:9/token", secret="kit-secret-value"
    ).write(credentials)
    with running_epd() as server:
        code, data, output = _run(
            tmp_path / "report", "--fhir", server.fhir_base, "--credentials", str(credentials)
        )
        transactions = server.posts("/fhir")
    assert code == 1, output
    cases = _cases(data)
    assert cases["auth.token"]["required"] is True
    assert cases["auth.token"]["status"] == "fail"
    assert cases["push.transaction"]["status"] == "fail"
    assert transactions == []
    assert "kit-secret-value" not in (tmp_path / "report" / "report.json").read_text()


def test_a_server_that_is_not_fhir_fails_metadata_and_the_push(tmp_path: Path) -> None:
    with running_epd() as server:
        code, data, output = _run(tmp_path, "--fhir", server.url + "/not-fhir")
    assert code == 1, output
    cases = _cases(data)
    assert cases["metadata"]["status"] == "fail"
    assert "404" in cases["metadata"]["message"]
    assert cases["types.DiagnosticReport"]["status"] == "skip"
    assert cases["push.transaction"]["status"] == "fail"
    assert "not a transaction-response" in cases["push.transaction"]["message"]
    assert cases["push.idempotent"]["status"] == "skip"
    assert cases["push.outcome"]["status"] == "fail"  # 200 for an invalid report


def test_bad_options_are_refused_before_any_request(tmp_path: Path) -> None:
    with running_epd() as server:
        code, _, output = _run(tmp_path, "--fhir", server.fhir_base, "--endpoint", "not-a-url")
        assert server.requests == []
    assert code == 2
    assert "endpoint" in output
