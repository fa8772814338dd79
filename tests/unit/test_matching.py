"""QIDO-RS query parsing and attribute matching (PS3.18 §8.3.4, PS3.4 C.2.2.2), no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from aifi.dicomweb.matching import DateTimeMatcher, Matcher, MatchKind, match_dataset
from aifi.dicomweb.qido_query import QidoQuery, parse_query
from aifi.dicomweb.query_attributes import QueryLevel
from aifi.dicomweb.vr_values import normalize_datetime, normalize_time, pn_ci
from aifi.errors import InvalidRequest

STUDY, SERIES, IMAGE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE


def q(text: str, level: QueryLevel = STUDY, **kwargs: object) -> QidoQuery:
    """Parse a query string exactly as the router does: decoded by starlette first."""
    return parse_query(QueryParams(text).multi_items(), level, **kwargs)  # type: ignore[arg-type]


def only(query: QidoQuery) -> Matcher:
    assert len(query.matchers) == 1, query.matchers
    return query.matchers[0]


def bad(text: str, level: QueryLevel = STUDY, **kwargs: object) -> str:
    with pytest.raises(InvalidRequest) as info:
        q(text, level, **kwargs)
    return info.value.reason


# -- parsing -------------------------------------------------------------------------------


def test_percent_encoded_values_arrive_decoded() -> None:
    m = only(q("PatientName=BRO%2A"))
    assert m.value == "BRO*"
    assert m.kind is MatchKind.WILDCARD
    assert only(q("PatientName=Doe%5EJohn")).value == "Doe^John"


def test_keys_by_keyword_or_tag_are_the_same_attribute() -> None:
    assert only(q("PatientID=X")).path.tags == ("00100020",)
    assert only(q("00100020=X")).path.tags == ("00100020",)
    assert only(q("0020000d=1.2")).path.tags == ("0020000D",)
    assert "more than once" in bad("PatientID=X&00100020=Y")


@pytest.mark.parametrize(
    "text",
    ["00400275.00401001=RP1", "RequestAttributesSequence.RequestedProcedureID=RP1"],
)
def test_sequence_paths(text: str) -> None:
    m = only(q(text, SERIES))
    assert m.path.tags == ("00400275", "00401001")
    assert m.path.name == "RequestAttributesSequence.RequestedProcedureID"
    assert m.kind is MatchKind.SINGLE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NoSuchKeyword=1", "Unknown attribute keyword"),
        ("00100001=1", "Unknown attribute tag"),
        ("00100000=1", "Group length"),
        ("PatientID.PatientName=1", "is not a sequence"),
        ("RequestAttributesSequence..X=1", "Malformed attribute path"),
        ("StudyTime=1200-1000", "ends before it starts"),
        ("StudyDate=2024-01-01", "Malformed DA"),
        ("StudyDate=20240132", "Malformed DA"),
        ("StudyDate=20240201-20240101", "ends before it starts"),
        ("StudyDate=-", "Malformed range"),
        ("StudyDate=2024*", "Wildcards cannot be used"),
        ("StudyTime=2500", "Malformed TM"),
        ("StudyInstanceUID=1.2.abc", "Not a valid UID"),
        ("StudyInstanceUID=1.2,", "Not a valid UID"),
        ("NumberOfStudyRelatedInstances=many", "Not a number"),
        ("limit=ten", "unsigned integer"),
        ("limit=-1", "unsigned integer"),
        ("limit=0", "at least 1"),
        ("limit=1&limit=2", "more than once"),
        ("offset=1.5", "unsigned integer"),
        ("fuzzymatching=yes", "true or false"),
        ("includefield=NoSuchKeyword", "Unknown attribute keyword"),
        ("Modality=CT", "series-level attribute"),
        ("SOPInstanceUID=1.2", "instance-level attribute"),
        ("Rows=512", "instance-level attribute"),
    ],
)
def test_bad_queries_say_why(text: str, reason: str) -> None:
    assert reason in bad(text)


def test_sequences_need_an_attribute_to_match_on() -> None:
    assert "is a sequence" in bad("RequestAttributesSequence=RP1", SERIES)


def test_deeper_level_keys_are_refused_but_higher_ones_allowed() -> None:
    assert "use ModalitiesInStudy" in bad("Modality=CT")
    assert only(q("PatientID=X", IMAGE)).path.tag == "00100020"
    assert only(q("Modality=CT", SERIES)).path.tag == "00080060"
    assert "instance-level" in bad("SOPClassUID=1.2", SERIES)


def test_path_uids_are_validated_and_not_repeated() -> None:
    assert "in the path" in bad("", SERIES, study_instance_uid="1.2.x")
    assert "already given in the path" in bad(
        "StudyInstanceUID=1.2", SERIES, study_instance_uid="1.2"
    )
    query = q("", IMAGE, study_instance_uid="1.2", series_instance_uid="1.2.3")
    assert (query.study_instance_uid, query.series_instance_uid) == ("1.2", "1.2.3")


@pytest.mark.parametrize("text", ["PatientName=", "PatientName=*", "StudyDate=", "StudyDate=*"])
def test_universal_matching(text: str) -> None:
    query = q(text)
    assert only(query).kind is MatchKind.UNIVERSAL
    assert query.include == (only(query).path.tag,)  # asked for, so returned


def test_match_keys_are_returned() -> None:
    query = q("PatientID=X&StudyDescription=*&includefield=00081030")
    assert query.include == ("00081030", "00100020")


def test_uid_lists_with_comma_or_backslash() -> None:
    for text in ("StudyInstanceUID=1.2.3,1.2.4", "StudyInstanceUID=1.2.3%5C1.2.4"):
        m = only(q(text))
        assert m.kind is MatchKind.LIST
        assert m.values == ("1.2.3", "1.2.4")
    assert only(q("StudyInstanceUID=1.2.3")).kind is MatchKind.SINGLE


def test_code_string_lists() -> None:
    m = only(q("ModalitiesInStudy=CT,MR"))
    assert (m.kind, m.values) == (MatchKind.LIST, ("CT", "MR"))


def test_ranges_and_open_ranges() -> None:
    closed = only(q("StudyDate=20240101-20240131"))
    assert (closed.kind, closed.low, closed.high) == (MatchKind.RANGE, "20240101", "20240131")
    after = only(q("StudyDate=20240101-"))
    assert (after.low, after.high) == ("20240101", None)
    before = only(q("StudyDate=-20240131"))
    assert (before.low, before.high) == (None, "20240131")
    single = only(q("StudyDate=20240105"))
    assert (single.kind, single.low, single.high) == (MatchKind.SINGLE, "20240105", "20240105")
    time = only(q("StudyTime=10-1130"))
    assert (time.low, time.high) == ("100000.000000", "113059.999999")


def test_datetime_range_and_utc_offset() -> None:
    m = only(q("AcquisitionDateTime=2024-202402", IMAGE))
    assert (m.low, m.high) == ("20240101000000.000000", "20240231235959.999999")
    offset = only(q("AcquisitionDateTime=20240101120000-0500", IMAGE))
    assert offset.kind is MatchKind.SINGLE  # one DT with a UTC offset, not a range


def test_date_and_time_ranges_are_combined() -> None:
    query = q("StudyDate=20240101-20240102&StudyTime=2200-0600&PatientID=X")
    assert [m.path.name for m in query.matchers] == ["PatientID"]
    [combined] = query.combined
    assert combined.low == "20240101220000.000000"
    assert combined.high == "20240102060059.999999"
    assert set(query.include) == {"00080020", "00080030", "00100020"}
    # An open date range takes the whole day at its open end.
    [half] = q("StudyDate=20240101-&StudyTime=0800-").combined
    assert (half.low, half.high) == ("20240101080000.000000", None)
    # Two single values are simply both matched.
    assert not q("StudyDate=20240101&StudyTime=0800").combined


def test_fuzzy_flag_and_the_notice_for_other_keys() -> None:
    query = q("PatientName=muller&PatientID=X&fuzzymatching=true")
    assert query.fuzzy
    assert [m.fuzzy for m in query.matchers] == [True, False]
    [notice] = query.notices
    assert "literal matching was performed for PatientID" in notice
    assert not q("PatientName=muller&fuzzymatching=FALSE").fuzzy
    assert not q("PatientName=muller&fuzzymatching=true").notices


def test_includefield_repeated_comma_separated_tags_and_all() -> None:
    query = q("includefield=StudyDescription,00100030&includefield=0020000D")
    assert query.include == ("00081030", "00100030", "0020000D")
    assert not query.include_all
    assert q("includefield=all").include_all
    assert q("includefield=StudyDescription,all").include_all
    paths = q("includefield=RequestAttributesSequence.RequestedProcedureID", SERIES)
    assert paths.include == ("00400275",)


def test_limit_offset_defaults_and_clamping() -> None:
    query = q("", default_limit=25, max_limit=100)
    assert (query.limit, query.offset, query.notices) == (25, 0, ())
    query = q("limit=500&offset=20", max_limit=100)
    assert (query.limit, query.offset) == (100, 20)
    assert "exceeds the maximum of 100" in query.notices[0]


# -- matching stored JSON ------------------------------------------------------------------


def pn(*groups: str) -> dict[str, object]:
    names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
    return {"vr": "PN", "Value": [names]}


def matches(text: str, dataset: Mapping[str, Any], level: QueryLevel = IMAGE) -> bool:
    query = q(text, level)
    return match_dataset(query.matchers, dataset, query.combined)


def test_person_names_case_insensitive_and_alphabetic_group() -> None:
    ds = {"00100010": pn("Yamada^Tarou", "山田^太郎")}
    assert matches("PatientName=YAMADA%5Etarou", ds)
    assert matches("PatientName=yamada*", ds)
    assert matches("PatientName=*tarou", ds)  # the alphabetic group alone
    assert matches("PatientName=Yamada%5ETarou%3D山田%5E太郎", ds)
    assert not matches("PatientName=Yamada", ds)
    assert not matches("PatientName=Tarou*", ds)


def test_fuzzy_person_names_fold_case_and_accents_and_match_word_prefixes() -> None:
    ds = {"00100010": pn("Müller^Ärne")}
    for value in ("muller", "MULL", "arne", "Muller%5EA", "m?ller", "*rne"):
        assert matches(f"PatientName={value}&fuzzymatching=true", ds), value
    for value in ("ller", "muller%5Ebob", "arne%5Emuller"):
        assert not matches(f"PatientName={value}&fuzzymatching=true", ds), value
    assert not matches("PatientName=muller", ds)  # literal: accents count


def test_strings_are_case_sensitive_with_wildcards() -> None:
    ds = {"00100020": {"vr": "LO", "Value": ["P-Abc "]}}
    assert matches("PatientID=P-Abc", ds)  # trailing padding is insignificant
    assert not matches("PatientID=p-abc", ds)
    assert matches("PatientID=P-?bc", ds)
    assert matches("PatientID=*Ab*", ds)
    assert not matches("PatientID=P-?", ds)


def test_wildcard_metacharacters_of_other_languages_are_literal() -> None:
    ds = {"00080050": {"vr": "SH", "Value": ["A.B%C_[D]"]}}
    assert matches("AccessionNumber=A.B%25C_%5BD%5D", ds)
    assert matches("AccessionNumber=A.B%25*", ds)
    assert not matches("AccessionNumber=A%25", ds)
    assert not matches("AccessionNumber=AxB*", ds)


def test_empty_or_missing_values_match_only_universally() -> None:
    ds = {"00100020": {"vr": "LO"}}
    assert matches("PatientID=", ds)
    assert not matches("PatientID=X", ds)
    assert not matches("PatientName=X", ds)
    assert matches("PatientName=", ds)


def test_dates_times_and_datetimes() -> None:
    ds = {
        "00080020": {"vr": "DA", "Value": ["20240115"]},
        "00080030": {"vr": "TM", "Value": ["101530.25"]},
        "0008002A": {"vr": "DT", "Value": ["20240115101530+0100"]},
    }
    assert matches("StudyDate=20240101-20240131", ds)
    assert matches("StudyDate=20240115-", ds)
    assert matches("StudyDate=-20240115", ds)
    assert not matches("StudyDate=20240116-", ds)
    assert matches("StudyTime=1015", ds)  # 10:15:00-10:15:59.999999
    assert matches("StudyTime=10-11", ds)
    assert not matches("StudyTime=1016-", ds)
    assert matches("AcquisitionDateTime=202401-202401", ds)
    assert matches("AcquisitionDateTime=20240115101530", ds)
    assert not matches("AcquisitionDateTime=-20240115101529", ds)


def test_combined_date_time_crosses_midnight() -> None:
    def study(date: str, time: str | None) -> dict[str, object]:
        ds: dict[str, object] = {"00080020": {"vr": "DA", "Value": [date]}}
        if time is not None:
            ds["00080030"] = {"vr": "TM", "Value": [time]}
        return ds

    text = "StudyDate=20240101-20240102&StudyTime=2200-0600"
    assert matches(text, study("20240101", "2300"))
    assert matches(text, study("20240102", "0130"))
    assert not matches(text, study("20240101", "2100"))
    assert not matches(text, study("20240102", "0700"))
    assert matches(text, study("20240101", None))  # no time of day: the date decides
    assert not matches(text, study("20240103", None))


def test_numbers_uids_and_multiple_values() -> None:
    ds = {
        "00200013": {"vr": "IS", "Value": [7]},
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
    }
    assert matches("InstanceNumber=7", ds)
    assert matches("InstanceNumber=7.0", ds)
    assert not matches("InstanceNumber=8", ds)
    assert matches("SOPClassUID=1.2.3,1.2.840.10008.5.1.4.1.1.2", ds)
    assert not matches("SOPClassUID=1.2.3%5C1.2.4", ds)
    assert matches("ModalitiesInStudy=SR", ds)
    assert matches("ModalitiesInStudy=MR,CT", ds)
    assert not matches("ModalitiesInStudy=MR", ds)


def test_sequence_keys_must_match_within_one_item() -> None:
    ds = {
        "00400275": {
            "vr": "SQ",
            "Value": [
                {
                    "00401001": {"vr": "SH", "Value": ["RP1"]},
                    "00400009": {"vr": "SH", "Value": ["SPS1"]},
                },
                {
                    "00401001": {"vr": "SH", "Value": ["RP2"]},
                    "00400009": {"vr": "SH", "Value": ["SPS2"]},
                },
            ],
        }
    }
    assert matches("RequestAttributesSequence.RequestedProcedureID=RP2", ds)
    assert matches("00400275.00401001=RP1&00400275.00400009=SPS1", ds)
    assert not matches("00400275.00401001=RP1&00400275.00400009=SPS2", ds)
    assert not matches("00400275.00401001=RP3", ds)
    assert not matches("00400275.00401001=RP1", {})


def test_normalisers() -> None:
    assert normalize_time("1015") == "101500.000000"
    assert normalize_time("1015", upper=True) == "101559.999999"
    assert normalize_time("10:15:30.5") == "101530.500000"
    assert normalize_time("101") is None
    assert normalize_datetime("2024", upper=True) == "20241231235959.999999"
    assert normalize_datetime("202413") is None
    assert pn_ci(" Doe^John^^=  ") == "doe^john"
    assert pn_ci("Doe^John=ドウ^ジョン") == "doe^john=ドウ^ジョン"


def test_combined_matcher_without_date_does_not_match() -> None:
    [combined] = q("StudyDate=20240101-&StudyTime=0800-").combined
    assert isinstance(combined, DateTimeMatcher)
    assert not combined.matches_dataset({"00080030": {"vr": "TM", "Value": ["0900"]}})
