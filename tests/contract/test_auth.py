"""OAuth2 (issue 6): every token flow of the built-in SMART Backend Services server with real
signed JWTs against a real uvicorn hub — and what is refused: expired, not yet valid,
wrong audience, wrong issuer, replayed, wrong key, wrong algorithm, wrong scope, revoked."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from aifi.hub.app import create_app
from aifi.hub.auth.clients import ClientError
from aifi.hub.auth.policy import RULES, iter_routes, route_methods
from aifi.hub.settings import Settings
from aifi.hub.wiring import AuthNotConfigured
from aifi.oauth_client import (
    ASSERTION_TYPE,
    ClientCredentials,
    Credentials,
    TokenError,
    client_assertion,
    new_private_jwk,
    public_jwks,
)
from tests.conftest import LiveServer
from tests.support.auth import bearer, register, secured_hub, token_for
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.wait import wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with secured_hub(tmp_path_factory.mktemp("auth") / "data") as server:
        yield server


def _token_post(server: LiveServer, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(server.url + "/oauth/token", data=data, timeout=10, **kwargs)


def _assertion_form(credentials: Credentials, assertion: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }


def _signed(private_jwk: dict[str, Any], claims: dict[str, Any], alg: str = "ES384") -> str:
    key = ECKey.import_key(private_jwk)
    return jwt.encode({"alg": alg, "kid": private_jwk["kid"]}, claims, key, algorithms=[alg])


def _claims(credentials: Credentials, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": credentials.client_id,
        "sub": credentials.client_id,
        "aud": credentials.token_url,
        "exp": now + 240,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


# --- discovery ----------------------------------------------------------------------------


def test_smart_configuration_and_jwks_are_public(hub: LiveServer) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        doc = httpx.get(hub.url + path).json()
        assert doc["token_endpoint"] == hub.url + "/oauth/token"
        assert doc["grant_types_supported"] == ["client_credentials"]
        assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
        assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
        assert "permission-v2" in doc["capabilities"]
        assert doc["introspection_endpoint"] and doc["revocation_endpoint"]
    keys = httpx.get(hub.url + "/oauth/jwks").json()["keys"]
    assert keys and all("d" not in key for key in keys)  # public halves only


# --- private_key_jwt ----------------------------------------------------------------------


def test_private_key_jwt_gets_a_token_that_opens_the_api(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    response = _token_post(
        hub,
        _assertion_form(
            credentials,
            client_assertion(
                credentials.client_id, credentials.token_url, credentials.private_jwk or {}
            ),
            "dicomweb.read system/Task.rs",
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "dicomweb.read system/Task.rs"
    assert response.headers["cache-control"] == "no-store"
    token = body["access_token"]
    assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code in (200, 204)
    assert httpx.get(hub.url + "/fhir/Task", headers=bearer(token)).status_code == 200


def test_an_rsa_client_key_signing_rs384_works(hub: LiveServer) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
    private = dict(key.as_dict(private=True))
    registration = hub.app.state.hub.clients.add(
        tenant="default", role="hospital", auth_method="private_key_jwt", jwks=public_jwks(private)
    )
    credentials = Credentials(
        registration.client.client_id, hub.url + "/oauth/token", private_jwk=private
    )
    assert token_for(credentials, ["dicomweb.read"])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": int(time.time()) + 3600}, "more than 5 minutes"),
        ({"exp": None}, "exp"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"iat": int(time.time()) + 600}, "future"),
        ({"aud": "https://elsewhere.example/oauth/token"}, "aud"),
        ({"sub": "someone-else"}, "'sub'"),
        ({"jti": None}, "jti"),
    ],
    ids=[
        "expired",
        "exp-too-far",
        "no-exp",
        "nbf-future",
        "iat-future",
        "wrong-aud",
        "sub-not-iss",
        "no-jti",
    ],
)
def test_bad_client_assertions_are_refused(
    hub: LiveServer, changes: dict[str, Any], reason: str
) -> None:
    credentials = register(hub, method="private_key_jwt")
    assertion = _signed(credentials.private_jwk or {}, _claims(credentials, **changes))
    response = _token_post(hub, _assertion_form(credentials, assertion, "dicomweb.read"))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert reason in response.json()["error_description"]
    assert "access_token" not in response.text


def test_unknown_issuer_is_refused(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    claims = _claims(credentials, iss="no-such-client", sub="no-such-client")
    response = _token_post(
        hub,
        _assertion_form(
            credentials, _signed(credentials.private_jwk or {}, claims), "dicomweb.read"
        ),
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_a_replayed_assertion_is_refused(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    assertion = _signed(credentials.private_jwk or {}, _claims(credentials))
    first = _token_post(hub, _assertion_form(credentials, assertion, "dicomweb.read"))
    assert first.status_code == 200
    again = _token_post(hub, _assertion_form(credentials, assertion, "dicomweb.read"))
    assert again.status_code == 401
    assert "replayed" in again.json()["error_description"]


def test_an_assertion_signed_with_another_key_is_refused(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    stranger = new_private_jwk(kid=(credentials.private_jwk or {})["kid"])  # same kid, other key
    response = _token_post(
        hub, _assertion_form(credentials, _signed(stranger, _claims(credentials)), "dicomweb.read")
    )
    assert response.status_code == 401
    assert "signature" in response.json()["error_description"]


def test_an_assertion_with_a_weak_or_symmetric_algorithm_is_refused(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    secret = OctKey.generate_key(256)
    hs = jwt.encode({"alg": "HS256"}, _claims(credentials), secret, algorithms=["HS256"])
    response = _token_post(hub, _assertion_form(credentials, hs, "dicomweb.read"))
    assert response.status_code == 401
    unsigned = hs.rsplit(".", 2)[0].split(".")[0]
    assert _token_post(
        hub, _assertion_form(credentials, unsigned + "..", "dicomweb.read")
    ).status_code in (
        400,
        401,
    )


def test_a_jwks_url_client_must_be_allow_listed_and_is_fetched(tmp_path: Path) -> None:
    private = new_private_jwk()
    body = json.dumps(public_jwks(private)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/vendor/jwks.json"
    try:
        with secured_hub(
            tmp_path / "data", jwks_url_allowlist=[url.rsplit("/", 1)[0] + "/"]
        ) as hub:
            registry = hub.app.state.hub.clients
            with pytest.raises(ClientError, match="not allow-listed"):
                registry.add(
                    tenant="default",
                    role="hospital",
                    auth_method="private_key_jwt",
                    jwks_url="http://127.0.0.1:1/evil.json",
                )
            registration = registry.add(
                tenant="default", role="hospital", auth_method="private_key_jwt", jwks_url=url
            )
            credentials = Credentials(
                registration.client.client_id, hub.url + "/oauth/token", private_jwk=private
            )
            assert token_for(credentials, ["dicomweb.read"])
    finally:
        server.shutdown()
        server.server_close()


# --- client_secret_basic --------------------------------------------------------------------


def test_client_secret_basic(hub: LiveServer) -> None:
    credentials = register(hub, method="client_secret_basic")
    assert credentials.secret
    ok = _token_post(
        hub,
        {"grant_type": "client_credentials", "scope": "dicomweb.write"},
        auth=(credentials.client_id, credentials.secret),
    )
    assert ok.status_code == 200
    wrong = _token_post(
        hub,
        {"grant_type": "client_credentials", "scope": "dicomweb.write"},
        auth=(credentials.client_id, credentials.secret + "x"),
    )
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert wrong.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "scope": "dicomweb.read"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "admin"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "system/AuditEvent.rs"}, "invalid_scope"),
    ],
)
def test_token_request_errors_follow_rfc_6749(
    hub: LiveServer, form: dict[str, str], error: str
) -> None:
    credentials = register(hub, method="client_secret_basic")
    response = _token_post(hub, form, auth=(credentials.client_id, credentials.secret or ""))
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_a_token_request_without_client_authentication_is_401(hub: LiveServer) -> None:
    response = _token_post(hub, {"grant_type": "client_credentials", "scope": "dicomweb.read"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    form = httpx.post(
        hub.url + "/oauth/token", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert form.status_code == 400 and form.json()["error"] == "invalid_request"


def test_only_granted_scopes_are_issued(hub: LiveServer) -> None:
    credentials = register(
        hub, role="performer", products=["AIFI-BONEAGE"], method="private_key_jwt"
    )
    auth = ClientCredentials(credentials, ["dicomweb.read", "system/Task.rs", "admin"])
    token = auth.token()
    claims = hub.app.state.hub.tokens.validate(token)
    assert claims["scope"] == "dicomweb.read"  # the rest is not a performer's to have
    assert claims["products"] == ["AIFI-BONEAGE"]


# --- access tokens at the resource endpoints ------------------------------------------------


def test_missing_token_is_401_with_a_bearer_challenge(hub: LiveServer) -> None:
    for path in ("/dicomweb/studies", "/fhir/Task", "/api/v1/results", "/dicomweb/workitems"):
        response = httpx.get(hub.url + path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith('Bearer realm="aifi-hub"')
    fhir = httpx.get(hub.url + "/fhir/Task").json()
    assert fhir["resourceType"] == "OperationOutcome"
    dicomweb = httpx.get(hub.dicomweb + "/studies")
    assert dicomweb.headers["warning"].startswith("299")


def test_public_endpoints_need_no_token(hub: LiveServer) -> None:
    for path in ("/healthz", "/fhir/metadata", "/openapi.json", "/oauth/jwks"):
        assert httpx.get(hub.url + path).status_code == 200, path
    assert httpx.options(hub.dicomweb + "/").status_code == 200


def test_wrong_scope_is_403_naming_the_scope(hub: LiveServer) -> None:
    credentials = register(hub)
    token = token_for(credentials, ["dicomweb.read"])
    stow = httpx.post(hub.dicomweb + "/studies", headers=bearer(token), content=b"")
    assert stow.status_code == 403
    assert "dicomweb.write" in stow.headers["warning"]
    assert 'error="insufficient_scope"' in stow.headers["www-authenticate"]
    fhir = httpx.get(hub.url + "/fhir/DiagnosticReport", headers=bearer(token))
    assert fhir.status_code == 403
    assert "system/DiagnosticReport.s" in fhir.json()["issue"][0]["diagnostics"]


def test_fhir_scopes_follow_smart_v2_and_v1(hub: LiveServer) -> None:
    credentials = register(hub)
    read_only = token_for(credentials, ["system/Task.r"])
    assert httpx.get(hub.url + "/fhir/Task", headers=bearer(read_only)).status_code == 403
    assert httpx.get(hub.url + "/fhir/Task/nope", headers=bearer(read_only)).status_code == 404
    search = token_for(credentials, ["system/*.rs"])
    assert httpx.get(hub.url + "/fhir/Observation", headers=bearer(search)).status_code == 200
    v1 = token_for(credentials, ["system/Task.read"])
    assert httpx.get(hub.url + "/fhir/Task", headers=bearer(v1)).status_code == 200
    create = httpx.post(hub.url + "/fhir/Task", headers=bearer(v1), json={"resourceType": "Task"})
    assert create.status_code == 403


def test_the_audit_trail_is_for_administrators(hub: LiveServer) -> None:
    hospital = token_for(register(hub), ["system/*.rs"])
    assert httpx.get(hub.url + "/fhir/AuditEvent", headers=bearer(hospital)).status_code == 403
    admin = token_for(register(hub, role="admin"), ["system/AuditEvent.rs"])
    assert httpx.get(hub.url + "/fhir/AuditEvent", headers=bearer(admin)).status_code == 200


def _forged(hub: LiveServer, **changes: Any) -> str:
    tokens = hub.app.state.hub.tokens
    kid, key = tokens.keys.active()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": tokens.issuer,
        "sub": "forged",
        "aud": "aifi-hub",
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "scope": "dicomweb.read",
        "tenant": "default",
        "role": "hospital",
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "ES384", "kid": kid}, claims, key, algorithms=["ES384"])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 600}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"aud": "another-api"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"tenant": "other"}, "registration"),
        ({"role": "admin"}, "registration"),
    ],
    ids=["expired", "not-yet-valid", "wrong-aud", "wrong-iss", "other-tenant", "other-role"],
)
def test_bad_access_tokens_are_401(hub: LiveServer, changes: dict[str, Any], reason: str) -> None:
    credentials = register(hub)
    token = _forged(hub, sub=credentials.client_id, **changes)
    response = httpx.get(hub.url + "/fhir/Task", headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and reason in challenge


def test_a_token_signed_by_another_key_is_401(hub: LiveServer) -> None:
    credentials = register(hub)
    good = token_for(credentials, ["dicomweb.read"])
    kid = json.loads(__import__("base64").urlsafe_b64decode(good.split(".")[0] + "==").decode())[
        "kid"
    ]
    stranger = ECKey.generate_key("P-384", parameters={"kid": kid}, private=True)
    payload = hub.app.state.hub.tokens.validate(good)
    forged = jwt.encode({"alg": "ES384", "kid": kid}, payload, stranger, algorithms=["ES384"])
    response = httpx.get(hub.dicomweb + "/studies", headers=bearer(forged))
    assert response.status_code == 401
    assert "signature" in response.headers["www-authenticate"]


# --- introspection, revocation, rotation ---------------------------------------------------


def _basic(credentials: Credentials) -> tuple[str, str]:
    return credentials.client_id, credentials.secret or ""


def test_introspection_and_revocation(hub: LiveServer) -> None:
    mine = register(hub)
    other = register(hub, tenant="elsewhere")
    token = token_for(mine, ["dicomweb.read"])
    seen = httpx.post(
        hub.url + "/oauth/introspect", data={"token": token}, auth=_basic(mine)
    ).json()
    assert seen["active"] is True and seen["client_id"] == mine.client_id
    assert seen["scope"] == "dicomweb.read" and seen["tenant"] == "default"
    # another hospital's client learns nothing about this token
    hidden = httpx.post(hub.url + "/oauth/introspect", data={"token": token}, auth=_basic(other))
    assert hidden.json() == {"active": False}
    garbage = httpx.post(hub.url + "/oauth/introspect", data={"token": "x.y.z"}, auth=_basic(mine))
    assert garbage.json() == {"active": False}
    # another client cannot revoke it; its owner can
    assert (
        httpx.post(hub.url + "/oauth/revoke", data={"token": token}, auth=_basic(other)).status_code
        == 200
    )
    assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code != 401
    assert (
        httpx.post(hub.url + "/oauth/revoke", data={"token": token}, auth=_basic(mine)).status_code
        == 200
    )
    after = httpx.get(hub.dicomweb + "/studies", headers=bearer(token))
    assert after.status_code == 401 and "revoked" in after.headers["www-authenticate"]
    assert httpx.post(
        hub.url + "/oauth/introspect", data={"token": token}, auth=_basic(mine)
    ).json() == {"active": False}
    unauthenticated = httpx.post(hub.url + "/oauth/revoke", data={"token": token})
    assert unauthenticated.status_code == 401


def test_a_revoked_client_gets_nothing(hub: LiveServer) -> None:
    credentials = register(hub, method="private_key_jwt")
    token = token_for(credentials, ["dicomweb.read"])
    hub.app.state.hub.clients.revoke(credentials.client_id)
    assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code == 401
    with pytest.raises(TokenError, match="invalid_client"):
        token_for(credentials, ["dicomweb.read"])


def test_rotating_a_client_secret_and_the_signing_key(hub: LiveServer) -> None:
    credentials = register(hub)
    old_token = token_for(credentials, ["dicomweb.read"])
    new_secret = hub.app.state.hub.clients.rotate(credentials.client_id).secret
    with pytest.raises(TokenError):
        token_for(credentials, ["dicomweb.read"])
    rotated = Credentials(credentials.client_id, credentials.token_url, secret=new_secret)
    before = {key["kid"] for key in httpx.get(hub.url + "/oauth/jwks").json()["keys"]}
    new_kid = hub.app.state.hub.tokens.keys.rotate()
    after = {key["kid"] for key in httpx.get(hub.url + "/oauth/jwks").json()["keys"]}
    assert new_kid in after and before <= after  # the old key stays until its tokens expire
    new_token = token_for(rotated, ["dicomweb.read"])
    header = json.loads(
        __import__("base64").urlsafe_b64decode(new_token.split(".")[0] + "==").decode()
    )
    assert header["kid"] == new_kid
    for token in (old_token, new_token):
        assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code in (200, 204)


# --- limits and safety ---------------------------------------------------------------------


def test_rate_limit_per_client_is_429_with_retry_after(hub: LiveServer) -> None:
    credentials = register(hub, rate_limit_per_minute=3)
    token = token_for(credentials, ["dicomweb.read"])
    statuses = [httpx.get(hub.dicomweb + "/studies", headers=bearer(token)) for _ in range(4)]
    assert [r.status_code for r in statuses[:3]] == [statuses[0].status_code] * 3
    assert statuses[3].status_code == 429
    assert int(statuses[3].headers["retry-after"]) >= 1
    other = token_for(register(hub), ["dicomweb.read"])
    assert httpx.get(hub.dicomweb + "/studies", headers=bearer(other)).status_code != 429


def test_request_size_limit_per_client_is_413(hub: LiveServer) -> None:
    credentials = register(hub, max_request_mb=1)
    token = token_for(credentials, ["dicomweb.write"])
    big = make_study(n_series=1, per_series=1, rows=800, columns=800)
    body, content_type = multipart_related([to_bytes(ds) for ds in big])
    assert len(body) > 1024 * 1024
    headers = {**bearer(token), "Content-Type": content_type}
    sized = httpx.post(hub.dicomweb + "/studies", headers=headers, content=body)
    assert sized.status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    chunked = httpx.post(hub.dicomweb + "/studies", headers=headers, content=chunks())
    assert chunked.status_code == 413
    reader = token_for(register(hub), ["dicomweb.read"])
    uid = str(big[0].StudyInstanceUID)
    assert (
        httpx.get(hub.dicomweb + f"/studies/{uid}/metadata", headers=bearer(reader)).status_code
        == 404
    )


def test_the_hub_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    with pytest.raises(AuthNotConfigured, match="development mode"):
        create_app(Settings(data_dir=tmp_path / "d", auth="off", dev_mode=False))
    with pytest.raises(AuthNotConfigured, match="OIDC_ISSUER"):
        create_app(Settings(data_dir=tmp_path / "d", auth="external", dev_mode=False))


def test_every_route_declares_its_scope_and_openapi_shows_it(hub: LiveServer) -> None:
    routes = [
        (method, path) for path, route in iter_routes(hub.app) for method in route_methods(route)
    ]
    # the walk reaches the routers' routes (an empty walk would check nothing)
    assert {("POST", "/dicomweb/studies"), ("GET", "/fhir/{resource_type}")} <= set(routes)
    for method, path in routes:
        assert (method, path) in RULES, f"{method} {path} has no rule"
    schema = httpx.get(hub.url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["smart"]["type"] == "oauth2"
    assert schema["paths"]["/dicomweb/studies"]["post"]["security"] == [
        {"smart": ["dicomweb.write"]}
    ]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert schema["paths"]["/fhir/{resource_type}"]["get"]["security"] == [
        {"smart": ["system/{resource_type}.s"]}
    ]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "security" in operation, f"{method.upper()} {path}"


def test_websocket_event_channel_needs_a_performer_token(hub: LiveServer) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = hub.url.replace("http", "ws", 1) + "/dicomweb/subscribers/AE1"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=5).close()
    assert refused.value.response.status_code in (401, 403)
    performer = register(hub, role="performer", products=["AIFI-BONEAGE"])
    token = token_for(performer, ["worklist.performer"])
    with connect(url, additional_headers=bearer(token), open_timeout=5) as socket:
        assert socket.protocol.state.name == "OPEN"


def test_token_lifetime_is_short(hub: LiveServer) -> None:
    token = token_for(register(hub), ["dicomweb.read"])
    claims = hub.app.state.hub.tokens.validate(token)
    assert claims["exp"] - claims["iat"] <= 300
    assert datetime.fromtimestamp(claims["exp"], UTC) - datetime.now(UTC) <= timedelta(minutes=5)


def test_the_capability_statement_names_the_token_endpoint(hub: LiveServer) -> None:
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    statement = httpx.get(hub.url + "/fhir/metadata").json()
    CapabilityStatement.model_validate(statement)
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    [uris] = security["extension"]
    assert uris["extension"] == [{"url": "token", "valueUri": hub.url + "/oauth/token"}]


def test_refused_and_allowed_accesses_are_audited_with_who(hub: LiveServer) -> None:
    from aifi.hub.audit.rows import records

    db = hub.app.state.hub.db
    before = len(records(db))
    uid = "1.2.3.999.1"
    assert httpx.get(hub.dicomweb + f"/studies/{uid}/metadata").status_code == 401
    bad = httpx.get(hub.dicomweb + f"/studies/{uid}/metadata", headers=bearer("x.y.z"))
    assert bad.status_code == 401
    credentials = register(hub)
    token = token_for(credentials, ["dicomweb.write"])
    assert (
        httpx.get(hub.dicomweb + f"/studies/{uid}/metadata", headers=bearer(token)).status_code
        == 403
    )
    reader = token_for(credentials, ["dicomweb.read"])
    assert (
        httpx.get(hub.dicomweb + f"/studies/{uid}/metadata", headers=bearer(reader)).status_code
        == 404
    )

    def mine() -> list[Any]:  # rows of earlier tests may still be on their way in
        return [r for r in records(db)[before:] if r.study_uid == uid]

    wait_until(lambda: len(mine()) >= 4, 5, lambda: f"four audit rows; seen: {mine()}")
    rows = mine()
    assert [(r.client_id, r.http_status) for r in rows] == [
        ("unknown", 401),
        ("unknown", 401),
        (credentials.client_id, 403),
        (credentials.client_id, 404),
    ]
    assert [(r.study_uid, r.outcome) for r in rows] == [(uid, 4)] * 4
    assert rows[-1].tenant == "default" and rows[-1].role == "hospital"
    assert all("x.y.z" not in (r.query or "") for r in rows)


def test_token_flows_on_both_databases(tmp_path: Path, database_url: str | None) -> None:
    """The registry, replay detection, revocation and key rotation on SQLite and
    PostgreSQL (the ``database_url`` fixture runs both)."""
    with secured_hub(tmp_path / "data", database_url=database_url) as hub:
        credentials = register(hub, method="private_key_jwt")
        assertion = _signed(credentials.private_jwk or {}, _claims(credentials))
        first = _token_post(hub, _assertion_form(credentials, assertion, "dicomweb.read"))
        assert first.status_code == 200
        replay = _token_post(hub, _assertion_form(credentials, assertion, "dicomweb.read"))
        assert replay.status_code == 401 and "replayed" in replay.json()["error_description"]
        token = first.json()["access_token"]
        assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code in (200, 204)
        hub.app.state.hub.tokens.keys.rotate()
        assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code in (200, 204)
        secret_client = register(hub)
        revoke = httpx.post(
            hub.url + "/oauth/revoke",
            data={"token": token},
            auth=(credentials.client_id, ""),
        )
        assert revoke.status_code == 401  # a private_key_jwt client cannot use Basic
        own = httpx.post(
            hub.url + "/oauth/revoke",
            data={
                "token": token,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(
                    credentials.client_id, credentials.token_url, credentials.private_jwk or {}
                ),
            },
        )
        assert own.status_code == 200
        assert httpx.get(hub.dicomweb + "/studies", headers=bearer(token)).status_code == 401
        assert token_for(secret_client, ["dicomweb.read"])
