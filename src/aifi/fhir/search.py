"""FHIR R4 search (search.html): the supported search parameters, the parser that turns a
query string into a :class:`~aifi.fhir.types.SearchQuery`, and the extraction of each
parameter's values from a resource for the search index (``fhir_search_token``).

Matching rules (search.html#token, #reference, #date, #string, #uri):

- token: ``code``, ``system|code``, ``|code`` (no system) or ``system|`` (any code of the
  system); ``:not`` negates.
- reference: ``Type/id``, a bare ``id`` (completed with the parameter's only target type;
  any type when it has several), an absolute URL ending in ``Type/id``, ``:Type`` to name the
  type, ``:identifier`` for ``system|value`` of ``Reference.identifier``.
- date: prefixes ``eq ne gt lt ge le sa eb ap`` (``ap`` is treated as ``eq``) and the
  precision of the value (year, month, day, minutes, seconds) give a UTC ``[lower, upper]``
  range, search.html#prefix; a value without a timezone is read as UTC.
- string: starts-with, ignoring case and accents; ``:exact`` and ``:contains``.
- A comma ORs values, a repeated parameter ANDs (search.html#combining).
- ``:missing=true|false`` on every indexed parameter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aifi.errors import InvalidRequest, NotAcceptable
from aifi.fhir.types import Criterion, ParamKind, Resource, SearchQuery

DEFAULT_COUNT = 50
MAX_COUNT = 500
INDEX_FORMAT = "%Y-%m-%dT%H:%M:%S"
"""Dates in the index and in :attr:`Criterion.bounds`: UTC, seconds, text order = time order."""
MAX_VALUE = 400
MAX_SYSTEM = 200
"""Column widths of ``fhir_search_token`` (longer values are cut, prefixes still match)."""


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One search parameter: its type (search.html#ptypes), where its values are in the
    resource (dot paths; ``x[x]`` is a choice element), and for references the types it
    may point to (empty: any)."""

    name: str
    kind: ParamKind
    paths: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    description: str = ""

    def expression(self, resource_type: str) -> str:
        """FHIRPath-like expression for the CapabilityStatement's documentation."""
        if self.name == "_id":
            return f"{resource_type}.id"
        if self.name == "_lastUpdated":
            return f"{resource_type}.meta.lastUpdated"
        return " | ".join(f"{resource_type}.{path}" for path in self.paths)


def _p(
    name: str, kind: ParamKind, *paths: str, targets: tuple[str, ...] = (), doc: str = ""
) -> ParamDef:
    return ParamDef(name=name, kind=kind, paths=paths, targets=targets, description=doc)


_COMMON = (
    _p("_id", "token", doc="Logical id of the resource"),
    _p("_lastUpdated", "date", doc="When the resource version last changed"),
)
_PATIENT = ("Patient",)


def _table(*params: ParamDef) -> dict[str, ParamDef]:
    return {p.name: p for p in (*_COMMON, *params)}


