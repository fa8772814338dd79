"""The ``aifi`` command-line tool.

Verbs: ``serve`` (run the hub), ``demo`` (the whole chain on the embedded default),
``bench`` (benchmarks against a peer), ``clients`` (OAuth2 clients). Every verb has ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import aifi
from aifi.conformance_kit.cli import conformance_app
from aifi.gateway.cli import gateway_app
from aifi.hub.admin.clients_cli import clients_app
from aifi.hub.admin.tenants_cli import tenants_app
from aifi.vendors.cli import products_app, vendors_app

app = typer.Typer(
    name="aifi",
    help="aifi-hub: standards-based integration hub for radiology AI.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks, run against a peer on the same machine.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
rules_app = typer.Typer(
    help="AIW-I routing rules: which AI products a study goes to, and why.",
    no_args_is_help=True,
)
app.add_typer(rules_app, name="rules")
app.add_typer(vendors_app, name="performer")
app.add_typer(products_app, name="vendors")
app.add_typer(clients_app, name="clients")
app.add_typer(gateway_app, name="gateway")
app.add_typer(tenants_app, name="tenants")
app.add_typer(conformance_app, name="conformance")

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for the embedded database and DICOM files "
        "(env AIFI_DATA_DIR; default ./aifi-data).",
    ),
]
RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="Routing rules YAML (env AIFI_RULES_FILE; default: the shipped rules with "
        "the three pilot products).",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(env AIFI_DATABASE_URL; default SQLite in the data folder).",
    ),
]


@app.command()
def version() -> None:
    """Print the aifi-hub version."""
    typer.echo(aifi.__version__)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    rules: RulesOpt = None,
    destinations: Annotated[
        Path | None,
        typer.Option(
            "--destinations",
            help="PACS destinations YAML: where released AI results are delivered, per "
            "hospital (env AIFI_DESTINATIONS_FILE; default none: results stay in the hub).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes (needs PostgreSQL for >1 to scale writes).")
    ] = 1,
    log_level: Annotated[
        str, typer.Option(help="Log level of uvicorn and of the hub's own aifi.* loggers.")
    ] = "info",
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            "--ssl-certfile",
            help="TLS directly: the server certificate (PEM, with its chain); needs --ssl-keyfile.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            "--ssl-keyfile",
            help="TLS directly: the certificate's private key (PEM).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="Behind a reverse proxy that ends TLS: take the scheme and client address "
            "from X-Forwarded-Proto/-For, from the addresses in --forwarded-allow-ips only.",
        ),
    ] = True,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            "--forwarded-allow-ips",
            envvar="FORWARDED_ALLOW_IPS",
            help="The reverse proxy's addresses or networks (comma-separated) whose "
            "X-Forwarded-* headers are trusted; '*' trusts any.",
        ),
    ] = "127.0.0.1",
) -> None:
    """Run the hub: DICOMweb and the UPS-RS worklist under /dicomweb, the Task Manager
    (study completion, routing, deadlines), AI results (validation, review API, delivery
    to PACS) under /api/v1, FHIR under /fhir, OAuth2 under /oauth, OpenAPI docs at /docs.

    Authentication (AIFI_AUTH): builtin (default; register clients with 'aifi clients
    add'), external (an OpenID Connect provider), or off — only with AIFI_DEV_MODE=true."""
    from aifi.hub.serve import Transport, build_settings, check_startable, run_server
    from aifi.hub.wiring import AuthNotConfigured

    settings = build_settings(
        data_dir=data_dir,
        database_url=database_url,
        rules_file=rules,
        destinations_file=destinations,
    )
    try:
        transport = Transport(ssl_certfile, ssl_keyfile, proxy_headers, forwarded_allow_ips)
        check_startable(settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ssl-certfile/--ssl-keyfile") from exc
    except AuthNotConfigured as exc:
        typer.echo(f"aifi serve: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    scheme = "https" if ssl_certfile else "http"
    mode = "development mode, NO authentication" if settings.auth == "off" else settings.auth
    typer.echo(
        f"aifi-hub {aifi.__version__}: data in {settings.data_dir.resolve()}, "
        f"DICOMweb at {scheme}://{host}:{port}/dicomweb, docs at {scheme}://{host}:{port}/docs, "
        f"auth {mode}"
    )
    run_server(
        settings,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        transport=transport,
    )


@app.command()
def demo(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    port: Annotated[int, typer.Option(help="Port for the demo hub (0: any free port).")] = 0,
    slices: Annotated[int, typer.Option(help="CT slices per series (512x512, ~0.5 MB).")] = 24,
    series: Annotated[int, typer.Option(help="Series in the generated study.")] = 2,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the hub running afterwards.")
    ] = False,
) -> None:
    """Run the whole chain on the embedded default: store, find and retrieve a study, then
    the AI chain. The demo's hub has authentication on (built-in OAuth2 server, whatever
    AIFI_AUTH/AIFI_DEV_MODE say) and the demo registers its own clients."""
    from aifi.demo import run_demo
    from aifi.hub.serve import build_settings

    settings = build_settings(data_dir=data_dir, database_url=database_url)
    result = run_demo(settings, port=port, slices=slices, series=series, keep_serving=serve)
    raise typer.Exit(0 if result.ok else 1)


@rules_app.command("explain")
def rules_explain(
    study_instance_uid: Annotated[str, typer.Argument(help="The study's Study Instance UID.")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    rules: RulesOpt = None,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant (hospital) of the study; default: the default.")
    ] = None,
) -> None:
    """Per AI product: MATCH, or which condition failed and the header values seen."""
    from aifi.errors import NotFound
    from aifi.hub.persistence.database import Database
    from aifi.hub.serve import build_settings
    from aifi.hub.store.repository import SqlDicomStore
    from aifi.ihe_profiles.rules import StudyFacts, evaluate, explain, load_rules

    settings = build_settings(data_dir=data_dir, database_url=database_url, rules_file=rules)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        store = SqlDicomStore(db, settings.dicom_dir, fsync=False)
        who = tenant or settings.default_tenant
        metadata = store.instance_metadata(who, study_instance_uid)
        if not metadata:
            typer.echo(f"No study {study_instance_uid} for tenant {who}", err=True)
            raise typer.Exit(2)
        try:
            decisions = evaluate(
                load_rules(settings.rules_file), who, StudyFacts.from_metadata(metadata)
            )
        except NotFound as exc:
            typer.echo(exc.reason, err=True)
            raise typer.Exit(2) from exc
        typer.echo(explain(decisions))
        store.close()
    finally:
        db.dispose()


@rules_app.command("check")
def rules_check(
    path: Annotated[
        Path | None, typer.Argument(help="Rules YAML to check; default: the shipped rules.")
    ] = None,
) -> None:
    """Validate a rules file and list its products, tenants and quiet periods."""
    from aifi.ihe_profiles.rules import load_rules

    try:
        config = load_rules(path)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    for product in config.products:
        typer.echo(
            f"{product.code:<16} {product.priority:<6} {product.mode:<4} {product.supervision:<10} "
            f"{product.name}"
        )
    for name, codes in config.tenants.items():
        typer.echo(f"tenant {name}: {', '.join(codes)}")
    quiet = ", ".join(f"{k} {v:g} s" for k, v in config.quiet_period_seconds.items())
    typer.echo(f"quiet periods: {quiet}")


@bench_app.command("dicomweb")
def bench_dicomweb(
    ct_per_config: Annotated[int, typer.Option(help="CT instances per STOW configuration.")] = 120,
    dx_per_config: Annotated[int, typer.Option(help="DX (~10 MB) instances per STOW run.")] = 8,
    qido_instances: Annotated[int, typer.Option(help="Instances indexed for QIDO.")] = 100_000,
    qido_repeats: Annotated[int, typer.Option(help="Rounds of the QIDO query mix.")] = 60,
    rss_gigabytes: Annotated[float, typer.Option(help="Size of the one-request study.")] = 1.0,
    orthanc: Annotated[bool, typer.Option(help="Run the same against Orthanc.")] = True,
    hub_workers: Annotated[int, typer.Option(help="aifi serve --workers for the hub.")] = 1,
    workdir: Annotated[Path | None, typer.Option(help="Keep servers' data here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """STOW/QIDO/WADO throughput and latency and peak RSS, against Orthanc in the same run."""
    from aifi.bench.dicomweb import BenchConfig, report, run, to_json

    results = run(
        BenchConfig(
            ct_per_config=ct_per_config,
            dx_per_config=dx_per_config,
            qido_instances=qido_instances,
            qido_repeats=qido_repeats,
            rss_gigabytes=rss_gigabytes,
            with_orthanc=orthanc,
            hub_workers=hub_workers,
            workdir=workdir,
        )
    )
    typer.echo(report(results))
    if json_out:
        json_out.write_text(to_json(results))


@bench_app.command("workflow")
def bench_workflow(
    studies: Annotated[int, typer.Option(help="Studies per routing-latency measurement.")] = 40,
    quiet_seconds: Annotated[
        float, typer.Option(help="DX quiet period during the run (shipped default: 10 s).")
    ] = 1.0,
    workitems: Annotated[int, typer.Option(help="Workitems to claim.")] = 400,
    performers: Annotated[int, typer.Option(help="Concurrent performers claiming.")] = 8,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Run the hub on this database (an empty PostgreSQL database, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1/bench); default SQLite in the workdir.",
        ),
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep the hub's data here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """AIW-I: time from a complete study to a claimable workitem, and claims per second."""
    from aifi.bench.workflow import WorkflowConfig, report, run, to_json

    config = WorkflowConfig(
        studies=studies,
        quiet_seconds=quiet_seconds,
        workitems=workitems,
        performers=performers,
        database_url=database_url,
        workdir=workdir,
    )
    results = run(config)
    if json_out:
        json_out.write_text(to_json(results))
    typer.echo(report(results))


@bench_app.command("turnaround")
def bench_turnaround(
    studies: Annotated[
        int, typer.Option(help="Mixed pilot studies (hand, wrist, chest CT).")
    ] = 100,
    quiet_seconds: Annotated[
        float, typer.Option(help="Quiet period for every modality during the run.")
    ] = 1.0,
    interval: Annotated[
        float, typer.Option(help="Seconds between studies (open-loop arrivals).")
    ] = 1.0,
    performers: Annotated[int, typer.Option(help="Task Performers per reference product.")] = 2,
    database_url: DatabaseOpt = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep the hub's data here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """IHE AIR: hub overhead per AI request (turnaround - quiet period - product compute)."""
    from aifi.bench.turnaround import TurnaroundConfig, report, run, to_json

    config = TurnaroundConfig(
        studies=studies,
        quiet_seconds=quiet_seconds,
        interval_seconds=interval,
        performers_per_product=performers,
        database_url=database_url,
        workdir=workdir,
    )
    results = run(config)
    if json_out:
        json_out.write_text(to_json(results))
    typer.echo(report(results))


@bench_app.command("gateway")
def bench_gateway(
    ct_instances: Annotated[
        int, typer.Option(help="CT instances sent over one association to each SCP.")
    ] = 300,
    big_study_gigabytes: Annotated[
        float, typer.Option(help="Size of the study the gateway's memory is measured with.")
    ] = 1.0,
    hand_studies: Annotated[
        int, typer.Option(help="Hand X-rays for the round trip to the PACS (0: skip).")
    ] = 5,
    rounds: Annotated[
        int,
        typer.Option(min=1, help="Rounds of bare SCP then gateway; the ratio is their median."),
    ] = 3,
    workdir: Annotated[Path | None, typer.Option(help="Keep the servers' data here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """The hospital gateway: C-STORE ingest against a bare pynetdicom SCP and DCMTK's
    storescp, pseudonymisation CPU, memory with a large study, hand X-ray round trip."""
    from aifi.bench.gateway import GatewayBenchConfig, report, run, to_json

    results = run(
        GatewayBenchConfig(
            ct_instances=ct_instances,
            big_study_gigabytes=big_study_gigabytes,
            hand_studies=hand_studies,
            rounds=rounds,
            workdir=workdir,
        )
    )
    if json_out:
        json_out.write_text(to_json(results))
    typer.echo(report(results))


@bench_app.command("gateway-fhir")
def bench_gateway_fhir(
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of every request at both.")] = 200,
    workdir: Annotated[Path | None, typer.Option(help="Keep the servers' data here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """FHIR read and search through the gateway's facade against the same request at the
    hub, in the same run (issue 17 target: p95 within 20 ms)."""
    import json

    from aifi.bench.gateway_fhir import GatewayFhirConfig, report, run, to_json

    results = run(GatewayFhirConfig(rounds=rounds, workdir=workdir))
    if json_out:
        json_out.write_text(json.dumps(to_json(results), indent=2))
    typer.echo(report(results))


@bench_app.command("metrics")
def bench_metrics(
    results: Annotated[int, typer.Option(min=1, help="AI results (and workitems).")] = 10_000,
    rounds: Annotated[int, typer.Option(min=1, help="Scrapes timed.")] = 100,
    database_url: Annotated[
        str | None, typer.Option(help="A PostgreSQL URL; default SQLite in a temporary folder.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """Server time of the hub's GET /metrics with many results stored (issue 19 target:
    p95 under 50 ms with 10,000 results)."""
    import json

    from aifi.bench.metrics import MetricsBenchConfig, report, run, to_json

    outcome = run(MetricsBenchConfig(results=results, rounds=rounds, database_url=database_url))
    if json_out:
        json_out.write_text(json.dumps(to_json(outcome), indent=2))
    typer.echo(report(outcome))


@bench_app.command("conformance")
def bench_conformance(
    product: Annotated[
        list[str] | None, typer.Option("--product", help="Only these product codes.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """The performer kit's own cost beyond the product's time, for each reference product
    (issue 18 targets: a run within 60 s plus the product's time; under 1 s per case)."""
    import json

    from aifi.bench.conformance import report, run, to_json

    runs = run(product)
    if json_out:
        json_out.write_text(json.dumps(to_json(runs), indent=2))
    typer.echo(report(runs))


# --- audit trail (issue 6, aifi.hub.audit) ---
audit_app = typer.Typer(
    help="The audit trail (IHE BALP): export it as DICOM audit messages over syslog (ATNA).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    syslog: Annotated[
        str,
        typer.Option(
            "--syslog",
            help="Audit record repository: udp://host:514, tcp://host:601 or tls://host:6514.",
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's (hospital's) records.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only records from this moment (ISO 8601, e.g. 2026-01-31T00:00:00Z); "
            "a one-off export that neither reads nor moves the export cursor.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Send the audit records not yet sent to URL (resuming from its cursor) as RFC 5424
    syslog messages carrying DICOM PS3.15 A.5 audit messages."""
    from datetime import UTC, datetime

    from aifi.hub.audit.syslog import exporter
    from aifi.hub.persistence.database import Database
    from aifi.hub.serve import build_settings

    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError as exc:
            typer.echo(f"--since {since!r} is not an ISO 8601 date-time", err=True)
            raise typer.Exit(2) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    settings = build_settings(data_dir=data_dir, database_url=database_url)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        with exporter(
            db,
            syslog,
            tenant=tenant,
            since=moment,
            use_cursor=moment is None,
            ca_file=settings.audit_syslog_ca_file,
        ) as sender:
            sent = sender.export_pending()
    except (ValueError, OSError) as exc:
        typer.echo(f"audit export failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(f"{sent} audit record(s) sent to {syslog}")


# --- end audit trail ----------------------------------------------------------------------------


def main() -> None:  # pragma: no cover - console entry point
    app()
