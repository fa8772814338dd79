"""Who may read the gateway's ``/fhir`` and ``/dicomweb`` (WADO-RS): the check every
request goes through, as an ASGI middleware (:class:`GatewayAuthorizer`) so that no route of
the FHIR facade or of WADO-RS can be reached without it, and as a FastAPI dependency
(:func:`fhir_access`) a router may declare as well.

What a request needs is read from its method and path (:func:`required_access`):

- public: ``/fhir/metadata`` (the CapabilityStatement, FHIR R4 http.html#capabilities),
  ``/.well-known/smart-configuration`` (also under ``/fhir``), ``/oauth/*`` (the token
  endpoint authenticates the client itself, RFC 6749 §2.3), ``/healthz``, the status page
  (address-listed) and STOW-RS into the gateway (``POST /dicomweb/studies…``, from the PACS,
  address-listed);
- ``/fhir/{type}…``: the SMART v2 system scope of the interaction on the type
  (:func:`aifi.hub.auth.policy.required_fhir_scope`: ``system/Task.r`` for a read,
  ``.s`` for a search, ``.c`` for a create, ``.u``/``.d``), v1 scopes accepted
  (:func:`aifi.hub.auth.policy.fhir_scope_satisfied`);
- ``GET /dicomweb/…`` (WADO-RS, PS3.18 §10.4): ``dicomweb.read``, or the SMART equivalent,
  a scope that reads ImagingStudy (``system/ImagingStudy.r``, ``system/*.rs`` …) — the
  ImagingStudy's Endpoint is how the EPD finds these images.

Answers (RFC 6750 §3): no or an unusable token → 401 with ``WWW-Authenticate: Bearer``; a
valid token without the scope → 403 (``insufficient_scope``, naming it). Under ``/fhir`` the
body is an OperationOutcome; under ``/dicomweb`` the PS3.18 ``Warning: 299`` header and a
text body. The resolved :class:`~aifi.principal.Principal` is left on the request
(``request.state.principal``) for :data:`aifi.principal.PrincipalDep`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aifi.dicomweb.errors import dicomweb_error_response
from aifi.errors import Forbidden, HubError
from aifi.fhir.api import outcome_response
from aifi.hub.auth.policy import (
    DICOMWEB_READ,
    Action,
    fhir_scope_satisfied,
    required_fhir_scope,
)
from aifi.principal import Principal, PrincipalResolver

FHIR = "/fhir"
DICOMWEB = "/dicomweb"
REALM = 'realm="aifi-gateway"'

_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_PUBLIC_FHIR = frozenset({"metadata", ".well-known"})
_WRITE_ACTION: dict[str, Action] = {
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}


@dataclass(frozen=True, slots=True)
class Access:
    """What one request needs: a FHIR interaction on a resource type (``"*"``: a request
    that names none, e.g. a batch at the base), or WADO-RS read."""

    kind: Literal["fhir", "dicomweb"]
    resource_type: str = ""
    action: Action = "read"


def required_access(method: str, path: str) -> Access | None:
    """What ``method`` on ``path`` needs; None for a public path."""
    method = "GET" if method == "HEAD" else method
    if path == FHIR or path.startswith(FHIR + "/"):
        parts = [p for p in path[len(FHIR) :].split("/") if p]
        if not parts:
            return Access("fhir", "*", "create" if method == "POST" else "read")
        if parts[0] in _PUBLIC_FHIR and method == "GET":
            return None
        resource_type = parts[0] if _TYPE.fullmatch(parts[0]) else "*"
        if method in _WRITE_ACTION:
            return Access("fhir", resource_type, _WRITE_ACTION[method])
        if len(parts) == 1:
            return Access("fhir", resource_type, "create" if method == "POST" else "search")
        if parts[1] == "_search":
            return Access("fhir", resource_type, "search")
        return Access("fhir", resource_type, "update" if method == "POST" else "read")
    if (path == DICOMWEB or path.startswith(DICOMWEB + "/")) and method == "GET":
        return Access("dicomweb")
    return None


def _insufficient(scope: str) -> Forbidden:
    return Forbidden(
        f"the access token lacks the scope {scope}",
        headers={
            "WWW-Authenticate": f'Bearer {REALM}, error="insufficient_scope", scope="{scope}"'
        },
    )


def check_scope(principal: Principal, access: Access) -> None:
    """Raise :class:`~aifi.errors.Forbidden` unless ``principal`` may do ``access``."""
    if principal.role == "dev":
        return
    if access.kind == "dicomweb":
        if DICOMWEB_READ in principal.scopes or fhir_scope_satisfied(
            principal.scopes, "ImagingStudy", "read"
        ):
            return
        raise _insufficient(DICOMWEB_READ)
    if fhir_scope_satisfied(principal.scopes, access.resource_type, access.action):
        return
    raise _insufficient(required_fhir_scope(access.resource_type, access.action))


def resolve(connection: HTTPConnection, resolver: PrincipalResolver, access: Access) -> Principal:
    """The caller (resolved once per request and kept on it) if it may do ``access``."""
    state = connection.scope.setdefault("state", {})
    principal = state.get("principal")
    if not isinstance(principal, Principal):
        principal = resolver(connection)  # type: ignore[arg-type]
        state["principal"] = principal
    check_scope(principal, access)
    return principal


def error_response(path: str, error: HubError, request: Request) -> Response:
    """``error`` as the API surface of ``path`` answers errors."""
    response = (
        outcome_response(error)
        if path == FHIR or path.startswith(FHIR + "/")
        else dicomweb_error_response(request, error)
    )
    for name, value in error.headers.items():
        response.headers[name] = value.replace('realm="aifi-hub"', REALM)
    return response


class GatewayAuthorizer:
    """ASGI middleware: every ``/fhir`` and WADO-RS request is authorized before it reaches
    a route (see the module docstring); the others pass untouched."""

    def __init__(self, app: ASGIApp, *, resolver: PrincipalResolver) -> None:
        self.app = app
        self.resolver = resolver
        self.blocking = getattr(resolver, "blocking", True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        access = required_access(scope["method"], path)
        if access is not None:
            request = Request(scope)
            try:
                if self.blocking:  # token and client look-ups may touch the database
                    await run_in_threadpool(resolve, request, self.resolver, access)
                else:
                    resolve(request, self.resolver, access)
            except HubError as error:
                await error_response(path, error, request)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def fhir_access(request: Request) -> Principal | None:
    """FastAPI dependency for a ``/fhir`` router: the authorized caller, None on a public
    path (``/fhir/metadata``). The middleware has checked the request already (then this
    only returns its principal); without the middleware it resolves and checks here (the
    errors then go through the app's exception handlers)."""
    access = required_access(request.method, request.url.path)
    if access is None:
        return None
    resolver: PrincipalResolver = request.app.state.principal_resolver
    return await run_in_threadpool(resolve, request, resolver, access)


FhirAccessDep = Annotated[Principal | None, Depends(fhir_access)]
"""The caller of a ``/fhir`` route, authorized for the request's interaction (None on a
public path such as ``/fhir/metadata``)."""
