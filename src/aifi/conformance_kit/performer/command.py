"""``aifi conformance performer``: an AI product as an IHE AIW-I Task Performer against the
kit's own private hub (see :mod:`aifi.conformance_kit.performer`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from aifi.conformance_kit.finish import EXIT_UNUSABLE, finish
from aifi.conformance_kit.performer.kit_hub import KitError, kit_hub
from aifi.conformance_kit.performer.product import Launch, running_product, substitutions
from aifi.conformance_kit.performer.scenarios import PerformerRun, scenarios_for
from aifi.conformance_kit.report import Kind, Report


def performer(
    product: Annotated[
        str, typer.Option("--product", help="The product code (Scheduled Workitem Code value).")
    ],
    report_dir: Annotated[
        Path, typer.Option("--report", help="Folder for report.json, report.html, junit.xml.")
    ],
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="The product's start command, run by the shell; {hub}, {dicomweb} and "
            "{credentials} are replaced by the kit hub's base URL, DICOMweb root and the "
            "performer's credentials file (also in AIFI_HUB, AIFI_DICOMWEB, "
            'AIFI_CREDENTIALS). E.g. "aifi vendors run skeletal-age --hub {dicomweb} '
            '--credentials {credentials}".',
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Print the hub's addresses and credentials and wait for the product, "
            "started by hand, to connect.",
        ),
    ] = False,
    push_url: Annotated[
        str | None,
        typer.Option(
            "--push-url",
            help="Test a push-mode product's endpoint: the kit's push adapter POSTs each "
            "workitem's inputs there (docs/vendor-guide.md, push mode).",
        ),
    ] = None,
    cases: Annotated[
        str | None,
        typer.Option(
            "--cases",
            help="Comma-separated case ids or scenarios (main, negative, cancel, priority, "
            "not-for-product) to run; default all.",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="Routing rules naming the product (default: the packaged rules).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=5.0, help="Seconds the product may take per workitem."),
    ] = 120.0,
    connect_timeout: Annotated[
        float | None,
        typer.Option(
            "--connect-timeout",
            help="Seconds to wait for the product's first request (default 60, 600 with --wait).",
        ),
    ] = None,
) -> None:
    """Test an AI product as an IHE AIW-I Task Performer (see docs/conformance-kit.md)."""
    modes = [m for m, on in (("run", run), ("wait", wait), ("push", push_url)) if on]
    if len(modes) != 1:
        typer.echo("error: give exactly one of --run, --wait or --push-url", err=True)
        raise typer.Exit(EXIT_UNUSABLE)
    try:
        chosen = scenarios_for([c.strip() for c in cases.split(",")] if cases else None)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    launch = Launch(modes[0], command=run, push_url=push_url)
    report_dir.mkdir(parents=True, exist_ok=True)
    target: dict[str, object] = {"product": product, "mode": launch.mode}
    if run:
        target["command"] = run
    if push_url:
        target["push_url"] = push_url
    target["rules"] = str(rules) if rules else "packaged default rules"
    target["scenarios"] = ", ".join(chosen)
    report = Report(kind=Kind.PERFORMER, target=target)
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="aifi-kit-") as folder,
            kit_hub(Path(folder), product, rules) as hub,
        ):
            norm = hub.rules.product(product).norm_turnaround_minutes * 60.0
            target["norm_turnaround_seconds"] = norm
            values = substitutions(hub, product)
            typer.echo(f"kit hub: {values['hub']} (DICOMweb {values['dicomweb']})")
            if wait:
                typer.echo(f"credentials: {values['credentials']}")
                typer.echo("start the product with these values; waiting for it to connect")
            with running_product(launch, hub, product, report_dir) as running:
                PerformerRun(
                    report,
                    hub,
                    product,
                    running,
                    timeout=timeout,
                    connect_timeout=connect_timeout or (600.0 if wait else 60.0),
                    norm_seconds=norm,
                    push=launch.mode == "push",
                    say=typer.echo,
                ).run(chosen)
    except KitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    target["kit_seconds"] = round(time.monotonic() - started, 1)
    raise typer.Exit(finish(report, report_dir))
