"""The reference products' image statistics (aifi.vendors.products.measure) on the generated
pilot studies (aifi.conformance.pilot_studies): the known answer comes back from the pixels,
positive and negative, deterministically, and the studies route to the intended products."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import Dataset

from aifi.conformance.pilot_studies import (
    FRACTURE_COLUMNS,
    FRACTURE_ROW,
    chest_ct,
    embolism_slices,
    extremity_xray,
    hand_xray,
    study_json,
)
from aifi.ihe_profiles.rules import StudyFacts, evaluate, load_rules
from aifi.vendors.products.measure import (
    bone_age_years,
    embolism_present,
    find_filling_defects,
    find_fracture,
)


def routed(instances: list[Dataset]) -> set[str]:
    decisions = evaluate(
        load_rules(None), "default", StudyFacts.from_metadata(study_json(instances))
    )
    return {d.product.code for d in decisions if d.matched}


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0.5, 10.0, 19.0])
def test_a_childs_hand_goes_to_bone_age(age: float):
    assert "AIFI-BONEAGE" in routed(hand_xray(age_years=age))


@pytest.mark.parametrize("body_part", ["WRIST", "ANKLE", "FOREARM", "KNEE"])
def test_an_extremity_goes_to_fracture_detection_only(body_part: str):
    assert routed(extremity_xray(fracture=True, body_part=body_part)) == {"AIFI-FRACTURE"}


def test_a_contrast_chest_ct_goes_to_incidental_pe_only():
    assert routed(chest_ct(embolism=False, slices=6)) == {"AIFI-IPE"}


def test_headers_do_not_carry_the_answer():
    positive, negative = extremity_xray(fracture=True)[0], extremity_xray(fracture=False)[0]
    for keyword in ("SeriesDescription", "StudyDescription", "ImageComments"):
        assert positive.get(keyword) == negative.get(keyword)
    assert positive.PixelData != negative.PixelData


# -- skeletal age -------------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0.0, 0.5, 2.0, 7.3, 10.0, 12.5, 16.0, 19.0])
def test_bone_age_is_read_back_from_the_pixels(age: float):
    [ds] = hand_xray(age_years=age)
    found = bone_age_years(ds)
    assert found is not None
    assert found.years == pytest.approx(age, abs=0.15)


def test_bone_age_ignores_the_header_age():
    [ds] = hand_xray(age_years=6.0)
    ds.PatientAge = "015Y"
    ds.PatientBirthDate = "20100101"
    assert bone_age_years(ds).years == pytest.approx(6.0, abs=0.15)  # type: ignore[union-attr]


def test_bone_age_is_deterministic_and_monotonic():
    ages = [bone_age_years(hand_xray(age_years=a)[0]).years for a in range(20)]  # type: ignore[union-attr]
    assert ages == sorted(ages) and len(set(ages)) == 20
    assert ages == [bone_age_years(hand_xray(age_years=a)[0]).years for a in range(20)]  # type: ignore[union-attr]


def test_no_bone_no_age():
    [ds] = hand_xray(age_years=5)
    ds.PixelData = np.full((ds.Rows, ds.Columns), 100, np.uint16).tobytes()
    assert bone_age_years(ds) is None


# -- fracture -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("laterality", ["L", "R"])
def test_a_fracture_is_found_where_it_was_drawn(seed: int, laterality: str):
    [ds] = extremity_xray(fracture=True, laterality=laterality, seed=seed)
    found = find_fracture(ds)
    assert found is not None
    assert (found.first_column, found.last_column + 1) == FRACTURE_COLUMNS
    column, row = found.centre
    assert FRACTURE_COLUMNS[0] < column < FRACTURE_COLUMNS[1]
    assert FRACTURE_ROW <= row <= FRACTURE_ROW + 6


@pytest.mark.parametrize("seed", range(4))
def test_an_intact_bone_is_negative(seed: int):
    assert find_fracture(extremity_xray(fracture=False, seed=seed)[0]) is None


@pytest.mark.parametrize("age", [1.0, 9.0, 18.0])
def test_a_hand_without_fracture_is_negative(age: float):
    assert find_fracture(hand_xray(age_years=age)[0]) is None


# -- pulmonary embolism -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_a_filling_defect_is_found_on_the_slices_that_show_it(seed: int):
    slices = chest_ct(embolism=True, slices=12, seed=seed)
    defects = find_filling_defects(slices)
    assert [d.index for d in defects] == list(embolism_slices(12))
    assert embolism_present(defects)


@pytest.mark.parametrize("seed", range(3))
def test_a_well_opacified_artery_is_negative(seed: int):
    defects = find_filling_defects(chest_ct(embolism=False, slices=12, seed=seed))
    assert defects == [] and not embolism_present(defects)