SEARCH_PARAMS: Mapping[str, Mapping[str, ParamDef]] = {
    "Task": _table(
        _p("status", "token", "status", doc="Task status"),
        _p("business-status", "token", "businessStatus", doc="Business status (UPS state)"),
        _p("focus", "reference", "focus", doc="What the task acts on (the ImagingStudy)"),
        _p("patient", "reference", "for", targets=_PATIENT, doc="The patient (Task.for)"),
        _p("subject", "reference", "for", doc="Beneficiary of the task (Task.for)"),
        _p("owner", "reference", "owner", doc="Who performs it (the AI product's Device)"),
        _p("code", "token", "code", doc="Task type (the AI product code)"),
        _p("identifier", "token", "identifier", doc="Business identifier (workitem UID)"),
        _p("based-on", "reference", "basedOn", doc="The request this task fulfils"),
        _p("authored-on", "date", "authoredOn", doc="Creation date"),
        _p("modified", "date", "lastModified", doc="Last modification date"),
    ),
    "DiagnosticReport": _table(
        _p("patient", "reference", "subject", targets=_PATIENT, doc="The patient"),
        _p("subject", "reference", "subject", doc="The subject of the report"),
        _p("status", "token", "status", doc="Report status"),
        _p("based-on", "reference", "basedOn", doc="The Task or ServiceRequest it answers"),
        _p("code", "token", "code", doc="Report code (the AI product code)"),
        _p("date", "date", "effective[x]", doc="Clinically relevant time (effective[x])"),
        _p("issued", "date", "issued", doc="When the report was released"),
        _p("identifier", "token", "identifier", doc="Business identifier (workitem UID)"),
        _p(
            "result",
            "reference",
            "result",
            targets=("Observation",),
            doc="The Observations of the report",
        ),
        _p("category", "token", "category", doc="Service category"),
    ),
    "Observation": _table(
        _p("code", "token", "code", doc="What was observed"),
        _p("patient", "reference", "subject", targets=_PATIENT, doc="The patient"),
        _p("subject", "reference", "subject", doc="The subject of the observation"),
        _p("status", "token", "status", doc="Observation status"),
        _p("date", "date", "effective[x]", doc="Clinically relevant time (effective[x])"),
        _p("derived-from", "reference", "derivedFrom", doc="Source (e.g. the DICOM SR)"),
        _p("device", "reference", "device", doc="The AI product's Device"),
        _p("value-concept", "token", "valueCodeableConcept", doc="Coded value"),
    ),
    "Communication": _table(
        _p("status", "token", "status", doc="Communication status"),
        _p("priority", "token", "priority", doc="Priority (hub parameter; urgent findings)"),
        _p("category", "token", "category", doc="Message category (alert)"),
        _p("about", "reference", "about", doc="What it is about (hub parameter; the report)"),
        _p("patient", "reference", "subject", targets=_PATIENT, doc="The patient"),
        _p("subject", "reference", "subject", doc="The subject of the message"),
        _p("recipient", "reference", "recipient", doc="The hospital (Organization by identifier)"),
        _p("sender", "reference", "sender", doc="Who sent it (the AI product's Device)"),
        _p("sent", "date", "sent", doc="When it was sent"),
        _p("identifier", "token", "identifier", doc="Business identifier (workitem UID)"),
    ),
    "ImagingStudy": _table(
        _p("identifier", "token", "identifier", doc="Study Instance UID or Accession Number"),
        _p("patient", "reference", "subject", targets=_PATIENT, doc="The patient"),
        _p("subject", "reference", "subject", doc="The subject of the study"),
        _p("started", "date", "started", doc="When the study started"),
        _p("modality", "token", "series.modality", doc="Modality of a series"),
        _p("status", "token", "status", doc="Study status"),
    ),
    "Patient": _table(
        _p("identifier", "token", "identifier", doc="Patient ID (with its issuer)"),
    ),
    "Device": _table(
        _p("identifier", "token", "identifier", doc="Product code"),
        _p("manufacturer", "string", "manufacturer", doc="Manufacturer (the vendor)"),
        _p("device-name", "string", "deviceName.name", doc="Name of the product"),
    ),
    "Provenance": _table(
        _p("target", "reference", "target", doc="What the provenance is about"),
        _p("agent", "reference", "agent.who", doc="Who took part"),
        _p("recorded", "date", "recorded", doc="When it was recorded"),
    ),
    "ServiceRequest": _table(
        _p("identifier", "token", "identifier", doc="Business identifier"),
        _p("status", "token", "status", doc="Request status"),
        _p("patient", "reference", "subject", targets=_PATIENT, doc="The patient"),
        _p("subject", "reference", "subject", doc="The subject of the request"),
        _p("code", "token", "code", doc="What is requested"),
        _p("intent", "token", "intent", doc="Request intent"),
    ),
    "Subscription": _table(
        _p("status", "token", "status", doc="Subscription status"),
        _p("url", "uri", "channel.endpoint", doc="The rest-hook endpoint"),
        _p("criteria", "string", "criteria", doc="The search the subscription is about"),
    ),
    "AuditEvent": _table(
        _p("date", "date", "recorded", doc="When the event was recorded"),
        _p("patient", "reference", "entity.what", targets=_PATIENT, doc="The patient"),
        _p("entity", "reference", "entity.what", doc="Specific instance of a resource"),
        _p("agent", "reference", "agent.who", doc="Who took part"),
        _p("type", "token", "type", doc="Type of event"),
        _p("outcome", "token", "outcome", doc="Whether the event succeeded"),
        _p("action", "token", "action", doc="Type of action performed (C R U D E)"),
        _p("subtype", "token", "subtype", doc="More specific type (interaction, service)"),
        _p("address", "string", "agent.network.address", doc="Network address of an agent"),
        _p("site", "token", "source.site", doc="Logical source location (the tenant)"),
    ),
}
"""The search parameters of each resource type the hub serves (``_id`` and
``_lastUpdated`` for all)."""

