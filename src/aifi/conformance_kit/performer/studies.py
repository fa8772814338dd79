"""The kit's test studies: the pilot generators (:mod:`aifi.conformance.pilot_studies`,
generated phantoms with the answer drawn into the pixels, never patient data) in every
variant the kit knows, pseudonymised as a hospital's gateway would
(:class:`aifi.gateway.deid.Pseudonymiser`, PS3.15 Annex E, a throw-away key per run), and
sorted by what the product's routing rules do with them:

* *for the product*: the rules route it to the product (:func:`aifi.ihe_profiles.rules.
  evaluate`, the Task Manager's own evaluation) — with the finding drawn in, or, for a
  measurement such as bone age, always an answer;
* *normal*: routed to the product, the finding absent (a wrist without a fracture, a chest
  CT without an embolism): the product must say so explicitly;
* *not for the product*: the rules do not route it to the product (an adult's hand for bone
  age, a non-contrast CT for embolism): it must never see them.

Every :meth:`Studies.make` gives a new study (new patient, accession and UIDs), so the
cases never share a workitem.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray, study_json
from aifi.conformance.synthetic import Patient
from aifi.gateway.deid import Profile, Pseudonymiser
from aifi.ihe_profiles.rules import RulesConfig, StudyFacts, evaluate

CT_SLICES = 12


class Role(StrEnum):
    FOR_PRODUCT = "for the product"
    NORMAL = "normal (finding absent)"
    NOT_FOR_PRODUCT = "not for the product"


@dataclass(frozen=True)
class Recipe:
    label: str
    finding: bool | None
    """The truth drawn in: present, absent, or None (a measurement: always an answer)."""
    make: Callable[[Patient, str, int], list[Dataset]]
    """(patient, accession, seed) → the study's instances."""


def _non_contrast_ct(patient: Patient, accession: str, seed: int) -> list[Dataset]:
    datasets = chest_ct(
        embolism=False, slices=CT_SLICES, patient=patient, accession=accession, seed=seed
    )
    for ds in datasets:
        for keyword in ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.SeriesDescription = "CT thorax zonder contrast"
        ds.StudyDescription = "CT thorax zonder contrast"
    return datasets


def _adult_hand(patient: Patient, accession: str, seed: int) -> list[Dataset]:
    """A hand radiograph of an adult of 40 (the phantom of a grown hand; the header's age
    says 40): no bone-age question, still a fracture question."""
    datasets = hand_xray(age_years=19.0, patient=patient, accession=accession, seed=seed)
    for ds in datasets:
        ds.PatientAge = "040Y"
        year = int(str(ds.StudyDate)[:4]) - 40
        ds.PatientBirthDate = f"{year}{str(ds.StudyDate)[4:8]}"
    return datasets


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "hand radiograph, child of 10",
        None,
        lambda p, a, s: hand_xray(age_years=10.0, patient=p, accession=a, seed=s),
    ),
    Recipe("hand radiograph, adult of 40", None, _adult_hand),
    Recipe(
        "wrist radiograph with a fracture",
        True,
        lambda p, a, s: extremity_xray(fracture=True, patient=p, accession=a, seed=s),
    ),
    Recipe(
        "wrist radiograph without a fracture",
        False,
        lambda p, a, s: extremity_xray(fracture=False, patient=p, accession=a, seed=s),
    ),
    Recipe(
        "contrast chest CT with a pulmonary embolism",
        True,
        lambda p, a, s: chest_ct(embolism=True, slices=CT_SLICES, patient=p, accession=a, seed=s),
    ),
    Recipe(
        "contrast chest CT without an embolism",
        False,
        lambda p, a, s: chest_ct(embolism=False, slices=CT_SLICES, patient=p, accession=a, seed=s),
    ),
    Recipe("chest CT without contrast", False, _non_contrast_ct),
)


@dataclass
class TestStudy:
    recipe: Recipe
    role: Role
    files: list[bytes]
    """Pseudonymised PS3.10 files, as the hub receives them."""
    study_uid: str
    """The pseudonymous Study Instance UID (what the hub and the product see)."""
    sop_uids: frozenset[str]


class Studies:
    """Fresh test studies by role for one product (see the module docstring)."""

    def __init__(self, rules: RulesConfig, tenant: str, product: str) -> None:
        self.rules, self.tenant, self.product = rules, tenant, product
        self.pseudonymiser = Pseudonymiser(Profile(), os.urandom(32))
        self._counter = itertools.count(1)
        self.roles: dict[str, Role] = {}
        for recipe in RECIPES:
            study = self._build(recipe, None)
            self.roles[recipe.label] = study.role

    def recipes(self, role: Role) -> list[Recipe]:
        return [recipe for recipe in RECIPES if self.roles[recipe.label] is role]

    def available(self, role: Role) -> bool:
        return bool(self.recipes(role))

    def make(self, role: Role) -> TestStudy:
        """A new study of ``role`` (the first recipe of that role; for the product, one with
        the finding drawn in before a measurement)."""
        recipes = self.recipes(role)
        if not recipes:
            raise LookupError(f"no generated study is {role.value} {self.product}")
        if role is Role.FOR_PRODUCT:
            recipes.sort(key=lambda recipe: recipe.finding is not True)
        return self._build(recipes[0], role)

    def make_recipe(self, recipe: Recipe) -> TestStudy:
        """A new study of this recipe, whatever its role."""
        return self._build(recipe, self.roles[recipe.label])

    def _build(self, recipe: Recipe, role: Role | None) -> TestStudy:
        n = next(self._counter)
        patient = Patient(
            name=f"Kit^Case{n:03d}",
            patient_id=f"AIFI-KIT-{n:04d}",
            birth_date="19800101",
            sex="F" if n % 2 else "M",
        )
        datasets = recipe.make(patient, f"KIT-{n:04d}", n)
        uid = generate_uid()
        for ds in datasets:
            ds.StudyInstanceUID = uid
        files = []
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            files.append(self.pseudonymiser.pseudonymise_file(buffer.getvalue())[0])
        seen = [dcmread(io.BytesIO(data), stop_before_pixels=True) for data in files]
        decisions = evaluate(self.rules, self.tenant, StudyFacts.from_metadata(study_json(seen)))
        routed = any(d.matched and d.product.code == self.product for d in decisions)
        if role is None:
            role = (
                Role.NOT_FOR_PRODUCT
                if not routed
                else Role.NORMAL
                if recipe.finding is False
                else Role.FOR_PRODUCT
            )
        return TestStudy(
            recipe=recipe,
            role=role,
            files=files,
            study_uid=str(seen[0].StudyInstanceUID),
            sop_uids=frozenset(str(ds.SOPInstanceUID) for ds in seen),
        )
