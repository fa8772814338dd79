"""From a request's bearer token to a :class:`~aifi.principal.Principal`, and the check of
the route's declared scope (:mod:`aifi.hub.auth.policy`) on every request.

- A missing or unusable token is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3; the
  ``error`` is ``invalid_token`` with a description when a token was sent).
- A valid token without the scope the route needs is 403 (RFC 6750 §3.1
  ``insufficient_scope``), naming the scope.
- A client past its rate limit is 429 with ``Retry-After``; a body beyond its size limit 413.

Two token sources: the hub's own authorization server (``auth=builtin``) or an external
OpenID Connect provider (``auth=external``: issuer, JWKS and claim mapping configured, e.g. a
hospital's Keycloak or Entra ID). ``auth=off`` exists only in development mode.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifi.clock import Clock, utc_now
from aifi.errors import Forbidden, PayloadTooLarge, TooManyRequests, Unauthorized
from aifi.hub.auth.clients import ClientRegistry, scope_allowed_for_role
from aifi.hub.auth.policy import (
    NON_FHIR_SCOPES,
    Rule,
    fhir_scope_satisfied,
    required_fhir_scope,
)
from aifi.hub.auth.tokens import InvalidToken, TokenService, check_time_claims
from aifi.principal import Principal, get_principal

REALM = 'Bearer realm="aifi-hub"'


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = [REALM]
    if error:
        parts.append(f'error="{error}"')
    if description:
        safe = description.replace('"', "'").replace("\\", "/")
        parts.append(f'error_description="{safe}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)


def bearer_token(connection: HTTPConnection) -> str:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 §2.1); 401 otherwise."""
    headers = connection.headers.getlist("authorization")
    if not headers:
        raise Unauthorized("an access token is required (Authorization: Bearer)", challenge=REALM)
    if len(headers) > 1:
        raise Unauthorized(
            "send one Authorization header",
            challenge=_challenge("invalid_request", "more than one Authorization header"),
        )
    scheme, _, token = headers[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'",
            challenge=_challenge("invalid_request", "the Authorization scheme must be Bearer"),
        )
    if len(token) > 8192 or not token.isascii():
        raise Unauthorized(
            "the access token is not a JWT",
            challenge=_challenge("invalid_token", "the access token is not a JWT"),
        )
    return token


def _invalid(reason: str) -> Unauthorized:
    return Unauthorized(reason, challenge=_challenge("invalid_token", reason))


@dataclass(frozen=True, slots=True)
class Limits:
    rate_per_minute: int
    max_body_bytes: int


class BuiltinResolver:
    """Access tokens issued by the hub itself (:mod:`aifi.hub.auth.server`)."""

    def __init__(self, tokens: TokenService, registry: ClientRegistry) -> None:
        self.tokens = tokens
        self.registry = registry

    def __call__(self, connection: HTTPConnection) -> Principal:
        token = bearer_token(connection)
        try:
            claims = self.tokens.validate(token)
        except InvalidToken as exc:
            raise _invalid(exc.reason) from exc
        client = self.registry.get(str(claims["sub"]))
        if client is None or not client.active:
            raise _invalid("the client of this access token has been revoked")
        if self.registry.token_revoked(str(claims["jti"])):
            raise _invalid("the access token has been revoked")
        if client.tenant != claims["tenant"] or client.role != claims["role"]:
            raise _invalid("the access token does not match its client's registration")
        return Principal(
            tenant=client.tenant,
            subject=client.client_id,
            scopes=frozenset(str(claims.get("scope", "")).split()),
            role=client.role,  # type: ignore[arg-type]
            products=frozenset(client.products) if client.role == "performer" else None,
            token_id=str(claims["jti"]),
        )

    def limits(self, principal: Principal, defaults: Limits) -> Limits:
        client = self.registry.get(principal.subject)
        if client is None:
            return defaults
        return Limits(
            client.rate_limit_per_minute or defaults.rate_per_minute,
            (client.max_request_mb * 1024 * 1024)
            if client.max_request_mb
            else defaults.max_body_bytes,
        )


