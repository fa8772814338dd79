"""A hub and two hospitals' gateways for the tests of the gateway's FHIR facade (issue 17):

- the hub as a real process (:class:`tests.support.gateway.HubProcess`: authentication on,
  ``require_deidentified`` on, its own log for the PHI scan), routing hand radiographs to
  the bone-age reference product for hospital ``default``, the product run by the reference
  performer (:class:`aifi.vendors.performer.Performer`) in a thread;
- each gateway built in-process (:func:`aifi.gateway.app.build_gateway`) and served by
  uvicorn with its background workers (forwarding, completion signal), each with its own
  hospital client at the hub (tenants ``default`` and ``other``) and its own
  pseudonymisation key; development mode (the EPD needs no token here: OAuth2 is A2's).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset

from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.settings import GatewaySettings
from aifi.hub.admin.local_clients import HOSPITAL_SCOPES, LocalClients, register_local_clients
from aifi.hub.auth.clients import ClientRegistry
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from aifi.oauth_client import Credentials
from aifi.vendors.performer import Performer
from aifi.vendors.products import PRODUCTS
from tests.conftest import LiveServer, free_port, run_live_server
from tests.contract.test_results import rules_file
from tests.support.dicom import multipart_related, to_bytes
from tests.support.gateway import HubProcess

PRODUCT = "AIFI-BONEAGE"
FHIR_JSON = {"Accept": "application/fhir+json"}
GATEWAY_HOSPITAL_SCOPES = (*HOSPITAL_SCOPES, "system/*.cruds")
"""The gateway's hospital client at the hub: its DICOMweb and API scopes plus FHIR."""


@dataclass
class FhirGateway:
    """One hospital's gateway under uvicorn; ``public_url`` is what it tells the EPD."""

    gateway: Gateway
    server: LiveServer
    public_url: str

    @property
    def fhir_url(self) -> str:
        return self.server.url + "/fhir"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.fhir_url, headers=FHIR_JSON, timeout=60)

    def stow(self, datasets: Sequence[Dataset]) -> None:
        body, content_type = multipart_related(to_bytes(ds) for ds in datasets)
        response = httpx.post(
            self.server.url + "/dicomweb/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=60,
        )
        assert response.status_code == 200, response.text

    def forwarded(self) -> int:
        """How many instances the hub has acknowledged."""
        status = httpx.get(self.server.url + "/api/v1/gateway/status", timeout=10).json()
        return int(status["instances"]["forwarded"])


@dataclass
class FhirChain:
    root: Path
    hub: HubProcess
    hub_dir: Path
    clients: LocalClients
    a: FhirGateway
    b: FhirGateway
    hospital_a: Path
    """Gateway A's credentials at the hub."""
    context: dict[str, Any] = field(default_factory=dict)
    """What the module's set-up did (ids, originals), for the tests."""


def _hospital_client(hub_dir: Path, hub_url: str, path: Path, tenant: str) -> Path:
    """A gateway's hospital client at the hub, registered as ``aifi clients add`` would."""
    settings = Settings(data_dir=hub_dir)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        registration = ClientRegistry(db).add(
            tenant=tenant,
            role="hospital",
            auth_method="client_secret_basic",
            scopes=GATEWAY_HOSPITAL_SCOPES,
            description=f"gateway FHIR test: hospital {tenant}",
        )
    finally:
        db.dispose()
    Credentials(
        client_id=registration.client.client_id,
        token_url=hub_url + "/oauth/token",
        secret=registration.secret,
    ).write(path)
    return path


def gateway_settings(
    data_dir: Path, hub_url: str, credentials: Path | None, public_url: str, **changes: Any
) -> GatewaySettings:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.yaml"
    config.write_text("stow:\n  quiet_seconds: 0.3\n")
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "hub": hub_url,
        "credentials": credentials,
        "config_file": config,
        "host": "127.0.0.1",
        "dimse_port": free_port(),
        "dev_mode": True,
        "auth": "off",
        "workers": True,
        "worker_process": False,
        "worker_poll_seconds": 0.1,
        "results_poll_seconds": 0.5,
        "fsync": False,
        "public_url": public_url,
    }
    values.update(changes)
    return GatewaySettings(**values)


@contextmanager
def served_gateway(settings: GatewaySettings) -> Iterator[FhirGateway]:
    gateway = build_gateway(settings)
    try:
        with run_live_server(gateway.app, lifespan=True) as server:
            yield FhirGateway(gateway, server, str(settings.public_url))
    finally:
        gateway.close()


@contextmanager
def fhir_chain(root: Path) -> Iterator[FhirChain]:
    """The hub (process), gateways A (tenant ``default``) and B (tenant ``other``), and the
    bone-age performer."""
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    hub_dir = root / "hub"
    hub_dir.mkdir(parents=True)
    rules = rules_file(root, [PRODUCT])
    clients = register_local_clients(
        Settings(data_dir=hub_dir),
        hub_url,
        root / "credentials",
        products=[PRODUCT],
        label="gateway FHIR test",
    )
    hospital_a = _hospital_client(hub_dir, hub_url, root / "credentials" / "a.json", "default")
    hospital_b = _hospital_client(hub_dir, hub_url, root / "credentials" / "b.json", "other")
    env = {
        "AIFI_RULES_FILE": str(rules),
        "AIFI_TASK_MANAGER_POLL_SECONDS": "0.1",
        "AIFI_REQUIRE_DEIDENTIFIED": "true",
    }
    with ExitStack() as stack:
        hub = stack.enter_context(HubProcess(hub_dir, root / "hub.log", port, env))
        a = stack.enter_context(
            served_gateway(
                gateway_settings(root / "gw-a", hub_url, hospital_a, "http://gateway-a.test")
            )
        )
        b = stack.enter_context(
            served_gateway(
                gateway_settings(
                    root / "gw-b", hub_url, hospital_b, "http://gateway-b.test", tenant="other"
                )
            )
        )
        product = next(p for p in PRODUCTS.values() if p.code == PRODUCT)
        performer_client = httpx.Client(timeout=60, auth=clients.performer_auth(PRODUCT))
        stack.callback(performer_client.close)
        performer = Performer(
            hub_url + "/dicomweb",
            PRODUCT,
            product.ae_title,
            product.factory(),
            client=performer_client,
            watch_cancel=False,
        )
        stop = threading.Event()
        thread = threading.Thread(
            target=performer.run,
            args=(stop,),
            kwargs={"poll_seconds": 0.3, "events": False},
            daemon=True,
        )
        thread.start()

        def stop_performer() -> None:
            stop.set()
            thread.join(timeout=30)

        stack.callback(stop_performer)
        yield FhirChain(root, hub, hub_dir, clients, a, b, hospital_a)


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if (e.get("search") or {}).get("mode", "match") == mode
    ]


__all__ = [
    "FHIR_JSON",
    "PRODUCT",
    "FhirChain",
    "FhirGateway",
    "entries",
    "fhir_chain",
    "gateway_settings",
    "served_gateway",
]