RESULT_PARAMS = frozenset(
    {"_count", "_offset", "_summary", "_include", "_sort", "_total", "_format", "_pretty"}
)
"""Result parameters (search.html#return) the parser understands."""

JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_MODIFIERS: Mapping[ParamKind, frozenset[str]] = {
    "token": frozenset({"not", "missing"}),
    "reference": frozenset({"identifier", "missing"}),
    "date": frozenset({"missing"}),
    "string": frozenset({"exact", "contains", "missing"}),
    "uri": frozenset({"missing"}),
}
_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_URL_REF_RE = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")


# --- values ---------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a string (search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def date_range(text: str) -> tuple[datetime, datetime]:
    """The UTC ``[lower, upper]`` a FHIR date/dateTime/instant stands for at its precision
    (search.html#date): ``2024`` covers the whole year, ``2024-03-05T10:00`` the minute.
    ``upper`` is the last second of the range. ValueError when the text is not a date."""
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    year = int(m["y"])
    month = int(m["mo"] or 1)
    day = int(m["d"] or 1)
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = m["tz"][1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    start = datetime(
        year, month, day, int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0), tzinfo=tz
    ).astimezone(UTC)
    if m["s"] is not None:
        end = start
    elif m["mi"] is not None:
        end = start + timedelta(seconds=59)
    elif m["d"] is not None:
        end = start + timedelta(days=1, seconds=-1)
    elif m["mo"] is not None:
        next_month = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        end = next_month - timedelta(seconds=1)
    else:
        end = datetime(year + 1, 1, 1, tzinfo=UTC) - timedelta(seconds=1)
    return start, end


def index_date(text: str) -> str:
    """A date/dateTime/instant as stored in the index: UTC seconds (date-only: midnight)."""
    return date_range(text)[0].strftime(INDEX_FORMAT)


def reference_key(reference: str) -> str | None:
    """``Type/id`` of a relative or absolute literal reference (``_history`` dropped);
    None for contained (``#x``), ``urn:`` or unparseable references."""
    ref = reference.split("/_history/", 1)[0].rstrip("/")
    if ref.startswith(("#", "urn:")):
        return None
    m = _URL_REF_RE.search(ref)
    return f"{m['type']}/{m['id']}" if m else None


