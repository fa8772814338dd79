"""IHE AIW-I: the workitems the Task Manager requests for a routed study (pure code).

When the routing rules (:mod:`aifi.ihe_profiles.rules`) match a product, the hub acts as
Task Requester (IHE RAD TF-1 AIW-I; RAD-80 Create UPS Workitem) and creates a UPS
(PS3.4 Annex CC; attributes of PS3.3 C.30 / Table CC.2.5-3) built here:

* **Scheduled Workitem Code Sequence** (0040,4018): the product's code under the local
  coding scheme (``99AIFI``), so a performer finds its work with
  ``ScheduledWorkitemCodeSequence.CodeValue=<code>``;
* **Scheduled Procedure Step Priority** (0074,1200): the product's (HIGH for urgent
  triage products); **Procedure Step Label** (0074,1204): the product's name;
  **Expected Completion DateTime** (0040,4011): now + the product's norm turnaround;
* **Input Information Sequence** (0040,4021): one item per input series with Study and
  Series Instance UID, Type of Instances (0040,E020) ``DICOM``, the Referenced SOP
  Sequence of its instances and a **WADO-RS Retrieval Sequence** (0040,E025) whose Retrieve
  URL (0008,1190) is stored *relative* to the DICOMweb service root
  (``studies/{study}/series/{series}``); UPS-RS makes it absolute for each client, as
  BulkDataURIs are, so the URLs are right behind any proxy;
* the patient and study identification the performer needs (Patient's Name, ID, Birth
  Date, Sex; Study Instance UID, Accession Number) copied from the study;
* **Input Readiness State** (0040,4041): READY — the hub only creates workitems for
  studies it considers complete (quiet period or explicit signal).

A retry of a failed attempt references the canceled one in the Replaced Procedure Step
Sequence (0074,1224).

**Prior studies** (issue 17; products whose routing rules declare ``priors``): the workitem
is created with Input Readiness State INCOMPLETE (PS3.4 CC.2.5.1.3: its inputs are not all
available yet). When the hospital finds priors, their instances are added to the Input
Information Sequence, each item marked as a prior by a **Purpose of Reference Code
Sequence** (0040,A170) item ``(121079, DCM, "Baseline")`` — PS3.16 CID 7003 "Diagnostic
Imaging Report Purposes of Reference": the earlier images the current ones are compared
with (:data:`PRIOR_PURPOSE`; :func:`prior_information`, read back by
:func:`prior_inputs`). When none can be had (none found, the search failed, or the wait
ran out) the workitem still becomes READY and says why in its **Scheduled Processing
Parameters Sequence** (0074,1210), a TEXT content item (PS3.3 Table 10-2 Content Item
Macro) named ``(PRIORS-NONE, 99AIFI, "Prior studies not available")``
(:func:`priors_unavailable_item`, read back by :func:`priors_unavailable_reason`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.ihe_profiles.rules import Decision, Product

PATIENT_KEYS = ("00100010", "00100020", "00100030", "00100040")
"""Patient's Name, Patient ID, Patient's Birth Date, Patient's Sex."""
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
ACCESSION_NUMBER = "00080050"
INPUT_INFORMATION = "00404021"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"
TYPE_OF_INSTANCES = "0040E020"
WADO_RS_RETRIEVAL = "0040E025"
RETRIEVE_URL = "00081190"
SCHEDULED_WORKITEM_CODE = "00404018"
PRIORITY = "00741200"
PROCEDURE_STEP_LABEL = "00741204"
SCHEDULED_START = "00404005"
EXPECTED_COMPLETION = "00404011"
INPUT_READINESS_STATE = "00404041"
REPLACED_PROCEDURE_STEP = "00741224"
SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = "00080018"
UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"


def _el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def dicom_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def product_code(product: Product) -> DicomJson:
    """The Code Sequence item naming the product (PS3.3 Table 8.8-1)."""
    return {
        "00080100": _el("SH", product.code),
        "00080102": _el("SH", product.scheme),
        "00080104": _el("LO", product.name),
    }


def input_information(study_uid: str, decision: Decision) -> list[DicomJson]:
    """Input Information Sequence items: one per input series (AIW-I)."""
    by_series: dict[str, list[tuple[str, str]]] = {}
    for series_uid, sop_uid, sop_class in decision.input_instances:
        by_series.setdefault(series_uid, []).append((sop_uid, sop_class))
    items = []
    for series_uid in decision.input_series:
        refs = [
            {REFERENCED_SOP_CLASS: _el("UI", cls), REFERENCED_SOP_INSTANCE: _el("UI", sop)}
            for sop, cls in by_series.get(series_uid, [])
        ]
        if not refs:
            continue
        items.append(
            {
                STUDY_INSTANCE_UID: _el("UI", study_uid),
                SERIES_INSTANCE_UID: _el("UI", series_uid),
                TYPE_OF_INSTANCES: _el("CS", "DICOM"),
                REFERENCED_SOP_SEQUENCE: _el("SQ", *refs),
                WADO_RS_RETRIEVAL: _el(
                    "SQ",
                    {RETRIEVE_URL: _el("UR", f"studies/{study_uid}/series/{series_uid}")},
                ),
            }
        )
    return items


