"""OAuth2 (SMART Backend Services): registered clients, signing keys, used JWT ids and
revoked tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now as _now


class OAuthClient(SQLModel, table=True):
    """A registered OAuth2 client (SMART Backend Services, RFC 6749 §2): who it is (role,
    tenant, products), what it may ask for (``scopes``, space-separated) and how it proves
    itself: ``private_key_jwt`` (RFC 7523 §2.2, with ``jwks`` or an allow-listed
    ``jwks_url``) or ``client_secret_basic`` (RFC 6749 §2.3.1; only a hash is kept)."""

    __tablename__ = "oauth_client"
    __table_args__ = (UniqueConstraint("client_id", name="uq_oauth_client_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    role: str = Field(max_length=16)
    products: str = Field(default="", max_length=2000)
    """Space-separated AI products of a performer; empty for other roles."""
    scopes: str = Field(sa_type=Text)
    """Space-separated scopes the client may be granted."""
    auth_method: str = Field(max_length=32)
    jwks: str | None = Field(default=None, sa_type=Text)
    jwks_url: str | None = Field(default=None, max_length=2000)
    secret_hash: str | None = Field(default=None, max_length=256)
    description: str = Field(default="", max_length=400)
    rate_limit_per_minute: int | None = None
    max_request_mb: int | None = None
    created_at: datetime = Field(default_factory=_now)
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None


class SigningKey(SQLModel, table=True):
    """A key the built-in authorization server signs access tokens with. The newest key
    signs; older keys stay in the public JWKS until every token they signed has expired
    (key rotation)."""

    __tablename__ = "signing_key"
    __table_args__ = (UniqueConstraint("kid", name="uq_signing_key_kid"),)

    pk: int | None = Field(default=None, primary_key=True)
    kid: str = Field(max_length=64)
    alg: str = Field(max_length=16)
    private_jwk: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=_now)
    retired_at: datetime | None = None
    """When it stopped signing (a newer key took over)."""


class OAuthJti(SQLModel, table=True):
    """The ``jti`` of every client assertion seen, until it expires: a second use of the
    same assertion is a replay and is refused (SMART Backend Services; RFC 7523 §3)."""

    __tablename__ = "oauth_jti"
    __table_args__ = (
        UniqueConstraint("client_id", "jti", name="uq_oauth_jti"),
        Index("ix_oauth_jti_expires", "expires_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    jti: str = Field(max_length=256)
    expires_at: datetime


class OAuthRevoked(SQLModel, table=True):
    """An access token revoked before it expired (RFC 7009), kept until it would expire."""

    __tablename__ = "oauth_revoked"
    __table_args__ = (
        UniqueConstraint("jti", name="uq_oauth_revoked_jti"),
        Index("ix_oauth_revoked_expires", "expires_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    jti: str = Field(max_length=64)
    client_id: str = Field(max_length=64)
    expires_at: datetime


# --- audit (issue 6) ----------------------------------------------------------------------
