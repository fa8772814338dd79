"""Re-identification of one result instance before it may enter the PACS (issue 15 point 6,
PS3.15 E.1.2: re-identification by the party that holds the mapping).

The work itself is the :class:`~aifi.gateway.deid.Reidentifier`'s (every pseudonymous UID at
any depth mapped back, the patient's and the study's identification restored). This step
wraps it and checks its output once more, independently, because a slip here puts an
object into the wrong patient's record or leaves a pseudonym in the archive:

* the object must be in the *original* study (Study Instance UID from the pseudonym map);
* its Patient ID must no longer be the patient's pseudonym;
* no UI element anywhere (sequences included) may still be a pseudonym the map knows;
* no text element may still hold the patient's pseudonym or the pseudonymous accession.

Any of these raises :class:`~aifi.gateway.deid.types.NotReidentifiable` with the reason;
the result is then refused, not delivered.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from aifi.errors import InvalidRequest
from aifi.gateway.deid.types import NotReidentifiable, PseudonymLookup, StudyIdentity

_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_MIN_WORD = 6
"""Shorter pseudonyms are not searched for in free text (too many chance matches)."""


class FileReidentifier(Protocol):
    """What this step needs of :class:`aifi.gateway.deid.Reidentifier`."""

    def reidentify_file(self, data: bytes) -> bytes:
        """Part 10 in, Part 10 out; raises NotReidentifiable."""
        ...


@dataclass(frozen=True, slots=True)
class ReidentifiedInstance:
    """A re-identified Part 10 file and the identifiers of its header."""

    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    pseudo_sop_instance_uid: str | None


def header(data: bytes) -> Dataset:
    """The header of a Part 10 file (no pixel data); NotReidentifiable when unreadable."""
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise NotReidentifiable(f"not a readable DICOM instance: {exc}") from exc


def leftover_pseudonyms(ds: Dataset, lookup: PseudonymLookup, study: StudyIdentity) -> list[str]:
    """What in ``ds`` is still pseudonymous (empty when nothing): UIDs the map knows as
    pseudonyms, and the patient or accession pseudonym in any text, at any depth."""
    found: list[str] = []
    words = {w for w in (study.patient_pseudo_id, study.accession_pseudo) if len(w) >= _MIN_WORD}
    originals: dict[str, str | None] = {}  # one look-up per distinct UID
    for element in ds.iterall():
        if element.VR == "UI":
            values = element.value if element.VM > 1 else [element.value]
            for value in (str(v) for v in values if v):
                if value not in originals:
                    originals[value] = lookup.original_uid(value)
                original = originals[value]
                if original is not None and original != value:  # equal: Retain UIDs
                    found.append(f"{element.name} {element.tag} = {value}")
        elif element.VR in _TEXT_VRS and words and element.value is not None:
            text = str(element.value)
            for word in words:
                if word in text:
                    found.append(f"{element.name} {element.tag} holds the pseudonym {word!r}")
    return found


def reidentify_instance(
    data: bytes,
    reidentifier: FileReidentifier,
    lookup: PseudonymLookup,
    study: StudyIdentity,
) -> ReidentifiedInstance:
    """``data`` (a result as the hub holds it) re-identified and checked (module docstring);
    NotReidentifiable with the reason otherwise."""
    pseudo = header(data)
    pseudo_uid = str(pseudo.get("SOPInstanceUID", "")) or None
    if str(pseudo.get("StudyInstanceUID", "")) != study.pseudo_study_uid:
        raise NotReidentifiable(
            f"instance {pseudo_uid} is in study {pseudo.get('StudyInstanceUID')}, not in the"
            f" study of its request ({study.pseudo_study_uid})"
        )
    try:
        out = reidentifier.reidentify_file(data)
    except InvalidRequest as exc:  # unreadable for the re-identifier: never deliverable
        raise NotReidentifiable(f"instance {pseudo_uid}: {exc.reason}") from exc
    ds = header(out)
    if str(ds.get("StudyInstanceUID", "")) != study.original_study_uid:
        raise NotReidentifiable(
            f"instance {pseudo_uid}: re-identified into study {ds.get('StudyInstanceUID')},"
            f" not the original study"
        )
    if study.patient_pseudo_id and str(ds.get("PatientID", "")) == study.patient_pseudo_id:
        raise NotReidentifiable(f"instance {pseudo_uid}: Patient ID is still the pseudonym")
    leftovers = leftover_pseudonyms(ds, lookup, study)
    if leftovers:
        shown = "; ".join(leftovers[:5])
        if len(leftovers) > 5:
            shown += f" and {len(leftovers) - 5} more"
        raise NotReidentifiable(f"instance {pseudo_uid} still holds pseudonyms: {shown}")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            raise NotReidentifiable(f"instance {pseudo_uid}: re-identified without {keyword}")
    if not syntax:
        raise NotReidentifiable(f"instance {pseudo_uid}: re-identified without a transfer syntax")
    return ReidentifiedInstance(
        data=out,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=syntax,
        pseudo_sop_instance_uid=pseudo_uid,
    )


def not_performed_instance(
    study: StudyIdentity,
    lookup: PseudonymLookup,
    *,
    product: str,
    reason: str,
    workitem_uid: str,
    when: datetime,
) -> ReidentifiedInstance:
    """The gateway's "AI analysis not performed" report
    (:func:`aifi.ihe_profiles.air.not_performed.not_performed_report`) in the original
    study, its patient and study identification from the pseudonym map: nothing
    pseudonymous is ever in it. NotReidentifiable when the map has no patient."""
    patient = lookup.patient(study.patient_pseudo_id)
    if patient is None:
        raise NotReidentifiable(
            f"the patient of study {study.pseudo_study_uid} is not in the pseudonym map"
        )
    original = Dataset.from_json(dict(patient.identity)) if patient.identity else Dataset()
    if study.identity:
        original.update(Dataset.from_json(dict(study.identity)))
    original.StudyInstanceUID = study.original_study_uid
    if not original.get("PatientID") and patient.original_id:
        original.PatientID = patient.original_id
    if not original.get("IssuerOfPatientID") and patient.issuer:
        original.IssuerOfPatientID = patient.issuer
    # imported here: the AIR builders bring highdicom (tens of MB), which the workers'
    # process needs only when a request failed
    from aifi.ihe_profiles.air.not_performed import not_performed_report

    ds = not_performed_report(
        original, product=product, reason=reason, workitem_uid=workitem_uid, when=when
    )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return ReidentifiedInstance(
        data=buffer.getvalue(),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        pseudo_sop_instance_uid=None,
    )
