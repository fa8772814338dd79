"""OAuth2 at the gateway (issue 17 point 1): the EPD's client, registered with ``aifi gateway
clients add``, gets a token from the gateway's own token endpoint (SMART Backend Services,
``private_key_jwt`` or ``client_secret_basic``) and reads ``/fhir`` and WADO-RS; without a
token it is 401 with a Bearer challenge and an OperationOutcome, with the wrong scope 403; a
gateway with authentication off refuses to start outside development mode.

A real gateway (``build_gateway``) behind a real uvicorn server; real signed JWTs
(:mod:`aifi.oauth_client`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from aifi.cli import app as aifi_cli
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.settings import GatewayNotStartable, GatewaySettings
from aifi.oauth_client import ClientCredentials, Credentials, TokenError
from tests.conftest import LiveServer, free_port, run_live_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class SecuredGateway:
    gateway: Gateway
    server: LiveServer
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url


def hub_credentials(folder: Path) -> Path:
    """A hospital client's credentials for the hub (never used: no workers run here), so
    that the gateway starts outside development mode."""
    path = folder / "hub-credentials.json"
    Credentials("gw", "http://127.0.0.1:1/oauth/token", secret="x" * 32).write(path)
    return path


def gateway_settings(data_dir: Path, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "dimse_port": free_port(),
        "dev_mode": False,
        "credentials": hub_credentials(data_dir.parent),
        "workers": False,
        "auth": "builtin",
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredGateway]:
    data_dir = tmp_path_factory.mktemp("gw-auth") / "data"
    gateway = build_gateway(gateway_settings(data_dir))
    try:
        with run_live_server(gateway.app) as server:
            yield SecuredGateway(gateway, server, data_dir)
    finally:
        gateway.close()


def clients(gw: SecuredGateway, *args: str, stdin: str | None = None) -> str:
    """``aifi gateway clients …`` on the gateway's data folder; its output."""
    result = CliRunner().invoke(
        aifi_cli,
        ["gateway", "clients", *args, "--data-dir", str(gw.data_dir)],
        input=stdin,
    )
    assert result.exit_code == 0, result.output
    gw.gateway.auth.registry.forget()  # type: ignore[union-attr]  # seen at once, not in 5 s
    return result.output


def add_epd(
    gw: SecuredGateway, client_id: str, folder: Path, *extra: str, stdin: str | None = None
) -> Credentials:
    path = folder / f"{client_id}.json"
    clients(
        gw,
        "add",
        "--role",
        "epd",
        "--client-id",
        client_id,
        "--write-credentials",
        str(path),
        "--gateway-url",
        gw.url,
        *extra,
        stdin=stdin,
    )
    return Credentials.from_file(path)


def bearer(auth: ClientCredentials) -> dict[str, str]:
    return auth.headers()


def test_discovery_names_the_gateways_token_endpoint_and_the_epd_scopes(gw: SecuredGateway):
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        response = httpx.get(gw.url + path)
        assert response.status_code == 200
        document = response.json()
        assert document["token_endpoint"] == gw.url + "/oauth/token"
        assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
        assert "system/Task.crs" in document["scopes_supported"]
        assert "dicomweb.read" in document["scopes_supported"]
        assert "worklist.performer" not in document["scopes_supported"]


def test_a_registered_epd_gets_a_token_with_private_key_jwt_and_reads(
    gw: SecuredGateway, tmp_path: Path
):
    credentials = add_epd(gw, "epd-jwt", tmp_path, "--generate-key")
    assert credentials.private_jwk is not None and credentials.secret is None
    assert credentials.token_url == gw.url + "/oauth/token"
    listed = clients(gw, "list", "--json")
    [row] = [json.loads(line) for line in listed.splitlines() if "epd-jwt" in line]
    assert row["auth_method"] == "private_key_jwt" and "system/ImagingStudy.rs" in row["scopes"]
    assert "private_jwk" not in listed and "d" not in row

    auth = ClientCredentials(credentials, ["system/Task.rs", "dicomweb.read"])
    headers = bearer(auth)

    metadata = httpx.get(gw.url + "/fhir/metadata")  # public, as at the hub
    assert metadata.status_code == 200 and "www-authenticate" not in metadata.headers
    assert metadata.json()["resourceType"] == "CapabilityStatement"

    # a protected FHIR path: through the authorizer (what the facade answers is its own)
    task = httpx.get(gw.url + "/fhir/Task", params={"status": "completed"}, headers=headers)
    assert task.status_code not in (401, 403), task.text

    # a protected WADO-RS path: authorized, then the gateway's own 404 for a study it lacks
    study = generate_uid()
    wado = httpx.get(f"{gw.url}/dicomweb/studies/{study}/metadata", headers=headers)
    assert wado.status_code == 404 and wado.headers["warning"].startswith("299 ")
    assert httpx.get(f"{gw.url}/dicomweb/studies/{study}/metadata").status_code == 401


