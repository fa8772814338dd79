"""aifi.ihe_profiles.air.validate: one broken rule at a time on a valid generated result,
each reported under the rule's name (IHE AIR / PS3.3 / PS3.16 template row / AIW-I), on
full datasets and on headers read with stop_before_pixels."""

from __future__ import annotations

import copy

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import codes
from aifi.ihe_profiles.air import validation as rules
from tests.unit.test_air_builders import ALGORITHM, radiographs, reread


@pytest.fixture(scope="module")
def inputs() -> list[Dataset]:
    return radiographs(2)


@pytest.fixture(scope="module")
def context(inputs) -> air.InputContext:
    return air.InputContext.from_datasets(inputs)


@pytest.fixture(scope="module")
def report_header(inputs) -> Dataset:
    ds = air.measurement_report(
        inputs,
        ALGORITHM,
        measurements=[air.Measurement(air.BONE_AGE, 9.0, air.YEARS, "bone age", codes.HAND)],
        findings=[
            air.QualitativeFinding(
                air.FRACTURE,
                True,
                "fracture",
                codes.WRIST,
                codes.RIGHT,
                regions=[air.Region(inputs[1], "CIRCLE", [(20, 20), (25, 20)])],
            )
        ],
    )
    return reread(ds)


@pytest.fixture
def report(report_header):
    return copy.deepcopy(report_header)


def rules_of(violations: list[air.Violation]) -> list[str]:
    return [v.rule for v in violations]


def items(ds: Dataset):
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop(0)
        yield item
        stack.extend(item.get("ContentSequence", []))


def equipment(ds: Dataset):
    return next(
        i
        for i in ds.ContributingEquipmentSequence
        if i.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    )


def test_valid_report_has_no_violations(report, context):
    assert air.validate(report) == []
    assert air.validate(report, context) == []


def test_violation_text_names_the_rule():
    v = air.Violation("TID 1500 row 4 Procedure reported (121058)", "missing")
    assert str(v) == "missing (TID 1500 row 4 Procedure reported (121058))"


def test_missing_contributing_equipment(report):
    del report.ContributingEquipmentSequence
    assert rules_of(air.validate(report)) == [rules.RULE_ALGORITHM]
    assert rules.RULE_ALGORITHM.startswith("IHE AIR: algorithm identification")
    assert not air.is_ai_result(report)


def test_wrong_purpose_of_reference(report):
    equipment(report).PurposeOfReferenceCodeSequence[0].CodeValue = "109103"
    violations = air.validate(report)
    assert rules_of(violations) == [rules.RULE_ALGORITHM]
    assert "109102" in violations[0].message


@pytest.mark.parametrize(
    ("keyword", "value", "text"),
    [
        ("DeviceUID", None, "Device UID"),
        ("DeviceUID", "not-a-uid", "is not a DICOM UID"),
        ("Manufacturer", None, "Manufacturer (0008,0070)"),
        ("SoftwareVersions", None, "Software Versions"),
    ],
)
def test_incomplete_algorithm_identification(report, keyword, value, text):
    item = equipment(report)
    if value is None:
        delattr(item, keyword)
    else:
        setattr(item, keyword, value)
    violations = [v for v in air.validate(report) if v.rule == rules.RULE_ALGORITHM]
    assert len(violations) == 1
    assert text in violations[0].message


def test_tid4019_algorithm_name_must_be_the_model_name(report):
    equipment(report).ManufacturerModelName = "another-model"
    assert set(rules_of(air.validate(report))) == {"TID 4019 Algorithm Name (111001)"}


def test_tid4019_algorithm_version_must_be_the_software_version(report):
    equipment(report).SoftwareVersions = "2.0"
    assert set(rules_of(air.validate(report))) == {"TID 4019 Algorithm Version (111003)"}


def test_verified_report_is_refused(report):
    report.VerificationFlag = "VERIFIED"
    assert rules_of(air.validate(report)) == ["PS3.3 C.17.2 VerificationFlag"]


def test_result_in_another_study(report, inputs):
    other = air.InputContext.from_datasets(radiographs(1, patient=None))
    other = air.InputContext(
        other.study_instance_uid,
        str(inputs[0].PatientID),
        str(inputs[0].PatientName),
        frozenset(ds.SOPInstanceUID for ds in inputs),
    )
    assert rules_of(air.validate(report, other)) == ["AIW-I: result in the inputs' study"]


