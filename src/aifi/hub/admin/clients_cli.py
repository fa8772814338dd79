"""``aifi clients``: register, list, rotate and revoke the hub's OAuth2 clients, and rotate
the hub's own token signing key. Works on the hub's database directly (``--data-dir`` /
``--database-url``, as ``aifi serve``); a running hub sees a change within seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aifi.hub.admin.options import DatabaseUrl, DataDir, open_database

if TYPE_CHECKING:
    from aifi.hub.persistence.database import Database

clients_app = typer.Typer(
    help="OAuth2 clients (SMART Backend Services): add, list, rotate, revoke.",
    no_args_is_help=True,
)

PublicUrl = Annotated[
    str,
    typer.Option(
        "--hub-url",
        help="The hub's base URL as clients reach it; written into credentials files as "
        "<hub-url>/oauth/token (env AIFI_PUBLIC_URL).",
        envvar="AIFI_PUBLIC_URL",
    ),
]


def _registry(data_dir: Path | None, database_url: str | None):  # type: ignore[no-untyped-def]
    from aifi.hub.auth.clients import ClientRegistry

    db, settings = open_database(data_dir, database_url)
    return ClientRegistry(db, jwks_url_allowlist=settings.jwks_url_allowlist), db, settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _check_conformance(db: Database, role: str, products: list[str], reports: list[Path]) -> None:
    """Issue 18 point 4: record each ``--conformance-report`` of a performer (refused, with
    the reason, when it is not a performer report of one of ``products`` or did not pass) and
    warn for each product without a passing report recorded. Raises to refuse."""
    from aifi.hub.admin.conformance_records import parse_report, passing_report, record_report

    if role != "performer":
        if reports:
            raise _fail("--conformance-report is for --role performer (an AI product's report)")
        return
    read = []
    for path in reports:
        try:
            raw = path.read_bytes()
            parsed = parse_report(raw)
        except (OSError, ValueError) as exc:
            raise _fail(f"{path}: {exc}") from exc
        if parsed.kind != "performer":
            raise _fail(f"{path}: a {parsed.kind} report, not a performer report")
        if parsed.product not in products:
            raise _fail(f"{path}: a report for product {parsed.product}, not {', '.join(products)}")
        read.append((path, parsed, raw))
    for path, parsed, raw in read:
        record_report(db, parsed, raw)
        if not parsed.passed:
            why = f"required cases not shown: {', '.join(parsed.not_shown)}"
            raise _fail(
                f"{path}: the report for {parsed.product} did not pass "
                f"({why if parsed.not_shown else 'it has no cases'}); "
                "recorded as not passing, client not registered"
            )
        typer.echo(f"conformance report for {parsed.product} recorded: passed ({path})")
    reported = {parsed.product for _, parsed, _ in read}
    for code in products:
        if code not in reported and passing_report(db, code) is None:
            typer.echo(
                f"WARNING: no passing conformance report is recorded for product {code}. "
                f'The vendor makes one with `aifi conformance performer --product {code} --run "…" '
                "--report DIR`; record it with --conformance-report DIR/report.json. "
                "Registering anyway.",
                err=True,
            )


@clients_app.command("add")
def add(
    tenant: Annotated[str, typer.Option(help="The hospital the client belongs to.")],
    role: Annotated[
        str, typer.Option(help="hospital (gateway, PACS, EPD), performer (an AI product), admin.")
    ],
    product: Annotated[
        list[str] | None,
        typer.Option("--product", help="A performer's AI product (repeat for several)."),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the client may ask for (repeat); default: every scope of its role.",
        ),
    ] = None,
    auth: Annotated[
        str,
        typer.Option(help="private_key_jwt (SMART Backend Services) or client_secret_basic."),
    ] = "private_key_jwt",
    jwks: Annotated[
        Path | None, typer.Option(help="A JSON file with the client's public JWKS.")
    ] = None,
    jwks_url: Annotated[
        str | None,
        typer.Option(help="The client's JWKS URL (must be in AIFI_JWKS_URL_ALLOWLIST)."),
    ] = None,
    generate_key: Annotated[
        bool,
        typer.Option(
            "--generate-key",
            help="Generate an ES384 key pair for the client; the private key goes only into "
            "the credentials file.",
        ),
    ] = False,
    write_credentials: Annotated[
        Path | None,
        typer.Option(
            "--write-credentials",
            help="Write the client id, token URL and secret or private key to this file "
            "(mode 0600) for the client's own software.",
        ),
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="Choose the client id.")] = None,
    description: Annotated[str, typer.Option(help="Free text, e.g. 'PACS of ward 3'.")] = "",
    conformance_report: Annotated[
        list[Path] | None,
        typer.Option(
            "--conformance-report",
            help="A performer: the report.json of `aifi conformance performer` for a "
            "--product (repeat for several), recorded at the hub; refused unless it passed. "
            "Without one, a product with no passing report recorded is registered with a "
            "warning.",
        ),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests per minute (default: the hub's).")
    ] = None,
    max_request_mb: Annotated[
        int | None, typer.Option(help="Largest request body in MB (default: the hub's).")
    ] = None,
    hub_url: PublicUrl = "http://127.0.0.1:8000",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a client. A client_secret_basic secret is printed once (and written to
    --write-credentials); only its hash is kept."""
    from aifi.hub.auth.clients import ClientError
    from aifi.oauth_client import Credentials, new_private_jwk, public_jwks

    registry, db, _ = _registry(data_dir, database_url)
    private = None
    key_set: dict[str, object] | str | None = None
    if generate_key:
        if auth != "private_key_jwt" or jwks or jwks_url:
            raise _fail("--generate-key is for private_key_jwt without --jwks/--jwks-url")
        private = new_private_jwk()
        key_set = public_jwks(private)
    elif jwks is not None:
        key_set = jwks.read_text()
    try:
        _check_conformance(db, role, product or [], conformance_report or [])
        registration = registry.add(
            tenant=tenant,
            role=role,
            auth_method=auth,
            client_id=client_id,
            scopes=scope or None,
            products=product or (),
            jwks=key_set,
            jwks_url=jwks_url,
            description=description,
            rate_limit_per_minute=rate_limit,
            max_request_mb=max_request_mb,
        )
    except (ClientError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    client = registration.client
    typer.echo(f"client {client.client_id}: {client.role} of {client.tenant}")
    typer.echo(f"scopes: {' '.join(client.scopes)}")
    if registration.secret and write_credentials is None:
        typer.echo(f"secret (shown once): {registration.secret}")
    if write_credentials is not None:
        credentials = Credentials(
            client_id=client.client_id,
            token_url=hub_url.rstrip("/") + "/oauth/token",
            secret=registration.secret,
            private_jwk=private,
        )
        credentials.write(write_credentials)
        typer.echo(f"credentials written to {write_credentials}")
    elif private is not None:
        typer.echo(json.dumps({"private_jwk": private}))


@clients_app.command("list")
def list_clients(
    tenant: Annotated[str | None, typer.Option(help="Only this hospital's clients.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List the registered clients (never a secret or key); for a performer, whether a
    passing conformance report is recorded for each of its products."""
    from aifi.hub.admin.conformance_records import passing_report

    registry, db, _ = _registry(data_dir, database_url)
    try:
        clients = registry.list(tenant)
        codes = {code for client in clients for code in client.products}
        reported = {code: passing_report(db, code) is not None for code in codes}
    finally:
        db.dispose()
    for client in clients:
        conformance = {code: reported[code] for code in client.products}
        if as_json:
            shown = client.public()
            if conformance:
                shown["conformance_passed"] = conformance
            typer.echo(json.dumps(shown))
            continue
        state = "revoked" if client.revoked_at else "active"
        products = f" products={','.join(client.products)}" if client.products else ""
        if conformance:
            marks = ",".join(
                f"{code}:{'passed' if ok else 'none'}" for code, ok in conformance.items()
            )
            products += f" conformance={marks}"
        typer.echo(
            f"{client.client_id}\t{client.tenant}\t{client.role}\t{client.auth_method}\t"
            f"{state}{products}\t{' '.join(client.scopes)}"
        )


@clients_app.command("rotate")
def rotate(
    client_id: Annotated[str, typer.Argument(help="The client to give new credentials.")],
    jwks: Annotated[Path | None, typer.Option(help="A JSON file with the new JWKS.")] = None,
    jwks_url: Annotated[str | None, typer.Option(help="A new JWKS URL.")] = None,
    generate_key: Annotated[
        bool, typer.Option("--generate-key", help="Generate a new ES384 key pair.")
    ] = False,
    write_credentials: Annotated[
        Path | None, typer.Option("--write-credentials", help="Write the new credentials here.")
    ] = None,
    hub_url: PublicUrl = "http://127.0.0.1:8000",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """New credentials for a client (a new secret, or new keys). Tokens already issued stay
    valid until they expire; revoke the client to end them at once."""
    from aifi.hub.auth.clients import ClientError
    from aifi.oauth_client import Credentials, new_private_jwk, public_jwks

    registry, db, _ = _registry(data_dir, database_url)
    private = new_private_jwk() if generate_key else None
    key_set = public_jwks(private) if private else (jwks.read_text() if jwks else None)
    try:
        registration = registry.rotate(client_id, jwks=key_set, jwks_url=jwks_url)
    except ClientError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    typer.echo(f"client {client_id}: new credentials")
    if write_credentials is not None:
        credentials = Credentials(
            client_id=client_id,
            token_url=hub_url.rstrip("/") + "/oauth/token",
            secret=registration.secret,
            private_jwk=private,
        )
        credentials.write(write_credentials)
        typer.echo(f"credentials written to {write_credentials}")
    elif registration.secret:
        typer.echo(f"secret (shown once): {registration.secret}")


@clients_app.command("revoke")
def revoke(
    client_id: Annotated[str, typer.Argument(help="The client to revoke.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a client: it gets no more tokens and its tokens stop working."""
    from aifi.hub.auth.clients import ClientError

    registry, db, _ = _registry(data_dir, database_url)
    try:
        registry.revoke(client_id)
    except ClientError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    typer.echo(f"client {client_id}: revoked")


@clients_app.command("rotate-key")
def rotate_key(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Start signing access tokens with a new key now (the old key stays in the JWKS until
    its tokens have expired)."""
    from datetime import timedelta

    from aifi.hub.auth.tokens import KeyRing

    _, db, settings = _registry(data_dir, database_url)
    try:
        keep = timedelta(seconds=settings.access_token_seconds) + timedelta(minutes=5)
        kid = KeyRing(
            db, rotate_after=timedelta(days=settings.signing_key_days), keep_after_retired=keep
        ).rotate()
    finally:
        db.dispose()
    typer.echo(f"signing key {kid} is now in use")
