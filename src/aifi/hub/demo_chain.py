"""``aifi demo``, the AI chain: three pilot use cases from PACS to AI product and back.

What runs (IHE AIW-I + AIR, one machine, no set-up):

- a PACS destination: a private Orthanc with its DICOMweb plugin when it is installed
  (the hub delivers results to it with STOW-RS), else the hub's own store;
- the three reference products (:mod:`aifi.vendors.products`, demonstrators computing image
  statistics, not clinical algorithms), each as its own process
  (``aifi vendors run <name> --hub …``) working the hub's UPS-RS worklist;
- generated studies (:mod:`aifi.conformance.pilot_studies`): a child's hand radiograph
  (skeletal age; fracture detection also applies to a hand), a wrist radiograph with a
  fracture, and a contrast chest CT with a pulmonary embolism.

Each study is stored with STOW-RS and signalled complete (``POST /api/v1/studies/{uid}/
complete``, so the demo does not wait for the quiet period); the Task Manager routes it,
the products claim, analyse and return IHE AIR results, which the hub validates at the
door. Supervised products' results wait for review: the demo accepts them as a named
reviewer, as a radiologist would in the review step, so that their delivery shows too. The
demo prints each result, its turnaround and where to see it; urgent findings are listed as
the notifications they raise.

Every call to the hub carries a token (:mod:`aifi.hub.local_clients`): the demo's own
requests as the hospital (STOW-RS, completion signal, results, review, FHIR) or as the
administrator (the routing explanation, ``admin`` scope), each product process as its own
performer client limited to its product (``--credentials``). The hub delivers results to
Orthanc itself (hub → PACS needs no hub token); the demo's look into Orthanc goes to
Orthanc directly and never carries a hub token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydicom import Dataset
from rich.console import Console
from rich.table import Table

from aifi.conformance.orthanc import OrthancError, OrthancPeer, orthanc_unavailable
from aifi.hub.local_clients import LocalClients
from aifi.hub.results_api import epoch_seconds
from aifi.vendors.transport import stow_request

PRODUCT_PROCESSES = ("skeletal-age", "fracture-detection", "incidental-pe")
"""The reference products the demo starts, by their ``aifi vendors run`` names."""
DEMO_REVIEWER = "Demo^Radiologist"
WAIT_SECONDS = 120.0


@dataclass
class CaseResult:
    """One AI request of the demo: a study, a product, and what became of it."""

    case: str
    study_uid: str
    product: str
    outcome: str = "-"
    summary: str = ""
    review: str = "-"
    delivery: str = "-"
    turnaround_seconds: float | None = None
    """From the completion signal to the validated result at the hub."""
    delivered_seconds: float | None = None
    """From the completion signal to the result confirmed by the PACS (or released)."""
    in_pacs: bool = False
    fhir: str = "-"
    """The EPD's view: the Task's and the DiagnosticReport's status (FHIR R4)."""


@dataclass
class ChainResult:
    pacs: str = "hub store"
    pacs_url: str | None = None
    cases: list[CaseResult] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        products = {c.product for c in self.cases}
        return (
            {"AIFI-BONEAGE", "AIFI-FRACTURE", "AIFI-IPE"} <= products
            and all(c.outcome in ("positive", "negative", "measured") for c in self.cases)
            and all(c.delivery in ("delivered", "hub-store") for c in self.cases)
            and all(c.fhir == "Task completed, report final" for c in self.cases)
            and not self.problems
        )


@contextmanager
def pacs_destination(workdir: Path, console: Console) -> Iterator[OrthancPeer | None]:
    """Orthanc (DICOMweb plugin) as the PACS when installed, with a destinations file for
    the hub at ``workdir/destinations.yaml``; None (results stay in the hub) otherwise."""
    reason = orthanc_unavailable()
    if reason:
        console.print(f"PACS: the hub's own store ({reason})")
        yield None
        return
    peer = OrthancPeer(workdir=workdir / "orthanc")
    try:
        peer.start()
    except OrthancError as exc:
        console.print(f"PACS: the hub's own store (Orthanc did not start: {exc})")
        yield None
        return
    try:
        destinations = {
            "tenants": {
                "default": [{"kind": "dicomweb", "name": "orthanc", "url": peer.dicomweb_url}]
            }
        }
        (workdir / "destinations.yaml").write_text(yaml.safe_dump(destinations))
        console.print(f"PACS: Orthanc at [cyan]{peer.url}[/cyan] (DICOMweb {peer.dicomweb_url})")
        yield peer
    finally:
        peer.stop()


