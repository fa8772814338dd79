"""The built-in authorization server: SMART Backend Services (SMART App Launch 2.x,
"Backend Services") over OAuth 2.0.

- ``GET /.well-known/smart-configuration`` (also under ``/fhir``): discovery.
- ``POST /oauth/token``: ``grant_type=client_credentials`` (RFC 6749 §4.4) with
  ``private_key_jwt`` (RFC 7523 §2.2: ``iss`` = ``sub`` = client id, ``aud`` = this token
  endpoint, ``exp`` at most 5 minutes ahead, a ``jti`` never seen before, signed RS384 or
  ES384 with a key of the client's JWKS) or ``client_secret_basic`` (RFC 6749 §2.3.1).
- ``POST /oauth/introspect`` (RFC 7662) and ``POST /oauth/revoke`` (RFC 7009): the caller
  authenticates the same way; a client sees and revokes only its own tokens (an
  administrator, those of its tenant).
- ``GET /oauth/jwks``: the public keys access tokens are signed with.

Errors follow RFC 6749 §5.2: JSON ``{"error", "error_description"}``, 400, or 401 with
``WWW-Authenticate`` for a client that failed to authenticate.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from starlette.concurrency import run_in_threadpool

from aifi.clock import Clock, utc_now
from aifi.errors import AuthError
from aifi.hub.auth.clients import (
    Client,
    ClientError,
    ClientRegistry,
    scope_allowed_for_role,
    verify_secret,
)
from aifi.hub.auth.policy import NON_FHIR_SCOPES, system_scope_within
from aifi.hub.auth.tokens import InvalidToken, TokenService, check_time_claims

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["RS384", "ES384"]
"""SMART Backend Services: servers SHALL support RS384 and ES384."""
MAX_ASSERTION_LIFETIME = 300
MAX_FORM_BYTES = 64 * 1024

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(AuthError):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers={**_NO_STORE, **self.headers},
        )


def _invalid_client(description: str, basic: bool = False) -> OAuthError:
    error = OAuthError("invalid_client", description, 401)
    error.headers["WWW-Authenticate"] = (
        'Basic realm="aifi-hub"' if basic else 'Bearer realm="aifi-hub", error="invalid_client"'
    )
    return error


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("only HTTP Basic client authentication is accepted here", True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
        raise _invalid_client("the Basic credentials are not base64 of id:secret", True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _invalid_client("the Basic credentials are not id:secret", True)
    # RFC 6749 §2.3.1: the id and secret are form-urlencoded before base64
    return unquote(client_id), unquote(secret)


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "the request body is too large")
    from urllib.parse import parse_qs

    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the form cannot be read") from exc
    form: dict[str, str] = {}
    for name, values in parsed.items():
        if len(values) > 1:
            raise OAuthError("invalid_request", f"the parameter {name!r} is repeated")
        form[name] = values[0]
    return form


class AuthorizationServer:
    """Authenticates clients and issues, introspects and revokes the hub's access tokens."""

    def __init__(
        self,
        registry: ClientRegistry,
        tokens: TokenService,
        *,
        public_url: Callable[[Request], str],
        clock: Clock = utc_now,
    ) -> None:
        self.registry = registry
        self.tokens = tokens
        self.public_url = public_url
        self.clock = clock

    def token_urls(self, request: Request) -> set[str]:
        """What a client assertion's ``aud`` may be: this token endpoint's URL, as the hub
        is configured to be reached and as this request reached it."""
        urls = {self.public_url(request) + "/oauth/token"}
        urls.add(str(request.url).split("?", 1)[0])
        return urls

    async def authenticate(self, request: Request, form: dict[str, str]) -> Client:
        basic = _basic_credentials(request)
        assertion = form.get("client_assertion")
        if basic is not None and assertion is not None:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        if basic is not None:
            client_id, secret = basic
            client = self.registry.get(client_id)
            ok = (
                client is not None
                and client.auth_method == "client_secret_basic"
                and await run_in_threadpool(verify_secret, secret, client.secret_hash)
            )
            if not ok or client is None:
                raise _invalid_client("unknown client or wrong secret", True)
            if not client.active:
                raise _invalid_client("the client has been revoked", True)
            return client
        if assertion is None:
            raise _invalid_client("the client did not authenticate (private_key_jwt or Basic)")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        return await run_in_threadpool(self._verify_assertion, request, assertion, form)

    def _verify_assertion(self, request: Request, assertion: str, form: dict[str, str]) -> Client:
        try:
            unverified = extract_compact(assertion.encode("ascii"))
            import json

            claims_unverified = json.loads(unverified.payload)
        except (JoseError, ValueError, UnicodeError) as exc:
            raise _invalid_client("the client assertion is not a compact JWS") from exc
        if not isinstance(claims_unverified, dict):
            raise _invalid_client("the client assertion's claims are not an object")
        client_id = claims_unverified.get("iss")
        if not isinstance(client_id, str):
            raise _invalid_client("the client assertion has no 'iss'")
        if form.get("client_id") not in (None, client_id):
            raise _invalid_client("client_id does not match the assertion's issuer")
        client = self.registry.get(client_id)
        if client is None or client.auth_method != "private_key_jwt":
            raise _invalid_client("unknown client")
        if not client.active:
            raise _invalid_client("the client has been revoked")
        kid = unverified.protected.get("kid")
        if unverified.protected.get("alg") not in ASSERTION_ALGS:
            raise _invalid_client(
                f"the client assertion must be signed {' or '.join(ASSERTION_ALGS)}"
            )
        try:
            keys = self.registry.key_set(client)
            if kid is not None and keys.get_by_kid(kid) is None:
                raise KeyError(kid)
        except KeyError:
            try:
                keys = self.registry.key_set(client, refresh=True)
            except ClientError as exc:
                raise _invalid_client(exc.args[0]) from exc
        except ClientError as exc:
            raise _invalid_client(exc.args[0]) from exc
        try:
            token = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGS)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise _invalid_client("the client assertion's signature does not verify") from exc
        claims = dict(token.claims)
        if claims.get("sub") != client_id:
            raise _invalid_client("the client assertion's 'sub' must equal its 'iss'")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not self.token_urls(request) & {a for a in auds if isinstance(a, str)}:
            raise _invalid_client("the client assertion's 'aud' is not this token endpoint")
        now = self.clock()
        try:
            check_time_claims(claims, now, leeway=10)
        except InvalidToken as exc:
            raise _invalid_client(f"client assertion: {exc.reason}") from exc
        exp = float(claims["exp"])
        if exp > now.timestamp() + MAX_ASSERTION_LIFETIME + 10:
            raise _invalid_client("the client assertion's 'exp' is more than 5 minutes ahead")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise _invalid_client("the client assertion has no usable 'jti'")
        expires = datetime.fromtimestamp(exp + 60, UTC)
        if not self.registry.remember_assertion(client_id, jti, expires):
            raise _invalid_client("the client assertion was used before (its 'jti' is replayed)")
        return client

    def grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(
                "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        requested = form.get("scope", "").split()
        if not requested:
            raise OAuthError("invalid_scope", "ask for at least one scope")
        granted = [
            scope
            for scope in requested
            if _grantable(scope, client.scopes) and scope_allowed_for_role(client.role, scope)
        ]
        if not granted:
            raise OAuthError(
                "invalid_scope",
                f"none of the requested scopes may be granted to {client.client_id}",
            )
        issued = self.tokens.issue(
            client_id=client.client_id,
            tenant=client.tenant,
            role=client.role,
            scopes=granted,
            products=list(client.products),
        )
        return {
            "access_token": issued.access_token,
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }


def _grantable(scope: str, allowed: tuple[str, ...]) -> bool:
    """Is a requested scope within what the client was registered for? FHIR scopes are
    narrowed: ``system/Task.rs`` is within ``system/*.cruds``."""
    return scope in allowed or any(system_scope_within(scope, held) for held in allowed)


def smart_configuration(request: Request, base: str) -> dict[str, Any]:
    """SMART App Launch 2.x §Conformance: the discovery document."""
    return {
        "issuer": base,
        "token_endpoint": base + "/oauth/token",
        "jwks_uri": base + "/oauth/jwks",
        "introspection_endpoint": base + "/oauth/introspect",
        "revocation_endpoint": base + "/oauth/revoke",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": [*NON_FHIR_SCOPES, "system/*.cruds", "system/*.rs"],
        "capabilities": [
            "client-confidential-asymmetric",
            "client-confidential-symmetric",
            "permission-v1",
            "permission-v2",
        ],
        "response_types_supported": ["token"],
    }


def build_router(server: AuthorizationServer) -> APIRouter:
    router = APIRouter(tags=["OAuth2"])

    def discovery(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(request, server.public_url(request)))

    router.add_api_route(
        "/.well-known/smart-configuration",
        discovery,
        methods=["GET"],
        summary="SMART Backend Services discovery",
    )
    router.add_api_route(
        "/fhir/.well-known/smart-configuration",
        discovery,
        methods=["GET"],
        summary="SMART discovery relative to the FHIR base URL",
        name="fhir_discovery",
    )

    @router.get("/oauth/jwks", summary="The public keys access tokens are signed with")
    def jwks() -> JSONResponse:
        return JSONResponse(server.tokens.keys.jwks())

    @router.post(
        "/oauth/token", summary="client_credentials token request (SMART Backend Services)"
    )
    async def token(request: Request) -> Response:
        try:
            form = await _form(request)
            client = await server.authenticate(request, form)
            body = await run_in_threadpool(server.grant, client, form)
        except OAuthError as error:
            return error.response()
        return JSONResponse(body, headers=_NO_STORE)

    async def _caller_and_token(
        request: Request,
    ) -> tuple[Client, str, dict[str, str]] | Response:
        """RFC 7662 §2.1 / RFC 7009 §2.1: the authenticated caller and the ``token`` it
        asks about, or the error response."""
        try:
            form = await _form(request)
            caller = await server.authenticate(request, form)
        except OAuthError as error:
            return error.response()
        token_value = form.get("token")
        if not token_value:
            return OAuthError("invalid_request", "the 'token' parameter is missing").response()
        return caller, token_value, form

    def _own(caller: Client, claims: dict[str, Any]) -> bool:
        if claims.get("sub") == caller.client_id:
            return True
        return caller.role == "admin" and claims.get("tenant") == caller.tenant

    @router.post("/oauth/introspect", summary="Token introspection (RFC 7662)")
    async def introspect(request: Request) -> Response:
        asked = await _caller_and_token(request)
        if isinstance(asked, Response):
            return asked
        caller, token_value, _ = asked
        try:
            claims = server.tokens.validate(token_value)
        except InvalidToken:
            return JSONResponse({"active": False}, headers=_NO_STORE)
        client = server.registry.get(str(claims["sub"]))
        if (
            not _own(caller, claims)
            or server.registry.token_revoked(str(claims["jti"]))
            or client is None
            or not client.active
        ):
            return JSONResponse({"active": False}, headers=_NO_STORE)
        body = {
            "active": True,
            "scope": claims.get("scope", ""),
            "client_id": claims["sub"],
            "sub": claims["sub"],
            "token_type": "Bearer",
            "exp": claims["exp"],
            "iat": claims.get("iat"),
            "nbf": claims.get("nbf"),
            "iss": claims["iss"],
            "aud": claims["aud"],
            "jti": claims["jti"],
            "tenant": claims["tenant"],
            "role": claims["role"],
        }
        if claims.get("products"):
            body["products"] = claims["products"]
        return JSONResponse(body, headers=_NO_STORE)

    @router.post("/oauth/revoke", summary="Token revocation (RFC 7009)")
    async def revoke(request: Request) -> Response:
        asked = await _caller_and_token(request)
        if isinstance(asked, Response):
            return asked
        caller, token_value, form = asked
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token"):
            return OAuthError(
                "unsupported_token_type", "only access tokens can be revoked"
            ).response()
        try:
            claims = server.tokens.validate(token_value)
        except InvalidToken:
            return Response(status_code=200, headers=_NO_STORE)  # RFC 7009 §2.2
        if _own(caller, claims):
            await run_in_threadpool(
                server.registry.revoke_token,
                str(claims["jti"]),
                str(claims["sub"]),
                datetime.fromtimestamp(float(claims["exp"]), UTC),
            )
        return Response(status_code=200, headers=_NO_STORE)

    return router
