"""``aifi demo``, the two-tier AI chain (issue 15): modality → gateway → hub → AI products →
hub → gateway → PACS, for the three pilot use cases.

1. A modality (:func:`aifi.demo.peers.send_study`: DCMTK ``storescu``, or pynetdicom)
   sends each generated pilot study (:mod:`aifi.conformance.pilot_studies`: a child's hand
   radiograph — skeletal age and fracture detection —, a wrist radiograph with a fracture,
   a contrast chest CT with a pulmonary embolism) to the gateway with C-STORE, one
   association per study.
2. The gateway pseudonymises each instance (PS3.15 Annex E), forwards it to the hub with
   STOW-RS and, when the association has ended and everything is forwarded, sends the
   hub's completion signal, so routing starts at once. The demo learns the study's
   pseudonym from the gateway's own database (it plays the hospital's operator: the map
   never leaves the hospital).
3. The hub routes the pseudonymised study; the products claim, analyse and return IHE AIR
   results. Supervised products' results wait for review: the demo accepts them as a named
   reviewer, as a radiologist would, so that their delivery shows too.
4. The gateway pulls the released results from the hub's feed, re-identifies them and
   delivers them into the PACS (Orthanc, STOW-RS), or keeps them in its own store.
5. The demo checks every expected result where the hospital sees it: in the PACS (or the
   gateway's store), in the original study, with the original patient, every reference to
   an instance pointing at an original instance.

Every call to the hub carries a token (:mod:`aifi.hub.admin.local_clients`): the demo's own as
the hospital (results, review, FHIR) or the administrator (the routing explanation); the
gateway and each product process as their own clients.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset, dcmread
from sqlmodel import col, select

from aifi.conformance.orthanc import OrthancPeer
from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray
from aifi.demo.peers import GatewayPeer, send_study
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
from aifi.gateway.persistence.result_tables import (
    DeliveryState,
    GatewayResult,
    ResultDelivery,
    ResultFile,
    ResultState,
)
from aifi.gateway.persistence.tables import (
    CompletionState,
    InstanceState,
    ReceivedInstance,
    StudyProgress,
)
from aifi.hub.admin.local_clients import LocalClients
from aifi.hub.api.results import epoch_seconds
from aifi.hub.persistence.database import Database

DEMO_REVIEWER = "Demo^Radiologist"
WAIT_SECONDS = 120.0
EXPECTED_PRODUCTS = frozenset({"AIFI-BONEAGE", "AIFI-FRACTURE", "AIFI-IPE"})
_PART10 = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class SentStudy:
    """One study the modality sent, and what the gateway made of it."""

    case: str
    datasets: list[Dataset]
    sent_at: float = 0.0
    """Epoch seconds at the end of the modality's association."""
    pseudo_uid: str | None = None
    signalled_at: float | None = None
    """When the gateway's completion signal was answered (epoch seconds)."""

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def sop_uids(self) -> set[str]:
        return {str(ds.SOPInstanceUID) for ds in self.datasets}


@dataclass
class CaseResult:
    """One AI request of the demo: a study, a product, and what became of it."""

    case: str
    study_uid: str
    """The original study (as the PACS knows it)."""
    pseudo_study_uid: str
    product: str
    workitem_uid: str
    outcome: str = "-"
    summary: str = ""
    review: str = "-"
    back: str = "-"
    """Where the re-identified result is: "in Orthanc", "in the gateway store", or why not."""
    reidentified: bool = False
    """Every file of it, as the PACS (or the gateway's store) holds it, is in the original
    study with the original patient, and references only original instances."""
    turnaround_seconds: float | None = None
    """From the end of the modality's association to the validated result at the hub."""
    delivered_seconds: float | None = None
    """From the end of the modality's association to the result in the PACS (or store)."""
    files: list[str] = field(default_factory=list)
    """Where the re-identified files are (PACS WADO-RS URLs or gateway store paths)."""
    fhir: str = "-"
    """The EPD's view at the hub: the Task's and the DiagnosticReport's status (FHIR R4)."""


@dataclass
class ChainResult:
    pacs: str = "the gateway's store"
    pacs_url: str | None = None
    scu: str = "-"
    """Which C-STORE SCU played the modality."""
    studies: list[SentStudy] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            {c.product for c in self.cases} >= EXPECTED_PRODUCTS
            and all(c.outcome in ("positive", "negative", "measured") for c in self.cases)
            and all(c.reidentified for c in self.cases)
            and all(c.fhir == "Task completed, report final" for c in self.cases)
            and not self.problems
        )


