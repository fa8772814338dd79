"""``aifi gateway clients …``: register, list and remove the EPD's OAuth2 clients at the
gateway (SMART Backend Services), on the gateway's own database (``--data-dir`` /
``AIFI_GATEWAY_DATA_DIR``, as ``aifi gateway serve``); a running gateway sees a change
within seconds. Mirrors ``aifi clients`` at the hub (:mod:`aifi.hub.admin.clients_cli`).

A client authenticates with ``private_key_jwt`` (``--jwks FILE`` with its public keys, or
``--generate-key``: the private key goes only into ``--write-credentials``) or with
``client_secret_basic`` (``--secret-stdin``: the secret is read from standard input; only
its scrypt hash is kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

clients_app = typer.Typer(
    help="The EPD's OAuth2 clients at the gateway (SMART Backend Services): add, list, remove.",
    no_args_is_help=True,
)

ROLES = ("epd",)
MIN_SECRET_CHARS = 16

DataDir = Annotated[
    Path | None,
    typer.Option(help="The gateway's data folder (gateway.db).", envvar="AIFI_GATEWAY_DATA_DIR"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _open(data_dir: Path | None):  # type: ignore[no-untyped-def]
    """The gateway's settings, its migrated database and the client registry on it."""
    from aifi.gateway.auth.service import build_auth
    from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
    from aifi.gateway.settings import GatewaySettings
    from aifi.hub.persistence.database import Database

    settings = GatewaySettings(data_dir=data_dir) if data_dir else GatewaySettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.database_url, migrations=GATEWAY_MIGRATIONS)
    db.migrate()
    return settings, db, build_auth(settings, db).registry


@clients_app.command("add")
def add(
    client_id: Annotated[str, typer.Option(help="The client id the EPD will use.")],
    role: Annotated[str, typer.Option(help="epd (the only kind of client here).")] = "epd",
    jwks: Annotated[
        Path | None, typer.Option(help="A JSON file with the client's public JWKS (RS384/ES384).")
    ] = None,
    generate_key: Annotated[
        bool,
        typer.Option(
            "--generate-key",
            help="Generate an ES384 key pair; the private key goes only into --write-credentials.",
        ),
    ] = False,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin",
            help="client_secret_basic with the secret read from standard input.",
        ),
    ] = False,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the client may ask for (repeat); default: all "
            "the EPD scopes (FHIR facade, WADO-RS).",
        ),
    ] = None,
    write_credentials: Annotated[
        Path | None,
        typer.Option(
            "--write-credentials",
            help="Write the client id, token URL and secret or private key to this file (0600).",
        ),
    ] = None,
    gateway_url: Annotated[
        str,
        typer.Option(
            help="The gateway's base URL as the EPD reaches it (token URL <url>/oauth/token).",
            envvar="AIFI_GATEWAY_URL",
        ),
    ] = "http://127.0.0.1:8100",
    description: Annotated[str, typer.Option(help="Free text, e.g. 'EPD production'.")] = "EPD",
    data_dir: DataDir = None,
) -> None:
    """Register an EPD client. Exactly one of --jwks, --generate-key, --secret-stdin."""
    from sqlmodel import select

    from aifi.gateway.auth.service import EPD_ROLE, EPD_SCOPES
    from aifi.hub.auth.clients import ClientError, hash_secret
    from aifi.hub.auth.policy import system_scope_within
    from aifi.hub.persistence.tables import OAuthClient
    from aifi.oauth_client import Credentials, new_private_jwk, public_jwks

    if role not in ROLES:
        raise _fail(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if sum((jwks is not None, generate_key, secret_stdin)) != 1:
        raise _fail("give exactly one of --jwks FILE, --generate-key, --secret-stdin")
    for asked in scope or ():
        if asked not in EPD_SCOPES and not any(
            system_scope_within(asked, held) for held in EPD_SCOPES
        ):
            raise _fail(
                f"an EPD client cannot hold the scope {asked!r}: the gateway serves "
                f"{' '.join(EPD_SCOPES)} (or narrower)"
            )
    secret = None
    if secret_stdin:
        secret = sys.stdin.readline().strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise _fail(f"the secret must be at least {MIN_SECRET_CHARS} characters")
    private = new_private_jwk() if generate_key else None
    key_set: dict[str, object] | str | None = (
        public_jwks(private) if private is not None else jwks.read_text() if jwks else None
    )
    settings, db, registry = _open(data_dir)
    try:
        registration = registry.add(
            tenant=settings.tenant,
            role=EPD_ROLE,
            auth_method="client_secret_basic" if secret else "private_key_jwt",
            client_id=client_id,
            scopes=scope or EPD_SCOPES,
            jwks=key_set,
            description=description,
        )
        if secret is not None:  # the registry made one up: keep the given one instead
            with db.write() as session:
                row = session.exec(
                    select(OAuthClient).where(OAuthClient.client_id == client_id)
                ).one()
                row.secret_hash = hash_secret(secret)
                session.add(row)
    except (ClientError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    client = registration.client
    typer.echo(f"client {client.client_id}: epd of {client.tenant}")
    typer.echo(f"scopes: {' '.join(client.scopes)}")
    if write_credentials is not None:
        Credentials(
            client_id=client.client_id,
            token_url=gateway_url.rstrip("/") + "/oauth/token",
            secret=secret,
            private_jwk=private,
        ).write(write_credentials)
        typer.echo(f"credentials written to {write_credentials}")
    elif private is not None:
        typer.echo(json.dumps({"private_jwk": private}))


@clients_app.command("list")
def list_clients(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    data_dir: DataDir = None,
) -> None:
    """List the registered clients (never a secret or key)."""
    _, db, registry = _open(data_dir)
    try:
        clients = registry.list()
    finally:
        db.dispose()
    for client in clients:
        if as_json:
            typer.echo(json.dumps(client.public()))
            continue
        state = "revoked" if client.revoked_at else "active"
        typer.echo(f"{client.client_id}\t{client.auth_method}\t{state}\t{' '.join(client.scopes)}")


@clients_app.command("remove")
def remove(
    client_id: Annotated[str, typer.Argument(help="The client to remove.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a client: it gets no more tokens and its tokens stop working (within
    seconds in a running gateway). The row stays, as the record of who could read."""
    from aifi.hub.auth.clients import ClientError

    _, db, registry = _open(data_dir)
    try:
        client = registry.revoke(client_id)
    except ClientError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    typer.echo(f"client {client.client_id} revoked")
