"""What ``aifi demo`` prints of the two-tier chain: for one study, three views side by side —
what the modality sent into the hospital, what the central hub holds (pseudonyms, no
identity: PS3.15 Annex E), what came back into the PACS (the AI result, re-identified into
the original study, PS3.15 E.1.2) — and, per AI request, its result, review, way back and
turnaround.

The hub's view is read the way anyone at the hub reads it: QIDO-RS and the study's
metadata (PS3.18 §10.6, §10.4.1.1.2) with the hospital's token; the PACS's view with
WADO-RS on Orthanc (or the gateway's store when no PACS is installed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from rich.console import Console
from rich.table import Table

from aifi.demo.chain import (
    ChainResult,
    SentStudy,
    dcmread_bytes,
    fetch_instance,
    referenced_instances,
)

_ABSENT = "—"
_SHOWN = (
    ("Patient's Name", "PatientName"),
    ("Patient ID", "PatientID"),
    ("Patient's Birth Date", "PatientBirthDate"),
    ("Patient's Age", "PatientAge"),
    ("Accession Number", "AccessionNumber"),
    ("Study Instance UID", "StudyInstanceUID"),
    ("Study Date", "StudyDate"),
    ("Patient Identity Removed", "PatientIdentityRemoved"),
    ("De-identification Method", "DeidentificationMethod"),
)


@dataclass
class ThreeViews:
    """One study seen by the modality, the hub and the PACS (module docstring)."""

    case: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(attribute, sent by the modality, held by the hub, back in the PACS)."""
    identity_at_hub: list[str] = field(default_factory=list)
    """Original identifiers found anywhere in the hub's metadata of the study (none)."""
    found_by_original_id: int = -1
    """Studies the hub's QIDO-RS finds for the original Patient ID (0)."""
    hub_marked: bool = False
    """The hub's instances say Patient Identity Removed YES."""
    back_original: bool = False
    """The result in the PACS has the original patient, study and references."""

    @property
    def ok(self) -> bool:
        return (
            bool(self.rows)
            and not self.identity_at_hub
            and self.found_by_original_id == 0
            and self.hub_marked
            and self.back_original
        )


def _show(ds: Dataset | None, keyword: str) -> str:
    if ds is None or keyword not in ds:
        return _ABSENT
    value = ds.get(keyword)
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _from_json(item: dict[str, Any]) -> Dataset:
    return Dataset.from_json(item, bulk_data_uri_handler=lambda *_args: b"")


def _sop_class(ds: Dataset | None) -> str:
    if ds is None or "SOPClassUID" not in ds:
        return _ABSENT
    return f"{UID(str(ds.SOPClassUID)).name} ({ds.get('Modality', '?')})"


def _references(ds: Dataset | None, originals: set[str], pseudonyms: set[str]) -> str:
    if ds is None:
        return _ABSENT
    refs = referenced_instances(ds)
    if not refs:
        return "none"
    to_original = sum(r in originals for r in refs)
    to_pseudo = sum(r in pseudonyms for r in refs)
    other = len(refs) - to_original - to_pseudo
    parts = []
    if to_original:
        parts.append(f"{to_original} → original instances")
    if to_pseudo:
        parts.append(f"{to_pseudo} → pseudonymised instances")
    if other:
        parts.append(f"{other} → other objects of the result")
    return ", ".join(parts)


def three_views(
    hub: httpx.Client, base_url: str, pacs: httpx.Client, chain: ChainResult
) -> ThreeViews:
    """The three views of the first study of the chain that has a re-identified result.
    ``hub`` carries the hospital's token; ``pacs`` none (Orthanc's own API)."""
    study: SentStudy | None = next(
        (
            s
            for s in chain.studies
            if s.pseudo_uid and any(c.study_uid == s.study_uid and c.files for c in chain.cases)
        ),
        None,
    )
    if study is None:
        return ThreeViews(case="(no study came back)")
    views = ThreeViews(case=study.case)
    sent = study.datasets[0]
    dicomweb = base_url + "/dicomweb"
    metadata = hub.get(
        f"{dicomweb}/studies/{study.pseudo_uid}/metadata",
        headers={"Accept": "application/dicom+json"},
    )
    metadata.raise_for_status()
    instances = [_from_json(item) for item in metadata.json()]
    held = next((ds for ds in instances if ds.SOPClassUID == sent.SOPClassUID), None)
    pseudonyms = {str(ds.SOPInstanceUID) for ds in instances}
    views.hub_marked = held is not None and held.get("PatientIdentityRemoved") == "YES"
    originals = [
        str(sent.PatientName),
        str(sent.PatientID),
        str(sent.PatientBirthDate),
        str(sent.AccessionNumber),
        study.study_uid,
        *sorted(study.sop_uids),
    ]
    views.identity_at_hub = [value for value in originals if value and value in metadata.text]
    found = hub.get(
        f"{dicomweb}/studies",
        params={"PatientID": str(sent.PatientID)},
        headers={"Accept": "application/dicom+json"},
    )
    found.raise_for_status()
    views.found_by_original_id = len(found.json()) if found.content else 0

    back, hub_result = _result_pair(hub, dicomweb, pacs, chain, study, instances)
    views.back_original = back is not None and (
        str(back.get("PatientID")) == str(sent.PatientID)
        and str(back.get("PatientName")) == str(sent.PatientName)
        and str(back.get("StudyInstanceUID")) == study.study_uid
        and any(c.reidentified for c in chain.cases if c.study_uid == study.study_uid)
    )
    for label, keyword in _SHOWN:
        views.rows.append((label, _show(sent, keyword), _show(held, keyword), _show(back, keyword)))
    views.rows.append(("Object", _sop_class(sent), _sop_class(hub_result), _sop_class(back)))
    views.rows.append(
        (
            "References (0008,1155)",
            _ABSENT,
            _references(hub_result, study.sop_uids, pseudonyms),
            _references(back, study.sop_uids, pseudonyms),
        )
    )
    return views


