"""The hub's prior-study requests (issue 17, point 3; "Contract C → D"): every rule of
:class:`aifi.hub.priors.service.PriorRequests` over a real SQLite hub database (migrated
once per module, copied per test), a real store and worklist, and a clock the test sets.

Opening a request with its INCOMPLETE workitem (PS3.4 CC.2.5.1.3), registering priors,
the answers found/none/failed, the deadline, the 404/409/422 rules, and which workitems
become READY with which inputs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from sqlmodel import col, select

from aifi.clock import SettableClock
from aifi.conformance.pilot_studies import study_json
from aifi.conformance.prior_studies import hand_follow_up
from aifi.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.tables import PriorRequest, PriorStudy
from aifi.hub.priors.service import (
    OpenRequest,
    PriorOutcome,
    PriorRequests,
    study_profile,
)
from aifi.hub.store.repository import SqlDicomStore
from aifi.hub.worklist.service import SqlWorklist
from aifi.ihe_profiles.aiw import (
    current_input_uids,
    new_workitem,
    prior_inputs,
    priors_unavailable_item,
    priors_unavailable_reason,
    study_level,
)
from aifi.ihe_profiles.rules import Decision, Product
from tests.support.dicom import ingest

TENANT = "default"
OTHER = "alpha"
WAIT = 120.0
T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def product(**priors: Any) -> Product:
    spec = {
        "count": 2,
        "same_modality": True,
        "same_body_part": False,
        "within_days": 400,
        "wait_seconds": WAIT,
    }
    spec.update(priors)
    return Product.model_validate(
        {
            "code": "AIFI-CMP",
            "name": "Comparison",
            "vendor": "reference",
            "version": "1",
            "mode": "pull",
            "supervision": "autonomous",
            "norm_turnaround_minutes": 30,
            "priority": "LOW",
            "claim_timeout_minutes": 10,
            "run_timeout_minutes": 15,
            "max_attempts": 3,
            "when": [],
            "priors": spec,
        }
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated hub database, made once for the module."""
    path = tmp_path_factory.mktemp("hub-template") / "hub.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


@dataclass
class Hub:
    db: Database
    store: SqlDicomStore
    worklist: SqlWorklist
    priors: PriorRequests
    clock: SettableClock
    now: list[datetime]

    def at(self, moment: datetime) -> None:
        self.now[0] = moment

    def stored(self, datasets: list[Dataset], tenant: str = TENANT) -> None:
        ingest(self.store, datasets, tenant)

    def waiting_workitem(
        self,
        study: list[Dataset],
        tenant: str = TENANT,
        spec: Product | None = None,
        at: datetime = T0,
        uid: str | None = None,
    ) -> tuple[str, str]:
        """The product's INCOMPLETE workitem for ``study`` (stored here) and its request,
        created as the Task Manager's router does; (workitem UID, request id)."""
        chosen = spec or product()
        uid = uid or f"2.25.{len(self.created) + 100}"
        study_uid = str(study[0].StudyInstanceUID)
        metadata = self.store.instance_metadata(tenant, study_uid)
        refs = tuple(
            (str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID)) for ds in study
        )
        decision = Decision(chosen, True, (), tuple(dict.fromkeys(r[0] for r in refs)), refs)
        opened: list[str] = []
        profile = study_profile(metadata, decision.input_series)

        def also(session: Any) -> None:
            opened.append(self.priors.open(session, tenant, uid, chosen, study_uid, profile, at))

        self.worklist.create(
            tenant,
            uid,
            new_workitem(decision, study_level(metadata), at),
            product=chosen.code,
            also=also,
        )
        self.created.append(uid)
        return uid, opened[0]

    def workitem(self, uid: str, tenant: str = TENANT) -> dict[str, Any]:
        return self.worklist.retrieve(tenant, uid)

    def row(self, request_id: str) -> PriorRequest:
        with self.db.read() as session:
            return session.exec(
                select(PriorRequest).where(col(PriorRequest.request_id) == request_id)
            ).one()

    def prior_rows(self) -> list[tuple[str, str]]:
        with self.db.read() as session:
            rows = session.exec(
                select(PriorStudy.tenant, PriorStudy.study_instance_uid).order_by(
                    col(PriorStudy.pk)
                )
            ).all()
        return [(t, u) for t, u in rows]

    created: list[str]


