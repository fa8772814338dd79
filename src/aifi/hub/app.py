"""The app factory: builds one FastAPI application from :class:`~aifi.hub.settings.Settings`.

Composition only: persistence (:class:`~aifi.hub.persistence.database.Database`), the DICOM store
(:class:`~aifi.hub.store.repository.SqlDicomStore`) with the IHE AIR result gate in front of it
for STOW-RS (:class:`~aifi.hub.results.gate.ResultGate`), the worklist with its completion hook
(:class:`~aifi.hub.results.completion.ResultsHook`), the Task Manager and the delivery outbox
(:class:`~aifi.hub.delivery.deliverer.Deliverer`, PACS destinations from ``destinations_file``) with
their background loops, FHIR R4 at ``/fhir`` (the resource store, the projection of
workitems and results, EPD requests, subscriptions and the EPD push with its loop), the
principal resolver, and the error mapping (DICOMweb paths answer with a status and
``Warning: 299``, PS3.18 §8.7.3; FHIR paths with an OperationOutcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

import aifi
from aifi.dicomweb.deps import DicomwebConfig
from aifi.dicomweb.errors import dicomweb_error_response
from aifi.dicomweb.router import build_router
from aifi.errors import HubError, InvalidRequest
from aifi.fhir.api import FhirResponse, outcome_response
from aifi.fhir.api import build_router as build_fhir_router
from aifi.fhir.search import parse_search
from aifi.fhir.types import StoredResource
from aifi.hub import direct_send
from aifi.hub.api import results as results_api
from aifi.hub.api import studies as api
from aifi.hub.auth import policy
from aifi.hub.auth.clients import ClientRegistry
from aifi.hub.auth.resolver import (
    Authorizer,
    BodyLimit,
    BuiltinResolver,
    DevResolver,
    ExternalResolver,
    Limits,
)
from aifi.hub.auth.server import AuthorizationServer
from aifi.hub.auth.server import build_router as build_oauth_router
from aifi.hub.auth.tokens import KeyRing, TokenService
from aifi.hub.delivery.deliverer import Deliverer, run_delivery_loop
from aifi.hub.delivery.destinations import load_destinations
from aifi.hub.fhir.backend import HubFhirBackend
from aifi.hub.fhir.notify import FhirNotifier, run_fhir_notify_loop
from aifi.hub.fhir.projection import FhirProjector, project_devices, run_projection_loop
from aifi.hub.fhir.requests import AiRequests
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.orchestration.task_manager import HOUSEKEEPING_SECONDS, TaskManager
from aifi.hub.persistence.database import Database
from aifi.hub.results.completion import ResultsHook
from aifi.hub.results.gate import ResultGate
from aifi.hub.settings import Settings
from aifi.hub.store.deidentified import TenantPolicy
from aifi.hub.store.repository import SqlDicomStore
from aifi.hub.worklist.service import SqlWorklist
from aifi.hub.worklist.visibility import HubVisibility  # issue 6: performer scope
from aifi.ihe_profiles.rules import load_rules
from aifi.principal import PrincipalDep

log = logging.getLogger(__name__)

DICOMWEB_PREFIX = "/dicomweb"
API_PREFIX = "/api/v1"
FHIR_PREFIX = "/fhir"


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


class HubApp(FastAPI):
    """The hub's FastAPI app; as the outermost layer it alone sees the server's own
    ``send``, so it offers zero-copy sending of stored files
    (:mod:`aifi.hub.direct_send`) to the responses inside."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct_send.install(scope, send)
        await super().__call__(scope, receive, send)


class _NoteBaseUrl:
    """Pure ASGI: notes the base URL each HTTP request came in on (``BaseUrl.seen``, when no
    public URL is configured) and the FHIR base the FHIR API builds absolute URLs from.

    Not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs every request
    through an extra task and memory streams, which cost STOW-RS and WADO-RS about a tenth
    of their server time (``aifi bench dicomweb``, py-spy)."""

    def __init__(self, app: ASGIApp, *, base_url: BaseUrl, state: Any) -> None:
        self.app = app
        self.base_url = base_url
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.base_url.configured is None:
                self.base_url.seen = str(Request(scope).base_url).rstrip("/")
            self.state.fhir_base_url = self.base_url.value + FHIR_PREFIX
        await self.app(scope, receive, send)


async def _run_task_manager(task_manager: TaskManager, settings: Settings) -> None:
    """The Task Manager's rounds (:mod:`aifi.hub.orchestration.task_manager`), in a worker thread
    each,
    until the app stops. An error in one round is logged and the next round goes on."""
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
        await asyncio.sleep(settings.task_manager_poll_seconds)


