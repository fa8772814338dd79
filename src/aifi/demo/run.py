"""``aifi demo``: the two-tier chain on one machine, on the embedded default, with no set-up.

What runs (each as its production counterpart would, on loopback ports):

- the **central hub** (SQLite + a local folder) with authentication on — the built-in
  OAuth2 server, not development mode, whatever ``AIFI_AUTH``/``AIFI_DEV_MODE`` say — and
  its tenant requiring de-identified instances (``require_deidentified``, the production
  posture: STOW-RS refuses an instance without Patient Identity Removed YES, C411). The
  demo registers its own clients (:mod:`aifi.hub.admin.local_clients`: the hospital, an
  administrator, one performer per product) with their credentials files in
  ``<data>/demo/credentials``;
- **Orthanc** as the hospital's PACS when it is installed (else the gateway keeps the
  re-identified results in its own store, and the demo says so);
- the hospital's **gateway**, ``aifi gateway serve`` as its own process with the hospital
  client's credentials and ``--pacs`` Orthanc's DICOMweb root, its data in
  ``<data>/demo/gateway``;
- the three reference **AI products**, each as its own process.

Part 1, the hub's DICOMweb services with the guard on: a generated CT study is
pseudonymised in the demo process with the gateway's own
:class:`aifi.gateway.deid.Pseudonymiser` (a throw-away key), stored with STOW-RS, found with
QIDO-RS, retrieved with WADO-RS (every instance byte-identical to what was sent) and
rendered; one identified instance sent directly is refused. The DICOMweb client side is
the independent ``dicomweb-client`` library, so this is also a smoke test of
interoperability.

Part 2, the two-tier AI chain (:mod:`aifi.demo.chain`): a modality sends the pilot studies
to the gateway with C-STORE, the gateway forwards them pseudonymised, the products work,
the results come back re-identified into the PACS; then the three views of one study
(:mod:`aifi.demo.views`) and each result. "demo OK" only when every expected result is in
the PACS (or the gateway's store), re-identified.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aifi import dicom_json
from aifi.conformance.synthetic import Patient, ct_study
from aifi.demo.chain import EXPECTED_PRODUCTS, ChainResult, run_chain
from aifi.demo.peers import (
    PRODUCT_PROCESSES,
    gateway_process,
    pacs_peer,
    product_codes,
    product_processes,
    running_hub,
)
from aifi.demo.views import ThreeViews, report_chain, report_three_views, three_views
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.gateway.deid import Profile, Pseudonymiser
from aifi.hub.admin.local_clients import register_local_clients
from aifi.hub.serve import free_port
from aifi.hub.settings import Settings
from aifi.hub.store.deidentified import (
    PATIENT_IDENTITY_NOT_REMOVED,
    PATIENT_IDENTITY_NOT_REMOVED_REASON,
)
from aifi.oauth_client import ClientCredentials
from aifi.vendors.transport import stow_request

DEMO_CLIENTS = "aifi demo"
"""Description of the clients the demo registers (those of an earlier run are revoked)."""
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"


@dataclass
class DemoResult:
    base_url: str
    study_instance_uid: str
    """Part 1's study as the hub knows it (pseudonymised)."""
    stored: int
    megabytes: float
    stow_seconds: float
    qido_ms: float
    wado_seconds: float
    identical: int
    thumbnail: Path | None
    guard: str = "-"
    """What the hub answered an identified instance (refused: C411)."""
    guard_refused: bool = False
    chain: ChainResult = field(default_factory=ChainResult)
    views: ThreeViews = field(default_factory=lambda: ThreeViews(case="-"))
    auth: str = "builtin"
    anonymous_status: int | None = None
    """What the hub answered a QIDO-RS request without a token (401 expected)."""
    credentials: Path | None = None
    """The folder of the demo clients' credentials files."""
    gateway_dir: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.identical == self.stored
            and self.stored > 0
            and self.guard_refused
            and self.chain.ok
            and self.views.ok
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
    began = time.monotonic()
    console.print(
        f"[bold]aifi-hub demo[/bold] — data folder [cyan]{settings.data_dir.resolve()}"
        f"[/cyan], database [cyan]{settings.resolved_database_url}[/cyan]"
    )
    # Production posture whatever the environment says (module docstring): authentication
    # on, and the hub's tenant accepting only de-identified instances.
    settings = settings.model_copy(
        update={"auth": "builtin", "dev_mode": False, "require_deidentified": None}
    )
    with ExitStack() as stack:
        workdir = (settings.data_dir / "demo").resolve()  # Orthanc needs absolute paths
        workdir.mkdir(parents=True, exist_ok=True)
        pacs = stack.enter_context(pacs_peer(workdir, console))
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
            f"[cyan]{workdir / 'credentials'}[/cyan] (hospital, admin, one per product); "
            "the hub's tenant accepts de-identified instances only"
        )
        # The gateway and the products start up (imports, subscriptions) while part 1 runs.
        gateway = stack.enter_context(
            gateway_process(
                workdir / "gateway",
                base_url,
                clients.hospital,
                workdir / "logs" / "gateway.log",
                pacs=pacs.dicomweb_url if pacs is not None else None,
            )
        )
        products = stack.enter_context(
            product_processes(dicomweb, workdir / "logs", clients.performers)
        )
        hospital = clients.hospital_auth()
        http = stack.enter_context(httpx.Client(timeout=120, auth=hospital))
        result = _part_one(http, dicomweb, hospital, settings, slices, series, batch, console)
        result.credentials = workdir / "credentials"
        result.anonymous_status = _anonymous_status(dicomweb, result.study_instance_uid)
        result.gateway_dir = gateway.data_dir
        gateway.wait_ready()
        console.print(
            f"Gateway: [cyan]aifi gateway serve[/cyan] at {gateway.url}, DIMSE "
            f"{gateway.ae_title} on port {gateway.dimse_port}, data in {gateway.data_dir}, "
            f"results to {pacs.dicomweb_url if pacs is not None else 'its own store'}"
        )
        products.wait_ready()
        console.print("AI products performing: " + ", ".join(PRODUCT_PROCESSES))
        result.chain = run_chain(base_url, gateway, pacs, clients, workdir, console.print)
        with httpx.Client(timeout=60) as orthanc:
            result.views = three_views(http, base_url, orthanc, result.chain)
        result.seconds = time.monotonic() - began
        _report(console, result, dicomweb, gateway.url)
        if keep_serving:
            console.print("Serving until Ctrl-C …")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result


