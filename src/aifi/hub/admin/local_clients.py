"""OAuth2 clients for the hub's own harnesses: ``aifi demo`` and the benchmarks run the hub
with authentication on (``auth=builtin``, not development mode) and register the clients
they need in its registry, as an operator would with ``aifi clients add`` (issue 6 "safe
by default"; SMART Backend Services, RFC 7523 §2.2).

- a **hospital** client (the PACS/gateway's STOW-RS and QIDO-RS, the study completion
  signal, the results API and review, the EPD's FHIR reads), ``client_secret_basic``
  (RFC 6749 §2.3.1, the simple option for gateways);
- an **admin** client (the routing explanation), ``private_key_jwt``;
- one **performer** client per AI product, limited to that product, ``private_key_jwt``
  with a generated ES384 key.

Each client's credentials go to a file ``<folder>/<name>.json`` (mode 0600) in the format
of ``aifi clients add --write-credentials``, read back with
:meth:`aifi.oauth_client.Credentials.from_file`; a product process is given its file.
Clients of an earlier run with the same ``label`` are revoked first, so a re-run on the
same data folder leaves no forgotten active clients behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aifi.hub.auth.clients import DEFAULT_SCOPES, ClientRegistry
from aifi.hub.auth.policy import (
    ADMIN,
    DICOMWEB_READ,
    DICOMWEB_WRITE,
    REQUESTER,
    RESULTS_READ,
    RESULTS_REVIEW,
)
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from aifi.oauth_client import ClientCredentials, Credentials, new_private_jwk, public_jwks

HOSPITAL_SCOPES = (
    DICOMWEB_READ,
    DICOMWEB_WRITE,
    REQUESTER,
    RESULTS_READ,
    RESULTS_REVIEW,
    "system/*.rs",
)
"""The gateway/PACS and the EPD view: store, find, retrieve, signal completion, read and
review results, read FHIR (SMART v2 system scopes)."""
ADMIN_SCOPES = (ADMIN,)
PERFORMER_SCOPES = DEFAULT_SCOPES["performer"]


@dataclass(frozen=True, slots=True)
class LocalClients:
    """The registered clients' credentials files (``performers`` by product code)."""

    hospital: Path
    admin: Path
    performers: dict[str, Path] = field(default_factory=dict)

    def hospital_auth(self) -> ClientCredentials:
        return ClientCredentials(Credentials.from_file(self.hospital), HOSPITAL_SCOPES)

    def admin_auth(self) -> ClientCredentials:
        return ClientCredentials(Credentials.from_file(self.admin), ADMIN_SCOPES)

    def performer_auth(self, product: str) -> ClientCredentials:
        return ClientCredentials(Credentials.from_file(self.performers[product]), PERFORMER_SCOPES)


def register_local_clients(
    settings: Settings,
    hub_url: str,
    folder: Path,
    *,
    products: Iterable[str],
    label: str,
    tenant: str | None = None,
) -> LocalClients:
    """Register the clients of the module docstring in the hub's database (migrated here
    if it is new) and write their credentials files; ``hub_url`` is the hub's base URL as
    the clients reach it (the token endpoint is ``<hub_url>/oauth/token``)."""
    token_url = hub_url.rstrip("/") + "/oauth/token"
    who = tenant or settings.default_tenant
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        registry = ClientRegistry(db)
        for old in registry.list(who):
            if old.description == label and old.active:
                registry.revoke(old.client_id)

        def add(name: str, role: str, scopes: tuple[str, ...], product: str | None = None) -> Path:
            private = None if role == "hospital" else new_private_jwk()
            registration = registry.add(
                tenant=who,
                role=role,
                auth_method="client_secret_basic" if private is None else "private_key_jwt",
                scopes=scopes,
                products=(product,) if product else (),
                jwks=public_jwks(private) if private else None,
                description=label,
            )
            path = folder / f"{name}.json"
            Credentials(
                client_id=registration.client.client_id,
                token_url=token_url,
                secret=registration.secret,
                private_jwk=private,
            ).write(path)
            return path

        hospital = add("hospital", "hospital", HOSPITAL_SCOPES)
        admin = add("admin", "admin", ADMIN_SCOPES)
        performers = {
            code: add(f"performer-{code}", "performer", PERFORMER_SCOPES, code) for code in products
        }
    finally:
        db.dispose()
    return LocalClients(hospital, admin, performers)


__all__ = [
    "ADMIN_SCOPES",
    "HOSPITAL_SCOPES",
    "PERFORMER_SCOPES",
    "LocalClients",
    "register_local_clients",
]
