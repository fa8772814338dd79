"""The UPS state machine (PS3.4 Annex CC, Table CC.1.1-2) and its attribute checks."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from aifi.ihe_profiles.ups import (
    TRANSITIONS,
    Outcome,
    ProcedureStepState,
    UpsAction,
    UpsEvent,
    UpsRefused,
    UpsStatus,
    apply,
    creation_problems,
    final_state_problems,
    update_problems,
)

S = ProcedureStepState.SCHEDULED
P = ProcedureStepState.IN_PROGRESS
D = ProcedureStepState.COMPLETED
X = ProcedureStepState.CANCELED

HELD = "2.25.1001"
OTHER = "2.25.2002"
REPORT = (UpsEvent.STATE_REPORT,)

# What the UPS holds in each state (a SCHEDULED one was never claimed).
HELD_IN = {S: None, P: HELD, D: HELD, X: HELD}
# The request's Transaction UID for each case. For SCHEDULED, "right" and "wrong" are
# both some fresh UID: there is nothing to compare with.
GIVEN = {"none": None, "right": HELD, "wrong": OTHER}

MISSING = UpsStatus.MISSING_TRANSACTION_UID
WRONG = UpsStatus.WRONG_TRANSACTION_UID
C300 = UpsStatus.MAY_NO_LONGER_BE_UPDATED
C300_UPDATE = UpsStatus.FINAL_STATE_NOT_UPDATABLE


def ok(
    state: ProcedureStepState,
    events: tuple[UpsEvent, ...] = (),
    uid: str | None = HELD,
    warning: UpsStatus | None = None,
) -> Outcome:
    return Outcome(state=state, warning=warning, events=tuple(events), transaction_uid=uid)


# (state, action) -> expected for (none, right, wrong); an UpsStatus means refused.
EXPECTED: dict[tuple[ProcedureStepState, UpsAction], tuple[Any, Any, Any]] = {
    (S, UpsAction.CLAIM): (MISSING, ok(P, REPORT, HELD), ok(P, REPORT, OTHER)),
    (S, UpsAction.COMPLETE): (MISSING, UpsStatus.NOT_IN_PROGRESS, UpsStatus.NOT_IN_PROGRESS),
    (S, UpsAction.DISCONTINUE): (
        MISSING,
        UpsStatus.NOT_IN_PROGRESS,
        UpsStatus.NOT_IN_PROGRESS,
    ),
    (S, UpsAction.REQUEST_CANCEL): (ok(X, REPORT * 2, None),) * 3,
    (S, UpsAction.UPDATE): (ok(S, uid=None),) * 3,
    (P, UpsAction.CLAIM): (MISSING, UpsStatus.ALREADY_IN_PROGRESS, WRONG),
    (P, UpsAction.COMPLETE): (MISSING, ok(D, REPORT), WRONG),
    (P, UpsAction.DISCONTINUE): (MISSING, ok(X, REPORT), WRONG),
    (P, UpsAction.REQUEST_CANCEL): (ok(P, (UpsEvent.CANCEL_REQUESTED,)),) * 3,
    (P, UpsAction.UPDATE): (MISSING, ok(P), WRONG),
    (D, UpsAction.CLAIM): (MISSING, C300, WRONG),
    (D, UpsAction.COMPLETE): (MISSING, ok(D, warning=UpsStatus.ALREADY_COMPLETED_WARNING), WRONG),
    (D, UpsAction.DISCONTINUE): (MISSING, C300, WRONG),
    (D, UpsAction.REQUEST_CANCEL): (UpsStatus.ALREADY_COMPLETED,) * 3,
    (D, UpsAction.UPDATE): (C300_UPDATE,) * 3,
    (X, UpsAction.CLAIM): (MISSING, C300, WRONG),
    (X, UpsAction.COMPLETE): (MISSING, C300, WRONG),
    (X, UpsAction.DISCONTINUE): (MISSING, ok(X, warning=UpsStatus.ALREADY_CANCELED_WARNING), WRONG),
    (X, UpsAction.REQUEST_CANCEL): (ok(X, warning=UpsStatus.ALREADY_CANCELED_WARNING),) * 3,
    (X, UpsAction.UPDATE): (C300_UPDATE,) * 3,
}

CASES = [
    pytest.param(state, action, case, EXPECTED[state, action][i], id=f"{state}-{action}-{case}")
    for state, action in itertools.product(ProcedureStepState, UpsAction)
    for i, case in enumerate(GIVEN)
]


def test_expectations_cover_every_state_and_action():
    assert set(EXPECTED) == set(itertools.product(ProcedureStepState, UpsAction))


def test_the_table_is_total():
    assert set(TRANSITIONS) == set(itertools.product(ProcedureStepState, UpsAction))


@pytest.mark.parametrize(("state", "action", "case", "expected"), CASES)
def test_every_state_action_and_transaction_uid(state, action, case, expected):
    def run() -> Outcome:
        return apply(
            state, action, held_transaction_uid=HELD_IN[state], given_transaction_uid=GIVEN[case]
        )

    if isinstance(expected, UpsStatus):
        with pytest.raises(UpsRefused) as caught:
            run()
        assert caught.value.status is expected
        assert caught.value.detail
    else:
        assert run() == expected


def test_no_action_leads_back_to_scheduled():
    reached = set()
    for state, action in itertools.product(ProcedureStepState, UpsAction):
        for given in GIVEN.values():
            try:
                outcome = apply(
                    state, action, held_transaction_uid=HELD_IN[state], given_transaction_uid=given
                )
            except UpsRefused:
                continue
            reached.add((state, outcome.state))
    assert {(S, P), (P, D), (S, X)} <= reached  # the walk reached the real transitions
    assert all(after is not S or before is S for before, after in reached)
    assert (P, S) not in reached


def test_empty_transaction_uid_counts_as_missing():
    with pytest.raises(UpsRefused) as caught:
        apply(S, UpsAction.CLAIM, held_transaction_uid=None, given_transaction_uid="")
    assert caught.value.status is MISSING


def test_a_second_performer_cannot_take_over_a_claimed_ups():
    first = apply(S, UpsAction.CLAIM, held_transaction_uid=None, given_transaction_uid=HELD)
    with pytest.raises(UpsRefused) as caught:
        apply(
            first.state,
            UpsAction.CLAIM,
            held_transaction_uid=first.transaction_uid,
            given_transaction_uid=OTHER,
        )
    assert caught.value.status.code == 0xC301
    assert OTHER in caught.value.detail


def test_full_lifecycle_keeps_the_claimed_uid():
    claimed = apply(S, UpsAction.CLAIM, held_transaction_uid=None, given_transaction_uid=HELD)
    updated = apply(
        claimed.state, UpsAction.UPDATE, held_transaction_uid=HELD, given_transaction_uid=HELD
    )
    done = apply(
        updated.state, UpsAction.COMPLETE, held_transaction_uid=HELD, given_transaction_uid=HELD
    )
    assert (claimed.state, updated.state, done.state) == (P, P, D)
    assert done.transaction_uid == HELD


@pytest.mark.parametrize("given", [None, HELD, OTHER])
def test_ups_canceled_by_the_scp_accepts_a_repeated_discontinue(given):
    # Canceled from SCHEDULED by a cancel request: never claimed, holds no UID.
    canceled = apply(
        S, UpsAction.REQUEST_CANCEL, held_transaction_uid=None, given_transaction_uid=None
    )
    if given is None:
        with pytest.raises(UpsRefused):
            apply(X, UpsAction.DISCONTINUE, held_transaction_uid=None, given_transaction_uid=given)
        return
    outcome = apply(
        canceled.state,
        UpsAction.DISCONTINUE,
        held_transaction_uid=canceled.transaction_uid,
        given_transaction_uid=given,
    )
    assert outcome.warning is UpsStatus.ALREADY_CANCELED_WARNING


def test_impossible_records_are_rejected():
    with pytest.raises(ValueError, match="SCHEDULED"):
        apply(S, UpsAction.UPDATE, held_transaction_uid=HELD, given_transaction_uid=None)
    with pytest.raises(ValueError, match="IN PROGRESS"):
        apply(P, UpsAction.UPDATE, held_transaction_uid=None, given_transaction_uid=HELD)


def test_strings_are_accepted_at_the_boundary():
    outcome = apply(
        "SCHEDULED",  # type: ignore[arg-type]
        "claim",  # type: ignore[arg-type]
        held_transaction_uid=None,
        given_transaction_uid=HELD,
    )
    assert outcome.state == "IN PROGRESS"


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        (UpsStatus.ALREADY_CANCELED_WARNING, 0xB304, 200),
        (UpsStatus.ALREADY_COMPLETED_WARNING, 0xB306, 200),
        (UpsStatus.MAY_NO_LONGER_BE_UPDATED, 0xC300, 409),
        (UpsStatus.MISSING_TRANSACTION_UID, 0xC301, 400),
        (UpsStatus.WRONG_TRANSACTION_UID, 0xC301, 400),
        (UpsStatus.ALREADY_IN_PROGRESS, 0xC302, 409),
        (UpsStatus.ONLY_SCHEDULED_VIA_CREATE, 0xC303, 400),
        (UpsStatus.FINAL_STATE_NOT_MET, 0xC304, 409),
        (UpsStatus.NO_SUCH_UPS, 0xC307, 404),
        (UpsStatus.NOT_SCHEDULED_ON_CREATE, 0xC309, 400),
        (UpsStatus.NOT_IN_PROGRESS, 0xC310, 409),
        (UpsStatus.ALREADY_COMPLETED, 0xC311, 409),
        (UpsStatus.PERFORMER_UNREACHABLE, 0xC312, 409),
        (UpsStatus.PERFORMER_DECLINED, 0xC313, 409),
    ],
)
def test_status_codes(status, code, http):
    assert (status.code, status.http) == (code, http)
    assert status.is_warning == (code >= 0xB000 and code < 0xC000)
    assert status.text.endswith(".")
    assert "\n" not in status.text


def test_status_texts_name_the_state():
    assert "CANCELED" in UpsStatus.ALREADY_CANCELED_WARNING.text
    assert "COMPLETED" in UpsStatus.ALREADY_COMPLETED_WARNING.text
    assert "missing" in UpsStatus.MISSING_TRANSACTION_UID.text
    assert "incorrect" in UpsStatus.WRONG_TRANSACTION_UID.text


def test_refusal_message_carries_code_and_detail():
    error = UpsRefused(UpsStatus.NOT_IN_PROGRESS, "UPS 1.2.3 is SCHEDULED")
    assert "C310" in str(error)
    assert "UPS 1.2.3 is SCHEDULED" in str(error)


def test_event_type_ids():
    assert [e.value for e in UpsEvent] == [1, 2, 3, 4, 5]


# --- attribute checks ----------------------------------------------------------------


def cs(*values: str) -> dict[str, Any]:
    return {"vr": "CS", "Value": list(values)}


def seq(*items: dict[str, Any]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": list(items)}


def good_create() -> dict[str, Any]:
    return {
        "00741200": cs("MEDIUM"),
        "00741204": {"vr": "LO", "Value": ["AI lung nodule detection"]},
        "00404005": {"vr": "DT", "Value": ["20240101120000"]},
        "00404041": cs("READY"),
        "00741000": cs("SCHEDULED"),
        "00404018": seq({"00080100": {"vr": "SH", "Value": ["LUNG-AI"]}}),
    }


def test_good_creation():
    assert creation_problems(good_create()) == []


def test_creation_without_state_is_fine():
    attributes = good_create()
    del attributes["00741000"]
    assert creation_problems(attributes) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"00741000": cs("IN PROGRESS")}, "(0074,1000)"),
        ({"00741000": {"vr": "CS"}}, "(0074,1000)"),
        ({"00081195": {"vr": "UI", "Value": [HELD]}}, "(0008,1195)"),
        ({"00741200": cs("URGENT")}, "URGENT"),
        ({"00404041": cs("MAYBE")}, "MAYBE"),
        ({"00741204": {"vr": "LO"}}, "(0074,1204)"),
        ({"0074120": cs("X")}, "'0074120'"),
        ({"0074abcd": cs("X")}, "'0074abcd'"),
    ],
)
def test_bad_creation(change, needle):
    attributes = good_create() | change
    problems = creation_problems(attributes)
    assert len(problems) == 1
    assert needle in problems[0]


@pytest.mark.parametrize("tag", ["00741200", "00741204", "00404005", "00404041"])
def test_creation_requires_type_1(tag):
    attributes = good_create()
    del attributes[tag]
    problems = creation_problems(attributes)
    assert len(problems) == 1
    assert f"({tag[:4]},{tag[4:]})" in problems[0]


def test_good_update():
    assert update_problems({"00741200": cs("HIGH"), "00404041": cs("READY")}) == []


@pytest.mark.parametrize("tag", ["00080016", "00080018", "00741000", "00081195"])
def test_update_may_not_set(tag):
    problems = update_problems({tag: {"vr": "UI", "Value": ["1.2.3"]}, "00741200": cs("LOW")})
    assert len(problems) == 1
    assert f"({tag[:4]},{tag[4:]})" in problems[0]


def test_update_checks_enumerated_values():
    assert update_problems({"00741200": cs("SOON")})


def completed() -> dict[str, Any]:
    return good_create() | {
        "00741216": seq(
            {
                "00404050": {"vr": "DT", "Value": ["20240101120500"]},
                "00404051": {"vr": "DT", "Value": ["20240101121000"]},
                "00404019": seq({"00080100": {"vr": "SH", "Value": ["LUNG-AI"]}}),
                "00404033": seq(),
            }
        )
    }


def canceled() -> dict[str, Any]:
    return good_create() | {
        "00741002": seq({"00404052": {"vr": "DT", "Value": ["20240101120700"]}}),
    }


def test_final_state_met():
    assert final_state_problems(completed(), D) == []
    assert final_state_problems(canceled(), X) == []


def test_completion_needs_performed_procedure():
    problems = final_state_problems(good_create(), D)
    assert len(problems) == 1
    assert "(0074,1216)" in problems[0]


@pytest.mark.parametrize("tag", ["00404050", "00404051", "00404019", "00404033"])
def test_completion_needs_each_performed_attribute(tag):
    attributes = completed()
    del attributes["00741216"]["Value"][0][tag]
    problems = final_state_problems(attributes, D)
    assert len(problems) == 1
    assert f"({tag[:4]},{tag[4:]})" in problems[0]


def test_completion_rejects_empty_performed_workitem_code():
    attributes = completed()
    attributes["00741216"]["Value"][0]["00404019"] = seq()
    assert final_state_problems(attributes, D)


def test_cancellation_needs_cancellation_datetime():
    problems = final_state_problems(good_create(), X)
    assert len(problems) == 1
    assert "(0040,4052)" in problems[0]
    # what completion needs is not required to cancel, and vice versa
    assert final_state_problems(canceled() | completed(), X) == []
    assert final_state_problems(canceled(), D)


def test_final_state_keeps_required_attributes():
    attributes = completed()
    attributes["00741204"] = {"vr": "LO"}
    problems = final_state_problems(attributes, D)
    assert len(problems) == 1
    assert "(0074,1204)" in problems[0]


@pytest.mark.parametrize("target", [S, P])
def test_final_state_only_for_final_states(target):
    with pytest.raises(ValueError, match="not a final state"):
        final_state_problems(completed(), target)


def test_module_tags_are_the_dictionary_tags_of_their_names():
    """Every ``NAME = "ggggeeee"`` tag constant of the worklist modules is a tag of the
    DICOM dictionary whose keyword contains each word of the name (catches the DA Start Date
    standing in for the DT Start DateTime, or a Contact Display Name at a tag that does not
    exist)."""
    import re

    from pydicom.datadict import keyword_for_tag

    from aifi.hub.worklist import events as worklist_events
    from aifi.ihe_profiles import aiw, ups
    from aifi.vendors import workitem

    checked = 0
    for module in (ups, aiw, worklist_events, workitem):
        for name, value in vars(module).items():
            if not (isinstance(value, str) and re.fullmatch(r"[0-9A-F]{8}", value)):
                continue
            keyword = keyword_for_tag(int(value, 16)).lower()
            assert keyword, f"{module.__name__}.{name} = {value} is not in the dictionary"
            words = name.lower().replace("ups_", "unified_procedure_step_").split("_")
            for word in words:
                assert word in keyword, f"{module.__name__}.{name} = {value} is {keyword}"
            checked += 1
    assert checked >= 40
