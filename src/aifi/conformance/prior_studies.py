"""Generated prior studies for comparison products (issue 17): the same patient's hand
radiograph now and an interval earlier, for the follow-up bone-age product
(:mod:`aifi.vendors.products.bone_age_followup`). Synthetic phantoms only
(:func:`aifi.conformance.pilot_studies.hand_xray`), never patient data.

The prior is the pilot hand of a younger child (bone brightness encodes its bone age) with
its study, series and content dates moved back by ``interval_days`` and Patient's Age to
match; patient identity and birth date are the current study's, so a gateway pseudonymises
both with the same patient pseudonym and date offset (PS3.15 Annex E, "Retain Longitudinal
Temporal Information with Modified Dates") and the interval between them is preserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pydicom import Dataset
from pydicom.uid import generate_uid

from aifi.conformance.pilot_studies import STUDY_DATE, hand_xray
from aifi.conformance.synthetic import Patient

__all__ = ["HandFollowUp", "hand_follow_up"]


@dataclass(frozen=True)
class HandFollowUp:
    """A current hand study and its prior (each a list of one DX instance)."""

    current: list[Dataset]
    prior: list[Dataset]
    age_years: float
    prior_age_years: float
    interval_days: int


def _age_string(age_years: float) -> str:
    """Patient's Age (AS): completed years, or months under two (PS3.5 6.2)."""
    return f"{int(age_years * 12):03d}M" if age_years < 2 else f"{int(age_years):03d}Y"


def hand_follow_up(
    *,
    age_years: float = 10.0,
    interval_days: int = 365,
    patient_id: str = "AIFI-PILOT-FU",
    laterality: str = "L",
) -> HandFollowUp:
    """The same child's left hand at :data:`STUDY_DATE` (bone age ``age_years``) and
    ``interval_days`` earlier (bone age that much younger), in two new studies."""
    if interval_days < 1:
        raise ValueError(f"a prior is at least a day earlier, not {interval_days} days")
    prior_age = round(age_years - interval_days / 365.25, 2)
    born = date.fromordinal(STUDY_DATE.toordinal() - round(age_years * 365.25))
    patient = Patient(
        name="Pilot^Vervolg", patient_id=patient_id, birth_date=born.strftime("%Y%m%d"), sex="O"
    )
    current = hand_xray(
        age_years=age_years,
        laterality=laterality,
        patient=patient,
        study_uid=str(generate_uid()),
        accession="PILOT-FU-2",
        seed=11,
    )
    prior = hand_xray(
        age_years=prior_age,
        laterality=laterality,
        patient=patient,
        study_uid=str(generate_uid()),
        accession="PILOT-FU-1",
        seed=12,
    )
    earlier = (STUDY_DATE - timedelta(days=interval_days)).strftime("%Y%m%d")
    for ds in prior:
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = earlier
        ds.PatientAge = _age_string(prior_age)
    return HandFollowUp(current, prior, age_years, prior_age, interval_days)