def _subscription_status(notifier: FhirNotifier, projector: FhirProjector) -> APIRouter:
    """``GET /fhir/Subscription/{id}/$status``: the subscription's SubscriptionStatus (R5
    Subscriptions Backport IG for R4, operation ``$status``): status, events since start,
    the last error."""
    router = APIRouter(tags=["FHIR"])

    @router.get("/Subscription/{subscription_id}/$status")
    def subscription_status(subscription_id: str, principal: PrincipalDep) -> Response:
        projector.catch_up(principal.tenant)
        return FhirResponse(notifier.status_bundle(principal.tenant, subscription_id))

    return router


class AuthNotConfigured(RuntimeError):
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


def _public_base(settings: Settings, request: Request) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def create_app(settings: Settings) -> FastAPI:
    check_auth(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = SqlDicomStore(db, settings.dicom_dir, fsync=settings.fsync)
    swept = store.sweep_staging()
    if swept:
        log.warning("removed %d staging files left by an interrupted upload", swept)
    store.ensure_tenant(settings.default_tenant)

    destinations = load_destinations(settings.destinations_file)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # --- audit trail (issue 6): AuditEvent projection and syslog export loop ---
        from aifi.hub.audit.trail import start_audit_loop

        stop_audit = start_audit_loop(audit_trail, audit_exporter, settings.audit_poll_seconds)
        # --- end audit trail ---
        loop = None
        if settings.task_manager:
            loop = asyncio.create_task(_run_task_manager(task_manager, settings))
        delivering = None
        if settings.delivery:
            delivering = asyncio.create_task(
                run_delivery_loop(deliverer, settings.delivery_poll_seconds)
            )
        projecting = asyncio.create_task(
            run_projection_loop(projector, settings.fhir_notify_poll_seconds)
        )
        notifying = None
        if settings.fhir_notify:
            notifying = asyncio.create_task(
                run_fhir_notify_loop(notifier, settings.fhir_notify_poll_seconds)
            )
        yield
        projecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projecting
        if notifying is not None:
            notifying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notifying
        if delivering is not None:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await run_in_threadpool(task_manager.release)
        await stop_audit()  # issue 6: audit trail loop
        store.close()
        db.dispose()

    limits = Limits(settings.rate_limit_per_minute, settings.max_request_mb * 1024 * 1024)
    authorizer = Authorizer({}, limits)
    app = HubApp(
        title="aifi-hub",
        version=aifi.__version__,
        summary="Standards-based integration hub for radiology AI",
        lifespan=lifespan,
        dependencies=[Depends(authorizer)],
    )
    app.state.settings = settings
    app.state.db = db
    rules = load_rules(settings.rules_file)
    tenants = TenantPolicy(db, default=settings.deidentified_by_default)  # issue 15
    # what STOW-RS (and WADO, QIDO) use
    app.state.dicom_store = ResultGate(store, db, rules, tenants=tenants)
    app.state.visibility = HubVisibility(db, app.state.dicom_store)  # issue 6: performer scope
    app.state.destinations = destinations
    deliverer = Deliverer(
        db,
        store,
        destinations,
        max_attempts=settings.delivery_max_attempts,
        backoff_seconds=settings.delivery_backoff_seconds,
    )
    app.state.deliverer = deliverer
    worklist = SqlWorklist(db)
    results_hook = ResultsHook(db, rules, deliverer=deliverer, clock=lambda: worklist.clock())
    worklist.final_state_hook = results_hook
    app.state.results_hook = results_hook
    app.state.worklist = worklist
    task_manager = TaskManager(db, store, worklist, rules)
    app.state.task_manager = task_manager

    base_url = BaseUrl(settings.public_url)
    app.state.base_url = base_url
    fhir_store = SqlFhirStore(db)
    projector = FhirProjector(
        db,
        fhir_store,
        rules,
        base_url=lambda: base_url.value + DICOMWEB_PREFIX,
        instances=store.instance_metadata,
    )
    projector.install()

    def _matches(session: Session, tenant: str, criteria: str, stored: StoredResource) -> bool:
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
        max_attempts=settings.fhir_notify_max_attempts,
        backoff_seconds=settings.fhir_notify_backoff_seconds,
        matcher=_matches,
    )
    fhir_store.listeners.append(notifier)
    requests = AiRequests(
        db,
        fhir_store,
        rules,
        worklist,
        task_manager,
        wait=timedelta(hours=settings.fhir_request_wait_hours),
        clock=lambda: worklist.clock(),
    )

    def _study_seen(tenant: str, metadata: list[dict[str, Any]]) -> None:
        uid = ((metadata[0].get("0020000D") or {}).get("Value") or [""])[0]
        if uid:
            projector.note_study(tenant, str(uid))

    task_manager.study_seen = _study_seen
    task_manager.after_round = requests.after_round
    project_devices(projector, db, rules.tenants)
    app.state.fhir_store = fhir_store
    app.state.fhir_projector = projector
    app.state.fhir_notifier = notifier
    app.state.ai_requests = requests
    app.state.fhir_backend = HubFhirBackend(db, fhir_store, requests, notifier, projector)
    app.state.dicomweb_config = DicomwebConfig(
        prefix=DICOMWEB_PREFIX,
        public_url=settings.public_url,
        qido_default_limit=settings.qido_default_limit,
        qido_max_limit=settings.qido_max_limit,
        qido_max_offset=settings.qido_max_offset,
    )
    registry = ClientRegistry(db, jwks_url_allowlist=settings.jwks_url_allowlist)
    app.state.clients = registry
    if settings.auth == "builtin":
        lifetime = timedelta(seconds=settings.access_token_seconds)
        keys = KeyRing(
            db,
            rotate_after=timedelta(days=settings.signing_key_days),
            keep_after_retired=lifetime + timedelta(minutes=5),
        )
        tokens = TokenService(keys, issuer=settings.public_url or "aifi-hub", lifetime=lifetime)
        app.state.tokens = tokens
        app.state.principal_resolver = BuiltinResolver(tokens, registry)
        oauth = AuthorizationServer(
            registry, tokens, public_url=lambda request: _public_base(settings, request)
        )
        app.include_router(build_oauth_router(oauth))
        app.state.oauth_token_path = "/oauth/token"  # noqa: S105 - a path, not a secret
    elif settings.auth == "external":
        assert settings.oidc_issuer is not None
        app.state.principal_resolver = ExternalResolver(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            tenant_claim=settings.oidc_tenant_claim,
            role_claim=settings.oidc_role_claim,
            products_claim=settings.oidc_products_claim,
            client_claim=settings.oidc_client_claim,
        )
    else:
        log.warning("development mode: authentication is OFF, every request has every right")
        app.state.principal_resolver = DevResolver(settings.default_tenant)
    app.include_router(build_router(), prefix=DICOMWEB_PREFIX)
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(results_api.router, prefix=API_PREFIX)
    app.include_router(_subscription_status(notifier, projector), prefix=FHIR_PREFIX)
    app.include_router(build_fhir_router(), prefix=FHIR_PREFIX)

    app.add_middleware(BodyLimit)

    def _openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "smart": {
                    "type": "oauth2",
                    "description": "SMART Backend Services (client_credentials with "
                    "private_key_jwt or client_secret_basic); scopes in the conformance "
                    "statement §10.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "/oauth/token",
                            "scopes": {
                                scope: scope
                                for scope in (*policy.NON_FHIR_SCOPES, "system/*.cruds")
                            },
                        }
                    },
                }
            }
            app.openapi_schema = policy.openapi_security(schema)
        return app.openapi_schema

    app.openapi = _openapi  # type: ignore[method-assign]

    app.add_middleware(_NoteBaseUrl, base_url=base_url, state=app.state)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": aifi.__version__}

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, error: HubError) -> Response:
        response: Response
        if request.url.path.startswith(DICOMWEB_PREFIX):
            response = dicomweb_error_response(request, error)
        elif request.url.path.startswith(FHIR_PREFIX):
            response = outcome_response(error)
        else:
            response = JSONResponse({"detail": error.reason}, status_code=error.status_code)
        for name, value in getattr(error, "headers", {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in error.errors()
        )
        if request.url.path.startswith(DICOMWEB_PREFIX):
            return dicomweb_error_response(request, InvalidRequest(reason))
        if request.url.path.startswith(FHIR_PREFIX):
            return outcome_response(InvalidRequest(reason))
        return JSONResponse({"detail": reason}, status_code=400)

    # --- audit trail (issue 6): record patient-data access, exports, AuditEvent reads ---
    from aifi.hub.audit.trail import build_trail

    audit_trail, audit_exporter = build_trail(app, settings)
    # --- end audit trail ---

    # every route, healthz included, must have declared its scope by now
    authorizer.rules.update(policy.bind(app))
    return app
