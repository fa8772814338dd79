"""The gateway's ``GET /metrics`` (issue 19 point 4), read with prometheus-client's parser:
instances received by state (forwarded, quarantined), the forward queue depth, results and
their PACS deliveries; no UID in any label; only the status page's readers get it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.settings import GatewaySettings
from tests.conftest import LiveServer, free_port, run_live_server
from tests.contract.test_metrics import UID_LIKE
from tests.support.dicom import make_study, multipart_related, to_bytes


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Gateway, LiveServer]]:
    """A receiving gateway (no hub: its forwarding workers are off) on loopback."""
    settings = GatewaySettings(
        data_dir=tmp_path / "gw",
        host="127.0.0.1",
        dimse_port=free_port(),
        dev_mode=True,
        workers=False,
    )
    built = build_gateway(settings)
    with run_live_server(built.app, lifespan=True) as server:
        yield built, server


def gauges(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_gateway_metrics_count_what_it_received(gateway: tuple[Gateway, LiveServer]):
    built, server = gateway
    study = make_study(n_series=1, per_series=3)
    body, content_type = multipart_related(to_bytes(ds) for ds in study)
    stored = httpx.post(
        server.url + "/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    first, second = str(study[0].SOPInstanceUID), str(study[1].SOPInstanceUID)
    with built.db.writer.begin() as conn:  # as the forwarder and the pseudonymiser leave them
        conn.execute(
            text(
                "UPDATE gw_instance SET state='quarantined', reason='burned in'"
                " WHERE sop_instance_uid=:u"
            ),
            {"u": first},
        )
        conn.execute(
            text("UPDATE gw_instance SET state='forwarded' WHERE sop_instance_uid=:u"),
            {"u": second},
        )

    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200
    found = gauges(response.text)
    assert found[("aifi_gateway_instances", (("state", "received"),))] == 1
    assert found[("aifi_gateway_instances", (("state", "forwarded"),))] == 1
    assert found[("aifi_gateway_instances", (("state", "quarantined"),))] == 1
    assert found[("aifi_gateway_instances", (("state", "failed"),))] == 0
    assert found[("aifi_gateway_forward_queue_depth", ())] == 1
    assert found[("aifi_gateway_results", (("state", "pending"),))] == 0
    assert found[("aifi_gateway_result_deliveries", (("state", "delivered"),))] == 0
    for _name, labels in found:
        assert not any(UID_LIKE.match(value) for _key, value in labels)


def test_gateway_metrics_only_for_the_status_readers(tmp_path: Path):
    config = tmp_path / "gw.yaml"
    config.write_text("status:\n  allowed_addresses: [10.9.9.9]\n")
    settings = GatewaySettings(
        data_dir=tmp_path / "gw",
        host="127.0.0.1",
        dimse_port=free_port(),
        dev_mode=True,
        workers=False,
        config_file=config,
    )
    built = build_gateway(settings)
    with run_live_server(built.app, lifespan=True) as server:
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 403
