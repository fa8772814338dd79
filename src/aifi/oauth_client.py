"""The client side of SMART Backend Services, for every part of aifi that calls the hub
(AI product performers, the demo, the gateway) and for integrators' scripts.

:class:`ClientCredentials` is an ``httpx.Auth``: it gets an access token with
``grant_type=client_credentials`` (RFC 6749 §4.4), authenticating with ``private_key_jwt``
(a fresh assertion per request, RFC 7523 §2.2, signed with the client's private JWK,
``exp`` 5 minutes ahead, a new ``jti``) or ``client_secret_basic``; it keeps the token
until shortly before it expires, and gets a new one once when the hub answers 401.
:func:`bearer_headers` gives the header for clients that are not httpx (dicomweb-client).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from aifi.errors import AuthError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client needs to get tokens: its id, the token endpoint, and a secret or a
    private JWK (as a dict, or the path of a JSON file holding it)."""

    client_id: str
    token_url: str
    secret: str | None = None
    private_jwk: dict[str, Any] | None = None

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        """A credentials file as ``aifi clients add --write-credentials`` writes it."""
        data = json.loads(path.read_text())
        return cls(
            client_id=str(data["client_id"]),
            token_url=str(data["token_url"]),
            secret=data.get("client_secret"),
            private_jwk=data.get("private_jwk"),
        )

    def write(self, path: Path) -> None:
        """Write the credentials file, readable by its owner only (0600, never briefly
        wider): it holds a secret or a private key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.to_json())

    def to_json(self) -> str:
        data: dict[str, Any] = {"client_id": self.client_id, "token_url": self.token_url}
        if self.secret:
            data["client_secret"] = self.secret
        if self.private_jwk:
            data["private_jwk"] = self.private_jwk
        return json.dumps(data, indent=2)


def new_private_jwk(kid: str | None = None) -> dict[str, Any]:
    """A new ES384 key pair as a private JWK (the public half goes to the hub)."""
    key = ECKey.generate_key(
        "P-384",
        parameters={"kid": kid or uuid.uuid4().hex, "alg": "ES384", "use": "sig"},
        private=True,
    )
    return dict(key.as_dict(private=True))


def public_jwks(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The JWKS (public keys only) to register for ``private_jwk``."""
    return {"keys": [dict(_import(private_jwk).as_dict(private=False))]}


def _import(jwk: dict[str, Any]) -> ECKey | RSAKey:
    if jwk.get("kty") == "RSA":
        return RSAKey.import_key(jwk)
    return ECKey.import_key(jwk)


def client_assertion(
    client_id: str, token_url: str, private_jwk: dict[str, Any], lifetime: int = 300
) -> str:
    """A SMART Backend Services client assertion: iss = sub = client id, aud = the token
    URL, exp ``lifetime`` seconds ahead (at most 300), a fresh jti, signed ES384/RS384."""
    key = _import(private_jwk)
    alg = "RS384" if private_jwk.get("kty") == "RSA" else "ES384"
    now = int(time.time())
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if private_jwk.get("kid"):
        header["kid"] = private_jwk["kid"]
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + lifetime,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(header, claims, key, algorithms=[alg])


def token_request(credentials: Credentials, scopes: Iterable[str]) -> httpx.Request:
    form = {"grant_type": "client_credentials", "scope": " ".join(scopes)}
    headers = {"Accept": "application/json"}
    if credentials.private_jwk is not None:
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = client_assertion(
            credentials.client_id, credentials.token_url, credentials.private_jwk
        )
        return httpx.Request("POST", credentials.token_url, data=form, headers=headers)
    auth = httpx.BasicAuth(credentials.client_id, credentials.secret or "")
    request = httpx.Request("POST", credentials.token_url, data=form, headers=headers)
    return next(auth.auth_flow(request))


class TokenError(AuthError, RuntimeError):
    """The token endpoint refused; the message carries its ``error`` and description."""


class ClientCredentials(httpx.Auth):
    """``httpx.Auth`` adding ``Authorization: Bearer`` with a token kept until 30 s before
    it expires (thread-safe; one token request at a time)."""

    requires_response_body = True

    def __init__(self, credentials: Credentials, scopes: Iterable[str]) -> None:
        self.credentials = credentials
        self.scopes = tuple(scopes)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() > self._expires - 30:
                with httpx.Client(timeout=10.0) as client:
                    response = client.send(token_request(self.credentials, self.scopes))
                if response.status_code != 200:
                    try:
                        body = response.json()
                        detail = f"{body.get('error')}: {body.get('error_description')}"
                    except ValueError:
                        detail = response.text[:200]
                    raise TokenError(f"token request refused ({response.status_code}) {detail}")
                body = response.json()
                self._token = str(body["access_token"])
                self._expires = time.monotonic() + float(body.get("expires_in", 60))
            return self._token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request


def bearer_headers(auth: ClientCredentials | None) -> dict[str, str]:
    """``{"Authorization": "Bearer …"}`` for clients that take headers, or ``{}``."""
    return auth.headers() if auth is not None else {}
