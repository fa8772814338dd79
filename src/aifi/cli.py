"""The ``aifi`` command-line tool.

Verbs: ``serve`` (run the hub), ``demo`` (the whole chain on the embedded default),
``bench`` (benchmarks against a peer). Every verb has ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import aifi

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

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for the embedded database and DICOM files "
        "(env AIFI_DATA_DIR; default ./aifi-data).",
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
    workers: Annotated[
        int, typer.Option(help="Worker processes (needs PostgreSQL for >1 to scale writes).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the hub: DICOMweb under /dicomweb, OpenAPI docs at /docs."""
    from aifi.hub.serve import build_settings, run_server

    settings = build_settings(data_dir=data_dir, database_url=database_url)
    typer.echo(
        f"aifi-hub {aifi.__version__}: data in {settings.data_dir.resolve()}, "
        f"DICOMweb at http://{host}:{port}/dicomweb, docs at http://{host}:{port}/docs"
    )
    run_server(settings, host=host, port=port, workers=workers, log_level=log_level)


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
    """Run the whole chain on the embedded default: store, find and retrieve a study."""
    from aifi.hub.demo import run_demo
    from aifi.hub.serve import build_settings

    settings = build_settings(data_dir=data_dir, database_url=database_url)
    result = run_demo(settings, port=port, slices=slices, series=series, keep_serving=serve)
    raise typer.Exit(0 if result.ok else 1)


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
    from aifi.hub.bench import BenchConfig, report, run, to_json

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


def main() -> None:  # pragma: no cover - console entry point
    app()
