"""The gateway's one composition root: :func:`build_gateway` reads the settings and builds
everything, in dependency order, each part complete when built (collaborators through
constructors)::

    GatewaySettings ─► GatewayConfig (YAML) ─► Database (gateway migrations)
      ─► pseudonym key ─► Pseudonymiser(Profile) / Reidentifier(lookup)
      ─► InstanceStore ─► Ingest(doorbell) ─► DimseScp, STOW-RS router
      ─► hub client ─► background workers: Forwarder(doorbell), PacsDeliverer,
         ResultsWorker(deliverer), priors, the FHIR relay to the EPD — here, or in the
         child process (WorkerProcess)
      ─► OAuth2 for the EPD (GatewayAuth) ─► FHIR facade (translator, client of the hub)
      ─► FastAPI app: STOW-RS and WADO-RS, /fhir, /oauth, status (lifespan: SCP on,
         background workers on; off in reverse)

The background workers (:mod:`aifi.gateway.workers`) run in a child process of their own
by default (:mod:`aifi.gateway.worker_process`: receiving never waits for them), and the
ingest side rings the forwarder's doorbell over a socket after each commit; with
``worker_process`` off they run in this process and share one :class:`Doorbell`.

Start-up recovery, before anything is received (:meth:`Ingest.recover`): staging and
temporary files an interrupted transfer left are removed, stored files whose row was lost
are indexed again, studies whose association the restart cut short become due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

import aifi
from aifi.clock import Clock, utc_now
from aifi.dicomweb.errors import dicomweb_error_response
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import HubError
from aifi.gateway.api import routes
from aifi.gateway.api.metrics import build_metrics_router
from aifi.gateway.api.status import StatusService
from aifi.gateway.auth import GatewayAuth, build_auth, install_auth
from aifi.gateway.config import GatewayConfig, load_config, parse_pacs
from aifi.gateway.deid import load_or_create_key
from aifi.gateway.fhir.facade import (
    FhirFacade,
    build_facade,
    fhir_error_response,
    is_fhir_path,
    mount_facade,
)
from aifi.gateway.fhir.subscription_relay import fhir_base_url
from aifi.gateway.fhir.subscriptions import GatewaySubscriptions, status_router
from aifi.gateway.hub_connection import hub_client
from aifi.gateway.ingest.dimse_scp import DimseScp
from aifi.gateway.ingest.index import ingest_database
from aifi.gateway.ingest.pipeline import Ingest
from aifi.gateway.ingest.store import InstanceStore
from aifi.gateway.ingest.stow import PREFIX as STOW_PREFIX
from aifi.gateway.ingest.stow import StowService
from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.priors.build import priors_pacs
from aifi.gateway.results import results_status
from aifi.gateway.settings import GatewayNotStartable, GatewaySettings, check_startable
from aifi.gateway.wado import HeldInstances, wado_router
from aifi.gateway.worker_process import WorkerProcess
from aifi.gateway.workers import BackgroundWorker, background_workers, start_loops, stop_loops
from aifi.hub.api_docs import install_api_docs
from aifi.hub.delivery.destinations import Destination
from aifi.hub.json_logs import RequestLog
from aifi.hub.persistence.database import Database

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


@dataclass
class Gateway:
    """Everything :func:`build_gateway` built; ``app`` is what uvicorn serves (its lifespan
    starts the SCP and the workers)."""

    settings: GatewaySettings
    config: GatewayConfig
    db: Database
    store: InstanceStore
    ingest: Ingest
    scp: DimseScp
    hub: httpx.Client
    destinations: list[Destination]
    workers: list[BackgroundWorker] = field(default_factory=list)
    """The background workers when they run in this process (``worker_process`` off)."""
    worker_process: WorkerProcess | None = None
    """The child process they run in otherwise."""
    auth: GatewayAuth | None = None
    """OAuth2 for the EPD (SMART Backend Services): clients, tokens, the token check."""
    fhir: FhirFacade | None = None
    """The EPD's FHIR R4 facade at ``/fhir`` (its translator and its client of the hub)."""
    app: FastAPI = field(default_factory=FastAPI)

    def close(self) -> None:
        """Release what was built (for a gateway whose app never ran its lifespan)."""
        self.scp.stop()
        self.hub.close()
        if self.fhir is not None:
            self.fhir.close()
        self.ingest.db.dispose()
        self.db.dispose()


