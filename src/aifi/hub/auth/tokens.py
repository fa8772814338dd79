"""The built-in authorization server's signing keys and access tokens.

Access tokens are JWTs (RFC 9068 shape: ``iss``, ``sub`` = client id, ``aud``, ``exp``,
``iat``, ``jti``, ``scope``, plus ``tenant``, ``role`` and ``products``) signed ES384 with
the newest key of the :class:`KeyRing`; all JOSE is joserfc's (the JOSE library of the
authlib project). Keys rotate: after ``signing_key_days`` (or ``aifi clients rotate-key``)
a new key signs and the retired one stays in the public JWKS (``/oauth/jwks``) until every
token it signed has expired, then it is deleted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlmodel import col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.errors import AuthError
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import SigningKey

SIGNING_ALG = "ES384"
VERIFIED_CACHE = 4096
AUDIENCE = "aifi-hub"
"""The ``aud`` of every access token the hub issues: the hub's APIs."""


class InvalidToken(AuthError):
    """An access token that must not be accepted; ``reason`` says why (for the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyRing:
    """The hub's signing keys (table ``signing_key``), cached per process and re-read when a
    token names a key id this process has not seen (another process rotated)."""

    def __init__(
        self,
        db: Database,
        *,
        rotate_after: timedelta,
        keep_after_retired: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.rotate_after = rotate_after
        self.keep_after_retired = keep_after_retired
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: list[tuple[SigningKey, ECKey]] = []
        self._loaded_at = 0.0

    def _load(self) -> None:
        with self.db.read() as session:
            rows = list(session.exec(select(SigningKey).order_by(col(SigningKey.pk))).all())
            session.expunge_all()
        keys = []
        for row in rows:
            key = ECKey.import_key(json.loads(row.private_jwk))
            keys.append((row, key))
        self._keys = keys
        self._loaded_at = time.monotonic()

    def _current(self) -> list[tuple[SigningKey, ECKey]]:
        if not self._keys or time.monotonic() - self._loaded_at > 60:
            self._load()
        return self._keys

    def active(self) -> tuple[str, ECKey]:
        """The key that signs now; creates the first key, and rotates an old one."""
        with self._lock:
            keys = self._current()
            live = [(row, key) for row, key in keys if row.retired_at is None]
            now = self.clock()
            if not live or now - as_utc(live[-1][0].created_at) > self.rotate_after:
                self._rotate_locked()
                live = [(row, key) for row, key in self._keys if row.retired_at is None]
            row, key = live[-1]
            return row.kid, key

    def rotate(self) -> str:
        """Start signing with a new key now; returns its key id."""
        with self._lock:
            return self._rotate_locked()

    def _rotate_locked(self) -> str:
        now = self.clock()
        kid = uuid.uuid4().hex
        key = ECKey.generate_key(
            "P-384", parameters={"kid": kid, "alg": SIGNING_ALG, "use": "sig"}, private=True
        )
        with self.db.write() as session:
            for row in session.exec(
                select(SigningKey).where(col(SigningKey.retired_at).is_(None))
            ).all():
                row.retired_at = now
                session.add(row)
            for row in session.exec(
                select(SigningKey).where(col(SigningKey.retired_at).is_not(None))
            ).all():
                retired = row.retired_at
                if retired is not None and now - as_utc(retired) > self.keep_after_retired:
                    session.delete(row)
            session.add(
                SigningKey(
                    kid=kid,
                    alg=SIGNING_ALG,
                    private_jwk=_json(key.as_dict(private=True)),
                    created_at=now,
                )
            )
        self._load()
        return kid

    def key_set(self, kid: str | None) -> KeySet:
        """The public keys that may have signed a token naming ``kid``."""
        with self._lock:
            keys = self._current()
            if kid is not None and all(row.kid != kid for row, _ in keys):
                self._load()
                keys = self._keys
            return KeySet([key for _, key in keys])

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (RFC 7517 §5): every key whose tokens may still be valid."""
        self.active()  # the first key exists before any token does
        with self._lock:
            keys = self._current()
            return {"keys": [key.as_dict(private=False) for _, key in keys]}


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    jti: str


