"""Tenants (hospitals) and the request → principal resolution used until OAuth2 lands.

Every stored row and file belongs to a tenant. :func:`default_tenant_resolver` maps every
request to the configured default tenant; the OAuth2 issue replaces it with a resolver that
reads the tenant from a validated token (see :mod:`aifi.principal`).
"""

from __future__ import annotations

import re

from fastapi import Request

from aifi.principal import Principal, PrincipalResolver

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def validate_tenant_id(value: str) -> str:
    """Tenant ids name folders and rows: lower-case letters, digits, ``-`` and ``_``."""
    if not _TENANT_ID.fullmatch(value):
        raise ValueError(f"invalid tenant id {value!r}: use 1-63 of a-z, 0-9, '-', '_' (not first)")
    return value


def default_tenant_resolver(tenant: str) -> PrincipalResolver:
    principal = Principal(tenant=validate_tenant_id(tenant), subject="anonymous")

    def resolve(request: Request) -> Principal:
        return principal

    return resolve
