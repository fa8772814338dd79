"""The performer kit's run: the scenarios in order, each filling its cases.

1. *connect* — the product gets a token and works the worklist.
2. *not-for-product* — studies its rules do not send it are stored first, so they are there
   the whole run; at the end the kit checks it never asked for them.
3. *main* — one study for the product: claim, retrieval, results, completion, progress,
   timing.
4. *negative* — a normal study (finding absent): an explicit negative result.
5. *cancel* — the kit holds the product's retrieval of a workitem's inputs, requests the
   cancellation (PS3.18 §11.8, PS3.4 CC.2.4.2), then lets the retrieval go: the product
   must end the workitem CANCELED, not COMPLETED.
6. *priority* — while the product is held busy on one workitem, two more arrive; the later
   one is raised to HIGH and the earlier lowered to LOW (PS3.4 CC.2.6, Scheduled Procedure
   Step Priority): the HIGH one must be claimed first.
7. The cases over the whole run: claims with a Transaction UID, only its own product's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aifi.conformance_kit.performer import checks
from aifi.conformance_kit.performer.driver import Driver
from aifi.conformance_kit.performer.kit_hub import KitHub
from aifi.conformance_kit.performer.observe import Observed, follow, store_and_schedule
from aifi.conformance_kit.performer.product import RunningProduct
from aifi.conformance_kit.performer.record import claims
from aifi.conformance_kit.performer.recorder import Hold
from aifi.conformance_kit.performer.studies import Role, Studies, TestStudy
from aifi.conformance_kit.report import Case, Report
from aifi.dicom_json import first
from aifi.vendors.workitem import SOP_INSTANCE_UID

AIWI = "IHE RAD TF-2 AIW-I"
UPS_CLAIM = ["DICOM PS3.4 CC.2.4 (Change UPS State)", "DICOM PS3.18 §11.7", f"{AIWI} RAD-82"]
UPS_FINAL = ["DICOM PS3.4 Table CC.2.5-3 (final state)", f"{AIWI} RAD-85"]
AIR = ["IHE RAD TF AIR (AI Results) Vol. 3 §6.5.3", "DICOM PS3.3 (IOD of each result)"]

SCENARIOS: dict[str, tuple[str, ...]] = {
    "main": (
        "claim.transaction-uid",
        "claim.own-product",
        "retrieve.inputs",
        "results.air",
        "results.study",
        "complete.outputs",
        "progress",
        "timing",
    ),
    "negative": ("negative.explicit",),
    "cancel": ("cancel",),
    "priority": ("priority.high",),
    "not-for-product": ("not-for-product",),
}
ADAPTER_CASES = (
    "claim.transaction-uid",
    "claim.own-product",
    "progress",
    "cancel",
    "priority.high",
)
"""In push mode these are the kit's own adapter's behaviour, not the product's: skipped."""


def scenarios_for(asked: list[str] | None) -> list[str]:
    """The scenarios to run for ``--cases`` (case ids or scenario names); all by default."""
    if not asked:
        return list(SCENARIOS)
    chosen = []
    for name, cases in SCENARIOS.items():
        if name in asked or any(case in asked for case in cases):
            chosen.append(name)
    unknown = set(asked) - set(SCENARIOS) - {c for cases in SCENARIOS.values() for c in cases}
    if unknown:
        raise ValueError(
            f"unknown case(s) {', '.join(sorted(unknown))}; known: "
            + ", ".join(c for cases in SCENARIOS.values() for c in cases)
        )
    return chosen


