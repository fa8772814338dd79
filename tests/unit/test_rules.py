"""AIW-I Task Manager routing rules (aifi.ihe_profiles.rules): config, evaluation, explanation."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydicom.datadict import dictionary_VR, tag_for_keyword

from aifi.errors import NotFound
from aifi.ihe_profiles.rules import (
    Decision,
    RulesConfig,
    StudyFacts,
    evaluate,
    explain,
    load_rules,
)

DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_uids = itertools.count(1)


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    values = value if isinstance(value, list) else [value]
    return f"{tag:08X}", {"vr": vr, "Value": values}


def instance(
    series: str = "1.2.3.1", *, study: str = "1.2.3", modality: str = "DX", **attrs: Any
) -> dict[str, dict[str, Any]]:
    """One instance's DICOM JSON; keyword arguments are DICOM keywords."""
    attrs.setdefault("SOPClassUID", {"CT": CT_CLASS, "CR": CR_CLASS}.get(modality, DX_CLASS))
    attrs.setdefault("SOPInstanceUID", f"{series}.{next(_uids)}")
    attrs |= {"StudyInstanceUID": study, "SeriesInstanceUID": series, "Modality": modality}
    return dict(element(k, v) for k, v in attrs.items() if v is not None)


def hand_xray(age: str | None = "010Y", **attrs: Any) -> list[dict[str, dict[str, Any]]]:
    attrs = {"BodyPartExamined": "HAND", "StudyDescription": "X-Hand links", **attrs}
    return [instance(PatientAge=age, **attrs)]


def ct_chest(
    series: str = "1.2.3.9", modality: str = "CT", **attrs: Any
) -> list[dict[str, dict[str, Any]]]:
    attrs = {
        "BodyPartExamined": "CHEST",
        "StudyDescription": "CT thorax met contrast",
        "SeriesDescription": "Thorax 1.0 B31f",
        "SliceThickness": "1.0",
        "ContrastBolusAgent": "Omnipaque 350",
        "PatientAge": "067Y",
        **attrs,
    }
    return [instance(series, modality=modality, **attrs) for _ in range(3)]


@pytest.fixture(scope="module")
def rules() -> RulesConfig:
    return load_rules()


def decide(rules: RulesConfig, instances: list[dict[str, dict[str, Any]]]) -> dict[str, Decision]:
    facts = StudyFacts.from_metadata(instances)
    return {d.product.code: d for d in evaluate(rules, "default", facts)}


def matched(rules: RulesConfig, instances: list[dict[str, dict[str, Any]]]) -> set[str]:
    return {code for code, d in decide(rules, instances).items() if d.matched}


# --- packaged default -------------------------------------------------------------------


def test_packaged_default_rules(rules):
    codes = [p.code for p in rules.products]
    assert codes == ["AIFI-BONEAGE", "AIFI-FRACTURE", "AIFI-IPE"]
    assert rules.tenants == {"default": codes}
    assert all(p.scheme == "99AIFI" and p.mode == "pull" for p in rules.products)
    assert rules.product("AIFI-IPE").priority == "HIGH"
    assert rules.quiet_period(["DX"]) <= 10
    assert rules.quiet_period(["CR"]) <= 10
    assert rules.quiet_period(["CT"]) <= 30
    assert rules.quiet_period(["MR"]) <= 30


# --- the three pilot products: typical study and near misses -------------------------------


def test_bone_age_matches_a_childs_hand_xray(rules):
    assert matched(rules, hand_xray("010Y")) == {"AIFI-BONEAGE", "AIFI-FRACTURE"}


def test_bone_age_rejects_an_adult_hand(rules):
    decision = decide(rules, hand_xray("045Y"))["AIFI-BONEAGE"]
    assert not decision.matched
    assert decision.input_series == ()
    assert decision.input_instances == ()
    failed = [c for c in decision.checks if not c.passed]
    assert [c.condition for c in failed] == ["age 0-19 years"]
    assert "045Y" in failed[0].detail


def test_bone_age_upper_bound_is_inclusive_in_completed_years(rules):
    # 19 years and 11 months old on the study date: still "19".
    assert "AIFI-BONEAGE" in matched(
        rules, hand_xray(None, PatientBirthDate="20050615", StudyDate="20250601")
    )
    assert "AIFI-BONEAGE" not in matched(
        rules, hand_xray(None, PatientBirthDate="20050615", StudyDate="20250615")
    )


def test_age_from_patient_age_wins_over_birth_date(rules):
    facts = StudyFacts.from_metadata(
        hand_xray("012Y", PatientBirthDate="19700101", StudyDate="20250101")
    )
    assert facts.patient_age_years == 12
    assert "PatientAge '012Y'" in facts.age_source


