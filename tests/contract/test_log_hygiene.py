"""No tokens and no identifiers in the logs (issue 6 "safe by default").

A hub with the built-in authorization server runs under uvicorn with the logging
configuration ``aifi serve`` uses (:func:`aifi.hub.log_hygiene.uvicorn_log_config`, access
log at INFO) and its Task Manager; a real client gets a token (``client_secret_basic``),
stores a study (STOW-RS), searches it by patient name, id and accession number (QIDO-RS),
retrieves it (WADO-RS), signals it complete so that it is routed to an AI product, reads
the worklist and FHIR, sends a bad token and a token in a query string. Every log record
of the hub at INFO and above — uvicorn's access and error logs, the hub's own loggers —
must be free of the access token, the client secret, the Study/Series/SOP Instance UIDs,
the patient's name and id and the accession number; and the access log must show the
requests (as their route shape), so the check is not vacuous.

``aifi serve`` with ``AIFI_AUTH=off`` outside development mode refuses to start with the
reason and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from typer.testing import CliRunner

from aifi.cli import app as cli_app
from aifi.conformance.pilot_studies import hand_xray
from aifi.hub.app import create_app
from aifi.hub.log_hygiene import redact_path, uvicorn_log_config
from aifi.hub.serve import free_port
from aifi.oauth_client import ClientCredentials
from tests.conftest import LiveServer
from tests.support.auth import auth_settings, register
from tests.support.dicom import multipart_related, to_bytes
from tests.support.wait import returns_of, wait_until

PATIENT_NAME = "Vermeulen^Johanna"
PATIENT_ID = "PID-LOGCHECK-4711"
ACCESSION = "ACC-LOGCHECK-0815"
SCOPES = (
    "dicomweb.read",
    "dicomweb.write",
    "worklist.requester",
    "results.read",
    "system/*.rs",
)
JSON = {"Accept": "application/dicom+json"}
DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.records.append(record)

    def texts(self) -> list[str]:
        out = []
        for record in list(self.records):
            text = f"{record.name} {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += " " + repr(record.exc_info[1])
            out.append(text)
        return out


@contextmanager
def served_like_aifi_serve(settings_dir: Path) -> Iterator[tuple[LiveServer, Capture]]:
    """The hub under uvicorn with ``aifi serve``'s logging, the Task Manager running, and a
    handler catching every record at INFO and above (root, and uvicorn's loggers, which do
    not propagate)."""
    capture = Capture()
    application = create_app(auth_settings(settings_dir, task_manager_poll_seconds=0.05))
    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="info",
        log_config=uvicorn_log_config(),
        lifespan="on",
    )
    server = uvicorn.Server(config)  # configures logging (dictConfig) here
    root = logging.getLogger()
    watched = [root, logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]
    old_level = root.level
    root.setLevel(logging.INFO)
    for logger in watched:
        logger.addHandler(capture)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:

        def started() -> bool:
            assert thread.is_alive(), "uvicorn did not start"
            return server.started

        wait_until(started, 20, "uvicorn to start")
        yield LiveServer(url=url, app=application), capture
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for logger in watched:
            logger.removeHandler(capture)
        root.setLevel(old_level)
        application.state.hub.close()


def test_no_token_secret_or_identifier_reaches_the_logs(tmp_path: Path) -> None:
    study = hand_xray(age_years=9.0)
    for ds in study:
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.AccessionNumber = ACCESSION
    study_uid = str(study[0].StudyInstanceUID)
    series_uid = str(study[0].SeriesInstanceUID)
    sop_uid = str(study[0].SOPInstanceUID)

    with served_like_aifi_serve(tmp_path / "data") as (server, capture):
        rounds = returns_of(server.app.state.hub.task_manager, "tick")
        credentials = register(server, role="hospital", scopes=SCOPES)
        auth = ClientCredentials(credentials, SCOPES)
        token = auth.token()
        dicomweb = server.dicomweb
        with httpx.Client(timeout=30, auth=auth) as client:
            body, content_type = multipart_related([to_bytes(ds) for ds in study])
            stored = client.post(
                f"{dicomweb}/studies", content=body, headers={"Content-Type": content_type}
            )
            assert stored.status_code == 200, stored.text
            for query in (
                {"PatientName": "Vermeulen*"},
                {"PatientID": PATIENT_ID},
                {"AccessionNumber": ACCESSION},
                {"StudyInstanceUID": study_uid},
            ):
                found = client.get(f"{dicomweb}/studies", params=query, headers=JSON)
                assert found.status_code == 200 and found.json(), query
            series = f"{dicomweb}/studies/{study_uid}/series/{series_uid}"
            assert client.get(f"{dicomweb}/studies/{study_uid}", headers=DICOM).status_code == 200
            assert client.get(f"{series}/metadata", headers=JSON).status_code == 200
            instance = client.get(f"{series}/instances/{sop_uid}", headers=DICOM)
            assert instance.status_code == 200
            # the Task Manager routes it (bone age, fracture) and logs the workitems
            done = client.post(f"{server.url}/api/v1/studies/{study_uid}/complete")
            assert done.status_code < 300, done.text

            def routed() -> list[object]:
                answer = client.get(
                    f"{dicomweb}/workitems", params={"PatientID": PATIENT_ID}, headers=JSON
                )
                return list(answer.json()) if answer.status_code == 200 else []

            wait_until(routed, 20, "the study to be routed", interval=0.1)
            fhir = {"Accept": "application/fhir+json"}
            tasks = client.get(f"{server.url}/fhir/Task", headers=fhir)
            assert tasks.status_code == 200, tasks.text
            client.get(
                f"{server.url}/fhir/Patient", params={"identifier": PATIENT_ID}, headers=fhir
            )
        # a bad token, and a token where it does not belong (a query string)
        with httpx.Client(timeout=30) as anonymous:
            bad = anonymous.get(
                f"{dicomweb}/studies",
                params={"PatientID": PATIENT_ID},
                headers={"Authorization": f"Bearer {token[:-4]}AAAA"},
            )
            assert bad.status_code == 401
            leaked = anonymous.get(f"{dicomweb}/studies", params={"access_token": token})
            assert leaked.status_code == 401
        after = len(rounds)

        def settled() -> bool:
            """Two more Task Manager rounds (the second begun after the last request) and
            the access log's lines of the two refused requests."""
            refused = [
                text
                for text in capture.texts()
                if text.startswith("uvicorn.access")
                and "/dicomweb/studies?…" in text
                and " 401" in text
            ]
            return len(rounds) >= after + 2 and len(refused) >= 2

        wait_until(settled, 10, "the Task Manager's next rounds and the access log's last lines")
        texts = capture.texts()

    secrets = {
        "access token": token,
        "client secret": credentials.secret or "",
        "Study Instance UID": study_uid,
        "Series Instance UID": series_uid,
        "SOP Instance UID": sop_uid,
        "patient name": "Vermeulen",
        "patient id": PATIENT_ID,
        "accession number": ACCESSION,
    }
    for what, value in secrets.items():
        assert value
        leaks = [text for text in texts if value in text]
        assert not leaks, f"{what} in the logs: {leaks[:3]}"
    access = [text for text in texts if text.startswith("uvicorn.access")]
    assert any(
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}" in t for t in access
    )
    assert any("/dicomweb/studies?…" in t for t in access), access[:5]
    assert any("/oauth/token" in t for t in access)
    assert any("orchestration.routing" in t and "workitem" in t for t in texts), (
        "no routing log seen"
    )


