"""Cases ``push.transaction``, ``push.idempotent`` and ``push.outcome``: the push of a final
report as the hub and the gateway send it — the same Bundle builder
(:func:`aifi.fhir.epd_client.report_transaction`) and the same sender
(:func:`aifi.fhir.epd_client.post_bundle`: ``POST [base]``, ``application/fhir+json``).

* ``push.transaction`` — FHIR R4 http.html#transaction: the EPD answers ``200 OK`` with a
  ``transaction-response`` Bundle holding one entry per request entry, in order, each with
  ``response.status`` 201 (created) or 200 (an existing match).
* ``push.idempotent`` — http.html#ccreate: the same Bundle again (a retry after a lost
  answer) creates nothing: every entry answers 200 (one match, nothing created), and a search
  with each entry's ``ifNoneExist`` criteria (``GET [base]/[type]?identifier=…``, the search
  the conditional create itself runs) finds exactly one resource. A failure names the types
  that were duplicated. When the EPD does not let the kit search, the entries' statuses
  decide (said in the evidence).
* ``push.outcome`` — http.html#transaction ("If there is any error ... the server SHALL
  reject the entire transaction"), operationoutcome.html: a Bundle whose DiagnosticReport
  lacks ``status`` (1..1) is refused with a 4xx and an OperationOutcome (the gateway records
  the EPD's words from it). 4xx without OperationOutcome, or 5xx: warning; 2xx: failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from aifi.conformance_kit.epd.client import Exchange, Exchanges
from aifi.conformance_kit.epd.sample import SampleReport, without_status
from aifi.conformance_kit.report import Case, Report
from aifi.errors import AifiError
from aifi.fhir.epd_client import FHIR_JSON, DeliveryFailed, post_bundle
from aifi.fhir.types import Resource

TRANSACTION = "FHIR R4 http.html#transaction"
CONDITIONAL_CREATE = "FHIR R4 http.html#ccreate (If-None-Exist)"


def _status_code(entry: object) -> int | None:
    """The number of an entry's ``response.status`` (``"201 Created"`` → 201)."""
    response = entry.get("response") if isinstance(entry, dict) else None
    text = str(response.get("status") or "") if isinstance(response, dict) else ""
    head = text.split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _entry_statuses(bundle: Resource, answer: object) -> list[tuple[str, int | None]]:
    """(type, status) per request entry, from a transaction-response ``answer``."""
    entries = answer.get("entry") if isinstance(answer, dict) else None
    answered = entries if isinstance(entries, list) else []
    kinds = [str(entry["request"]["url"]) for entry in bundle["entry"]]
    return [
        (kind, _status_code(answered[n]) if n < len(answered) else None)
        for n, kind in enumerate(kinds)
    ]


def _send(
    fhir: httpx.Client, exchanges: Exchanges, base: str, bundle: Resource
) -> tuple[Exchange | None, str | None]:
    """POST ``bundle`` as the push does; (the EPD's answer, the push's failure reason)."""
    mark = exchanges.mark()
    try:
        post_bundle(fhir, base, bundle)
    except DeliveryFailed as exc:
        seen = exchanges.since(mark)
        return (seen[-1] if seen else None), exc.reason
    seen = exchanges.since(mark)
    return (seen[-1] if seen else None), None


def check_transaction(
    case: Case, fhir: httpx.Client, exchanges: Exchanges, base: str, bundle: Resource
) -> bool:
    """``push.transaction`` (module docstring); True when the report was taken."""
    seen, failure = _send(fhir, exchanges, base, bundle)
    evidence = seen.evidence() if seen is not None else {}
    if failure is not None or seen is None:
        case.failed(f"the push was refused: {failure}", **evidence)
        return False
    statuses = _entry_statuses(bundle, seen.body)
    evidence["entries"] = [f"{kind}: {status}" for kind, status in statuses]
    case.timings["answer"] = seen.seconds
    answer_type = seen.body.get("type") if isinstance(seen.body, dict) else None
    if answer_type != "transaction-response":
        what = (
            f"a {seen.resource_type} (type {answer_type})" if seen.resource_type else "no resource"
        )
        case.failed(
            f"answered {seen.status} with {what}, not a transaction-response Bundle", **evidence
        )
        return False
    entries = seen.body.get("entry") or []
    if len(entries) != len(bundle["entry"]):
        case.failed(
            f"the transaction-response has {len(entries)} entries for "
            f"{len(bundle['entry'])} requests",
            **evidence,
        )
        return False
    wrong = [f"{kind}: {status}" for kind, status in statuses if status not in (200, 201)]
    if wrong:
        case.failed(f"entries not created: {', '.join(wrong)}", **evidence)
        return False
    if seen.status != 200:
        case.warned(f"created, but answered {seen.status} instead of 200 OK", **evidence)
        return True
    case.passed(
        f"200 transaction-response, entries {', '.join(evidence['entries'])}",
        **evidence,
    )
    return True


def _has_identifier(resource: object, wanted: dict[str, Any]) -> bool:
    identifiers = resource.get("identifier") if isinstance(resource, dict) else None
    return any(
        isinstance(i, dict)
        and i.get("value") == wanted.get("value")
        and (i.get("system") or "") == (wanted.get("system") or "")
        for i in identifiers or []
    )