@pytest.fixture
def hub(template: Path, tmp_path: Path) -> Iterator[Hub]:
    path = tmp_path / "hub.db"
    shutil.copyfile(template, path)
    db = Database(f"sqlite:///{path}")
    now = [T0]
    clock = SettableClock(lambda: now[0])
    store = SqlDicomStore(db, tmp_path / "dicom", fsync=False)
    store.ensure_tenant(TENANT)
    store.ensure_tenant(OTHER)
    worklist = SqlWorklist(db, clock=clock)
    priors = PriorRequests(db, store, worklist, clock=clock)
    try:
        yield Hub(db, store, worklist, priors, clock, now, [])
    finally:
        store.close()
        db.dispose()


def readiness(ds: dict[str, Any]) -> str:
    return str(ds["00404041"]["Value"][0])


def follow_up(patient: str = "AIFI-FU-1") -> tuple[list[Dataset], list[Dataset]]:
    study = hand_follow_up(patient_id=patient, interval_days=200)
    return study.current, study.prior


def uid_of(study: list[Dataset]) -> str:
    return str(study[0].StudyInstanceUID)


# -- opening ---------------------------------------------------------------------------------


def test_open_lists_what_the_gateway_needs(hub: Hub, caplog: pytest.LogCaptureFixture):
    current, _ = follow_up()
    hub.stored(current)
    with caplog.at_level(logging.INFO, logger="aifi.hub.priors.service"):
        workitem, rid = hub.waiting_workitem(current)
    assert [r.getMessage() for r in caplog.records if r.name == "aifi.hub.priors.service"] == [
        f"workitem {workitem} waits for priors (request {rid})"
    ]
    assert len(rid) == 32
    assert readiness(hub.workitem(workitem)) == "INCOMPLETE"
    assert hub.priors.waiting(TENANT, workitem)
    assert not hub.priors.waiting(OTHER, workitem)
    assert hub.priors.list_open(TENANT) == [
        OpenRequest(
            id=rid,
            study_instance_uid=uid_of(current),
            patient_id="AIFI-FU-1",
            product="AIFI-CMP",
            count=2,
            same_modality=True,
            same_body_part=False,
            within_days=400,
            modalities=["DX"],
            body_parts=["HAND"],
            deadline=T0 + timedelta(seconds=WAIT),
        )
    ]
    [listed] = hub.priors.list_open(TENANT)
    assert listed.deadline.tzinfo is not None
    row = hub.row(rid)
    assert (row.tenant, row.workitem_uid, row.state) == (TENANT, workitem, "open")
    assert row.reason is None and row.answered_at is None
    assert row.created_at.replace(tzinfo=UTC) == T0
    assert hub.priors.list_open(OTHER) == []


def test_open_keeps_the_other_flags(hub: Hub):
    current, _ = follow_up()
    hub.stored(current)
    spec = product(count=1, same_modality=False, same_body_part=True, within_days=7)
    hub.waiting_workitem(current, spec=spec)
    [listed] = hub.priors.list_open(TENANT)
    assert (listed.count, listed.same_modality, listed.same_body_part) == (1, False, True)
    assert listed.within_days == 7


def test_study_profile():
    current, _ = follow_up("AIFI-PROFILE")
    metadata = study_json(current)
    assert study_profile(metadata, ()) == ("AIFI-PROFILE", "DX", "HAND")
    series = str(current[0].SeriesInstanceUID)
    assert study_profile(metadata, (series,)) == ("AIFI-PROFILE", "DX", "HAND")
    assert study_profile(metadata, ("9.9.9",)) == ("AIFI-PROFILE", "", "")
    # the first instance with a Patient ID counts; modalities and regions sorted, unique
    ct = [dict(m) for m in metadata]
    nameless = dict(ct[0])
    nameless.pop("00100020", None)
    other = dict(ct[0])
    other["00080060"] = {"vr": "CS", "Value": ["CR"]}
    other["0020000E"] = {"vr": "UI", "Value": ["1.2.3.4"]}
    other["00180015"] = {"vr": "CS", "Value": ["CHEST"]}
    other["00100020"] = {"vr": "LO", "Value": ["LATER"]}
    assert study_profile([nameless], ()) == ("", "DX", "HAND")
    patient, modalities, regions = study_profile([nameless, *ct, other], ())
    assert patient == "AIFI-PROFILE"
    assert modalities == "CR|DX"
    assert regions.split("|") == sorted(regions.split("|")) and {"CHEST", "HAND"} <= set(
        regions.split("|")
    )


