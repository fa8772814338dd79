"""The kit's private hub: the real hub (:func:`aifi.hub.app.create_app`) under uvicorn in a
thread of the kit, on an embedded SQLite database and a local folder in a throw-away
directory, with authentication on (the built-in OAuth2 server, SMART Backend Services) and
the :class:`~aifi.conformance_kit.performer.recorder.Recorder` in front.

Clients registered (:func:`aifi.hub.admin.local_clients.register_local_clients`): the kit
itself as the hospital (it stores the test studies, signals them complete, requests
cancellations and raises a priority, as a hospital's gateway and scheduler would) and one
performer client for the product under test, whose credentials file the product gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from aifi.conformance_kit.performer.recorder import KIT_AGENT, Recorder
from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.errors import AifiError
from aifi.hub.admin.local_clients import LocalClients, register_local_clients
from aifi.hub.app import create_app
from aifi.hub.persistence.database import Database
from aifi.hub.serve import free_port
from aifi.hub.settings import Settings
from aifi.hub.worklist.service import SqlWorklist
from aifi.ihe_profiles.rules import RulesConfig, load_rules

HOST = "127.0.0.1"
START_SECONDS = 30.0


class KitError(AifiError):
    """The kit could not test at all (its hub did not start, no test study fits the
    product's rules): exit code 2, not a finding about the product."""


@dataclass
class KitHub:
    base_url: str
    recorder: Recorder
    clients: LocalClients
    rules: RulesConfig
    tenant: str
    client: httpx.Client
    """The kit's own client (hospital role, User-Agent :data:`KIT_AGENT`, not recorded)."""
    worklist: SqlWorklist
    db: Database
    """The hub's worklist itself, for what only the hub's scheduler does (re-prioritise)."""

    @property
    def dicomweb(self) -> str:
        return self.base_url + "/dicomweb"

    def credentials(self, product: str) -> Path:
        return self.clients.performers[product]


@contextmanager
def kit_hub(workdir: Path, product: str, rules_file: Path | None) -> Iterator[KitHub]:
    """The started hub (see the module docstring); stopped and closed on the way out."""
    configure_pydicom()
    rules = load_rules(rules_file)
    settings = Settings(
        data_dir=workdir / "hub",
        auth="builtin",
        dev_mode=False,
        rules_file=rules_file,
        task_manager_poll_seconds=0.2,
        delivery=False,
        fhir_notify=False,
    )
    if product not in {known.code for known in rules.products_for(settings.default_tenant)}:
        raise KitError(
            f"no product {product} in the routing rules of tenant {settings.default_tenant!r}"
            " (give the product's rules with --rules FILE)"
        )
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    clients = register_local_clients(
        settings, base_url, workdir / "credentials", products=[product], label="conformance kit"
    )
    app = create_app(settings)
    recorder = Recorder(app, workdir / "recorded")
    server = uvicorn.Server(
        uvicorn.Config(recorder, host=HOST, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="aifi-kit-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise KitError(f"the kit's hub did not start on {HOST}:{port}")
        time.sleep(0.05)
    client = httpx.Client(
        auth=clients.hospital_auth(), headers={"User-Agent": KIT_AGENT}, timeout=60.0
    )
    try:
        yield KitHub(
            base_url,
            recorder,
            clients,
            rules,
            settings.default_tenant,
            client,
            app.state.hub.worklist,
            app.state.hub.db,
        )
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=15)
        app.state.hub.close()
