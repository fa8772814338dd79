"""The composition root: :func:`build_hub` builds every part of the hub once, from the
:class:`~aifi.hub.settings.Settings`, and hands each its collaborators in its constructor.

Read it top to bottom and it follows a study through the hub in the order of the seven steps
of ARCHITECTURE.md:

1. storage: the database (its commit hooks note what the FHIR projection must follow), the
   SQL DICOM store, and in front of it for STOW-RS the IHE AIR result gate;
2. and 3. routing: the study router and the Task Manager that creates the UPS workitems;
4. the worklist the performers claim, complete or cancel workitems on;
5. results: the completion of each workitem (IHE AIR checks, the AI result);
6. release and delivery: the PACS outbox, the FHIR projection, subscriptions and the EPD
   push, the EPD's own requests for AI;
7. who may do what: the OAuth2 client registry, tokens and the principal resolver.

The background loops of these parts run while the app runs: :meth:`Hub.run_background`.
Nothing is attached to a part after it is built, with one exception written down where it
happens: the FHIR store's subscription notifier reads from the store it listens to, so it is
subscribed to it once both exist. (The metrics' query timer is given to the database as an
engine watcher; the metrics read the database it then builds.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from aifi.clock import SettableClock
from aifi.dicomweb.deps import DicomwebConfig
from aifi.dicomweb.store import DicomStore
from aifi.errors import ConfigurationError
from aifi.fhir.search import parse_search
from aifi.fhir.types import StoredResource
from aifi.hub.audit.backend import AuditingFhirBackend
from aifi.hub.audit.exports import FhirExportAudit, PacsDeliveryAudit
from aifi.hub.audit.syslog import SyslogExporter
from aifi.hub.audit.trail import AuditTrail
from aifi.hub.auth.clients import ClientRegistry
from aifi.hub.auth.resolver import BuiltinResolver, DevResolver, ExternalResolver
from aifi.hub.auth.tokens import KeyRing, TokenService
from aifi.hub.delivery.deliverer import Deliverer, run_delivery_loop
from aifi.hub.delivery.destinations import DestinationsConfig, load_destinations
from aifi.hub.fhir.backend import HubFhirBackend
from aifi.hub.fhir.changes import ChangeNotes
from aifi.hub.fhir.notify import FhirNotifier, run_fhir_notify_loop
from aifi.hub.fhir.projection import FhirProjector, project_devices, run_projection_loop
from aifi.hub.fhir.requests import AiRequests
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.metrics import HubMetrics
from aifi.hub.orchestration.routing import StudyRouter
from aifi.hub.orchestration.task_manager import HOUSEKEEPING_SECONDS, TaskManager
from aifi.hub.persistence.database import Database
from aifi.hub.priors.service import PriorRequests
from aifi.hub.results.completion import ResultsHook
from aifi.hub.results.gate import ResultGate
from aifi.hub.settings import Settings
from aifi.hub.store.deidentified import TenantPolicy
from aifi.hub.store.repository import SqlDicomStore
from aifi.hub.worklist.service import SqlWorklist
from aifi.hub.worklist.visibility import HubVisibility
from aifi.ihe_profiles.rules import RulesConfig, load_rules
from aifi.principal import PrincipalResolver

log = logging.getLogger(__name__)

DICOMWEB_PREFIX = "/dicomweb"
FHIR_PREFIX = "/fhir"


class AuthNotConfigured(ConfigurationError, RuntimeError):
    """The hub was asked to start without authentication outside development mode."""


def check_auth(settings: Settings) -> None:
    """Safe by default (issue 6): no hub without authentication unless explicitly in
    development mode; external mode needs its issuer."""
    if settings.auth == "off" and not settings.dev_mode:
        raise AuthNotConfigured(
            "authentication is off (AIFI_AUTH=off) outside development mode: set "
            "AIFI_AUTH=builtin (the default) or external, or AIFI_DEV_MODE=true for a "
            "development hub"
        )
    if settings.auth == "external" and not settings.oidc_issuer:
        raise AuthNotConfigured("AIFI_AUTH=external needs AIFI_OIDC_ISSUER (and a JWKS)")


class BaseUrl:
    """The hub's public base URL: ``settings.public_url``, or else the one the latest request
    came in on (DICOMweb Retrieve URLs do the same). FHIR resources written in the
    background (the ImagingStudy endpoint, report attachments) use it; set
    ``AIFI_PUBLIC_URL`` in production so they never depend on a request."""

    def __init__(self, configured: str | None) -> None:
        self.configured = configured.rstrip("/") if configured else None
        self.seen = "http://127.0.0.1:8042"

    @property
    def value(self) -> str:
        return self.configured or self.seen


@dataclass
class Hub:
    """Every part of one hub process, built once by :func:`build_hub`."""

    settings: Settings
    clock: SettableClock
    """The workflow's one clock (worklist, routing, Task Manager, results, EPD requests)."""
    rules: RulesConfig
    db: Database
    store: SqlDicomStore
    """The SQL DICOM store (files + index)."""
    dicom_store: DicomStore
    """What STOW-RS, QIDO-RS and WADO-RS use: the store behind the IHE AIR result gate."""
    visibility: HubVisibility
    destinations: DestinationsConfig
    deliverer: Deliverer
    results: ResultsHook
    worklist: SqlWorklist
    router: StudyRouter
    task_manager: TaskManager
    priors: PriorRequests
    """Prior-study requests of comparison products (issue 17), worked by the gateways."""
    base_url: BaseUrl
    fhir_store: SqlFhirStore
    projector: FhirProjector
    notifier: FhirNotifier
    requests: AiRequests
    fhir_backend: AuditingFhirBackend
    dicomweb_config: DicomwebConfig
    clients: ClientRegistry
    principal_resolver: PrincipalResolver
    audit: AuditTrail
    audit_exporter: SyslogExporter | None
    """The audit trail's export to an audit record repository (``audit_syslog_url``)."""
    metrics: HubMetrics
    """``GET /metrics`` (issue 19): this app's Prometheus registry."""
    tokens: TokenService | None = None
    """The built-in authorization server's tokens (``auth=builtin``)."""
    closed: bool = False
    """:meth:`close` ran."""

    @asynccontextmanager
    async def run_background(self) -> AsyncIterator[None]:
        """The background loops while the app runs (each one only where the settings turn
        it on); on the way out they are cancelled and the Task Manager's lease let go."""
        settings = self.settings
        loops: list[asyncio.Task[None]] = []

        def start(loop: Awaitable[None]) -> None:
            loops.append(asyncio.ensure_future(loop))

        if settings.task_manager:
            start(_run_task_manager(self.task_manager, settings.task_manager_poll_seconds))
        if settings.delivery:
            start(run_delivery_loop(self.deliverer, settings.delivery_poll_seconds))
        start(run_projection_loop(self.projector, settings.fhir_notify_poll_seconds))
        if settings.fhir_notify:
            start(run_fhir_notify_loop(self.notifier, settings.fhir_notify_poll_seconds))
        try:
            yield
        finally:
            for task in reversed(loops):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if settings.task_manager:
                await run_in_threadpool(self.task_manager.release)

    def close(self) -> None:
        """After the loops stopped: write the audit trail's last queued rows, then close the
        store's files and the database's engines. Closing twice does nothing more (the
        app's lifespan closes it; whoever built an app whose lifespan never ran does)."""
        if self.closed:
            return
        self.closed = True
        self.audit.close()
        self.store.close()
        self.db.dispose()


