"""``aifi demo``: the whole chain on the embedded default, with no set-up.

Today's chain (grows with later issues): start the hub (SQLite + a local folder), generate
a synthetic CT study, store it with STOW-RS (progress bar), find it with QIDO-RS, retrieve
it with WADO-RS and check every instance came back byte-identical, render a thumbnail;
then the AI worklist (IHE AIW-I): store a child's hand radiograph, signal the study
complete, let the Task Manager's routing rules create the skeletal-age workitem, and work
it with the reference Task Performer over UPS-RS (claim, WADO-RS inputs, STOW-RS result,
complete); print what happened and where to look. The DICOMweb client side is the
independent ``dicomweb-client`` library, so the demo is also a smoke test of
interoperability.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aifi.conformance.synthetic import Patient, ct_study, radiograph_study
from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.hub.app import create_app
from aifi.hub.settings import Settings
from aifi.vendors.performer import Performer
from aifi.vendors.reference import ReferenceAnalyzer


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
    routed: list[str] = field(default_factory=list)
    """Product codes the hand study's workitems were created for."""
    routing_ms: float = 0.0
    performed: str | None = None
    """Final state of the skeletal-age workitem after the reference performer."""
    result_series: str | None = None
    hand_study_uid: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.identical == self.stored
            and self.stored > 0
            and BONE_AGE in self.routed
            and self.performed == "COMPLETED"
        )


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
    with running_hub(settings, host, port) as base_url:
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
        _worklist_chain(base_url, client, result, console)
        _report(console, result, summary, dicomweb)
        if keep_serving:
            console.print("Serving until Ctrl-C …")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result


BONE_AGE = "AIFI-BONEAGE"
UPS_JSON = {"Accept": "application/dicom+json"}


def _worklist_chain(
    base_url: str, client: DICOMwebClient, result: DemoResult, console: Console
) -> None:
    """IHE AIW-I: a hand radiograph becomes a skeletal-age workitem; the reference
    performer works it over UPS-RS."""
    dicomweb = base_url + "/dicomweb"
    hand = [dcmread(io.BytesIO(f)) for f in radiograph_study(2, size=256)]
    result.hand_study_uid = str(hand[0].StudyInstanceUID)
    client.store_instances(hand)
    with httpx.Client(timeout=60) as http:
        start = time.perf_counter()
        http.post(f"{base_url}/api/v1/studies/{result.hand_study_uid}/complete").raise_for_status()
        # The routing explanation says how many products match; wait for all their
        # workitems (the Task Manager creates them one after the other).
        explanation = http.get(f"{base_url}/api/v1/studies/{result.hand_study_uid}/routing")
        expected = max(1, explanation.text.count(": MATCH"))
        deadline = time.monotonic() + 30
        items: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(items) < expected:
            items = http.get(
                f"{dicomweb}/workitems",
                params={"StudyInstanceUID": result.hand_study_uid},
                headers=UPS_JSON,
            ).json()
            time.sleep(0.02)
        result.routing_ms = (time.perf_counter() - start) * 1000
        result.routed = sorted(
            _value(code, "00080100")
            for item in items
            for code in (item.get("00404018") or {}).get("Value", [])  # type: ignore[attr-defined]
        )
        console.print(
            f"Task Manager: hand study routed to {', '.join(result.routed) or 'nothing'} "
            f"in {result.routing_ms:.0f} ms"
        )
        with Performer(dicomweb, BONE_AGE, "AIFI-DEMO", ReferenceAnalyzer()) as performer:
            result.performed = performer.run_once()
        done = http.get(
            f"{dicomweb}/workitems",
            params={
                "StudyInstanceUID": result.hand_study_uid,
                "ScheduledWorkitemCodeSequence.CodeValue": BONE_AGE,
            },
            headers=UPS_JSON,
        ).json()
    for item in done:
        performed = (item.get("00741216") or {}).get("Value") or [{}]
        outputs = (performed[0].get("00404033") or {}).get("Value") or []
        if outputs:
            result.result_series = _value(outputs[0], "0020000E")


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
        "AIW-I routing",
        f"hand study -> workitems for {', '.join(r.routed) or 'nothing'} "
        f"({r.routing_ms:.0f} ms after the completion signal)",
    )
    table.add_row(
        "UPS-RS performer",
        f"{BONE_AGE}: {r.performed or 'not performed'}"
        + (f", result series {r.result_series}" if r.result_series else ""),
    )
    console.print(table)
    console.print("[bold]Where to look[/bold]")
    console.print(f"  study (QIDO): {dicomweb}/studies?StudyInstanceUID={r.study_instance_uid}")
    console.print(f"  metadata:     {dicomweb}/studies/{r.study_instance_uid}/metadata")
    console.print(f"  worklist:     {dicomweb}/workitems?StudyInstanceUID={r.hand_study_uid}")
    console.print(f"  routing:      {r.base_url}/api/v1/studies/{r.hand_study_uid}/routing")
    console.print(f"  API docs:     {r.base_url}/docs (while `aifi serve` runs)")
    console.print(
        f"  run it again: aifi serve, then point any DICOMweb viewer or client at {dicomweb}"
    )
    console.print("[green]demo OK[/green]" if r.ok else "[red]demo FAILED[/red]")
