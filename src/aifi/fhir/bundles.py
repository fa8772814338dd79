"""Search results as a FHIR R4 Bundle of type ``searchset`` (bundle.html, search.html#return):
``total``, the ``self``/``first``/``previous``/``next`` links with our own ``_offset``
paging parameter, entries with ``search.mode`` match/include, and an OperationOutcome
entry (``search.mode`` outcome) for the parameters a lenient search ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from urllib.parse import urlencode

from aifi.fhir.search import RESULT_PARAMS
from aifi.fhir.types import Resource, SearchQuery, SearchResult, StoredResource


def outcome(
    code: str, diagnostics: str, *, severity: str = "error", expression: Sequence[str] = ()
) -> Resource:
    """An OperationOutcome with one issue (operationoutcome.html); ``expression`` names the
    element(s) at fault (FHIRPath)."""
    issue: Resource = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _kept_params(query: SearchQuery, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The parameters the search used, as they go into the ``self`` link (search.html#self):
    criteria as given minus ignored ones, then the result parameters that took effect."""
    ignored = set(query.ignored)
    kept = [
        (name, value)
        for name, value in params
        if name.split(":", 1)[0] not in RESULT_PARAMS
        and name not in ignored
        and f"{name}={value}" not in ignored
    ]
    kept.extend(("_include", value) for value in query.include)
    if query.sort:
        kept.append(("_sort", ",".join(query.sort)))
    if query.summary_count:
        kept.append(("_summary", "count"))
    return kept


def _page_url(base: str, query: SearchQuery, kept: list[tuple[str, str]], offset: int) -> str:
    pairs = [*kept, ("_count", str(query.count)), ("_offset", str(offset))]
    return f"{base}/{query.resource_type}?{urlencode(pairs)}"


def entry(base: str, stored: StoredResource, mode: str) -> Resource:
    return {
        "fullUrl": f"{base}/{stored.resource_type}/{stored.resource_id}",
        "resource": stored.content,
        "search": {"mode": mode},
    }


def searchset(
    base: str, query: SearchQuery, params: list[tuple[str, str]], result: SearchResult
) -> Resource:
    """The Bundle answering a search (``base`` is the public FHIR base URL)."""
    kept = _kept_params(query, params)
    links = [
        {"relation": "self", "url": _page_url(base, query, kept, query.offset)},
        {"relation": "first", "url": _page_url(base, query, kept, 0)},
    ]
    if not query.summary_count and query.count > 0:
        if query.offset > 0:
            previous = max(query.offset - query.count, 0)
            links.append({"relation": "previous", "url": _page_url(base, query, kept, previous)})
        if query.offset + query.count < result.total:
            nxt = query.offset + query.count
            links.append({"relation": "next", "url": _page_url(base, query, kept, nxt)})
    entries = [entry(base, s, "match") for s in result.matches]
    entries.extend(entry(base, s, "include") for s in result.included)
    if query.ignored:
        report = outcome(
            "not-supported",
            "Ignored search parameters: " + ", ".join(query.ignored),
            severity="warning",
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": report,
                "search": {"mode": "outcome"},
            }
        )
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "type": "searchset",
        "total": result.total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


__all__ = ["entry", "outcome", "searchset"]
