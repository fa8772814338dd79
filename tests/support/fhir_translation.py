"""The gateway's FHIR translation without a hub: a pseudonym map in memory, filled by the real
pseudonymiser (PS3.15 Annex E), for the unit tests of :mod:`aifi.gateway.fhir.translate` and
:mod:`aifi.gateway.fhir.query` (``tests/unit/test_gateway_fhir_translate.py``,
``tests/unit/test_gateway_fhir_query.py``).

The hub's ImagingStudy is what the hub's own mapping (:func:`aifi.fhir.mapping.imaging.
imaging_study`) makes of the pseudonymised instance; Patient resource ids are computed here
from :func:`aifi.fhir.mapping.imaging.patient_id`, not from the code under test.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom import Dataset, dcmread

from aifi.conformance.synthetic import Patient, radiograph_study
from aifi.fhir.codes import accession_identifier
from aifi.fhir.mapping.imaging import imaging_study, patient_id
from aifi.fhir.views import InstanceView, PatientView, SeriesView, StudyView
from aifi.gateway.deid import PatientIdentity, Profile, Pseudonymiser, StudyIdentity
from aifi.gateway.fhir.translate import FhirTranslator, identity_text

KEY = bytes(range(32))
PROFILE = Profile()
GATEWAY = "https://gw.example"
HUB = "https://hub.example"
HUB_DICOMWEB = "https://pacs.hub.example/dicomweb"
"""The hub's DICOMweb, on another host than its FHIR (so only the Endpoint rule moves it)."""
AI_UID = "2.25.1234567890123456789"
"""A UID an AI product created: a 2.25 UID that is not one of this key's pseudonyms."""
UNKNOWN_PATIENT = "AIFI" + "A" * 16
"""A patient pseudonym of the right form that is not in the map."""

Resource = dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """One study the gateway pseudonymised: the original instance and the facts."""

    original: Dataset
    patient: PatientIdentity
    study: StudyIdentity
    uids: dict[str, str]
    hub_study: Resource
    """The hub's ImagingStudy of the pseudonymised instance."""

    @property
    def gateway_patient(self) -> str:
        issuer = self.patient.issuer or None
        return patient_id(PatientView(patient_id=self.patient.original_id, issuer=issuer))

    @property
    def hub_patient(self) -> str:
        return patient_id(PatientView(patient_id=self.patient.pseudo_id))

    def pseudo(self, original: str) -> str:
        [pseudo] = [p for p, o in self.uids.items() if o == original]
        return pseudo


def _seen(patient: str, issuer: str, study_uid: str, accession: str) -> Seen:
    data = next(
        radiograph_study(
            patient=Patient(name="Jansen^Pieter", patient_id=patient),
            study_uid=study_uid,
            series_uid=study_uid + ".1",
            accession=accession,
            description="X hand left",
        )
    )
    ds = dcmread(io.BytesIO(data))
    if issuer:
        ds.IssuerOfPatientID = issuer
    original = copy.deepcopy(ds)
    facts = Pseudonymiser(PROFILE, KEY).pseudonymise(ds)
    started = datetime.strptime(ds.StudyDate + ds.StudyTime, "%Y%m%d%H%M%S")
    instance = InstanceView(str(ds.SOPInstanceUID), str(ds.SOPClassUID), 1)
    hub = imaging_study(
        StudyView(
            study_instance_uid=str(ds.StudyInstanceUID),
            patient=PatientView(patient_id=str(ds.PatientID)),
            accession_number=str(ds.AccessionNumber),
            started=started,
            description="hand",
            series=(SeriesView(str(ds.SeriesInstanceUID), "DX", 1, instances=(instance,)),),
            wado_rs_base=HUB_DICOMWEB,
        )
    )
    return Seen(original, facts.patient, facts.study, facts.uids, hub)


@dataclass(frozen=True)
class World:
    a: Seen
    """MRN-7731 of HOSP-A."""
    b: Seen
    """MRN-7731 without an issuer (another patient with the same Patient ID)."""
    c: Seen
    """MRN-42 of HOSP-A."""


_WORLD: list[World] = []


def world() -> World:
    """Three studies, pseudonymised once per session."""
    if not _WORLD:
        _WORLD.append(
            World(
                _seen("MRN-7731", "HOSP-A", "1.2.826.0.1.3680043.10.7.1", "ACC-7731"),
                _seen("MRN-7731", "", "1.2.826.0.1.3680043.10.7.2", "ACC-7732"),
                _seen("MRN-42", "HOSP-A", "1.2.826.0.1.3680043.10.7.3", "ACC-42"),
            )
        )
    return _WORLD[0]


class MemoryIdentities:
    """:class:`~aifi.gateway.fhir.translate.FhirIdentities` in memory."""

    def __init__(self, *seen: Seen) -> None:
        self.uids: dict[str, str] = {}
        self.patients: dict[str, PatientIdentity] = {}
        self.studies: dict[str, StudyIdentity] = {}
        self.accessions: dict[str, str] = {}
        for one in seen:
            self.uids.update(one.uids)
            self.patients[one.patient.pseudo_id] = one.patient
            self.studies[one.study.pseudo_study_uid] = one.study

    def original_uid(self, pseudo: str) -> str | None:
        return self.uids.get(pseudo)

    def patient(self, pseudo_id: str) -> PatientIdentity | None:
        return self.patients.get(pseudo_id)

    def patients_by_original(self, original_id: str) -> list[PatientIdentity]:
        return [p for p in self.patients.values() if p.original_id == original_id]

    def patient_by_fhir_id(self, fhir_id: str, *, at_hub: bool) -> PatientIdentity | None:
        for p in self.patients.values():
            view = PatientView(patient_id=p.pseudo_id) if at_hub else None
            view = view or PatientView(patient_id=p.original_id, issuer=p.issuer or None)
            if patient_id(view) == fhir_id:
                return p
        return None

    def study(self, pseudo_study_uid: str) -> StudyIdentity | None:
        return self.studies.get(pseudo_study_uid)

    def original_accession(self, accession_pseudo: str) -> str | None:
        for study in self.studies.values():
            if study.accession_pseudo == accession_pseudo:
                return identity_text(study.identity, "00080050")
        return self.accessions.get(accession_pseudo)

    def remember_uid(self, pseudo: str, original: str) -> None:
        self.uids.setdefault(pseudo, original)

    def remember_accession(self, pseudo: str, original: str) -> None:
        self.accessions.setdefault(pseudo, original)

    def remember_patient(self, pseudo_id: str, original_id: str, issuer: str) -> None:
        self.patients.setdefault(pseudo_id, PatientIdentity(pseudo_id, original_id, issuer, 0))


def translator_over(ids: MemoryIdentities) -> FhirTranslator:
    return FhirTranslator(ids, KEY, PROFILE, GATEWAY + "/dicomweb/", hub_base=HUB + "/")


def acsn(value: str) -> Resource:
    """An Accession Number identifier (type ACSN)."""
    return accession_identifier(value)