def test_list_open_is_oldest_first_limited_and_ends_at_the_deadline(hub: Hub):
    studies = [follow_up(f"AIFI-LIST-{n}")[0] for n in range(3)]
    ids = []
    for n, study in enumerate(studies):
        hub.stored(study)
        ids.append(hub.waiting_workitem(study, at=T0 + timedelta(seconds=n))[1])
    assert [r.id for r in hub.priors.list_open(TENANT)] == ids
    assert [r.id for r in hub.priors.list_open(TENANT, limit=2)] == ids[:2]
    assert [r.id for r in hub.priors.list_open(TENANT, limit=1)] == ids[:1]
    # the first one's deadline: no longer listed at it, the others still
    hub.at(T0 + timedelta(seconds=WAIT) - timedelta(microseconds=1))
    assert [r.id for r in hub.priors.list_open(TENANT)] == ids
    hub.at(T0 + timedelta(seconds=WAIT))
    assert [r.id for r in hub.priors.list_open(TENANT)] == ids[1:]


# -- registering -----------------------------------------------------------------------------


def test_register_marks_studies_as_priors_once(hub: Hub):
    current, _ = follow_up()
    hub.stored(current)
    _, rid = hub.waiting_workitem(current)
    assert not hub.priors.is_prior(TENANT, "1.2.3")
    hub.priors.register(TENANT, rid, [" 1.2.3 ", "1.2.4", "1.2.3"])
    assert hub.priors.is_prior(TENANT, "1.2.3") and hub.priors.is_prior(TENANT, "1.2.4")
    assert not hub.priors.is_prior(OTHER, "1.2.3")
    assert not hub.priors.is_prior(TENANT, uid_of(current))
    hub.priors.register(TENANT, rid, ["1.2.4", "1.2.5"])
    assert hub.prior_rows() == [(TENANT, "1.2.3"), (TENANT, "1.2.4"), (TENANT, "1.2.5")]
    # the request stays open: registering is not answering
    assert [r.id for r in hub.priors.list_open(TENANT)] == [rid]


def test_register_refuses(hub: Hub):
    current, _ = follow_up()
    hub.stored(current)
    _, rid = hub.waiting_workitem(current)
    with pytest.raises(NotFound):
        hub.priors.register(TENANT, "0" * 32, ["1.2.3"])
    with pytest.raises(NotFound):
        hub.priors.register(OTHER, rid, ["1.2.3"])
    with pytest.raises(Unprocessable, match=r"^a study is not its own prior$"):
        hub.priors.register(TENANT, rid, ["1.2.3", uid_of(current)])
    assert hub.prior_rows() == []
    # the deadline: refused from the moment itself, even before the round expired it
    hub.at(T0 + timedelta(seconds=WAIT) - timedelta(microseconds=1))
    hub.priors.register(TENANT, rid, ["1.2.3"])
    hub.at(T0 + timedelta(seconds=WAIT))
    with pytest.raises(Conflict, match="expired"):
        hub.priors.register(TENANT, rid, ["1.2.4"])
    assert hub.prior_rows() == [(TENANT, "1.2.3")]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "  ",
        "1.2.a",
        "1.2.3 4",
        "1" * 65,
        "1.2-3",
        "1..2",
        ".1",
        "1.",
        "\uff11.\uff12",
        "1.\u00b2",
    ],
)
def test_register_refuses_what_is_not_a_uid(hub: Hub, bad: str):
    current, _ = follow_up()
    hub.stored(current)
    _, rid = hub.waiting_workitem(current)
    with pytest.raises(InvalidRequest, match="not a Study Instance UID"):
        hub.priors.register(TENANT, rid, ["1.2.3", bad])
    with pytest.raises(InvalidRequest):
        hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [bad])
    assert hub.prior_rows() == []


def test_a_uid_of_64_characters_is_one(hub: Hub):
    current, _ = follow_up()
    hub.stored(current)
    _, rid = hub.waiting_workitem(current)
    longest = "1." + "2" * 62
    hub.priors.register(TENANT, rid, [longest])
    assert hub.priors.is_prior(TENANT, longest)


# -- answers ---------------------------------------------------------------------------------


