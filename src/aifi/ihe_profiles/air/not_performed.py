"""The answer to an AI request that produced no result: a Basic Text SR (PS3.3 A.35.1)
titled "AI analysis not performed", authored by aifi-hub, in the original study.

Issue 15 point 7: every AI request ends with something a radiologist sees in the PACS. A
workitem that failed or was cancelled for good (PS3.4 CC.1.1: a CANCELED UPS; or a
COMPLETED one that named no output, "no result objects") has no object of the product to
show, so the gateway authors this small report instead; the absence of a result never
has to be interpreted.

Why a Basic Text SR and not a Key Object Selection: a KOS (A.35.4) must select at least
one instance (Current Requested Procedure Evidence is Type 1) and its title comes from
CID 7010, which has nothing meaning "not performed"; a Basic Text SR needs no evidence,
and every PACS viewer shows its title and text.

The content tree follows PS3.16 TID 2000 (Basic Diagnostic Imaging Report) in shape, not
by claim (no Content Template Sequence): root CONTAINER with the document title; the
device observer context (TID 1002/1004: Observer Type "Device", Device Observer UID,
Name, Manufacturer) as HAS OBS CONTEXT; a Finding (121071, DCM) TEXT "AI analysis not
performed — <product>: <reason>" and an Algorithm Name (111001, DCM) TEXT with the product,
as CONTAINS. Relationships are those Table A.35.1-2 allows for a Basic Text SR.

Pure and deterministic: the Series and SOP Instance UIDs are ``2.25`` UIDs derived from the
workitem UID (PS3.5 B.2), so building the report again for the same request gives the same
instance, which a PACS stores once (PS3.4 B.4.1); the content date is the caller's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from aifi.ihe_profiles.air._common import carry_over
from aifi.ihe_profiles.air.codes import ALGORITHM_NAME, FINDING, CodeTriple
from aifi.ihe_profiles.air.equipment import is_valid_uid

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
"""Basic Text SR Storage (PS3.4 Table B.5-1)."""

NOT_PERFORMED = CodeTriple("AIFI-NOTDONE", "99AIFI", "AI analysis not performed")
"""Document title (CID 7000 is extensible; no standard code says "not performed")."""
OBSERVER_TYPE = CodeTriple("121005", "DCM", "Observer Type")
DEVICE = CodeTriple("121007", "DCM", "Device")
DEVICE_OBSERVER_UID = CodeTriple("121012", "DCM", "Device Observer UID")
DEVICE_OBSERVER_NAME = CodeTriple("121013", "DCM", "Device Observer Name")
DEVICE_OBSERVER_MANUFACTURER = CodeTriple("121014", "DCM", "Device Observer Manufacturer")

NOT_PERFORMED_SERIES_NUMBER = 9199
AUTHOR = "aifi-hub"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aifi-hub:not-performed")


def _uid(*names: str) -> str:
    """A ``2.25`` UID from a name-based (SHA-1, RFC 4122 version 5) UUID (PS3.5 B.2): the
    same names always give the same UID."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join(names)).int}"


AUTHOR_DEVICE_UID = _uid("device", AUTHOR)
"""The Device Observer UID of the authoring device (the same on every installation)."""

_TEXT = "AI analysis not performed — {product}: {reason}"


def not_performed_uids(workitem_uid: str) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the report for ``workitem_uid``:
    ``2.25`` UIDs from name-based UUIDs of it (PS3.5 B.2), the same on every run."""
    return _uid("series", workitem_uid), _uid("instance", workitem_uid)


def not_performed_text(product: str, reason: str) -> str:
    """The sentence a radiologist reads."""
    return _TEXT.format(product=product, reason=reason or "no reason given")


def _code(code: CodeTriple) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _item(relationship: str, value_type: str, concept: CodeTriple, value: Any) -> Dataset:
    """One content item (PS3.3 C.17.3) of a by-value relationship."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([_code(concept)])
    if value_type == "TEXT":
        item.TextValue = value
    elif value_type == "UIDREF":
        item.UID = value
    elif value_type == "CODE":
        item.ConceptCodeSequence = DicomSequence([_code(value)])
    else:  # pragma: no cover - only the three above are built here
        raise ValueError(f"unsupported value type {value_type}")
    return item


def _original(attributes: Dataset | Mapping[str, Any]) -> Dataset:
    if isinstance(attributes, Dataset):
        return attributes
    return Dataset.from_json(dict(attributes))


def not_performed_report(
    original: Dataset | Mapping[str, Any],
    *,
    product: str,
    reason: str,
    workitem_uid: str,
    when: datetime,
    product_code: str | None = None,
    manufacturer: str = AUTHOR,
) -> Dataset:
    """The Basic Text SR telling that ``product`` did not analyse the study (module
    docstring).

    ``original`` holds the original study's Patient (PS3.3 C.7.1.1) and General Study
    (C.7.2.1) attributes — a dataset or DICOM JSON (PS3.18 F.2) — with Study Instance UID;
    ``product`` is the product's name as the hospital knows it (``product_code`` its
    Scheduled Workitem Code, shown beside it when different); ``reason`` why it did not
    run; ``when`` the content date and time. ValueError when the study has no valid Study
    Instance UID or the product or workitem UID is missing."""
    source = _original(original)
    study_uid = str(source.get("StudyInstanceUID", ""))
    if not is_valid_uid(study_uid):
        raise ValueError(f"the original study has no valid Study Instance UID: {study_uid!r}")
    if not is_valid_uid(workitem_uid):
        raise ValueError(f"not a workitem UID: {workitem_uid!r}")
    if not product.strip():
        raise ValueError("the product must be named")
    name = product if not product_code or product_code == product else f"{product} ({product_code})"
    series_uid, sop_uid = not_performed_uids(workitem_uid)
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    ds = Dataset()
    carry_over(ds, source)  # Patient and General Study, Type 2 ones even if empty
    ds.SpecificCharacterSet = "ISO_IR 192"  # the text has an em dash; names may be any script
    # SOP Common (C.12.1)
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # SR Document Series (C.17.1)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = NOT_PERFORMED_SERIES_NUMBER
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = NOT_PERFORMED.meaning
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    # General Equipment (C.7.5.1)
    ds.Manufacturer = manufacturer
    # SR Document General (C.17.2)
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = DicomSequence()
    # SR Document Content (C.17.3): the root container and its children
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code(NOT_PERFORMED)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(
        [
            _item("HAS OBS CONTEXT", "CODE", OBSERVER_TYPE, DEVICE),
            _item("HAS OBS CONTEXT", "UIDREF", DEVICE_OBSERVER_UID, AUTHOR_DEVICE_UID),
            _item("HAS OBS CONTEXT", "TEXT", DEVICE_OBSERVER_NAME, manufacturer),
            _item("HAS OBS CONTEXT", "TEXT", DEVICE_OBSERVER_MANUFACTURER, manufacturer),
            _item("CONTAINS", "TEXT", FINDING, not_performed_text(name, reason)),
            _item("CONTAINS", "TEXT", ALGORITHM_NAME, name),
        ]
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


__all__ = [
    "BASIC_TEXT_SR",
    "NOT_PERFORMED",
    "not_performed_report",
    "not_performed_text",
    "not_performed_uids",
]
