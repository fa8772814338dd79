"""What an accepted result instance says, summarised once by the gate and stored with it.

The gate reads each accepted result with :func:`aifi.ihe_profiles.air.summarise` and keeps
the summary in its :class:`~aifi.hub.persistence.tables.ResultInstance` row
(:func:`result_row`): the kind, the one-line text, whether it reports a present finding,
how many findings and measurements — and the findings and measurements themselves as JSON
(``summary_json``, :func:`summary_json`), which the readers that need them (the FHIR
projection's Observations) take back with :func:`reported` instead of summarising the
stored instance again. A row stored before the hub kept them (migration 0009) has none:
:func:`reported` answers None and the reader summarises the stored instance as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from aifi.hub.persistence.tables import ResultInstance
from aifi.ihe_profiles.air import FindingSummary, MeasurementSummary, ResultSummary
from aifi.ihe_profiles.air.summary import Code


@dataclass(frozen=True, slots=True)
class Reported:
    """The findings and measurements a result instance reports, as its summary had them."""

    findings: tuple[FindingSummary, ...]
    measurements: tuple[MeasurementSummary, ...]


def _code(value: Any) -> Code | None:
    return (str(value[0]), str(value[1]), str(value[2])) if value is not None else None


def summary_json(summary: ResultSummary) -> str:
    """The findings and measurements of ``summary`` as compact JSON (coded entries as
    ``[value, scheme, meaning]``)."""
    return json.dumps(
        {
            "findings": [
                {
                    "name": f.name,
                    "code": f.code,
                    "present": f.present,
                    "site": f.site,
                    "laterality": f.laterality,
                    "concept": f.concept,
                    "site_code": f.site_code,
                    "laterality_code": f.laterality_code,
                }
                for f in summary.findings
            ],
            "measurements": [
                {"name": m.name, "value": m.value, "unit": m.unit, "concept": m.concept}
                for m in summary.measurements
            ],
        },
        separators=(",", ":"),
    )


def reported(row: ResultInstance) -> Reported | None:
    """What the instance of ``row`` reports, as the gate summarised it; None for a row
    stored before the gate kept it (summarise the stored instance instead)."""
    if row.summary_json is None:
        return None
    stored = json.loads(row.summary_json)
    return Reported(
        findings=tuple(
            FindingSummary(
                name=f["name"],
                code=f["code"],
                present=f["present"],
                site=f["site"],
                laterality=f["laterality"],
                concept=_code(f["concept"]),
                site_code=_code(f["site_code"]),
                laterality_code=_code(f["laterality_code"]),
            )
            for f in stored["findings"]
        ),
        measurements=tuple(
            MeasurementSummary(
                name=m["name"], value=float(m["value"]), unit=m["unit"], concept=_code(m["concept"])
            )
            for m in stored["measurements"]
        ),
    )


def result_row(
    tenant: str, workitem_uid: str, header: Dataset, summary: ResultSummary | None
) -> ResultInstance:
    """The row of an accepted result instance of ``workitem_uid``, with its summary."""
    return ResultInstance(
        tenant=tenant,
        workitem_uid=workitem_uid,
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=str(header.SeriesInstanceUID),
        sop_instance_uid=str(header.SOPInstanceUID),
        sop_class_uid=str(header.SOPClassUID),
        kind=str(getattr(summary, "kind", "OTHER"))[:16],
        summary=(summary.text() if summary is not None else "")[:4000],
        positive=bool(getattr(summary, "positive", False)),
        findings=len(getattr(summary, "findings", ())),
        measurements=len(getattr(summary, "measurements", ())),
        summary_json=summary_json(summary) if summary is not None else None,
    )