def test_found_adds_every_instance_of_the_priors_marked_and_makes_it_ready(hub: Hub):
    current, prior = follow_up()
    _, older = follow_up()  # the same patient's other earlier study (a second prior)
    hub.stored(current + prior + older)
    workitem, rid = hub.waiting_workitem(current)
    before = current_input_uids(hub.workitem(workitem))
    assert before == {str(ds.SOPInstanceUID) for ds in current}
    hub.priors.register(TENANT, rid, [uid_of(prior)])
    hub.at(T0 + timedelta(seconds=30))
    hub.priors.answer(
        TENANT, rid, PriorOutcome.FOUND, "two found", [uid_of(prior), uid_of(older), uid_of(prior)]
    )
    ds = hub.workitem(workitem)
    assert readiness(ds) == "READY"
    assert current_input_uids(ds) == before  # the current study's inputs stay
    priors = prior_inputs(ds)
    assert [(p.study_instance_uid, p.sop_instance_uids) for p in priors] == [
        (uid_of(prior), (str(prior[0].SOPInstanceUID),)),
        (uid_of(older), (str(older[0].SOPInstanceUID),)),
    ]
    assert priors_unavailable_reason(ds) is None
    assert not hub.priors.waiting(TENANT, workitem)
    assert hub.priors.list_open(TENANT) == []
    row = hub.row(rid)
    assert (row.state, row.reason) == ("found", "two found")
    assert row.answered_at is not None
    assert row.answered_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=30)
    # both are priors now (the registered one not twice)
    assert hub.prior_rows() == [(TENANT, uid_of(prior)), (TENANT, uid_of(older))]
    # closed: a second answer or registration is refused, and changes nothing
    for outcome in PriorOutcome:
        with pytest.raises(Conflict, match="closed"):
            hub.priors.answer(TENANT, rid, outcome, None, [uid_of(prior)])
    with pytest.raises(Conflict, match=r"closed \(found\)"):
        hub.priors.register(TENANT, rid, ["1.2.3"])
    assert hub.priors.expire(T0 + timedelta(days=1)) == []
    assert prior_inputs(hub.workitem(workitem)) == priors


def test_found_refuses_a_study_without_an_instance_and_changes_nothing(hub: Hub):
    current, prior = follow_up()
    hub.stored(current + prior)
    workitem, rid = hub.waiting_workitem(current)
    missing = "1.2.826.0.1.3680043.99.1"
    with pytest.raises(Unprocessable, match=f"No instance of study {missing}"):
        hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [uid_of(prior), missing])
    with pytest.raises(Unprocessable, match=r"^outcome 'found' names no study_instance_uids$"):
        hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [])
    with pytest.raises(Unprocessable, match=r"^a study is not its own prior$"):
        hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [uid_of(current)])
    # a study stored for another tenant has no instance here
    _, theirs = follow_up()
    hub.stored(theirs, tenant=OTHER)
    with pytest.raises(Unprocessable, match="No instance"):
        hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [uid_of(theirs)])
    assert readiness(hub.workitem(workitem)) == "INCOMPLETE"
    assert hub.row(rid).state == "open"
    assert hub.prior_rows() == []
    assert [r.id for r in hub.priors.list_open(TENANT)] == [rid]


@pytest.mark.parametrize(
    ("outcome", "reason", "said"),
    [
        (PriorOutcome.NONE, None, "no prior study found"),
        (PriorOutcome.FAILED, None, "search failed"),
        (PriorOutcome.NONE, "no earlier hand radiograph", "no earlier hand radiograph"),
        (PriorOutcome.FAILED, "PACS refused C-MOVE", "PACS refused C-MOVE"),
        (PriorOutcome.NONE, "", "no prior study found"),
    ],
)
def test_none_and_failed_make_it_ready_saying_why(
    hub: Hub, outcome: PriorOutcome, reason: str | None, said: str
):
    current, prior = follow_up()
    hub.stored(current + prior)
    workitem, rid = hub.waiting_workitem(current)
    before = hub.workitem(workitem)["00404021"]
    hub.at(T0 + timedelta(seconds=5))
    # study UIDs named with none/failed are neither checked nor added
    hub.priors.answer(TENANT, rid, outcome, reason, [uid_of(prior)])
    ds = hub.workitem(workitem)
    assert readiness(ds) == "READY"
    assert priors_unavailable_reason(ds) == said
    assert ds["00741210"] == {"vr": "SQ", "Value": [priors_unavailable_item(said)]}
    assert prior_inputs(ds) == [] and ds["00404021"] == before
    row = hub.row(rid)
    assert (row.state, row.reason) == (outcome.value, said)
    assert row.answered_at is not None
    assert row.answered_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=5)
    assert hub.prior_rows() == []
    assert not hub.priors.waiting(TENANT, workitem)