def product_codes() -> list[str]:
    """The product codes (Scheduled Workitem Code values) of :data:`PRODUCT_PROCESSES`."""
    from aifi.vendors.products import reference_product

    return [reference_product(name).code for name in PRODUCT_PROCESSES]


@contextmanager
def product_processes(
    dicomweb: str, log_dir: Path, credentials: dict[str, Path] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Each reference product as its own ``aifi vendors run`` process, with its performer
    client's credentials file (``credentials`` by product code; none: a hub in development
    mode); stopped at the end."""
    from aifi.vendors.products import reference_product

    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if k != "AIFI_CREDENTIALS"}
    with ExitStack() as stack:
        for name in PRODUCT_PROCESSES:
            log = stack.enter_context(open(log_dir / f"{name}.log", "ab"))
            command = [sys.executable, "-m", "aifi", "vendors", "run", name, "--hub", dicomweb]
            file = (credentials or {}).get(reference_product(name).code)
            if file is not None:
                command += ["--credentials", str(file)]
            processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**env, "PYTHONUNBUFFERED": "1"},
                )
            )
        _wait_until_started(log_dir, processes)
        try:
            yield processes
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def _wait_until_started(log_dir: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """Until every product process says it is performing (its start-up — imports, the
    worklist subscription — is not the hub's turnaround)."""
    deadline = time.monotonic() + 60
    logs = [log_dir / f"{name}.log" for name in PRODUCT_PROCESSES]
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"{log.stem} exited: {log.read_text(errors='replace')[-500:]}")
        if all("Performing" in log.read_text(errors="replace") for log in logs):
            time.sleep(0.5)  # the subscription and event channel follow the first line
            return
        time.sleep(0.1)
    raise RuntimeError("the reference products did not start within 60 s")


def demo_cases() -> list[tuple[str, list[Dataset]]]:
    from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray

    return [
        ("hand X-ray, 9-year-old", hand_xray(age_years=9.0)),
        ("wrist X-ray", extremity_xray(fracture=True)),
        ("contrast chest CT", chest_ct(embolism=True)),
    ]


def _stow(client: httpx.Client, dicomweb: str, study: list[Dataset]) -> None:
    body, headers = stow_request(study)
    response = client.post(dicomweb + "/studies", content=body, headers=headers)
    response.raise_for_status()


def _results(client: httpx.Client, base: str, study_uid: str) -> list[dict[str, Any]]:
    response = client.get(f"{base}/api/v1/results", params={"study": study_uid})
    response.raise_for_status()
    return list(response.json()["results"])


def _delivery_state(detail: dict[str, Any]) -> str:
    """ "delivered" when every destination confirmed every instance, "hub-store" when the
    tenant has no PACS destination, else the states seen."""
    deliveries = detail.get("deliveries") or []
    if not deliveries:
        return "-"
    if [d.get("destination") for d in deliveries] == ["hub-store"]:
        return "hub-store"
    states = sorted({str(d.get("state")) for d in deliveries})
    return ", ".join(states)


