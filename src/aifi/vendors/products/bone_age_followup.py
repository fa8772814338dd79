"""``bone-age-follow-up`` (product code AIFI-BONEAGE-FU) — a DEMONSTRATOR comparison product
(issue 17), not a clinical algorithm.

Its routing rules declare ``priors`` (the same child's earlier hand radiograph), so its
workitem lists the prior's instances in the Input Information Sequence, marked as priors
(:func:`aifi.ihe_profiles.aiw.prior_inputs`); the performer fetches them with WADO-RS like
any input. It measures the bone age on the current and on the prior image
(:func:`aifi.vendors.products.measure.bone_age_years`) and reports the change since the
prior, with the interval between the two Study Dates (a gateway shifts both by the same
per-patient offset, so the interval is the real one):

* a TID 1500 Measurement Report (Comprehensive 3D SR) with the bone age now (LOINC 85151-9)
  and, with a prior, the bone age at the prior, the change and the interval — local codes
  :data:`PRIOR_BONE_AGE`, :data:`BONE_AGE_CHANGE` (UCUM ``a``) and :data:`INTERVAL`
  (UCUM ``mo``), scheme 99AIFI;
* a Secondary Capture summary page saying the same in words; without a prior it says
  "no prior study available for comparison" (also in Image Comments (0020,4000)), with the
  reason the hub recorded (:func:`aifi.ihe_profiles.aiw.priors_unavailable_reason`).
"""

from __future__ import annotations

from datetime import date

from pydicom import Dataset

from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air.codes import HAND
from aifi.ihe_profiles.aiw import prior_inputs, priors_unavailable_reason
from aifi.vendors.performer import AnalysisFailed
from aifi.vendors.products.common import (
    NOT_CLINICAL,
    finding_site,
    identity,
    image_laterality,
    one_study,
    with_pixels,
)
from aifi.vendors.products.measure import BoneAge, bone_age_years

__all__ = [
    "ALGORITHM",
    "BONE_AGE_CHANGE",
    "INTERVAL",
    "NO_PRIOR",
    "PRIOR_BONE_AGE",
    "BoneAgeFollowUp",
]

ALGORITHM = identity("bone-age-follow-up", "2.25.191855385302771830513326614447372520471")
SERIES_DESCRIPTION = "DEMO bone age follow-up (not for clinical use)"
PRIOR_BONE_AGE = air.CodeTriple("BA-PRIOR", "99AIFI", "Bone age at prior study")
BONE_AGE_CHANGE = air.CodeTriple("BA-CHANGE", "99AIFI", "Bone age change since prior study")
INTERVAL = air.CodeTriple("PRIOR-INTERVAL", "99AIFI", "Interval since prior study")
NO_PRIOR = "no prior study available for comparison"
_DAYS_PER_MONTH = 365.25 / 12


def _study_date(ds: Dataset) -> date | None:
    text = str(ds.get("StudyDate", "") or "")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _measure(image: Dataset) -> BoneAge:
    found = bone_age_years(image)
    if found is None:
        raise AnalysisFailed("No bone found on the hand radiograph")
    return found


class BoneAgeFollowUp:
    """The follow-up bone-age :class:`~aifi.vendors.performer.Analyzer` (module docstring)."""

    algorithm = ALGORITHM

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        prior_studies = {p.study_instance_uid for p in prior_inputs(workitem)}
        current = [ds for ds in inputs if str(ds.StudyInstanceUID) not in prior_studies]
        priors = [ds for ds in inputs if str(ds.StudyInstanceUID) in prior_studies]
        one_study(current)
        image = with_pixels(current, ("DX", "CR"))[0]
        now = _measure(image)
        site, laterality = finding_site(image) or HAND, image_laterality(image)

        def measurement(
            name: air.Code, value: float, unit: air.Code, tracking: str
        ) -> air.Measurement:
            return air.Measurement(
                name=name,
                value=value,
                unit=unit,
                tracking_id=tracking,
                finding_site=site,
                laterality=laterality,
            )

        measurements = [measurement(air.BONE_AGE, now.years, air.YEARS, "skeletal age")]
        lines = [f"Bone age: {now.years:.1f} years"]
        comments = ""
        prior_images = with_pixels(priors, ("DX", "CR")) if priors else []
        if prior_images:
            # the newest prior (count: 1 is the usual), by Study Date
            prior = max(prior_images, key=lambda ds: _study_date(ds) or date.min)
            then = _measure(prior)
            change = round(now.years - then.years, 1)
            current_date, prior_date = _study_date(image), _study_date(prior)
            months = (
                round((current_date - prior_date).days / _DAYS_PER_MONTH, 1)
                if current_date and prior_date
                else None
            )
            measurements += [
                measurement(PRIOR_BONE_AGE, then.years, air.YEARS, "skeletal age at prior"),
                measurement(BONE_AGE_CHANGE, change, air.YEARS, "skeletal age change"),
            ]
            if months is not None:
                measurements.append(
                    measurement(INTERVAL, months, air.MONTHS, "interval since prior")
                )
            over = f" over {months:g} months" if months is not None else ""
            lines += [
                f"At the prior study: {then.years:.1f} years",
                f"Change since the prior: {change:+.1f} years{over}",
            ]
            comments = f"Bone age change since prior: {change:+.1f} years{over}"
        else:
            why = priors_unavailable_reason(workitem)
            lines.append(f"{NO_PRIOR[0].upper()}{NO_PRIOR[1:]}")
            if why:
                lines.append(f"({why})")
            comments = NO_PRIOR + (f" ({why})" if why else "")
        report = air.measurement_report(
            current,
            ALGORITHM,
            measurements=measurements,
            series_description=SERIES_DESCRIPTION,
        )
        page = air.summary_page(
            current,
            ALGORITHM,
            [*lines, NOT_CLINICAL],
            title="Bone age follow-up (DEMO)",
            series_description=SERIES_DESCRIPTION,
        )
        page.ImageComments = comments
        return [report, page]
