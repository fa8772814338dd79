"""Deliberately broken IHE AIW-I Task Performers: the reference product of a code, each
with exactly ONE flaw, for the tests of the conformance kit (issue 18). Test support only.

Run from the repository root::

    python -m tests.support.broken_performer FLAW --hub DICOMWEB --credentials FILE \\
        [--product CODE] [--ae AE] [--poll S] [--no-events] [--hold S] [--other CODE]

It works the worklist until SIGTERM (or Ctrl-C) like ``aifi vendors run``: Triggered Pull
on the event channel (PS3.18 §11.13), or polling every ``--poll`` seconds. Each flaw is a
small override of :class:`aifi.vendors.performer.Performer` or a wrapper of the product's
analyzer; everything else is the real performer. What the hub does with each (so what the
kit sees):

``no-algorithm-id``
    The results lack the IHE AIR algorithm identification (the Contributing Equipment
    Sequence (0018,A001) item with Purpose of Reference (109102, DCM)). The hub's result gate
    refuses each (STOW-RS 409, Failure Reason A900, rule "IHE AIR: algorithm identification",
    a ResultProblem row for the workitem); the performer then discontinues: CANCELED with
    the STOW refusal as Reason For Cancellation (0074,1238), an AI result "failed" with it.
``wrong-study``
    The results carry a new Study Instance UID (and new series). The gate refuses them: a
    performer may store only into a study with one of its workitems IN PROGRESS (STOW-RS
    409, Failure Reason 0124 "not authorized"); the workitem ends CANCELED as above.
``no-outputs``
    Analyses, stores nothing and completes with an empty Output Information Sequence
    (0040,4033). The hub accepts (COMPLETED) and records the AI result as "failed", reason
    "no result objects" (IHE AIW-I: silence is not a negative).
``ignores-cancel``
    Never looks for a cancellation (no checkpoint, no per-workitem channel): after a Cancel
    Request (PS3.18 §11.8, answered 202 while IN PROGRESS; the hub only sends the UPS
    Cancel Requested event, PS3.4 CC.2.2.3) it stores its results and completes; the hub
    accepts the completion (Table CC.1.1-2: COMPLETE from IN PROGRESS), so the workitem
    ends COMPLETED. ``--hold`` makes the analysis take long enough to ask in between.
``no-transaction-uid``
    Claims (RAD-82, ``PUT …/workitems/{uid}/state`` IN PROGRESS) without a Transaction UID
    (0008,1195); the hub answers 400 (C301 "The Transaction UID is missing.") and the
    workitem stays SCHEDULED. It retries at every search, never succeeding.
``other-product``
    Configured with another product's code (``--other``, default the first other
    reference product): it searches for that code, and claims every workitem an unfiltered
    search (``ProcedureStepState=SCHEDULED`` only) shows. The hub hides other products'
    workitems from a performer (an empty search, 404 for their UIDs), so the foreign work
    stays SCHEDULED; what it gets is its own product's, done as usual. The trace is the
    requests themselves (the searches' query, in the hub's audit trail).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from aifi.dicom_json import DicomJson, first
from aifi.ihe_profiles.air.codes import PROCESSING_EQUIPMENT
from aifi.oauth_client import Credentials
from aifi.vendors.performer import Analyzer, Claimed, Performer, excerpt, performer_auth
from aifi.vendors.products import PRODUCTS, ReferenceProduct
from aifi.vendors.workitem import (
    PROCEDURE_STEP_STATE,
    SOP_INSTANCE_UID,
    claim_order,
    element,
)

log = logging.getLogger("tests.support.broken_performer")

DEFAULT_PRODUCT = "AIFI-BONEAGE"
DEFAULT_AE = "AIFI-BROKEN"
DICOM_JSON = "application/dicom+json"


def product_for(code: str) -> ReferenceProduct:
    """The reference product whose product code is ``code``; KeyError naming the known."""
    for product in PRODUCTS.values():
        if product.code == code:
            return product
    known = ", ".join(p.code for p in PRODUCTS.values())
    raise KeyError(f"no reference product with code {code!r}; known: {known}")


def other_code(code: str) -> str:
    """The first reference product code that is not ``code``."""
    return next(p.code for p in PRODUCTS.values() if p.code != code)


# -- analyzer wrappers ----------------------------------------------------------------------


@dataclass
class Holding:
    """The product's analysis takes ``seconds`` (ended early by ``stop``, i.e. SIGTERM)."""

    inner: Analyzer
    seconds: float
    stop: threading.Event

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        self.stop.wait(self.seconds)
        return self.inner.analyze(workitem, inputs)


