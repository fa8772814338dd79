"""Re-identification of AI results (PS3.15 E.1.2): an object an AI product made on a
pseudonymised study is given back the original study's patient and study identification, and
every UID in it that is one of the gateway's pseudonyms is mapped back to its original, at
any depth. The object is then checked: if a pseudonym would remain, it is not delivered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from aifi.gateway.deid.files import read_part10, rebuild_file_meta, write_part10
from aifi.gateway.deid.identity import PATIENT_TAGS, STUDY_TAGS, identity_dataset
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.deid.types import (
    NotReidentifiable,
    PatientIdentity,
    PseudonymLookup,
    StudyIdentity,
)

_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
_UID_IN_TEXT = re.compile(r"\d+(?:\.\d+){2,}")
_DEID_MARKS = (0x00120063, 0x00120064, 0x00280303)
_UTF8 = "ISO_IR 192"


class Reidentifier:
    """Restores the original identification in results (PS3.15 E.1.2).

    ``key`` (optional) is the pseudonymisation key: with it, a UID that has the form of one
    of this gateway's pseudonyms but that the map does not know also makes the result
    not re-identifiable (a reference the map lost would otherwise pass as the AI's own)."""

    def __init__(self, lookup: PseudonymLookup, *, key: bytes | None = None) -> None:
        self.lookup = lookup
        self._keyed = Keyed(key) if key is not None else None

    def reidentify(self, dataset: Dataset) -> Dataset:
        """Re-identify ``dataset`` IN PLACE and return it; :class:`NotReidentifiable` when
        its study or patient is unknown or a pseudonym would remain."""
        study, patient = self._identities(dataset)
        if not dataset.get("SOPInstanceUID") or not dataset.get("SOPClassUID"):
            raise NotReidentifiable("the result has no SOP Class or SOP Instance UID")
        originals: dict[str, str | None] = {}
        for element in _elements(dataset):
            if element.VR == "UI":
                self._map_uids(element, originals)
        self._restore(dataset, PATIENT_TAGS, patient.identity)
        self._restore(dataset, STUDY_TAGS, study.identity)
        dataset.StudyInstanceUID = study.original_study_uid
        for tag in _DEID_MARKS:
            dataset.pop(tag, None)
        dataset.PatientIdentityRemoved = "NO"
        self._check(dataset, study, patient, originals)
        rebuild_file_meta(dataset)  # the file meta's UIDs follow the (re-identified) data set
        return dataset

    def reidentify_file(self, data: bytes) -> bytes:
        """A Part 10 result in, the re-identified Part 10 result out (transfer syntax kept,
        file meta rebuilt). Unreadable bytes raise :class:`aifi.errors.InvalidRequest`."""
        dataset = read_part10(data)
        self.reidentify(dataset)
        return write_part10(dataset)

    # -- steps ------------------------------------------------------------------------

    def _identities(self, ds: Dataset) -> tuple[StudyIdentity, PatientIdentity]:
        pseudo_study = str(ds.get("StudyInstanceUID") or "")
        study = self.lookup.study(pseudo_study) if pseudo_study else None
        if study is None:
            raise NotReidentifiable(f"study {pseudo_study or '(none)'} is unknown to the gateway")
        patient = self.lookup.patient(study.patient_pseudo_id)
        if patient is None:
            raise NotReidentifiable(f"patient {study.patient_pseudo_id} is unknown to the gateway")
        return study, patient

    def _original_uid(self, pseudo: str, cache: dict[str, str | None]) -> str | None:
        if pseudo not in cache:
            cache[pseudo] = self.lookup.original_uid(pseudo)
        return cache[pseudo]

    def _map_uids(self, element: DataElement, cache: dict[str, str | None]) -> None:
        """Each value of a UI element that the map knows becomes its original."""

        def back(uid: str) -> str:
            found = self._original_uid(uid, cache)
            return uid if found is None else found

        value = element.value
        if isinstance(value, MultiValue | list):
            element.value = [back(str(item)) for item in value]
        elif value:
            element.value = back(str(value))

    @staticmethod
    def _restore(ds: Dataset, tags: tuple[int, ...], identity: dict[str, object]) -> None:
        """Put the original attributes back: those kept in the identity replace the
        result's; others of the module that the result has are emptied (they held what
        the AI saw, i.e. pseudonyms or shifted values; Type 2 stays present)."""
        original = identity_dataset(identity)
        for tag in tags:
            if tag in original:
                ds[tag] = original[tag]
            elif tag in ds:
                ds[tag].value = None  # a sequence becomes one without items
        if _needs_utf8(original):
            ds.SpecificCharacterSet = _UTF8

    def _check(
        self,
        ds: Dataset,
        study: StudyIdentity,
        patient: PatientIdentity,
        originals: dict[str, str | None],
    ) -> None:
        """No value anywhere may still be (or, in text, contain) a known pseudonym."""
        exact = {study.pseudo_study_uid, patient.pseudo_id, study.accession_pseudo} - {""}
        if study.pseudo_study_uid == study.original_study_uid:
            exact.discard(study.pseudo_study_uid)  # Retain UIDs: the "pseudonym" is the original
        for element in _elements(ds):
            if element.VR not in _STRING_VRS:
                continue
            for value in _strings(element):
                for found in exact:
                    if found in value:
                        raise NotReidentifiable(
                            f"{element.keyword or element.tag} holds pseudonym {found}"
                        )
                for candidate in _UID_IN_TEXT.findall(value):
                    self._check_uid(element, candidate, originals)

    def _check_uid(self, element: DataElement, uid: str, cache: dict[str, str | None]) -> None:
        original = self._original_uid(uid, cache)
        if original is not None and original != uid:
            raise NotReidentifiable(f"{element.keyword or element.tag} holds pseudonym {uid}")
        if original is None and self._keyed is not None and self._keyed.is_pseudonym_uid(uid):
            raise NotReidentifiable(
                f"{element.keyword or element.tag} references {uid}, a pseudonym the map does "
                "not know"
            )


def _elements(ds: Dataset) -> Iterator[DataElement]:
    """Every data element at every depth (sequence items included)."""
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _elements(item)


def _strings(element: DataElement) -> list[str]:
    value = element.value
    if value is None:
        return []
    items = list(value) if isinstance(value, MultiValue | list) else [value]
    result = []
    for item in items:
        if isinstance(item, PersonName):
            result.append(str(item))
        elif isinstance(item, str):
            result.append(item)
    return [item for item in result if item]


def _needs_utf8(ds: Dataset) -> bool:
    return any(
        not value.isascii()
        for element in _elements(ds)
        if element.VR in _STRING_VRS
        for value in _strings(element)
    )
