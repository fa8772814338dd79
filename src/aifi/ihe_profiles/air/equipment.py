"""Algorithm identification of an AI result (IHE RAD TF AIR, "algorithm identification").

IHE AIR identifies the AI model that produced a result by an item of the Contributing
Equipment Sequence (0018,A001) (PS3.3 C.12.1, SOP Common Module) whose Purpose of Reference
Code Sequence is (109102, DCM, "Processing Equipment") and which carries Manufacturer,
Manufacturer's Model Name, Software Versions and Device UID — a new Device UID whenever
the model is retrained. highdicom's ``ContributingEquipment`` has no Device UID, so the
item is built here with pydicom. Where the SR content also holds TID 4019 Algorithm
Identification, Algorithm Name (111001) is the model name and Algorithm Version (111003)
the software version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from aifi.ihe_profiles.air.codes import PROCESSING_EQUIPMENT

#: PS3.5 §9.1 UID syntax: dot-separated numeric components, no leading zeros, ≤ 64 chars.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: object) -> bool:
    """True if ``value`` is a syntactically valid DICOM UID (PS3.5 §9.1)."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


@dataclass(frozen=True, slots=True)
class AlgorithmIdentity:
    """Who made a result: the AI product (manufacturer, model, version) and its Device UID.

    Valid once built: every field non-empty, LO-sized (≤ 64 characters) and
    ``device_uid`` a DICOM UID.
    """

    manufacturer: str
    model_name: str
    software_version: str
    device_uid: str

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model_name", "software_version"):
            value = getattr(self, name)
            if not value or len(value) > 64 or "\\" in value:
                raise ValueError(f"AlgorithmIdentity.{name} must be 1-64 characters: {value!r}")
        if not is_valid_uid(self.device_uid):
            raise ValueError(
                f"AlgorithmIdentity.device_uid is not a DICOM UID: {self.device_uid!r}"
            )

    def contributing_equipment(self) -> Dataset:
        """One item of the Contributing Equipment Sequence (0018,A001) as IHE AIR asks."""
        item = Dataset()
        item.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(*PROCESSING_EQUIPMENT)])
        item.Manufacturer = self.manufacturer
        item.ManufacturerModelName = self.model_name
        item.SoftwareVersions = self.software_version
        item.DeviceUID = self.device_uid
        return item

    def apply(self, ds: Dataset) -> None:
        """Set ``ds``'s General Equipment (PS3.3 C.7.5.1) and Contributing Equipment to this
        algorithm, replacing any Contributing Equipment item with purpose 109102.

        The Device UID goes in the Contributing Equipment item only: dciodvfy does not
        know Device UID (0018,1002) in the General Equipment Module of these IODs."""
        ds.Manufacturer = self.manufacturer
        ds.ManufacturerModelName = self.model_name
        ds.SoftwareVersions = self.software_version
        kept = [
            item
            for item in ds.get("ContributingEquipmentSequence", [])
            if not _has_processing_purpose(item)
        ]
        ds.ContributingEquipmentSequence = DicomSequence([*kept, self.contributing_equipment()])

    @classmethod
    def from_dataset(cls, ds: Dataset) -> AlgorithmIdentity | None:
        """The identity in ``ds``'s first Contributing Equipment item with purpose 109102, or
        ``None`` when there is none or it is incomplete/invalid (tolerant reader)."""
        item = processing_equipment_item(ds)
        if item is None:
            return None
        try:
            return cls(
                manufacturer=str(item.get("Manufacturer", "") or ""),
                model_name=str(item.get("ManufacturerModelName", "") or ""),
                software_version=_first(item.get("SoftwareVersions", "")),
                device_uid=str(item.get("DeviceUID", "") or ""),
            )
        except ValueError:
            return None


def _first(value: object) -> str:
    """First value of a possibly multi-valued element, as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        values = list(value)  # type: ignore[call-overload]
    except TypeError:
        return str(value)
    return str(values[0]) if values else ""


def _has_processing_purpose(item: Dataset) -> bool:
    for code in item.get("PurposeOfReferenceCodeSequence", []):
        if (
            code.get("CodeValue") == PROCESSING_EQUIPMENT.value
            and code.get("CodingSchemeDesignator") == PROCESSING_EQUIPMENT.scheme_designator
        ):
            return True
    return False


def processing_equipment_item(ds: Dataset) -> Dataset | None:
    """The first Contributing Equipment item whose purpose is (109102, DCM), if any."""
    for item in ds.get("ContributingEquipmentSequence", []):
        if _has_processing_purpose(item):
            return item  # type: ignore[no-any-return]
    return None
