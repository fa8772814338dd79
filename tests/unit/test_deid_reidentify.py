"""Re-identification (PS3.15 E.1.2) of every AIR object the project's builders make: the
source study is pseudonymised, the AI result is built on the PSEUDONYMISED study (as an AI
product would), and re-identification gives it the original patient and study back, maps
every reference to the original instances, series and study, leaves no pseudonym and keeps
the objects valid for dciodvfy. Results it cannot re-identify are refused."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pydicom.valuerep import PersonName

from aifi.conformance.synthetic import Patient, ct_study, radiograph_study
from aifi.errors import InvalidRequest
from aifi.gateway.deid import (
    NotReidentifiable,
    PatientIdentity,
    Profile,
    Pseudonymised,
    Pseudonymiser,
    Reidentifier,
    StudyIdentity,
)
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes
from tests.support.dciodvfy import dciodvfy as dciodvfy
from tests.support.dciodvfy import verify

KEY = bytes(range(32))
ALGORITHM = air.AlgorithmIdentity(
    manufacturer="aifi-hub tests",
    model_name="fracture-detection",
    software_version="1.0",
    device_uid="2.25.329800735698586629295641978511506172918",
)
ALTERED = ("49755003", "SCT", "Morphologically Altered Structure")
PATIENT = Patient(name="Jansen^Pieter^Willem", patient_id="MRN-7731", birth_date="20150301")


class MemoryLookup:
    """The pseudonym map in memory (what ``pseudonym_map.record`` keeps in the database)."""

    def __init__(self) -> None:
        self.uids: dict[str, str] = {}
        self.patients: dict[str, PatientIdentity] = {}
        self.studies: dict[str, StudyIdentity] = {}

    def record(self, facts: Pseudonymised) -> None:
        self.uids.update(facts.uids)
        self.patients.setdefault(facts.patient.pseudo_id, facts.patient)
        self.studies.setdefault(facts.study.pseudo_study_uid, facts.study)

    def original_uid(self, pseudo: str) -> str | None:
        return self.uids.get(pseudo)

    def patient(self, pseudo_id: str) -> PatientIdentity | None:
        return self.patients.get(pseudo_id)

    def study(self, pseudo_study_uid: str) -> StudyIdentity | None:
        return self.studies.get(pseudo_study_uid)


class Scenario:
    """A source study at the hospital, its pseudonymised copy at the hub, and the map."""

    def __init__(self, raws: list[bytes]) -> None:
        self.originals = [dcmread(io.BytesIO(raw)) for raw in raws]
        self.lookup = MemoryLookup()
        pseudonymiser = Pseudonymiser(Profile(), KEY)
        self.pseudonymised: list[Dataset] = []
        for raw in raws:
            data, facts = pseudonymiser.pseudonymise_file(raw)
            self.lookup.record(facts)
            self.pseudonymised.append(dcmread(io.BytesIO(data)))
        self.reidentifier = Reidentifier(self.lookup, key=KEY)

    def original_of(self, pseudo_uid: str) -> str:
        return self.lookup.uids[pseudo_uid]

    def round_trip(self, result: Dataset) -> Dataset:
        """The result as the gateway fetches it (Part 10 bytes), re-identified."""
        buffer = io.BytesIO()
        result.save_as(buffer, enforce_file_format=True)
        return dcmread(io.BytesIO(self.reidentifier.reidentify_file(buffer.getvalue())))


def radiographs(images: int) -> Scenario:
    return Scenario(list(radiograph_study(images, patient=PATIENT, accession="ACC-55123")))


def cts(slices: int) -> Scenario:
    return Scenario(list(ct_study(slices, size=32, patient=PATIENT, accession="ACC-55123")))


def sr(s: Scenario) -> Dataset:
    inputs = s.pseudonymised
    finding = air.QualitativeFinding(
        air.FRACTURE,
        True,
        "fracture 1",
        finding_site=codes.WRIST,
        laterality=codes.LEFT,
        regions=[
            air.Region(inputs[0], "POINT", [(10, 12)]),
            air.Region(inputs[1], "ELLIPSE", [(1, 5), (9, 5), (5, 3), (5, 7)]),
        ],
    )
    return air.measurement_report(inputs, ALGORITHM, findings=[finding])


def sr_measurement(s: Scenario) -> Dataset:
    measurement = air.Measurement(air.BONE_AGE, 10.5, air.YEARS, "bone age", codes.HAND, codes.LEFT)
    return air.measurement_report(s.pseudonymised[:1], ALGORITHM, measurements=[measurement])


def seg_ct(s: Scenario) -> Dataset:
    mask = np.zeros((3, 32, 32), bool)
    mask[1, 4:9, 4:9] = True
    return air.segmentation(
        s.pseudonymised,
        ALGORITHM,
        mask,
        segment_label="embolus",
        category=ALTERED,
        property_type=air.PULMONARY_EMBOLISM,
    )


def gsps(s: Scenario) -> Dataset:
    inputs = s.pseudonymised
    regions = [
        air.Region(inputs[0], "CIRCLE", [(20, 20), (25, 20)]),
        air.Region(inputs[1], "POLYLINE", [(1, 1), (10, 1), (10, 10), (1, 1)]),
    ]
    return air.overlay_presentation(inputs, ALGORITHM, regions, ["Fracture", "Fracture"])


def sc(s: Scenario) -> Dataset:
    return air.summary_page(
        s.pseudonymised[:1], ALGORITHM, ["Bone age: 10.5 years"], title="Skeletal age"
    )


def kos(s: Scenario) -> Dataset:
    inputs = s.pseudonymised
    return air.key_objects(inputs, ALGORITHM, inputs[1:2], description="fracture")


BUILDERS: dict[str, tuple[Callable[[], Scenario], Callable[[Scenario], Dataset]]] = {
    "sr-tid1500": (lambda: radiographs(2), sr),
    "sr-measurement": (lambda: radiographs(1), sr_measurement),
    "seg": (lambda: cts(3), seg_ct),
    "gsps": (lambda: radiographs(2), gsps),
    "sc": (lambda: radiographs(1), sc),
    "kos": (lambda: radiographs(3), kos),
}


def values(ds: Dataset) -> Iterator[tuple[str, str, str]]:
    """(keyword, VR, value) of every value at every depth, file meta included."""
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
            if isinstance(value, str | bytes | PersonName) or not isinstance(value, Iterable):
                items = [value]
            else:
                items = list(value)
            for item in items:
                yield element.keyword, element.VR, str(item)


def uid_values(ds: Dataset) -> set[str]:
    return {value for _, vr, value in values(ds) if vr == "UI"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_result_is_reidentified_to_the_original_study(
    name: str, dciodvfy: str, tmp_path: Path
) -> None:
    make_scenario, build = BUILDERS[name]
    s = make_scenario()
    result = build(s)
    ai_uids = {result.SOPInstanceUID, result.SeriesInstanceUID}
    back = s.round_trip(result)

    original = s.originals[0]
    # The original patient and study identification, as the PACS sent them.
    assert str(back.PatientName) == PATIENT.name
    assert back.PatientID == PATIENT.patient_id
    assert back.PatientBirthDate == PATIENT.birth_date
    assert back.StudyInstanceUID == original.StudyInstanceUID
    assert back.AccessionNumber == "ACC-55123"
    assert back.StudyDate == original.StudyDate
    assert back.StudyTime == original.StudyTime
    assert back.PatientIdentityRemoved == "NO"
    for mark in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        assert mark not in back
    assert "LongitudinalTemporalInformationModified" not in back
    # Every UID is an original of the source study or one the AI made; no pseudonym is left.
    originals = {uid for ds in s.originals for uid in uid_values(ds)}
    for uid in uid_values(back):
        assert uid not in s.lookup.uids, f"pseudonym {uid} left"
    referenced = {
        value
        for keyword, _, value in values(back)
        if keyword
        in (
            "ReferencedSOPInstanceUID",
            "ReferencedSeriesInstanceUID",
            "SeriesInstanceUID",
            "StudyInstanceUID",
            "FrameOfReferenceUID",
        )
    } - ai_uids
    assert referenced, "the result references its inputs"
    assert referenced <= originals | {back.SeriesInstanceUID}
    # The AI's own UIDs stay; the file meta follows the instance.
    assert back.SOPInstanceUID == result.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    # No pseudonymous identifier remains in any value.
    study = s.lookup.studies[result.StudyInstanceUID]
    for _, _, value in values(back):
        assert study.patient_pseudo_id not in value
        assert study.accession_pseudo not in value
    errors, lines = verify(dciodvfy, back, tmp_path / f"{name}.dcm")
    assert errors == [], "\n".join(lines)


def test_sr_references_point_at_the_original_images() -> None:
    s = radiographs(2)
    back = s.round_trip(sr(s))
    wanted = {ds.SOPInstanceUID for ds in s.originals}
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == wanted
    assert back.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == (
        s.originals[0].StudyInstanceUID
    )
    content = {value for keyword, _, value in values(back) if keyword == "ReferencedSOPInstanceUID"}
    assert wanted <= content


def test_seg_source_images_and_frame_of_reference_are_the_originals() -> None:
    s = cts(3)
    back = s.round_trip(seg_ct(s))
    assert back.FrameOfReferenceUID == s.originals[0].FrameOfReferenceUID
    sources = {
        source.ReferencedSOPInstanceUID
        for frame in back.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }
    assert sources <= {ds.SOPInstanceUID for ds in s.originals}
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == s.originals[0].SeriesInstanceUID


def test_a_reference_the_map_does_not_know_is_not_reidentifiable() -> None:
    s = radiographs(2)
    result = kos(s)
    # A pseudonym made with this key for an instance the gateway never recorded.
    stranger = Pseudonymiser(Profile(), KEY)._keyed.uid("1.2.3.4.5.6.7.8.9")
    result.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[
        0
    ].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = stranger
    with pytest.raises(NotReidentifiable, match="does not know"):
        s.reidentifier.reidentify(result)


def test_an_unknown_study_is_not_reidentifiable() -> None:
    s = radiographs(1)
    result = sc(s)
    result.StudyInstanceUID = "2.25.1234"
    with pytest.raises(NotReidentifiable, match=r"study 2\.25\.1234 is unknown"):
        s.reidentifier.reidentify(result)
    del result.StudyInstanceUID
    with pytest.raises(NotReidentifiable, match=r"^study \(none\) is unknown to the gateway$"):
        s.reidentifier.reidentify(result)


def test_an_unknown_patient_is_not_reidentifiable() -> None:
    s = radiographs(1)
    result = sc(s)
    s.lookup.patients.clear()
    with pytest.raises(NotReidentifiable, match=r"patient .* is unknown"):
        s.reidentifier.reidentify(result)


def test_a_pseudonym_left_in_text_is_not_reidentifiable() -> None:
    s = radiographs(1)
    study = s.lookup.studies[s.pseudonymised[0].StudyInstanceUID]
    for text in (
        f"patient {study.patient_pseudo_id}",
        f"accession {study.accession_pseudo}",
        f"see {s.pseudonymised[0].SOPInstanceUID}",
    ):
        result = sc(s)
        result.ImageComments = text
        with pytest.raises(NotReidentifiable, match="ImageComments"):
            s.reidentifier.reidentify(result)


def test_a_pseudonym_in_a_non_uid_attribute_is_not_reidentifiable() -> None:
    s = radiographs(1)
    result = sc(s)
    result.ContentLabel = "X"
    result.SeriesDescription = s.pseudonymised[0].SeriesInstanceUID
    with pytest.raises(NotReidentifiable, match="SeriesDescription"):
        s.reidentifier.reidentify(result)


def test_without_the_key_a_foreign_2_25_uid_passes_as_the_ais_own() -> None:
    s = radiographs(2)
    result = kos(s)
    stranger = Pseudonymiser(Profile(), KEY)._keyed.uid("1.2.3.4.5.6.7.8.9")
    result.ContentLabel = "KEY"
    result.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[
        0
    ].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = stranger
    back = Reidentifier(s.lookup).reidentify(result)
    assert stranger in uid_values(back)


def test_ai_generated_2_25_uids_are_kept() -> None:
    s = radiographs(1)
    result = sc(s)
    back = s.reidentifier.reidentify(result)
    assert back.SOPInstanceUID == result.SOPInstanceUID


def test_non_ascii_names_are_restored_in_utf8() -> None:
    patient = Patient(name="Müller^Zoë", patient_id="ÄÖ-1", birth_date="19800101")
    s = Scenario(list(radiograph_study(1, patient=patient)))
    back = s.round_trip(sc(s))
    assert str(back.PatientName) == "Müller^Zoë"
    assert back.PatientID == "ÄÖ-1"
    assert back.SpecificCharacterSet == "ISO_IR 192"


def test_attributes_the_original_lacked_are_emptied() -> None:
    s = radiographs(1)
    result = sc(s)
    result.PatientComments = "AI wrote this"
    back = s.reidentifier.reidentify(result)
    assert back.PatientComments is None or back.PatientComments == ""


def test_reidentify_file_refuses_unreadable_bytes() -> None:
    s = radiographs(1)
    with pytest.raises(InvalidRequest):
        s.reidentifier.reidentify_file(b"not dicom at all")


def ct_scenario(accession: str = "ACC-0001") -> Scenario:
    """A CT study without Specific Character Set (plain ASCII)."""
    from tests.support.dicom import make_ct, to_bytes

    study = generate_uid()
    return Scenario(
        [to_bytes(make_ct(study_uid=study, instance_number=n, accession=accession)) for n in (1, 2)]
    )


def test_an_ascii_identity_leaves_the_character_set_alone() -> None:
    s = ct_scenario()
    back = s.reidentifier.reidentify(kos(s))
    assert "SpecificCharacterSet" not in back
    assert back.PatientName == "Test^Patient"


def test_a_study_without_accession_number_is_reidentified() -> None:
    s = ct_scenario(accession="")
    back = s.round_trip(kos(s))
    assert back.AccessionNumber in ("", None)
    assert back.PatientID == "PID-0001"


def test_module_attributes_the_original_lacked_are_emptied_sequences_too() -> None:
    s = ct_scenario()
    result = kos(s)
    other = Dataset()
    other.PatientID = s.lookup.studies[result.StudyInstanceUID].patient_pseudo_id
    result.OtherPatientIDsSequence = [other]
    back = s.round_trip(result)
    assert len(back.OtherPatientIDsSequence) == 0


def test_multi_valued_uids_are_mapped_back() -> None:
    s = ct_scenario()
    result = kos(s)
    result.FailedSOPInstanceUIDList = [ds.SOPInstanceUID for ds in s.pseudonymised]
    back = s.reidentifier.reidentify(result)
    assert list(back.FailedSOPInstanceUIDList) == [ds.SOPInstanceUID for ds in s.originals]


@pytest.mark.parametrize("with_key", [True, False])
def test_a_known_pseudonym_uid_in_text_is_found_with_or_without_key(with_key: bool) -> None:
    s = ct_scenario()
    result = kos(s)
    pseudo = s.pseudonymised[0].SeriesInstanceUID
    result.SeriesDescription = f"from {pseudo}"
    reidentifier = s.reidentifier if with_key else Reidentifier(s.lookup)
    with pytest.raises(NotReidentifiable, match=f"^SeriesDescription holds pseudonym {pseudo}$"):
        reidentifier.reidentify(result)


def test_pseudonyms_in_multi_valued_text_and_person_names_are_found() -> None:
    s = ct_scenario()
    pseudo_id = s.lookup.studies[s.pseudonymised[0].StudyInstanceUID].patient_pseudo_id
    result = kos(s)
    result.add_new(0x00102110, "LO", ["none", f"x {pseudo_id}"])  # Allergies, VM 1-n
    with pytest.raises(NotReidentifiable, match=f"^Allergies holds pseudonym {pseudo_id}$"):
        s.reidentifier.reidentify(result)
    result = kos(s)
    result.OperatorsName = pseudo_id + "^"
    with pytest.raises(NotReidentifiable, match=f"^OperatorsName holds pseudonym {pseudo_id}$"):
        s.reidentifier.reidentify(result)


def test_the_unknown_pseudonym_message_names_the_attribute() -> None:
    s = ct_scenario()
    result = kos(s)
    stranger = Pseudonymiser(Profile(), KEY)._keyed.uid("1.2.3.4.5.6.7.8.9")
    result.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[
        0
    ].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = stranger
    with pytest.raises(
        NotReidentifiable,
        match=f"^ReferencedSOPInstanceUID references {stranger}, a pseudonym the map does not",
    ):
        s.reidentifier.reidentify(result)


def test_a_result_without_sop_instance_uid_is_not_reidentifiable() -> None:
    s = ct_scenario()
    result = kos(s)
    del result.SOPInstanceUID
    reason = r"^the result has no SOP Class or SOP Instance UID$"
    with pytest.raises(NotReidentifiable, match=reason):
        s.reidentifier.reidentify(result)
    result = kos(s)
    del result.SOPClassUID
    with pytest.raises(NotReidentifiable, match=reason):
        s.reidentifier.reidentify(result)


def test_file_meta_is_rebuilt_for_the_result() -> None:
    s = ct_scenario()
    result = kos(s)
    result.file_meta.MediaStorageSOPInstanceUID = s.pseudonymised[0].SOPInstanceUID
    back = s.reidentifier.reidentify(result)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == back.SOPClassUID


def test_non_ascii_identity_switches_a_latin1_result_to_utf8() -> None:
    from tests.support.dicom import make_ct, to_bytes

    study = generate_uid()
    raws = [
        to_bytes(make_ct(study_uid=study, patient_name="Müller^Zoë", charset="ISO_IR 100"))
        for _ in range(2)
    ]
    s = Scenario(raws)
    result = kos(s)
    assert result.SpecificCharacterSet == "ISO_IR 100"
    back = s.round_trip(result)
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "Müller^Zoë"


def test_retain_uids_results_are_reidentified() -> None:
    from aifi.gateway.deid import Option

    raws = list(radiograph_study(2, patient=PATIENT, accession="ACC-55123"))
    profile = Profile(options=frozenset({Option.BASIC, Option.RETAIN_UIDS}))
    lookup = MemoryLookup()
    inputs = []
    for raw in raws:
        data, facts = Pseudonymiser(profile, KEY).pseudonymise_file(raw)
        lookup.record(facts)
        inputs.append(dcmread(io.BytesIO(data)))
    result = air.key_objects(inputs, ALGORITHM, inputs[1:2], description="fracture")
    back = Reidentifier(lookup, key=KEY).reidentify(result)
    assert back.StudyInstanceUID == inputs[0].StudyInstanceUID
    assert back.PatientID == PATIENT.patient_id
