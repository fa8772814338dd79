"""The pseudonymiser's promises to the hospital and the hub: the same original gives the same
bytes; a follow-up study of a patient gets the same patient pseudonym and the same date
offset; Patient's Age comes from the birth date; descriptors keep what routing needs and
lose names, identifiers, dates and numbers; burned-in annotation is quarantined; the facts
handed back are what re-identification needs."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from aifi.errors import InvalidRequest
from aifi.gateway.deid import (
    Option,
    Profile,
    Pseudonymised,
    Pseudonymiser,
    Quarantine,
    SafePrivate,
)
from aifi.gateway.deid.keyed import Keyed
from tests.support.dicom import make_ct, to_bytes

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def ct(**kwargs: object) -> Dataset:
    ds = make_ct(**kwargs)  # type: ignore[arg-type]
    ds.PatientName = "Jansen^Pieter"
    ds.PatientID = "MRN-7731"
    ds.PatientBirthDate = "19700615"
    ds.StudyDescription = "CT THORAX Jansen MRN-7731 2023-01-05"
    ds.SeriesDescription = "T2 3D axial 12:30 pieter"
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionDateTime = ds.StudyDate + "101500.5"
    ds.ContentDate = ds.StudyDate
    ds.SeriesDate = ds.StudyDate
    return ds


def days(value: str) -> int:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8])).toordinal()


def pseudonymise(
    ds: Dataset, profile: Profile | None = None, key: bytes = KEY
) -> tuple[bytes, Pseudonymised]:
    return Pseudonymiser(profile or Profile(), key).pseudonymise_file(to_bytes(ds))


def test_same_original_gives_the_same_bytes_and_facts() -> None:
    raw = to_bytes(ct())
    first = Pseudonymiser(Profile(), KEY).pseudonymise_file(raw)
    second = Pseudonymiser(Profile(), KEY).pseudonymise_file(raw)
    assert first[0] == second[0]
    assert first[1].uids == second[1].uids
    assert first[1].patient == second[1].patient
    assert first[1].study == second[1].study
    again = Pseudonymiser(Profile(), KEY)
    assert again.pseudonymise_file(raw)[0] == again.pseudonymise_file(raw)[0]


def test_another_key_gives_other_pseudonyms() -> None:
    raw = to_bytes(ct())
    mine, facts = Pseudonymiser(Profile(), KEY).pseudonymise_file(raw)
    theirs, other = Pseudonymiser(Profile(), OTHER_KEY).pseudonymise_file(raw)
    assert facts.patient.pseudo_id != other.patient.pseudo_id
    assert set(facts.uids).isdisjoint(other.uids)
    assert mine != theirs


def test_uids_are_2_25_uids_mapped_back_to_their_originals() -> None:
    source = ct()
    data, facts = pseudonymise(source)
    out = dcmread(io.BytesIO(data))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        pseudo = out[keyword].value
        assert pseudo.startswith("2.25.") and len(pseudo) <= 64
        assert int(pseudo[5:]) < 2**128
        assert facts.uids[pseudo] == source[keyword].value
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert facts.study.pseudo_study_uid == out.StudyInstanceUID
    assert facts.study.original_study_uid == source.StudyInstanceUID


def test_a_follow_up_study_gets_the_same_patient_pseudonym_and_offset() -> None:
    first = ct(study_date="20240101")
    later = ct(study_date="20250301")
    one, a = pseudonymise(first)
    two, b = pseudonymise(later)
    assert a.patient.pseudo_id == b.patient.pseudo_id
    assert a.patient.date_offset_days == b.patient.date_offset_days
    assert a.study.pseudo_study_uid != b.study.pseudo_study_uid
    x, y = dcmread(io.BytesIO(one)), dcmread(io.BytesIO(two))
    assert x.PatientID == y.PatientID == a.patient.pseudo_id
    assert str(x.PatientName) == a.patient.pseudo_id + "^"
    # The interval between the studies is kept exactly.
    assert days(y.StudyDate) - days(x.StudyDate) == days("20250301") - days("20240101")


def test_another_patient_or_issuer_gets_another_pseudonym() -> None:
    _, a = pseudonymise(ct())
    other = ct()
    other.PatientID = "MRN-7732"
    _, b = pseudonymise(other)
    issuer = ct()
    issuer.IssuerOfPatientID = "OTHER HOSPITAL"
    _, c = pseudonymise(issuer)
    assert len({a.patient.pseudo_id, b.patient.pseudo_id, c.patient.pseudo_id}) == 3
    assert c.patient.issuer == "OTHER HOSPITAL"


def test_dates_move_by_one_whole_offset_and_times_stay() -> None:
    source = ct(study_date="20240229", study_time="081500")
    data, facts = pseudonymise(source)
    out = dcmread(io.BytesIO(data))
    offset = facts.patient.date_offset_days
    profile = Profile()
    assert profile.date_offset_min_days <= offset <= profile.date_offset_max_days
    assert offset != 0
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert days(out[keyword].value) - days(source[keyword].value) == offset
    assert out.AcquisitionDateTime[8:] == "101500.5"
    assert days(out.AcquisitionDateTime[:8]) - days("20240229") == offset
    assert out.StudyTime == "081500"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    # The original dates are kept for re-identification.
    assert facts.study.identity["00080020"]["Value"] == ["20240229"]


def test_offset_range_comes_from_the_profile() -> None:
    profile = Profile(date_offset_min_days=-10, date_offset_max_days=-10)
    data, facts = pseudonymise(ct(study_date="20240110"), profile)
    assert facts.patient.date_offset_days == -10
    assert dcmread(io.BytesIO(data)).StudyDate == "20231231"


@pytest.mark.parametrize(
    ("birth", "study", "age"),
    [
        ("19700615", "20240614", "053Y"),
        ("19700615", "20240615", "054Y"),
        ("20240101", "20240110", "009D"),
        ("20240101", "20240129", "004W"),
        ("20240101", "20240301", "002M"),
        ("20231215", "20241214", "011M"),
    ],
)
def test_age_is_computed_from_the_birth_date_before_it_goes(
    birth: str, study: str, age: str
) -> None:
    source = ct(study_date=study)
    source.PatientBirthDate = birth
    data, facts = pseudonymise(source)
    out = dcmread(io.BytesIO(data))
    assert out.PatientAge == age
    assert not out.PatientBirthDate
    assert facts.patient.identity["00100030"]["Value"] == [birth]


def test_an_existing_age_is_kept_and_no_age_without_birth_date() -> None:
    source = ct()
    source.PatientAge = "033Y"
    assert dcmread(io.BytesIO(pseudonymise(source)[0])).PatientAge == "033Y"
    unknown = ct()
    unknown.PatientBirthDate = ""
    assert "PatientAge" not in dcmread(io.BytesIO(pseudonymise(unknown)[0]))


def test_age_is_not_kept_without_patient_characteristics() -> None:
    profile = Profile(options=frozenset({Option.BASIC, Option.CLEAN_DESCRIPTORS}))
    source = ct()
    source.PatientAge = "033Y"
    out = dcmread(io.BytesIO(pseudonymise(source, profile)[0]))
    assert "PatientAge" not in out


def test_descriptors_keep_routing_words_and_lose_identity() -> None:
    out = dcmread(io.BytesIO(pseudonymise(ct())[0]))
    assert out.StudyDescription == "CT THORAX"
    assert out.SeriesDescription == "T2 3D axial"


def test_without_clean_descriptors_descriptions_are_removed() -> None:
    profile = Profile(options=frozenset({Option.BASIC}))
    out = dcmread(io.BytesIO(pseudonymise(ct(), profile)[0]))
    assert "StudyDescription" not in out
    assert "SeriesDescription" not in out


def test_accession_number_becomes_a_short_keyed_pseudonym() -> None:
    data, facts = pseudonymise(ct(accession="ACC-0001"))
    out = dcmread(io.BytesIO(data))
    assert out.AccessionNumber == facts.study.accession_pseudo
    assert 0 < len(out.AccessionNumber) <= 16
    assert out.AccessionNumber != "ACC-0001"
    _, again = pseudonymise(ct(accession="ACC-0001"))
    assert again.study.accession_pseudo == facts.study.accession_pseudo
    _, empty = pseudonymise(ct(accession=""))
    assert empty.study.accession_pseudo == ""


def test_nested_accession_numbers_get_the_same_pseudonym() -> None:
    source = ct(accession="ACC-0001")
    request, empty = Dataset(), Dataset()
    request.AccessionNumber = "ACC-0001"
    request.RequestedProcedureID = "RP-1"
    empty.AccessionNumber = ""
    source.RequestAttributesSequence = [request, empty]
    data, facts = pseudonymise(source)
    out = dcmread(io.BytesIO(data))
    assert out.RequestAttributesSequence[0].AccessionNumber == facts.study.accession_pseudo
    assert not out.RequestAttributesSequence[1].AccessionNumber


def test_marks_say_what_was_done() -> None:
    out = dcmread(io.BytesIO(pseudonymise(ct())[0]))
    assert out.PatientIdentityRemoved == "YES"
    codes = [
        (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [("113100", "DCM"), ("113105", "DCM"), ("113107", "DCM"), ("113108", "DCM")]
    assert list(out.DeidentificationMethod) == [
        i.CodeMeaning for i in out.DeidentificationMethodCodeSequence
    ]


def test_patient_identity_and_study_identity_are_kept_as_dicom_json() -> None:
    _, facts = pseudonymise(ct())
    assert facts.patient.original_id == "MRN-7731"
    assert facts.patient.identity["00100010"]["Value"] == [{"Alphabetic": "Jansen^Pieter"}]
    assert facts.study.identity["00080050"]["Value"] == ["ACC-0001"]
    assert facts.study.patient_pseudo_id == facts.patient.pseudo_id


def test_a_patient_without_id_is_known_by_name_and_birth_date() -> None:
    first, second = ct(), ct()
    for ds in (first, second):
        ds.PatientID = ""
    _, a = pseudonymise(first)
    _, b = pseudonymise(second)
    assert a.patient.pseudo_id == b.patient.pseudo_id
    nobody = ct()
    nobody.PatientID = ""
    nobody.PatientName = ""
    _, c = pseudonymise(nobody)
    assert c.patient.pseudo_id not in (a.patient.pseudo_id, "")


def test_retain_uids_keeps_uids_and_records_none() -> None:
    source = ct()
    profile = Profile(options=frozenset({Option.BASIC, Option.RETAIN_UIDS}))
    data, facts = pseudonymise(source, profile)
    out = dcmread(io.BytesIO(data))
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert facts.uids == {}
    assert facts.study.pseudo_study_uid == source.StudyInstanceUID


def test_pixel_data_is_carried_over_unchanged() -> None:
    source = ct(rows=64, columns=64)
    data, _ = pseudonymise(source)
    assert dcmread(io.BytesIO(data)).PixelData == source.PixelData


def test_deflated_transfer_syntax_is_kept() -> None:
    source = ct(transfer_syntax=DeflatedExplicitVRLittleEndian)
    data, _ = pseudonymise(source)
    out = dcmread(io.BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert out.PatientIdentityRemoved == "YES"


def test_a_dataset_built_in_memory_is_pseudonymised_in_place() -> None:
    source = ct()
    original = source.SOPInstanceUID
    facts = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    assert facts.dataset is source
    assert facts.uids[source.SOPInstanceUID] == original
    assert source.PatientIdentityRemoved == "YES"
    assert source.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


@pytest.mark.parametrize(
    ("sop_class", "modality", "burned_in", "quarantined"),
    [
        (CTImageStorage, "CT", "YES", True),
        (CTImageStorage, "CT", None, False),
        (CTImageStorage, "CT", "NO", False),
        (SecondaryCaptureImageStorage, "MR", None, True),
        (SecondaryCaptureImageStorage, "CT", None, True),
        (SecondaryCaptureImageStorage, "OT", "NO", False),
        (UltrasoundImageStorage, "US", None, True),
        (UltrasoundImageStorage, "US", "NO", False),
        (CTImageStorage, "XC", None, True),
        (CTImageStorage, "OT", "", True),
    ],
)
def test_burned_in_annotation_is_quarantined(
    sop_class: str, modality: str, burned_in: str | None, quarantined: bool
) -> None:
    source = ct(modality=modality)
    source.SOPClassUID = UID(sop_class)
    source.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    if burned_in is not None:
        source.BurnedInAnnotation = burned_in
    if quarantined:
        with pytest.raises(Quarantine, match="Burned In Annotation"):
            pseudonymise(source)
    else:
        pseudonymise(source)


def test_unreadable_bytes_are_an_invalid_request() -> None:
    pseudonymiser = Pseudonymiser(Profile(), KEY)
    for junk in (b"", b"not dicom", to_bytes(ct())[:200]):
        with pytest.raises(InvalidRequest):
            pseudonymiser.pseudonymise_file(junk)


def test_an_instance_without_uids_is_refused() -> None:
    source = ct()
    del source.StudyInstanceUID
    with pytest.raises(InvalidRequest, match=r"^the instance has no Study or SOP Instance UID$"):
        Pseudonymiser(Profile(), KEY).pseudonymise(source)


def test_unknown_and_group_length_elements_are_removed() -> None:
    source = ct()
    source.add_new(0x00091001, "LO", "private")
    source.add_new(0x00080000, "UL", 4)
    source.add_new(0x7777_0010, "LO", "not in the dictionary")
    source.add_new(0x00321032, "PN", "Requesting^Doctor")  # Requesting Physician
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    for tag in (0x00091001, 0x00080000, 0x7777_0010):
        assert tag not in out
    assert "RequestingPhysician" not in out or not out.RequestingPhysician


def test_sequences_the_table_does_not_name_are_cleaned_inside() -> None:
    source = ct()
    item = Dataset()
    item.PatientName = "Hidden^Name"
    item.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedInstanceSequence = [item]
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    inner = out.dataset.ReferencedInstanceSequence[0]
    assert "PatientName" not in inner or str(inner.PatientName) != "Hidden^Name"
    assert inner.ReferencedSOPInstanceUID in out.uids
    assert inner.ReferencedSOPClassUID == CTImageStorage


def test_under_one_millisecond_of_cpu_per_ct_header() -> None:
    """PS3.15 pseudonymisation of a 512x512 CT header; generous bound for a shared CI box
    (the figure measured on a quiet machine is in docs/pseudonymisation.md)."""
    import time

    raw = to_bytes(make_ct(rows=512, columns=512))
    pseudonymiser = Pseudonymiser(Profile(), KEY)
    batches = []
    for _ in range(5):
        datasets = [dcmread(io.BytesIO(raw)) for _ in range(50)]
        start = time.process_time()
        for ds in datasets:
            pseudonymiser.pseudonymise(ds)
        batches.append((time.process_time() - start) / 50)
    assert min(batches) < 0.005


def test_no_age_without_any_date_of_the_study() -> None:
    source = ct()
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        source[keyword].value = ""
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert "PatientAge" not in out


def test_age_falls_back_to_the_series_date() -> None:
    source = ct(study_date="")
    source.SeriesDate = "20000615"
    source.PatientBirthDate = "19700615"
    assert Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset.PatientAge == "030Y"


def test_nested_patient_ids_follow_the_table_not_the_top_level_pseudonym() -> None:
    source = ct()
    item = Dataset()
    item.PatientID = "MRN-7731"
    item.PatientName = "Jansen^Pieter"
    source.ReferencedInstanceSequence = [item]
    facts = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    inner = facts.dataset.ReferencedInstanceSequence[0]
    assert inner.PatientID == "ANONYMOUS"  # Patient ID: D (a dummy) in Table E.1-1
    assert not inner.PatientName  # Patient's Name: Z
    assert facts.dataset.PatientID == facts.patient.pseudo_id


SAFE_PROFILE = Profile(
    options=frozenset({Option.BASIC, Option.RETAIN_SAFE_PRIVATE}),
    safe_private=frozenset(
        {
            SafePrivate(creator="ACME 1", group=0x0011, element=0x00),
            SafePrivate(creator="ACME 1", group=0x0011, element=0x02),
            SafePrivate(creator="ACME FF", group=0x0011, element=0x01),
            SafePrivate(creator="ACME SQ", group=0x0013, element=0x01),
        }
    ),
)


def test_safe_private_blocks_and_creators() -> None:
    source = ct()
    source.add_new(0x00110010, "LO", "ACME 1")
    source.add_new(0x00111000, "LO", "safe at element 00")
    source.add_new(0x00111001, "LO", "not listed")
    source.add_new(0x00111002, "LO", "safe at element 02")
    source.add_new(0x001100FF, "LO", "ACME FF")
    source.add_new(0x0011FF01, "LO", "safe in the last block")
    source.add_new(0x00111201, "LO", "no creator for block 12")
    source.add_new(0x00110001, "LO", "below the creator range")
    source.add_new(0x00110100, "LO", "between creators and blocks")
    source.add_new(0x00150010, "LO", "ACME 1")  # a creator whose block holds nothing safe
    source.add_new(0x00151000, "LO", "same creator, other group")
    out = Pseudonymiser(SAFE_PROFILE, KEY).pseudonymise(source).dataset
    kept = {int(element.tag): element.value for element in out if element.tag.is_private}
    assert kept == {
        0x00110010: "ACME 1",
        0x00111000: "safe at element 00",
        0x00111002: "safe at element 02",
        0x001100FF: "ACME FF",
        0x0011FF01: "safe in the last block",
    }


def test_a_safe_private_sequence_is_cleaned_inside() -> None:
    source = ct()
    inner = Dataset()
    inner.PatientName = "Jansen^Pieter"
    inner.StudyDescription = "Jansen 2023-01-05 CT"
    inner.ReferencedSOPInstanceUID = generate_uid()
    source.add_new(0x00130010, "LO", "ACME SQ")
    source.add_new(0x00131001, "SQ", [inner])
    facts = Pseudonymiser(SAFE_PROFILE, KEY).pseudonymise(source)
    item = facts.dataset[0x00131001].value[0]
    assert str(item.get("PatientName", "")) != "Jansen^Pieter"
    assert "StudyDescription" not in item  # Basic only: X
    assert item.ReferencedSOPInstanceUID in facts.uids


def test_private_elements_without_retain_safe_private_all_go_even_if_listed() -> None:
    profile = Profile(
        options=frozenset({Option.BASIC}),
        safe_private=frozenset({SafePrivate(creator="ACME 1", group=0x0011, element=0x00)}),
    )
    source = ct()
    source.add_new(0x00110010, "LO", "ACME 1")
    source.add_new(0x00111000, "LO", "listed but option off")
    out = Pseudonymiser(profile, KEY).pseudonymise(source).dataset
    assert not [element for element in out if element.tag.is_private]


def test_check_burned_in_on_its_own() -> None:
    from aifi.gateway.deid.pseudonymise import check_burned_in

    source = ct(modality="US")
    with pytest.raises(Quarantine, match="absent for modality US"):
        check_burned_in(source)
    source.BurnedInAnnotation = "no"
    check_burned_in(source)
    source.BurnedInAnnotation = " yes "
    with pytest.raises(Quarantine, match=r"^Burned In Annotation \(0028,0301\) is YES$"):
        check_burned_in(source)


BASIC = Profile(options=frozenset({Option.BASIC}))


def test_d_gives_a_dummy_of_the_vr_that_keeps_type_1_attributes_present() -> None:
    source = ct()
    item = Dataset()
    item.ValueType = "TEXT"
    source.ContentSequence = [item]  # D
    source.add_new(0x006A0003, "UI", "1.2.3.4.5")  # Annotation Group UID: D
    source.add_new(0x0040A121, "DA", "20230105")  # Date: D
    source.add_new(0x0040A120, "DT", "20230105101010")  # DateTime: D
    source.add_new(0x0040A122, "TM", "101010")  # Time: D
    source.add_new(0x0072005F, "AS", "045Y")  # Selector AS Value: D
    source.add_new(0x04000565, "CS", "COERCE")  # Reason for the Attribute Modification: D
    source.add_new(0x00340002, "OB", b"flow")  # Flow Identifier: D
    source.add_new(0x00181400, "LO", "device processing")  # X/D with a value: D
    source.add_new(0x00080023, "DA", "")  # Content Date Z/D, empty: Z
    facts = Pseudonymiser(BASIC, KEY).pseudonymise(source)
    out = facts.dataset
    assert len(out.ContentSequence) == 1 and len(out.ContentSequence[0]) == 0
    assert facts.uids[out[0x006A0003].value] == "1.2.3.4.5"
    assert out[0x0040A121].value == "19000101"
    assert out[0x0040A120].value == "19000101000000"
    assert out[0x0040A122].value == "000000"
    assert out[0x0072005F].value == "000Y"
    assert out[0x04000565].value == "ANONYMOUS"
    assert out[0x00340002].value == b"\x00\x00"
    assert out[0x00181400].value == "ANONYMOUS"
    assert out[0x00080023].value in ("", None)


@pytest.mark.parametrize(
    ("vr", "dummy"),
    [
        ("AE", "ANONYMOUS"),
        ("DS", "0"),
        ("IS", "0"),
        ("LT", "ANONYMOUS"),
        ("PN", "ANONYMOUS"),
        ("SH", "ANONYMOUS"),
        ("ST", "ANONYMOUS"),
        ("UC", "ANONYMOUS"),
        ("UT", "ANONYMOUS"),
        ("UR", "urn:anonymous"),
        ("OD", b"\x00\x00"),
        ("OF", b"\x00\x00"),
        ("OL", b"\x00\x00"),
        ("OV", b"\x00\x00"),
        ("OW", b"\x00\x00"),
        ("UN", b"\x00\x00"),
        ("FL", 0.0),
        ("FD", 0.0),
        ("US", 0),
        ("SL", 0),
    ],
)
def test_dummy_values_of_every_vr(vr: str, dummy: object) -> None:
    """No row of the 2024b table asks D of these VRs; a later edition may."""
    from pydicom.dataelem import DataElement

    from aifi.gateway.deid.pseudonymise import _Context

    ds = Dataset()
    ds.add(DataElement(0x00091001, vr, None))
    Pseudonymiser(BASIC, KEY)._dummy(ds[0x00091001], _Context(0, frozenset(), {}))
    value = ds[0x00091001].value
    if isinstance(dummy, str):
        assert str(value) == dummy
    else:
        assert value == dummy and type(value) is type(dummy)


def test_identity_facts_follow_each_instance_through_the_cache() -> None:
    pseudonymiser = Pseudonymiser(Profile(), KEY)
    first, second = ct(accession="ACC-1"), ct(accession="ACC-2")
    second.PatientName = "Other^Person"
    a = pseudonymiser.pseudonymise_file(to_bytes(first))[1]
    b = pseudonymiser.pseudonymise_file(to_bytes(second))[1]
    assert a.patient.identity["00100010"]["Value"] == [{"Alphabetic": "Jansen^Pieter"}]
    assert b.patient.identity["00100010"]["Value"] == [{"Alphabetic": "Other^Person"}]
    assert a.study.identity["00080050"]["Value"] == ["ACC-1"]
    assert b.study.identity["00080050"]["Value"] == ["ACC-2"]
    # Read from bytes or built in memory: the same facts.
    memory = Pseudonymiser(Profile(), KEY).pseudonymise(ct(accession="ACC-1"))
    assert memory.patient.identity == a.patient.identity
    assert memory.study.identity["00080050"] == a.study.identity["00080050"]


def test_the_identity_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aifi.gateway.deid.pseudonymise._IDENTITY_CACHE_SIZE", 3)
    pseudonymiser = Pseudonymiser(Profile(), KEY)
    raws = [to_bytes(ct(accession=f"ACC-{n}")) for n in range(3)]
    for raw in raws:  # 2 entries each (patient, study)
        pseudonymiser.pseudonymise_file(raw)
        assert 0 < len(pseudonymiser._identities) <= 3
    facts = pseudonymiser.pseudonymise_file(raws[0])[1]
    assert facts.study.identity["00080050"]["Value"] == ["ACC-0"]


def test_file_meta_elements_inside_the_data_set_are_removed() -> None:
    source = ct()
    source.add_new(0x00020013, "SH", "PHI-IMPL")
    source.add_new(0x00110000, "UL", 4)
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert 0x00020013 not in out and 0x00110000 not in out


@pytest.mark.parametrize(
    ("implicit", "little", "expected"),
    [
        (True, True, "1.2.840.10008.1.2"),
        (False, True, "1.2.840.10008.1.2.1"),
        (False, False, "1.2.840.10008.1.2.2"),
    ],
)
def test_a_data_set_without_part10_header_keeps_its_encoding(
    implicit: bool, little: bool, expected: str
) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    source = ct()
    del source.file_meta
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, source)
    data, facts = Pseudonymiser(Profile(), KEY).pseudonymise_file(buffer.getvalue())
    out = dcmread(io.BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == expected
    assert out.PatientIdentityRemoved == "YES"
    assert facts.uids[out.SOPInstanceUID] == source.SOPInstanceUID


def test_an_instance_without_sop_class_is_invalid() -> None:
    source = ct()
    del source.SOPClassUID
    with pytest.raises(InvalidRequest, match="no SOP Class/Instance UID"):
        Pseudonymiser(Profile(), KEY).pseudonymise_file(to_bytes(source))


def test_empty_uids_stay_empty_and_are_not_recorded() -> None:
    source = ct()
    source.FrameOfReferenceUID = ""
    facts = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    assert facts.dataset.FrameOfReferenceUID in ("", None)
    assert "" not in facts.uids.values() and "" not in facts.uids


def test_a_uid_with_a_wrong_vr_is_emptied_and_one_as_un_is_replaced() -> None:
    source = ct()
    wrong, unknown = Dataset(), Dataset()
    wrong.add_new(0x00081155, "LO", "1.2.3.4.5")
    unknown.add_new(0x00081155, "UN", b"1.2.3.4.6\x00")  # pydicom reads UN as the known VR
    source.ReferencedImageSequence = [wrong, unknown]
    facts = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    items = facts.dataset.ReferencedImageSequence
    assert not items[0][0x00081155].value
    assert facts.uids[items[1].ReferencedSOPInstanceUID] == "1.2.3.4.6"


def test_other_patient_ids_are_not_left_in_descriptions() -> None:
    source = ct()
    other = Dataset()
    other.PatientID = "OLDID99"
    source.OtherPatientIDsSequence = [other]
    source.OtherPatientIDs = ["XID1", "YID2"]
    source.StudyDescription = "CT OLDID99 XID1 YID2 THORAX"
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert out.StudyDescription == "CT THORAX"
    assert "OtherPatientIDsSequence" not in out and "OtherPatientIDs" not in out


def test_multi_valued_dates_and_texts_are_cleaned_value_by_value() -> None:
    source = ct(study_date="20240110")
    source.add_new(0x00081080, "LO", ["Jansen cough", "fever 2023-01-05"])  # Admitting Diagn.
    facts = Pseudonymiser(Profile(date_offset_min_days=-1, date_offset_max_days=-1), KEY)
    out = facts.pseudonymise(source).dataset
    assert list(out[0x00081080].value) == ["cough", "fever"]
    assert out.StudyDate == "20240109"


def test_curves_and_overlays_go_and_overlay_comments_are_cleaned() -> None:
    profile = Profile(options=frozenset({Option.BASIC, Option.CLEAN_GRAPHICS}))
    source = ct()
    source.add_new(0x60003000, "OW", b"\x01\x00")
    source.add_new(0x60004000, "LT", "Jansen CT")
    source.add_new(0x50000010, "US", 1)
    out = Pseudonymiser(profile, KEY).pseudonymise(source).dataset
    assert 0x60003000 not in out and 0x50000010 not in out
    assert out[0x60004000].value == "CT"
    basic = Pseudonymiser(BASIC, KEY).pseudonymise(ct()).dataset
    assert 0x60004000 not in basic


def test_every_name_and_identifier_counts_even_after_an_absent_one() -> None:
    source = ct(accession="XR7")
    source.ReferringPhysicianName = "Bakker^Els"  # after Other Patient Names (absent)
    source.StudyDescription = "CT Bakker XR7 Els THORAX"
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert out.StudyDescription == "CT THORAX"


def test_d_on_empty_values_keeps_them_empty() -> None:
    source = ct()
    source.add_new(0x00340002, "OB", b"")  # Flow Identifier: D
    source.InstitutionCodeSequence = []  # X/Z/D
    source.InstitutionName = ""  # X/Z/D
    out = Pseudonymiser(BASIC, KEY).pseudonymise(source).dataset
    assert out[0x00340002].value in (b"", None)
    assert len(out.InstitutionCodeSequence) == 0
    assert not out.InstitutionName


def test_invalid_bytes_say_why() -> None:
    with pytest.raises(InvalidRequest, match=r"^not a readable DICOM instance: "):
        Pseudonymiser(Profile(), KEY).pseudonymise_file(b"\x00" * 10)


def test_unencodable_instances_say_why() -> None:
    from aifi.gateway.deid.files import write_part10

    source = ct()
    source.add_new(0x00091001, "US or SS", 1)  # an ambiguous VR pydicom cannot write
    with pytest.raises(InvalidRequest, match=r"^the instance cannot be encoded: "):
        write_part10(source)


def test_command_group_elements_in_a_data_set_are_removed() -> None:
    source = ct()
    source.add_new(0x00000000, "UL", 4)  # Command Group Length (in the data dictionary)
    source.add_new(0x00000002, "UI", "1.2.3")  # Affected SOP Class UID (not in the table)
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert 0x00000000 not in out and 0x00000002 not in out


def test_pseudonyms_are_stable_across_releases() -> None:
    """Known answers: changing a derivation would give follow-up studies new pseudonyms."""
    keyed = Keyed(KEY)
    _, by_id = pseudonymise(ct())
    assert by_id.patient.pseudo_id == keyed.patient("AIFI", "id\x00MRN-7731\x00")
    assert by_id.patient.pseudo_id == "AIFILHWXYNAGP5P6I2S7"
    assert by_id.patient.date_offset_days == keyed.date_offset("id\x00MRN-7731\x00", -3652, -365)
    assert keyed.uid("1.2.3.4") == "2.25.157910775163533369044210656695821260936"
    assert keyed.accession("ACC-0001") == by_id.study.accession_pseudo
    named = ct()
    named.PatientID = ""
    _, by_name = pseudonymise(named)
    assert by_name.patient.pseudo_id == keyed.patient("AIFI", "name\x00Jansen^Pieter\x0019700615")
    nobody = ct()
    nobody.PatientID = ""
    nobody.PatientName = ""
    _, by_study = pseudonymise(nobody)
    basis = "study\x00" + nobody.StudyInstanceUID
    assert by_study.patient.pseudo_id == keyed.patient("AIFI", basis)


def test_no_offset_without_modified_dates() -> None:
    _, facts = pseudonymise(ct(), BASIC)
    assert facts.patient.date_offset_days == 0


def test_the_identity_cache_tells_character_sets_apart() -> None:
    raw = to_bytes(ct(charset="ISO_IR 100"))
    source = ct(charset="ISO_IR 100")
    source.PatientName = "Àlex^Øst"
    latin1 = to_bytes(source)
    cyrillic = latin1.replace(b"ISO_IR 100", b"ISO_IR 144")
    assert latin1 != cyrillic and raw
    pseudonymiser = Pseudonymiser(Profile(), KEY)
    a = pseudonymiser.pseudonymise_file(latin1)[1].patient.identity["00100010"]
    b = pseudonymiser.pseudonymise_file(cyrillic)[1].patient.identity["00100010"]
    assert a == {"vr": "PN", "Value": [{"Alphabetic": "Àlex^Øst"}]}
    assert a != b


def test_quarantine_reasons_are_exact() -> None:
    from aifi.gateway.deid.pseudonymise import check_burned_in

    capture = ct(modality="MR")
    capture.SOPClassUID = SecondaryCaptureImageStorage
    with pytest.raises(
        Quarantine,
        match=r"^Burned In Annotation \(0028,0301\) absent in a Secondary Capture image$",
    ):
        check_burned_in(capture)
    with pytest.raises(
        Quarantine, match=r"^Burned In Annotation \(0028,0301\) absent for modality XC$"
    ):
        check_burned_in(ct(modality="XC"))


def test_clean_structured_content_cleans_sr_text_inside() -> None:
    profile = Profile(options=frozenset({Option.BASIC, Option.CLEAN_STRUCTURED_CONTENT}))
    source = ct()
    text, nested = Dataset(), Dataset()
    text.ValueType = "TEXT"
    text.TextValue = "Jansen seen 2023-01-05, nodule 4 mm"
    nested.ValueType = "TEXT"
    nested.TextValue = "MRN-7731 follow up"
    nested.CodeMeaning = "Pieter"  # not in the table: cleaned inside the C sequence
    text.ContentSequence = [nested]
    source.ContentSequence = [text]
    source.ImageComments = "kept out"
    out = Pseudonymiser(profile, KEY).pseudonymise(source).dataset
    item = out.ContentSequence[0]
    assert item.TextValue == "seen nodule 4 mm"
    assert item.ContentSequence[0].TextValue == "follow up"
    assert item.ContentSequence[0].CodeMeaning == ""
    assert item.ValueType == "TEXT"
    # Outside the cleaned sequence, text the table does not name is left alone.
    source = ct()
    source.add_new(0x00180015, "CS", "CHEST")  # Body Part Examined
    out = Pseudonymiser(profile, KEY).pseudonymise(source).dataset
    assert out.BodyPartExamined == "CHEST"


def test_names_and_unknown_attributes_the_table_does_not_list_are_removed() -> None:
    source = ct()
    source.add_new(0x00142006, "PN", "Evaluator^Eva")  # Evaluator Name: PN, not in the table
    source.add_new(0x77760010, "LO", "unknown even group")  # not in the data dictionary
    source.add_new(0x00180015, "CS", "CHEST")  # Body Part Examined: kept
    out = Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset
    assert 0x00142006 not in out and 0x77760010 not in out
    assert out.BodyPartExamined == "CHEST"


def test_file_meta_is_made_for_a_data_set_without_one() -> None:
    source = ct()
    del source.file_meta
    facts = Pseudonymiser(Profile(), KEY).pseudonymise(source)
    meta = facts.dataset.file_meta
    assert meta.MediaStorageSOPInstanceUID == facts.dataset.SOPInstanceUID
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    kept = ct()
    kept.file_meta.SourceApplicationEntityTitle = "MODALITY1"
    meta = Pseudonymiser(Profile(), KEY).pseudonymise(kept).dataset.file_meta
    assert "SourceApplicationEntityTitle" not in meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"


# -- the File Meta Information written by hand (deid.files.write_part10) -----------------------


def _pydicom_writes(ds: Dataset) -> bytes:
    """What pydicom's own writer gives (the reference the hand-written meta must match)."""
    import copy

    buffer = io.BytesIO()
    copy.deepcopy(ds).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "transfer_syntax",
    [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",  # RLE: encapsulated
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
    ],
    ids=["implicit", "explicit", "rle", "jpeg"],
)
@pytest.mark.parametrize("odd", [True, False], ids=["odd-uids", "even-uids"])
def test_the_file_meta_written_by_hand_is_what_pydicom_writes(
    transfer_syntax: str, odd: bool
) -> None:
    from aifi.gateway.deid.files import _rebuilt_meta, rebuild_file_meta, write_part10

    source = ct(rows=8, columns=8)
    if transfer_syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
        source = _encapsulated(source, [b"\x01" * 10])
    source.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    source.SOPInstanceUID = "1.2.3.45" if odd else "1.2.3.4"  # padded to even, or not
    source.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7" if odd else "1.2.840.10008.5.1.4.1.1.2"
    ds = dcmread(io.BytesIO(to_bytes(source)))
    rebuild_file_meta(ds)
    assert _rebuilt_meta(ds) is not None
    expected = _pydicom_writes(ds)
    assert write_part10(ds) == expected
    assert write_part10(ds, b"\xfc\xff\xfc\xffOB\x00\x00\x00\x00\x00\x00") == (
        expected + b"\xfc\xff\xfc\xffOB\x00\x00\x00\x00\x00\x00"
    )


