"""The PACS kit's cases, the same for DICOMweb and DIMSE: each takes the report, the generated
:class:`~aifi.conformance_kit.pacs.objects.KitStudy` and the services to use, and adds its
cases.

=====================  =======================================================================
``store.study``        the generated images are stored first (the results belong to them)
``store.<kind>``       each result (``sr``, ``seg``, ``gsps``, ``sc``, ``ko``) is stored with
                       the hub's own delivery client, as the hub will (one request, a release)
``find.study``         the study is found; its key attributes as sent
``find.<kind>``        each stored result is found at series and instance level, exactly once;
                       attributes the PACS changed are named (UIDs: fail, others: warn)
``retrieve.<kind>``    each stored result comes back byte-identical over WADO-RS; over DIMSE
                       ``retrieve.get.<kind>`` and ``retrieve.move.<kind>`` (optional and
                       skipped where the PACS does not offer C-GET / C-MOVE)
                       (:func:`~aifi.conformance_kit.pacs.compare.compare_retrieved`)
``store.resend``       the SR sent again is accepted (or accepted with a warning) and is
                       still found exactly once (the hub resends after a lost answer)
=====================  =======================================================================

Clean-up cases live in :mod:`~aifi.conformance_kit.pacs.cleanup`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom import Dataset

from aifi.conformance_kit.pacs.compare import Fidelity, check_attributes, compare_retrieved
from aifi.conformance_kit.pacs.objects import RESULT_CITES, RESULT_KINDS, KitStudy, SentObject
from aifi.conformance_kit.pacs.services import (
    INSTANCE_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    Finder,
    Retriever,
    Uids,
)
from aifi.conformance_kit.report import Case, Report
from aifi.errors import UpstreamError
from aifi.hub.delivery.dicomweb_client import PacsClient, SendOutcome

IHE_AIR = "IHE RAD TF Suppl. AI Results (AIR)"
POLL_INTERVAL = 0.2
UID_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"})
"""Attributes a PACS must never change: a change is a failure, not a warning."""


def _outcome(outcome: SendOutcome) -> dict[str, Any]:
    """Evidence of one store: delivered or not, a warning, the status, the PACS's reason."""
    status = re.search(r"status (0x[0-9A-F]{4})|(0x[0-9A-F]{4}) \(|HTTP (\d{3})", outcome.reason)
    code = next((group for group in status.groups() if group), None) if status else None
    return {
        "sop_instance_uid": outcome.sop_instance_uid,
        "delivered": outcome.delivered,
        "retryable": outcome.retryable,
        "warning": outcome.delivered and "with warning" in outcome.reason,
        "status": code,
        "reason": outcome.reason,
    }


def _judge_store(case: Case, outcome: SendOutcome) -> None:
    evidence = _outcome(outcome)
    if evidence["warning"]:
        case.warned(f"stored with a warning: {outcome.reason}", **evidence)
    elif outcome.delivered:
        case.passed(outcome.reason, **evidence)
    elif outcome.retryable:
        case.failed(f"not stored (the PACS may take it later): {outcome.reason}", **evidence)
    else:
        case.failed(f"not stored: {outcome.reason}", **evidence)


def store_study(report: Report, pacs: PacsClient, study: KitStudy, cites: list[str]) -> None:
    case = report.case(
        "store.study", "The generated study is stored first", cites=cites, required=True
    )
    with case.timed():
        outcomes = pacs.send([image.outgoing for image in study.images])
        missing = [o for o in outcomes if not o.delivered]
        for outcome in outcomes:
            case.note(**_outcome(outcome))
        if missing:
            case.failed(f"{len(missing)} of {len(outcomes)} images not stored: {missing[0].reason}")
        else:
            case.passed(
                f"{len(outcomes)} images of study {study.study_uid} stored"
                f" (patient {study.patient_id})"
            )


def store_results(report: Report, pacs: PacsClient, study: KitStudy, cites: list[str]) -> set[str]:
    """One ``store.<kind>`` case per result, all sent in one request as the hub releases
    them; the kinds the PACS took."""
    cases = {
        kind: report.case(
            f"store.{kind}", f"The {label} is stored", cites=[*cites, RESULT_CITES[kind], IHE_AIR]
        )
        for kind, label in RESULT_KINDS.items()
    }
    objects = list(study.results.values())
    started = time.perf_counter()
    try:
        outcomes = pacs.send([obj.outgoing for obj in objects])
    except Exception as exc:
        for case in cases.values():
            case.failed(f"the delivery client failed: {type(exc).__name__}: {exc}")
        return set()
    seconds = round(time.perf_counter() - started, 3)
    for obj, outcome in zip(objects, outcomes, strict=True):
        case = cases[obj.kind]
        case.seconds = seconds
        _judge_store(case, outcome)
    return {kind for kind, case in cases.items() if case.ok}