def test_answers_refuse_unknown_requests_and_other_tenants(hub: Hub):
    current, prior = follow_up()
    hub.stored(current + prior)
    workitem, rid = hub.waiting_workitem(current)
    for outcome in PriorOutcome:
        with pytest.raises(NotFound, match="No prior request"):
            hub.priors.answer(TENANT, "f" * 32, outcome, None, [uid_of(prior)])
        with pytest.raises(NotFound):
            hub.priors.answer(OTHER, rid, outcome, None, [uid_of(prior)])
    assert readiness(hub.workitem(workitem)) == "INCOMPLETE"


# -- the deadline ----------------------------------------------------------------------------


def test_an_answer_after_the_deadline_is_refused(hub: Hub):
    """From the deadline itself, before or after the Task Manager's round ended it."""
    current, prior = follow_up()
    hub.stored(current + prior)
    workitem, rid = hub.waiting_workitem(current)
    hub.at(T0 + timedelta(seconds=WAIT))
    for outcome in PriorOutcome:
        with pytest.raises(Conflict, match="expired: its workitem went ahead"):
            hub.priors.answer(TENANT, rid, outcome, None, [uid_of(prior)])
    assert readiness(hub.workitem(workitem)) == "INCOMPLETE"  # the round has not run
    assert hub.priors.expire(T0 + timedelta(seconds=WAIT)) == [rid]
    with pytest.raises(Conflict, match=r"closed \(expired\)"):
        hub.priors.answer(TENANT, rid, PriorOutcome.NONE, None, [])
    assert hub.row(rid).state == "expired"


def test_an_answer_just_before_the_deadline_counts(hub: Hub):
    current, prior = follow_up()
    hub.stored(current + prior)
    workitem, rid = hub.waiting_workitem(current)
    hub.at(T0 + timedelta(seconds=WAIT) - timedelta(microseconds=1))
    hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [uid_of(prior)])
    assert [p.study_instance_uid for p in prior_inputs(hub.workitem(workitem))] == [uid_of(prior)]
    assert hub.priors.expire(T0 + timedelta(seconds=WAIT)) == []
    assert hub.row(rid).state == "found"


def test_expire_at_the_deadline_runs_the_workitem_without(
    hub: Hub, caplog: pytest.LogCaptureFixture
):
    first, _ = follow_up("AIFI-EXP-1")
    second, _ = follow_up("AIFI-EXP-2")
    hub.stored(first + second)
    w1, r1 = hub.waiting_workitem(first)
    w2, r2 = hub.waiting_workitem(second, spec=product(wait_seconds=0.5), at=T0)
    assert hub.priors.expire(T0) == []
    deadline = T0 + timedelta(seconds=WAIT)
    assert hub.priors.expire(deadline - timedelta(microseconds=1)) == [r2]
    ds = hub.workitem(w2)
    assert readiness(ds) == "READY"
    assert priors_unavailable_reason(ds) == "no prior study arrived within 0.5 seconds"
    assert readiness(hub.workitem(w1)) == "INCOMPLETE"
    assert hub.priors.waiting(TENANT, w1) and not hub.priors.waiting(TENANT, w2)
    with caplog.at_level(logging.INFO, logger="aifi.hub.priors.service"):
        assert hub.priors.expire(deadline) == [r1]
    assert [r.getMessage() for r in caplog.records if r.name == "aifi.hub.priors.service"] == [
        f"prior request {r1} expired; its workitem runs without"
    ]
    ds = hub.workitem(w1)
    assert readiness(ds) == "READY"
    assert priors_unavailable_reason(ds) == "no prior study arrived within 120 seconds"
    assert prior_inputs(ds) == []
    row = hub.row(r1)
    assert (row.state, row.reason) == ("expired", "no prior study arrived within 120 seconds")
    assert row.answered_at is not None and row.answered_at.replace(tzinfo=UTC) == deadline
    assert hub.priors.expire(deadline + timedelta(days=1)) == []


def test_expire_covers_every_tenant(hub: Hub):
    ours, _ = follow_up("AIFI-T-1")
    theirs, _ = follow_up("AIFI-T-2")
    hub.stored(ours)
    hub.stored(theirs, tenant=OTHER)
    w1, r1 = hub.waiting_workitem(ours)
    w2, r2 = hub.waiting_workitem(theirs, tenant=OTHER)
    assert sorted(hub.priors.expire(T0 + timedelta(seconds=WAIT))) == sorted([r1, r2])
    assert readiness(hub.workitem(w2, OTHER)) == "READY"
    assert readiness(hub.workitem(w1)) == "READY"


