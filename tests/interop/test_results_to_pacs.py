"""The AI chain end to end on a live hub with its background loops, Orthanc as the PACS:
a reference product performs a routed workitem, the autonomous result is delivered into the
original study in Orthanc at once (the delivery loop is woken by the release, not by its
poll), and the results API shows it; a PACS that stays busy fails the delivery with
the reason, and the retry endpoint queues it again."""

from __future__ import annotations

import http.server
import threading
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aifi.conformance.orthanc import OrthancPeer
from aifi.conformance.pilot_studies import hand_xray
from aifi.hub.settings import Settings
from aifi.vendors.performer import Performer, part10
from aifi.vendors.products import reference_product
from tests.conftest import LiveServer, running_hub
from tests.support.dicom import multipart_related
from tests.support.wait import wait_until

pytestmark = pytest.mark.orthanc


def _hub_settings(tmp_path: Path, destination_url: str, **settings: Any) -> Settings:
    rules = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    rules["tenants"] = {"default": ["AIFI-BONEAGE"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    destinations = {
        "tenants": {
            "default": [
                {"kind": "dicomweb", "name": "pacs", "url": destination_url, "timeout_seconds": 2}
            ]
        }
    }
    (tmp_path / "destinations.yaml").write_text(yaml.safe_dump(destinations))
    return Settings(
        data_dir=tmp_path / "data",
        rules_file=tmp_path / "rules.yaml",
        destinations_file=tmp_path / "destinations.yaml",
        **settings,
    )


def _bone_age(server: LiveServer, pacs: OrthancPeer | None = None) -> str:
    """Store a hand study (in the PACS too, where it comes from), signal it complete, and
    perform its bone-age workitem; the workitem's UID."""
    study = hand_xray(age_years=11.0)
    uid = str(study[0].StudyInstanceUID)
    body, ctype = multipart_related(part10(ds) for ds in study)
    with httpx.Client(timeout=30) as client:
        if pacs is not None:
            sent = client.post(
                f"{pacs.dicomweb_url}/studies", content=body, headers={"Content-Type": ctype}
            )
            assert sent.status_code == 200
        stored = client.post(
            f"{server.dicomweb}/studies", content=body, headers={"Content-Type": ctype}
        )
        assert stored.status_code == 200
        assert client.post(f"{server.url}/api/v1/studies/{uid}/complete").status_code == 202
        product = reference_product("skeletal-age")
        with Performer(server.dicomweb, product.code, "BONEAGE-T", product.factory()) as p:
            state = wait_until(p.run_once, 20, "the bone-age workitem to be performed")
        assert state == "COMPLETED"
        [result] = client.get(f"{server.url}/api/v1/results", params={"study": uid}).json()[
            "results"
        ]
    return str(result["workitem_uid"])


def _wait(client: httpx.Client, url: str, done: Any, seconds: float) -> dict[str, Any]:
    """The result's detail once ``done(detail)`` holds."""
    seen: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        seen[:] = [client.get(url).json()]
        return seen[0] if done(seen[0]) else None

    return wait_until(finished, seconds, lambda: f"the result's deliveries; last seen: {seen}")


def test_a_released_result_reaches_the_pacs_at_once_inside_the_original_study(
    orthanc: OrthancPeer, tmp_path: Path
):
    # A poll of a minute: only the doorbell rung by the release can deliver it in seconds.
    settings = _hub_settings(tmp_path, orthanc.dicomweb_url, delivery_poll_seconds=60)
    with running_hub(settings, lifespan=True) as server, httpx.Client(timeout=30) as client:
        workitem = _bone_age(server, orthanc)
        detail = _wait(
            client,
            f"{server.url}/api/v1/results/{workitem}",
            lambda d: d["deliveries"] and d["deliveries"][0]["state"] == "delivered",
            seconds=10,
        )
        [delivery] = detail["deliveries"]
        assert delivery["destination"] == "pacs" and delivery["state"] == "delivered", detail
        assert detail["result"]["outcome"] == "measured"
        assert detail["result"]["review_state"] == "not-required"
        assert detail["timings"]["delivered"] is not None
        study = detail["workitem"]["study_instance_uid"]
        series = orthanc.client.get(
            f"{orthanc.dicomweb_url}/studies/{study}/series",
            headers={"Accept": "application/dicom+json"},
        ).json()
        modalities = sorted(s["00080060"]["Value"][0] for s in series)
        assert modalities == ["DX", "OT", "SR"]  # the hand, the summary page, the report


class _BusyPacs(http.server.BaseHTTPRequestHandler):
    """A DICOMweb "PACS" that is always busy (503) and counts the STOW-RS requests."""

    requests = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:  # quiet
        pass


def test_a_busy_pacs_fails_the_delivery_with_the_reason_and_retry_queues_it_again(
    tmp_path: Path,
):
    pacs = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyPacs)
    threading.Thread(target=pacs.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{pacs.server_address[1]}/dicomweb"
    settings = _hub_settings(tmp_path, url, delivery_max_attempts=1, delivery_poll_seconds=60)
    try:
        with running_hub(settings, lifespan=True) as server, httpx.Client(timeout=30) as client:
            workitem = _bone_age(server)
            result_url = f"{server.url}/api/v1/results/{workitem}"
            detail = _wait(
                client, result_url, lambda d: d["deliveries"][0]["state"] == "failed", 10
            )
            [delivery] = detail["deliveries"]
            assert delivery["state"] == "failed" and delivery["attempts"] == 1, delivery
            assert "pacs" in delivery["last_error"] and "503" in delivery["last_error"]
            assert detail["timings"]["delivered"] is None  # failed is not done
            assert _BusyPacs.requests == 1
            assert client.post(f"{result_url}/deliveries/pacs/retry").status_code == 200
            # the retry wakes the loop: a second attempt
            wait_until(lambda: _BusyPacs.requests >= 2, 10, "a second attempt at the PACS")
            assert _BusyPacs.requests == 2
            detail = _wait(
                client, result_url, lambda d: d["deliveries"][0]["state"] == "failed", 10
            )
            assert detail["deliveries"][0]["attempts"] == 1  # a fresh set of attempts
            unknown = client.post(f"{result_url}/deliveries/elsewhere/retry")
            assert unknown.status_code == 404
    finally:
        pacs.shutdown()
        pacs.server_close()