def _poll(search: Callable[[], list[Dataset]], wait_seconds: float) -> list[Dataset]:
    """Search until something is found or ``wait_seconds`` have passed (a PACS may index
    what it stored a moment later)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = search()
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(POLL_INTERVAL)


def _judge_found(case: Case, sent: Dataset, found: Sequence[tuple[Dataset, Sequence[str]]]) -> None:
    """Compare the key attributes of what the searches found (each match with the keys
    asked for at its level) with those sent."""
    changed: dict[str, dict[str, str]] = {}
    not_returned: list[str] = []
    same: list[str] = []
    for match, keys in found:
        check = check_attributes(sent, match, keys)
        changed.update(check.changed)
        not_returned += [k for k in check.not_returned if k not in not_returned]
        same += [k for k in check.matched if k not in same]
    evidence = {"same": same, "changed": changed, "not_returned": not_returned}
    unreturned = f"; not returned: {', '.join(not_returned)}" if not_returned else ""
    described = ", ".join(
        f"{k} (sent {v['sent']!r}, found {v['found']!r})" for k, v in changed.items()
    )
    if any(k in UID_KEYS for k in changed):
        case.failed(f"the PACS changed identifying UIDs: {described}", **evidence)
    elif changed:
        case.warned(f"found, but the PACS changed {described}{unreturned}", **evidence)
    else:
        case.passed(f"found with the attributes sent{unreturned}", **evidence)


def find_study(report: Report, finder: Finder, study: KitStudy, wait_seconds: float) -> None:
    case = report.case(
        "find.study", f"The study is found ({finder.name})", cites=finder.cites, required=True
    )
    with case.timed():
        try:
            found = _poll(lambda: finder.find(Uids(study.study_uid), STUDY_KEYS), wait_seconds)
        except UpstreamError as exc:
            case.failed(str(exc))
            return
        if len(found) != 1:
            case.failed(f"{finder.name} found {len(found)} studies with UID {study.study_uid}")
            return
        _judge_found(case, study.images[0].dataset, [(found[0], STUDY_KEYS)])


def _find_one(
    finder: Finder, obj: SentObject, wait_seconds: float
) -> tuple[str, list[tuple[Dataset, Sequence[str]]]]:
    """Series and instance level searches for ``obj``; an error message, or "" and the
    match of each level with the keys asked for there."""
    series = _poll(
        lambda: finder.find(Uids(obj.study_uid, obj.series_uid), SERIES_KEYS), wait_seconds
    )
    if len(series) != 1:
        return f"{finder.name} found {len(series)} series with UID {obj.series_uid}", []
    uids = Uids(obj.study_uid, obj.series_uid, obj.sop_uid)
    instances = _poll(lambda: finder.find(uids, INSTANCE_KEYS), wait_seconds)
    if len(instances) != 1:
        return f"{finder.name} found {len(instances)} instances with UID {obj.sop_uid}", []
    return "", [(series[0], SERIES_KEYS), (instances[0], INSTANCE_KEYS)]


def find_results(
    report: Report, finder: Finder, study: KitStudy, stored: set[str], wait_seconds: float
) -> None:
    for kind, label in RESULT_KINDS.items():
        case = report.case(
            f"find.{kind}",
            f"The {label} is found back ({finder.name})",
            cites=finder.cites,
        )
        if kind not in stored:
            case.skipped(f"not stored (see store.{kind})")
            continue
        obj = study.results[kind]
        with case.timed():
            try:
                error, found = _find_one(finder, obj, wait_seconds)
            except UpstreamError as exc:
                case.failed(str(exc))
                continue
            if error:
                case.failed(error)
            else:
                _judge_found(case, obj.dataset, found)


def _judge_retrieved(case: Case, retriever: Retriever, obj: SentObject) -> None:
    try:
        got = retriever.retrieve(Uids(obj.study_uid, obj.series_uid, obj.sop_uid))
    except UpstreamError as exc:
        case.failed(str(exc))
        return
    comparison = compare_retrieved(obj.data, obj.dataset, got)
    if comparison.fidelity in (Fidelity.IDENTICAL, Fidelity.SAME_DATA_SET):
        case.passed(comparison.message, **comparison.evidence)
    elif comparison.fidelity is Fidelity.CHANGED:
        case.warned(comparison.message, **comparison.evidence)
    else:
        case.failed(comparison.message, **comparison.evidence)


def retrieve_results(
    report: Report, retriever: Retriever, study: KitStudy, stored: set[str], *, prefix: str
) -> None:
    """``{prefix}.<kind>`` per result. Where the PACS does not offer the service (a refused
    association or context) every case is optional and skipped with the reason; where it
    does, each must pass."""
    try:
        reason = retriever.open()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    try:
        for kind, label in RESULT_KINDS.items():
            case = report.case(
                f"{prefix}.{kind}",
                f"The {label} comes back byte-identical ({retriever.name})",
                cites=[*retriever.cites, "DICOM PS3.10 §7.1"],
                required=reason is None,
            )
            if reason is not None:
                case.skipped(f"not tested over {retriever.name}: {reason}")
            elif kind not in stored:
                case.skipped(f"not stored (see store.{kind})")
            else:
                with case.timed():
                    _judge_retrieved(case, retriever, study.results[kind])
    finally:
        retriever.close()


def resend(
    report: Report,
    pacs: PacsClient,
    finder: Finder,
    study: KitStudy,
    stored: set[str],
    cites: list[str],
) -> None:
    """``store.resend``: the SR again; accepted (or with a warning), and found once."""
    case = report.case(
        "store.resend",
        "Sending a result again is harmless (the hub resends after a lost answer)",
        cites=cites,
    )
    if "sr" not in stored:
        case.skipped("the SR was not stored (see store.sr)")
        return
    obj = study.results["sr"]
    with case.timed():
        [outcome] = pacs.send([obj.outgoing])
        evidence = _outcome(outcome)
        if not outcome.delivered:
            case.failed(f"the second store was refused: {outcome.reason}", **evidence)
            return
        try:
            found = finder.find(Uids(obj.study_uid, obj.series_uid, obj.sop_uid), INSTANCE_KEYS)
        except UpstreamError as exc:
            case.failed(f"stored again, but the search failed: {exc}", **evidence)
            return
        evidence["instances_found"] = len(found)
        if len(found) != 1:
            case.failed(
                f"after the second store {finder.name} finds {len(found)} instances with SOP"
                f" Instance UID {obj.sop_uid}, not exactly one",
                **evidence,
            )
        elif evidence["warning"]:
            case.warned(f"stored again with a warning, found once: {outcome.reason}", **evidence)
        else:
            case.passed(f"stored again and found once: {outcome.reason}", **evidence)
