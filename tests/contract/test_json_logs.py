"""JSON log lines (issue 19 point 4): ``aifi serve`` with ``AIFI_LOG_FORMAT=json`` and the
built-in authorization server writes one JSON object per line (time, level, logger,
message), an access line per request with the route TEMPLATE, method, status, duration and
request id (the safe ``X-Request-ID`` a client sent, else a new one, echoed in the
response), and no token, client secret, UID, patient name or patient id in any line, though
each was planted in the requests (path, query string, ``Authorization``, ``X-Request-ID``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

import aifi
from aifi.hub.admin.local_clients import register_local_clients
from aifi.hub.json_logs import JsonFormatter, safe_request_id
from aifi.hub.serve import free_port, serve_subprocess
from aifi.hub.settings import Settings
from tests.support.dicom import make_study, multipart_related, to_bytes

PATIENT_NAME = "Jsonlog^Hendrika"
PATIENT_ID = "PID-JSONLOG-9911"
JSON = {"Accept": "application/dicom+json"}


def _parse(text: str) -> list[dict[str, Any]]:
    """Every line as JSON, but the command's start-up banner: it is ``aifi serve``'s message
    to the operator on standard output (the log lines go to standard error), written
    before logging is set up; ``serve_subprocess`` writes both to one file."""
    banner = f"aifi-hub {aifi.__version__}: "
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(banner)]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
    return parsed


def test_aifi_serve_writes_json_lines_without_identifiers(tmp_path: Path) -> None:
    study = make_study(1, 1)
    for ds in study:
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
    study_uid = str(study[0].StudyInstanceUID)
    series_uid = str(study[0].SeriesInstanceUID)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir, log = tmp_path / "data", tmp_path / "hub.log"
    clients = register_local_clients(
        Settings(data_dir=data_dir), url, tmp_path, products=(), label="json-logs"
    )
    auth = clients.hospital_auth()
    env = {
        "AIFI_LOG_FORMAT": "json",
        "AIFI_TASK_MANAGER": "false",
        "AIFI_FSYNC": "false",
        "AIFI_REQUIRE_DEIDENTIFIED": "false",  # identifiers stored, to be planted
    }
    sent_id = str(uuid.uuid4())
    with (
        serve_subprocess(data_dir, log, port=port, auth="builtin", env=env, log_level="info"),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        token = auth.token()
        bearer = {"Authorization": f"Bearer {token}"}
        body, content_type = multipart_related([to_bytes(ds) for ds in study])
        stored = client.post(
            "/dicomweb/studies", content=body, headers={**bearer, "Content-Type": content_type}
        )
        assert stored.status_code == 200, stored.text
        found = client.get(
            f"/dicomweb/studies/{study_uid}/series",
            headers={**bearer, **JSON, "X-Request-ID": sent_id},
        )
        assert found.status_code == 200 and found.headers["x-request-id"] == sent_id
        unsafe = client.get(
            "/dicomweb/studies",
            params={"PatientID": PATIENT_ID},
            headers={**bearer, **JSON, "X-Request-ID": PATIENT_ID},
        )
        assert unsafe.status_code == 200
        replaced = unsafe.headers["x-request-id"]
        assert replaced != PATIENT_ID and safe_request_id(replaced) == replaced
        refused = client.get(
            f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata",
            headers={"Authorization": f"Bearer {token[:-4]}AAAA"},
        )
        assert refused.status_code == 401
        missing = client.get(f"/nowhere/{study_uid}", headers=bearer)
        assert missing.status_code in (401, 403, 404)
        answered = {
            "POST /dicomweb/studies": stored,
            "GET /dicomweb/studies/{StudyInstanceUID}/series": found,
            "GET /dicomweb/studies": unsafe,
            "GET /dicomweb/studies/{study}/series/{series}/metadata": refused,
        }
    text = log.read_text()
    lines = _parse(text)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line

    access = [line for line in lines if line["logger"] == "aifi.access"]
    for key, response in answered.items():
        method, route = key.split(" ")
        matching = [a for a in access if a["method"] == method and a["route"] == route]
        assert matching, f"no access line for {key}: {access}"
        line = matching[-1] if response is not refused else matching[0]
        assert line["status"] == response.status_code, line
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["request_id"] == response.headers["x-request-id"], line
    assert any(a["route"] is None for a in access), "the unmatched path has no template"
    assert any(a["route"] == "/oauth/token" and a["status"] == 200 for a in access)

    planted = {
        "access token": token,
        "client secret": auth.credentials.secret or "",
        "Study Instance UID": study_uid,
        "Series Instance UID": series_uid,
        "SOP Instance UID": str(study[0].SOPInstanceUID),
        "patient name": "Jsonlog",
        "patient id": PATIENT_ID,
    }
    for what, value in planted.items():
        assert value
        assert value not in text, f"{what} in the JSON logs"


def test_a_record_becomes_one_json_line() -> None:
    import logging

    record = logging.LogRecord("aifi.x", logging.WARNING, __file__, 1, "a %s\nb", ("c",), None)
    record.route = "/fhir/{resource_type}"
    record.status = 200
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "a c\nb" and parsed["level"] == "WARNING"
    assert parsed["route"] == "/fhir/{resource_type}" and parsed["status"] == 200
    assert parsed["time"].endswith("+00:00")


def test_only_uuid_or_hex_request_ids_are_kept() -> None:
    assert safe_request_id("0123456789abcdef0123456789abcdef") is not None
    assert safe_request_id(str(uuid.uuid4())) is not None
    for unsafe in (None, "", "1.2.840.10008.1", PATIENT_ID, "abc", "x" * 20, "0" * 65, "a b"):
        assert safe_request_id(unsafe) is None, unsafe