def demo_studies(stamp: str) -> list[SentStudy]:
    """The pilot studies, with accession numbers of this run (``stamp``)."""
    return [
        SentStudy("hand X-ray, 9-year-old", hand_xray(age_years=9.0, accession=f"ACC{stamp}H")),
        SentStudy("wrist X-ray", extremity_xray(fracture=True, accession=f"ACC{stamp}W")),
        SentStudy("contrast chest CT", chest_ct(embolism=True, accession=f"ACC{stamp}C")),
    ]


def _write_study(folder: Path, study: SentStudy) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, ds in enumerate(study.datasets, 1):
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def run_chain(
    base_url: str,
    gateway: GatewayPeer,
    pacs: OrthancPeer | None,
    clients: LocalClients,
    workdir: Path,
    say: Any,
) -> ChainResult:
    """The chain of the module docstring; ``say`` prints a line (rich markup)."""
    chain = ChainResult()
    if pacs is not None:
        chain.pacs, chain.pacs_url = "Orthanc (DICOMweb STOW-RS from the gateway)", pacs.url
    chain.studies = demo_studies(time.strftime("%y%m%d%H%M%S"))
    gateway_db = Database(gateway.database_url, migrations=GATEWAY_MIGRATIONS)
    with (
        httpx.Client(timeout=60, auth=clients.hospital_auth()) as client,
        httpx.Client(timeout=60, auth=clients.admin_auth()) as admin,
        httpx.Client(timeout=60) as orthanc,  # the PACS's own API: never a hub token
    ):
        try:
            for number, study in enumerate(chain.studies, 1):
                files = _write_study(workdir / "modality" / f"study-{number}", study)
                chain.scu = send_study(files, gateway.dimse_port, gateway.ae_title)
                study.sent_at = time.time()
                say(
                    f"modality → gateway: {study.case} ({len(files)} images, C-STORE with "
                    f"{chain.scu}), study {study.study_uid}"
                )
            _wait_for_gateway(gateway_db, chain, say)
            routed = [s for s in chain.studies if s.pseudo_uid]
            final = _wait_for_results(client, admin, base_url, routed, chain, say)
            _wait_for_way_back(gateway_db, final, chain, pacs is not None)
            for study in routed:
                for result in final.get(study.pseudo_uid or "", []):
                    chain.cases.append(
                        _case(client, base_url, gateway_db, gateway, pacs, orthanc, study, result)
                    )
            notes = client.get(f"{base_url}/api/v1/notifications").json()
            chain.notifications = [str(n.get("text")) for n in notes["notifications"]]
        finally:
            gateway_db.dispose()
    return chain


def _wait_for_gateway(db: Database, chain: ChainResult, say: Any) -> None:
    """Until the gateway has forwarded every instance of every study and sent its
    completion signal; records each study's pseudonym. A quarantined or refused instance
    is a problem named with its reason."""
    deadline = time.monotonic() + WAIT_SECONDS
    pending = {s.study_uid: s for s in chain.studies}
    while pending and time.monotonic() < deadline:
        with db.read() as session:
            rows = session.exec(
                select(StudyProgress).where(col(StudyProgress.study_instance_uid).in_(pending))
            ).all()
            bad = session.exec(
                select(ReceivedInstance).where(
                    col(ReceivedInstance.study_instance_uid).in_(pending),
                    col(ReceivedInstance.state).in_(
                        [InstanceState.QUARANTINED.value, InstanceState.FAILED.value]
                    ),
                )
            ).all()
        for instance in bad:
            study = pending.pop(instance.study_instance_uid, None)
            if study is not None:
                chain.problems.append(
                    f"{study.case}: the gateway did not forward instance "
                    f"{instance.sop_instance_uid} ({instance.state}): {instance.reason}"
                )
        for row in rows:
            study = pending.get(row.study_instance_uid)
            if study is None:
                continue
            if row.completion == CompletionState.SIGNALLED.value and row.signalled_at:
                study.pseudo_uid = row.pseudo_study_instance_uid
                study.signalled_at = _epoch(row.signalled_at)
                del pending[row.study_instance_uid]
                say(
                    f"gateway → hub: {study.case} pseudonymised, forwarded and signalled "
                    f"complete {study.signalled_at - study.sent_at:.1f} s after the "
                    f"association ended; the hub knows it as {study.pseudo_uid}"
                )
            elif row.completion == CompletionState.FAILED.value:
                del pending[row.study_instance_uid]
                chain.problems.append(
                    f"{study.case}: the completion signal failed: {row.last_error}"
                )
        time.sleep(0.1)
    chain.problems += [
        f"{s.case}: not forwarded and signalled by the gateway within {WAIT_SECONDS:.0f} s "
        f"(aifi gateway status)"
        for s in pending.values()
    ]