def count_matches(search: Callable[[str], httpx.Response], bundle: Resource) -> dict[str, Any]:
    """Per request entry ``Type?criteria``: how many resources the EPD finds with the entry's
    ``ifNoneExist`` criteria (an int), or why it could not be searched (a str). Only matches
    that carry the pushed identifier count (a server that ignores the parameter answers
    every resource of the type: search.html#errors)."""
    found: dict[str, Any] = {}
    for entry in bundle["entry"]:
        request = entry["request"]
        key = f"{request['url']}?{request['ifNoneExist']}"
        response = search(key)
        body = response.json() if response.status_code == 200 else None
        if not isinstance(body, dict) or body.get("type") != "searchset":
            found[key] = f"search answered {response.status_code}"
            continue
        wanted = entry["resource"]["identifier"][0]
        found[key] = sum(
            1
            for e in body.get("entry") or []
            if isinstance(e, dict)
            and (e.get("resource") or {}).get("resourceType") == request["url"]
            and _has_identifier(e.get("resource"), wanted)
        )
    return found


def check_idempotent(
    case: Case,
    fhir: httpx.Client,
    exchanges: Exchanges,
    base: str,
    bundle: Resource,
    search: Callable[[str], httpx.Response],
) -> None:
    """``push.idempotent`` (module docstring): ``bundle`` was pushed once already."""
    seen, failure = _send(fhir, exchanges, base, bundle)
    evidence = seen.evidence() if seen is not None else {}
    if failure is not None or seen is None:
        case.failed(f"the second push was refused: {failure}", **evidence)
        return
    statuses = _entry_statuses(bundle, seen.body)
    evidence["entries"] = [f"{kind}: {status}" for kind, status in statuses]
    created = sorted({kind for kind, status in statuses if status == 201})
    try:
        counts = count_matches(search, bundle)
    except (httpx.HTTPError, ValueError, AifiError) as exc:  # incl. a refused token
        counts = {"search": f"not possible: {type(exc).__name__}: {exc}"}
    evidence["found_by_identifier"] = counts
    duplicated = sorted(
        {key.split("?", 1)[0] for key, n in counts.items() if isinstance(n, int) and n > 1}
    )
    if created or duplicated:
        why = []
        if created:
            why.append(f"entries answered 201 Created ({', '.join(created)})")
        if duplicated:
            why.append(f"a search by identifier finds more than one ({', '.join(duplicated)})")
        names = ", ".join(sorted({*created, *duplicated}))
        case.failed(
            f"the second push of the same report duplicated {names}: {'; '.join(why)}",
            **evidence,
        )
        return
    other = [f"{kind}: {status}" for kind, status in statuses if status != 200]
    if other:
        case.failed(f"entries should answer 200 (nothing created): {', '.join(other)}", **evidence)
        return
    searched = all(isinstance(n, int) and n == 1 for n in counts.values())
    how = (
        "a search by identifier finds exactly one of each"
        if searched
        else "a search by identifier did not show them (see evidence), so the entries' "
        "statuses decide"
    )
    case.passed(f"every entry answered 200 (nothing created); {how}", **evidence)


def check_outcome(
    case: Case, fhir: httpx.Client, exchanges: Exchanges, base: str, bundle: Resource
) -> None:
    """``push.outcome`` (module docstring) with ``bundle`` (already broken)."""
    seen, failure = _send(fhir, exchanges, base, bundle)
    if seen is None:
        case.failed(f"no answer to an invalid transaction: {failure}")
        return
    evidence = seen.evidence()
    outcome = seen.resource_type == "OperationOutcome"
    if seen.status < 300:
        case.failed(
            f"a DiagnosticReport without status was accepted ({seen.status}); the EPD must "
            "refuse the whole transaction",
            **evidence,
        )
    elif seen.status < 500 and outcome:
        case.passed(f"refused with {seen.status} and an OperationOutcome", **evidence)
    elif seen.status < 500:
        case.warned(
            f"refused with {seen.status}, but without an OperationOutcome (the gateway "
            "cannot say why)",
            **evidence,
        )
    else:
        case.warned(f"refused, but with a server error {seen.status} instead of a 4xx", **evidence)


def push_cases(
    report: Report,
    fhir: httpx.Client,
    exchanges: Exchanges,
    base: str,
    sample: SampleReport,
    invalid: SampleReport,
    search: Callable[[str], httpx.Response],
) -> None:
    """The cases ``push.transaction``, ``push.idempotent`` and ``push.outcome``; ``search``
    answers ``GET [base]/<Type?criteria>``."""
    bundle = sample.bundle()
    first = report.case(
        "push.transaction",
        "A final report is pushed as a transaction of conditional creates",
        [TRANSACTION, CONDITIONAL_CREATE],
    )
    taken = False
    with first.timed():
        taken = check_transaction(first, fhir, exchanges, base, bundle)
    again = report.case(
        "push.idempotent",
        "The same report pushed twice is created once",
        [CONDITIONAL_CREATE, TRANSACTION],
    )
    if taken:
        with again.timed():
            check_idempotent(again, fhir, exchanges, base, bundle, search)
    else:
        again.skipped("the first push did not go through (see push.transaction)")
    refused = report.case(
        "push.outcome",
        "An invalid report is refused with a 4xx and an OperationOutcome",
        [TRANSACTION, "FHIR R4 operationoutcome.html", "FHIR R4 diagnosticreport.html"],
    )
    with refused.timed():
        check_outcome(refused, fhir, exchanges, base, without_status(invalid.bundle()))


def searcher(client: httpx.Client, base: str) -> Callable[[str], httpx.Response]:
    """``GET [base]/<Type?criteria>`` with ``client``."""

    def search(query: str) -> httpx.Response:
        return client.get(f"{base}/{query}", headers={"Accept": FHIR_JSON})

    return search


__all__ = [
    "check_idempotent",
    "check_outcome",
    "check_transaction",
    "count_matches",
    "push_cases",
    "searcher",
]
