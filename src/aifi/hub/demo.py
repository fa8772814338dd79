"""``aifi demo``: the whole chain on the embedded default, with no set-up.

Start the hub (SQLite + a local folder) and, when Orthanc is installed, an Orthanc as the
PACS; generate a synthetic CT study, store it with STOW-RS (progress bar), find it with
QIDO-RS, retrieve it with WADO-RS and check every instance came back byte-identical, render
a thumbnail; then the AI chain of :mod:`aifi.hub.demo_chain` (IHE AIW-I + AIR: three
reference products as their own processes, validated results, review, delivery to the
PACS). Print what happened and where to look. The DICOMweb client side of the first part is
the independent ``dicomweb-client`` library, so the demo is also a smoke test of
interoperability.

Authentication is on, as in production (issue 6 "safe by default"): the demo's hub runs with
the built-in authorization server (``auth=builtin``, not development mode, whatever
``AIFI_AUTH``/``AIFI_DEV_MODE`` say) and the demo registers its own OAuth2 clients
(:mod:`aifi.hub.local_clients`: a hospital client, an admin client, one performer client per
reference product) with their credentials files in ``<data>/demo/credentials``; every
request it makes carries a token (SMART Backend Services), and it shows that a request
without one is refused (401).
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
import requests
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
    product_codes,
    product_processes,
    report_chain,
    run_chain,
)
from aifi.hub.local_clients import register_local_clients
from aifi.hub.serve import free_port
from aifi.hub.settings import Settings
from aifi.oauth_client import ClientCredentials

DEMO_CLIENTS = "aifi demo"
"""Description of the clients the demo registers (those of an earlier run are revoked)."""


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
    auth: str = "builtin"
    anonymous_status: int | None = None
    """What the hub answered a QIDO-RS request without a token (401 expected)."""
    credentials: Path | None = None
    """The folder of the demo clients' credentials files."""

    @property
    def ok(self) -> bool:
        return (
            self.identical == self.stored
            and self.stored > 0
            and self.chain.ok
            and self.anonymous_status == 401
        )


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer`` for dicomweb-client's ``requests`` session, from the
    same token source as the demo's httpx clients (renewed before it expires)."""

    def __init__(self, auth: ClientCredentials) -> None:
        self.auth = auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self.auth.headers())
        return request


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
    # Authentication on, as in production, whatever the environment says (module docstring).
    # For now the demo STOWs identified generated studies straight into the hub, so its
    # tenant allows identified data; the two-tier demo (modality -> gateway -> hub, issue 15)
    # replaces this and keeps the hub's default (de-identified instances only).
    settings = settings.model_copy(
        update={"auth": "builtin", "dev_mode": False, "require_deidentified": False}
    )
    with ExitStack() as stack:
        workdir = (settings.data_dir / "demo").resolve()  # Orthanc needs absolute paths
        workdir.mkdir(parents=True, exist_ok=True)
        peer = stack.enter_context(pacs_destination(workdir, console))
        if peer is not None:
            settings = settings.model_copy(
                update={"destinations_file": workdir / "destinations.yaml"}
            )
        port = port or free_port()  # the clients' token URL names it before the hub starts
        clients = register_local_clients(
            settings,
            f"http://{host}:{port}",
            workdir / "credentials",
            products=product_codes(),
            label=DEMO_CLIENTS,
        )
        base_url = stack.enter_context(running_hub(settings, host, port))
        dicomweb = base_url + "/dicomweb"
        console.print(f"Hub running at [cyan]{base_url}[/cyan] (DICOMweb at {dicomweb})")
        console.print(
            f"Authentication: built-in OAuth2 server; demo clients' credentials in "
            f"[cyan]{workdir / 'credentials'}[/cyan] (hospital, admin, one per product)"
        )
        hospital = clients.hospital_auth()
        session = requests.Session()
        session.auth = _BearerAuth(hospital)
        stack.callback(session.close)
        client = DICOMwebClient(url=dicomweb, session=session)
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
        with httpx.Client(timeout=120, auth=hospital) as http:
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
            auth=settings.auth,
            anonymous_status=_anonymous_status(dicomweb, study_uid),
            credentials=workdir / "credentials",
        )
        console.print("AI chain: starting the reference products " + ", ".join(PRODUCT_PROCESSES))
        with product_processes(dicomweb, workdir / "logs", clients.performers):
            result.chain = run_chain(base_url, console, peer, clients)
        _report(console, result, summary, dicomweb)
        if keep_serving:
            console.print("Serving until Ctrl-C …")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result


def _anonymous_status(dicomweb: str, study_uid: str) -> int:
    """The hub's answer to a QIDO-RS search sent without a token (RFC 6750 §3: 401)."""
    with httpx.Client(timeout=30) as anonymous:
        response = anonymous.get(f"{dicomweb}/studies", params={"StudyInstanceUID": study_uid})
    return response.status_code


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
    table.add_row(
        "OAuth2",
        f"every request with a token (auth={r.auth}); without one: HTTP {r.anonymous_status}",
    )
    console.print(table)
    report_chain(console, r.chain, r.base_url)
    console.print("[bold]Where to look[/bold]")
    console.print(f"  study (QIDO): {dicomweb}/studies?StudyInstanceUID={r.study_instance_uid}")
    console.print(f"  metadata:     {dicomweb}/studies/{r.study_instance_uid}/metadata")
    console.print(f"  worklist:     {dicomweb}/workitems")
    console.print(f"  API docs:     {r.base_url}/docs (while `aifi serve` runs)")
    if r.credentials is not None:
        console.print(
            f"  tokens:       {r.base_url}/oauth/token with a credentials file from "
            f"{r.credentials} (aifi clients list --data-dir …)"
        )
    console.print(
        f"  run it again: aifi serve, register a client (aifi clients add), then point any "
        f"DICOMweb viewer or client with its token at {dicomweb}"
    )
    console.print("[green]demo OK[/green]" if r.ok else "[red]demo FAILED[/red]")
