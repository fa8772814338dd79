"""The verdicts: each function sets one :class:`~aifi.conformance_kit.report.Case` from what
the kit observed (:mod:`~aifi.conformance_kit.performer.observe`) and cites the rule.

IHE RAD TF AIW-I transactions: RAD-81 Query UPS Workitems, RAD-82 Claim UPS Workitem,
RAD-84 Update UPS Workitem (progress), RAD-85 Complete UPS Workitem; the UPS-RS requests of
PS3.18 chapter 11 and the UPS rules of PS3.4 Annex CC.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom import Dataset

from aifi.conformance_kit.performer.driver import output_uids
from aifi.conformance_kit.performer.observe import Observed
from aifi.conformance_kit.performer.record import (
    asked_codes,
    claims,
    mentions,
    progress_updates,
    retrievals,
    workitem_of,
)
from aifi.conformance_kit.performer.recorder import Exchange
from aifi.conformance_kit.report import Case
from aifi.ihe_profiles.air.codes import ABSENT
from aifi.ihe_profiles.air.validation import (
    RULE_PATIENT,
    RULE_REFERENCES,
    RULE_STUDY,
    InputContext,
    Violation,
    validate,
)

CONTEXT_RULES = (RULE_STUDY, RULE_PATIENT, RULE_REFERENCES)
WORKLIST_UIDS = ("1.2.840.10008.5.1.4.34.5", "1.2.840.10008.5.1.4.34.5.1")
"""The Global and Filtered Worklist well-known UIDs (PS3.4 CC.3.1): subscriptions, not
workitems."""


def _not_final(case: Case, observed: Observed, timeout: float) -> bool:
    if observed.final is None:
        case.failed(
            f"workitem {observed.uid} was not COMPLETED or CANCELED within {timeout:.0f} s "
            f"(the {observed.scheduled.study.recipe.label})",
            workitem=observed.uid,
        )
        return True
    return False


# -- claiming -------------------------------------------------------------------------------


def claim_transaction_uid(case: Case, everything: list[Exchange], main: Observed) -> None:
    without = [c for c in claims(everything) if not c.transaction_uid]
    if without:
        case.failed(
            f"{len(without)} claim(s) without a Transaction UID (0008,1195): a claim must "
            "carry the new Transaction UID that every later change of the workitem repeats",
            claims=[c.exchange.evidence() for c in without[:5]],
        )
    elif main.claim is None:
        case.failed(f"workitem {main.uid} was never claimed", workitem=main.uid)
    else:
        case.passed(
            "claimed with a Transaction UID (0008,1195)",
            claims=[c.exchange.evidence() for c in claims(everything)[:5]],
        )


def claim_own_product(
    case: Case, everything: list[Exchange], product: str, own: set[str], others: set[str]
) -> None:
    foreign_searches = [e for e in everything if any(code != product for code in asked_codes(e))]
    touched = [
        e
        for e in everything
        if (uid := workitem_of(e)) is not None and uid not in own and uid not in WORKLIST_UIDS
    ]
    if foreign_searches or touched:
        named = {uid for e in touched if (uid := workitem_of(e))}
        case.failed(
            f"asked for another product's work: {len(foreign_searches)} search(es) for other "
            f"product codes, {len(touched)} request(s) on {len(named)} workitem(s) not "
            f"scheduled for {product}"
            + (f" ({len(named & others)} of them another product's)" if named & others else ""),
            searches=[e.evidence() for e in foreign_searches[:5]],
            requests=[e.evidence() for e in touched[:5]],
        )
    else:
        case.passed(f"asked only for {product}'s workitems")


# -- the work on one workitem ---------------------------------------------------------------


def retrieve_inputs(case: Case, observed: Observed) -> None:
    study = observed.scheduled.study.study_uid
    reads = [e for e in retrievals(observed.exchanges, study) if e.status == 200]
    wanted = observed.scheduled.inputs
    series_of = {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in observed.inputs()}
    covered: set[str] = set()
    for read in reads:
        tail = read.path.split(f"/studies/{study}", 1)[1].strip("/").split("/")
        if tail == [""]:
            covered |= wanted
        elif len(tail) >= 2 and tail[0] == "series":
            in_series = {uid for uid, series in series_of.items() if series == tail[1]}
            if len(tail) >= 4 and tail[2] == "instances":
                in_series &= {tail[3]}
            covered |= in_series & wanted
    missing = wanted - covered
    if not reads:
        case.failed("retrieved none of the inputs (WADO-RS)", workitem=observed.uid)
    elif missing:
        case.failed(
            f"retrieved {len(wanted) - len(missing)} of {len(wanted)} input instances",
            missing=sorted(missing)[:10],
            requests=[e.evidence() for e in reads[:5]],
        )
    else:
        case.passed(
            f"retrieved all {len(wanted)} input instance(s) in {len(reads)} request(s)",
            requests=[e.evidence() for e in reads[:5]],
        )


def _refusal_evidence(observed: Observed) -> list[dict[str, object]]:
    return [e.evidence() for e in observed.refusals[:5]]


def _violations(observed: Observed) -> Iterator[tuple[Dataset, list[Violation]]]:
    context = InputContext.from_datasets(observed.inputs())
    for ds in observed.results:
        yield ds, validate(ds, context)


def results_air(case: Case, observed: Observed) -> None:
    if not observed.results:
        case.failed(
            "stored no results (an AI product answers every workitem with at least one IHE "
            "AIR result object)",
            state=observed.state,
            reason=observed.reason,
        )
        return
    broken = []
    for ds, violations in _violations(observed):
        for violation in violations:
            if violation.rule not in CONTEXT_RULES:
                broken.append(
                    {
                        "sop": str(ds.SOPInstanceUID),
                        "rule": violation.rule,
                        "message": violation.message,
                    }
                )
    verified = dciodvfy(observed.results)
    errors = [item for item in verified if item.get("errors")]
    evidence = {"results": len(observed.results), "dciodvfy": verified or "not installed"}
    if observed.refusals:
        evidence["refused by the hub"] = _refusal_evidence(observed)
    if broken or errors:
        rules = sorted({str(item["rule"]) for item in broken})
        case.failed(
            f"{len(broken)} IHE AIR violation(s)"
            + (f" ({'; '.join(rules)})" if rules else "")
            + (f", dciodvfy errors in {len(errors)} object(s)" if errors else ""),
            violations=broken[:20],
            **evidence,
        )
    else:
        case.passed(f"all {len(observed.results)} result(s) pass IHE AIR validation", **evidence)


def results_study(case: Case, observed: Observed) -> None:
    if not observed.results:
        case.skipped("no results to check", workitem=observed.uid)
        return
    broken = []
    for ds, violations in _violations(observed):
        for violation in violations:
            if violation.rule in CONTEXT_RULES:
                broken.append(
                    {
                        "sop": str(ds.SOPInstanceUID),
                        "rule": violation.rule,
                        "message": violation.message,
                    }
                )
    unreferenced = [str(ds.SOPInstanceUID) for ds in observed.results if not set(_references(ds))]
    if len(unreferenced) == len(observed.results):
        broken.append(
            {
                "sop": ", ".join(unreferenced),
                "rule": RULE_REFERENCES,
                "message": "no result references any of the workitem's inputs",
            }
        )
    if broken:
        rules = sorted({str(item["rule"]) for item in broken})
        case.failed(
            f"{len(broken)} result(s) outside the workitem's study or inputs ({'; '.join(rules)})",
            violations=broken[:20],
            study=observed.scheduled.study.study_uid,
        )
    else:
        case.passed(
            "every result is in the workitem's study and references only its inputs"
            + (f" ({len(unreferenced)} reference nothing: a summary page)" if unreferenced else ""),
            unreferenced=unreferenced,
        )


def _references(ds: Dataset) -> Iterator[str]:
    for element in ds.iterall():
        if element.keyword == "ReferencedSOPInstanceUID":
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(value) for value in values)


def complete_outputs(case: Case, observed: Observed, timeout: float) -> None:
    if _not_final(case, observed, timeout):
        return
    if observed.state != "COMPLETED":
        case.failed(
            f"the workitem ended {observed.state}: {observed.reason or 'no reason given'}",
            workitem=observed.uid,
        )
        return
    assert observed.final is not None
    named = output_uids(observed.final)
    stored = observed.accepted
    if not named:
        case.failed(
            "COMPLETED with an empty Output Information Sequence (0040,4033)"
            + (
                f" although it stored {len(stored)} result(s)"
                if stored
                else " and no results stored"
            ),
            stored=sorted(stored)[:10],
        )
    elif named != stored:
        case.failed(
            "the Output Information Sequence does not name what it stored",
            named_not_stored=sorted(named - stored)[:10],
            stored_not_named=sorted(stored - named)[:10],
        )
    else:
        case.passed(f"COMPLETED naming its {len(named)} stored result(s)")


def progress(case: Case, observed: Observed) -> None:
    updates = [e for e in progress_updates(observed.exchanges, observed.uid) if e.status == 200]
    if updates:
        case.passed(
            f"{len(updates)} progress update(s)", requests=[e.evidence() for e in updates[:3]]
        )
    else:
        case.failed(
            "no Update Workitem with UPS Progress Information Sequence (0074,1002) while working",
            workitem=observed.uid,
        )


def timing(case: Case, observed: Observed, norm_seconds: float) -> None:
    figures = observed.timings()
    case.timings = {**figures, "norm": norm_seconds}
    turnaround = figures.get("claim_latency", 0.0) + figures.get("processing", 0.0)
    if "processing" not in figures:
        case.failed("no claim and completion to time", workitem=observed.uid)
    elif turnaround > norm_seconds:
        case.warned(
            f"claim latency {figures['claim_latency']:.1f} s + processing "
            f"{figures['processing']:.1f} s exceed the product's norm time {norm_seconds:.0f} s"
        )
    else:
        case.passed(
            f"claim latency {figures['claim_latency']:.2f} s, processing "
            f"{figures['processing']:.2f} s (norm {norm_seconds:.0f} s)"
        )


def negative_explicit(case: Case, observed: Observed, timeout: float) -> None:
    if _not_final(case, observed, timeout):
        return
    srs = [
        ds
        for ds in observed.results
        if str(ds.SOPClassUID).startswith("1.2.840.10008.5.1.4.1.1.88")
    ]
    absent = [ds for ds in srs if any(_is_absent(item) for item in ds.iterall())]
    if absent:
        case.passed(
            f"a structured report says the finding is absent ({ABSENT.meaning}, "
            f"{ABSENT.scheme_designator} {ABSENT.value})"
        )
    elif srs:
        case.warned(
            "a structured report, but no explicit 'Absent' statement was found in it "
            "(a measurement only?)",
            results=len(observed.results),
        )
    else:
        case.failed(
            "no structured report for a normal study: silence is not a negative result",
            state=observed.state,
            results=len(observed.results),
        )


def _is_absent(element: object) -> bool:
    keyword = getattr(element, "keyword", "")
    if keyword != "ConceptCodeSequence":
        return False
    for item in getattr(element, "value", []) or []:
        if str(item.get("CodeValue", "")) == ABSENT.value:
            return True
    return False


def never_touched(
    case: Case,
    everything: list[Exchange],
    studies: Iterable[tuple[str, frozenset[str]]],
    scheduled_for_product: list[str],
) -> None:
    uids = set()
    for study_uid, sops in studies:
        uids.add(study_uid)
        uids |= sops
    touched = [e for e in everything if mentions(e, uids)]
    if scheduled_for_product:
        case.failed(
            "the kit's hub scheduled the product for a study its rules should not send it "
            "(check the routing rules)",
            workitems=scheduled_for_product,
        )
    elif touched:
        case.failed(
            f"{len(touched)} request(s) for studies that were never the product's work",
            requests=[e.evidence() for e in touched[:5]],
        )
    else:
        case.passed("never asked for the studies that were not its work")


def dciodvfy(results: list[Dataset]) -> list[dict[str, object]]:
    """dicom3tools' ``dciodvfy`` on each result when installed ([] otherwise): its Error
    lines per object."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return []
    out: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        for n, ds in enumerate(results):
            path = Path(folder) / f"{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            run = subprocess.run(
                [tool, str(path)], capture_output=True, text=True, timeout=60, check=False
            )
            lines = (run.stdout + run.stderr).splitlines()
            out.append(
                {
                    "sop": str(ds.SOPInstanceUID),
                    "errors": [line for line in lines if line.startswith("Error")][:10],
                }
            )
    return out