def test_a_request_whose_workitem_is_gone(hub: Hub):
    """found for a request without its workitem closes it without error."""
    current, prior = follow_up()
    hub.stored(current + prior)
    with hub.db.write() as session:
        rid = hub.priors.open(
            session, TENANT, "2.25.999", product(), uid_of(current), ("P", "DX", ""), T0
        )
    hub.priors.answer(TENANT, rid, PriorOutcome.FOUND, None, [uid_of(prior)])
    assert hub.row(rid).state == "found"
    assert hub.priors.is_prior(TENANT, uid_of(prior))


def test_found_changes_only_its_own_workitem(hub: Hub):
    """Three waiting workitems, one with the same UID at another tenant: each answer reads
    and writes its request's own workitem (whichever the database would list first)."""
    first, first_prior = follow_up("AIFI-OWN-1")
    second, second_prior = follow_up("AIFI-OWN-2")
    theirs, their_prior = follow_up("AIFI-OWN-3")
    hub.stored(first + first_prior + second + second_prior)
    hub.stored(theirs + their_prior, tenant=OTHER)
    w1, r1 = hub.waiting_workitem(first)
    w2, r2 = hub.waiting_workitem(second)
    w3, r3 = hub.waiting_workitem(theirs, tenant=OTHER, uid=w1)
    assert w3 == w1
    hub.priors.answer(TENANT, r2, PriorOutcome.FOUND, None, [uid_of(second_prior)])
    assert readiness(hub.workitem(w1)) == "INCOMPLETE"
    assert readiness(hub.workitem(w3, OTHER)) == "INCOMPLETE"
    hub.priors.answer(OTHER, r3, PriorOutcome.FOUND, None, [uid_of(their_prior)])
    assert readiness(hub.workitem(w1)) == "INCOMPLETE"
    hub.priors.answer(TENANT, r1, PriorOutcome.FOUND, None, [uid_of(first_prior)])
    for study, prior, uid, tenant in (
        (first, first_prior, w1, TENANT),
        (second, second_prior, w2, TENANT),
        (theirs, their_prior, w3, OTHER),
    ):
        ds = hub.workitem(uid, tenant)
        assert readiness(ds) == "READY"
        assert current_input_uids(ds) == {str(i.SOPInstanceUID) for i in study}
        assert [p.study_instance_uid for p in prior_inputs(ds)] == [uid_of(prior)]
    assert hub.priors.is_prior(OTHER, uid_of(their_prior))
    assert not hub.priors.is_prior(TENANT, uid_of(their_prior))


def _request_rows(hub: Hub, rows: list[dict[str, Any]]) -> list[str]:
    """Request rows straight into the table (the listing does not read workitems)."""
    ids = []
    with hub.db.write() as session:
        for n, fields in enumerate(rows):
            rid = f"{n:032x}"
            values: dict[str, Any] = {
                "tenant": TENANT,
                "request_id": rid,
                "workitem_uid": f"2.25.{n + 1}",
                "study_instance_uid": f"1.2.{n + 1}",
                "product": "AIFI-CMP",
                "deadline": T0 + timedelta(seconds=WAIT),
                "created_at": T0,
            }
            values.update(fields)
            session.add(PriorRequest(**values))
            session.flush()
            ids.append(rid)
    return ids


def test_list_open_pages_of_fifty_in_request_order(hub: Hub):
    late = T0 + timedelta(hours=2)
    ids = _request_rows(hub, [{"deadline": late - timedelta(seconds=n)} for n in range(51)])
    listed = hub.priors.list_open(TENANT)
    assert [r.id for r in listed] == ids[:50]  # the first made first, not the first due
    assert [r.id for r in hub.priors.list_open(TENANT, limit=100)] == ids


def test_list_open_splits_the_profile(hub: Hub):
    _request_rows(
        hub,
        [
            {"modalities": "CR|DX", "body_parts": "CHEST|HAND", "patient_id": "P"},
            {"modalities": "", "body_parts": ""},
            {"modalities": "|MG|", "body_parts": "BREAST"},
        ],
    )
    listed = hub.priors.list_open(TENANT)
    assert [(r.modalities, r.body_parts) for r in listed] == [
        (["CR", "DX"], ["CHEST", "HAND"]),
        ([], []),
        (["MG"], ["BREAST"]),
    ]
    assert [r.patient_id for r in listed] == ["P", "", ""]