def _part_one(
    http: httpx.Client,
    dicomweb: str,
    hospital: ClientCredentials,
    settings: Settings,
    slices: int,
    series: int,
    batch: int,
    console: Console,
) -> DemoResult:
    """STOW-RS, QIDO-RS, WADO-RS and rendering of a generated CT, pseudonymised first with
    the gateway's Pseudonymiser (a throw-away key); and the guard refusing an identified
    instance."""
    session = requests.Session()
    session.auth = _BearerAuth(hospital)
    client = DICOMwebClient(url=dicomweb, session=session)
    patient = Patient(name="Demo^Anna", patient_id=f"AIFI-DEMO-{int(time.time())}")
    originals = list(ct_study(slices, series=series, patient=patient))
    guard, refused = _guard(http, dicomweb, originals[0])
    pseudonymiser = Pseudonymiser(Profile(), os.urandom(32))
    files = [pseudonymiser.pseudonymise_file(data)[0] for data in originals]
    console.print(
        f"Part 1: a generated CT of {patient.name} ({patient.patient_id}), pseudonymised in "
        "the demo with the gateway's Pseudonymiser (PS3.15 Annex E, a throw-away key), "
        "then stored at the hub with dicomweb-client"
    )
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
    found = client.search_for_studies(search_filters={"PatientID": str(datasets[0].PatientID)})
    qido_ms = (time.perf_counter() - start) * 1000
    summary = found[0] if found else {}

    start = time.perf_counter()
    response = http.get(
        f"{dicomweb}/studies/{study_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
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
    finally:
        session.close()
    result = DemoResult(
        dicomweb.removesuffix("/dicomweb"),
        study_uid,
        len(datasets),
        megabytes,
        stow_seconds,
        qido_ms,
        wado_seconds,
        identical,
        thumbnail,
        guard=guard,
        guard_refused=refused,
    )
    _part_one_report(console, result, summary, patient)
    return result


def _guard(http: httpx.Client, dicomweb: str, identified: bytes) -> tuple[str, bool]:
    """STOW-RS of one identified instance: the hub's tenant refuses it (Failure Reason
    C411, PS3.18 §10.5.3). Returns what it said, and whether it refused."""
    body, headers = stow_request([dcmread(io.BytesIO(identified))])
    response = http.post(dicomweb + "/studies", content=body, headers=headers)
    reasons: list[int] = []
    if response.content and "json" in response.headers.get("content-type", ""):
        answer = response.json()
        for item in dicom_json.items(answer, _FAILED_SOP_SEQUENCE):
            reasons += dicom_json.values(item, _FAILURE_REASON)
    shown = ", ".join(f"{r:04X}" for r in reasons) or "none"
    if PATIENT_IDENTITY_NOT_REMOVED in reasons:
        why = PATIENT_IDENTITY_NOT_REMOVED_REASON
        return f"refused — HTTP {response.status_code}, Failure Reason {shown}: {why}", True
    return f"NOT refused — HTTP {response.status_code}, Failure Reason {shown}", False


def _anonymous_status(dicomweb: str, study_uid: str) -> int:
    """The hub's answer to a QIDO-RS search sent without a token (RFC 6750 §3: 401)."""
    with httpx.Client(timeout=30) as anonymous:
        response = anonymous.get(f"{dicomweb}/studies", params={"StudyInstanceUID": study_uid})
    return response.status_code


def _value(obj: Mapping[str, object], tag: str) -> str:
    values = dicom_json.values(obj, tag)
    shown = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
    return "\\".join(shown) or "-"


def _part_one_report(
    console: Console, r: DemoResult, study: Mapping[str, object], patient: Patient
) -> None:
    table = Table(title="Part 1: the hub's DICOMweb services (guard on)", show_header=True)
    table.add_column("step")
    table.add_column("result")
    table.add_row(
        "guard",
        f"an identified instance ({patient.name}) sent straight to the hub: {r.guard}",
    )
    table.add_row(
        "STOW-RS",
        f"{r.stored} pseudonymised instances, {r.megabytes:.1f} MB in "
        f"{r.stow_seconds:.2f} s ({r.megabytes / max(r.stow_seconds, 1e-9):.0f} MB/s)",
    )
    table.add_row(
        "QIDO-RS",
        f"found the study of {_value(study, '00100010')} (the pseudonym; "
        f"{_value(study, '00080061')}, {_value(study, '00201208')} instances) "
        f"in {r.qido_ms:.0f} ms",
    )
    table.add_row(
        "WADO-RS",
        f"{r.identical}/{r.stored} instances byte-identical, "
        f"{r.wado_seconds:.2f} s ({r.megabytes / max(r.wado_seconds, 1e-9):.0f} MB/s)",
    )
    table.add_row("rendered", str(r.thumbnail) if r.thumbnail else "not available")
    console.print(table)


def _report(console: Console, r: DemoResult, dicomweb: str, gateway_url: str) -> None:
    console.print(
        f"OAuth2: every request with a token (auth={r.auth}); without one: "
        f"HTTP {r.anonymous_status}"
    )
    report_three_views(console, r.views)
    report_chain(console, r.chain, r.base_url, gateway_url)
    console.print("[bold]Where to look[/bold]")
    console.print(f"  part 1 study: {dicomweb}/studies?StudyInstanceUID={r.study_instance_uid}")
    console.print(f"  worklist:     {dicomweb}/workitems")
    console.print(f"  API docs:     {r.base_url}/docs (while `aifi serve` runs)")
    if r.credentials is not None:
        console.print(
            f"  tokens:       {r.base_url}/oauth/token with a credentials file from "
            f"{r.credentials} (aifi clients list --data-dir …)"
        )
    console.print(
        f"  run it again: aifi serve, register a hospital client (aifi clients add), then "
        f"aifi gateway serve --hub {r.base_url} --credentials FILE --pacs …"
    )
    console.print(f"Demo took {r.seconds:.0f} s.")
    if r.ok:
        console.print("[green]demo OK[/green]")
        return
    missing = []
    if r.identical != r.stored or not r.stored:
        missing.append(f"part 1: {r.identical}/{r.stored} instances byte-identical")
    if not r.guard_refused:
        missing.append(f"the hub did not refuse an identified instance ({r.guard})")
    if r.anonymous_status != 401:
        missing.append(f"a request without a token got HTTP {r.anonymous_status}")
    missing += r.chain.problems
    for c in r.chain.cases:
        if not c.reidentified:
            missing.append(f"{c.case} / {c.product}: {c.back}")
        elif c.outcome not in ("positive", "negative", "measured"):
            missing.append(f"{c.case} / {c.product}: outcome {c.outcome}")
        elif c.fhir != "Task completed, report final":
            missing.append(f"{c.case} / {c.product}: {c.fhir}")
    products = {c.product for c in r.chain.cases}
    missing += [f"no result of {p}" for p in sorted(EXPECTED_PRODUCTS - products)]
    if not r.views.ok:
        missing.append(
            f"three views: identity at the hub {r.views.identity_at_hub or 'none'}, "
            f"found by original ID {r.views.found_by_original_id}, marked "
            f"{r.views.hub_marked}, back original {r.views.back_original}"
        )
    console.print("[red]demo FAILED[/red]: " + "; ".join(missing or ["see above"]))


__all__ = ["DemoResult", "run_demo"]