def test_client_secret_basic_from_stdin(gw: SecuredGateway, tmp_path: Path):
    secret = "s3cret-of-the-epd-" + "x" * 20
    credentials = add_epd(gw, "epd-basic", tmp_path, "--secret-stdin", stdin=secret + "\n")
    assert credentials.secret == secret
    token = ClientCredentials(credentials, ["system/DiagnosticReport.rs"]).token()
    response = httpx.get(
        gw.url + "/fhir/DiagnosticReport", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code not in (401, 403)
    wrong = httpx.post(
        gw.url + "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "system/DiagnosticReport.rs"},
        auth=("epd-basic", "not-the-secret-at-all"),
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_no_token_is_401_with_a_bearer_challenge_and_an_operation_outcome(gw: SecuredGateway):
    for path in ("/fhir/Task", "/fhir/Patient/pat-1", "/fhir/ImagingStudy/_search"):
        response = httpx.get(gw.url + path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert 'realm="aifi-gateway"' in response.headers["www-authenticate"]
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["severity"] == "error"
    garbage = httpx.get(gw.url + "/fhir/Task", headers={"Authorization": "Bearer not.a.jwt"})
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    assert garbage.json()["resourceType"] == "OperationOutcome"


def test_wrong_scope_is_403_naming_the_scope(gw: SecuredGateway, tmp_path: Path):
    credentials = add_epd(
        gw, "epd-reports-only", tmp_path, "--generate-key", "--scope", "system/DiagnosticReport.rs"
    )
    auth = ClientCredentials(credentials, ["system/DiagnosticReport.rs"])
    headers = bearer(auth)
    for method, path, scope in (
        ("GET", "/fhir/Task", "system/Task.s"),
        ("GET", "/fhir/Patient/pat-1", "system/Patient.r"),
        ("POST", "/fhir/Task", "system/Task.c"),
        ("GET", f"/dicomweb/studies/{generate_uid()}", "dicomweb.read"),
    ):
        response = httpx.request(method, gw.url + path, headers=headers, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert f'scope="{scope}"' in response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        if path.startswith("/fhir"):
            assert response.json()["resourceType"] == "OperationOutcome"
        else:
            assert response.headers["warning"].startswith("299 ")
    # a scope it was not registered for is never granted
    with pytest.raises(TokenError, match="invalid_scope"):
        ClientCredentials(credentials, ["system/Task.rs"]).token()


def test_a_removed_client_gets_no_token_and_its_token_stops_working(
    gw: SecuredGateway, tmp_path: Path
):
    credentials = add_epd(gw, "epd-leaving", tmp_path, "--generate-key")
    headers = bearer(ClientCredentials(credentials, ["system/Task.rs"]))
    assert httpx.get(gw.url + "/fhir/Task", headers=headers).status_code not in (401, 403)
    assert "revoked" in clients(gw, "remove", "epd-leaving")
    assert httpx.get(gw.url + "/fhir/Task", headers=headers).status_code == 401
    with pytest.raises(TokenError, match="invalid_client"):
        ClientCredentials(credentials, ["system/Task.rs"]).token()


def test_the_cli_refuses_what_is_not_an_epd_client(gw: SecuredGateway):
    runner = CliRunner()
    base = ["gateway", "clients", "add", "--data-dir", str(gw.data_dir), "--client-id", "x1"]
    for extra, message in (
        (["--role", "performer", "--generate-key"], "role must be"),
        (["--generate-key", "--secret-stdin"], "exactly one"),
        (["--generate-key", "--scope", "worklist.performer"], "cannot hold the scope"),
        (["--generate-key", "--scope", "system/AuditEvent.rs"], "cannot hold the scope"),
        (["--generate-key", "--scope", "system/*.rs"], "cannot hold the scope"),
    ):
        result = runner.invoke(aifi_cli, base + extra, input="y" * 40 + "\n")
        assert result.exit_code == 2 and message in result.output, result.output


def test_auth_off_outside_development_mode_refuses_to_start(tmp_path: Path):
    settings = gateway_settings(tmp_path / "data", auth="off")
    with pytest.raises(GatewayNotStartable, match="authentication is off"):
        build_gateway(settings)
    result = CliRunner().invoke(
        aifi_cli,
        ["gateway", "serve", "--data-dir", str(tmp_path / "data2")],
        env={"AIFI_GATEWAY_AUTH": "off", "AIFI_DEV_MODE": "false"},
    )
    assert result.exit_code == 2 and "authentication is off" in result.output


def test_auth_off_in_development_mode_lets_everyone_read(tmp_path: Path):
    gateway = build_gateway(gateway_settings(tmp_path / "data", auth="off", dev_mode=True))
    try:
        with run_live_server(gateway.app) as server:
            response = httpx.get(f"{server.url}/dicomweb/studies/{generate_uid()}")
            assert response.status_code == 404  # not 401: nobody is asked for a token
            assert httpx.get(server.url + "/oauth/token").status_code == 404  # no token endpoint
    finally:
        gateway.close()
