"""Which of the PACS's studies are a patient's priors (issue 17, point 3): every rule and
boundary of :mod:`aifi.gateway.pacs_query.models` (``PriorQuery``, ``select_priors``,
``find_priors``, ``parse_da``) and the prior marking of :mod:`aifi.ihe_profiles.aiw`
(``prior_information``, ``prior_inputs``, ``priors_unavailable_reason``, ...).

A wrong choice sends another patient's study to an AI product, so the PACS's own matching
(Patient ID, Study Date range, Modalities in Study; PS3.4 C.2.2.2 and C.6.2) is never
trusted: the PACS here is a list of answers that may break every matching key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest

from aifi.gateway.pacs_query.models import (
    PriorQuery,
    Retrieved,
    StudyMatch,
    find_priors,
    parse_da,
    select_priors,
)
from aifi.ihe_profiles import aiw
from aifi.ihe_profiles.aiw import (
    current_input_uids,
    is_prior_item,
    prior_information,
    prior_inputs,
    prior_items,
    priors_unavailable_item,
    priors_unavailable_reason,
)

PATIENT = "PAT-1"
CURRENT = "1.2.9"
TODAY = date(2026, 1, 15)


def query(**changes: Any) -> PriorQuery:
    fields: dict[str, Any] = {
        "patient_id": PATIENT,
        "issuer": "",
        "current_study_uid": CURRENT,
        "current_date": TODAY,
        "within_days": 30,
    }
    fields.update(changes)
    return PriorQuery(**fields)


def study(uid: str, day: str = "20260110", time: str = "", **changes: Any) -> StudyMatch:
    changes.setdefault("patient_id", PATIENT)
    return StudyMatch(uid, day, time, **changes)


def uids(studies: Iterable[StudyMatch]) -> list[str]:
    return [s.study_instance_uid for s in studies]


@dataclass
class Pacs:
    """A PACS that answers what it is given, whatever the query (the protocol's query side)."""

    studies: list[StudyMatch]
    parts: dict[str, frozenset[str]] = field(default_factory=dict)
    name: str = "pacs"
    asked: list[str] = field(default_factory=list)
    queries: list[PriorQuery] = field(default_factory=list)

    def find_studies(self, query: PriorQuery) -> list[StudyMatch]:
        self.queries.append(query)
        return list(self.studies)

    def series_body_parts(self, study_instance_uid: str) -> frozenset[str]:
        self.asked.append(study_instance_uid)
        return self.parts.get(study_instance_uid, frozenset())

    def retrieve_study(self, study_instance_uid: str) -> Retrieved:
        raise AssertionError("find_priors never retrieves")

    def close(self) -> None:
        pass


# -- PriorQuery ------------------------------------------------------------------------------


def test_a_query_needs_a_patient_a_count_and_a_window():
    for blank in ("", " ", "\t"):
        with pytest.raises(ValueError, match=r"^a prior query needs the patient's ID$"):
            query(patient_id=blank)
    with pytest.raises(ValueError, match=r"^count must be >= 1 and within_days >= 0$"):
        query(count=0)
    with pytest.raises(ValueError, match=r"^count must be >= 1 and within_days >= 0$"):
        query(within_days=-1)
    assert query(count=1).count == 1
    assert query(within_days=0).within_days == 0
    defaults = PriorQuery(PATIENT, "", CURRENT, TODAY)
    assert (defaults.within_days, defaults.count) == (1825, 1)
    assert (defaults.modalities, defaults.body_parts) == ((), ())


def test_the_study_date_range_ends_on_the_current_date():
    assert query().date_range == "20251216-20260115"
    assert query(within_days=0).date_range == "20260115-20260115"
    assert query(within_days=1).date_range == "20260114-20260115"
    assert query(within_days=1825).date_range == "20210116-20260115"  # over leap days
    assert query(current_date=None).date_range == ""


def test_only_a_single_modality_is_a_matching_key():
    assert query().single_modality is None
    assert query(modalities=("DX",)).single_modality == "DX"
    assert query(modalities=("DX", "CR")).single_modality is None


# -- select_priors: the study-level filter ---------------------------------------------------


def test_another_patient_answered_by_the_pacs_is_never_a_prior():
    """The PACS's Patient ID matching is not trusted: a study answered with another (or
    no) Patient ID is dropped, even one that fits every other rule."""
    answers = [
        study("1.1", patient_id="PAT-10"),  # a prefix match of a sloppy PACS
        study("1.2", patient_id="pat-1"),  # case-insensitive matching
        study("1.3", patient_id=""),  # answered without a Patient ID
        study("1.4", patient_id="OTHER"),
        study("1.5", patient_id=" PAT-1 "),  # padding is not another patient
        study("1.6"),
    ]
    assert uids(select_priors(query(), answers)) == ["1.5", "1.6"]
    padded = query(patient_id="PAT-1 ")
    assert uids(select_priors(padded, [study("1.6")])) == ["1.6"]
    assert select_priors(query(), [study("1.4", patient_id="OTHER")]) == []


def test_the_current_study_and_studies_without_a_uid_are_left_out():
    answers = [study(CURRENT), study(""), study("1.1")]
    assert uids(select_priors(query(), answers)) == ["1.1"]


def test_a_study_named_twice_counts_once():
    answers = [study("1.1", "20260110"), study("1.2", "20260105"), study("1.1", "20260110")]
    assert uids(select_priors(query(), answers)) == ["1.1", "1.2"]
    # the first answer that passes counts, not a rejected first sighting
    twice = [study("1.1", patient_id="OTHER"), study("1.1", "20260101", modalities=("DX",))]
    [kept] = select_priors(query(), twice)
    assert (kept.patient_id, kept.study_date) == (PATIENT, "20260101")


def test_another_issuer_only_when_both_are_known():
    answers = [
        study("1.1", issuer="HOSP"),
        study("1.2", issuer="OTHER"),
        study("1.3", issuer=""),
    ]
    assert uids(select_priors(query(issuer="HOSP"), answers)) == ["1.1", "1.3"]
    assert uids(select_priors(query(issuer=""), answers)) == ["1.1", "1.2", "1.3"]


def test_the_window_includes_both_ends():
    answers = [
        study("1.1", "20251215"),  # within_days + 1 before: out
        study("1.2", "20251216"),  # exactly within_days before: in
        study("1.3", "20260114"),
        study("1.4", "20260115", "0700"),  # earlier the same day: in
        study("1.5", "20260116"),  # after the current study: out
        study("1.6", "20260115123000"),  # a DT-like value: its date counts
    ]
    assert uids(select_priors(query(), answers)) == ["1.6", "1.4", "1.3", "1.2"]
    same_day = query(within_days=0)
    assert uids(select_priors(same_day, answers)) == ["1.6", "1.4"]


def test_a_study_without_a_date_is_not_a_prior_of_a_dated_study():
    """No Study Date: it cannot be known to be earlier than the current study (it may be a
    later one), so a comparison product does not get it."""
    answers = [study("1.1", ""), study("1.2", "20260101"), study("1.3", "20251201")]
    assert uids(select_priors(query(), answers)) == ["1.2"]


def test_without_a_current_date_there_is_no_window():
    answers = [study("1.1", "19990101"), study("1.2", "20300101"), study("1.3", "")]
    assert uids(select_priors(query(current_date=None), answers)) == ["1.2", "1.1", "1.3"]


def test_one_of_the_modalities_in_the_study():
    answers = [
        study("1.1", "20260110", modalities=("CT",)),
        study("1.2", "20260109", modalities=("DX", "SR")),
        study("1.3", "20260108", modalities=(" cr ",)),  # case and padding
        study("1.4", "20260107", modalities=()),  # answered without: not excluded
        study("1.5", "20260106", modalities=("", " ")),  # only empty values: none matches
        study("1.6", "20260105", modalities=("CT", "")),
    ]
    assert uids(select_priors(query(modalities=("DX", "cr ")), answers)) == [
        "1.2",
        "1.3",
        "1.4",
    ]
    assert uids(select_priors(query(modalities=()), answers)) == uids(answers)
    assert uids(select_priors(query(modalities=("", " ")), answers)) == uids(answers)


def test_newest_first_by_date_then_time():
    answers = [
        study("1.1", "20260101", "0800"),
        study("1.2", "20260101", "1015"),
        study("1.3", "20260102", ""),
        study("1.4", "20260101", "09"),  # HH: 090000
        study("1.5", "20260101", "081500.123456"),  # fraction ignored
        study("1.6", "20260101", "08"),  # 080000 == 0800
        study("1.7", "20251231", "2359"),
    ]
    assert uids(select_priors(query(), answers)) == [
        "1.3",
        "1.2",
        "1.4",
        "1.5",
        "1.1",
        "1.6",
        "1.7",
    ]


def test_equal_dates_and_times_keep_the_pacs_order():
    answers = [study("1.3", "20260110", "1200"), study("1.1", "20260110", "1200")]
    assert uids(select_priors(query(), answers)) == ["1.3", "1.1"]
    assert uids(select_priors(query(), answers[::-1])) == ["1.1", "1.3"]


def test_the_sort_key():
    assert study("1", "20260101", "1230").sort_key == ("20260101", "123000")
    assert study("1", "20260101", "123045.5").sort_key == ("20260101", "123045")
    assert study("1", "20260101", "").sort_key == ("20260101", "000000")
    assert study("1", "", "1").sort_key == ("", "100000")


def test_the_candidates_are_kept_as_the_pacs_answered_them():
    answer = study("1.1", modalities=("DX",), issuer="HOSP")
    [kept] = select_priors(query(), [answer])
    assert kept is answer


# -- find_priors: count and the series-level look --------------------------------------------


def test_count_without_a_body_part():
    pacs = Pacs([study(f"1.{n}", f"202601{n:02d}") for n in range(1, 6)])
    assert uids(find_priors(pacs, query(count=1))) == ["1.5"]
    assert uids(find_priors(pacs, query(count=3))) == ["1.5", "1.4", "1.3"]
    assert uids(find_priors(pacs, query(count=9))) == ["1.5", "1.4", "1.3", "1.2", "1.1"]
    assert pacs.asked == []  # no series-level look without a body part
    assert pacs.queries[0] == query(count=1)
    assert find_priors(Pacs([]), query()) == []


def test_the_filter_applies_before_the_count():
    pacs = Pacs([study("1.9", "20260114", patient_id="OTHER"), study("1.1", "20260101")])
    assert uids(find_priors(pacs, query(count=1))) == ["1.1"]
    pacs = Pacs([study(CURRENT, "20260115"), study("1.1", "20260101")])
    assert uids(find_priors(pacs, query(count=1))) == ["1.1"]


def test_the_body_part_from_the_newest_until_count_match():
    answers = [
        study("1.1", "20260101"),
        study("1.2", "20260102"),
        study("1.3", "20260103"),
        study("1.4", "20260104"),
    ]
    parts = {
        "1.4": frozenset({"FOOT"}),
        "1.3": frozenset({"HAND", "WRIST"}),
        "1.2": frozenset({"HAND"}),
        "1.1": frozenset({"HAND"}),
    }
    pacs = Pacs(answers, parts)
    [one] = find_priors(pacs, query(body_parts=("hand",), count=1))
    assert one.study_instance_uid == "1.3"
    assert one.body_parts == frozenset({"HAND", "WRIST"})
    assert (one.study_date, one.patient_id) == ("20260103", PATIENT)
    assert pacs.asked == ["1.4", "1.3"]  # stops once count match

    pacs = Pacs(answers, parts)
    two = find_priors(pacs, query(body_parts=(" HAND ", "KNEE"), count=2))
    assert uids(two) == ["1.3", "1.2"]
    assert pacs.asked == ["1.4", "1.3", "1.2"]

    pacs = Pacs(answers, parts)
    assert uids(find_priors(pacs, query(body_parts=("HAND",), count=5))) == ["1.3", "1.2", "1.1"]
    assert pacs.asked == ["1.4", "1.3", "1.2", "1.1"]

    pacs = Pacs(answers, parts)
    assert find_priors(pacs, query(body_parts=("KNEE",), count=5)) == []
    assert find_priors(Pacs(answers), query(body_parts=("HAND",))) == []  # no parts known


def test_the_body_part_look_keeps_every_field_of_the_match():
    answer = study("1.1", "20260101", "0800", modalities=("DX",), issuer="HOSP")
    pacs = Pacs([answer], {"1.1": frozenset({"HAND"})})
    [found] = find_priors(pacs, query(issuer="HOSP", body_parts=("HAND",)))
    assert found == StudyMatch(
        "1.1",
        "20260101",
        "0800",
        ("DX",),
        "HOSP",
        frozenset({"HAND"}),
        PATIENT,
    )


def test_the_body_part_look_only_for_the_filtered_studies():
    pacs = Pacs(
        [study("1.1", patient_id="OTHER"), study("1.2", "20200101"), study(CURRENT)],
        {"1.1": frozenset({"HAND"}), "1.2": frozenset({"HAND"}), CURRENT: frozenset({"HAND"})},
    )
    assert find_priors(pacs, query(body_parts=("HAND",))) == []
    assert pacs.asked == []


# -- parse_da ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240229", date(2024, 2, 29)),
        (" 20240101 ", date(2024, 1, 1)),
        ("20240101123000", date(2024, 1, 1)),
        ("00010101", date(1, 1, 1)),
        ("", None),
        ("        ", None),
        ("2024011", None),
        ("2024-01-01", None),
        ("2024O101", None),
        ("20230229", None),
        ("20241301", None),
        ("20240100", None),
        ("00000101", None),
    ],
)
def test_parse_da(text: str, expected: date | None):
    assert parse_da(text) == expected