class ExternalResolver:
    """Resource-server mode: access tokens of an external OpenID Connect provider, checked
    against its JWKS (fetched from ``jwks_url`` or its discovery document, cached, fetched
    again for an unknown key id at most once a minute), its issuer and the audience; the
    hospital, role, products and client id come from configured claims."""

    ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        jwks_url: str | None,
        tenant_claim: str,
        role_claim: str,
        products_claim: str,
        client_claim: str,
        fetch: Callable[[str], dict[str, Any]] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks_url = jwks_url
        self.tenant_claim = tenant_claim
        self.role_claim = role_claim
        self.products_claim = products_claim
        self.client_claim = client_claim
        self.fetch = fetch or _get_json
        self.clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _key_set(self, kid: str | None) -> KeySet:
        with self._lock:
            stale = self._keys is None or (
                kid is not None
                and self._keys.get_by_kid(kid) is None
                and time.monotonic() - self._fetched_at > 60
            )
            if stale or time.monotonic() - self._fetched_at > 3600:
                url = self.jwks_url
                if url is None:
                    discovery = self.fetch(self.issuer + "/.well-known/openid-configuration")
                    url = str(discovery.get("jwks_uri") or "")
                    if not url:
                        raise _invalid("the identity provider publishes no jwks_uri")
                    self.jwks_url = url
                self._keys = KeySet.import_key_set(self.fetch(url))  # type: ignore[arg-type]
                self._fetched_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    def __call__(self, connection: HTTPConnection) -> Principal:
        token = bearer_token(connection)
        try:
            header = extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise _invalid("the access token is not a compact JWS") from exc
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        try:
            keys = self._key_set(kid)
        except (httpx.HTTPError, ValueError, JoseError, KeyError) as exc:
            raise _invalid("the identity provider's keys cannot be fetched") from exc
        try:
            claims = dict(jwt.decode(token, keys, algorithms=self.ALGORITHMS).claims)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise _invalid("the access token's signature does not verify") from exc
        try:
            check_time_claims(claims, self.clock(), 30)
        except InvalidToken as exc:
            raise _invalid(exc.reason) from exc
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise _invalid("the access token was issued by another issuer")
        if self.audience is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self.audience not in auds:
                raise _invalid("the access token is meant for another audience")
        tenant = claims.get(self.tenant_claim)
        role = claims.get(self.role_claim)
        if not isinstance(tenant, str) or not tenant:
            raise _invalid(f"the access token has no {self.tenant_claim!r} claim")
        if role not in ("hospital", "performer", "admin"):
            raise _invalid(f"the access token's {self.role_claim!r} claim names no known role")
        raw_products = claims.get(self.products_claim) or []
        if isinstance(raw_products, str):
            raw_products = raw_products.split()
        if not isinstance(raw_products, list) or not all(isinstance(p, str) for p in raw_products):
            raise _invalid(f"the {self.products_claim!r} claim is not a list of products")
        if role == "performer" and not raw_products:
            raise _invalid("a performer's access token names no products")
        subject = next(
            (
                str(claims[name])
                for name in (self.client_claim, "client_id", "azp", "sub")
                if isinstance(claims.get(name), str) and claims[name]
            ),
            None,
        )
        if subject is None:
            raise _invalid("the access token names no client")
        scopes = claims.get("scope", claims.get("scp", ""))
        scope_list = scopes.split() if isinstance(scopes, str) else scopes
        if not isinstance(scope_list, list):
            raise _invalid("the access token's scopes cannot be read")
        allowed = frozenset(
            s for s in scope_list if isinstance(s, str) and scope_allowed_for_role(str(role), s)
        )
        return Principal(
            tenant=tenant,
            subject=subject,
            scopes=allowed,
            role=role,
            products=frozenset(raw_products) if role == "performer" else None,
            token_id=str(claims.get("jti")) if claims.get("jti") else None,
        )

    def limits(self, principal: Principal, defaults: Limits) -> Limits:
        return defaults


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    value = response.json()
    if not isinstance(value, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return value


class DevResolver:
    """Development mode: everyone is the default tenant with every right."""

    blocking = False
    """Resolving does no I/O: the :class:`Authorizer` runs it on the event loop."""

    def __init__(self, tenant: str) -> None:
        self.principal = Principal(
            tenant=tenant,
            subject="anonymous",
            scopes=frozenset((*NON_FHIR_SCOPES, "system/*.cruds")),
            role="dev",
        )

    def __call__(self, connection: HTTPConnection) -> Principal:
        return self.principal


class RateLimiter:
    """A token bucket per client (in this process): ``rate`` requests a minute, bursts up
    to the same number."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> float:
        """0 when the request may go on, else the seconds until it may."""
        now = time.monotonic()
        rate = per_minute / 60.0
        with self._lock:
            tokens, seen = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - seen) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0


class Authorizer:
    """The app-wide dependency: finds the matched route's :class:`Rule`, resolves the
    principal for every non-public route, checks its scope, rate and body limits."""

    def __init__(self, rules: dict[tuple[int, str], Rule], defaults: Limits) -> None:
        self.rules = rules
        self.defaults = defaults
        self.limiter = RateLimiter()

    def rule_for(self, connection: HTTPConnection) -> Rule | None:
        route = connection.scope.get("route")
        websocket = connection.scope["type"] == "websocket"
        method = "WEBSOCKET" if websocket else connection.scope["method"]
        rule = self.rules.get((id(route), method))
        if rule is None:
            endpoint = connection.scope.get("endpoint") or getattr(route, "endpoint", None)
            rule = self.rules.get((id(endpoint), method))
        return rule

    async def __call__(self, connection: HTTPConnection) -> None:
        """Async, so that FastAPI does not send it to a worker thread; the checks that may
        do I/O (token and client look-ups) go to one, unless the resolver says it does
        none. Each trip cost a DICOMweb request about 0.3 ms of CPU and some latency."""
        rule = self.rule_for(connection)
        if rule is None:
            raise Forbidden("this route has no declared scope")
        connection.state.rule = rule
        if rule.public:
            return
        if getattr(connection.app.state.principal_resolver, "blocking", True):
            await run_in_threadpool(self._authorize, connection, rule)
        else:
            self._authorize(connection, rule)

    def _authorize(self, connection: HTTPConnection, rule: Rule) -> None:
        principal = get_principal(connection)  # type: ignore[arg-type]
        if principal.role != "dev":
            self._check_scope(connection, rule, principal)
            resolver = connection.app.state.principal_resolver
            limits = getattr(resolver, "limits", lambda _p, d: d)(principal, self.defaults)
            wait = self.limiter.take(principal.subject, limits.rate_per_minute)
            if wait > 0:
                raise TooManyRequests(
                    f"the rate limit of {limits.rate_per_minute} requests a minute is spent",
                    retry_after=max(1, math.ceil(wait)),
                )
            connection.scope.setdefault("state", {})["max_body_bytes"] = limits.max_body_bytes
            length = connection.headers.get("content-length")
            if length and length.isdigit() and int(length) > limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"the request body is larger than this client's limit of "
                    f"{limits.max_body_bytes // (1024 * 1024)} MB"
                )

    @staticmethod
    def _check_scope(connection: HTTPConnection, rule: Rule, principal: Principal) -> None:
        if rule.fhir:
            resource_type = str(connection.path_params.get("resource_type") or "")
            if not resource_type:  # /fhir/Subscription/{id}/$status names its type
                parts = connection.url.path.split("/")
                resource_type = parts[2] if len(parts) > 2 else ""
            if rule.scopes and set(rule.scopes) & principal.scopes:
                return
            assert rule.action is not None
            if resource_type == "AuditEvent" and principal.role != "admin":
                raise Forbidden("the audit trail (AuditEvent) is for administrators only")
            if fhir_scope_satisfied(principal.scopes, resource_type, rule.action):
                return
            needed = (
                rule.scopes[0] if rule.scopes else required_fhir_scope(resource_type, rule.action)
            )
            raise _insufficient(needed)
        if set(rule.scopes) & principal.scopes:
            return
        raise _insufficient(" or ".join(rule.scopes))


def _insufficient(scope: str) -> Forbidden:
    return Forbidden(
        f"the access token lacks the scope {scope}",
        headers={"WWW-Authenticate": _challenge("insufficient_scope", None, scope)},
    )


class BodyLimit:
    """ASGI middleware: stops reading a request body past the client's limit (set by the
    :class:`Authorizer` in ``scope["state"]``), for bodies without Content-Length (chunked
    STOW-RS) too. The endpoint meets a :class:`~aifi.errors.PayloadTooLarge` while reading."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                limit = (scope.get("state") or {}).get("max_body_bytes")
                if limit is not None and seen > limit:
                    raise PayloadTooLarge(
                        f"the request body is larger than this client's limit of "
                        f"{limit // (1024 * 1024)} MB"
                    )
            return message

        await self.app(scope, limited, send)


__all__ = [
    "Authorizer",
    "BodyLimit",
    "BuiltinResolver",
    "DevResolver",
    "ExternalResolver",
    "Limits",
    "RateLimiter",
    "bearer_token",
]