def input_uids(workitem: Mapping[str, Any]) -> frozenset[str]:
    """SOP Instance UIDs a workitem's Input Information Sequence references."""
    out: set[str] = set()
    for item in dicom_json.items(workitem, INPUT_INFORMATION):
        for ref in dicom_json.items(item, REFERENCED_SOP_SEQUENCE):
            out.update(dicom_json.values(ref, REFERENCED_SOP_INSTANCE))
    return frozenset(out)


def decision_uids(decision: Decision) -> frozenset[str]:
    return frozenset(sop for _series, sop, _cls in decision.input_instances)


def new_workitem(
    decision: Decision,
    study_attributes: Mapping[str, Any],
    now: datetime,
    *,
    replaces: tuple[str, ...] = (),
) -> DicomJson:
    """The UPS the Task Manager creates for a matched product (RAD-80)."""
    product = decision.product
    study_uid = (dicom_json.values(study_attributes, STUDY_INSTANCE_UID) or [""])[0]
    ds: DicomJson = {
        key: study_attributes[key]
        for key in (*PATIENT_KEYS, ACCESSION_NUMBER)
        if key in study_attributes
    }
    for key in PATIENT_KEYS:
        ds.setdefault(
            key, {"vr": {"00100010": "PN", "00100020": "LO", "00100030": "DA"}.get(key, "CS")}
        )
    ds[STUDY_INSTANCE_UID] = _el("UI", study_uid)
    ds[PRIORITY] = _el("CS", product.priority)
    ds[PROCEDURE_STEP_LABEL] = _el("LO", product.name[:64])
    ds[SCHEDULED_START] = _el("DT", dicom_datetime(now))
    ds[EXPECTED_COMPLETION] = _el(
        "DT", dicom_datetime(now + timedelta(minutes=product.norm_turnaround_minutes))
    )
    ds[SCHEDULED_WORKITEM_CODE] = _el("SQ", product_code(product))
    # a product that compares with priors waits for them (issue 17; PS3.4 CC.2.5.1.3)
    ds[INPUT_READINESS_STATE] = _el("CS", "INCOMPLETE" if product.priors else "READY")
    ds[INPUT_INFORMATION] = _el("SQ", *input_information(study_uid, decision))
    if replaces:
        ds[REPLACED_PROCEDURE_STEP] = _el(
            "SQ",
            *(
                {SOP_CLASS_UID: _el("UI", UPS_PUSH_SOP_CLASS), SOP_INSTANCE_UID: _el("UI", uid)}
                for uid in replaces
            ),
        )
    return ds


def absolutize_retrieve_urls(workitem: DicomJson, service: str) -> DicomJson:
    """A copy whose relative Retrieve URLs (WADO-RS Retrieval Sequence in the Input
    Information Sequence) start with ``service`` (the DICOMweb service root)."""
    items = (workitem.get(INPUT_INFORMATION) or {}).get("Value")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return workitem  # nothing to make absolute (or not a sequence this code wrote)
    out = dict(workitem)
    new_items = []
    for item in items:
        item = dict(item)
        retrievals = (item.get(WADO_RS_RETRIEVAL) or {}).get("Value")
        if isinstance(retrievals, list) and all(isinstance(r, dict) for r in retrievals):
            fixed = []
            for r in retrievals:
                r = dict(r)
                urls = dicom_json.values(r, RETRIEVE_URL)
                r[RETRIEVE_URL] = _el("UR", *(_absolute(u, service) for u in urls))
                fixed.append(r)
            item[WADO_RS_RETRIEVAL] = _el("SQ", *fixed)
        new_items.append(item)
    out[INPUT_INFORMATION] = _el("SQ", *new_items)
    return out


def _absolute(url: str, service: str) -> str:
    if url.startswith(("http://", "https://")):
        return url
    return service.rstrip("/") + "/" + url.lstrip("/")


def study_level(instances: Iterable[Mapping[str, Any]]) -> DicomJson:
    """Patient/study attributes of the first instance (for the workitem header)."""
    for first in instances:
        return {
            k: v
            for k, v in first.items()
            if k in (*PATIENT_KEYS, ACCESSION_NUMBER, STUDY_INSTANCE_UID)
        }
    return {}


# --- prior studies (issue 17) ------------------------------------------------------------

PURPOSE_OF_REFERENCE = "0040A170"
SCHEDULED_PROCESSING_PARAMETERS = "00741210"
VALUE_TYPE = "0040A040"
CONCEPT_NAME_CODE = "0040A043"
TEXT_VALUE = "0040A160"
CODE_VALUE = "00080100"
CODING_SCHEME = "00080102"
CODE_MEANING = "00080104"
PRIOR_PURPOSE = ("121079", "DCM", "Baseline")
"""Purpose of Reference of a prior study's Input Information item: PS3.16 CID 7003."""
PRIORS_NONE = ("PRIORS-NONE", "99AIFI", "Prior studies not available")
"""Concept name of the Scheduled Processing Parameters item saying why there are none."""