# -- the prior marking in the workitem (aiw) ------------------------------------------------

INSTANCES = [
    ("1.5", "1.5.1", "1.5.1.1", "1.2.840.10008.5.1.4.1.1.1.1"),
    ("1.5", "1.5.2", "1.5.2.1", "1.2.840.10008.5.1.4.1.1.1"),
    ("1.5", "1.5.1", "1.5.1.2", "1.2.840.10008.5.1.4.1.1.1.1"),
    ("1.6", "1.6.1", "1.6.1.1", "1.2.840.10008.5.1.4.1.1.7"),
]


def code(value: str, scheme: str, meaning: str = "x") -> dict[str, Any]:
    return {
        "00080100": {"vr": "SH", "Value": [value]},
        "00080102": {"vr": "SH", "Value": [scheme]},
        "00080104": {"vr": "LO", "Value": [meaning]},
    }


def test_prior_information_one_marked_item_per_series():
    items = prior_information(INSTANCES)
    assert len(items) == 3
    first = items[0]
    assert first == {
        "0020000D": {"vr": "UI", "Value": ["1.5"]},
        "0020000E": {"vr": "UI", "Value": ["1.5.1"]},
        "0040E020": {"vr": "CS", "Value": ["DICOM"]},
        "00081199": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1.1"]},
                    "00081155": {"vr": "UI", "Value": ["1.5.1.1"]},
                },
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1.1"]},
                    "00081155": {"vr": "UI", "Value": ["1.5.1.2"]},
                },
            ],
        },
        "0040E025": {
            "vr": "SQ",
            "Value": [{"00081190": {"vr": "UR", "Value": ["studies/1.5/series/1.5.1"]}}],
        },
        "0040A170": {"vr": "SQ", "Value": [code("121079", "DCM", "Baseline")]},
    }
    assert [(i["0020000D"]["Value"][0], i["0020000E"]["Value"][0]) for i in items] == [
        ("1.5", "1.5.1"),
        ("1.5", "1.5.2"),
        ("1.6", "1.6.1"),
    ]
    assert all(is_prior_item(i) for i in items)
    assert prior_information([]) == []