def _meta_changed(ds: Dataset) -> None:
    ds.file_meta.SourceApplicationEntityTitle = "MODALITY"


def _class_differs(ds: Dataset) -> None:
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.3")


def _instance_differs(ds: Dataset) -> None:
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3")


def _version_differs(ds: Dataset) -> None:
    ds.file_meta.FileMetaInformationVersion = b"\x00\x02"


def _preamble(ds: Dataset) -> None:
    ds.preamble = b"\x01" * 128


def _deflated(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1.99")


def _big_endian(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.2")


def _private_syntax(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.8.498.99")


def _not_a_syntax(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.5.1.4.1.1.2")


def _no_meta(ds: Dataset) -> None:
    del ds.file_meta


@pytest.mark.parametrize(
    "change",
    [
        _meta_changed,
        _class_differs,
        _instance_differs,
        _version_differs,
        _preamble,
        _deflated,
        _big_endian,
        _private_syntax,
        _not_a_syntax,
        _no_meta,
    ],
)
def test_any_other_file_meta_is_written_by_pydicom(change: Callable[[Dataset], None]) -> None:
    from aifi.gateway.deid.files import _rebuilt_meta, rebuild_file_meta, write_part10

    ds = dcmread(io.BytesIO(to_bytes(ct(rows=8, columns=8))))
    rebuild_file_meta(ds)
    change(ds)
    assert _rebuilt_meta(ds) is None
    if change in (_big_endian, _private_syntax, _not_a_syntax, _no_meta):
        return  # pydicom cannot write these data sets so; not this test's business
    assert write_part10(ds) == _pydicom_writes(ds)


# -- the pixel data element carried over as bytes (deid.files.split_pixel_data) ----------------


def _whole_file(data: bytes) -> bytes:
    from aifi.gateway.deid.files import read_part10, write_part10

    ds = read_part10(data)
    Pseudonymiser(Profile(), KEY).pseudonymise(ds)
    return write_part10(ds)


def _encapsulated(source: Dataset, fragments: list[bytes]) -> Dataset:
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    source.file_meta.TransferSyntaxUID = RLELossless
    source.PixelData = encapsulate(fragments)
    source["PixelData"].VR = "OB"
    return source


@pytest.mark.parametrize(
    "transfer_syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"], ids=["implicit", "explicit"]
)
def test_native_pixel_data_is_split_off_and_the_file_is_the_same(transfer_syntax: str) -> None:
    from aifi.gateway.deid.files import split_pixel_data

    source = ct(rows=32, columns=32, transfer_syntax=transfer_syntax)
    data = to_bytes(source)
    split = split_pixel_data(data)
    assert split is not None
    header, pixel_element = split
    assert "PixelData" not in header and header.SOPInstanceUID == source.SOPInstanceUID
    assert bytes(pixel_element).endswith(source.PixelData)
    assert len(pixel_element) == len(source.PixelData) + (8 if "2.1" not in transfer_syntax else 12)
    written, _ = pseudonymise(source)
    assert written == _whole_file(data)
    assert dcmread(io.BytesIO(written)).PixelData == source.PixelData


def test_encapsulated_pixel_data_is_split_off_up_to_its_delimiter() -> None:
    from aifi.gateway.deid.files import split_pixel_data

    source = _encapsulated(ct(rows=16, columns=16), [b"\x01" * 100, b"\x02" * 64])
    data = to_bytes(source)
    split = split_pixel_data(data)
    assert split is not None and bytes(split[1][-8:]) == b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    written, _ = pseudonymise(source)
    assert written == _whole_file(data)
    assert dcmread(io.BytesIO(written)).PixelData == source.PixelData


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # nothing after: split (the element ends the file)
        b"\xfc\xff\xfc\xff" + b"OB\x00\x00" + b"\x02\x00\x00\x00" + b"\x00\x00",  # padding
    ],
    ids=["exact", "trailing-padding"],
)
def test_only_a_file_that_ends_with_the_pixel_data_is_split(tail: bytes) -> None:
    from aifi.gateway.deid.files import split_pixel_data

    data = to_bytes(ct(rows=16, columns=16)) + tail
    assert (split_pixel_data(data) is not None) is (tail == b"")


def test_a_private_element_after_the_pixel_data_is_removed_not_carried_over() -> None:
    from aifi.gateway.deid.files import split_pixel_data

    source = ct(rows=16, columns=16)
    source.add_new(0x7FE10010, "LO", "ACME CSA")
    source.add_new(0x7FE11001, "LO", "Jansen^Pieter MRN-7731")
    data = to_bytes(source)
    assert split_pixel_data(data) is None
    written, _ = pseudonymise(source)
    assert b"Jansen" not in written and b"MRN-7731" not in written
    assert written == _whole_file(data)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pixel: pixel[:-1],  # the value cut short
        lambda pixel: pixel + b"\x00\x00",  # bytes after the value
    ],
    ids=["short", "long"],
)
def test_a_pixel_data_element_of_the_wrong_length_is_not_split(
    mangle: Callable[[bytes], bytes],
) -> None:
    from aifi.gateway.deid.files import split_pixel_data

    assert split_pixel_data(mangle(to_bytes(ct(rows=16, columns=16)))) is None


def test_encapsulated_pixel_data_without_its_delimiter_is_not_split() -> None:
    from aifi.gateway.deid.files import split_pixel_data

    data = to_bytes(_encapsulated(ct(rows=16, columns=16), [b"\x01" * 100]))
    assert split_pixel_data(data[:-8]) is None  # the sequence delimiter cut off
    assert split_pixel_data(data[:-8] + b"\xfe\xff\x00\xe0\xff\xff\xff\xff") is None


def test_big_endian_and_deflate_are_not_split() -> None:
    from pydicom.uid import ExplicitVRBigEndian

    from aifi.gateway.deid.files import split_pixel_data

    deflated = to_bytes(ct(transfer_syntax=DeflatedExplicitVRLittleEndian))
    assert split_pixel_data(deflated) is None
    big = ct(rows=16, columns=16)
    buffer = io.BytesIO()
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big.save_as(buffer, implicit_vr=False, little_endian=False, enforce_file_format=True)
    assert split_pixel_data(buffer.getvalue()) is None
