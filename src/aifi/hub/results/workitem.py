"""What the results concept reads of a UPS workitem: its product, who ended it, the result
objects its completion names and the reason it was cancelled with."""

from __future__ import annotations

from typing import Literal

from aifi.dicom_json import DicomJson, first, items
from aifi.errors import NotFound
from aifi.hub.persistence.tables import Workitem
from aifi.ihe_profiles.aiw import REFERENCED_SOP_INSTANCE, REFERENCED_SOP_SEQUENCE
from aifi.ihe_profiles.rules import Product, RulesConfig

PERFORMED_PROCEDURE = "00741216"
OUTPUT_INFORMATION = "00404033"
PROGRESS_INFORMATION = "00741002"
REASON_FOR_CANCELLATION = "00741238"

Cause = Literal["performer", "requester", "manager"]
"""Who ended a workitem: its performer (RAD-85 / discontinue), a requester (RAD-88, while
SCHEDULED) or the Task Manager (deadline)."""


def product_of(rules: RulesConfig, row: Workitem) -> Product | None:
    """The routing rules' product of a workitem (its routed product, else its code)."""
    for code in (row.product, row.workitem_code):
        if code:
            try:
                return rules.product(code)
            except NotFound:
                continue
    return None


def output_uids(ds: DicomJson) -> list[str]:
    """SOP Instance UIDs in the Output Information Sequence of the UPS Performed Procedure
    Sequence (PS3.4 Table CC.2.5-3), in order."""
    found: list[str] = []
    for performed in items(ds, PERFORMED_PROCEDURE):
        for output in items(performed, OUTPUT_INFORMATION):
            for ref in items(output, REFERENCED_SOP_SEQUENCE):
                uid = first(ref, REFERENCED_SOP_INSTANCE)
                if uid and str(uid) not in found:
                    found.append(str(uid))
    return found


def cancellation_reason(ds: DicomJson) -> str | None:
    """The Reason For Cancellation of the UPS Progress Information (PS3.4 Table CC.2.5-3)."""
    for item in items(ds, PROGRESS_INFORMATION):
        text = first(item, REASON_FOR_CANCELLATION)
        if text:
            return str(text)
    return None