def run_chain(
    base_url: str,
    console: Console,
    peer: OrthancPeer | None,
    clients: LocalClients | None = None,
) -> ChainResult:
    """Store the three demo studies, let the products work, review, deliver, report. With
    ``clients`` every request to the hub carries the hospital's or the administrator's
    token (module docstring)."""
    dicomweb = base_url + "/dicomweb"
    chain = ChainResult()
    if peer is not None:
        chain.pacs, chain.pacs_url = "Orthanc (DICOMweb STOW-RS)", peer.url
    signalled: dict[str, tuple[str, float]] = {}
    with (
        httpx.Client(timeout=60, auth=clients.hospital_auth() if clients else None) as client,
        httpx.Client(timeout=60, auth=clients.admin_auth() if clients else None) as admin,
        httpx.Client(timeout=60) as pacs,  # Orthanc's own API: never a hub token
    ):
        for case, study in demo_cases():
            uid = str(study[0].StudyInstanceUID)
            _stow(client, dicomweb, study)
            client.post(f"{base_url}/api/v1/studies/{uid}/complete").raise_for_status()
            signalled[uid] = (case, time.time())
            console.print(f"stored {case} ({len(study)} images), study {uid}")
        final = _wait_for_results(client, admin, base_url, signalled, chain, console)
        _wait_for_delivery(client, base_url, final, chain)
        for uid, results in final.items():
            case, start = signalled[uid]
            for r in results:
                detail = client.get(f"{base_url}/api/v1/results/{r['workitem_uid']}").json()
                chain.cases.append(_case(case, uid, start, detail))
                chain.cases[-1].fhir = _fhir_state(client, base_url, r["workitem_uid"])
        if peer is not None:
            for c in chain.cases:
                c.in_pacs = _in_orthanc(pacs, peer, c.study_uid)
        notes = client.get(f"{base_url}/api/v1/notifications").json()
        for n in notes["notifications"]:
            chain.notifications.append(str(n.get("text")))
    return chain


def _wait_for_results(
    client: httpx.Client,
    admin: httpx.Client,
    base: str,
    signalled: dict[str, tuple[str, float]],
    chain: ChainResult,
    console: Console,
) -> dict[str, list[dict[str, Any]]]:
    """Until every routed product of every study has a result (how many: the routing
    explanation, an administrator's view); accepts supervised ones."""
    expected = {}
    for uid in signalled:
        routing = admin.get(f"{base}/api/v1/studies/{uid}/routing")
        routing.raise_for_status()
        expected[uid] = routing.text.count(": MATCH")
    final: dict[str, list[dict[str, Any]]] = {}
    accepted: set[str] = set()
    deadline = time.monotonic() + WAIT_SECONDS
    while len(final) < len(signalled) and time.monotonic() < deadline:
        for uid in signalled:
            results = [r for r in _results(client, base, uid) if r.get("completed_at")]
            for r in results:
                workitem = str(r["workitem_uid"])
                if r.get("review_state") == "awaiting-review" and workitem not in accepted:
                    accepted.add(workitem)
                    console.print(
                        f"{r['product']}: result awaiting review — accepted by {DEMO_REVIEWER}"
                    )
                    client.post(
                        f"{base}/api/v1/results/{workitem}/accept",
                        json={"reviewer": DEMO_REVIEWER, "reason": "demo: shows the delivery"},
                    ).raise_for_status()
            if len(results) >= expected[uid] and all(
                r.get("review_state") != "awaiting-review" for r in results
            ):
                final[uid] = results
        time.sleep(0.2)
    for uid, (case, _start) in signalled.items():
        if uid not in final:
            chain.problems.append(f"{case}: no result within {WAIT_SECONDS:.0f} s")
    return final


def _wait_for_delivery(
    client: httpx.Client,
    base: str,
    final: dict[str, list[dict[str, Any]]],
    chain: ChainResult,
) -> None:
    deadline = time.monotonic() + WAIT_SECONDS / 2
    pending = [str(r["workitem_uid"]) for results in final.values() for r in results]
    while pending and time.monotonic() < deadline:
        for workitem in list(pending):
            detail = client.get(f"{base}/api/v1/results/{workitem}").json()
            if _delivery_state(detail) in ("delivered", "hub-store", "failed"):
                pending.remove(workitem)
        time.sleep(0.2)
    chain.problems += [f"result of workitem {w} not delivered in time" for w in pending]


def _seconds(value: Any, start: float) -> float | None:
    return epoch_seconds(str(value)) - start if value else None


