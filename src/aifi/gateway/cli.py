"""``aifi gateway …``: run the hospital gateway (``serve``) and look at it (``status``).

Every ``serve`` option is also an environment variable ``AIFI_GATEWAY_<NAME>`` (an option
given on the command line wins); development mode is ``AIFI_DEV_MODE``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from aifi.gateway.auth.cli import clients_app

gateway_app = typer.Typer(
    help="The hospital gateway: DICOM in (C-STORE, STOW-RS), pseudonymised to the hub, "
    "re-identified results back into the PACS.",
    no_args_is_help=True,
)

gateway_app.add_typer(clients_app, name="clients")


@gateway_app.command()
def serve(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for gateway.db, instances/, results/, pseudonym.key."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address of STOW-RS and the status page.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    dimse_port: Annotated[int | None, typer.Option(help="DIMSE SCP port.")] = None,
    ae_title: Annotated[str | None, typer.Option(help="The gateway's AE title.")] = None,
    hub: Annotated[
        str | None, typer.Option(help="The hub's base URL (its /dicomweb, /api/v1, /fhir).")
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="Hospital client credentials file (aifi clients add --write-credentials)."
        ),
    ] = None,
    pacs: Annotated[
        str | None,
        typer.Option(help="The PACS: http(s)://host/dicom-web or dimse://AE@host:port."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML: allowed peers, several PACS, pseudonymisation profile, retention.",
        ),
    ] = None,
) -> None:
    """Run the gateway: DIMSE SCP (C-ECHO, C-STORE) on --dimse-port, STOW-RS at
    /dicomweb/studies, /healthz and /api/v1/gateway/status on --port; forwarding to the hub,
    results back into the PACS."""
    from pydantic import ValidationError

    from aifi.gateway.config import ConfigError
    from aifi.gateway.serve import prepare, run
    from aifi.gateway.settings import GatewayNotStartable, GatewaySettings

    given: dict[str, Any] = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "dimse_port": dimse_port,
        "ae_title": ae_title,
        "hub": hub,
        "credentials": credentials,
        "pacs": pacs,
        "config_file": config,
    }
    try:
        settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
        gateway = prepare(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        typer.echo(f"aifi gateway serve: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from exc
    except (GatewayNotStartable, ConfigError) as exc:
        typer.echo(f"aifi gateway serve: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    mode = " (development mode, no hub credentials)" if settings.credentials is None else ""
    typer.echo(
        f"aifi gateway: data in {settings.data_dir.resolve()}, DIMSE {settings.ae_title} on "
        f"{settings.host}:{settings.dimse_port}, STOW-RS at "
        f"http://{settings.host}:{settings.port}/dicomweb, hub {settings.hub}{mode}"
    )
    run(gateway)


@gateway_app.command()
def status(
    url: Annotated[
        str,
        typer.Option(envvar="AIFI_GATEWAY_URL", help="The gateway's HTTP base URL."),
    ] = "http://127.0.0.1:8100",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON as served.")] = False,
) -> None:
    """The gateway's queues per state, studies' completion, quarantined instances, last
    errors and per-study progress (GET /api/v1/gateway/status)."""
    from aifi.gateway.api.status import render_status

    try:
        response = httpx.get(url.rstrip("/") + "/api/v1/gateway/status", timeout=30)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        typer.echo(f"aifi gateway status: {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    data = response.json()
    typer.echo(json.dumps(data, indent=2) if as_json else render_status(data))
