"""``incidental-pe`` (product code AIFI-IPE) — a DEMONSTRATOR, not a clinical algorithm.

Looks for a dark filling defect inside the contrast-filled vessel on each slice of a
contrast chest CT (:func:`aifi.vendors.products.measure.find_filling_defects`, made for the
phantoms of :mod:`aifi.conformance.pilot_studies`); two or more slices showing one make the
finding present. Reports a TID 1500 Measurement Report (Comprehensive 3D SR, PS3.16
TID 1500) with one qualitative finding "Pulmonary embolism" (SCT 59282003) present or
absent, finding site pulmonary artery, and when present a TID 1410 circle on each slice
that shows the defect. IHE AIR algorithm identification; "DEMO ... not for clinical use" in
the Series Description.
"""

from __future__ import annotations

from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air.codes import PULMONARY_ARTERY
from aifi.vendors.products.common import identity, one_study, with_pixels
from aifi.vendors.products.measure import embolism_present, find_filling_defects

__all__ = ["ALGORITHM", "IncidentalPE"]

ALGORITHM = identity("incidental-pe", "2.25.139938975964728208964412228205953023244")
SERIES_DESCRIPTION = "DEMO incidental PE (not for clinical use)"


def _position(ds: Dataset) -> tuple[float, int]:
    """Slice order: along the normal (here z of Image Position), then Instance Number."""
    position = ds.get("ImagePositionPatient")
    z = float(position[2]) if position and len(position) == 3 else 0.0
    return z, int(ds.get("InstanceNumber", 0) or 0)


class IncidentalPE:
    """The incidental-PE :class:`~aifi.vendors.performer.Analyzer` (module docstring)."""

    algorithm = ALGORITHM

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        one_study(inputs)
        slices = sorted(with_pixels(inputs, ("CT",)), key=_position)
        defects = find_filling_defects(slices)
        present = embolism_present(defects)
        regions = [
            air.Region(
                source=slices[d.index],
                graphic_type="CIRCLE",
                points=[d.centre, (d.centre[0] + d.radius, d.centre[1])],
            )
            for d in defects
        ]
        finding = air.QualitativeFinding(
            finding=air.PULMONARY_EMBOLISM,
            present=present,
            tracking_id="pulmonary embolism",
            finding_site=PULMONARY_ARTERY,
            regions=regions if present else (),
        )
        return [
            air.measurement_report(
                inputs, ALGORITHM, findings=[finding], series_description=SERIES_DESCRIPTION
            )
        ]
