"""Normalisation of other hospitals' header values (aifi.ihe_profiles.normalise), no I/O."""

from __future__ import annotations

from datetime import date

import pytest

from aifi.ihe_profiles.normalise import (
    BODY_REGIONS,
    age_in_years,
    body_regions,
    contrast_agent_given,
    contrast_in_text,
    fold,
    normalise_modality,
    parse_da,
    parse_patient_age,
)


def test_fold_is_case_accent_and_punctuation_insensitive():
    assert fold("  Hüfte/Épaule--li. ") == "HUFTE EPAULE LI"
    assert fold("Fuß") == "FUSS"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DX", "DX"),
        ("RG", "DX"),
        ("DR", "DX"),
        ("xr", "DX"),
        ("X-Ray", "DX"),
        ("CR", "CR"),
        ("MRI", "MR"),
        ("mr", "MR"),
        ("CTA", "CT"),
        (" CT ", "CT"),
        ("OT", "OT"),
    ],
)
def test_modality_synonyms(raw, expected):
    assert normalise_modality(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # BodyPartExamined as other hospitals write it
        ("HAND", {"HAND"}),
        ("L HAND", {"HAND"}),
        ("HANDL", {"HAND"}),
        ("L-HAND", {"HAND"}),
        ("HANDLINKS", {"HAND"}),
        ("R WRIST", {"WRIST"}),
        ("LT-WRIST", {"WRIST"}),
        ("Thorax/Abdomen", {"CHEST", "ABDOMEN"}),
        ("CHESTABDOMEN", {"CHEST", "ABDOMEN"}),
        ("THX", {"CHEST"}),
        ("TSPINE", {"SPINE"}),
        ("LEG", {"TIBIA_FIBULA"}),
        # Dutch descriptions
        ("X-Hand links", {"HAND"}),
        ("Pols rechts 2 richtingen", {"WRIST"}),
        ("X-Handwortel li.", {"WRIST"}),
        ("X-Thorax staand", {"CHEST"}),
        ("Borstkas", {"CHEST"}),
        ("Bekken AP", {"PELVIS"}),
        ("Ribben re", {"RIBS"}),
        ("X-thorax en ribben", {"CHEST", "RIBS"}),
        ("Enkel li", {"ANKLE"}),
        ("Kniegewricht rechts", {"KNEE"}),
        ("Schouder", {"SHOULDER"}),
        ("Heup", {"HIP"}),
        ("Voet", {"FOOT"}),
        ("Onderarm", {"FOREARM"}),
        ("Bovenarm", {"HUMERUS"}),
        ("Elleboog", {"ELBOW"}),
        ("CT longembolie", {"CHEST"}),
        # German, French, English
        ("Hüfte links", {"HIP"}),
        ("Handgelenk re.", {"WRIST"}),
        ("Sprunggelenk", {"ANKLE"}),
        ("Becken ÜS", {"PELVIS"}),
        ("Avant-bras gauche", {"FOREARM"}),
        ("Épaule droite", {"SHOULDER"}),
        ("Lower leg", {"TIBIA_FIBULA"}),
        ("CT pulmonary embolism", {"CHEST"}),
        # no region named
        ("", set()),
        ("Routine 2 views", set()),
        ("Thorax 1.0 B31f", {"CHEST"}),
    ],
)
def test_body_regions(text, expected):
    assert body_regions(text) == expected


def test_laterality_words_alone_name_no_region():
    assert body_regions("links rechts L R bilateral") == set()


def test_body_regions_are_canonical_names():
    assert {"HAND", "WRIST", "CHEST", "PELVIS", "RIBS", "TIBIA_FIBULA"} <= BODY_REGIONS
    for text in ("pols", "knie", "heup", "enkel", "voet"):
        assert body_regions(text) <= BODY_REGIONS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT thorax met contrast", True),
        ("CT Thorax C+", True),
        ("CE CT thorax", True),
        ("CTA pulmonalis", True),
        ("Angio thorax", True),
        ("Thorax KM arteriell", True),
        ("iv contrast", True),
        ("CT thorax zonder contrast", False),
        ("Thorax non-contrast", False),
        ("Thorax blanco", False),
        ("Thorax nativ", False),
        ("Thorax C-", False),
        ("CT thorax met en zonder contrast", None),
        ("blanco + CE", None),
        ("Thorax 1.0 B31f", None),
        ("C-spine", None),
    ],
)
def test_contrast_in_text(text, expected):
    assert contrast_in_text(text) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Omnipaque 350", True), ("IV", True), ("NONE", False), ("geen", False), ("  ", None)],
)
def test_contrast_agent_given(value, expected):
    assert contrast_agent_given(value) is expected


@pytest.mark.parametrize(
    ("value", "years"),
    [("012Y", 12.0), ("006M", 0.5), ("052W", 52 * 7 / 365.25), ("020D", 20 / 365.25), ("7Y", 7.0)],
)
def test_parse_patient_age(value, years):
    assert parse_patient_age(value) == pytest.approx(years)


@pytest.mark.parametrize("value", ["", "Y", "twelve", "012X", "1234Y"])
def test_parse_patient_age_rejects_nonsense(value):
    assert parse_patient_age(value) is None


def test_parse_da():
    assert parse_da("20240131") == date(2024, 1, 31)
    assert parse_da("2024.01.31") == date(2024, 1, 31)
    assert parse_da("20241341") is None
    assert parse_da("") is None


def test_age_in_years_counts_completed_years_like_people_do():
    birth = date(2005, 6, 15)
    assert int(age_in_years(birth, date(2025, 6, 14))) == 19
    assert int(age_in_years(birth, date(2025, 6, 15))) == 20
    assert age_in_years(birth, date(2006, 6, 15)) == pytest.approx(1.0)
    assert age_in_years(date(2004, 2, 29), date(2023, 3, 1)) == pytest.approx(19.0)


@pytest.mark.parametrize(
    "text",
    [
        "Thorax geen contrast",
        "CT kein KM",
        "pre contrast",
        "precontrast",
        "pre-contrast",
        "voor contrast",
        "unenhanced CT chest",
        "non-enhanced thorax",
    ],
)
def test_negated_contrast_wording_in_dutch_german_english_is_no_contrast(text):
    assert contrast_in_text(text) is False
