"""A PHI-planted instance generated from the action table itself: every attribute of PS3.15
Table E.1-1 that a generator can fill (iterating the package's own rows, filled by VR), the
same inside nested sequences, private elements and the patient's name inside descriptions.
After pseudonymisation, a scan of every value at every depth and of the written bytes finds
none of the planted identifiers nor any original UID, under each profile."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from datetime import date, timedelta

import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import PersonName

from aifi.gateway.deid import Option, Profile, Pseudonymiser, SafePrivate
from aifi.gateway.deid.table import Action, resolve, rows

KEY = b"planted-phi-test-key-0123456789ab"
FAMILY = "Vlasblom"
GIVEN = "Griet"
PATIENT_ID = "MRN-4471"
ACCESSION = "ACC-99817"
STRING_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
BYTE_VRS = {"OB", "OW", "UN", "OB or OW"}
SAFE = SafePrivate(creator="AIFI SAFE", group=0x0011, element=0x01)

PROFILES = {
    "aifi-default": Profile(),
    "basic": Profile(options=frozenset({Option.BASIC})),
    "retain-everything": Profile(
        options=frozenset(
            {
                Option.BASIC,
                Option.RETAIN_DEVICE_IDENTITY,
                Option.RETAIN_INSTITUTION_IDENTITY,
                Option.RETAIN_PATIENT_CHARACTERISTICS,
                Option.RETAIN_LONGITUDINAL_FULL_DATES,
            }
        )
    ),
    "clean-everything": Profile(
        options=frozenset(
            {
                Option.BASIC,
                Option.CLEAN_DESCRIPTORS,
                Option.CLEAN_STRUCTURED_CONTENT,
                Option.CLEAN_GRAPHICS,
                Option.RETAIN_SAFE_PRIVATE,
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            }
        ),
        safe_private=frozenset({SAFE}),
    ),
    "retain-uids": Profile(options=frozenset({Option.BASIC, Option.RETAIN_UIDS})),
}


class Planter:
    """Plants a unique marker per attribute and remembers which must be gone."""

    def __init__(self, profile: Profile) -> None:
        self.table = resolve(profile.options)
        self.serial = 0
        self.gone: set[str] = set()
        self.gone_uids: set[str] = set()

    def _action(self, tag: int) -> Action | None:
        return self.table.lookup(tag)

    def removes(self, tag: int, vr: str) -> bool:
        """Whether the profile must remove the value planted at ``tag``."""
        action = self._action(tag)
        if action is None or action is Action.K:
            return False
        return not (action is Action.C and vr == "TM")

    def marker(self) -> str:
        self.serial += 1
        return f"PHI{self.serial:04d}X"

    def value(self, tag: int, vr: str) -> object | None:
        """A planted value for ``tag`` (None when the VR holds nothing identifying)."""
        gone = self.removes(tag, vr)
        if vr in STRING_VRS:
            marker = self.marker()
            if vr == "UR":
                text = f"urn:{marker}"
            elif self._action(tag) is Action.C:
                # A descriptor the clean action must empty of name, id, date and numbers.
                text = (
                    f"{FAMILY} {marker}"
                    if vr in ("SH", "CS", "AE")
                    else (f"CT {FAMILY} {GIVEN} {PATIENT_ID} 2023-01-05 {marker}")
                )
            else:
                text = marker
            if vr == "PN":
                text = f"{marker}^{GIVEN}"
            if gone:
                self.gone.add(marker)
            return text
        if vr == "UI":
            self.serial += 1
            uid = f"1.2.826.0.1.3680043.9.7777.1{self.serial:04d}"
            if gone:
                self.gone_uids.add(uid)
            return uid
        if vr in ("DA", "DT"):
            self.serial += 1
            day = (date(1931, 1, 1) + timedelta(days=self.serial)).strftime("%Y%m%d")
            if gone:
                self.gone.add(day)
            return day if vr == "DA" else day + "101010"
        if vr in BYTE_VRS:
            marker = self.marker()
            if gone:
                self.gone.add(marker)
            return marker.encode("ascii")
        return None

    def item(self, depth: int) -> Dataset:
        """A sequence item holding identifiers, a private element and (once) a nested item."""
        item = Dataset()
        for tag, vr in ((0x0040A123, "PN"), (0x00081155, "UI"), (0x00100020, "LO")):
            item.add_new(tag, vr, self.value(tag, vr))
        marker = self.marker()
        self.gone.add(marker)  # private: removed (not listed safe)
        item.add_new(0x00190010, "LO", "PHI CREATOR")
        item.add_new(0x00191001, "LO", marker)
        if depth < 2:
            nested = Dataset()
            id_marker = self.marker()
            if self.removes(0x00101002, "SQ"):
                self.gone.add(id_marker)
            nested.PatientID = id_marker
            item.OtherPatientIDsSequence = [nested]
        return item


def planted(
    profile: Profile, *, transfer_syntax: str = ExplicitVRLittleEndian
) -> tuple[Dataset, Planter]:
    planter = Planter(profile)
    ds = Dataset()
    for row in rows():
        if "x" in row.tag or "g" in row.tag:
            continue
        tag = int(row.tag[1:5] + row.tag[6:10], 16)
        if tag >> 16 in (0x0000, 0x0002, 0x0004):
            continue  # command, file meta and directory records are not instance content
        vr = dictionary_VR(tag)
        if vr == "SQ":
            ds.add_new(tag, "SQ", [planter.item(1)])
            continue
        value = planter.value(tag, vr)
        if value is not None:
            ds.add_new(tag, "OB" if vr == "OB or OW" else vr, value)
    # The identity the clean action works from, and a description naming the patient.
    ds.PatientName = f"{FAMILY}^{GIVEN}"
    ds.PatientID = PATIENT_ID
    ds.AccessionNumber = ACCESSION
    ds.PatientBirthDate = "19310101"
    ds.StudyDate = "20230105"
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    # Curve, overlay (wildcard rows) and private elements, top level.
    for tag, vr in ((0x50003000, "OB"), (0x60003000, "OW"), (0x60024000, "LT")):
        marker = planter.marker()
        if planter.table.lookup(tag) is not Action.K:
            planter.gone.add(marker)
        ds.add_new(tag, vr, marker.encode() if vr != "LT" else f"{FAMILY} {marker}")
    ds.add_new(0x00110010, "LO", SAFE.creator)
    ds.add_new(0x00111001, "LO", "SAFE-VALUE")
    private_marker = planter.marker()
    planter.gone.add(private_marker)
    ds.add_new(0x00111002, "LO", private_marker)
    ds.add_new(0x00130010, "LO", "OTHER CREATOR")
    other = planter.marker()
    planter.gone.add(other)
    ds.add_new(0x00131001, "LO", other)
    planter.gone.update({FAMILY, PATIENT_ID, ACCESSION})
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        if planter.removes(0x0020000D, "UI"):
            planter.gone_uids.add(uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.SourceApplicationEntityTitle = "PHISOURCEAE"
    ds.file_meta = meta
    return ds, planter


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def values(ds: Dataset) -> Iterator[tuple[str, str, str]]:
    """(keyword, VR, value as text) of every value at every depth, file meta included."""
    datasets = [ds] + ([ds.file_meta] if getattr(ds, "file_meta", None) is not None else [])
    while datasets:
        current = datasets.pop()
        for element in current:
            if element.VR == "SQ":
                datasets.extend(element.value)
                continue
            value = element.value
            if value is None:
                continue
            if isinstance(value, bytes):
                items: Iterable[object] = [value.decode("latin-1")]
            elif isinstance(value, str | PersonName) or not isinstance(value, Iterable):
                items = [value]
            else:
                items = list(value)
            for item in items:
                yield element.keyword, element.VR, str(item)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("name", list(PROFILES))
def test_no_planted_identifier_survives(name: str, transfer_syntax: str) -> None:
    profile = PROFILES[name]
    ds, planter = planted(profile, transfer_syntax=transfer_syntax)
    assert len(planter.gone) > 300, "the generator fills most of the table"
    written, facts = Pseudonymiser(profile, KEY).pseudonymise_file(part10(ds))
    out = dcmread(io.BytesIO(written))

    scanned = list(values(out))
    for keyword, vr, value in scanned:
        for marker in planter.gone:
            assert marker.casefold() not in value.casefold(), (keyword, vr, value, marker)
        if vr == "UI":
            assert value not in planter.gone_uids, (keyword, value)
    for marker in planter.gone | planter.gone_uids:
        assert marker.encode("ascii") not in written, marker
    assert out.PatientIdentityRemoved == "YES"
    if not profile.has(Option.RETAIN_UIDS):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert facts.uids[out[keyword].value] == ds[keyword].value
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_safe_private_is_kept_only_when_listed() -> None:
    profile = PROFILES["clean-everything"]
    ds, _ = planted(profile)
    out = Pseudonymiser(profile, KEY).pseudonymise(ds).dataset
    assert out[0x00111001].value == "SAFE-VALUE"
    assert out[0x00110010].value == SAFE.creator
    assert 0x00111002 not in out
    assert 0x00130010 not in out and 0x00131001 not in out


def test_private_elements_are_removed_without_the_option() -> None:
    ds, _ = planted(PROFILES["aifi-default"])
    out = Pseudonymiser(PROFILES["aifi-default"], KEY).pseudonymise(ds).dataset
    assert not [element for element in out if element.tag.is_private]


def test_retained_attributes_are_kept() -> None:
    profile = PROFILES["retain-everything"]
    ds, _ = planted(profile)
    station, birth = ds.StationName, ds.PatientBirthDate
    institution, study_date = ds.InstitutionName, ds.StudyDate
    out = Pseudonymiser(profile, KEY).pseudonymise(ds).dataset
    assert out.StationName == station  # Retain Device Identity
    assert out.InstitutionName == institution  # Retain Institution Identity
    assert out.StudyDate == study_date  # Retain Longitudinal Full Dates
    assert not out.PatientBirthDate and birth
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_basic_profile_removes_dates_and_says_so() -> None:
    profile = PROFILES["basic"]
    ds, _ = planted(profile)
    out = Pseudonymiser(profile, KEY).pseudonymise(ds).dataset
    assert out.StudyDate in ("", None)
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