def _private_data(settings: GatewaySettings) -> bytes:
    """The data folder (0700) and the database file (0600, before SQLite creates it: its
    WAL and shared-memory files take the database file's mode) hold patients' identities;
    the pseudonymisation key. Raises :class:`GatewayNotStartable` with the reason when the
    key cannot be had (a key file others may read, a malformed key)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = settings.data_dir / "gateway.db"
    database.touch(mode=0o600, exist_ok=True)
    database.chmod(0o600)
    given = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None
    try:
        return load_or_create_key(settings.key_file, given)
    except (OSError, ValueError) as exc:
        raise GatewayNotStartable(f"pseudonymisation key: {exc}") from exc


def build_gateway(settings: GatewaySettings, *, clock: Clock = utc_now) -> Gateway:
    """Build the gateway for ``settings`` (see the module docstring). Raises
    :class:`~aifi.gateway.settings.GatewayNotStartable` or
    :class:`~aifi.gateway.config.ConfigError` (a clear message) when it cannot start."""
    check_startable(settings)
    config = load_config(settings.config_file)
    pacs = parse_pacs(settings.pacs, calling_ae=settings.ae_title) if settings.pacs else None
    destinations = config.destinations(pacs, calling_ae=settings.ae_title)
    priors_pacs(config, destinations)  # a priors.pacs naming no PACS fails here, at start-up
    key = _private_data(settings)
    db = Database(settings.database_url, migrations=GATEWAY_MIGRATIONS)
    db.migrate()
    store = InstanceStore(settings.data_dir, fsync=settings.fsync)
    doorbell = Doorbell()
    child = WorkerProcess(settings) if settings.workers and settings.worker_process else None
    bell = doorbell if child is None else child.bell
    ingest = Ingest(ingest_database(settings.database_url), store, bell, clock=clock)
    recovery = ingest.recover()
    log.info(
        "start-up: %d instances indexed again, %d left-over files removed, %d studies due",
        recovery.reindexed,
        recovery.removed,
        recovery.due,
    )

    scp = DimseScp(
        ingest,
        ae_title=settings.ae_title,
        host=settings.host,
        port=settings.dimse_port,
        allowed_calling_ae_titles=config.dimse.allowed_calling_ae_titles,
        require_called_ae_title=config.dimse.require_called_ae_title,
        allowed_addresses=config.dimse.allowed_addresses,
        max_associations=settings.max_associations,
        max_pdu=settings.dimse_max_pdu,
    )
    hub = hub_client(settings.hub, settings.credentials)
    workers = (
        background_workers(settings, config, db, key, hub, destinations, doorbell, clock)
        if settings.workers and child is None
        else []
    )
    auth = build_auth(settings, db, clock=clock)
    fhir = build_facade(settings, config, db, key)  # the EPD's FHIR R4 facade (issue 17)
    gateway = Gateway(
        settings,
        config,
        db,
        store,
        ingest,
        scp,
        hub,
        destinations,
        workers,
        worker_process=child,
        auth=auth,
        fhir=fhir,
    )
    gateway.app = _create_app(gateway)
    return gateway


def _create_app(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gateway.scp.start()
        tasks = start_loops(gateway.workers)
        child = gateway.worker_process
        if child is not None:
            child.start()
            tasks.append(asyncio.create_task(child.supervise()))
        try:
            yield
        finally:
            if child is not None:
                await asyncio.to_thread(child.stop)
            await stop_loops(tasks)
            await asyncio.to_thread(gateway.scp.stop)
            gateway.hub.close()
            if gateway.fhir is not None:
                gateway.fhir.close()
            gateway.ingest.db.dispose()
            gateway.db.dispose()

    app = FastAPI(
        title="aifi gateway",
        version=aifi.__version__,
        summary="The hospital gateway: DICOM in, pseudonymised to the hub, results back",
        lifespan=lifespan,
        docs_url=None,  # served offline by install_api_docs (issue 19 point 5)
        redoc_url=None,
    )
    install_api_docs(app)
    app.state.gateway = gateway
    app.state.stow = StowService(
        gateway.ingest,
        allowed_addresses=gateway.config.stow.allowed_addresses,
        fsync=gateway.settings.fsync,
    )
    app.state.dicomweb_config = app.state.stow.config  # Warning headers name the service
    app.state.status = StatusService(
        gateway.db,
        limit=gateway.settings.status_rows,
        results=results_status,
        allowed_addresses=gateway.config.status.allowed_addresses,
    )
    app.include_router(routes.stow_router, prefix=STOW_PREFIX)
    app.include_router(routes.status_router, prefix=API_PREFIX)
    # issue 19: Prometheus metrics, for the status page's readers
    app.include_router(build_metrics_router(gateway.db, gateway.config.status.allowed_addresses))
    app.state.dicom_store = HeldInstances(gateway.db, gateway.settings.data_dir)
    app.include_router(wado_router(), prefix=STOW_PREFIX)  # WADO-RS (GET) beside STOW-RS
    if gateway.auth is not None:
        install_auth(app, gateway.auth)  # /oauth, discovery; guards /fhir and WADO-RS
    # issue 17: the EPD's Subscriptions, held at the gateway (relayed by the worker process)
    subscriptions = GatewaySubscriptions(
        gateway.db, base_url=fhir_base_url(gateway.settings, gateway.config)
    )
    if gateway.fhir is not None:  # the EPD's FHIR R4 facade at /fhir
        mount_facade(
            app, gateway.fhir, subscriptions=subscriptions, routers=[status_router(subscriptions)]
        )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": aifi.__version__}

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, error: HubError) -> Response:
        if request.url.path.startswith(STOW_PREFIX):
            return dicomweb_error_response(request, error)
        if is_fhir_path(request):
            return fhir_error_response(error)
        return JSONResponse({"detail": error.reason}, status_code=error.status_code)

    # request ids and, with log_format=json, access lines (issue 19): around everything
    app.add_middleware(RequestLog, access_lines=gateway.settings.log_format == "json")
    return app