@pytest.mark.parametrize(
    ("age", "years"), [("006M", 0.5), ("010W", 70 / 365.25), ("020D", 20 / 365.25)]
)
def test_age_in_months_weeks_days(age, years):
    facts = StudyFacts.from_metadata(hand_xray(age))
    assert facts.patient_age_years == pytest.approx(years, abs=0.001)


def test_unknown_age_fails_the_age_check_and_says_so(rules):
    decision = decide(rules, hand_xray(None))["AIFI-BONEAGE"]
    assert not decision.matched
    assert "age unknown" in explain([decision])


def test_fracture_matches_appendicular_pelvis_and_ribs(rules):
    for part, description in [
        ("WRIST", "Pols rechts"),
        ("PELVIS", "Bekken AP"),
        ("ANKLE", "Enkel li"),
        ("", "X-thorax en ribben"),
        ("KNEE", "Knie 2 richtingen"),
    ]:
        attrs: dict[str, Any] = {"BodyPartExamined": part or None, "StudyDescription": description}
        study = [instance(PatientAge="040Y", **attrs)]
        assert matched(rules, study) == {"AIFI-FRACTURE"}, description


@pytest.mark.parametrize(
    ("part", "description"),
    [("CHEST", "X-Thorax staand"), ("SKULL", "X-Schedel"), ("LSPINE", "X-LWK")],
)
def test_fracture_rejects_chest_only_skull_and_spine(rules, part, description):
    study = [instance(BodyPartExamined=part, StudyDescription=description, PatientAge="040Y")]
    decision = decide(rules, study)["AIFI-FRACTURE"]
    assert not decision.matched
    body = next(c for c in decision.checks if c.condition.startswith("body part"))
    assert not body.passed
    assert f"BodyPartExamined '{part}'" in body.detail


def test_ipe_matches_contrast_ct_chest_with_thin_slices(rules):
    decision = decide(rules, ct_chest())["AIFI-IPE"]
    assert decision.matched
    assert decision.product.priority == "HIGH"
    assert decision.input_series == ("1.2.3.9",)
    assert len(decision.input_instances) == 3
    assert {i[0] for i in decision.input_instances} == {"1.2.3.9"}
    assert {i[2] for i in decision.input_instances} == {CT_CLASS}


def test_ipe_rejects_non_contrast_ct(rules):
    study = ct_chest(
        StudyDescription="CT thorax zonder contrast", ContrastBolusAgent=None, PatientAge="067Y"
    )
    decision = decide(rules, study)["AIFI-IPE"]
    assert not decision.matched
    contrast = next(c for c in decision.checks if c.condition == "contrast given")
    assert not contrast.passed
    assert "zonder contrast" in contrast.detail


def test_ipe_rejects_a_blanco_series_even_with_study_level_contrast_words(rules):
    study = ct_chest(SeriesDescription="Thorax blanco 1.0", ContrastBolusAgent=None)
    assert "AIFI-IPE" not in matched(rules, study)


def test_ipe_rejects_5mm_slices(rules):
    decision = decide(rules, ct_chest(SliceThickness="5.0"))["AIFI-IPE"]
    assert not decision.matched
    thickness = next(c for c in decision.checks if c.condition.startswith("slice thickness"))
    assert "SliceThickness 5 mm" in thickness.detail


def test_ipe_takes_only_the_thin_contrast_series_as_input(rules):
    study = (
        ct_chest("1.2.3.1", SeriesDescription="Thorax 5.0", SliceThickness="5")
        + ct_chest("1.2.3.2", SeriesDescription="Thorax blanco 1.0", ContrastBolusAgent=None)
        + ct_chest("1.2.3.3", SeriesDescription="Thorax 1.0 CE")
    )
    decision = decide(rules, study)["AIFI-IPE"]
    assert decision.matched
    assert decision.input_series == ("1.2.3.3",)
    assert {i[0] for i in decision.input_instances} == {"1.2.3.3"}


def test_conditions_must_hold_for_one_and_the_same_series(rules):
    # One series is thin (no contrast), another has contrast (thick): no match.
    study = ct_chest("1.2.3.1", SeriesDescription="Thorax blanco 1.0", ContrastBolusAgent=None)
    study += ct_chest("1.2.3.2", SeriesDescription="Thorax CE 5.0", SliceThickness="5")
    decision = decide(rules, study)["AIFI-IPE"]
    assert not decision.matched
    assert decision.checks[-1].condition == "one series meets every series condition"
    assert not decision.checks[-1].passed


