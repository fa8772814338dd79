"""OAuth2 helpers for tests with real tokens: a hub in ``auth=builtin`` mode, clients
registered in its registry, tokens from its real token endpoint (SMART Backend Services)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from aifi.hub.settings import Settings
from aifi.oauth_client import ClientCredentials, Credentials, new_private_jwk, public_jwks
from tests.conftest import LiveServer, running_hub


def auth_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a hub with the built-in authorization server (not development mode).

    Its tenants accept identified instances (``require_deidentified`` off, which is on by
    default outside development mode): these tests store generated identified studies
    straight into the hub; ``tests/contract/test_hub_deidentified.py`` tests the guard."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "auth": "builtin",
        "dev_mode": False,
        "require_deidentified": False,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def secured_hub(
    data_dir: Path, *, lifespan: bool = False, **overrides: Any
) -> Iterator[LiveServer]:
    """A live hub with authentication on (``auth=builtin`` unless overridden)."""
    with running_hub(auth_settings(data_dir, **overrides), lifespan=lifespan) as server:
        yield server


def register(
    server: LiveServer,
    *,
    tenant: str = "default",
    role: str = "hospital",
    products: Iterable[str] = (),
    scopes: Iterable[str] | None = None,
    method: str = "client_secret_basic",
    client_id: str | None = None,
    **extra: Any,
) -> Credentials:
    """Register a client in the hub's registry; its credentials for the token endpoint."""
    registry = server.app.state.hub.clients
    private = new_private_jwk() if method == "private_key_jwt" else None
    registration = registry.add(
        tenant=tenant,
        role=role,
        auth_method=method,
        products=tuple(products),
        scopes=tuple(scopes) if scopes is not None else None,
        jwks=public_jwks(private) if private else None,
        client_id=client_id,
        **extra,
    )
    return Credentials(
        client_id=registration.client.client_id,
        token_url=server.url + "/oauth/token",
        secret=registration.secret,
        private_jwk=private,
    )


def token_for(credentials: Credentials, scopes: Iterable[str]) -> str:
    return ClientCredentials(credentials, scopes).token()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_for(credentials: Credentials, scopes: Iterable[str], **kwargs: Any) -> httpx.Client:
    """An httpx client that gets and renews its own tokens."""
    kwargs.setdefault("timeout", 30.0)
    return httpx.Client(auth=ClientCredentials(credentials, scopes), **kwargs)
