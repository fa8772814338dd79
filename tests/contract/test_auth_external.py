"""Resource-server mode (issue 6): the hub accepts access tokens of an external OpenID
Connect provider (a hospital's Keycloak or Entra ID) — issuer, JWKS from its discovery
document, audience and claim mapping — played here by a real HTTP server with its own keys."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import LiveServer
from tests.support.auth import bearer, secured_hub

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass
class Provider:
    issuer: str
    key: RSAKey
    requests: list[str]

    def token(self, **changes: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "service-account-pacs",
            "azp": "ward-pacs",
            "aud": ["aifi-hub", "account"],
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "dicomweb.read system/Task.rs",
            "aifi_tenant": "default",
            "aifi_role": "hospital",
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": "idp-1"}, claims, self.key, algorithms=["RS256"])


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "alg": "RS256"}, private=True)
    requests: list[str] = []
    holder: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body: dict[str, Any]
            if self.path == "/realms/h1/.well-known/openid-configuration":
                body = {"issuer": holder["issuer"], "jwks_uri": holder["issuer"] + "/certs"}
            elif self.path == "/realms/h1/certs":
                body = {"keys": [key.as_dict(private=False)]}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["issuer"] = f"http://127.0.0.1:{server.server_address[1]}/realms/h1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Provider(holder["issuer"], key, requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def hub(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data: Path = tmp_path_factory.mktemp("external") / "data"
    with secured_hub(
        data, auth="external", oidc_issuer=provider.issuer, oidc_audience="aifi-hub"
    ) as server:
        yield server


def test_a_token_of_the_hospitals_provider_is_accepted(hub: LiveServer, provider: Provider) -> None:
    response = httpx.get(hub.url + "/fhir/Task", headers=bearer(provider.token()))
    assert response.status_code == 200, response.text
    assert "/realms/h1/.well-known/openid-configuration" in provider.requests
    studies = httpx.get(hub.dicomweb + "/studies", headers=bearer(provider.token()))
    assert studies.status_code in (200, 204)
    # the hub is not an authorization server in this mode
    assert httpx.post(hub.url + "/oauth/token", data={}).status_code == 404


def test_scopes_from_the_provider_are_enforced(hub: LiveServer, provider: Provider) -> None:
    response = httpx.post(hub.dicomweb + "/studies", headers=bearer(provider.token()), content=b"")
    assert response.status_code == 403
    entra = provider.token(scope=None, scp=["dicomweb.write"])  # Entra ID's list form
    assert (
        httpx.post(hub.dicomweb + "/studies", headers=bearer(entra), content=b"").status_code != 403
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://other-idp.example/realms/h1"}, "issuer"),
        ({"aud": "another-api"}, "audience"),
        ({"exp": int(time.time()) - 600}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"aifi_tenant": None}, "aifi_tenant"),
        ({"aifi_role": "superuser"}, "role"),
        ({"aifi_role": "performer"}, "products"),
    ],
    ids=[
        "wrong-iss",
        "wrong-aud",
        "expired",
        "nbf",
        "no-tenant",
        "bad-role",
        "performer-no-products",
    ],
)
def test_bad_provider_tokens_are_401(
    hub: LiveServer, provider: Provider, changes: dict[str, Any], reason: str
) -> None:
    response = httpx.get(hub.url + "/fhir/Task", headers=bearer(provider.token(**changes)))
    assert response.status_code == 401
    assert reason in response.headers["www-authenticate"]


def test_a_token_signed_by_another_key_is_401(hub: LiveServer, provider: Provider) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "idp-1"}, private=True)
    good = jwt.decode(provider.token(), provider.key, algorithms=["RS256"]).claims
    forged = jwt.encode({"alg": "RS256", "kid": "idp-1"}, good, stranger, algorithms=["RS256"])
    response = httpx.get(hub.url + "/fhir/Task", headers=bearer(forged))
    assert response.status_code == 401 and "signature" in response.headers["www-authenticate"]


def test_claims_map_to_tenant_role_and_products(hub: LiveServer, provider: Provider) -> None:
    performer = provider.token(
        aifi_role="performer",
        aifi_products=["AIFI-BONEAGE"],
        scope="worklist.performer system/Task.rs",
    )
    workitems = httpx.get(hub.dicomweb + "/workitems", headers=bearer(performer))
    assert workitems.status_code in (200, 204)
    # a performer holds no FHIR scope, whatever the provider put in the token
    assert httpx.get(hub.url + "/fhir/Task", headers=bearer(performer)).status_code == 403
    # the token's hospital holds a Task (an EPD's request for AI) that it sees ...
    epd = provider.token(scope="system/Task.crs")
    created = httpx.post(
        hub.url + "/fhir/Task",
        json={
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "urn:aifi:product", "code": "AIFI-BONEAGE"}]},
            "focus": {
                "identifier": {
                    "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                    "value": "ACC-EXTERNAL-1",
                }
            },
        },
        headers={**bearer(epd), "Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201, created.text
    own = httpx.get(hub.url + "/fhir/Task", headers=bearer(epd)).json()
    assert created.json()["id"] in {entry["resource"]["id"] for entry in own["entry"]}
    # ... and another hospital's token, of the same provider, does not
    other_hospital = provider.token(aifi_tenant="elsewhere")
    assert httpx.get(hub.url + "/fhir/Task", headers=bearer(other_hospital)).json()["total"] == 0
