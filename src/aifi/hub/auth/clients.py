"""Registered OAuth2 clients: who they are, what they may ask for, how they authenticate.

Every client belongs to one hospital (tenant) and has one role (issue 6 "who is who"):

- ``hospital``: the hospital's gateway, PACS or EPD;
- ``performer``: an AI product's Task Performer, limited to its ``products``;
- ``admin``: an administrator of its tenant (the audit trail, delivery retries).

A client authenticates at the token endpoint with ``private_key_jwt`` (SMART Backend
Services; RFC 7523 §2.2: a JWT signed with a key from its registered JWKS or from its
JWKS URL, which must start with an allow-listed prefix) or, the simple option for a
gateway, ``client_secret_basic`` (RFC 6749 §2.3.1; only a scrypt hash of the secret is kept).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from aifi.clock import Clock, utc_now
from aifi.errors import AuthError
from aifi.hub.auth.policy import (
    DICOMWEB_READ,
    DICOMWEB_WRITE,
    NON_FHIR_SCOPES,
    PERFORMER,
    REQUESTER,
    RESULTS_READ,
    RESULTS_REVIEW,
    system_scope,
)
from aifi.hub.auth.tenants import validate_tenant_id
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import OAuthClient, OAuthJti, OAuthRevoked, Tenant

ROLES = ("hospital", "performer", "admin")
AUTH_METHODS = ("private_key_jwt", "client_secret_basic")

DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "hospital": (
        DICOMWEB_READ,
        DICOMWEB_WRITE,
        REQUESTER,
        RESULTS_READ,
        RESULTS_REVIEW,
        "system/*.cruds",
    ),
    "performer": (DICOMWEB_READ, DICOMWEB_WRITE, PERFORMER),
    "admin": (*NON_FHIR_SCOPES, "system/*.cruds"),
}
"""What a client of each role may ask for when no scopes are given at registration."""

_ROLE_CEILING: dict[str, frozenset[str]] = {
    "hospital": frozenset(DEFAULT_SCOPES["hospital"][:-1]),
    "performer": frozenset(DEFAULT_SCOPES["performer"]),
    "admin": frozenset(NON_FHIR_SCOPES),
}
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ClientError(AuthError, ValueError):
    """A registration that cannot be made (the message says why)."""


def scope_allowed_for_role(role: str, scope: str) -> bool:
    """May a client of ``role`` hold ``scope``? FHIR system scopes for hospitals and
    administrators (the audit trail, AuditEvent, only for administrators); performers get
    no FHIR at all."""
    if scope in _ROLE_CEILING.get(role, frozenset()):
        return True
    parsed = system_scope(scope)
    if parsed is None or role not in ("hospital", "admin"):
        return False
    return not (role != "admin" and parsed[0] == "AuditEvent")


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt64, digest64 = stored.split("$")
    digest = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt64), n=2**14, r=8, p=1)
    return hmac.compare_digest(digest, base64.b64decode(digest64))


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client as the resolver and the token endpoint see it."""

    client_id: str
    tenant: str
    role: str
    scopes: tuple[str, ...]
    products: tuple[str, ...]
    auth_method: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    secret_hash: str | None
    description: str
    rate_limit_per_minute: int | None
    max_request_mb: int | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What ``aifi clients list`` shows (no secret, no key material)."""
        return {
            "client_id": self.client_id,
            "tenant": self.tenant,
            "role": self.role,
            "products": list(self.products),
            "scopes": list(self.scopes),
            "auth_method": self.auth_method,
            "jwks_url": self.jwks_url,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _client(row: OAuthClient) -> Client:
    return Client(
        client_id=row.client_id,
        tenant=row.tenant,
        role=row.role,
        scopes=tuple(row.scopes.split()),
        products=tuple(row.products.split()),
        auth_method=row.auth_method,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        secret_hash=row.secret_hash,
        description=row.description,
        rate_limit_per_minute=row.rate_limit_per_minute,
        max_request_mb=row.max_request_mb,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _import_jwks(jwks: dict[str, Any] | str) -> dict[str, Any]:
    """Check a JWKS (RFC 7517 §5) holds public signing keys; returns it as a dict."""
    value = json.loads(jwks) if isinstance(jwks, str) else jwks
    try:
        key_set = KeySet.import_key_set(value)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(f"the JWKS cannot be read: {exc}") from exc
    if not key_set.keys:
        raise ClientError("the JWKS holds no key")
    for key in key_set.keys:
        if key.is_private:
            raise ClientError("the JWKS holds a private key: register only the public keys")
    return {"keys": [key.as_dict(private=False) for key in key_set.keys]}


@dataclass
class Registration:
    """The result of ``add`` or ``rotate``: the client and, for ``client_secret_basic``,
    the secret — shown once, never stored."""

    client: Client
    secret: str | None = None


@dataclass
class _Cache:
    clients: dict[str, Client] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    loaded_at: float = 0.0


class ClientRegistry:
    """The ``oauth_client`` table, and the per-process cache the resolver reads on every
    request (refreshed every ``cache_seconds``: a revocation reaches every process within it;
    the process that revokes forgets at once)."""

    def __init__(
        self,
        db: Database,
        *,
        jwks_url_allowlist: Iterable[str] = (),
        cache_seconds: float = 5.0,
        clock: Clock = utc_now,
        http: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.db = db
        self.allowlist = tuple(jwks_url_allowlist)
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._cache = _Cache()
        self._jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._fetch = http or _fetch_json

    # -- registration -------------------------------------------------------------------

    def add(
        self,
        *,
        tenant: str,
        role: str,
        auth_method: str,
        client_id: str | None = None,
        scopes: Iterable[str] | None = None,
        products: Iterable[str] = (),
        jwks: dict[str, Any] | str | None = None,
        jwks_url: str | None = None,
        description: str = "",
        rate_limit_per_minute: int | None = None,
        max_request_mb: int | None = None,
    ) -> Registration:
        validate_tenant_id(tenant)
        if role not in ROLES:
            raise ClientError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if auth_method not in AUTH_METHODS:
            raise ClientError(f"auth method must be one of {', '.join(AUTH_METHODS)}")
        client_id = client_id or f"{tenant}-{role}-{uuid.uuid4().hex[:8]}"
        if not _CLIENT_ID.fullmatch(client_id):
            raise ClientError(f"invalid client id {client_id!r}")
        granted = tuple(scopes) if scopes is not None else DEFAULT_SCOPES[role]
        for scope in granted:
            if not scope_allowed_for_role(role, scope):
                raise ClientError(f"a {role} client cannot hold the scope {scope!r}")
        product_list = tuple(products)
        if role == "performer" and not product_list:
            raise ClientError("a performer client needs at least one product (--product)")
        if role != "performer" and product_list:
            raise ClientError("only performer clients are limited to products")
        key_json, url, secret, secret_hash = self._credentials(auth_method, jwks, jwks_url)
        with self.db.write() as session:
            if session.get(Tenant, tenant) is None:
                session.add(Tenant(id=tenant, name=tenant))
                session.flush()
            if session.exec(select(OAuthClient).where(OAuthClient.client_id == client_id)).first():
                raise ClientError(f"a client {client_id!r} is already registered")
            row = OAuthClient(
                client_id=client_id,
                tenant=tenant,
                role=role,
                products=" ".join(product_list),
                scopes=" ".join(granted),
                auth_method=auth_method,
                jwks=key_json,
                jwks_url=url,
                secret_hash=secret_hash,
                description=description,
                rate_limit_per_minute=rate_limit_per_minute,
                max_request_mb=max_request_mb,
                created_at=self.clock(),
            )
            session.add(row)
        self.forget()
        return Registration(_client(row), secret)

    def _credentials(
        self, auth_method: str, jwks: dict[str, Any] | str | None, jwks_url: str | None
    ) -> tuple[str | None, str | None, str | None, str | None]:
        if auth_method == "client_secret_basic":
            if jwks or jwks_url:
                raise ClientError("client_secret_basic takes no JWKS")
            secret = secrets.token_urlsafe(32)
            return None, None, secret, hash_secret(secret)
        if bool(jwks) == bool(jwks_url):
            raise ClientError("private_key_jwt needs exactly one of a JWKS or a JWKS URL")
        if jwks_url:
            self.check_jwks_url(jwks_url)
            return None, jwks_url, None, None
        assert jwks is not None
        return json.dumps(_import_jwks(jwks), sort_keys=True), None, None, None

    def check_jwks_url(self, url: str) -> None:
        if not url.startswith(("https://", "http://")):
            raise ClientError("a JWKS URL must be http(s)")
        if not any(url.startswith(prefix) for prefix in self.allowlist if prefix):
            raise ClientError(f"the JWKS URL {url!r} is not allow-listed (AIFI_JWKS_URL_ALLOWLIST)")

    def rotate(
        self,
        client_id: str,
        *,
        jwks: dict[str, Any] | str | None = None,
        jwks_url: str | None = None,
    ) -> Registration:
        """New credentials for a client: a new secret (``client_secret_basic``) or new keys.
        Access tokens already issued stay valid until they expire (revoke to end them)."""
        with self.db.write() as session:
            row = session.exec(
                select(OAuthClient).where(OAuthClient.client_id == client_id)
            ).first()
            if row is None or row.revoked_at is not None:
                raise ClientError(f"no active client {client_id!r}")
            key_json, url, secret, secret_hash = self._credentials(row.auth_method, jwks, jwks_url)
            row.jwks, row.jwks_url, row.secret_hash = key_json, url, secret_hash
            row.rotated_at = self.clock()
            session.add(row)
        self.forget()
        self._jwks_cache.clear()
        return Registration(_client(row), secret)

    def revoke(self, client_id: str) -> Client:
        """The client can get no more tokens, and its tokens stop working (within the cache
        interval in other processes, at once in this one)."""
        with self.db.write() as session:
            row = session.exec(
                select(OAuthClient).where(OAuthClient.client_id == client_id)
            ).first()
            if row is None:
                raise ClientError(f"no client {client_id!r}")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                session.add(row)
        self.forget()
        return _client(row)

    def list(self, tenant: str | None = None) -> list[Client]:
        with self.db.read() as session:
            query = select(OAuthClient).order_by(
                col(OAuthClient.tenant), col(OAuthClient.client_id)
            )
            if tenant is not None:
                query = query.where(OAuthClient.tenant == tenant)
            return [_client(row) for row in session.exec(query).all()]

    # -- lookups (cached) ---------------------------------------------------------------

    def forget(self) -> None:
        with self._lock:
            self._cache = _Cache()

    def _fresh(self) -> _Cache:
        with self._lock:
            cache = self._cache
            if time.monotonic() - cache.loaded_at < self.cache_seconds:
                return cache
        now = self.clock()
        with self.db.read() as session:
            clients = {row.client_id: _client(row) for row in session.exec(select(OAuthClient))}
            revoked = {
                row.jti
                for row in session.exec(
                    select(OAuthRevoked).where(col(OAuthRevoked.expires_at) > now)
                )
            }
        cache = _Cache(clients, revoked, time.monotonic())
        with self._lock:
            self._cache = cache
        return cache

    def get(self, client_id: str) -> Client | None:
        return self._fresh().clients.get(client_id)

    def token_revoked(self, jti: str) -> bool:
        return jti in self._fresh().revoked

    def revoke_token(self, jti: str, client_id: str, expires_at: datetime) -> None:
        """RFC 7009: remember a revoked access token until it would have expired."""
        try:
            with self.db.write() as session:
                session.add(OAuthRevoked(jti=jti, client_id=client_id, expires_at=expires_at))
        except IntegrityError:
            pass  # already revoked
        with self._lock:
            self._cache.revoked.add(jti)

    def remember_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record a client assertion's ``jti``; False when it was seen before (a replay)."""
        now = self.clock()
        try:
            with self.db.write() as session:
                session.execute(delete(OAuthJti).where(col(OAuthJti.expires_at) < now))
                session.add(OAuthJti(client_id=client_id, jti=jti, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def key_set(self, client: Client, *, refresh: bool = False) -> KeySet:
        """The public keys a client signs its assertions with: its registered JWKS, or the
        one at its allow-listed JWKS URL (cached 5 minutes; ``refresh`` fetches again)."""
        if client.jwks:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        url = client.jwks_url
        if not url:
            raise ClientError("the client has no keys")
        self.check_jwks_url(url)
        cached = self._jwks_cache.get(url)
        if cached is None or refresh or time.monotonic() - cached[0] > 300:
            value = _import_jwks(self._fetch(url))
            self._jwks_cache[url] = (time.monotonic(), value)
            cached = self._jwks_cache[url]
        return KeySet.import_key_set(cached[1])  # type: ignore[arg-type]


def _fetch_json(url: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=5.0, follow_redirects=False)
        response.raise_for_status()
        value = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ClientError(f"the JWKS at {url} cannot be fetched: {exc}") from exc
    if not isinstance(value, dict):
        raise ClientError(f"the JWKS at {url} is not a JSON object")
    return value