def _result_pair(
    hub: httpx.Client,
    dicomweb: str,
    pacs: httpx.Client,
    chain: ChainResult,
    study: SentStudy,
    instances: list[Dataset],
) -> tuple[Dataset | None, Dataset | None]:
    """An AI result of ``study`` as it came back (a structured report if there is one)
    and the same object as the hub holds it (pseudonymised)."""
    back: Dataset | None = None
    for case in chain.cases:
        if case.study_uid != study.study_uid:
            continue
        for where in case.files:
            if where.startswith("http"):
                data = fetch_instance(pacs, where)
            else:
                with open(where, "rb") as handle:
                    data = handle.read()
            if data is None:
                continue
            candidate = dcmread_bytes(data)
            if back is None or candidate.get("Modality") == "SR":
                back = candidate
            if back.get("Modality") == "SR":
                break
        if back is not None and back.get("Modality") == "SR":
            break
    if back is None:
        return None, None
    same = next(
        (
            ds
            for ds in instances
            if ds.SOPClassUID == back.SOPClassUID and ds.SOPInstanceUID not in study.sop_uids
        ),
        None,
    )
    hub_result = None
    if same is not None:
        data = fetch_instance(
            hub,
            f"{dicomweb}/studies/{study.pseudo_uid}/series/{same.SeriesInstanceUID}"
            f"/instances/{same.SOPInstanceUID}",
        )
        hub_result = dcmread_bytes(data) if data is not None else None
    return back, hub_result


def report_three_views(console: Console, views: ThreeViews) -> None:
    if not views.rows:
        console.print("[red]Three views: no study came back with a re-identified result[/red]")
        return
    table = Table(
        title=f"Three views of one study — {views.case}",
        show_header=True,
        show_lines=True,
        caption="Patient and study rows: the image as the modality sent it and as the hub holds "
        "it, the AI result as it came back into the PACS. Object and References: the AI result "
        "at the hub and in the PACS.",
    )
    table.add_column("attribute", overflow="fold")
    table.add_column("the modality sent (hospital)", overflow="fold")
    table.add_column("the hub holds (pseudonymised)", overflow="fold")
    table.add_column("back in the PACS: AI result (re-identified)", overflow="fold")
    for row in views.rows:
        table.add_row(*row)
    console.print(table)
    leaks = ", ".join(views.identity_at_hub) or "none"
    console.print(
        f"At the hub: original identifiers in the study's metadata: {leaks}; QIDO-RS for the "
        f"original Patient ID finds {views.found_by_original_id} studies. Back in the PACS: "
        + (
            "the original patient and study, references to the original instances."
            if views.back_original
            else "[red]NOT the original patient/study/references[/red]."
        )
    )


def _findings(summary: str) -> str:
    """The findings of a result summary, without the series descriptions of its pages."""
    parts = [p for p in summary.split("; ") if ":" in p]
    return "; ".join(parts) or summary


def report_chain(console: Console, chain: ChainResult, base_url: str, gateway_url: str) -> None:
    table = Table(title=f"AI results (PACS: {chain.pacs})", show_header=True)
    table.add_column("study / product")
    table.add_column("result")
    table.add_column("review / back, re-identified")
    table.add_column("turnaround", justify="right")
    table.add_column("FHIR at the hub")
    for c in chain.cases:
        turnaround = "-"
        if c.turnaround_seconds is not None:
            turnaround = f"{c.turnaround_seconds:.1f} s result"
        if c.delivered_seconds is not None:
            turnaround += f"\n{c.delivered_seconds:.1f} s in PACS"
        table.add_row(
            f"{c.case}\n{c.product}",
            f"{c.outcome}: {_findings(c.summary)}",
            f"{c.review}\n{c.back}"
            + (
                f" ({len(c.files)} object{'s' if len(c.files) > 1 else ''})"
                if c.reidentified
                else ""
            ),
            turnaround,
            c.fhir.replace(", ", "\n"),
        )
    console.print(table)
    console.print(
        "Turnaround: from the end of the modality's association to the validated result at "
        "the hub, and to the re-identified result in the PACS (or the gateway's store; "
        "supervised results after the demo's acceptance)."
    )
    for note in chain.notifications:
        console.print(f"[bold red]urgent notification[/bold red]: {note}")
    for problem in chain.problems:
        console.print(f"[red]{problem}[/red]")
    console.print("[bold]Where to see the results[/bold]")
    console.print(f"  gateway:      {gateway_url}/api/v1/gateway/status (aifi gateway status)")
    console.print(f"  results API:  {base_url}/api/v1/results (review: POST …/accept | …/reject)")
    console.print(
        f"  FHIR (EPD):   {base_url}/fhir/DiagnosticReport?_include=DiagnosticReport:result"
        f"  and  {base_url}/fhir/Task"
    )
    if chain.pacs_url:
        console.print(
            f"  in the PACS:  {chain.pacs_url}/app/explorer.html (Orthanc Explorer; "
            "with --serve it stays up)"
        )
    else:
        files = sorted({f for c in chain.cases for f in c.files})
        if files:
            console.print(
                f"  in the gateway's store: {files[0].rsplit('/results/', 1)[0]}/results/"
            )