def _processing(item: Dataset) -> bool:
    """A Contributing Equipment item of purpose (109102, DCM) "Processing Equipment"."""
    return any(
        code.get("CodeValue") == PROCESSING_EQUIPMENT.value
        and code.get("CodingSchemeDesignator") == PROCESSING_EQUIPMENT.scheme_designator
        for code in item.get("PurposeOfReferenceCodeSequence", [])
    )


@dataclass
class WithoutAlgorithmId:
    """Flaw ``no-algorithm-id``: drop the IHE AIR algorithm identification from every
    result (the Contributing Equipment item of purpose 109102; the sequence when empty)."""

    inner: Analyzer

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        results = self.inner.analyze(workitem, inputs)
        for ds in results:
            kept = [i for i in ds.get("ContributingEquipmentSequence", []) if not _processing(i)]
            if kept:
                ds.ContributingEquipmentSequence = DicomSequence(kept)
            elif "ContributingEquipmentSequence" in ds:
                del ds.ContributingEquipmentSequence
        log.warning("results without algorithm identification (flaw no-algorithm-id)")
        return results


@dataclass
class IntoAnotherStudy:
    """Flaw ``wrong-study``: the results get a new Study Instance UID (and new Series
    Instance UIDs, a series belonging to one study)."""

    inner: Analyzer

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        results = self.inner.analyze(workitem, inputs)
        study = str(generate_uid())
        series: dict[str, str] = {}
        for ds in results:
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        log.warning("results stored into study %s (flaw wrong-study)", study)
        return results


@dataclass
class Discarding:
    """Flaw ``no-outputs``: analyses, then drops the results, so the performer stores
    nothing and completes with an empty Output Information Sequence."""

    inner: Analyzer

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        dropped = self.inner.analyze(workitem, inputs)
        log.warning("%d result(s) dropped; completing without outputs", len(dropped))
        return []


# -- performer overrides --------------------------------------------------------------------


class IgnoresCancel(Performer):
    """Flaw ``ignores-cancel``: no checkpoint between steps (build it with
    ``watch_cancel=False``), so neither a Cancel Requested event nor a CANCELED state
    stops it."""

    def checkpoint(self, claimed: Claimed) -> None:
        return None


class ClaimsWithoutTransaction(Performer):
    """Flaw ``no-transaction-uid``: RAD-82 without the Transaction UID (0008,1195) that
    PS3.4 Table CC.2.1-1 makes Type 1; a refused claim is retried at the next search."""

    def claim(self, uid: str) -> Claimed | None:
        body = {PROCEDURE_STEP_STATE: element("CS", "IN PROGRESS")}
        response = self._send(
            "PUT",
            f"{self.dicomweb}/workitems/{uid}/state",
            content=json.dumps(body).encode(),
            headers={"Content-Type": DICOM_JSON},
        )
        if response.status_code >= 300:
            log.warning("claim of %s without a Transaction UID: %s", uid, excerpt(response))
        else:
            log.error("the hub accepted a claim of %s without a Transaction UID", uid)
        return None


