"""The API documentation works offline (issue 19 point 5): ``/docs`` and ``/redoc`` of the
hub and of the gateway reference only assets of their own origin, each asset answers 200
with its media type (the content the ``fastapi-offline`` package ships), no token needed on
a hub with authentication on; ``/openapi.json`` still loads and still declares the OAuth2
client-credentials flow the "Authorize" button uses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from aifi.gateway.app import build_gateway
from aifi.gateway.settings import GatewaySettings
from aifi.hub.api_docs import MEDIA_TYPES, asset_bytes
from tests.conftest import LiveServer, free_port, run_live_server
from tests.support.auth import secured_hub

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # the gateway's FHIR facade declares some operations twice (GET /fhir/metadata): FastAPI
    # warns while it builds the gateway's document; not about the documentation pages
    pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning"),
]

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with secured_hub(tmp_path_factory.mktemp("docs-hub")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("docs-gateway") / "data"
    settings = GatewaySettings(
        data_dir=data_dir, dimse_port=free_port(), dev_mode=True, workers=False, auth="builtin"
    )
    built = build_gateway(settings)
    try:
        with run_live_server(built.app) as server:
            yield server
    finally:
        built.hub.close()
        built.db.dispose()
        built.ingest.db.dispose()


def references(html: str) -> list[str]:
    """Every URL a page loads: script and stylesheet sources, links, the spec URL."""
    return [a or b for a, b in _REFERENCE.findall(html)]


def check_page(base: str, page: str, client: httpx.Client) -> set[str]:
    """The page answers HTML that loads only same-origin URLs; their paths."""
    answer = client.get(base + page)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    # and the browser is told to fetch nothing from elsewhere, even what a bundle asks for
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    found = references(answer.text)
    assert found, answer.text
    origin = urlsplit(base).netloc
    paths = set()
    for reference in found:
        absolute = urlsplit(urljoin(base + page, reference))
        assert absolute.netloc == origin, f"{page} loads {reference} from elsewhere"
        paths.add(absolute.path)
    assert "cdn" not in answer.text.lower() and "fonts.googleapis" not in answer.text
    return paths


@pytest.mark.parametrize("service", ["hub", "gateway"])
def test_docs_pages_load_only_their_own_assets(
    service: str, request: pytest.FixtureRequest
) -> None:
    server: LiveServer = request.getfixturevalue(service)
    with httpx.Client(timeout=30) as client:  # no token: the pages are public
        docs = check_page(server.url, "/docs", client)
        redoc = check_page(server.url, "/redoc", client)
        assert {
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/openapi.json",
        } <= docs
        assert {"/docs/assets/redoc.standalone.js", "/openapi.json"} <= redoc
        for path in sorted((docs | redoc) - {"/openapi.json"}):
            asset = client.get(server.url + path)
            assert asset.status_code == 200, path
            name = path.rsplit("/", 1)[1]
            assert asset.headers["content-type"] == MEDIA_TYPES[name], path
            assert asset.content == asset_bytes(name)
        assert client.get(server.url + "/docs/assets/../../etc/passwd").status_code >= 400
        assert client.get(server.url + "/docs/assets/index.html").status_code >= 400
        redirect = client.get(server.url + "/docs/oauth2-redirect")
        assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
        document = client.get(server.url + "/openapi.json")
        assert document.status_code == 200
        assert document.json()["openapi"].startswith("3.")


def test_the_hubs_document_still_offers_the_authorize_flow(hub: LiveServer) -> None:
    document = httpx.get(hub.url + "/openapi.json", timeout=30).json()
    flows = document["components"]["securitySchemes"]["smart"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/oauth/token"  # same origin as /docs
    asset = document["paths"]["/docs/assets/{asset}"]["get"]
    assert asset["security"] == []  # public, as the pages
    assert sorted(asset["parameters"][0]["schema"]["enum"]) == sorted(MEDIA_TYPES)
