"""Who is asking, and for which tenant (hospital).

Every request resolves to a :class:`Principal` through the single FastAPI dependency
:func:`get_principal`. Until OAuth2 lands, the hub installs a resolver that maps every
request to the configured default tenant; the OAuth2 issue replaces that resolver with one
that validates a bearer token (SMART Backend Services) — routers do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from aifi.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the tenant whose data it may see, and what it may do."""

    tenant: str
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)


PrincipalResolver = Callable[[Request], Principal]


def get_principal(request: Request) -> Principal:
    """Resolve the caller with the resolver the app factory installed."""
    resolver: PrincipalResolver | None = getattr(request.app.state, "principal_resolver", None)
    if resolver is None:
        raise Forbidden("No principal resolver is configured")
    return resolver(request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