class TokenService:
    """Issues and checks the hub's access tokens."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        lifetime: timedelta,
        clock: Clock = utc_now,
        leeway_seconds: int = 30,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.lifetime = lifetime
        self.clock = clock
        self.leeway = leeway_seconds
        self._verified: dict[str, dict[str, Any]] = {}
        """Tokens whose signature, issuer and audience were checked (a client reuses its
        token for minutes): only the time claims are checked again. Bounded; cleared
        oldest first."""
        self._verified_lock = threading.Lock()

    def issue(
        self,
        *,
        client_id: str,
        tenant: str,
        role: str,
        scopes: list[str],
        products: list[str],
    ) -> IssuedToken:
        kid, key = self.keys.active()
        now = int(self.clock().timestamp())
        lifetime = int(self.lifetime.total_seconds())
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": jti,
            "scope": " ".join(scopes),
            "tenant": tenant,
            "role": role,
        }
        if products:
            claims["products"] = products
        token = jwt.encode(
            {"alg": SIGNING_ALG, "kid": kid, "typ": "at+jwt"},
            claims,
            key,
            algorithms=[SIGNING_ALG],
        )
        return IssuedToken(token, lifetime, claims["scope"], jti)

    def validate(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token; :class:`InvalidToken` with the reason otherwise:
        bad form, unknown key, bad signature, other issuer or audience, expired, not yet valid."""
        with self._verified_lock:
            known = self._verified.get(token)
        if known is not None:
            check_time_claims(known, self.clock(), self.leeway)
            return dict(known)
        claims = self._verify(token)
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_CACHE:
                for stale in list(self._verified)[: VERIFIED_CACHE // 4]:
                    del self._verified[stale]
            self._verified[token] = claims
        return dict(claims)

    def _verify(self, token: str) -> dict[str, Any]:
        kid = _header_kid(token)
        try:
            decoded = jwt.decode(token, self.keys.key_set(kid), algorithms=[SIGNING_ALG])
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken(f"the access token's signature does not verify ({exc})") from exc
        claims = dict(decoded.claims)
        check_time_claims(claims, self.clock(), self.leeway)
        if claims.get("iss") != self.issuer:
            raise InvalidToken("the access token was issued by another issuer")
        aud = claims.get("aud")
        if aud != AUDIENCE and not (isinstance(aud, list) and AUDIENCE in aud):
            raise InvalidToken("the access token is meant for another audience")
        for name in ("sub", "jti", "tenant", "role"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise InvalidToken(f"the access token has no {name!r}")
        return claims


def _header_kid(token: str) -> str | None:
    from joserfc.jws import extract_compact

    try:
        obj = extract_compact(token.encode("ascii"))
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidToken("the access token is not a compact JWS") from exc
    kid = obj.protected.get("kid")
    return kid if isinstance(kid, str) else None


def check_time_claims(claims: dict[str, Any], now: datetime, leeway: int) -> None:
    """``exp`` (required), ``nbf`` and ``iat`` against ``now`` with ``leeway`` seconds
    (RFC 7519 §4.1.4, §4.1.5, §4.1.6)."""
    stamp = now.timestamp()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise InvalidToken("the token has no numeric 'exp'")
    if exp < stamp - leeway:
        raise InvalidToken("the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            raise InvalidToken("the token's 'nbf' is not numeric")
        if nbf > stamp + leeway:
            raise InvalidToken("the token is not valid yet ('nbf' is in the future)")
    iat = claims.get("iat")
    if iat is not None:
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise InvalidToken("the token's 'iat' is not numeric")
        if iat > stamp + leeway:
            raise InvalidToken("the token was issued in the future ('iat')")