def test_a_series_uid_in_two_studies_is_two_items():
    items = prior_information([("1.5", "9.9", "1", "1.2"), ("1.6", "9.9", "2", "1.2")])
    assert len(items) == 2


def test_what_marks_an_item_as_a_prior():
    assert is_prior_item({"0040A170": {"vr": "SQ", "Value": [code("121079", "DCM")]}})
    other_purposes = [
        code("121079", "99LOCAL"),  # right value, other scheme
        code("121080", "DCM"),  # another purpose
        {"00080102": {"vr": "SH", "Value": ["DCM"]}},  # no value
        {"00080100": {"vr": "SH", "Value": ["121079"]}},  # no scheme
    ]
    for purpose in other_purposes:
        assert not is_prior_item({"0040A170": {"vr": "SQ", "Value": [purpose]}})
    assert not is_prior_item({})
    assert not is_prior_item({"0040A170": {"vr": "SQ"}})
    # any of several purposes
    two = {"0040A170": {"vr": "SQ", "Value": [code("121080", "DCM"), code("121079", "DCM")]}}
    assert is_prior_item(two)
    # the first value counts (Code Value and Coding Scheme Designator are single-valued)
    extra = code("121080", "DCM")
    extra["00080100"]["Value"].append("121079")
    assert not is_prior_item({"0040A170": {"vr": "SQ", "Value": [extra]}})
    for tag, more in (("00080100", "121080"), ("00080102", "SCT")):
        second = code("121079", "DCM")
        second[tag]["Value"].append(more)
        assert is_prior_item({"0040A170": {"vr": "SQ", "Value": [second]}})