# --- headers from other hospitals ----------------------------------------------------------


@pytest.mark.parametrize(
    "attrs",
    [
        {"modality": "RG", "BodyPartExamined": "L HAND"},
        {"modality": "DR", "BodyPartExamined": "HANDL"},
        {"modality": "CR", "BodyPartExamined": None, "StudyDescription": "X-Hand links"},
        {"modality": "DX", "BodyPartExamined": "EXTREMITY", "StudyDescription": "Hand re."},
        {
            "modality": "DX",
            "BodyPartExamined": None,
            "StudyDescription": None,
            "ProtocolName": "HAND PA",
        },
        {
            "modality": "DX",
            "BodyPartExamined": None,
            "StudyDescription": None,
            "RequestAttributesSequence": {"RequestedProcedureDescription": "X-hand links"},
        },
    ],
)
def test_bone_age_from_other_hospitals_headers(rules, attrs):
    modality = attrs.pop("modality")
    attrs.setdefault("StudyDescription", "Skelet")
    request = attrs.pop("RequestAttributesSequence", None)
    if request is not None:
        attrs["RequestAttributesSequence"] = dict(element(k, v) for k, v in request.items())
    study = [instance(modality=modality, PatientAge="008Y", **attrs)]
    assert "AIFI-BONEAGE" in matched(rules, study)


def test_ct_thorax_abdomen_from_other_hospital(rules):
    study = ct_chest(
        BodyPartExamined="Thorax/Abdomen",
        StudyDescription="CT Thorax/Abdomen KM",
        SeriesDescription="Thx-Abd 1mm",
        ContrastBolusAgent=None,
        modality="CTA",
    )
    decision = decide(rules, study)["AIFI-IPE"]
    assert decision.matched, explain([decision])


def test_input_series_lists_only_the_matching_series(rules):
    study = [
        instance("1.2.3.1", BodyPartExamined="CHEST", SeriesDescription="Thorax PA"),
        instance("1.2.3.2", BodyPartExamined="HAND", SeriesDescription="Hand PA"),
        instance("1.2.3.2", BodyPartExamined="HAND", SeriesDescription="Hand PA"),
    ]
    for ds in study:
        ds.update([element("PatientAge", "011Y")])
    decision = decide(rules, study)["AIFI-BONEAGE"]
    assert decision.matched
    assert decision.input_series == ("1.2.3.2",)
    assert len(decision.input_instances) == 2
    assert all(series == "1.2.3.2" for series, _, _ in decision.input_instances)


# --- explanation ---------------------------------------------------------------------------


def test_explain_names_the_failing_condition_and_the_values_seen(rules):
    study = [instance(BodyPartExamined="THORAX", StudyDescription="X-Thorax", PatientAge="010Y")]
    text = explain(evaluate(rules, "default", StudyFacts.from_metadata(study)))
    block = next(b for b in text.split("\n\n") if b.startswith("AIFI-BONEAGE"))
    assert "no match" in block.splitlines()[0]
    assert "FAIL  body part in HAND" in block
    assert "BodyPartExamined 'THORAX' -> CHEST" in block
    assert "no HAND" in block
    assert "PASS  modality in DX, CR" in block


def test_explain_shows_match_and_inputs(rules):
    text = explain(evaluate(rules, "default", StudyFacts.from_metadata(hand_xray())))
    assert "AIFI-BONEAGE" in text
    assert ": MATCH" in text
    assert "inputs: 1 series, 1 instances: 1.2.3.1" in text


def test_unknown_tenant(rules):
    with pytest.raises(NotFound, match="tenant 'elsewhere'"):
        evaluate(rules, "elsewhere", StudyFacts.from_metadata(hand_xray()))


def test_study_facts_needs_one_study():
    with pytest.raises(ValueError, match="one study"):
        StudyFacts.from_metadata([instance(study="1.1"), instance(study="1.2")])
    with pytest.raises(ValueError, match="one study"):
        StudyFacts.from_metadata([])


# --- configuration ----------------------------------------------------------------------------

PRODUCT: dict[str, Any] = {
    "code": "X-1",
    "name": "X",
    "vendor": "v",
    "version": "1",
    "mode": "pull",
    "supervision": "supervised",
    "norm_turnaround_minutes": 10,
    "priority": "LOW",
    "claim_timeout_minutes": 5,
    "run_timeout_minutes": 5,
    "max_attempts": 2,
    "when": [{"kind": "modality", "values": ["MRI"]}],
}


def config(**overrides: Any) -> RulesConfig:
    data: dict[str, Any] = {"products": [PRODUCT], "tenants": {"t": ["X-1"]}, **overrides}
    return RulesConfig.model_validate(data)


