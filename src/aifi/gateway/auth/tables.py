"""The OAuth2 tables in the gateway's own database: the hub's auth tables
(:mod:`aifi.hub.persistence.tables.auth` — ``oauth_client``, ``signing_key``, ``oauth_jti``,
``oauth_revoked`` — and ``tenant``, which a client row refers to), registered on
:class:`~aifi.gateway.persistence.tables.GatewayModel`'s metadata as well.

The hub's auth building blocks (:class:`~aifi.hub.auth.clients.ClientRegistry`,
:class:`~aifi.hub.auth.tokens.KeyRing`) work on those ORM classes; their SQL names only the
tables, so the same classes serve the gateway's database, which holds the same tables
(migration ``0004_auth``). Registering copies here keeps the gateway's migrations compared
against everything its database holds (the "migrations match the models" test).
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlmodel import SQLModel

from aifi.gateway.persistence.tables import GatewayModel
from aifi.hub.persistence.tables import OAuthClient, OAuthJti, OAuthRevoked, SigningKey, Tenant

AUTH_TABLES: tuple[Table, ...] = tuple(
    SQLModel.metadata.tables[model.__tablename__]
    for model in (Tenant, OAuthClient, SigningKey, OAuthJti, OAuthRevoked)
)
"""In dependency order (``oauth_client.tenant`` refers to ``tenant.id``)."""

for _table in AUTH_TABLES:
    if _table.name not in GatewayModel.metadata.tables:
        _table.to_metadata(GatewayModel.metadata)

__all__ = ["AUTH_TABLES"]
