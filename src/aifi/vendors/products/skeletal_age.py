"""``skeletal-age`` (product code AIFI-BONEAGE) — a DEMONSTRATOR, not a clinical algorithm.

Reads the bones' brightness relative to the soft tissue of a hand radiograph
(:func:`aifi.vendors.products.measure.bone_age_years`, calibrated to the phantoms of
:mod:`aifi.conformance.pilot_studies`) and reports it as a skeletal age in years:

* a TID 1500 Measurement Report (Comprehensive 3D SR, PS3.16 TID 1500/1501) with one
  bone-age measurement (LOINC 85151-9, UCUM ``a``), finding site and laterality from the
  image's Anatomic Region Sequence and Image Laterality, TID 4019 algorithm identification;
* a Secondary Capture summary page (PS3.3 A.8.1) for PACS without SR display.

Both carry the IHE AIR algorithm identification (Contributing Equipment, Device UID) and say
"DEMO ... not for clinical use" in their Series Description.
"""

from __future__ import annotations

from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air.codes import HAND
from aifi.vendors.performer import AnalysisFailed
from aifi.vendors.products.common import (
    NOT_CLINICAL,
    finding_site,
    identity,
    image_laterality,
    one_study,
    with_pixels,
)
from aifi.vendors.products.measure import bone_age_years

__all__ = ["ALGORITHM", "SkeletalAge"]

ALGORITHM = identity("skeletal-age", "2.25.41934215348442516848894227428179410974")
SERIES_DESCRIPTION = "DEMO skeletal age (not for clinical use)"


class SkeletalAge:
    """The skeletal-age :class:`~aifi.vendors.performer.Analyzer` (module docstring)."""

    algorithm = ALGORITHM

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        one_study(inputs)
        image = with_pixels(inputs, ("DX", "CR"))[0]
        found = bone_age_years(image)
        if found is None:
            raise AnalysisFailed("No bone found on the hand radiograph")
        measurement = air.Measurement(
            name=air.BONE_AGE,
            value=found.years,
            unit=air.YEARS,
            tracking_id="skeletal age",
            finding_site=finding_site(image) or HAND,
            laterality=image_laterality(image),
        )
        report = air.measurement_report(
            inputs,
            ALGORITHM,
            measurements=[measurement],
            series_description=SERIES_DESCRIPTION,
        )
        page = air.summary_page(
            inputs,
            ALGORITHM,
            [
                f"Bone age: {found.years:.1f} years",
                f"Bone/soft-tissue contrast {found.contrast:.3f} ({found.bone_pixels} px)",
                NOT_CLINICAL,
            ],
            title="Skeletal age (DEMO)",
            series_description=SERIES_DESCRIPTION,
        )
        return [report, page]
