"""OAuth2 at the gateway (issue 17 point 1): the EPD's client is a client of the gateway,
SMART Backend Services as at the hub, over the gateway's own database.

- :mod:`~aifi.gateway.auth.tables` — the hub's auth tables registered for the gateway's
  migrations (``0004_auth``);
- :mod:`~aifi.gateway.auth.service` — :func:`build_auth`: client registry, signing keys,
  tokens, the authorization server and the token check (the hub's parts, :mod:`aifi.hub.auth`);
- :mod:`~aifi.gateway.auth.router` — ``/oauth/*`` and ``/.well-known/smart-configuration``,
  and :func:`install_auth`, what the composition root (:mod:`aifi.gateway.app`) calls;
- :mod:`~aifi.gateway.auth.authorizer` — :class:`GatewayAuthorizer`, the middleware that
  guards ``/fhir`` and WADO-RS, and :data:`FhirAccessDep`, the same check as a dependency
  (the caller of a ``/fhir`` route, or None on a public path);
- :mod:`~aifi.gateway.auth.cli` — ``aifi gateway clients add | list | remove``.

The names below are loaded on first use, so that the command line (which imports
:mod:`~aifi.gateway.auth.cli`) does not pay for the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aifi.gateway.auth.authorizer import (
        FhirAccessDep,
        GatewayAuthorizer,
        check_scope,
        fhir_access,
        required_access,
    )
    from aifi.gateway.auth.router import install_auth
    from aifi.gateway.auth.service import EPD_SCOPES, GatewayAuth, build_auth

_WHERE = {
    "FhirAccessDep": "authorizer",
    "GatewayAuthorizer": "authorizer",
    "check_scope": "authorizer",
    "fhir_access": "authorizer",
    "required_access": "authorizer",
    "install_auth": "router",
    "EPD_SCOPES": "service",
    "GatewayAuth": "service",
    "build_auth": "service",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "EPD_SCOPES",
    "FhirAccessDep",
    "GatewayAuth",
    "GatewayAuthorizer",
    "build_auth",
    "check_scope",
    "fhir_access",
    "install_auth",
    "required_access",
]
