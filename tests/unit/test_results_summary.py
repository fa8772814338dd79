"""What the result gate keeps of a result's summary (aifi.hub.results.summary): the findings
and measurements read back from the row are the ones summarise() read from the object,
coded entries included, so the FHIR projection need not summarise the stored instance
again; a row without them (stored before migration 0009) says so."""

from __future__ import annotations

import io
import math

from pydicom import Dataset, dcmread

from aifi.conformance.synthetic import radiograph_study
from aifi.hub.results.summary import reported, result_row, summary_json
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import FindingSummary, MeasurementSummary, codes

ALGORITHM = air.AlgorithmIdentity(
    manufacturer="aifi-hub tests",
    model_name="fracture-detection",
    software_version="1.0",
    device_uid="2.25.329800735698586629295641978511506172918",
)


def radiographs(images: int = 2) -> list[Dataset]:
    return [dcmread(io.BytesIO(raw)) for raw in radiograph_study(images)]


def finding_fields(f: FindingSummary) -> tuple[object, ...]:
    return (
        f.name,
        f.code,
        f.present,
        f.site,
        f.laterality,
        f.concept,
        f.site_code,
        f.laterality_code,
    )


def measurement_fields(m: MeasurementSummary) -> tuple[object, ...]:
    return (m.name, m.value, m.unit, m.concept)


def test_a_report_reads_back_as_summarised_with_its_coded_entries():
    inputs = radiographs()
    report = air.measurement_report(
        inputs,
        ALGORITHM,
        findings=[
            air.QualitativeFinding(
                air.FRACTURE, True, "fracture 1", finding_site=codes.WRIST, laterality=codes.LEFT
            ),
            air.QualitativeFinding(air.FRACTURE, False, "fracture 2"),
        ],
        measurements=[air.Measurement(air.BONE_AGE, 10.5, air.YEARS, "bone age")],
    )
    summary = air.summarise(report)
    assert summary.findings and summary.measurements

    row = result_row("default", "1.2.3", report, summary)
    said = reported(row)

    assert said is not None
    assert [finding_fields(f) for f in said.findings] == [
        finding_fields(f) for f in summary.findings
    ]
    assert [measurement_fields(m) for m in said.measurements] == [
        measurement_fields(m) for m in summary.measurements
    ]
    assert row.kind == "SR" and row.positive and row.summary == summary.text()
    assert (row.findings, row.measurements) == (len(summary.findings), 1)


def test_measured_values_come_back_exactly_even_without_a_json_number():
    summary = air.ResultSummary(
        kind="SR",
        algorithm=None,
        measurements=[
            MeasurementSummary("a", 0.1 + 0.2, "mm"),
            MeasurementSummary("b", math.inf, "mm"),
            MeasurementSummary("c", 3.0, ""),
        ],
    )
    row = result_row("default", "1.2.3", radiographs(1)[0], None)
    row.summary_json = summary_json(summary)
    said = reported(row)
    assert said is not None
    assert [m.value for m in said.measurements] == [0.1 + 0.2, math.inf, 3.0]
    assert [m.concept for m in said.measurements] == [None, None, None]


def test_a_row_stored_before_the_gate_kept_summaries_has_none():
    row = result_row("default", "1.2.3", radiographs(1)[0], None)
    assert row.summary_json is None
    assert reported(row) is None
