"""``aifi tenants``: list the hub's tenants (hospitals) and change their settings.

Works on the hub's database directly (``--data-dir`` / ``--database-url``, as ``aifi
serve`` and ``aifi clients``); a running hub applies a change from its next request.

``require_deidentified`` (issue 15, :mod:`aifi.hub.store.deidentified`): STOW-RS refuses each
instance of the tenant's hospital whose Patient Identity Removed (0012,0062) is not YES
(DICOM PS3.15 Annex E; Failure Reason C411). A tenant without a setting of its own follows
the hub's default (``AIFI_REQUIRE_DEIDENTIFIED``, else on outside development mode); a
hospital that pseudonymises by other means than the aifi gateway may turn it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from aifi.hub.admin.options import DatabaseUrl, DataDir, open_database

if TYPE_CHECKING:
    pass

tenants_app = typer.Typer(
    help="Tenants (hospitals): list them, set whether they accept only de-identified data.",
    no_args_is_help=True,
)


def _describe(own: bool | None, default: bool) -> str:
    effective = default if own is None else own
    words = "de-identified only" if effective else "identified allowed"
    return f"{words} (hub default)" if own is None else words


@tenants_app.command("list")
def list_tenants(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List the tenants with what their STOW-RS accepts."""
    from sqlmodel import col, select

    from aifi.hub.persistence.tables import Tenant

    db, settings = open_database(data_dir, database_url)
    try:
        with db.read() as session:
            rows = session.exec(select(Tenant).order_by(col(Tenant.id))).all()
        if not rows:
            typer.echo("no tenants")
        for row in rows:
            accepts = _describe(row.require_deidentified, settings.deidentified_by_default)
            name = f" ({row.name})" if row.name and row.name != row.id else ""
            typer.echo(f"{row.id}{name}: {accepts}")
    finally:
        db.dispose()


@tenants_app.command("set")
def set_tenant(
    tenant: Annotated[str, typer.Argument(help="The tenant id (created when missing).")],
    require_deidentified: Annotated[
        bool | None,
        typer.Option(
            "--require-deidentified/--allow-identified",
            help="Accept only instances with Patient Identity Removed (0012,0062) = YES "
            "(PS3.15 Annex E), or any instance.",
        ),
    ] = None,
    hub_default: Annotated[
        bool,
        typer.Option(
            "--hub-default",
            help="Drop the tenant's own setting: follow AIFI_REQUIRE_DEIDENTIFIED (else on "
            "outside development mode).",
        ),
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a tenant's settings."""
    from aifi.hub.auth.tenants import validate_tenant_id
    from aifi.hub.persistence.tables import Tenant

    if require_deidentified is None and not hub_default:
        raise _fail("say --require-deidentified, --allow-identified or --hub-default")
    if require_deidentified is not None and hub_default:
        raise _fail("--hub-default drops the tenant's own setting: give it alone")
    try:
        validate_tenant_id(tenant)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    db, settings = open_database(data_dir, database_url)
    try:
        with db.write() as session:
            row = session.get(Tenant, tenant)
            if row is None:
                row = Tenant(id=tenant, name=tenant)
            row.require_deidentified = require_deidentified
            session.add(row)
        accepts = _describe(require_deidentified, settings.deidentified_by_default)
        typer.echo(f"{tenant}: {accepts}")
    finally:
        db.dispose()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)
