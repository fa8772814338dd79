"""Workitems as a Task Performer reads and writes them (pure code, no I/O): DICOM JSON
element helpers, the claim order, the Input Information Sequence read into references, and
the Output Information Sequence built from result instances (PS3.4 Table CC.2.5-3; IHE RAD
TF AIW-I)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset

from aifi.dicom_json import DicomJson, first, items

# -- DICOM tags (DICOM JSON keys) and keywords used here -------------------------------------
SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = "00080018"
CODE_VALUE = "00080100"
RETRIEVE_URL = "00081190"
TRANSACTION_UID = "00081195"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SCHEDULED_PROCEDURE_STEP_START_DATETIME = "00404005"
SCHEDULED_WORKITEM_CODE_SEQUENCE = "00404018"
PERFORMED_WORKITEM_CODE_SEQUENCE = "00404019"
INPUT_INFORMATION_SEQUENCE = "00404021"
OUTPUT_INFORMATION_SEQUENCE = "00404033"
PERFORMED_PROCEDURE_STEP_START_DATETIME = "00404050"
PERFORMED_PROCEDURE_STEP_END_DATETIME = "00404051"
PROCEDURE_STEP_CANCELLATION_DATETIME = "00404052"
TYPE_OF_INSTANCES = "0040E020"
WADO_RS_RETRIEVAL_SEQUENCE = "0040E025"
PROCEDURE_STEP_STATE = "00741000"
PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE = "00741002"
PROCEDURE_STEP_PROGRESS = "00741004"
PROCEDURE_STEP_PROGRESS_DESCRIPTION = "00741006"
SCHEDULED_PROCEDURE_STEP_PRIORITY = "00741200"
UPS_PERFORMED_PROCEDURE_SEQUENCE = "00741216"
REASON_FOR_CANCELLATION = "00741238"

GLOBAL_WORKLIST = "1.2.840.10008.5.1.4.34.5"
"""Well-known UID of the global worklist in subscription URLs (PS3.4 CC.3.1)."""
FILTERED_WORKLIST = "1.2.840.10008.5.1.4.34.5.1"
"""Well-known UID of a filtered worklist subscription (PS3.4 CC.3.2; PS3.18 §11.10)."""
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
"""Scheduled Procedure Step Priority (0074,1200) values, most urgent first (PS3.3 C.30.1)."""


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2.2); no values: present but empty."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def now_dt() -> str:
    """The current time as a DT value in UTC (PS3.5 Table 6.2-1)."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def claim_order(workitems: Sequence[DicomJson]) -> list[DicomJson]:
    """Workitems in the order a performer should try them: Scheduled Procedure Step
    Priority HIGH, MEDIUM, LOW (unknown last), then the earliest Scheduled Procedure Step
    Start DateTime, then the order the worklist listed them in (creation order at the hub)."""

    def key(pair: tuple[int, DicomJson]) -> tuple[int, str, int]:
        index, ds = pair
        priority = str(first(ds, SCHEDULED_PROCEDURE_STEP_PRIORITY) or "").upper()
        rank = PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)
        start = str(first(ds, SCHEDULED_PROCEDURE_STEP_START_DATETIME) or "")[:14].ljust(14, "9")
        return rank, start, index

    return [ds for _, ds in sorted(enumerate(workitems), key=key)]


@dataclass(frozen=True, slots=True)
class InputReference:
    """One item of the Input Information Sequence (0040,4021)."""

    study_uid: str
    series_uid: str | None
    sop_uids: frozenset[str]
    retrieve_url: str | None


def input_references(workitem: DicomJson) -> list[InputReference]:
    """The inputs a workitem names (PS3.4 CC.2.5.1.3 / AIW-I), tolerant of missing parts."""
    refs = []
    for item in items(workitem, INPUT_INFORMATION_SEQUENCE):
        study = first(item, STUDY_INSTANCE_UID) or first(workitem, STUDY_INSTANCE_UID)
        if not study:
            continue
        sops = {
            str(first(ref, REFERENCED_SOP_INSTANCE_UID))
            for ref in items(item, REFERENCED_SOP_SEQUENCE)
            if first(ref, REFERENCED_SOP_INSTANCE_UID)
        }
        urls = [first(r, RETRIEVE_URL) for r in items(item, WADO_RS_RETRIEVAL_SEQUENCE)]
        series = first(item, SERIES_INSTANCE_UID)
        refs.append(
            InputReference(
                study_uid=str(study),
                series_uid=str(series) if series else None,
                sop_uids=frozenset(sops),
                retrieve_url=next((str(u) for u in urls if u), None),
            )
        )
    return refs


def output_information(results: Sequence[Dataset], dicomweb: str) -> list[DicomJson]:
    """Output Information Sequence (0040,4033) items for stored result instances: one per
    series, listing its instances, with the WADO-RS URL they can be retrieved from."""
    by_series: dict[tuple[str, str], list[Dataset]] = {}
    for ds in results:
        by_series.setdefault((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)), []).append(ds)
    out = []
    for (study, series), members in by_series.items():
        out.append(
            {
                STUDY_INSTANCE_UID: element("UI", study),
                SERIES_INSTANCE_UID: element("UI", series),
                TYPE_OF_INSTANCES: element("CS", "DICOM"),
                REFERENCED_SOP_SEQUENCE: element(
                    "SQ",
                    *[
                        {
                            REFERENCED_SOP_CLASS_UID: element("UI", str(ds.SOPClassUID)),
                            REFERENCED_SOP_INSTANCE_UID: element("UI", str(ds.SOPInstanceUID)),
                        }
                        for ds in members
                    ],
                ),
                WADO_RS_RETRIEVAL_SEQUENCE: element(
                    "SQ",
                    {RETRIEVE_URL: element("UR", f"{dicomweb}/studies/{study}/series/{series}")},
                ),
            }
        )
    return out
