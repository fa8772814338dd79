"""A routed study as the FHIR mapping's :class:`~aifi.fhir.views.StudyView` (ImagingStudy
and Patient, identifier only), read from the study's stored DICOM JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.fhir.views import InstanceView, PatientView, SeriesView, StudyView

PATIENT_ID = "00100020"
ISSUER_OF_PATIENT_ID = "00100021"
ACCESSION_NUMBER = "00080050"
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
SOP_CLASS_UID = "00080016"
INSTANCE_NUMBER = "00200013"
SERIES_NUMBER = "00200011"
MODALITY = "00080060"
SERIES_DESCRIPTION = "0008103E"
STUDY_DESCRIPTION = "00081030"
BODY_PART = "00180015"
STUDY_DATE = "00080020"
STUDY_TIME = "00080030"


def text_of(ds: DicomJson, tag: str) -> str | None:
    """The first value of ``tag`` as trimmed text (a person name's alphabetic form), or
    None when it is empty."""
    value = dicom_json.first(ds, tag)
    if value is None:
        return None
    if isinstance(value, dict):  # PN
        return str(value.get("Alphabetic") or "") or None
    text = str(value).strip()
    return text or None


def patient_of(ds: DicomJson) -> PatientView | None:
    patient_id = text_of(ds, PATIENT_ID)
    if not patient_id:
        return None
    return PatientView(patient_id=patient_id, issuer=text_of(ds, ISSUER_OF_PATIENT_ID))


def _started(ds: DicomJson) -> datetime | None:
    date = text_of(ds, STUDY_DATE)
    if not date or len(date) != 8 or not date.isdigit():
        return None
    time = (text_of(ds, STUDY_TIME) or "").split(".")[0].ljust(6, "0")[:6]
    if not time.isdigit():
        time = "000000"
    try:
        return datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def study_view(metadata: Sequence[DicomJson], wado_rs_base: str) -> StudyView:
    """The ImagingStudy view of a study from its instances' DICOM JSON (the store's
    ``instance_metadata``)."""
    first = metadata[0]
    series: dict[str, tuple[DicomJson, list[InstanceView]]] = {}
    for ds in metadata:
        uid = text_of(ds, SERIES_INSTANCE_UID) or ""
        entry = series.setdefault(uid, (ds, []))
        number = dicom_json.first(ds, INSTANCE_NUMBER)
        entry[1].append(
            InstanceView(
                sop_instance_uid=text_of(ds, SOP_INSTANCE_UID) or "",
                sop_class_uid=text_of(ds, SOP_CLASS_UID) or "",
                instance_number=int(number) if isinstance(number, int | float) else None,
            )
        )
    views = []
    for uid, (ds, instances) in series.items():
        number = dicom_json.first(ds, SERIES_NUMBER)
        views.append(
            SeriesView(
                series_instance_uid=uid,
                modality=text_of(ds, MODALITY),
                series_number=int(number) if isinstance(number, int | float) else None,
                description=text_of(ds, SERIES_DESCRIPTION),
                body_part=text_of(ds, BODY_PART),
                instances=tuple(instances),
            )
        )
    return StudyView(
        study_instance_uid=text_of(first, STUDY_INSTANCE_UID) or "",
        patient=patient_of(first),
        accession_number=text_of(first, ACCESSION_NUMBER),
        started=_started(first),
        description=text_of(first, STUDY_DESCRIPTION),
        series=tuple(views),
        wado_rs_base=wado_rs_base,
    )
