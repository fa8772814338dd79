"""One test study run through the product, as the kit observed it: the workitem the hub
scheduled, the requests the product made while it worked on it, what it stored, and how the
workitem ended (:class:`Observed`, made by :func:`observe`)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom import Dataset, dcmread

from aifi.conformance_kit.performer.driver import Driver, Scheduled, cancellation_reason
from aifi.conformance_kit.performer.record import (
    StateChange,
    claims,
    state_changes,
    stored_datasets,
    stows,
)
from aifi.conformance_kit.performer.recorder import Exchange, Recorder
from aifi.conformance_kit.performer.studies import TestStudy
from aifi.dicom_json import DicomJson, text
from aifi.vendors.workitem import PROCEDURE_STEP_STATE

FINAL = ("COMPLETED", "CANCELED")


@dataclass
class Observed:
    scheduled: Scheduled
    final: DicomJson | None
    """The workitem in its final state; None when it did not get there in time."""
    ended_at: float
    exchanges: list[Exchange]
    """The product's requests from the study's storing to the end (all workitems)."""
    results: list[Dataset] = field(default_factory=list)
    """Every instance the product sent with STOW-RS while working on it."""
    accepted: set[str] = field(default_factory=set)
    """SOP Instance UIDs of those the hub stored (STOW-RS answered 200)."""
    refusals: list[Exchange] = field(default_factory=list)
    """STOW-RS requests the hub refused, wholly or in part."""

    @property
    def uid(self) -> str:
        return self.scheduled.uid

    @property
    def state(self) -> str:
        return text(self.final, PROCEDURE_STEP_STATE) or "" if self.final else ""

    @property
    def reason(self) -> str:
        return cancellation_reason(self.final) if self.final else ""

    @property
    def claim(self) -> StateChange | None:
        """The claim the hub accepted."""
        accepted = [c for c in claims(self.exchanges, self.uid) if c.exchange.status == 200]
        return accepted[0] if accepted else None

    @property
    def end(self) -> StateChange | None:
        """The state change that ended the workitem (COMPLETED or CANCELED, accepted)."""
        ends = [
            c
            for c in state_changes(self.exchanges, self.uid)
            if c.state in FINAL and c.exchange.status == 200
        ]
        return ends[-1] if ends else None

    def inputs(self) -> list[Dataset]:
        wanted = self.scheduled.inputs
        datasets: list[Dataset] = [dcmread(io.BytesIO(data)) for data in self.scheduled.study.files]
        return [ds for ds in datasets if str(ds.SOPInstanceUID) in wanted] or datasets

    def timings(self) -> dict[str, float]:
        """Seconds: routing (store → scheduled), claim latency (scheduled → claim),
        processing (claim → final state, less the time the kit held a request): the
        product's time is claim latency + processing; ``kit`` is the rest of ``total``
        (storing, routing, noticing the end: the kit hub's own cost per case)."""
        out = {
            "routing": self.scheduled.routed_at - self.scheduled.stored_at,
            "total": self.ended_at - self.scheduled.stored_at,
        }
        claim, end = self.claim, self.end
        if claim is not None:
            out["claim_latency"] = max(0.0, claim.exchange.started - self.scheduled.routed_at)
            if end is not None:
                held = sum(e.held for e in self.exchanges if claim.exchange.started <= e.started)
                out["processing"] = max(0.0, end.exchange.finished - claim.exchange.started - held)
                out["kit"] = max(0.0, out["total"] - out["claim_latency"] - out["processing"])
        return {name: round(value, 3) for name, value in out.items()}


def store_and_schedule(driver: Driver, study: TestStudy) -> Scheduled:
    return driver.scheduled(study, driver.store(study))


def follow(
    driver: Driver,
    recorder: Recorder,
    scheduled: Scheduled,
    timeout: float,
    alive: Callable[[], bool],
) -> Observed:
    """Waits for the workitem's final state (or ``timeout``, or the product's end), then
    gathers what the product did meanwhile."""
    deadline = time.monotonic() + timeout
    final: DicomJson | None = None
    while True:
        workitem = driver.read(scheduled.uid)
        if text(workitem, PROCEDURE_STEP_STATE) in FINAL:
            final = workitem
            break
        if time.monotonic() > deadline or not alive():
            break
        recorder.wait_for(lambda _: False, 0.1)
    ended = time.monotonic()
    exchanges = [e for e in recorder.snapshot() if e.started >= scheduled.stored_at]
    observed = Observed(scheduled, final, ended, exchanges)
    claim = observed.claim
    if claim is not None:
        for exchange in stows(exchanges, claim.exchange.started, ended):
            datasets = stored_datasets(exchange)
            observed.results += datasets
            if exchange.status == 200:
                observed.accepted |= {str(ds.SOPInstanceUID) for ds in datasets}
            else:
                observed.refusals.append(exchange)
    return observed
