"""The QIDO-RS query model: a Search transaction's parameters, validated (PS3.18 §8.3.4,
§10.6.1). Pure code.

:func:`parse_query` turns the query parameters of a Search transaction (as
``request.query_params.multi_items()`` gives them: already percent-decoded, so
``PatientName=BRO%2A`` arrives as ``BRO*``) into a validated :class:`QidoQuery`: the match
keys (:mod:`aifi.dicomweb.matching`, which says how each is matched), ``includefield``,
``fuzzymatching``, ``limit`` and ``offset``; anything malformed raises
:class:`~aifi.errors.InvalidRequest` with a reason for the ``Warning`` header. A
:class:`DicomStore <aifi.dicomweb.store.DicomStore>` answers it with a :class:`QueryResult`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import tag_for_keyword

from aifi.dicom_json import DicomJson
from aifi.dicomweb.matching import DateTimeMatcher, Matcher, MatchKind, build_matcher
from aifi.dicomweb.query_attributes import (
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    UID_SYNTAX,
    AttributePath,
    QueryLevel,
    dictionary_vr,
    keyword,
    parse_path,
)
from aifi.errors import InvalidRequest

RESERVED_PARAMETERS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})


@dataclass(slots=True)
class QidoQuery:
    """A validated Search transaction (PS3.18 §10.6.1) at one level.

    ``study_instance_uid``/``series_instance_uid`` come from the target resource path;
    ``matchers`` are the other match keys (date/time pairs matched as one range are in
    ``combined`` instead); ``include`` lists the top-level tags to return besides the
    defaults (includefield values and match keys, PS3.18 §10.6.3.3).
    """

    level: QueryLevel
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    matchers: tuple[Matcher, ...] = ()
    combined: tuple[DateTimeMatcher, ...] = ()
    include: tuple[str, ...] = ()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = 1000
    offset: int = 0
    notices: tuple[str, ...] = ()
    """Warnings to send with the response (``Warning: 299``), e.g. a clamped limit."""


@dataclass(slots=True)
class QueryResult:
    matches: list[DicomJson] = field(default_factory=list)
    remaining: int = 0
    """How many further matches exist beyond ``offset + len(matches)``."""
    warnings: list[str] = field(default_factory=list)


def _parse_uint(name: str, values: list[str]) -> int:
    if len(values) > 1:
        raise InvalidRequest(f"The {name} parameter is given more than once")
    text = values[0].strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidRequest(f"The {name} parameter must be an unsigned integer, not {text!r}")
    return int(text)


# DA attributes whose TM partner is named like them (PS3.4 C.2.2.2.5.1 pairs).
def _time_partner(date_tag: str) -> str | None:
    name = keyword(date_tag)
    if not name.endswith("Date"):
        return None
    number = tag_for_keyword(name[: -len("Date")] + "Time")
    if number is None or dictionary_vr(f"{number:08X}") != "TM":
        return None
    return f"{number:08X}"


def parse_query(
    params: Iterable[tuple[str, str]],
    level: QueryLevel,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    default_limit: int = 1000,
    max_limit: int = 10000,
) -> QidoQuery:
    """Validate the query parameters of a Search transaction (PS3.18 §8.3.4, §10.6.1.2).

    ``params`` are decoded (name, value) pairs in request order. A ``limit`` above
    ``max_limit`` is lowered to it, with a notice (PS3.18 §8.3.4.4.1: the results returned
    are the minimum of limit and the origin server's maximum).
    """
    for label, uid in (("Study", study_instance_uid), ("Series", series_instance_uid)):
        if uid is not None and not (0 < len(uid) <= 64 and UID_SYNTAX.fullmatch(uid)):
            raise InvalidRequest(f"Not a valid {label} Instance UID in the path: {uid!r}")

    reserved: dict[str, list[str]] = {}
    keys: list[tuple[AttributePath, str]] = []
    seen: dict[tuple[str, ...], str] = {}
    for name, value in params:
        lowered = name.strip().lower()
        if lowered in RESERVED_PARAMETERS:
            reserved.setdefault(lowered, []).append(value)
            continue
        path = parse_path(name)
        if path.tags in seen:
            raise InvalidRequest(f"The matching key {path.name} is given more than once")
        seen[path.tags] = name
        keys.append((path, value))

    fuzzy = False
    if "fuzzymatching" in reserved:
        values = reserved["fuzzymatching"]
        if len(values) > 1:
            raise InvalidRequest("The fuzzymatching parameter is given more than once")
        flag = values[0].strip().lower()
        if flag not in ("true", "false"):
            raise InvalidRequest(f"fuzzymatching must be true or false, not {values[0]!r}")
        fuzzy = flag == "true"

    notices: list[str] = []
    limit = default_limit
    if "limit" in reserved:
        limit = _parse_uint("limit", reserved["limit"])
        if limit == 0:
            raise InvalidRequest("The limit parameter must be at least 1")
    if limit > max_limit:
        notices.append(
            f"The limit {limit} exceeds the maximum of {max_limit} results per response; "
            f"at most {max_limit} are returned"
        )
        limit = max_limit
    offset = _parse_uint("offset", reserved["offset"]) if "offset" in reserved else 0

    include: list[str] = []
    include_all = False
    for value in reserved.get("includefield", []):
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                include_all = True
                continue
            tag = parse_path(item).tag
            if tag not in include:
                include.append(tag)

    matchers: list[Matcher] = []
    literal_only: list[str] = []
    for path, value in keys:
        if path.tag == STUDY_INSTANCE_UID and study_instance_uid is not None:
            raise InvalidRequest("StudyInstanceUID is already given in the path")
        if path.tag == SERIES_INSTANCE_UID and series_instance_uid is not None:
            raise InvalidRequest("SeriesInstanceUID is already given in the path")
        if path.level.depth > level.depth:
            raise InvalidRequest(
                f"{path.name} is a {path.level.label}-level attribute and cannot be "
                f"matched in a {level.label}-level search"
                + (" (use ModalitiesInStudy)" if path.tag == "00080060" else "")
            )
        matcher = build_matcher(path, value, fuzzy=fuzzy)
        if fuzzy and matcher.kind is not MatchKind.UNIVERSAL and path.vr != "PN":
            literal_only.append(path.name)
        matchers.append(matcher)
        if path.tag not in include:
            include.append(path.tag)
    if literal_only:
        notices.append(
            "Fuzzy matching applies to person names only; literal matching was performed "
            "for " + ", ".join(literal_only)
        )

    combined: list[DateTimeMatcher] = []
    by_tag = {m.path.tags: m for m in matchers}
    for m in list(matchers):
        if len(m.path.tags) != 1 or m.vr != "DA" or m.kind is MatchKind.UNIVERSAL:
            continue
        partner = _time_partner(m.path.tag)
        t = by_tag.get((partner,)) if partner else None
        if t is None or t.kind is MatchKind.UNIVERSAL:
            continue
        if m.kind is not MatchKind.RANGE and t.kind is not MatchKind.RANGE:
            continue  # two single values: matched separately, with the same result
        low = m.low + t.low if m.low is not None and t.low is not None else None
        high = m.high + t.high if m.high is not None and t.high is not None else None
        if m.low is not None and t.low is None:
            low = m.low + "000000.000000"
        if m.high is not None and t.high is None:
            high = m.high + "235959.999999"
        if low is not None and high is not None and low > high:
            raise InvalidRequest(
                f"The combined range of {m.path.name} and {t.path.name} ends before it starts"
            )
        combined.append(DateTimeMatcher(m.path, t.path, low, high))
        matchers.remove(m)
        matchers.remove(t)
    for m in matchers:
        if m.kind is MatchKind.RANGE and m.low and m.high and m.low > m.high:
            # PS3.4 C.2.2.2.5: <1> shall be less than or equal to <2>; a time range
            # crosses midnight only as part of a combined date-time range.
            raise InvalidRequest(f"Range for {m.path.name} ends before it starts: {m.value!r}")

    return QidoQuery(
        level=level,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        matchers=tuple(matchers),
        combined=tuple(combined),
        include=tuple(include),
        include_all=include_all,
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
        notices=tuple(notices),
    )
