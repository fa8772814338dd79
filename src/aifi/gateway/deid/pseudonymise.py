"""The pseudonymiser: PS3.15 Annex E, Basic Application Level Confidentiality Profile and the
options of a :class:`~aifi.gateway.deid.profile.Profile`, applied to every element at every
depth from Table E.1-1 (``table_e1_1.tsv``), with keyed-HMAC pseudonyms so that the same
original always gives the same result.

One walk over the data set; for each tag the action is looked up once in a precomputed dict
(and cached for tags the table does not name). Pixel data is never decoded: elements the
table keeps stay as the raw bytes pydicom read.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from aifi.dicom_json import DicomJson
from aifi.errors import InvalidRequest
from aifi.gateway.deid import clean
from aifi.gateway.deid.files import (
    read_part10,
    rebuild_file_meta,
    split_pixel_data,
    write_part10,
)
from aifi.gateway.deid.identity import (
    IDENTIFIER_TAGS,
    NAME_TAGS,
    PATIENT_TAGS,
    STUDY_TAGS,
    identity_json,
)
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.deid.profile import Profile
from aifi.gateway.deid.table import Action, resolve
from aifi.gateway.deid.types import (
    Option,
    PatientIdentity,
    Pseudonymised,
    Quarantine,
    StudyIdentity,
)

#: CID 7050 code meanings (PS3.16), for De-identification Method (0012,0063) and its code
#: sequence (0012,0064).
METHOD_MEANINGS: dict[Option, str] = {
    Option.BASIC: "Basic Application Confidentiality Profile",
    Option.CLEAN_PIXEL_DATA: "Clean Pixel Data Option",
    Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES: "Clean Recognizable Visual Features Option",
    Option.CLEAN_GRAPHICS: "Clean Graphics Option",
    Option.CLEAN_STRUCTURED_CONTENT: "Clean Structured Content Option",
    Option.CLEAN_DESCRIPTORS: "Clean Descriptors Option",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: (
        "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics Option",
    Option.RETAIN_DEVICE_IDENTITY: "Retain Device Identity Option",
    Option.RETAIN_UIDS: "Retain UIDs Option",
    Option.RETAIN_SAFE_PRIVATE: "Retain Safe Private Option",
    Option.RETAIN_INSTITUTION_IDENTITY: "Retain Institution Identity Option",
}

#: Secondary Capture SOP classes (PS3.4 B.5): screen captures, typically with burned-in text.
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
#: Modalities whose images often carry burned-in text (ultrasound, external camera, other).
BURNED_IN_MODALITIES = frozenset({"US", "XC", "OT"})

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_ISSUER = 0x00100021
_BIRTH_DATE = 0x00100030
_ACCESSION = 0x00080050
_PATIENT_AGE = 0x00101010
_STUDY_UID = 0x0020000D
_SOP_UID = 0x00080018
_SOP_CLASS = 0x00080016
_MODALITY = 0x00080060
_BURNED_IN = 0x00280301
#: Study, Series, Acquisition, Content Date: the first present dates the Patient's Age.
_AGE_DATES = (0x00080020, 0x00080021, 0x00080022, 0x00080023)
_IDENTITY_CACHE_SIZE = 256
_OTHER_PATIENT_IDS_SEQUENCE = 0x00101002
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS"})
_FREE_TEXT_VRS = _TEXT_VRS - {"CS"}
_DUMMY_TEXT = "ANONYMOUS"
_DUMMY_BY_VR: dict[str, Any] = {
    "AE": _DUMMY_TEXT,
    "AS": "000Y",
    "CS": _DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "UC": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "UR": "urn:anonymous",
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"\x00\x00"),
    **dict.fromkeys(("FL", "FD"), 0.0),
}


class _Plan(enum.Enum):
    """What the walk does with a tag that the table does not name."""

    KEEP = "keep"  # not named, not a sequence: left as read (raw, undecoded)
    RECURSE = "recurse"  # a sequence the table does not name: its items are walked
    REMOVE = "remove"  # command/file meta group, group length, unknown standard tag, PN
    PRIVATE = "private"  # odd group: removed, or kept if listed safe (Retain Safe Private)


class _Header:
    """Top-level values by tag number, fast: pydicom's look-ups by int convert the tag and
    compare BaseTags in Python; the BaseTag objects of the data set's own keys avoid both."""

    __slots__ = ("ds", "tags")

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.tags = {int(tag): tag for tag in ds.keys()}  # noqa: SIM118 - iterating yields elements

    def item(self, number: int) -> DataElement | RawDataElement | None:
        """The element as stored (raw: not converted)."""
        tag = self.tags.get(number)
        return None if tag is None else self.ds.get_item(tag)

    def text(self, number: int) -> str:
        """A single-valued attribute as a string ("" when absent or empty)."""
        tag = self.tags.get(number)
        if tag is None:
            return ""
        value = self.ds[tag].value
        return "" if value is None else str(value)

    def texts(self, numbers: tuple[int, ...]) -> list[str]:
        """Every non-empty string value of the given attributes (multi-valued ones value by
        value), and the Patient IDs inside Other Patient IDs Sequence."""
        values: list[str] = []
        for number in numbers:
            tag = self.tags.get(number)
            if tag is None:
                continue
            value = self.ds[tag].value
            if value:  # a multi-valued one as "[a, b]": its words are what counts
                values.append(str(value))
        others = self.tags.get(_OTHER_PATIENT_IDS_SEQUENCE)
        if others is not None:
            for entry in self.ds[others].value or ():
                if entry.get("PatientID"):
                    values.append(str(entry.PatientID))
        return values