def test_result_for_another_patient(report, context):
    report.PatientID = "SOMEONE-ELSE"
    report.PatientName = "Else^Some"
    assert rules_of(air.validate(report, context)) == [rules.RULE_PATIENT] * 2


def test_patient_name_compared_without_trailing_carets(report, context):
    report.PatientName = str(report.PatientName) + "^^"
    assert air.validate(report, context) == []


def test_reference_to_an_instance_that_is_not_an_input(report, inputs):
    only_first = air.InputContext.from_datasets(inputs[:1])
    violations = air.validate(report, only_first)
    assert rules_of(violations) == ["AIW-I: result references only the inputs"]
    assert inputs[1].SOPInstanceUID in violations[0].message


def test_root_must_be_imaging_measurement_report(report):
    report.ConceptNameCodeSequence[0].CodeValue = "18748-4"
    report.ConceptNameCodeSequence[0].CodingSchemeDesignator = "LN"
    assert rules_of(air.validate(report)) == [rules.RULE_ROOT]
    assert rules.RULE_ROOT.startswith("TID 1500 row 1")


def test_missing_procedure_reported(report):
    report.ContentSequence = DicomSequence(
        [i for i in report.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "121058"]
    )
    assert rules_of(air.validate(report)) == ["TID 1500 row 4 Procedure reported (121058)"]


def test_missing_language(report):
    report.ContentSequence = DicomSequence(
        [i for i in report.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "121049"]
    )
    assert rules_of(air.validate(report)) == [rules.RULE_LANGUAGE]


def test_group_without_tracking_uid(report):
    group = next(i for i in items(report) if i.ConceptNameCodeSequence[0].CodeValue == "125007")
    group.ContentSequence = DicomSequence(
        [i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "112040"]
    )
    assert rules_of(air.validate(report)) == ["TID 1501/1410 Tracking Unique Identifier (112040)"]


def test_group_without_tracking_identifier(report):
    group = next(i for i in items(report) if i.ConceptNameCodeSequence[0].CodeValue == "125007")
    group.ContentSequence = DicomSequence(
        [i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "112039"]
    )
    assert rules_of(air.validate(report)) == [rules.RULE_TRACKING_ID]


def test_non_ucum_unit(report):
    number = next(
        i
        for i in items(report)
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "85151-9"
    )
    unit = number.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    unit.CodeValue, unit.CodingSchemeDesignator = "yr", "99LOCAL"
    violations = air.validate(report)
    assert rules_of(violations) == [rules.RULE_UCUM]
    assert "99LOCAL" in violations[0].message


def test_scoord_on_an_image_outside_library_and_evidence(report):
    scoord = next(i for i in items(report) if i.ValueType == "SCOORD")
    scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "2.25.1"
    assert rules.RULE_SCOORD in rules_of(air.validate(report))


def test_not_a_result_sop_class(report):
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX image
    assert rules_of(air.validate(report)) == [rules.RULE_SOP_CLASS]


def seg_header(algorithm_type: str, name: str | None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = rules.SEGMENTATION
    ds.ContributingEquipmentSequence = [ALGORITHM.contributing_equipment()]
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentAlgorithmType = algorithm_type
    if name:
        segment.SegmentAlgorithmName = name
    ds.SegmentSequence = [segment]
    return ds


def test_seg_algorithm_type_must_be_automatic():
    assert air.validate(seg_header("AUTOMATIC", "fracture-detection")) == []
    assert rules_of(air.validate(seg_header("SEMIAUTOMATIC", "fracture-detection"))) == [
        rules.RULE_SEG_TYPE
    ]
    assert rules_of(air.validate(seg_header("AUTOMATIC", None))) == [rules.RULE_SEG_NAME]


def test_result_sop_classes_and_is_ai_result(report):
    assert "1.2.840.10008.5.1.4.1.1.88.34" in air.RESULT_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.66.4" in air.RESULT_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.7.4" in air.RESULT_SOP_CLASSES
    assert air.is_ai_result(report)
