"""PS3.18 §8.9: OPTIONS on the service root describes the service."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.conftest import LiveServer

WADL_NS = "{http://wadl.dev.java.net/2009/02}"
GLOBAL_WORKLIST = "1.2.840.10008.5.1.4.34.5"


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


UPS_METHODS = {
    "workitems": {("POST", "UPS-RS Create Workitem"), ("GET", "UPS-RS Search for Workitems")},
    "workitems/{workitem}": {
        ("GET", "UPS-RS Retrieve Workitem"),
        ("POST", "UPS-RS Update Workitem"),
    },
    "workitems/{workitem}/state": {("PUT", "UPS-RS Change Workitem State")},
    "workitems/{workitem}/cancelrequest": {("POST", "UPS-RS Request Cancellation")},
    "workitems/{workitem}/subscribers/{aetitle}": {
        ("POST", "UPS-RS Subscribe"),
        ("DELETE", "UPS-RS Unsubscribe"),
    },
    "workitems/{workitem}/subscribers/{aetitle}/suspend": {("POST", "UPS-RS Suspend Subscription")},
    "subscribers/{aetitle}": {("GET", "UPS-RS Open Event Channel")},
}


def test_wadl_lists_every_ups_rs_resource_and_method(sqlite_live_server: LiveServer):
    """PS3.18 §8.9 and ch. 11: the worklist service is described like the others."""
    root = ET.fromstring(httpx.options(sqlite_live_server.dicomweb + "/").content)
    described = {
        resource.get("path"): {
            (m.get("name"), m.get("id")) for m in resource.iter(f"{WADL_NS}method")
        }
        for resource in root.iter(f"{WADL_NS}resource")
    }
    for path, methods in UPS_METHODS.items():
        assert described.get(path) == methods, path
    create = root.find(f".//{WADL_NS}method[@id='UPS-RS Create Workitem']")
    assert create is not None
    assert create.find(f"{WADL_NS}response") is None  # 201 with no payload
    media = {r.get("mediaType") for r in create.iter(f"{WADL_NS}representation")}
    assert media == {"application/dicom+json"}
    params = {p.get("name") for p in create.iter(f"{WADL_NS}param")}
    assert params == {"workitem"}


def test_ups_rs_resources_in_json(sqlite_live_server: LiveServer):
    body = httpx.options(
        sqlite_live_server.dicomweb + "/", headers={"Accept": "application/json"}
    ).json()
    resources = {r["path"]: r["methods"] for r in body["resources"]}
    [search] = [m for m in resources["workitems"] if m["name"] == "GET"]
    assert search["transaction"] == "UPS-RS Search for Workitems"
    assert search["produces"] == ["application/dicom+json"]
    assert {"limit", "offset", "includefield"} <= set(search["queryParameters"])
    [update] = [m for m in resources["workitems/{workitem}"] if m["name"] == "POST"]
    assert update["transaction"] == "UPS-RS Update Workitem"
    assert update["consumes"] == ["application/dicom+json"]
    assert update["queryParameters"] == ["transaction"]


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/workitems", {"GET", "POST", "OPTIONS"}),
        ("/workitems/1.2.3", {"GET", "POST", "OPTIONS"}),
        ("/workitems/1.2.3/state", {"PUT", "OPTIONS"}),
        ("/workitems/1.2.3/cancelrequest", {"POST", "OPTIONS"}),
        (f"/workitems/{GLOBAL_WORKLIST}/subscribers/WATCHER", {"POST", "DELETE", "OPTIONS"}),
        (f"/workitems/{GLOBAL_WORKLIST}/subscribers/WATCHER/suspend", {"POST", "OPTIONS"}),
        ("/subscribers/WATCHER", {"GET", "OPTIONS"}),
        ("/workitems/1.2.3/nothing-here", {"OPTIONS"}),
    ],
)
def test_options_on_a_ups_rs_path_allows_its_methods(
    sqlite_live_server: LiveServer, path: str, allow: set[str]
):
    response = httpx.options(sqlite_live_server.dicomweb + path)
    assert response.status_code == 200
    assert set(response.headers["allow"].split(", ")) == allow


def test_the_allowed_methods_are_the_ones_the_server_answers(sqlite_live_server: LiveServer):
    """What Allow promises for /workitems is served; what it leaves out is 405."""
    url = sqlite_live_server.dicomweb + "/workitems"
    assert httpx.get(url, headers={"Accept": "application/dicom+json"}).status_code == 200
    assert httpx.put(url).status_code == 405
    assert httpx.delete(url + "/1.2.3").status_code == 405