def workitem(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ds: dict[str, Any] = {"00404021": {"vr": "SQ", "Value": list(items)}}
    ds.update(extra)
    return ds


CURRENT_ITEM = {
    "0020000D": {"vr": "UI", "Value": ["1.9"]},
    "0020000E": {"vr": "UI", "Value": ["1.9.1"]},
    "00081199": {
        "vr": "SQ",
        "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.9.1.1"]}},
            {"00081155": {"vr": "UI", "Value": ["1.9.1.2"]}},
        ],
    },
    "0040E025": {"vr": "SQ", "Value": [{"00081190": {"vr": "UR", "Value": ["studies/1.9"]}}]},
}


def test_prior_inputs_read_back_only_the_marked_items():
    marked = prior_information(INSTANCES)
    ds = workitem(CURRENT_ITEM, *marked)
    assert prior_inputs(ds) == [
        aiw.PriorInput("1.5", "1.5.1", ("1.5.1.1", "1.5.1.2"), "studies/1.5/series/1.5.1"),
        aiw.PriorInput("1.5", "1.5.2", ("1.5.2.1",), "studies/1.5/series/1.5.2"),
        aiw.PriorInput("1.6", "1.6.1", ("1.6.1.1",), "studies/1.6/series/1.6.1"),
    ]
    assert prior_items(ds) == marked
    assert prior_items(ds)[0] is not marked[0]  # copies
    assert current_input_uids(ds) == frozenset({"1.9.1.1", "1.9.1.2"})
    assert prior_inputs(workitem(CURRENT_ITEM)) == []
    assert prior_inputs({}) == [] and current_input_uids({}) == frozenset()


