"""Which attributes make up a patient's and a study's identification: kept (as DICOM JSON) in
the gateway's map when an instance is pseudonymised, put back on re-identification
(PS3.15 E.1.2), and the names and identifiers a cleaned descriptor must not contain."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

from aifi.dicom_json import DicomJson


def _tags(keywords: Iterable[str]) -> tuple[int, ...]:
    tags = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:  # a typo in the lists below
            raise ValueError(f"unknown keyword {keyword}")
        tags.append(int(tag))
    return tuple(tags)


#: Patient module (PS3.3 C.7.1.1), its identification and demographic attributes.
PATIENT_TAGS = _tags(
    (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "TypeOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthDateInAlternativeCalendar",
        "PatientDeathDateInAlternativeCalendar",
        "PatientAlternativeCalendar",
        "PatientSex",
        "QualityControlSubject",
        "ReferencedPatientSequence",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "EthnicGroup",
        "PatientComments",
        "PatientSpeciesDescription",
        "PatientSpeciesCodeSequence",
        "PatientBreedDescription",
        "PatientBreedCodeSequence",
        "BreedRegistrationSequence",
        "ResponsiblePerson",
        "ResponsiblePersonRole",
        "ResponsibleOrganization",
        "PatientBirthName",
        "PatientMotherBirthName",
    )
)

#: General Study (PS3.3 C.7.2.1) and Patient Study (C.7.2.2) attributes.
STUDY_TAGS = _tags(
    (
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence",
        "ConsultingPhysicianName",
        "ConsultingPhysicianIdentificationSequence",
        "StudyID",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "StudyDescription",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence",
        "RequestingServiceCodeSequence",
        "ReferencedStudySequence",
        "ProcedureCodeSequence",
        "ReasonForPerformedProcedureCodeSequence",
        "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "Occupation",
        "AdditionalPatientHistory",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "ServiceEpisodeID",
        "ServiceEpisodeDescription",
        "PatientSexNeutered",
    )
)

#: Names whose parts a cleaned descriptor must not contain (top level of the instance).
NAME_TAGS = _tags(
    (
        "PatientName",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "ResponsiblePerson",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "RequestingPhysician",
    )
)

#: Identifiers a cleaned descriptor must not contain (top level of the instance).
IDENTIFIER_TAGS = _tags(
    (
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "ServiceEpisodeID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "MedicalRecordLocator",
    )
)


def identity_json(ds: Dataset, tags: Iterable[int]) -> DicomJson:
    """The given attributes of ``ds`` (those present) as DICOM JSON (PS3.18 F.2), strings
    decoded with the data set's Specific Character Set."""
    subset = Dataset()
    for tag in tags:
        if tag in ds:
            subset[tag] = ds[tag]  # converting a raw element decodes it with ds's charset
    return subset.to_json_dict()


def identity_dataset(identity: DicomJson) -> Dataset:
    """The attributes of an identity kept as DICOM JSON."""
    return Dataset.from_json(identity)
