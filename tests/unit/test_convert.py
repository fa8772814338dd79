"""The SC/GSPS converter (aifi.vendors.convert): a vendor's pictures get the IHE AIR
algorithm identification and, without an SR, a TID 1500 report read from them."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from aifi.conformance.pilot_studies import extremity_xray
from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.vendors.convert import (
    ConvertingAnalyzer,
    add_identification,
    finding_from_text,
    regions_from_gsps,
)

VENDOR = air.AlgorithmIdentity(
    manufacturer="Example AI BV",
    model_name="FractureFinder",
    software_version="2.3",
    device_uid="2.25.183711542040328216512045418512309462371",
)


def anonymous(ds: Dataset) -> Dataset:
    """``ds`` as a vendor that does not identify its algorithm would send it."""
    del ds.ContributingEquipmentSequence
    return ds


class Vendor:
    def __init__(self, make: object) -> None:
        self.make = make

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        return list(self.make(inputs))  # type: ignore[operator]


def gsps(inputs: list[Dataset], units: str = "PIXEL") -> Dataset:
    circle = air.Region(inputs[0], "CIRCLE", [(105.0, 122.0), (125.0, 122.0)])
    ds = anonymous(air.overlay_presentation(inputs, VENDOR, [circle], ["Fracture"]))
    for annotation in ds.GraphicAnnotationSequence:
        for graphic in annotation.get("GraphicObjectSequence", []):
            graphic.GraphicAnnotationUnits = units
    return ds


def sc(inputs: list[Dataset], comments: str | None) -> Dataset:
    ds = anonymous(air.summary_page(inputs, VENDOR, ["see comments"], title="Vendor page"))
    if comments is not None:
        ds.ImageComments = comments
    return ds


@pytest.fixture
def inputs() -> list[Dataset]:
    return extremity_xray(fracture=True)


def test_gsps_only_gets_a_positive_report_with_its_regions(inputs: list[Dataset]):
    converter = ConvertingAnalyzer(Vendor(lambda i: [gsps(i)]), VENDOR, finding=air.FRACTURE)
    presentation, report = converter.analyze({}, inputs)
    context = air.InputContext.from_datasets(inputs)
    assert air.validate(presentation, context) == []  # identification added
    assert air.AlgorithmIdentity.from_dataset(presentation) == VENDOR
    assert air.validate(report, context) == []
    summary = air.summarise(report)
    assert summary.text() == "Fracture of bone: present"
    assert summary.algorithm == VENDOR
    [region] = regions_from_gsps(presentation, inputs)
    assert region.graphic_type == "CIRCLE"
    assert [tuple(p) for p in region.points] == [(105.0, 122.0), (125.0, 122.0)]
    assert region.source.SOPInstanceUID == inputs[0].SOPInstanceUID


def test_display_units_and_foreign_images_give_no_regions(inputs: list[Dataset]):
    assert regions_from_gsps(gsps(inputs, units="DISPLAY"), inputs) == []
    assert regions_from_gsps(gsps(inputs), extremity_xray(fracture=True)) == []
    converter = ConvertingAnalyzer(Vendor(lambda i: [gsps(i, units="DISPLAY")]), VENDOR)
    [only] = converter.analyze({}, inputs)  # nothing readable: no invented report
    assert only.Modality == "PR"


@pytest.mark.parametrize(
    ("comments", "expected"),
    [
        ("Fracture detected in distal radius", "Fracture of bone: present"),
        ("No fracture detected", "Fracture of bone: absent"),
        ("AI result: negative", "Fracture of bone: absent"),
    ],
)
def test_sc_text_becomes_a_finding(inputs: list[Dataset], comments: str, expected: str):
    converter = ConvertingAnalyzer(
        Vendor(lambda i: [sc(i, comments)]), VENDOR, finding=air.FRACTURE
    )
    page, report = converter.analyze({}, inputs)
    context = air.InputContext.from_datasets(inputs)
    assert air.validate(page, context) == [] and air.validate(report, context) == []
    assert air.summarise(report).text() == expected


def test_sc_without_a_statement_gives_no_report(inputs: list[Dataset]):
    converter = ConvertingAnalyzer(Vendor(lambda i: [sc(i, None)]), VENDOR)
    [page] = converter.analyze({}, inputs)
    assert air.AlgorithmIdentity.from_dataset(page) == VENDOR


def test_a_caller_supplied_function_reads_the_sc(inputs: list[Dataset]):
    seen: list[str] = []

    def read(ds: Dataset) -> air.QualitativeFinding:
        seen.append(str(ds.SOPInstanceUID))
        return air.QualitativeFinding(air.PULMONARY_EMBOLISM, True, "vendor PE")

    converter = ConvertingAnalyzer(Vendor(lambda i: [sc(i, "No PE")]), VENDOR, sc_finding=read)
    page, report = converter.analyze({}, inputs)
    assert seen == [page.SOPInstanceUID]
    assert air.summarise(report).text() == "Pulmonary embolism: present"


def test_outputs_with_an_sr_are_only_identified(inputs: list[Dataset]):
    finding = air.QualitativeFinding(air.FRACTURE, False, "vendor")
    sr = air.measurement_report(inputs, VENDOR, findings=[finding])
    converter = ConvertingAnalyzer(Vendor(lambda i: [sr, gsps(i)]), VENDOR)
    out = converter.analyze({}, inputs)
    assert [ds.Modality for ds in out] == ["SR", "PR"]
    assert all(air.AlgorithmIdentity.from_dataset(ds) == VENDOR for ds in out)


def test_nothing_from_the_vendor_is_nothing(inputs: list[Dataset]):
    assert ConvertingAnalyzer(Vendor(lambda i: []), VENDOR).analyze({}, inputs) == []


def test_identification_is_added_only_when_missing(inputs: list[Dataset]):
    page = sc(inputs, None)
    page.Manufacturer = "Example AI BV (vendor's own)"
    assert add_identification(page, VENDOR)
    assert page.Manufacturer == "Example AI BV (vendor's own)"  # kept
    assert not add_identification(page, VENDOR)
    assert len(page.ContributingEquipmentSequence) == 1


@pytest.mark.parametrize(
    ("text", "present"),
    [("Fracture detected", True), ("no fracture", False), ("", None), ("Processed", None)],
)
def test_finding_from_text(text: str, present: bool | None):
    finding = finding_from_text(text, air.FRACTURE)
    assert (finding.present if finding else None) == present
