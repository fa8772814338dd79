"""The gateway's HTTP side, driven by real clients against a real uvicorn: STOW-RS into the
gateway (PS3.18 §10.5: 200/202/409/415/400, the Store Instances Response), what lands on
disk and in the database (each stored instance once, its bytes as sent), the status page and
``aifi gateway status``, and the start-up recovery of instances whose rows were lost."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import text
from typer.testing import CliRunner

from aifi.cli import app as cli_app
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.config import ConfigError, load_config
from aifi.gateway.ingest.part10 import dataset_offset
from aifi.gateway.settings import GatewaySettings
from tests.conftest import LiveServer, free_port, run_live_server
from tests.support.dicom import make_ct, make_study, multipart_related, to_bytes
from tests.support.wait import wait_until

FAILED = "00081198"
REFERENCED = "00081199"
OTHER = "0008119A"
REASON = "00081197"
SOP_UID = "00081155"


@dataclass
class RunningGateway:
    gateway: Gateway
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    def rows(self) -> list[dict[str, Any]]:
        with self.gateway.db.reader.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(text("SELECT * FROM gw_instance ORDER BY pk")).mappings()
            ]

    def studies(self) -> list[dict[str, Any]]:
        with self.gateway.db.reader.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM gw_study")).mappings()]

    def files(self) -> list[Path]:
        root = self.gateway.store.root
        return sorted(p for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def running_gateway(data_dir: Path, config: str | None = None) -> Iterator[RunningGateway]:
    config_file = None
    if config is not None:
        config_file = data_dir.parent / f"{data_dir.name}.yaml"
        config_file.write_text(config)
    settings = GatewaySettings(
        data_dir=data_dir,
        host="127.0.0.1",
        dimse_port=free_port(),
        dev_mode=True,
        workers=False,  # no hub here: only the receiving side runs
        config_file=config_file,
    )
    gateway = build_gateway(settings)
    with run_live_server(gateway.app, lifespan=True) as server:
        yield RunningGateway(gateway, server)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as running:
        yield running


def post(gw: RunningGateway, parts: list[bytes], study: str | None = None) -> httpx.Response:
    body, content_type = multipart_related(parts)
    path = "/dicomweb/studies" + (f"/{study}" if study else "")
    return httpx.post(
        gw.url + path,
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )


def reasons(body: dict[str, Any], key: str = FAILED) -> list[int]:
    return [item[REASON]["Value"][0] for item in body.get(key, {}).get("Value", [])]


def dataset_sha(data: bytes) -> str:
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


# -- STOW-RS ------------------------------------------------------------------------------


def test_stow_stores_each_instance_on_disk_and_in_a_row(gw: RunningGateway) -> None:
    study = make_study(1, 3)
    sent = [to_bytes(ds) for ds in study]
    response = post(gw, sent)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [i[SOP_UID]["Value"][0] for i in body[REFERENCED]["Value"]] == [
        str(ds.SOPInstanceUID) for ds in study
    ]
    rows = gw.rows()
    assert [r["sop_instance_uid"] for r in rows] == [str(ds.SOPInstanceUID) for ds in study]
    for row, data in zip(rows, sent, strict=True):
        assert row["state"] == "received"
        assert row["source"] == "stow:127.0.0.1"
        assert row["association"] is None
        stored = (gw.gateway.settings.data_dir / row["file"]).read_bytes()
        assert stored == data  # the bytes as sent
        assert row["sha256"] == dataset_sha(data)
        assert row["size"] == len(data)
    (study_row,) = gw.studies()
    assert study_row["study_instance_uid"] == str(study[0].StudyInstanceUID)
    assert study_row["completion"] == "open"  # STOW-RS: the quiet time decides
    assert study_row["first_received_at"] <= study_row["last_received_at"]


def test_dicomweb_client_can_store(gw: RunningGateway) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=gw.url + "/dicomweb")
    study = make_study(1, 2)
    result = client.store_instances([dcmread(io.BytesIO(to_bytes(ds))) for ds in study])
    assert len(result.ReferencedSOPSequence) == 2
    assert "FailedSOPSequence" not in result
    assert {r["sop_instance_uid"] for r in gw.rows()} == {str(ds.SOPInstanceUID) for ds in study}


def test_identical_resend_is_success_without_a_second_row(gw: RunningGateway) -> None:
    data = to_bytes(make_ct())
    assert post(gw, [data]).status_code == 200
    again = post(gw, [data])
    assert again.status_code == 200, again.text
    assert len(gw.rows()) == 1
    assert len(gw.files()) == 1


def test_different_instance_with_a_stored_uid_is_refused(gw: RunningGateway) -> None:
    first = make_ct(patient_name="First^Version")
    second = make_ct(
        patient_name="Second^Version",
        sop_uid=str(first.SOPInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
    )
    assert post(gw, [to_bytes(first)]).status_code == 200
    response = post(gw, [to_bytes(second)])
    assert response.status_code == 409, response.text
    assert reasons(response.json()) == [0x0111]
    (row,) = gw.rows()
    stored = (gw.gateway.settings.data_dir / row["file"]).read_bytes()
    assert stored == to_bytes(first)  # the first version is kept untouched
    assert len(gw.files()) == 1


def test_truncated_and_garbage_parts_are_refused_and_nothing_is_stored(
    gw: RunningGateway,
) -> None:
    data = to_bytes(make_ct(rows=64, columns=64))
    response = post(gw, [data[: len(data) - 100], b"this is no DICOM at all" * 20])
    assert response.status_code == 409, response.text
    body = response.json()
    assert reasons(body, FAILED) == [0xC000]  # cannot understand: the data set is cut
    assert reasons(body, OTHER) == [0xC001]  # not a PS3.10 file, no UIDs to name
    assert "Warning" in response.headers
    assert gw.rows() == []
    assert gw.files() == []


def test_mix_of_good_and_bad_is_202(gw: RunningGateway) -> None:
    good = to_bytes(make_ct())
    bad = to_bytes(make_ct())[:-10]
    response = post(gw, [good, bad])
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body[REFERENCED]["Value"]) == 1
    assert len(gw.rows()) == 1


def test_study_in_path_must_match(gw: RunningGateway) -> None:
    ds = make_ct()
    response = post(gw, [to_bytes(ds)], study="1.2.3.4")
    assert response.status_code == 409
    assert reasons(response.json()) == [0xC409]
    ok = post(gw, [to_bytes(ds)], study=str(ds.StudyInstanceUID))
    assert ok.status_code == 200
    assert len(gw.rows()) == 1


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),  # no boundary
    ],
)
def test_bad_requests(gw: RunningGateway, content_type: str, status: int) -> None:
    response = httpx.post(
        gw.url + "/dicomweb/studies",
        content=to_bytes(make_ct()),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.headers["Warning"].startswith("299 ")
    assert gw.rows() == []


def test_empty_multipart_body_is_400(gw: RunningGateway) -> None:
    body, content_type = multipart_related([])
    response = httpx.post(
        gw.url + "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400


def test_stow_client_not_in_allow_list_is_403(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw", "stow:\n  allowed_addresses: [10.9.9.9]\n") as gw:
        response = post(gw, [to_bytes(make_ct())])
        assert response.status_code == 403
        assert "not allowed" in response.text
        assert gw.rows() == []


# -- status ---------------------------------------------------------------------------------


def test_healthz(gw: RunningGateway) -> None:
    assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"


def _seed_states(gw: RunningGateway) -> tuple[list[Any], list[Any]]:
    """Two studies; in the first one instance quarantined and one with a forwarding error."""
    first = make_study(1, 3)
    second = make_study(1, 1)
    assert post(gw, [to_bytes(ds) for ds in first + second]).status_code == 200
    with gw.gateway.db.transaction() as conn:
        conn.execute(
            text(
                "UPDATE gw_instance SET state='quarantined', reason='burned in annotation' "
                "WHERE sop_instance_uid=:uid"
            ),
            {"uid": str(first[0].SOPInstanceUID)},
        )
        conn.execute(
            text("UPDATE gw_instance SET state='forwarded' WHERE sop_instance_uid=:uid"),
            {"uid": str(first[1].SOPInstanceUID)},
        )
        conn.execute(
            text(
                "UPDATE gw_instance SET attempts=2, last_error='attempt 2: hub unreachable' "
                "WHERE sop_instance_uid=:uid"
            ),
            {"uid": str(first[2].SOPInstanceUID)},
        )
    return first, second


def test_status_page(gw: RunningGateway) -> None:
    first, second = _seed_states(gw)
    data = httpx.get(gw.url + "/api/v1/gateway/status").json()
    assert data["instances"] == {
        "received": 2,
        "forwarding": 0,
        "forwarded": 1,
        "quarantined": 1,
        "failed": 0,
    }
    assert data["studies"]["open"] == 2
    (quarantined,) = data["quarantined"]
    assert quarantined["sop_instance_uid"] == str(first[0].SOPInstanceUID)
    assert quarantined["reason"] == "burned in annotation"
    errors = {e["sop_instance_uid"]: e for e in data["last_errors"]}
    assert errors[str(first[2].SOPInstanceUID)]["error"] == "attempt 2: hub unreachable"
    assert errors[str(first[2].SOPInstanceUID)]["attempts"] == 2
    progress = {p["study_instance_uid"]: p for p in data["studies_progress"]}
    one = progress[str(first[0].StudyInstanceUID)]
    assert (one["received"], one["forwarded"], one["quarantined"]) == (3, 1, 1)
    assert one["completion"] == "open"
    assert progress[str(second[0].StudyInstanceUID)]["received"] == 1
    assert data["results"]["results"] == {"pending": 0, "stored": 0, "refused": 0, "failed": 0}
    limited = httpx.get(gw.url + "/api/v1/gateway/status?limit=1").json()
    assert len(limited["studies_progress"]) == 1


def test_the_status_page_is_readable_only_from_the_configured_addresses(tmp_path: Path) -> None:
    """It names original study UIDs: by default this machine only (the tests' loopback
    client reads it above); configured for a monitoring network, a loopback reader gets
    403 with the reason, and ``/healthz`` (no identifiers) stays open."""
    with running_gateway(
        tmp_path / "gw", "status:\n  allowed_addresses: [10.9.0.0/16]\n"
    ) as running:
        refused = httpx.get(running.url + "/api/v1/gateway/status")
        assert refused.status_code == 403
        assert "not readable from 127.0.0.1" in refused.json()["detail"]
        assert httpx.get(running.url + "/healthz").status_code == 200
    with pytest.raises(ConfigError, match="at least one address"):
        load_config(_yaml(tmp_path, "status:\n  allowed_addresses: []\n"))


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "status.yaml"
    path.write_text(text)
    return path


def test_status_command(gw: RunningGateway) -> None:
    first, _ = _seed_states(gw)
    runner = CliRunner()
    table = runner.invoke(cli_app, ["gateway", "status", "--url", gw.url])
    assert table.exit_code == 0, table.output
    assert (
        "Instances: received 2, forwarding 0, forwarded 1, quarantined 1, failed 0" in table.output
    )
    assert "burned in annotation" in table.output
    assert "hub unreachable" in table.output
    assert str(first[0].StudyInstanceUID) in table.output
    as_json = runner.invoke(cli_app, ["gateway", "status", "--url", gw.url, "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["instances"]["quarantined"] == 1
    down = runner.invoke(cli_app, ["gateway", "status", "--url", f"http://127.0.0.1:{free_port()}"])
    assert down.exit_code == 1


# -- start-up recovery ------------------------------------------------------------------------


def test_restart_indexes_files_whose_rows_were_lost_and_removes_leftovers(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "gw"
    kept, lost = make_ct(), make_ct()
    with running_gateway(data_dir) as gw:
        assert post(gw, [to_bytes(kept), to_bytes(lost)]).status_code == 200
        rows = {r["sop_instance_uid"]: r for r in gw.rows()}
        lost_row = rows[str(lost.SOPInstanceUID)]
        with gw.gateway.db.transaction() as conn:  # a commit a power cut took away
            conn.execute(text("DELETE FROM gw_instance WHERE pk=:pk"), {"pk": lost_row["pk"]})
        folder = data_dir / Path(lost_row["file"]).parent
        (folder / ".leftover.dcm.0123.tmp").write_bytes(b"half written")
        truncated = to_bytes(make_ct())[:-50]
        torn = make_ct()
        (folder / f"{torn.SOPInstanceUID}.0000000000000000.dcm").write_bytes(truncated)
    with running_gateway(data_dir) as gw:
        rows = {r["sop_instance_uid"]: r for r in gw.rows()}
        assert set(rows) == {str(kept.SOPInstanceUID), str(lost.SOPInstanceUID)}
        again = rows[str(lost.SOPInstanceUID)]
        assert again["file"] == lost_row["file"]
        assert again["sha256"] == lost_row["sha256"]
        assert again["state"] == "received"
        assert (data_dir / again["file"]).read_bytes() == to_bytes(lost)
        assert sorted(p.name for p in gw.files()) == sorted(
            Path(r["file"]).name for r in rows.values()
        )


# -- composition -------------------------------------------------------------------------------


@pytest.mark.parametrize("in_child", [False, True], ids=["same-process", "child-process"])
def test_the_forwarder_is_woken_by_the_ingest_and_its_errors_show(
    tmp_path: Path, in_child: bool
) -> None:
    """With the background workers on (forwarding, results, PACS delivery), in the
    gateway's process or in its child, and no hub listening: a received instance is tried
    at once (the ingest rang the forwarder's doorbell) and the failure shows on the status
    page."""
    settings = GatewaySettings(
        data_dir=tmp_path / "gw",
        dimse_port=free_port(),
        dev_mode=True,
        hub=f"http://127.0.0.1:{free_port()}",  # nobody there
        pacs="dimse://PACS@127.0.0.1:104",
        worker_process=in_child,
        worker_poll_seconds=30,  # only the doorbell can make it try within the test
    )
    gateway = build_gateway(settings)
    if in_child:
        assert gateway.workers == [] and gateway.worker_process is not None
    else:
        # priors only when ``priors:`` names a PACS; the EPD push only with ``fhir.epd_url``
        assert [w.name for w in gateway.workers] == [
            "forwarding",
            "results",
            "pacs-delivery",
            "fhir-subscriptions",
        ]
        assert gateway.worker_process is None
    assert [d.name for d in gateway.destinations] == ["pacs"]
    with run_live_server(gateway.app, lifespan=True) as server:
        body, content_type = multipart_related([to_bytes(make_ct())])
        stored = httpx.post(
            server.url + "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
        )
        assert stored.status_code == 200
        errors: list[dict[str, Any]] = wait_until(
            lambda: httpx.get(server.url + "/api/v1/gateway/status").json()["last_errors"],
            20,
            "the forwarder to try (an error on the status page)",
        )
        assert errors[0]["attempts"] >= 1
        assert "hub" in errors[0]["error"]
