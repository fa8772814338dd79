"""``fracture-detection`` (product code AIFI-FRACTURE) — a DEMONSTRATOR, not a clinical
algorithm.

Looks for a short transverse break across a long bone on each radiograph
(:func:`aifi.vendors.products.measure.find_fracture`, made for the phantoms of
:mod:`aifi.conformance.pilot_studies`) and reports:

* always a TID 1500 Measurement Report (Comprehensive 3D SR, PS3.16 TID 1500) with one
  qualitative finding "Fracture of bone" (SCT 125605004) present or absent — a negative
  result is a result — with finding site and laterality from the image headers and, when
  present, a TID 1410 image region (a circle) on each image that shows it;
* when positive, a Grayscale Softcopy Presentation State (PS3.3 A.33.1) drawing those
  circles on the images, so any PACS viewer shows where.

Every object carries the IHE AIR algorithm identification and "DEMO ... not for clinical
use" in its Series Description.
"""

from __future__ import annotations

from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.vendors.products.common import (
    finding_site,
    identity,
    image_laterality,
    one_study,
    with_pixels,
)
from aifi.vendors.products.measure import Fracture, find_fracture

__all__ = ["ALGORITHM", "FractureDetection"]

ALGORITHM = identity("fracture-detection", "2.25.266436554641751532326412220183529713859")
SERIES_DESCRIPTION = "DEMO fracture detection (not for clinical use)"
MARGIN = 4.0
"""Pixels added around the break for the circle drawn on it."""


def region(image: Dataset, fracture: Fracture) -> air.Region:
    """A circle around the break: its centre and a point on it (SCOORD / GSPS CIRCLE)."""
    column, row = fracture.centre
    return air.Region(
        source=image,
        graphic_type="CIRCLE",
        points=[(column, row), (column + fracture.half_width + MARGIN, row)],
    )


class FractureDetection:
    """The fracture-detection :class:`~aifi.vendors.performer.Analyzer` (module docstring)."""

    algorithm = ALGORITHM

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        one_study(inputs)
        images = with_pixels(inputs, ("DX", "CR"))
        broken = [(ds, f) for ds in images if (f := find_fracture(ds)) is not None]
        shown = broken[0][0] if broken else images[0]
        regions = [region(ds, f) for ds, f in broken]
        finding = air.QualitativeFinding(
            finding=air.FRACTURE,
            present=bool(broken),
            tracking_id="fracture",
            finding_site=finding_site(shown),
            laterality=image_laterality(shown) if finding_site(shown) else None,
            regions=regions,
        )
        report = air.measurement_report(
            inputs, ALGORITHM, findings=[finding], series_description=SERIES_DESCRIPTION
        )
        if not broken:
            return [report]
        overlay = air.overlay_presentation(
            [ds for ds, _f in broken],
            ALGORITHM,
            regions,
            ["Fracture (DEMO)"] * len(regions),
            series_description=SERIES_DESCRIPTION,
        )
        return [report, overlay]