def _results(client: httpx.Client, base: str, study_uid: str) -> list[dict[str, Any]]:
    response = client.get(f"{base}/api/v1/results", params={"study": study_uid})
    response.raise_for_status()
    return list(response.json()["results"])


def _wait_for_results(
    client: httpx.Client,
    admin: httpx.Client,
    base: str,
    studies: list[SentStudy],
    chain: ChainResult,
    say: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Until every routed product of every (pseudonymised) study has a result at the hub
    (how many: the routing explanation, an administrator's view); accepts supervised ones."""
    expected = {}
    for study in studies:
        routing = admin.get(f"{base}/api/v1/studies/{study.pseudo_uid}/routing")
        routing.raise_for_status()
        expected[str(study.pseudo_uid)] = routing.text.count(": MATCH")
    final: dict[str, list[dict[str, Any]]] = {}
    accepted: set[str] = set()
    deadline = time.monotonic() + WAIT_SECONDS
    while len(final) < len(expected) and time.monotonic() < deadline:
        for uid in expected:
            results = [r for r in _results(client, base, uid) if r.get("completed_at")]
            for r in results:
                workitem = str(r["workitem_uid"])
                if r.get("review_state") == "awaiting-review" and workitem not in accepted:
                    accepted.add(workitem)
                    say(f"{r['product']}: result awaiting review — accepted by {DEMO_REVIEWER}")
                    client.post(
                        f"{base}/api/v1/results/{workitem}/accept",
                        json={"reviewer": DEMO_REVIEWER, "reason": "demo: shows the delivery"},
                    ).raise_for_status()
            if len(results) >= expected[uid] and all(
                r.get("review_state") != "awaiting-review" for r in results
            ):
                final[uid] = results
        time.sleep(0.2)
    for study in studies:
        if study.pseudo_uid not in final:
            chain.problems.append(
                f"{study.case}: not every AI result at the hub within {WAIT_SECONDS:.0f} s"
            )
    return final


def _wait_for_way_back(
    db: Database, final: dict[str, list[dict[str, Any]]], chain: ChainResult, to_pacs: bool
) -> None:
    """Until the gateway has pulled, re-identified and (with a PACS) delivered every result
    released at the hub; a refused or failed one is a problem named with its reason."""
    pending = {str(r["workitem_uid"]) for results in final.values() for r in results}
    deadline = time.monotonic() + WAIT_SECONDS
    while pending and time.monotonic() < deadline:
        with db.read() as session:
            rows = session.exec(
                select(GatewayResult).where(col(GatewayResult.workitem_uid).in_(pending))
            ).all()
            for row in rows:
                if row.state in (ResultState.REFUSED, ResultState.FAILED):
                    chain.problems.append(
                        f"result {row.workitem_uid} ({row.product}) {row.state} at the "
                        f"gateway: {row.reason}"
                    )
                    pending.discard(row.workitem_uid)
                elif row.state == ResultState.STORED:
                    deliveries = session.exec(
                        select(ResultDelivery).where(col(ResultDelivery.result_pk) == row.pk)
                    ).all()
                    failed = [d for d in deliveries if d.state == DeliveryState.FAILED]
                    if failed:
                        chain.problems.append(
                            f"result {row.workitem_uid} ({row.product}) not delivered into "
                            f"the PACS: {failed[0].last_error}"
                        )
                        pending.discard(row.workitem_uid)
                    elif not to_pacs or (
                        deliveries and all(d.state == DeliveryState.DELIVERED for d in deliveries)
                    ):
                        pending.discard(row.workitem_uid)
        time.sleep(0.2)
    chain.problems += [
        f"result of workitem {w}: not back in the {'PACS' if to_pacs else 'gateway store'} "
        f"within {WAIT_SECONDS:.0f} s (aifi gateway status)"
        for w in sorted(pending)
    ]


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _case(
    client: httpx.Client,
    base: str,
    db: Database,
    gateway: GatewayPeer,
    pacs: OrthancPeer | None,
    orthanc: httpx.Client,
    study: SentStudy,
    listed: dict[str, Any],
) -> CaseResult:
    workitem = str(listed["workitem_uid"])
    detail = client.get(f"{base}/api/v1/results/{workitem}").json()
    result = detail.get("result") or {}
    timings = detail.get("timings") or {}
    completed = timings.get("completed")
    case = CaseResult(
        case=study.case,
        study_uid=study.study_uid,
        pseudo_study_uid=str(study.pseudo_uid),
        product=str(result.get("product")),
        workitem_uid=workitem,
        outcome=str(result.get("outcome")),
        summary=str(result.get("summary") or ""),
        review=str(result.get("review_state")),
        turnaround_seconds=epoch_seconds(str(completed)) - study.sent_at if completed else None,
        fhir=_fhir_state(client, base, workitem),
    )
    with db.read() as session:
        row = session.exec(
            select(GatewayResult).where(col(GatewayResult.workitem_uid) == workitem)
        ).first()
        if row is None or row.state != ResultState.STORED:
            case.back = "not at the gateway"
            return case
        files = list(
            session.exec(select(ResultFile).where(col(ResultFile.result_pk) == row.pk)).all()
        )
        deliveries = list(
            session.exec(select(ResultDelivery).where(col(ResultDelivery.result_pk) == row.pk))
        )
    if pacs is not None:
        times = [d.delivered_at for d in deliveries if d.delivered_at is not None]
        back_at = max(times) if times and len(times) == len(deliveries) else None
        where = "in Orthanc"
    else:
        back_at = row.stored_at
        where = "in the gateway store"
    if back_at is not None:
        case.delivered_seconds = _epoch(back_at) - study.sent_at
    problems = []
    for item in files:
        if pacs is not None:
            url = (
                f"{pacs.dicomweb_url}/studies/{item.study_instance_uid}/series/"
                f"{item.series_instance_uid}/instances/{item.sop_instance_uid}"
            )
            data = fetch_instance(orthanc, url)
            case.files.append(url)
        else:
            path = gateway.data_dir / item.file
            data = path.read_bytes() if path.is_file() else None
            case.files.append(str(path))
        if data is None:
            problems.append(f"{item.sop_instance_uid} is missing")
            continue
        siblings = {f.sop_instance_uid for f in files}
        problems += reidentification_problems(dcmread_bytes(data), study, siblings)
    case.reidentified = bool(files) and not problems
    case.back = where if case.reidentified else f"{where}: " + "; ".join(problems[:3])
    return case


def dcmread_bytes(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def fetch_instance(client: httpx.Client, url: str) -> bytes | None:
    """One instance with WADO-RS (PS3.18 §10.4.1.1.1), as stored; None when absent."""
    response = client.get(url, headers={"Accept": _PART10})
    if response.status_code != 200:
        return None
    boundary = parse_media_type(response.headers["content-type"]).params["boundary"]
    parts = [body for _headers, body in read_parts(response.content, boundary)]
    return parts[0] if parts else None


def referenced_instances(ds: Dataset) -> list[str]:
    """Every Referenced SOP Instance UID (0008,1155) in ``ds``, at any depth."""
    found: list[str] = []

    def walk(items: Iterable[Dataset]) -> None:
        for item in items:
            for element in item:
                if element.tag == 0x00081155 and element.value:
                    found.append(str(element.value))
                elif element.VR == "SQ":
                    walk(element.value)

    walk([ds])
    return found


def reidentification_problems(
    ds: Dataset, study: SentStudy, siblings: set[str] | None = None
) -> list[str]:
    """What is wrong with a result as the hospital holds it: not in the original study,
    not of the original patient, or a reference to an instance that is neither an original
    nor one of the result's own objects (``siblings``, e.g. an SR's segmentation)."""
    original = study.datasets[0]
    problems = []
    if str(ds.get("StudyInstanceUID", "")) != study.study_uid:
        problems.append(f"study {ds.get('StudyInstanceUID')} is not the original study")
    if str(ds.get("PatientID", "")) != str(original.PatientID):
        problems.append(f"Patient ID {ds.get('PatientID')!r} is not the original")
    if str(ds.get("PatientName", "")) != str(original.PatientName):
        problems.append(f"Patient's Name {ds.get('PatientName')!r} is not the original")
    allowed = study.sop_uids | (siblings or set()) | {str(ds.SOPInstanceUID)}
    stray = [uid for uid in referenced_instances(ds) if uid not in allowed]
    if stray:
        problems.append(f"references {stray[0]}, not an original instance")
    return problems


def _fhir_state(client: httpx.Client, base: str, workitem_uid: str) -> str:
    """What the EPD sees at the hub: the Task mirroring the workitem and the result's
    report."""
    headers = {"Accept": "application/fhir+json"}
    task = client.get(f"{base}/fhir/Task/{workitem_uid}", headers=headers)
    report = client.get(f"{base}/fhir/DiagnosticReport/{workitem_uid}", headers=headers)
    if task.status_code != 200 or report.status_code != 200:
        return f"FHIR: Task {task.status_code}, DiagnosticReport {report.status_code}"
    return f"Task {task.json()['status']}, report {report.json()['status']}"