def _case(case: str, study_uid: str, start: float, detail: dict[str, Any]) -> CaseResult:
    result = detail.get("result") or {}
    timings = detail.get("timings") or {}
    return CaseResult(
        case=case,
        study_uid=study_uid,
        product=str(result.get("product")),
        outcome=str(result.get("outcome")),
        summary=str(result.get("summary") or ""),
        review=str(result.get("review_state")),
        delivery=_delivery_state(detail),
        turnaround_seconds=_seconds(timings.get("completed"), start),
        delivered_seconds=_seconds(timings.get("delivered"), start),
    )


def _fhir_state(client: httpx.Client, base: str, workitem_uid: str) -> str:
    """What the EPD sees: the Task mirroring the workitem and the result's report."""
    headers = {"Accept": "application/fhir+json"}
    task = client.get(f"{base}/fhir/Task/{workitem_uid}", headers=headers)
    report = client.get(f"{base}/fhir/DiagnosticReport/{workitem_uid}", headers=headers)
    if task.status_code != 200 or report.status_code != 200:
        return f"FHIR: Task {task.status_code}, DiagnosticReport {report.status_code}"
    return f"Task {task.json()['status']}, report {report.json()['status']}"


def _in_orthanc(client: httpx.Client, peer: OrthancPeer, study_uid: str) -> bool:
    """Does Orthanc list an SR series in the original study (QIDO-RS on Orthanc)?"""
    response = client.get(
        f"{peer.dicomweb_url}/studies/{study_uid}/series",
        headers={"Accept": "application/dicom+json"},
    )
    if response.status_code != 200 or not response.content:
        return False
    return any(
        "SR" in (series.get("00080060", {}).get("Value") or []) for series in response.json()
    )


def _findings(summary: str) -> str:
    """The findings of a result summary, without the series descriptions of its pages."""
    parts = [p for p in summary.split("; ") if ":" in p]
    return "; ".join(parts) or summary


def report_chain(console: Console, chain: ChainResult, base_url: str) -> None:
    table = Table(title=f"AI results (PACS: {chain.pacs})", show_header=True)
    table.add_column("study / product")
    table.add_column("result")
    table.add_column("review / delivery")
    table.add_column("turnaround", justify="right")
    table.add_column("FHIR (EPD)")
    for c in chain.cases:
        turnaround = "-"
        if c.turnaround_seconds is not None:
            turnaround = f"{c.turnaround_seconds:.1f} s result"
        if c.delivered_seconds is not None:
            turnaround += f"\n{c.delivered_seconds:.1f} s in PACS"
        table.add_row(
            f"{c.case}\n{c.product}",
            f"{c.outcome}: {_findings(c.summary)}",
            f"{c.review}\n{c.delivery}" + (" (in Orthanc)" if c.in_pacs else ""),
            turnaround,
            c.fhir.replace(", ", "\n"),
        )
    console.print(table)
    console.print(
        "Turnaround: from the completion signal to the validated result at the hub, and to "
        "the PACS's confirmation (supervised results after the demo's acceptance)."
    )
    for note in chain.notifications:
        console.print(f"[bold red]urgent notification[/bold red]: {note}")
    for problem in chain.problems:
        console.print(f"[red]{problem}[/red]")
    console.print("[bold]Where to see the results[/bold]")
    console.print(f"  results API:  {base_url}/api/v1/results (review: POST …/accept | …/reject)")
    console.print(
        f"  FHIR (EPD):   {base_url}/fhir/DiagnosticReport?_include=DiagnosticReport:result"
        f"  and  {base_url}/fhir/Task"
    )
    for study_uid, case in {c.study_uid: c.case for c in chain.cases}.items():
        console.print(f"  {case}: {base_url}/dicomweb/studies/{study_uid}/series")
    if chain.pacs_url:
        console.print(
            f"  in the PACS:  {chain.pacs_url}/app/explorer.html (Orthanc Explorer; "
            "with --serve it stays up)"
        )