def _code_item(code: tuple[str, str, str]) -> DicomJson:
    value, scheme, meaning = code
    return {
        CODE_VALUE: _el("SH", value),
        CODING_SCHEME: _el("SH", scheme),
        CODE_MEANING: _el("LO", meaning),
    }


def _has_code(item: Mapping[str, Any], tag: str, code: tuple[str, str, str]) -> bool:
    return any(
        dicom_json.values(c, CODE_VALUE)[:1] == [code[0]]
        and dicom_json.values(c, CODING_SCHEME)[:1] == [code[1]]
        for c in dicom_json.items(item, tag)
    )


def is_prior_item(item: Mapping[str, Any]) -> bool:
    """An Input Information Sequence item that references a prior study."""
    return _has_code(item, PURPOSE_OF_REFERENCE, PRIOR_PURPOSE)


def prior_information(instances: Iterable[tuple[str, str, str, str]]) -> list[DicomJson]:
    """Input Information Sequence items for prior studies' instances, given as (Study,
    Series, SOP Instance, SOP Class UID): one item per series, marked as a prior."""
    by_series: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for study_uid, series_uid, sop_uid, sop_class in instances:
        by_series.setdefault((study_uid, series_uid), []).append((sop_uid, sop_class))
    items = []
    for (study_uid, series_uid), refs in by_series.items():
        items.append(
            {
                STUDY_INSTANCE_UID: _el("UI", study_uid),
                SERIES_INSTANCE_UID: _el("UI", series_uid),
                TYPE_OF_INSTANCES: _el("CS", "DICOM"),
                REFERENCED_SOP_SEQUENCE: _el(
                    "SQ",
                    *(
                        {REFERENCED_SOP_CLASS: _el("UI", c), REFERENCED_SOP_INSTANCE: _el("UI", u)}
                        for u, c in refs
                    ),
                ),
                WADO_RS_RETRIEVAL: _el(
                    "SQ", {RETRIEVE_URL: _el("UR", f"studies/{study_uid}/series/{series_uid}")}
                ),
                PURPOSE_OF_REFERENCE: _el("SQ", _code_item(PRIOR_PURPOSE)),
            }
        )
    return items


def prior_items(workitem: Mapping[str, Any]) -> list[DicomJson]:
    """The Input Information Sequence items of ``workitem`` that reference priors."""
    return [dict(i) for i in dicom_json.items(workitem, INPUT_INFORMATION) if is_prior_item(i)]


def current_input_uids(workitem: Mapping[str, Any]) -> frozenset[str]:
    """SOP Instance UIDs of the workitem's own study's inputs (priors left out)."""
    out: set[str] = set()
    for item in dicom_json.items(workitem, INPUT_INFORMATION):
        if not is_prior_item(item):
            for ref in dicom_json.items(item, REFERENCED_SOP_SEQUENCE):
                out.update(dicom_json.values(ref, REFERENCED_SOP_INSTANCE))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class PriorInput:
    """One series of a prior study listed in a workitem's Input Information Sequence."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    retrieve_url: str | None


def prior_inputs(workitem_json: Mapping[str, Any]) -> list[PriorInput]:
    """The prior studies' series a workitem lists (marked with :data:`PRIOR_PURPOSE`), in
    order; empty when it has none. How a product tells priors from its current inputs."""
    out = []
    for item in prior_items(workitem_json):
        urls = [
            u
            for r in dicom_json.items(item, WADO_RS_RETRIEVAL)
            for u in dicom_json.values(r, RETRIEVE_URL)
        ]
        out.append(
            PriorInput(
                study_instance_uid=str((dicom_json.values(item, STUDY_INSTANCE_UID) or [""])[0]),
                series_instance_uid=str((dicom_json.values(item, SERIES_INSTANCE_UID) or [""])[0]),
                sop_instance_uids=tuple(
                    str(v)
                    for ref in dicom_json.items(item, REFERENCED_SOP_SEQUENCE)
                    for v in dicom_json.values(ref, REFERENCED_SOP_INSTANCE)
                ),
                retrieve_url=str(urls[0]) if urls else None,
            )
        )
    return out


def priors_unavailable_item(reason: str) -> DicomJson:
    """The Scheduled Processing Parameters Sequence item saying why a workitem that wanted
    priors runs without them (TEXT content item, PS3.3 Table 10-2)."""
    return {
        VALUE_TYPE: _el("CS", "TEXT"),
        CONCEPT_NAME_CODE: _el("SQ", _code_item(PRIORS_NONE)),
        TEXT_VALUE: _el("UT", reason),
    }


def priors_unavailable_reason(workitem_json: Mapping[str, Any]) -> str | None:
    """Why the workitem runs without the priors its product wanted; None when it has them
    or never wanted any."""
    for item in dicom_json.items(workitem_json, SCHEDULED_PROCESSING_PARAMETERS):
        if _has_code(item, CONCEPT_NAME_CODE, PRIORS_NONE):
            return str((dicom_json.values(item, TEXT_VALUE) or [""])[0])
    return None