class ClaimsAnything(Performer):
    """Flaw ``other-product``: built with another product's code, it searches for that
    code and adds every workitem of an unfiltered search (``ProcedureStepState=SCHEDULED``
    only), claiming whatever it finds."""

    def search(self) -> list[DicomJson]:
        found = super().search()
        unfiltered: list[DicomJson] = (
            self._json("GET", "/workitems", params={"ProcedureStepState": "SCHEDULED"}) or []
        )
        known = {first(w, SOP_INSTANCE_UID) for w in found}
        extra = [w for w in unfiltered if first(w, SOP_INSTANCE_UID) not in known]
        if found or extra:
            log.warning(
                "claiming %d workitem(s) found for %s and %d from an unfiltered search",
                len(found),
                self.product,
                len(extra),
            )
        return [*found, *claim_order(extra)]


# -- the flaws ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What a flaw's performer is built from."""

    product: ReferenceProduct
    other: str
    dicomweb: str
    ae_title: str
    credentials: Credentials | None
    hold: float
    stop: threading.Event

    def analyzer(self) -> Analyzer:
        made = self.product.factory()
        return Holding(made, self.hold, self.stop) if self.hold > 0 else made

    def performer(
        self,
        cls: type[Performer] = Performer,
        analyzer: Analyzer | None = None,
        *,
        code: str | None = None,
        watch_cancel: bool = True,
    ) -> Performer:
        return cls(
            self.dicomweb,
            code or self.product.code,
            self.ae_title,
            analyzer or self.analyzer(),
            timeout=30.0,
            watch_cancel=watch_cancel,
            auth=performer_auth(self.credentials),
        )


FLAWS: dict[str, Callable[[Setup], Performer]] = {
    "no-algorithm-id": lambda s: s.performer(analyzer=WithoutAlgorithmId(s.analyzer())),
    "wrong-study": lambda s: s.performer(analyzer=IntoAnotherStudy(s.analyzer())),
    "no-outputs": lambda s: s.performer(analyzer=Discarding(s.analyzer())),
    "ignores-cancel": lambda s: s.performer(IgnoresCancel, watch_cancel=False),
    "no-transaction-uid": lambda s: s.performer(ClaimsWithoutTransaction),
    "other-product": lambda s: s.performer(ClaimsAnything, code=s.other),
}
"""Each flaw: how its performer is built (see the module docstring)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.broken_performer",
        description="A reference product's Task Performer with exactly one flaw (tests only).",
    )
    p.add_argument("flaw", choices=sorted(FLAWS))
    p.add_argument("--hub", required=True, help="The hub's DICOMweb base URL.")
    p.add_argument("--credentials", type=Path, help="The performer's credentials file.")
    p.add_argument("--product", default=DEFAULT_PRODUCT, help="Product code (99AIFI).")
    p.add_argument("--ae", default=DEFAULT_AE, help="AE title for the event channel.")
    p.add_argument("--poll", type=float, default=1.0, help="Seconds between searches.")
    p.add_argument("--no-events", action="store_true", help="Poll only (no Triggered Pull).")
    p.add_argument("--hold", type=float, default=0.0, help="Seconds each analysis takes.")
    p.add_argument("--other", help="other-product: the code it searches for.")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Work the worklist with the flaw until SIGTERM or Ctrl-C; 0 then."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        product = product_for(args.product)
    except KeyError as exc:
        parser().error(str(exc.args[0]))
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    credentials = Credentials.from_file(args.credentials) if args.credentials else None
    setup = Setup(
        product=product,
        other=args.other or other_code(product.code),
        dicomweb=args.hub,
        ae_title=args.ae,
        credentials=credentials,
        hold=args.hold,
        stop=stop,
    )
    with FLAWS[args.flaw](setup) as performer:
        log.warning("broken performer %s for %s at %s", args.flaw, product.code, args.hub)
        done = performer.run(stop, poll_seconds=args.poll, events=not args.no_events)
    log.warning("stopped after %d workitem(s)", done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