def _split_escaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash; ``\\,`` ``\\|`` ``\\$`` ``\\\\`` are
    unescaped (search.html#escaping)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            if nxt == sep:
                current.append(nxt)
            else:
                current.append(c + nxt)
        elif c == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", text)


# --- parsing --------------------------------------------------------------------------------


def parse_search(resource_type: str, params: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
    """Parse the query parameters of a search on ``resource_type`` (search.html).

    ``strict`` (``Prefer: handling=strict``): an unknown parameter or unsupported modifier is
    an :class:`InvalidRequest` naming it; otherwise it is skipped and listed in
    :attr:`SearchQuery.ignored`. A malformed value is an error either way; a ``_format``
    other than JSON is :class:`NotAcceptable` (http.html#mime-type).
    """
    table = SEARCH_PARAMS.get(resource_type)
    if table is None:
        raise InvalidRequest(f"Searching {resource_type} is not supported")
    criteria: list[Criterion] = []
    ignored: list[str] = []
    count, offset, summary_count = DEFAULT_COUNT, 0, False
    include: list[str] = []
    sort: list[str] = []

    def skip(name: str, why: str) -> None:
        if strict:
            raise InvalidRequest(why)
        ignored.append(name)

    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name.startswith("_") and name in RESULT_PARAMS:
            if modifier:
                skip(raw_name, f"The result parameter {name} takes no modifier")
            elif name == "_count":
                count = min(_non_negative(name, value), MAX_COUNT)
            elif name == "_offset":
                offset = _non_negative(name, value)
            elif name == "_summary":
                if value == "count":
                    summary_count = True
                elif value != "false":
                    skip(raw_name, f"_summary={value} is not supported (only count, false)")
            elif name == "_include":
                why = _include_problem(resource_type, value)
                if why:
                    skip(f"{raw_name}={value}", why)
                else:
                    include.append(value)
            elif name == "_sort":
                for key in value.split(","):
                    field = key.removeprefix("-")
                    if field in {"_lastUpdated", "_id"} or (
                        field in table and table[field].kind == "date"
                    ):
                        sort.append(key)
                    else:
                        skip(
                            f"_sort={key}", f"Sorting {resource_type} by {field!r} is not supported"
                        )
            elif name == "_format" and value not in JSON_FORMATS:
                raise NotAcceptable(f"_format={value}: only JSON (application/fhir+json) is served")
            continue  # _total, _pretty: accepted, nothing to do
        param = table.get(name)
        if param is None:
            skip(raw_name, f"Unknown search parameter {raw_name!r} for {resource_type}")
            continue
        type_modifier: str | None = None
        if modifier and param.kind == "reference" and modifier[:1].isupper():
            if param.targets and modifier not in param.targets:
                skip(raw_name, f"{raw_name}: {name} does not refer to {modifier}")
                continue
            type_modifier, modifier = modifier, ""
        column = name.startswith("_")  # _id, _lastUpdated: columns, no :missing
        if modifier and (modifier not in _MODIFIERS[param.kind] or (column and modifier != "not")):
            skip(raw_name, f"Modifier :{modifier} is not supported on {name}")
            continue
        criteria.append(_criterion(param, modifier or None, value, type_modifier))

    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(criteria),
        count=count,
        offset=offset,
        summary_count=summary_count,
        include=tuple(include),
        sort=tuple(sort),
        ignored=tuple(ignored),
    )


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit():
        raise InvalidRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _include_problem(resource_type: str, value: str) -> str | None:
    """Why ``_include=value`` cannot be served, or None (search.html#include)."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] != resource_type:
        return f"_include={value} must be {resource_type}:<reference parameter>[:<type>]"
    param = SEARCH_PARAMS[resource_type].get(parts[1])
    if param is None or param.kind != "reference":
        return f"_include={value}: {parts[1]} is not a reference parameter of {resource_type}"
    if len(parts) == 3 and param.targets and parts[2] not in param.targets:
        return f"_include={value}: {parts[1]} does not refer to {parts[2]}"
    return None


def _criterion(
    param: ParamDef, modifier: str | None, value: str, type_modifier: str | None
) -> Criterion:
    if modifier == "missing":
        if value not in {"true", "false"}:
            raise InvalidRequest(f"{param.name}:missing must be true or false, not {value!r}")
        return Criterion(param.name, param.kind, (("", value),), modifier)
    raw_values = _split_escaped(value, ",")
    if any(v == "" for v in raw_values):
        raise InvalidRequest(f"{param.name}: empty value in {value!r}")
    if param.kind == "token" or (param.kind == "reference" and modifier == "identifier"):
        tokens = tuple(_token(v) for v in raw_values)
        return Criterion(param.name, param.kind, tokens, modifier)
    if param.kind == "reference":
        refs = tuple(("", _reference(param, v, type_modifier)) for v in raw_values)
        return Criterion(param.name, param.kind, refs, modifier)
    if param.kind == "date":
        values: list[tuple[str | None, str]] = []
        bounds: list[tuple[str, str]] = []
        for v in raw_values:
            prefix = v[:2] if v[:2] in _PREFIXES else "eq"
            text = v[2:] if v[:2] in _PREFIXES else v
            try:
                lower, upper = date_range(text)
            except ValueError as exc:
                raise InvalidRequest(f"{param.name}={v}: {exc}") from exc
            low, high = lower.strftime(INDEX_FORMAT), upper.strftime(INDEX_FORMAT)
            values.append(("eq" if prefix == "ap" else prefix, low))
            bounds.append((low, high))
        return Criterion(param.name, "date", tuple(values), modifier, tuple(bounds))
    if param.kind == "string":
        texts = tuple(
            ("", _unescape(v) if modifier == "exact" else fold(_unescape(v))) for v in raw_values
        )
        return Criterion(param.name, "string", texts, modifier)
    return Criterion(
        param.name, param.kind, tuple(("", _unescape(v)) for v in raw_values), modifier
    )


def _token(text: str) -> tuple[str | None, str]:
    parts = _split_escaped(text, "|")
    if len(parts) == 1:
        return None, _unescape(parts[0])
    if len(parts) == 2:
        return _unescape(parts[0]), _unescape(parts[1])
    raise InvalidRequest(f"Token {text!r} has more than one unescaped '|'")


def _reference(param: ParamDef, text: str, type_modifier: str | None) -> str:
    """``Type/id``, or a bare ``id`` when the type is open (any target)."""
    text = _unescape(text)
    if "/" in text:
        key = reference_key(text)
        if key is None:
            raise InvalidRequest(f"{param.name}={text}: not a reference to Type/id")
        if param.targets and key.split("/", 1)[0] not in param.targets:
            raise InvalidRequest(f"{param.name}={text}: {param.name} refers to {param.targets[0]}")
        return key
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", text):
        raise InvalidRequest(f"{param.name}={text}: not a resource id")
    target = type_modifier or (param.targets[0] if len(param.targets) == 1 else None)
    return f"{target}/{text}" if target else text


# --- index ----------------------------------------------------------------------------------


def _walk(node: Any, steps: list[str]) -> Iterator[Any]:
    """Values at a dot path (lists flattened; ``x[x]`` matches every ``xType`` key)."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps)
        return
    if not steps:
        yield node
        return
    if not isinstance(node, dict):
        return
    step, rest = steps[0], steps[1:]
    if step.endswith("[x]"):
        stem = step[:-3]
        for key, value in node.items():
            if key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper():
                yield from _walk(value, rest)
    elif step in node:
        yield from _walk(node[step], rest)


def _token_rows(value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) of a code, Coding, CodeableConcept or Identifier (search.html#token)."""
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or ():
                yield from _token_rows(coding)
        elif "code" in value:
            yield str(value.get("system") or ""), str(value["code"])
        elif "value" in value:
            yield str(value.get("system") or ""), str(value["value"])


def _date_rows(value: Any) -> Iterator[str]:
    """Index values of a date, dateTime, instant or Period (its start, else its end)."""
    text = value
    if isinstance(value, dict):
        text = value.get("start") or value.get("end")
    if isinstance(text, str):
        try:
            yield index_date(text)
        except ValueError:
            return


def index_entries(resource: Resource) -> list[tuple[str, str, str]]:
    """``(param, system, value)`` rows for ``fhir_search_token``: every search parameter of
    the resource's type, with dates as UTC ``YYYY-MM-DDTHH:MM:SS``, references as
    ``Type/id`` (plus ``<param>:identifier`` rows for ``Reference.identifier``), strings
    case- and accent-folded (plus ``<param>:exact`` rows as given). ``_id`` and
    ``_lastUpdated`` are columns of the resource row, not index rows."""
    table = SEARCH_PARAMS.get(str(resource.get("resourceType")), {})
    rows: list[tuple[str, str, str]] = []
    for param in table.values():
        for value in (v for path in param.paths for v in _walk(resource, path.split("."))):
            rows.extend(_param_rows(param, value))
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for param_name, system, value in rows:
        row = (param_name, system[:MAX_SYSTEM], value[:MAX_VALUE])
        if row not in seen:
            seen.add(row)
            unique.append(row)
    return unique


def _param_rows(param: ParamDef, value: Any) -> Iterable[tuple[str, str, str]]:
    if param.kind == "token":
        return ((param.name, system, code) for system, code in _token_rows(value) if code)
    if param.kind == "date":
        return ((param.name, "", d) for d in _date_rows(value))
    if param.kind == "string":
        text = value if isinstance(value, str) else None
        if not text:
            return ()
        return ((param.name, "", fold(text)), (f"{param.name}:exact", "", text))
    if param.kind == "uri":
        return ((param.name, "", value),) if isinstance(value, str) and value else ()
    if not isinstance(value, dict):
        return ()
    rows: list[tuple[str, str, str]] = []
    key = reference_key(str(value.get("reference") or ""))
    if key and (not param.targets or key.split("/", 1)[0] in param.targets):
        rows.append((param.name, "", key))
    identifier = value.get("identifier")
    ref_type = value.get("type") or (key.split("/", 1)[0] if key else None)
    if (
        isinstance(identifier, dict)
        and identifier.get("value")
        and (not param.targets or ref_type is None or ref_type in param.targets)
    ):
        rows.append(
            (
                f"{param.name}:identifier",
                str(identifier.get("system") or ""),
                str(identifier["value"]),
            )
        )
    return rows