async def _run_task_manager(task_manager: TaskManager, poll_seconds: float) -> None:
    """The Task Manager's rounds (:mod:`aifi.hub.orchestration.task_manager`), in a worker
    thread each, until the app stops. An error in one round is logged and the next round
    goes on."""
    loop = asyncio.get_running_loop()
    next_housekeeping = 0.0
    while True:
        housekeeping = loop.time() >= next_housekeeping
        if housekeeping:
            next_housekeeping = loop.time() + HOUSEKEEPING_SECONDS
        try:
            await run_in_threadpool(task_manager.tick, housekeeping)
        except Exception:
            log.exception("Task Manager round failed")
        await asyncio.sleep(poll_seconds)


def _principal_resolver(
    settings: Settings, clients: ClientRegistry, db: Database
) -> tuple[PrincipalResolver, TokenService | None]:
    """Who is calling (issue 6): the built-in authorization server's tokens, an external
    OpenID provider's, or — in development mode only — everyone is an administrator."""
    if settings.auth == "builtin":
        lifetime = timedelta(seconds=settings.access_token_seconds)
        keys = KeyRing(
            db,
            rotate_after=timedelta(days=settings.signing_key_days),
            keep_after_retired=lifetime + timedelta(minutes=5),
        )
        tokens = TokenService(keys, issuer=settings.public_url or "aifi-hub", lifetime=lifetime)
        return BuiltinResolver(tokens, clients), tokens
    if settings.auth == "external":
        assert settings.oidc_issuer is not None
        return (
            ExternalResolver(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks_url=settings.oidc_jwks_url,
                tenant_claim=settings.oidc_tenant_claim,
                role_claim=settings.oidc_role_claim,
                products_claim=settings.oidc_products_claim,
                client_claim=settings.oidc_client_claim,
            ),
            None,
        )
    log.warning("development mode: authentication is OFF, every request has every right")
    return DevResolver(settings.default_tenant), None