@dataclass(slots=True)
class _Context:
    """Per-instance state of the walk."""

    offset_days: int
    forbidden: frozenset[str]
    top: dict[int, str]
    uids: dict[str, str] = field(default_factory=dict)
    free_text: bool = False
    """Inside a sequence whose action is C: clean text the table does not name."""


class Pseudonymiser:
    """Pseudonymises instances under one profile and one key (PS3.15 Annex E)."""

    def __init__(self, profile: Profile, key: bytes) -> None:
        self.profile = profile
        self._keyed = Keyed(key)
        self._table = resolve(profile.options)
        self._plans: dict[int, Action | _Plan] = {}
        self._safe_private = profile.safe_private_keys()
        self._keep_private = self._table.private is Action.C
        self._shift = profile.has(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        self._age = profile.has(Option.RETAIN_PATIENT_CHARACTERISTICS)
        self._retain_uids = profile.has(Option.RETAIN_UIDS)
        self._methods = sorted(profile.options, key=lambda option: option.value)
        self._identities: dict[tuple[object, ...], DicomJson] = {}
        self._marks: dict[tuple[bool, bool], list[RawDataElement]] = {}

    # -- public -----------------------------------------------------------------------

    def pseudonymise(self, dataset: Dataset) -> Pseudonymised:
        """Pseudonymise ``dataset`` IN PLACE and return it with the mapping facts.

        Raises :class:`Quarantine` for burned-in annotation (Burned In Annotation YES, or
        absent for Secondary Capture and US/XC/OT) and :class:`InvalidRequest` for an
        instance without Study/SOP Instance UID."""
        header = _Header(dataset)
        study_uid = header.text(_STUDY_UID)
        if not study_uid or not header.text(_SOP_UID):
            raise InvalidRequest("the instance has no Study or SOP Instance UID")
        _check_burned_in(header)
        # Before anything reads (and so converts) the identity's raw elements:
        study_identity = self._identity(header, STUDY_TAGS)
        patient = self._patient(header, study_uid, self._identity(header, PATIENT_TAGS))
        accession = header.text(_ACCESSION)
        study = StudyIdentity(
            pseudo_study_uid=study_uid if self._retain_uids else self._keyed.uid(study_uid),
            original_study_uid=study_uid,
            patient_pseudo_id=patient.pseudo_id,
            accession_pseudo=self._keyed.accession(accession) if accession else "",
            identity=study_identity,
        )
        forbidden = clean.forbidden_tokens(header.texts(NAME_TAGS), header.texts(IDENTIFIER_TAGS))
        if self._age:
            self._add_age(header)
        # The name is the pseudonym as family name; the trailing "^" says it is one
        # (PS3.5 §6.2.1.2), as tools that read names expect.
        top = {_PATIENT_NAME: patient.pseudo_id + "^", _PATIENT_ID: patient.pseudo_id}
        context = _Context(patient.date_offset_days, forbidden, top)
        self._walk(dataset, context, top=True)
        self._mark(dataset)
        self._rebuild_file_meta(dataset)
        return Pseudonymised(dataset, context.uids, patient, study)

    def pseudonymise_file(self, data: bytes) -> tuple[bytes, Pseudonymised]:
        """A Part 10 file in, its pseudonymised Part 10 file out (same transfer syntax,
        pixel data carried over undecoded). Raises :class:`InvalidRequest` for bytes that
        are not a readable DICOM file, and :class:`Quarantine`."""
        split = split_pixel_data(data)
        if split is not None:  # the pixel data element's bytes carried over as they are
            header, pixel_data = split
            facts = self.pseudonymise(header)
            return write_part10(header, pixel_data), facts
        dataset = read_part10(data)
        facts = self.pseudonymise(dataset)
        return write_part10(dataset), facts

    # -- facts ------------------------------------------------------------------------

    def _patient(self, ds: _Header, study_uid: str, identity: DicomJson) -> PatientIdentity:
        """The patient pseudonym and date offset from the keyed HMAC of Patient ID + Issuer
        of Patient ID; without a Patient ID, of Patient's Name + Birth Date; without those,
        of the Study Instance UID (the study is then its own patient)."""
        patient_id = ds.text(_PATIENT_ID)
        issuer = ds.text(_ISSUER)
        name = ds.text(_PATIENT_NAME)
        birth = ds.text(_BIRTH_DATE)
        if patient_id.strip():
            basis = "\x00".join(("id", patient_id, issuer))
        elif name.strip():
            basis = "\x00".join(("name", name, birth))
        else:
            basis = "\x00".join(("study", study_uid))
        offset = 0
        if self._shift:
            low, high = self.profile.date_offset_min_days, self.profile.date_offset_max_days
            offset = self._keyed.date_offset(basis, low, high)
        return PatientIdentity(
            pseudo_id=self._keyed.patient(self.profile.pseudonym_prefix, basis),
            original_id=patient_id,
            issuer=issuer,
            date_offset_days=offset,
            identity=identity,
        )

    def _identity(self, header: _Header, tags: tuple[int, ...]) -> DicomJson:
        """:func:`identity_json`, remembered for identical raw values (the instances of one
        study repeat the same patient and study attributes): same bytes, same JSON. The
        returned dict may be shared between facts: read it, never change it."""
        ds = header.ds
        charset = header.item(0x00080005)
        parts: list[object] = [tags, None if charset is None else str(charset.value)]
        for tag in tags:
            element = header.item(tag)
            if element is None:
                continue
            if not isinstance(element, RawDataElement):
                return identity_json(ds, tags)
            parts.append((tag, element.VR, element.is_little_endian, element.value))
        key = tuple(parts)
        cached = self._identities.get(key)
        if cached is None:
            if len(self._identities) >= _IDENTITY_CACHE_SIZE:
                self._identities.clear()
            cached = self._identities[key] = identity_json(ds, tags)
        return cached

    @staticmethod
    def _add_age(ds: _Header) -> None:
        """Patient's Age from Patient's Birth Date and the Study Date (or Series, Acquisition,
        Content Date) when the instance has none (PS3.3 C.7.2.2), before the birth date goes."""
        if ds.text(_PATIENT_AGE):
            return
        seen = next((ds.text(tag) for tag in _AGE_DATES if ds.text(tag)), "")
        age = clean.patient_age(ds.text(_BIRTH_DATE), seen)
        if age is not None:
            ds.ds.PatientAge = age

    # -- the walk ---------------------------------------------------------------------

    def _plan(self, tag: int) -> Action | _Plan:
        """The action for ``tag``, remembered in ``_plans`` (the walk looks there first):
        the table's, else what the walk does with an attribute the table does not name."""
        plan: Action | _Plan
        group = tag >> 16
        if group & 1:
            plan = _Plan.PRIVATE
        elif group <= 0x0002 or tag & 0xFFFF == 0:  # command, file meta, group lengths
            plan = _Plan.REMOVE
        else:
            action = self._table.lookup(tag)
            if action is not None:
                plan = action
            else:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = ""  # not in the data dictionary: may be anything, so removed
                if vr == "SQ":
                    plan = _Plan.RECURSE
                elif vr in ("", "PN"):
                    plan = _Plan.REMOVE
                else:
                    plan = _Plan.KEEP
        self._plans[tag] = plan
        return plan

    def _walk(self, ds: Dataset, context: _Context, *, top: bool) -> None:
        private: list[int] = []
        plans = self._plans
        for tag in list(ds.keys()):
            number = int(tag)  # plain int keys: BaseTag.__eq__ is slow in dict look-ups
            plan = plans.get(number) or self._plan(number)
            if plan is _Plan.KEEP:
                if context.free_text:
                    self._free_text(ds[tag], context)
                continue
            if plan is _Plan.PRIVATE:
                private.append(tag)
            elif plan is _Plan.REMOVE or plan is Action.X:
                del ds[tag]
            elif plan is _Plan.RECURSE:
                self._items(ds[tag], context)
            elif top and number in context.top:
                _set(ds[tag], context.top[number])
            elif number == _ACCESSION:
                self._accession(ds[tag])
            else:
                self._apply(ds, tag, plan, context)
        if private:
            self._private(ds, private, context)

    def _items(self, element: DataElement, context: _Context) -> None:
        for item in element.value or ():
            self._walk(item, context, top=False)

    def _free_text(self, element: DataElement, context: _Context) -> None:
        """Inside a sequence the table cleans (C: Content Sequence under Clean Structured
        Content, coded descriptors under Clean Descriptors), text the table does not name
        (e.g. an SR TEXT item's Text Value) is cleaned like a descriptor."""
        if element.VR in _FREE_TEXT_VRS:
            forbidden = context.forbidden
            _map_values(element, lambda value: clean.clean_text(value, forbidden))

    def _accession(self, element: DataElement) -> None:
        """Accession Number (Z in the table) becomes its keyed pseudonym at every depth, so
        that requests and studies still match at the hub; empty stays empty."""
        value = str(element.value or "")
        _set(element, self._keyed.accession(value) if value else "")

    def _apply(self, ds: Dataset, tag: int, action: Action, context: _Context) -> None:
        """One element's action (PS3.15 Table E.1-1 codes; compound ones resolved here)."""
        element = ds[tag]
        vr = element.VR
        is_sequence = vr == "SQ"
        if action is Action.K:
            if is_sequence:
                self._items(element, context)
        elif action is Action.C:
            self._clean(ds, element, context)
        elif action is Action.U:
            self._uid(element, context)
        elif action is Action.X_Z_U and is_sequence:
            # Referenced/Source Image Sequence: kept, the UIDs inside get their U action.
            self._items(element, context)
        elif action in (Action.Z, Action.X_Z, Action.X_Z_U) or _is_empty(element):
            _empty(element)
        else:  # D, and a compound with D on an element that has a value (Type 1 may)
            self._dummy(element, context)

    def _dummy(self, element: DataElement, context: _Context) -> None:
        vr = element.VR
        if vr == "SQ":
            _set(element, Sequence([Dataset()]))
        elif vr == "UI":
            self._uid(element, context)
        else:  # integers (US, UL, SS, SL, SV, UV, AT ...): 0
            _set(element, _DUMMY_BY_VR.get(vr, 0))

    def _uid(self, element: DataElement, context: _Context) -> None:
        """U: each UID value becomes its keyed ``2.25`` pseudonym (pseudonym -> original
        recorded for re-identification); a UID attribute sent with another VR is emptied."""
        if element.VR != "UI":
            _empty(element)
            return
        uids = context.uids
        keyed = self._keyed

        def replace(value: str) -> str:
            original = str(value).strip("\x00 ")
            if not original:
                return ""
            pseudo = keyed.uid(original)
            uids[pseudo] = original
            return pseudo

        _map_values(element, replace)

    def _clean(self, ds: Dataset, element: DataElement, context: _Context) -> None:
        """C: dates move by the patient's offset (times stay), descriptor text loses names,
        identifiers, dates and numbers, sequences are cleaned item by item; binary data that
        cannot be cleaned (curves, overlay bitmaps, timestamps) is removed."""
        vr = element.VR
        offset = context.offset_days
        if vr == "SQ":
            outer, context.free_text = context.free_text, True
            self._items(element, context)
            context.free_text = outer
        elif vr == "DA":
            _map_values(element, lambda value: clean.shift_da(value, offset))
        elif vr == "DT":
            _map_values(element, lambda value: clean.shift_dt(value, offset))
        elif vr == "TM":
            return
        elif vr in _TEXT_VRS:
            forbidden = context.forbidden
            _map_values(element, lambda value: clean.clean_text(value, forbidden))
        else:
            del ds[element.tag]

    def _private(self, ds: Dataset, tags: list[int], context: _Context) -> None:
        """Private elements (PS3.15 E.3.10): removed, unless Retain Safe Private is chosen
        and (private creator, group, element byte) is listed safe in the profile; a private
        creator stays only while an element of its block does."""
        if not self._keep_private:
            for tag in tags:
                del ds[tag]
            return
        creators: dict[int, int] = {}
        used: set[int] = set()
        for tag in tags:
            element_number = tag & 0xFFFF
            if 0x0010 <= element_number <= 0x00FF:
                creators[tag] = tag
                continue
            group = tag >> 16
            creator_tag = (group << 16) | (element_number >> 8)
            creator = ds.get(creator_tag)
            name = str(creator.value).strip() if creator is not None else ""
            if element_number >= 0x1000 and (name, group, element_number & 0xFF) in (
                self._safe_private
            ):
                used.add(creator_tag)
                element = ds[tag]
                if element.VR == "SQ":
                    self._items(element, context)
            else:
                del ds[tag]
        for tag in creators:
            if tag not in used:
                del ds[tag]

    # -- marks and meta ---------------------------------------------------------------

    def _mark(self, ds: Dataset) -> None:
        """Patient Identity Removed YES, De-identification Method (Code Sequence) with the
        CID 7050 codes applied, Longitudinal Temporal Information Modified (PS3.3 C.7.1.1,
        C.7.6.1)."""
        encoding = ds.original_encoding
        if encoding[0] is None or encoding[1] is None:
            for element in self._marks_dataset():
                ds[element.tag] = element
            return
        key = (encoding[0], encoding[1])
        raw = self._marks.get(key)
        if raw is None:
            # Encoded once per transfer syntax encoding; raw elements are immutable, so the
            # same ones go into every instance and are written as they are.
            buffer = DicomBytesIO()
            buffer.is_implicit_VR, buffer.is_little_endian = key
            write_dataset(buffer, self._marks_dataset())
            encoded = read_dataset(io.BytesIO(buffer.getvalue()), key[0], key[1])
            tags = list(encoded.keys())
            raw = self._marks[key] = [cast(RawDataElement, encoded.get_item(t)) for t in tags]
        for raw_element in raw:
            ds[raw_element.tag] = raw_element

    def _marks_dataset(self) -> Dataset:
        marks = Dataset()
        marks.PatientIdentityRemoved = "YES"
        marks.DeidentificationMethod = [METHOD_MEANINGS[option] for option in self._methods]
        codes = []
        for option in self._methods:
            item = Dataset()
            item.CodeValue = option.value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = METHOD_MEANINGS[option]
            codes.append(item)
        marks.DeidentificationMethodCodeSequence = codes
        if self._shift:
            marks.LongitudinalTemporalInformationModified = "MODIFIED"
        elif self.profile.has(Option.RETAIN_LONGITUDINAL_FULL_DATES):
            marks.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            marks.LongitudinalTemporalInformationModified = "REMOVED"
        return marks

    @staticmethod
    def _rebuild_file_meta(ds: Dataset) -> None:
        rebuild_file_meta(ds)


def check_burned_in(ds: Dataset) -> None:
    """Quarantine an instance that may show the patient's identity in its pixels (see
    :func:`_check_burned_in`)."""
    _check_burned_in(_Header(ds))


def _check_burned_in(ds: _Header) -> None:
    """Quarantine an instance that may show the patient's identity in its pixels: Burned In
    Annotation (0028,0301) YES, or absent for Secondary Capture SOP classes and the
    modalities US, XC and OT (PS3.3 C.7.6.1.1.2, PS3.15 E.1.1 note on burned-in text)."""
    burned = ds.text(_BURNED_IN).strip().upper()
    if burned == "YES":
        raise Quarantine("Burned In Annotation (0028,0301) is YES")
    if burned:
        return
    sop_class = ds.text(_SOP_CLASS)
    modality = ds.text(_MODALITY).strip().upper()
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        raise Quarantine("Burned In Annotation (0028,0301) absent in a Secondary Capture image")
    if modality in BURNED_IN_MODALITIES:
        raise Quarantine(f"Burned In Annotation (0028,0301) absent for modality {modality}")


def _is_empty(element: DataElement) -> bool:
    value = element.value
    return (
        value is None
        or value == ""
        or value == b""
        or (isinstance(value, (list, MultiValue, Sequence)) and len(value) == 0)
    )


def _empty(element: DataElement) -> None:
    _set(element, None)  # a sequence: one without items


def _map_values(element: DataElement, function: Callable[[str], str]) -> None:
    value = element.value
    if value is None:
        return
    if isinstance(value, MultiValue | list):
        _set(element, [function(str(item)) for item in value])
    else:
        _set(element, function(str(value)))


def _set(element: DataElement, value: object) -> None:
    """Set a value the engine made (valid by construction) without pydicom's per-value
    validation, the most expensive part of setting a value."""
    element.validation_mode = config.IGNORE
    element.value = value
