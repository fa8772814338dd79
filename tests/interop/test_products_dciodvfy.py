"""Every object the reference products produce — positive and negative, and the generated
pilot studies they read — passes dicom3tools' ``dciodvfy`` (an independent IOD checker)
without "Error" lines; warnings are printed, not failures (e.g. Device UID inside the
Contributing Equipment Sequence, which IHE AIR requires but this dciodvfy does not know).

Skipped with the reason when ``dciodvfy`` is not installed, except under CI (``CI`` set),
where a missing peer is a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset

from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray
from aifi.ihe_profiles import air
from aifi.vendors.products import PRODUCTS
from tests.support.dciodvfy import verify

STUDIES: dict[str, tuple[str, Callable[[], list[Dataset]]]] = {
    "bone-age-young": ("skeletal-age", lambda: hand_xray(age_years=1.5)),
    "bone-age-teen": ("skeletal-age", lambda: hand_xray(age_years=15.0, laterality="R")),
    "fracture": ("fracture-detection", lambda: extremity_xray(fracture=True)),
    "no-fracture": ("fracture-detection", lambda: extremity_xray(fracture=False)),
    "hand-no-fracture": ("fracture-detection", lambda: hand_xray(age_years=9.0)),
    "embolism": ("incidental-pe", lambda: chest_ct(embolism=True, slices=6)),
    "no-embolism": ("incidental-pe", lambda: chest_ct(embolism=False, slices=6)),
}


def errors(dciodvfy: str, ds: Dataset, path: Path) -> list[str]:
    return verify(dciodvfy, ds, path)[0]


@pytest.mark.parametrize("case", STUDIES)
def test_every_result_passes_dciodvfy(dciodvfy: str, tmp_path: Path, case: str):
    name, make = STUDIES[case]
    inputs = make()
    results = PRODUCTS[name].factory().analyze({}, inputs)
    assert results
    context = air.InputContext.from_datasets(inputs)
    for index, result in enumerate(results):
        assert air.validate(result, context) == []
        found = errors(dciodvfy, result, tmp_path / f"{case}-{index}-{result.Modality}.dcm")
        assert found == [], f"{case} {result.Modality}: {found}"


@pytest.mark.parametrize("case", STUDIES)
def test_the_pilot_studies_pass_dciodvfy(dciodvfy: str, tmp_path: Path, case: str):
    inputs = STUDIES[case][1]()
    for ds in inputs[:2]:
        assert errors(dciodvfy, ds, tmp_path / f"{ds.SOPInstanceUID}.dcm") == []