def build_hub(settings: Settings) -> Hub:
    """Every part of the hub, built from the settings, in the order a study meets them."""
    check_auth(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rules = load_rules(settings.rules_file)
    clock = SettableClock()

    # 1. storage; the commit hooks note what the FHIR projection must follow (step 5/6)
    notes = ChangeNotes()
    metrics = HubMetrics(operator_tenant=settings.default_tenant)
    db = Database(
        settings.resolved_database_url,
        before_commit=[notes.before_commit],
        after_commit=[notes.after_commit],
        engine_watchers=[metrics.queries.listen_to],
    )
    db.migrate()
    metrics.read_from(db)
    store = SqlDicomStore(db, settings.dicom_dir, fsync=settings.fsync)
    swept = store.sweep_staging()
    if swept:
        log.warning("removed %d staging files left by an interrupted upload", swept)
    store.ensure_tenant(settings.default_tenant)
    tenants = TenantPolicy(db, default=settings.deidentified_by_default)  # issue 15
    dicom_store = ResultGate(store, db, rules, tenants=tenants)
    visibility = HubVisibility(db, dicom_store)  # issue 6: a performer's scope

    # 7. the audit trail (issue 6): audit_event rows, read back as FHIR AuditEvents; the
    # FHIR store only tells it which patient a resource is about
    fhir_store = SqlFhirStore(db)
    audit = AuditTrail(db, fhir_store, operator_tenant=settings.default_tenant)
    audit_exporter = (
        SyslogExporter(db, settings.audit_syslog_url, ca_file=settings.audit_syslog_ca_file)
        if settings.audit_syslog_url
        else None
    )

    # 6. delivery of released results to the PACS (built first: completion releases)
    destinations = load_destinations(settings.destinations_file)
    deliverer = Deliverer(
        db,
        store,
        destinations,
        max_attempts=settings.delivery_max_attempts,
        backoff_seconds=settings.delivery_backoff_seconds,
        audit=PacsDeliveryAudit(audit, destinations),
    )

    # 4. and 5. the worklist, and what happens when a workitem of a product ends
    results = ResultsHook(db, rules, deliverer=deliverer, clock=clock)
    worklist = SqlWorklist(
        db,
        clock=clock,
        run_timeouts={p.code: p.run_timeout_minutes for p in rules.products},
        final_state_hook=results,
    )

    # 6. the FHIR side: resources, their projection, EPD requests, notifications
    base_url = BaseUrl(settings.public_url)
    projector = FhirProjector(
        db,
        fhir_store,
        rules,
        base_url=lambda: base_url.value + DICOMWEB_PREFIX,
        notes=notes,
        instances=store.instance_metadata,
    )

    # 2. and 3. routing complete studies to products; comparison products' priors (issue 17)
    priors = PriorRequests(db, store, worklist, clock=clock)
    router = StudyRouter(
        db,
        store,
        worklist,
        rules,
        clock=clock,
        study_seen=projector.note_routed_study,
        priors=priors,
    )
    requests = AiRequests(
        db,
        fhir_store,
        rules,
        worklist,
        router,
        wait=timedelta(hours=settings.fhir_request_wait_hours),
        clock=clock,
    )
    task_manager = TaskManager(
        db, worklist, rules, router, clock=clock, after_round=requests.after_round, priors=priors
    )

    def matches(session: Session, tenant: str, criteria: str, stored: StoredResource) -> bool:
        kind, _, query = criteria.partition("?")
        if kind != stored.resource_type:
            return False
        parsed = parse_search(kind, parse_qsl(query, keep_blank_values=True), strict=False)
        return fhir_store.matches(session, tenant, parsed, kind, stored.resource_id)

    notifier = FhirNotifier(
        db,
        fhir_store,
        base_url=lambda: base_url.value + FHIR_PREFIX,
        push_targets=settings.epd_fhir_urls,
        webhook_url=settings.notify_webhook_url,
        webhook_urls=settings.notify_webhook_urls,
        max_attempts=settings.fhir_notify_max_attempts,
        backoff_seconds=settings.fhir_notify_backoff_seconds,
        matcher=matches,
        audit=FhirExportAudit(
            audit,
            settings.epd_fhir_urls,
            lambda tenant: settings.notify_webhook_urls.get(tenant) or settings.notify_webhook_url,
        ),
    )
    # The one registration after construction: the notifier reads the store it listens to.
    fhir_store.subscribe(notifier)
    project_devices(projector, db, rules.tenants)
    # every FHIR read and search of patient data is audited
    fhir_backend = AuditingFhirBackend(
        HubFhirBackend(db, fhir_store, requests, notifier, projector), audit
    )

    # 7. who is calling
    clients = ClientRegistry(db, jwks_url_allowlist=settings.jwks_url_allowlist)
    resolver, tokens = _principal_resolver(settings, clients, db)

    return Hub(
        settings=settings,
        clock=clock,
        rules=rules,
        db=db,
        store=store,
        dicom_store=dicom_store,
        visibility=visibility,
        destinations=destinations,
        deliverer=deliverer,
        results=results,
        worklist=worklist,
        router=router,
        task_manager=task_manager,
        priors=priors,
        base_url=base_url,
        fhir_store=fhir_store,
        projector=projector,
        notifier=notifier,
        requests=requests,
        fhir_backend=fhir_backend,
        audit=audit,
        audit_exporter=audit_exporter,
        metrics=metrics,
        dicomweb_config=DicomwebConfig(
            prefix=DICOMWEB_PREFIX,
            public_url=settings.public_url,
            qido_default_limit=settings.qido_default_limit,
            qido_max_limit=settings.qido_max_limit,
            qido_max_offset=settings.qido_max_offset,
        ),
        clients=clients,
        principal_resolver=resolver,
        tokens=tokens,
    )
