"""UPS workitems for tests (DICOM JSON, PS3.18 F.2), as a Task Requester or performer
would send them."""

from __future__ import annotations

from typing import Any

from pydicom.uid import generate_uid

DicomJson = dict[str, Any]


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def code(value: str, scheme: str, meaning: str) -> DicomJson:
    return {
        "00080100": element("SH", value),
        "00080102": element("SH", scheme),
        "00080104": element("LO", meaning),
    }


def new_workitem(
    *,
    study_uid: str | None = None,
    label: str = "Bone age",
    priority: str = "MEDIUM",
    product: str = "AIFI-BONEAGE",
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    readiness: str = "READY",
) -> DicomJson:
    """A SCHEDULED workitem as a Task Requester creates it (RAD-80)."""
    study_uid = study_uid or str(generate_uid())
    return {
        "00100010": element("PN", {"Alphabetic": patient_name}),
        "00100020": element("LO", patient_id),
        "0020000D": element("UI", study_uid),
        "00741200": element("CS", priority),
        "00741204": element("LO", label),
        "00404005": element("DT", "20261123101500"),
        "00404041": element("CS", readiness),
        "00404018": element("SQ", code(product, "99AIFI", label)),
        "00404021": element(
            "SQ",
            {
                "0020000D": element("UI", study_uid),
                "0020000E": element("UI", "1.2.3.4.5"),
                "00081199": element(
                    "SQ",
                    {
                        "00081150": element("UI", "1.2.840.10008.5.1.4.1.1.1.1"),
                        "00081155": element("UI", "1.2.3.4.5.6"),
                    },
                ),
            },
        ),
    }


def state_change(state: str, transaction_uid: str | None) -> DicomJson:
    body: DicomJson = {"00741000": element("CS", state)}
    if transaction_uid:
        body["00081195"] = element("UI", transaction_uid)
    return body


def completion(output_sop: tuple[str, str, str] | None = None) -> DicomJson:
    """The final-state attributes a performer sets before COMPLETED (PS3.4 Table CC.2.5-3):
    UPS Performed Procedure Sequence with start/end, the performed workitem code and the
    Output Information Sequence listing the result instances."""
    outputs = []
    if output_sop:
        study, series, sop = output_sop
        outputs.append(
            {
                "0020000D": element("UI", study),
                "0020000E": element("UI", series),
                "00081199": element(
                    "SQ",
                    {
                        "00081150": element("UI", "1.2.840.10008.5.1.4.1.1.88.22"),
                        "00081155": element("UI", sop),
                    },
                ),
            }
        )
    return {
        "00741216": element(
            "SQ",
            {
                "00404050": element("DT", "20261123101600"),
                "00404051": element("DT", "20261123101700"),
                "00404019": element("SQ", code("AIFI-BONEAGE", "99AIFI", "Bone age")),
                "00404033": element("SQ", *outputs),
            },
        )
    }