def test_prior_inputs_tolerate_a_sparse_item():
    bare = {"0040A170": {"vr": "SQ", "Value": [code("121079", "DCM")]}}
    assert prior_inputs(workitem(bare)) == [aiw.PriorInput("", "", (), None)]
    two_urls = dict(bare)
    two_urls["0040E025"] = {
        "vr": "SQ",
        "Value": [
            {"00081190": {"vr": "UR"}},
            {"00081190": {"vr": "UR", "Value": ["first", "second"]}},
            {"00081190": {"vr": "UR", "Value": ["third"]}},
        ],
    }
    [prior] = prior_inputs(workitem(two_urls))
    assert prior.retrieve_url == "first"


def test_why_priors_are_unavailable_round_trips():
    item = priors_unavailable_item("no earlier hand radiograph")
    assert item == {
        "0040A040": {"vr": "CS", "Value": ["TEXT"]},
        "0040A043": {
            "vr": "SQ",
            "Value": [code("PRIORS-NONE", "99AIFI", "Prior studies not available")],
        },
        "0040A160": {"vr": "UT", "Value": ["no earlier hand radiograph"]},
    }
    params = "00741210"
    other = {
        "0040A040": {"vr": "CS", "Value": ["TEXT"]},
        "0040A043": {"vr": "SQ", "Value": [code("OTHER", "99AIFI")]},
        "0040A160": {"vr": "UT", "Value": ["something else"]},
    }
    ds = workitem(**{params: {"vr": "SQ", "Value": [other, item]}})
    assert priors_unavailable_reason(ds) == "no earlier hand radiograph"
    assert priors_unavailable_reason(workitem(**{params: {"vr": "SQ", "Value": [other]}})) is None
    assert priors_unavailable_reason({}) is None
    wrong_scheme = dict(item)
    wrong_scheme["0040A043"] = {"vr": "SQ", "Value": [code("PRIORS-NONE", "DCM")]}
    assert priors_unavailable_reason({params: {"vr": "SQ", "Value": [wrong_scheme]}}) is None
    empty_text = {k: v for k, v in item.items() if k != "0040A160"}
    assert priors_unavailable_reason({params: {"vr": "SQ", "Value": [empty_text]}}) == ""
    first = priors_unavailable_item("first")
    ds = {params: {"vr": "SQ", "Value": [first, item]}}
    assert priors_unavailable_reason(ds) == "first"
