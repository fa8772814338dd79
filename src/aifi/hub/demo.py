"""``aifi demo``: the whole chain on the embedded default, with no set-up.

Start the hub (SQLite + a local folder) and, when Orthanc is installed, an Orthanc as the
PACS; generate a synthetic CT study, store it with STOW-RS (progress bar), find it with
QIDO-RS, retrieve it with WADO-RS and check every instance came back byte-identical, render
a thumbnail; then the AI chain of :mod:`aifi.hub.demo_chain` (IHE AIW-I + AIR: three
reference products as their own processes, validated results, review, delivery to the
PACS). Print what happened and where to look. The DICOMweb client side of the first part is
the independent ``dicomweb-client`` library, so the demo is also a smoke test of
interoperability.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aifi.conformance.synthetic import Patient, ct_study
from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.hub.app import create_app
from aifi.hub.demo_chain import (
    PRODUCT_PROCESSES,
    ChainResult,
    pacs_destination,
    product_processes,
    report_chain,
    run_chain,
)
from aifi.hub.settings import Settings


@dataclass
class DemoResult:
    base_url: str
    study_instance_uid: str
    stored: int
    megabytes: float
    stow_seconds: float
    qido_ms: float
    wado_seconds: float
    identical: int
    thumbnail: Path | None
    notes: list[str] = field(default_factory=list)
    chain: ChainResult = field(default_factory=ChainResult)

    @property
    def ok(self) -> bool:
        return self.identical == self.stored and self.stored > 0 and self.chain.ok


@contextmanager
def running_hub(settings: Settings, host: str, port: int) -> Iterator[str]:
    """The hub under a real uvicorn server in a background thread; yields its base URL."""
    configure_pydicom()
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="aifi-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the hub did not start on {host}:{port}")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        app.state.db.dispose()


def run_demo(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    slices: int = 24,
    series: int = 2,
    batch: int = 4,
    console: Console | None = None,
    keep_serving: bool = False,
) -> DemoResult:
    console = console or Console()
    console.print(
        f"[bold]aifi-hub demo[/bold] — data folder [cyan]{settings.data_dir.resolve()}"
        f"[/cyan], database [cyan]{settings.resolved_database_url}[/cyan]"
    )
    with ExitStack() as stack:
        workdir = (settings.data_dir / "demo").resolve()  # Orthanc needs absolute paths
        workdir.mkdir(parents=True, exist_ok=True)
        peer = stack.enter_context(pacs_destination(workdir, console))
        if peer is not None:
            settings = settings.model_copy(
                update={"destinations_file": workdir / "destinations.yaml"}
            )
        base_url = stack.enter_context(running_hub(settings, host, port))
        dicomweb = base_url + "/dicomweb"
        console.print(f"Hub running at [cyan]{base_url}[/cyan] (DICOMweb at {dicomweb})")
        client = DICOMwebClient(url=dicomweb)
        patient = Patient(name="Demo^Anna", patient_id=f"AIFI-DEMO-{int(time.time())}")
        files = list(ct_study(slices, series=series, patient=patient))
        datasets = [dcmread(io.BytesIO(data)) for data in files]
        study_uid = str(datasets[0].StudyInstanceUID)
        digests = {
            str(ds.SOPInstanceUID): hashlib.sha256(f).hexdigest()
            for ds, f in zip(datasets, files, strict=True)
        }
        megabytes = sum(len(f) for f in files) / 1e6

        start = time.perf_counter()
        with Progress(
            TextColumn("STOW-RS"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} instances"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("store", total=len(datasets))
            for i in range(0, len(datasets), batch):
                client.store_instances(datasets[i : i + batch], study_instance_uid=study_uid)
                bar.advance(task, len(datasets[i : i + batch]))
        stow_seconds = time.perf_counter() - start

        start = time.perf_counter()
        found = client.search_for_studies(search_filters={"PatientID": patient.patient_id})
        qido_ms = (time.perf_counter() - start) * 1000
        summary = found[0] if found else {}

        start = time.perf_counter()
        with httpx.Client(timeout=120) as http:
            response = http.get(
                f"{dicomweb}/studies/{study_uid}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            )
            response.raise_for_status()
            boundary = parse_media_type(response.headers["content-type"]).params["boundary"]
            parts = [body for _headers, body in read_parts(response.content, boundary)]
        wado_seconds = time.perf_counter() - start
        identical = 0
        for part in parts:
            sop = str(dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
            identical += digests.get(sop) == hashlib.sha256(part).hexdigest()

        thumbnail: Path | None = None
        try:
            first = datasets[len(datasets) // 2]
            image = client.retrieve_instance_rendered(
                study_uid,
                str(first.SeriesInstanceUID),
                str(first.SOPInstanceUID),
                media_types=("image/png",),
            )
            thumbnail = settings.data_dir / "demo-rendered.png"
            thumbnail.write_bytes(image)
        except Exception as exc:  # the demo reports what did not work and goes on
            console.print(f"[yellow]rendering failed: {exc}[/yellow]")

        result = DemoResult(
            base_url,
            study_uid,
            len(datasets),
            megabytes,
            stow_seconds,
            qido_ms,
            wado_seconds,
            identical,
            thumbnail,
        )
        console.print("AI chain: starting the reference products " + ", ".join(PRODUCT_PROCESSES))
        with product_processes(dicomweb, workdir / "logs"):
            result.chain = run_chain(base_url, console, peer)
        _report(console, result, summary, dicomweb)
        if keep_serving:
            console.print("Serving until Ctrl-C …")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result


def _value(obj: Mapping[str, object], tag: str) -> str:
    attr = obj.get(tag)
    if not isinstance(attr, dict):
        return "-"
    values = attr.get("Value") or []
    if not isinstance(values, list):
        return "-"
    shown = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
    return "\\".join(shown) or "-"


def _report(console: Console, r: DemoResult, study: Mapping[str, object], dicomweb: str) -> None:
    table = Table(title="What happened", show_header=True)
    table.add_column("step")
    table.add_column("result")
    table.add_row(
        "STOW-RS",
        f"{r.stored} instances, {r.megabytes:.1f} MB in "
        f"{r.stow_seconds:.2f} s ({r.megabytes / max(r.stow_seconds, 1e-9):.0f} MB/s)",
    )
    table.add_row(
        "QIDO-RS",
        f"found study of {_value(study, '00100010')} "
        f"({_value(study, '00080061')}, {_value(study, '00201208')} instances) "
        f"in {r.qido_ms:.0f} ms",
    )
    table.add_row(
        "WADO-RS",
        f"{r.identical}/{r.stored} instances byte-identical, "
        f"{r.wado_seconds:.2f} s ({r.megabytes / max(r.wado_seconds, 1e-9):.0f} MB/s)",
    )
    table.add_row("rendered", str(r.thumbnail) if r.thumbnail else "not available")
    console.print(table)
    report_chain(console, r.chain, r.base_url)
    console.print("[bold]Where to look[/bold]")
    console.print(f"  study (QIDO): {dicomweb}/studies?StudyInstanceUID={r.study_instance_uid}")
    console.print(f"  metadata:     {dicomweb}/studies/{r.study_instance_uid}/metadata")
    console.print(f"  worklist:     {dicomweb}/workitems")
    console.print(f"  API docs:     {r.base_url}/docs (while `aifi serve` runs)")
    console.print(
        f"  run it again: aifi serve, then point any DICOMweb viewer or client at {dicomweb}"
    )
    console.print("[green]demo OK[/green]" if r.ok else "[red]demo FAILED[/red]")