def test_redact_path_keeps_the_route_shape_only() -> None:
    assert redact_path("/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1,2?x=1") == (
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}?…"
    )
    assert redact_path("/dicomweb/workitems/1.2.3/subscribers/MYAE/suspend") == (
        "/dicomweb/workitems/{workitem}/subscribers/{ae_title}/suspend"
    )
    assert (
        redact_path("/fhir/Patient/jansen-1/_history/2") == "/fhir/Patient/{id}/_history/{version}"
    )
    assert redact_path("/fhir/DiagnosticReport?subject=Patient/1") == "/fhir/DiagnosticReport?…"
    assert redact_path("/dicomweb/studies/1.2/series/3/instances/4/bulkdata/a/b") == (
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}"
    )
    assert redact_path("https://pacs.example/dicom-web/studies/1.2.3") == (
        "https://pacs.example/{…}/studies/{study}"
    )
    assert redact_path("/api/v1/results/1.2.3/deliveries/pacs/retry") == (
        "/api/v1/results/{workitem_uid}/deliveries/{destination}/retry"
    )


def test_serve_refuses_to_start_without_authentication_outside_development_mode(
    tmp_path: Path,
) -> None:
    env = {"AIFI_AUTH": "off", "AIFI_DEV_MODE": "false"}
    result = CliRunner().invoke(
        cli_app, ["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"], env=env
    )
    assert result.exit_code == 2, result.output
    assert "refusing to start" in result.output
    assert "AIFI_AUTH=off" in result.output and "AIFI_DEV_MODE=true" in result.output
    # and as a process, as an operator would start it
    process = subprocess.run(
        [sys.executable, "-m", "aifi", "serve", "--data-dir", str(tmp_path / "data2")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2
    assert "authentication is off" in process.stderr


def test_serve_log_level_reaches_the_hubs_own_loggers(tmp_path: Path) -> None:
    """``aifi serve --log-level info`` shows the hub's own INFO lines (here: the
    de-identification guard refusing an instance), named, with nothing identifying in them;
    ``--log-level warning`` does not."""
    from aifi.hub.serve import serve_subprocess

    study = hand_xray(age_years=9.0)
    for ds in study:
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
    body, content_type = multipart_related([to_bytes(ds) for ds in study])
    env = {"AIFI_REQUIRE_DEIDENTIFIED": "true"}
    for level, shown in (("info", True), ("warning", False)):
        log = tmp_path / f"{level}.log"
        with serve_subprocess(tmp_path / level, log, auth="dev", env=env, log_level=level) as (
            process,
            url,
        ):
            refused = httpx.post(
                url + "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
            )
            assert refused.status_code == 409
            process.terminate()
            process.wait(30)
        text = log.read_text()
        line = "aifi.hub.results.gate: refused 1 instances not marked de-identified (C411)"
        assert (line in text) is shown, text[-2000:]
        assert PATIENT_NAME not in text and PATIENT_ID not in text
