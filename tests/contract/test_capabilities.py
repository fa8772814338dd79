"""PS3.18 §8.9: OPTIONS on the service root describes the service."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx

from tests.conftest import LiveServer

WADL_NS = "{http://wadl.dev.java.net/2009/02}"


def test_options_on_root_answers_wadl_with_every_transaction(sqlite_live_server: LiveServer):
    response = httpx.options(sqlite_live_server.dicomweb + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
    root = ET.fromstring(response.content)
    resources = root.find(f"{WADL_NS}resources")
    assert resources is not None
    assert resources.get("base") == sqlite_live_server.dicomweb + "/"
    ids = {m.get("id") for m in root.iter(f"{WADL_NS}method")}
    for transaction in [
        "STOW-RS Store Instances",
        "QIDO-RS Search for Studies",
        "WADO-RS Retrieve Study",
        "WADO-RS Retrieve Frames",
        "WADO-RS Retrieve Metadata",
        "WADO-RS Retrieve Rendered",
    ]:
        assert transaction in ids


def test_options_json_and_allow_header(sqlite_live_server: LiveServer):
    response = httpx.options(
        sqlite_live_server.dicomweb + "/studies", headers={"Accept": "application/json"}
    )
    assert response.status_code == 200
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    body = response.json()
    assert any(
        r["path"] == "studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
        for r in body["resources"]
    )
    series = httpx.options(sqlite_live_server.dicomweb + "/studies/1.2.3/series/4.5")
    assert set(series.headers["allow"].split(", ")) == {"GET", "OPTIONS"}


def test_options_with_unsatisfiable_accept_is_406(sqlite_live_server: LiveServer):
    response = httpx.options(sqlite_live_server.dicomweb + "/", headers={"Accept": "image/gif"})
    assert response.status_code == 406
    assert response.headers["warning"].startswith("299 ")


def test_service_url_keeps_the_port_when_the_host_header_lacks_it(sqlite_live_server: LiveServer):
    """dicomweb-client sends `Host: 127.0.0.1` without the port; URLs must still work."""
    response = httpx.options(
        sqlite_live_server.dicomweb + "/",
        headers={"Accept": "application/json", "Host": "127.0.0.1"},
    )
    assert response.json()["base"] == sqlite_live_server.dicomweb + "/"
