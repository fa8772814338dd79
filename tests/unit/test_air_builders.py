"""AIR result builders (aifi.ihe_profiles.air): objects built from generated radiographs
carry the inputs' patient and study, identify the algorithm as IHE AIR asks, hold the
TID 1500 content we put in, validate clean and read back through summarise()."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import Dataset, dcmread

from aifi.conformance.synthetic import radiograph_study
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes

ALGORITHM = air.AlgorithmIdentity(
    manufacturer="aifi-hub tests",
    model_name="fracture-detection",
    software_version="1.0",
    device_uid="2.25.329800735698586629295641978511506172918",
)


def radiographs(images: int = 2, **kwargs) -> list[Dataset]:
    return [dcmread(io.BytesIO(raw)) for raw in radiograph_study(images, **kwargs)]


def reread(ds: Dataset, *, header_only: bool = True) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer, stop_before_pixels=header_only)


def content_items(ds: Dataset):
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop(0)
        yield item
        stack.extend(item.get("ContentSequence", []))


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def fracture_report(inputs: list[Dataset]) -> Dataset:
    return air.measurement_report(
        inputs,
        ALGORITHM,
        findings=[
            air.QualitativeFinding(
                air.FRACTURE,
                True,
                "fracture 1",
                finding_site=codes.WRIST,
                laterality=codes.LEFT,
                regions=[
                    air.Region(inputs[0], "POINT", [(10.0, 12.0)]),
                    air.Region(inputs[1], "ELLIPSE", [(1, 5), (9, 5), (5, 3), (5, 7)]),
                ],
            )
        ],
    )


def test_algorithm_identity_contributing_equipment_round_trip():
    item = ALGORITHM.contributing_equipment()
    purpose = item.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
    assert item.Manufacturer == "aifi-hub tests"
    assert item.ManufacturerModelName == "fracture-detection"
    assert item.SoftwareVersions == "1.0"
    assert item.DeviceUID == ALGORITHM.device_uid
    holder = Dataset()
    holder.ContributingEquipmentSequence = [item]
    assert air.AlgorithmIdentity.from_dataset(holder) == ALGORITHM
    assert air.AlgorithmIdentity.from_dataset(Dataset()) is None


@pytest.mark.parametrize("uid", ["", "1.2.abc", "01.2", "1." + "2" * 70])
def test_algorithm_identity_rejects_an_invalid_device_uid(uid):
    with pytest.raises(ValueError, match="device_uid"):
        air.AlgorithmIdentity("m", "model", "1.0", uid)


def test_positive_report_carries_study_equipment_and_tid1500_content():
    inputs = radiographs()
    ds = fracture_report(inputs)
    source = inputs[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for keyword in (
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "StudyDescription",
    ):
        assert ds[keyword].value == source[keyword].value, keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert (ds.VerificationFlag, ds.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert ds.Manufacturer == ALGORITHM.manufacturer
    assert air.AlgorithmIdentity.from_dataset(ds) == ALGORITHM
    assert concept(ds) == "126000"
    items = list(content_items(ds))
    names = [concept(i) for i in items if "ConceptNameCodeSequence" in i]
    for code in ("121049", "121058", "111028", "126010", "125007", "112039", "112040"):
        assert code in names, code
    assert names.count("111001") == 2  # TID 4019 Algorithm Name in each of the two groups
    algorithm_names = {i.TextValue for i in items if concept(i) == "111001"}
    assert algorithm_names == {"fracture-detection"}
    library = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in items
        if i.ValueType == "IMAGE" and concept(i) == "260753009"
    }
    assert library == {d.SOPInstanceUID for d in inputs}
    scoords = [i for i in items if i.ValueType == "SCOORD"]
    assert [s.GraphicType for s in scoords] == ["POINT", "ELLIPSE"]
    referenced = [
        s.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for s in scoords
    ]
    assert referenced == [inputs[0].SOPInstanceUID, inputs[1].SOPInstanceUID]
    tracking_uids = {i.UID for i in items if concept(i) == "112040"}
    assert len(tracking_uids) == 1  # one finding on two regions keeps one Tracking UID


def test_positive_report_validates_and_summarises():
    inputs = radiographs()
    ds = fracture_report(inputs)
    context = air.InputContext.from_datasets(inputs)
    assert air.validate(ds, context) == []
    header = reread(ds)
    assert air.validate(header, context) == []
    assert air.is_ai_result(header)
    summary = air.summarise(header)
    assert summary.kind == "SR"
    assert summary.algorithm == ALGORITHM
    assert summary.positive
    assert summary.findings == [
        air.FindingSummary("Fracture of bone", "125605004", True, "Wrist", "Left")
    ]
    assert summary.text() == "Fracture of bone: present (wrist, left)"


def test_negative_and_empty_reports_are_valid():
    inputs = radiographs(1, body_part="CHEST", description="CT chest", modality="CT")
    context = air.InputContext.from_datasets(inputs)
    negative = air.measurement_report(
        inputs,
        ALGORITHM,
        findings=[air.QualitativeFinding(air.PULMONARY_EMBOLISM, False, "pe")],
    )
    assert air.validate(reread(negative), context) == []
    summary = air.summarise(reread(negative))
    assert not summary.positive
    assert summary.text() == "Pulmonary embolism: absent"
    empty = air.measurement_report(inputs, ALGORITHM)
    assert air.validate(reread(empty), context) == []
    assert air.summarise(empty).text() == "No findings"


def test_bone_age_measurement_in_years():
    inputs = radiographs(1)
    ds = air.measurement_report(
        inputs,
        ALGORITHM,
        measurements=[
            air.Measurement(air.BONE_AGE, 10.5, air.YEARS, "bone age", codes.HAND, codes.LEFT)
        ],
    )
    assert air.validate(reread(ds), air.InputContext.from_datasets(inputs)) == []
    number = next(i for i in content_items(ds) if i.ValueType == "NUM" and concept(i) == "85151-9")
    measured = number.MeasuredValueSequence[0]
    assert float(measured.NumericValue) == 10.5
    unit = measured.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("a", "UCUM")
    summary = air.summarise(reread(ds))
    assert summary.measurements == [air.MeasurementSummary("Bone age", 10.5, "a")]
    assert summary.text() == "Bone age: 10.5 a"


def test_a_built_result_shares_no_element_with_its_inputs():
    inputs = radiographs()
    patient_id, patient_name = str(inputs[0].PatientID), str(inputs[0].PatientName)
    ds = fracture_report(inputs)
    ds.PatientID = "CHANGED"
    ds.PatientName = "Changed^Name"
    assert str(inputs[0].PatientID) == patient_id
    assert str(inputs[0].PatientName) == patient_name


def test_type2_attributes_present_when_the_input_left_them_out():
    inputs = radiographs(1)
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID"):
        delattr(inputs[0], keyword)
    ds = air.measurement_report(inputs, ALGORITHM)
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID"):
        assert keyword in ds
        assert not ds[keyword].value


def test_builders_refuse_bad_inputs():
    inputs = radiographs(1)
    with pytest.raises(ValueError, match="UCUM"):
        air.Measurement(air.BONE_AGE, 1.0, ("yr", "99LOCAL", "year"), "t")
    with pytest.raises(ValueError, match="finding_site"):
        air.QualitativeFinding(air.FRACTURE, True, "t", laterality=codes.LEFT)
    with pytest.raises(ValueError, match="points"):
        air.Region(inputs[0], "ELLIPSE", [(1, 1)])
    stranger = radiographs(1)[0]
    finding = air.QualitativeFinding(
        air.FRACTURE, True, "t", regions=[air.Region(stranger, "POINT", [(1, 1)])]
    )
    with pytest.raises(ValueError, match="inputs"):
        air.measurement_report(inputs, ALGORITHM, findings=[finding])
    with pytest.raises(ValueError, match="studies"):
        air.measurement_report([*inputs, stranger], ALGORITHM)
    with pytest.raises(ValueError, match="at least one"):
        air.measurement_report([], ALGORITHM)


def test_codes_accept_tuples_pydicom_codes_and_coded_concepts():
    from highdicom.sr import CodedConcept
    from pydicom.sr.coding import Code

    assert air.PRESENT == ("52101004", "SCT", "Present")
    for code in (
        ("125605004", "SCT", "Fracture of bone"),
        Code("125605004", "SCT", "Fracture of bone"),
        CodedConcept("125605004", "SCT", "Fracture of bone"),
    ):
        assert codes.coded(code).value == "125605004"
        assert codes.triple(code) == air.FRACTURE
    assert air.BONE_AGE == ("85151-9", "LN", "Bone age")


def test_segmentation_one_frame_per_input_automatic():
    from aifi.conformance.synthetic import ct_study

    inputs = [dcmread(io.BytesIO(raw)) for raw in ct_study(3, size=32)]
    mask = np.zeros((3, 32, 32), bool)
    mask[1, 4:9, 4:9] = True
    ds = air.segmentation(
        inputs,
        ALGORITHM,
        mask,
        segment_label="embolus",
        category=("49755003", "SCT", "Morphologically Altered Structure"),
        property_type=air.PULMONARY_EMBOLISM,
    )
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.NumberOfFrames == 3
    segment = ds.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "fracture-detection"
    assert ds.StudyInstanceUID == inputs[0].StudyInstanceUID
    assert air.validate(reread(ds), air.InputContext.from_datasets(inputs)) == []
    assert air.summarise(reread(ds)).kind == "SEG"
    with pytest.raises(ValueError, match="one frame per input"):
        air.segmentation(
            inputs,
            ALGORITHM,
            mask[:2],
            segment_label="x",
            category=("49755003", "SCT", "Morphologically Altered Structure"),
            property_type=air.PULMONARY_EMBOLISM,
        )


def test_overlay_presentation_draws_regions_with_labels():
    inputs = radiographs(2)
    regions = [
        air.Region(inputs[0], "CIRCLE", [(20, 20), (25, 20)]),
        air.Region(inputs[1], "POLYLINE", [(1, 1), (10, 1), (10, 10), (1, 1)]),
    ]
    ds = air.overlay_presentation(inputs, ALGORITHM, regions, ["Fracture", "Fracture"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"
    annotations = ds.GraphicAnnotationSequence
    assert [a.ReferencedImageSequence[0].ReferencedSOPInstanceUID for a in annotations] == [
        d.SOPInstanceUID for d in inputs
    ]
    assert annotations[0].GraphicObjectSequence[0].GraphicType == "CIRCLE"
    assert annotations[0].TextObjectSequence[0].UnformattedTextValue == "Fracture"
    assert air.validate(reread(ds), air.InputContext.from_datasets(inputs)) == []
    assert air.summarise(ds).kind == "GSPS"
    with pytest.raises(ValueError, match="labels"):
        air.overlay_presentation(inputs, ALGORITHM, regions, ["one"])


def test_summary_page_is_an_8_bit_secondary_capture():
    inputs = radiographs(1)
    ds = air.summary_page(inputs, ALGORITHM, ["Bone age: 10.5 years"], title="Skeletal age")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (ds.BitsAllocated, ds.PhotometricInterpretation) == (8, "MONOCHROME2")
    assert ds.pixel_array.max() > 0  # text was drawn
    assert ds.PatientID == inputs[0].PatientID
    assert air.validate(reread(ds), air.InputContext.from_datasets(inputs)) == []
    assert air.summarise(ds).kind == "SC"


def test_key_objects_select_inputs():
    inputs = radiographs(3)
    ds = air.key_objects(inputs, ALGORITHM, inputs[1:2])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113000"
    selected = [i for i in ds.ContentSequence if i.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in selected] == [
        inputs[1].SOPInstanceUID
    ]
    assert air.validate(reread(ds), air.InputContext.from_datasets(inputs)) == []
    assert air.summarise(ds).kind == "KO"
    with pytest.raises(ValueError, match="among the inputs"):
        air.key_objects(inputs[:1], ALGORITHM, inputs[1:2])
