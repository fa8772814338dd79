"""The app factory: one FastAPI application over the parts :func:`aifi.hub.wiring.build_hub`
builds from :class:`~aifi.hub.settings.Settings`.

The routers: DICOMweb at ``/dicomweb`` (STOW-RS through the IHE AIR result gate, QIDO-RS,
WADO-RS, UPS-RS), the hub's own API at ``/api/v1``, FHIR R4 at ``/fhir``, OAuth2 at
``/oauth`` (the built-in authorization server), Prometheus metrics at ``/metrics``; the
middleware (the request metrics outermost, then the audit trail's recording, the base URL,
the body limit); the error mapping (DICOMweb paths answer with a status and
``Warning: 299``, PS3.18 §8.7.3; FHIR paths with an OperationOutcome); the
authorizer every route declares its scope to; the hub's background loops while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

import aifi
from aifi.dicomweb.errors import dicomweb_error_response
from aifi.dicomweb.router import build_router
from aifi.errors import HubError, InvalidRequest
from aifi.fhir.api import FhirResponse, outcome_response
from aifi.fhir.api import build_router as build_fhir_router
from aifi.hub import direct_send
from aifi.hub.api import results as results_api
from aifi.hub.api import studies as studies_api
from aifi.hub.api_docs import install_api_docs
from aifi.hub.audit.loop import start_audit_loop
from aifi.hub.audit.recording import AuditMiddleware
from aifi.hub.auth import policy
from aifi.hub.auth.resolver import Authorizer, BodyLimit, Limits
from aifi.hub.auth.server import AuthorizationServer
from aifi.hub.auth.server import build_router as build_oauth_router
from aifi.hub.fhir.notify import FhirNotifier
from aifi.hub.fhir.projection import FhirProjector
from aifi.hub.json_logs import RequestLog
from aifi.hub.metrics import RequestMetricsMiddleware
from aifi.hub.metrics import build_router as build_metrics_router
from aifi.hub.priors import api as priors_api
from aifi.hub.settings import Settings
from aifi.hub.wiring import DICOMWEB_PREFIX, FHIR_PREFIX, BaseUrl, Hub, build_hub
from aifi.principal import PrincipalDep

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


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


def _serve_standard_routers(app: FastAPI, hub: Hub) -> None:
    """What the standards packages' routers read, under the names their dependency modules
    give (:mod:`aifi.dicomweb.deps`, :mod:`aifi.fhir.api`, :mod:`aifi.principal`): they never
    import the hub, so the app hands them its parts here, once."""
    app.state.dicom_store = hub.dicom_store
    app.state.visibility = hub.visibility  # issue 6: a performer's scope
    app.state.worklist = hub.worklist
    app.state.dicomweb_config = hub.dicomweb_config
    app.state.fhir_backend = hub.fhir_backend
    app.state.principal_resolver = hub.principal_resolver


def _public_base(settings: Settings, request: Request) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def create_app(settings: Settings) -> FastAPI:
    hub = build_hub(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # the audit trail's syslog export; on stop, the trail's last rows (issue 6)
        stop_audit = start_audit_loop(hub.audit, hub.audit_exporter, settings.audit_poll_seconds)
        async with hub.run_background():
            yield
        await stop_audit()
        hub.close()

    limits = Limits(settings.rate_limit_per_minute, settings.max_request_mb * 1024 * 1024)
    authorizer = Authorizer({}, limits)
    app = HubApp(
        title="aifi-hub",
        version=aifi.__version__,
        summary="Standards-based integration hub for radiology AI",
        lifespan=lifespan,
        dependencies=[Depends(authorizer)],
        docs_url=None,  # served offline by install_api_docs (issue 19 point 5)
        redoc_url=None,
    )
    app.state.hub = hub
    _serve_standard_routers(app, hub)
    if hub.tokens is not None:  # the built-in authorization server (auth=builtin)
        oauth = AuthorizationServer(
            hub.clients, hub.tokens, public_url=lambda request: _public_base(settings, request)
        )
        app.include_router(build_oauth_router(oauth))
        app.state.oauth_token_path = "/oauth/token"  # noqa: S105 - a path, not a secret
    app.include_router(build_router(), prefix=DICOMWEB_PREFIX)
    app.include_router(studies_api.router, prefix=API_PREFIX)
    app.include_router(results_api.router, prefix=API_PREFIX)
    app.include_router(priors_api.router, prefix=API_PREFIX)  # issue 17
    app.include_router(_subscription_status(hub.notifier, hub.projector), prefix=FHIR_PREFIX)
    app.include_router(build_fhir_router(), prefix=FHIR_PREFIX)
    app.include_router(build_metrics_router(hub.metrics))  # issue 19: GET /metrics

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

    app.add_middleware(_NoteBaseUrl, base_url=hub.base_url, state=app.state)

    install_api_docs(app)

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
        for name, value in error.headers.items():
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

    # the audit trail records patient-data access (issue 6): the outermost middleware
    app.add_middleware(AuditMiddleware, trail=hub.audit)
    # request ids and, with log_format=json, access lines (issue 19): around the audit
    app.add_middleware(RequestLog, access_lines=settings.log_format == "json")
    # request counts and server time by route template (issue 19), around everything else
    app.add_middleware(RequestMetricsMiddleware, metrics=hub.metrics.requests)

    # every route, healthz included, must have declared its scope by now
    authorizer.rules.update(policy.bind(app))
    return app