def test_quiet_period_defaults_longest_and_override():
    rules = config()
    assert rules.quiet_period(["DX"]) == 10
    assert rules.quiet_period(["RG"]) == 10
    assert rules.quiet_period(["DX", "CT"]) == 30
    assert rules.quiet_period(["MRI"]) == 30
    assert rules.quiet_period([]) == rules.quiet_period_seconds["default"]
    assert rules.quiet_period(["US"]) == rules.quiet_period_seconds["default"]
    custom = config(quiet_period_seconds={"CR": 4, "mri": 45, "default": 12})
    assert custom.quiet_period(["CR"]) == 4
    assert custom.quiet_period(["MR", "CR"]) == 45
    assert custom.quiet_period(["DX"]) == 10  # not overridden: default kept
    assert custom.quiet_period(["SR"]) == 12


def test_conditions_are_normalised_when_loaded():
    rules = config()
    assert rules.products[0].when[0].values == ["MR"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"products": [PRODUCT, PRODUCT]}, "duplicate product codes: X-1"),
        ({"tenants": {"t": ["X-1", "NOPE"]}}, "tenant 't' uses unknown products NOPE"),
        ({"products": [{**PRODUCT, "when": [{"kind": "weather"}]}]}, "kind"),
        (
            {"products": [{**PRODUCT, "when": [{"kind": "body_part", "values": ["ELBOOW"]}]}]},
            "unknown body region 'ELBOOW'",
        ),
        (
            {"products": [{**PRODUCT, "when": [{"kind": "description", "patterns": ["(x"]}]}]},
            "invalid regular expression",
        ),
        ({"products": [{**PRODUCT, "mode": "push"}]}, "needs a push_url"),
        ({"products": [{**PRODUCT, "code": "MUCH-TOO-LONG-CODE"}]}, "16 characters"),
        ({"products": [{**PRODUCT, "priority": "URGENT"}]}, "priority"),
        (
            {"products": [{**PRODUCT, "when": [{"kind": "age", "min_years": 5, "max_years": 2}]}]},
            "max_years 2",
        ),
        ({"quiet_period_seconds": {"CT": -1}}, "negative"),
    ],
)
def test_config_validation_errors(overrides, message):
    with pytest.raises(ValidationError, match=message):
        config(**overrides)


def test_load_rules_from_a_file(tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "products:\n"
        "  - {code: A, name: A, vendor: v, version: '1', mode: push, push_url: 'https://a/x',\n"
        "     supervision: autonomous, norm_turnaround_minutes: 5, priority: LOW,\n"
        "     claim_timeout_minutes: 1, run_timeout_minutes: 1, max_attempts: 1,\n"
        "     inputs: study, when: [{kind: body_part, values: [pols]}]}\n"
        "tenants: {h1: [A]}\n",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert rules.products[0].when[0].values == ["WRIST"]  # type: ignore[union-attr]
    study = [
        instance("1.2.3.1", StudyDescription="Pols", SeriesDescription="PA"),
        instance("1.2.3.2", StudyDescription="Pols", SeriesDescription="Lat"),
    ]
    decision = evaluate(rules, "h1", StudyFacts.from_metadata(study))[0]
    assert decision.input_series == ("1.2.3.1", "1.2.3.2")


def test_load_rules_names_the_file_on_errors(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("products: []\ntenants: {h1: [A]}\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"(?s)bad\.yaml: invalid routing rules.*unknown products A"
    ):
        load_rules(path)
    path.write_text("products: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_rules(path)


def test_description_and_sop_class_conditions():
    rules = config(
        products=[
            {
                **PRODUCT,
                "when": [
                    {"kind": "description", "patterns": [r"\bpols\b"], "exclude": ["gips"]},
                    {"kind": "sop_class", "uids": [DX_CLASS]},
                ],
            }
        ]
    )
    series = "1.2.3.1"
    study = [
        instance(series, SeriesDescription="Pols PA"),
        instance(series, SeriesDescription="Pols PA", SOPClassUID="1.2.840.10008.5.1.4.1.1.7"),
    ]
    decision = evaluate(rules, "t", StudyFacts.from_metadata(study))[0]
    assert decision.matched
    assert [i[2] for i in decision.input_instances] == [DX_CLASS]
    in_cast = [instance(series, SeriesDescription="Pols in gips")]
    decision = evaluate(rules, "t", StudyFacts.from_metadata(in_cast))[0]
    assert not decision.matched
    assert "excluded: SeriesDescription 'Pols in gips' ~ /gips/" in explain([decision])