@dataclass
class PerformerRun:
    report: Report
    hub: KitHub
    product: str
    running: RunningProduct
    timeout: float
    connect_timeout: float
    norm_seconds: float
    push: bool
    say: Callable[[str], None] = print
    driver: Driver = field(init=False)
    studies: Studies = field(init=False)
    own: set[str] = field(default_factory=set)
    """Workitem UIDs scheduled for the product."""
    _main_cases: dict[str, Case] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.driver = Driver(self.hub, self.product)
        self.studies = Studies(self.hub.rules, self.hub.tenant, self.product)

    def alive(self) -> bool:
        return self.running.exited() is None

    def _follow(self, scheduled_study: TestStudy) -> Observed:
        scheduled = store_and_schedule(self.driver, scheduled_study)
        self.own.add(scheduled.uid)
        return follow(self.driver, self.hub.recorder, scheduled, self.timeout, self.alive)

    # -- the run ------------------------------------------------------------------------------

    def run(self, chosen: list[str]) -> None:
        connect = self.report.case(
            "connect",
            "Gets a token and works the worklist",
            [
                "SMART App Launch: Backend Services (client_credentials, private_key_jwt)",
                f"{AIWI} RAD-81 Query UPS Workitems",
            ],
        )
        with connect.timed():
            self._connect(connect)
        if not connect.ok:
            for name in chosen:
                for case_id in SCENARIOS[name]:
                    self._case(case_id).skipped("the product never connected")
            return
        others = self._store_not_for_product() if "not-for-product" in chosen else []
        main = self._main() if "main" in chosen else None
        if "negative" in chosen:
            self._negative()
        if "cancel" in chosen:
            self._cancel()
        if "priority" in chosen:
            self._priority()
        if "not-for-product" in chosen:
            self._not_for_product(others)
        if main is not None:
            self._whole_run(main)

    def _case(self, case_id: str) -> Case:
        titles = {
            "claim.transaction-uid": ("Claims with a Transaction UID", UPS_CLAIM),
            "claim.own-product": (
                "Asks for and claims only its own product's work",
                [f"{AIWI} RAD-81 (Scheduled Workitem Code Sequence)", "aifi-hub performer scope"],
            ),
            "retrieve.inputs": (
                "Retrieves the workitem's inputs",
                ["DICOM PS3.18 §10.4 (WADO-RS)", f"{AIWI} (Input Information Sequence)"],
            ),
            "results.air": ("Every result passes IHE AIR validation (and dciodvfy)", AIR),
            "results.study": (
                "Results belong to the workitem's study and reference its inputs",
                ["IHE RAD TF AIR (references to the evaluated images)", f"{AIWI}"],
            ),
            "complete.outputs": (
                "Completes with an Output Information Sequence naming what it stored",
                UPS_FINAL,
            ),
            "progress": (
                "Reports progress while working",
                ["DICOM PS3.4 CC.2.6 (UPS Progress Information)", f"{AIWI} RAD-84"],
            ),
            "timing": (
                "Claim latency and processing time against the product's norm time",
                ["aifi-hub routing rules: norm_turnaround_minutes"],
            ),
            "negative.explicit": (
                "Gives an explicit negative on a normal study",
                ["IHE RAD TF AIR (qualitative evaluation: Absent)", "DICOM PS3.16 TID 1500"],
            ),
            "cancel": (
                "Honours a cancellation request",
                [
                    "DICOM PS3.4 CC.2.4.2 (Request UPS Cancel)",
                    "DICOM PS3.18 §11.8",
                    f"{AIWI} RAD-86",
                ],
            ),
            "priority.high": (
                "Takes a priority-HIGH item that arrives while busy first",
                [
                    "DICOM PS3.4 CC.2.6 (Scheduled Procedure Step Priority (0074,1200))",
                    f"{AIWI} RAD-81",
                ],
            ),
            "not-for-product": (
                "Never asks for studies that are not its work",
                ["aifi-hub routing rules", "DICOM PS3.15 (least access)"],
            ),
        }
        title, cites = titles[case_id]
        required = not (self.push and case_id in ADAPTER_CASES)
        case = self.report.case(case_id, title, cites, required=required)
        if self.push and case_id in ADAPTER_CASES:
            case.skipped("push mode: the kit's own adapter does this, not the product")
        return case

    def _connect(self, case: Case) -> None:
        started = time.monotonic()
        deadline = started + self.connect_timeout
        while time.monotonic() < deadline:
            seen = [e for e in self.hub.recorder.snapshot() if "/dicomweb/" in e.path]
            if seen:
                case.timings["connect"] = round(seen[0].started - started, 3)
                case.passed("first request to the worklist", request=seen[0].evidence())
                return
            if not self.alive():
                case.failed(
                    f"the product exited ({self.running.exited()}) before it connected",
                    log=self.running.log_tail(),
                )
                return
            self.hub.recorder.wait_for(lambda _: False, 0.2)
        case.failed(
            f"no request to the worklist within {self.connect_timeout:.0f} s",
            tokens=[e.evidence() for e in self.hub.recorder.snapshot()][:5],
            log=self.running.log_tail(),
        )

    def _store_not_for_product(self) -> list[TestStudy]:
        if not self.studies.available(Role.NOT_FOR_PRODUCT):
            return []
        made = [self.studies.make_recipe(r) for r in self.studies.recipes(Role.NOT_FOR_PRODUCT)]
        for study in made:
            self.driver.store(study)
        return made

    def _main(self) -> Observed:
        cases = {case_id: self._case(case_id) for case_id in SCENARIOS["main"]}
        self.say(f"main: a {self.studies.recipes(Role.FOR_PRODUCT)[0].label} for {self.product}")
        observed = self._follow(self.studies.make(Role.FOR_PRODUCT))
        verdicts: tuple[tuple[str, Callable[[Case], None]], ...] = (
            ("retrieve.inputs", lambda c: checks.retrieve_inputs(c, observed)),
            ("results.air", lambda c: checks.results_air(c, observed)),
            ("results.study", lambda c: checks.results_study(c, observed)),
            ("complete.outputs", lambda c: checks.complete_outputs(c, observed, self.timeout)),
            ("progress", lambda c: checks.progress(c, observed)),
            ("timing", lambda c: checks.timing(c, observed, self.norm_seconds)),
        )
        for case_id, check in verdicts:
            case = cases[case_id]
            if case.status.value == "skip" and not case.required:
                continue
            with case.timed():
                check(case)
            case.timings.update(
                {k: v for k, v in observed.timings().items() if k not in case.timings}
            )
        self._main_cases = cases
        if self.push:
            self._push_answer(observed)
        return observed

    def _push_answer(self, observed: Observed) -> None:
        """Push mode: the endpoint answered the kit's adapter with results (or 204). Any
        other answer makes the adapter cancel the workitem with the answer as the reason."""
        case = self.report.case(
            "push.answer",
            "The push endpoint answers the inputs with DICOM results",
            [
                "docs/vendor-guide.md (push mode)",
                "DICOM PS3.18 §8.6.1.2 (multipart/related)",
                "RFC 2387",
            ],
        )
        with case.timed():
            if observed.state == "COMPLETED":
                case.passed("answered with results; the workitem COMPLETED")
            elif observed.final is None:
                case.failed(f"no answer within {self.timeout:.0f} s", workitem=observed.uid)
            else:
                case.failed(
                    f"the endpoint's answer was refused: {observed.reason}",
                    workitem=observed.uid,
                )

    def _whole_run(self, main: Observed) -> None:
        everything = self.hub.recorder.snapshot()
        cases = self._main_cases
        if cases["claim.transaction-uid"].required:
            with cases["claim.transaction-uid"].timed():
                checks.claim_transaction_uid(cases["claim.transaction-uid"], everything, main)
        if cases["claim.own-product"].required:
            others = {str(first(w, SOP_INSTANCE_UID)) for w in self.driver.workitems()} - self.own
            with cases["claim.own-product"].timed():
                checks.claim_own_product(
                    cases["claim.own-product"], everything, self.product, self.own, others
                )

    def _negative(self) -> None:
        case = self._case("negative.explicit")
        role = Role.NORMAL if self.studies.available(Role.NORMAL) else Role.FOR_PRODUCT
        with case.timed():
            observed = self._follow(self.studies.make(role))
            checks.negative_explicit(case, observed, self.timeout)
            case.timings.update(observed.timings())
            if role is Role.FOR_PRODUCT and case.status.value == "warn":
                case.passed("a measurement product: its measurement is the explicit answer")

    def _cancel(self) -> None:
        case = self._case("cancel")
        if not case.required:
            return
        with case.timed():
            study = self.studies.make(Role.FOR_PRODUCT)
            hold = self.hub.recorder.hold(_retrieving(study.study_uid), limit=self.timeout)
            try:
                scheduled = store_and_schedule(self.driver, study)
                self.own.add(scheduled.uid)
                if not _caught(hold, self.timeout, self.alive):
                    case.failed(
                        "the product never retrieved the workitem's inputs", workitem=scheduled.uid
                    )
                    return
                status = self.driver.request_cancel(
                    scheduled.uid, "Conformance kit: cancellation requested by the hospital"
                )
                case.note(cancel_request_status=status)
            finally:
                hold.release()
            observed = follow(self.driver, self.hub.recorder, scheduled, self.timeout, self.alive)
            case.timings.update(observed.timings())
            if observed.final is None:
                case.failed(
                    f"still {self.driver.state(scheduled.uid)} {self.timeout:.0f} s "
                    "after the cancellation request",
                    workitem=scheduled.uid,
                )
            elif observed.state == "CANCELED":
                case.passed(f"CANCELED after the request: {observed.reason}")
            else:
                case.failed(
                    f"ignored the cancellation request: the workitem ended {observed.state}",
                    workitem=scheduled.uid,
                )

    def _priority(self) -> None:
        case = self._case("priority.high")
        if not case.required:
            return
        with case.timed():
            busy = self.studies.make(Role.FOR_PRODUCT)
            hold = self.hub.recorder.hold(_retrieving(busy.study_uid), limit=self.timeout)
            try:
                first_item = store_and_schedule(self.driver, busy)
                self.own.add(first_item.uid)
                if not _caught(hold, self.timeout, self.alive):
                    case.failed(
                        "the product never started on the first workitem", workitem=first_item.uid
                    )
                    return
                low = store_and_schedule(self.driver, self.studies.make(Role.FOR_PRODUCT))
                high = store_and_schedule(self.driver, self.studies.make(Role.FOR_PRODUCT))
                self.own |= {low.uid, high.uid}
                self.driver.set_priority(low.uid, "LOW")
                self.driver.set_priority(high.uid, "HIGH")
            finally:
                hold.release()
            ends = [
                follow(self.driver, self.hub.recorder, s, self.timeout, self.alive)
                for s in (first_item, low, high)
            ]
            everything = self.hub.recorder.snapshot()
            claimed = {
                uid: min(
                    (
                        c.exchange.started
                        for c in claims(everything, uid)
                        if c.exchange.status == 200
                    ),
                    default=None,
                )
                for uid in (low.uid, high.uid)
            }
            not_done = [o.uid for o in ends if o.state != "COMPLETED"]
            high_at, low_at = claimed[high.uid], claimed[low.uid]
            case.note(
                claimed_high_after_s=None
                if high_at is None
                else round(high_at - first_item.stored_at, 3),
                claimed_low_after_s=None
                if low_at is None
                else round(low_at - first_item.stored_at, 3),
            )
            if high_at is None:
                case.failed("never claimed the HIGH priority workitem", workitem=high.uid)
            elif low_at is not None and low_at < high_at:
                case.failed("claimed the earlier LOW priority workitem before the HIGH one")
            elif not_done:
                case.failed("not every workitem of the scenario was COMPLETED", workitems=not_done)
            else:
                case.passed("claimed the HIGH item first, then the LOW one; all COMPLETED")

    def _not_for_product(self, others: list[TestStudy]) -> None:
        case = self._case("not-for-product")
        with case.timed():
            if not others:
                case.skipped("every generated study goes to this product")
                return
            scheduled = [
                str(first(w, SOP_INSTANCE_UID))
                for study in others
                for w in self.driver.workitems(study.study_uid, self.product)
            ]
            checks.never_touched(
                case,
                self.hub.recorder.snapshot(),
                [(s.study_uid, s.sop_uids) for s in others],
                scheduled,
            )
            case.note(studies=[s.recipe.label for s in others])


def _retrieving(study_uid: str) -> Callable[[str, str], bool]:
    def matches(method: str, path: str) -> bool:
        return (
            method == "GET"
            and f"/studies/{study_uid}" in path
            and not path.rstrip("/").endswith(("/metadata", "/rendered", "/thumbnail"))
        )

    return matches


def _caught(hold: Hold, timeout: float, alive: Callable[[], bool]) -> bool:
    """Until the product's request is caught by ``hold`` (it is busy with that workitem)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if hold.caught.wait(0.2):
            return True
    return hold.caught.is_set()
