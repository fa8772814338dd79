"""The Unified Procedure Step (UPS) state machine, as data, with no I/O.

Sources (DICOM PS3.4 Annex CC, PS3.18 chapter 11):

* Figure CC.1.1-1 and Table CC.1.1-2 (state transition table): a UPS is created
  SCHEDULED (N-CREATE / RAD-80 Create Workitem), is claimed to IN PROGRESS by a performer
  that supplies a new Transaction UID (RAD-82 Claim), and ends COMPLETED or CANCELED.
  Nothing but creation makes a UPS SCHEDULED (C303).
* CC.2.1 Change UPS State (N-ACTION type 1), PS3.18 §11.7 Change Workitem State
  (``PUT /workitems/{workitem}/state``): CLAIM, COMPLETE, DISCONTINUE below. The
  Transaction UID is Type 1 in Table CC.2.1-1, so a missing one is refused (C301).
* CC.2.2 Request UPS Cancel (N-ACTION type 2), PS3.18 §11.8 Request Cancellation
  (``POST /workitems/{workitem}/cancelrequest``): REQUEST_CANCEL. Per CC.2.2.3 a
  SCHEDULED UPS is canceled by the SCP itself, "first to IN PROGRESS and then to CANCELED",
  meeting the final state requirements; an IN PROGRESS one only raises the "UPS Cancel
  Requested" event and the performer decides. A success status means the request was
  accepted, not that the UPS was canceled (CC.2.2.2).
* CC.2.6 Set UPS Information (N-SET), PS3.18 §11.6 Update Workitem: UPDATE.
* CC.2.4 Report a Change (N-EVENT-REPORT): :class:`UpsEvent`.
* Table CC.2.5-3 (UPS attributes: N-CREATE type and Final State codes):
  :func:`creation_problems`, :func:`update_problems`, :func:`final_state_problems`.

How "correct Transaction UID" is read (the rows of Table CC.1.1-2 for CLAIM, COMPLETE,
DISCONTINUE): the UID must be supplied; when the UPS holds one, it must be that one. A
SCHEDULED UPS holds none, so any supplied UID is "correct" there (CLAIM records it;
COMPLETE/DISCONTINUE are refused with C310). Likewise a UPS the SCP canceled from
SCHEDULED holds none. Per the Note in CC.2.1.2, a second performer claiming an
IN PROGRESS UPS supplies an *incorrect* UID and gets C301; C302 is what the holder itself
gets when it claims again.

The hub, not this module, sends the events: a CLAIM's STATE_REPORT; ASSIGNED (event 5) when
Scheduled Human Performers / Scheduled Station change (an UPDATE or a Task Manager rule);
PROGRESS_REPORT (event 3) when an UPDATE changes the Progress Information Sequence
(0074,1002); SCP_STATUS_CHANGE (event 4) on start-up and shutdown. It also decides
C312/C313 (performer unreachable / declines) for REQUEST_CANCEL on IN PROGRESS.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aifi.dicom_json import DicomJson, items, values
from aifi.errors import AifiError

__all__ = [
    "TRANSITIONS",
    "Outcome",
    "ProcedureStepState",
    "TransactionCheck",
    "Transition",
    "UpsAction",
    "UpsEvent",
    "UpsRefused",
    "UpsStatus",
    "apply",
    "creation_problems",
    "final_state_problems",
    "update_problems",
]


class ProcedureStepState(enum.StrEnum):
    """Procedure Step State (0074,1000), PS3.3 C.30.1 / PS3.4 CC.1.1."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"


FINAL_STATES = frozenset({ProcedureStepState.COMPLETED, ProcedureStepState.CANCELED})


class UpsAction(enum.StrEnum):
    """What a client asks of a UPS (the events of Table CC.1.1-2)."""

    CLAIM = "claim"
    """Change UPS State to IN PROGRESS with a new Transaction UID (CC.2.1, RAD-82)."""
    COMPLETE = "complete"
    """Change UPS State to COMPLETED, with the held Transaction UID (CC.2.1)."""
    DISCONTINUE = "discontinue"
    """Change UPS State to CANCELED by the performer holding it (CC.2.1)."""
    REQUEST_CANCEL = "request-cancel"
    """Request UPS Cancel, by anyone (CC.2.2, PS3.18 §11.8)."""
    UPDATE = "update"
    """Set UPS Information (N-SET, CC.2.6; PS3.18 §11.6 Update Workitem)."""


class UpsEvent(enum.IntEnum):
    """Event Type ID of the UPS N-EVENT-REPORT, PS3.4 CC.2.4 (Table CC.2.4-1)."""

    STATE_REPORT = 1
    CANCEL_REQUESTED = 2
    PROGRESS_REPORT = 3
    SCP_STATUS_CHANGE = 4
    ASSIGNED = 5


class UpsStatus(enum.Enum):
    """UPS-specific DIMSE status (PS3.4 Tables CC.2.1-2, CC.2.2-2, CC.2.5-2, CC.2.6-1) with
    the HTTP status and ``Warning: 299`` text UPS-RS uses (PS3.18 §11.4-§11.8).

    ``text`` is the part after ``299 <service>: `` (the caller adds that prefix). Two
    members share C301 because PS3.18 words a missing and an incorrect Transaction UID
    differently. The warning members carry HTTP 200 as for Change Workitem State
    (§11.7); a successful Request Cancellation answers 202 Accepted (§11.8) whatever the
    DIMSE status.
    """

    CREATED_WITH_MODIFICATIONS = (0xB300, 201, "The Workitem was created with modifications.")
    ALREADY_CANCELED_WARNING = (
        0xB304,
        200,
        "The UPS is already in the requested state of CANCELED.",
    )
    COERCED_INVALID_VALUES = (0xB305, 200, "Coerced invalid values to valid values.")
    ALREADY_COMPLETED_WARNING = (
        0xB306,
        200,
        "The UPS is already in the requested state of COMPLETED.",
    )
    MAY_NO_LONGER_BE_UPDATED = (
        0xC300,
        409,
        "The request is inconsistent with the current state of the Target Workitem: "
        "the UPS may no longer be updated.",
    )
    FINAL_STATE_NOT_UPDATABLE = (
        0xC300,
        400,
        "The submitted request is inconsistent with the current state of the Workitem.",
    )
    """Update Workitem of a COMPLETED or CANCELED workitem: PS3.18 §11.6.2 asks for 400
    (Change Workitem State on one stays 409, §11.7)."""
    INPUTS_NOT_READY = (
        0xC300,
        409,
        "The request is inconsistent with the current state of the Target Workitem: "
        "its inputs are not ready (Input Readiness State is not READY).",
    )
    """Claim of a workitem whose Input Readiness State (0040,4041) is INCOMPLETE or
    UNAVAILABLE (PS3.4 CC.2.5.1.3): the hub refuses it until the inputs are READY."""
    MISSING_TRANSACTION_UID = (0xC301, 400, "The Transaction UID is missing.")
    WRONG_TRANSACTION_UID = (0xC301, 400, "The Transaction UID is incorrect.")
    ALREADY_IN_PROGRESS = (0xC302, 409, "The UPS is already IN PROGRESS.")
    ONLY_SCHEDULED_VIA_CREATE = (
        0xC303,
        400,
        "The UPS may only become SCHEDULED via Create Workitem (N-CREATE).",
    )
    FINAL_STATE_NOT_MET = (
        0xC304,
        409,
        "The UPS has not met final state requirements for the requested state change.",
    )
    NO_SUCH_UPS = (
        0xC307,
        404,
        "Specified SOP Instance UID does not exist or is not a UPS Instance managed by this SCP.",
    )
    NOT_SCHEDULED_ON_CREATE = (0xC309, 400, "The provided value of UPS State was not SCHEDULED.")
    NOT_IN_PROGRESS = (0xC310, 409, "The Target URI did not reference a claimed Workitem.")
    ALREADY_COMPLETED = (0xC311, 409, "The UPS is already COMPLETED.")
    PERFORMER_UNREACHABLE = (0xC312, 409, "The performer cannot be contacted.")
    PERFORMER_DECLINED = (0xC313, 409, "The performer chooses not to cancel.")

    @property
    def code(self) -> int:
        """The DIMSE Status (0000,0900)."""
        code: int = self.value[0]
        return code

    @property
    def http(self) -> int:
        """The HTTP status UPS-RS answers with."""
        http: int = self.value[1]
        return http

    @property
    def text(self) -> str:
        """The text of the ``Warning: 299 <service>: <text>`` header."""
        text: str = self.value[2]
        return text

    @property
    def is_warning(self) -> bool:
        return 0xB000 <= self.code <= 0xBFFF


class UpsRefused(AifiError):
    """An action that Table CC.1.1-2 does not allow; nothing was changed."""

    def __init__(self, status: UpsStatus, detail: str) -> None:
        super().__init__(f"{status.code:04X} {status.text} {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an allowed action leads to."""

    state: ProcedureStepState
    """The Procedure Step State after the action."""
    warning: UpsStatus | None
    """A warning status (the request still succeeds), e.g. already in the requested state."""
    events: tuple[UpsEvent, ...]
    """The N-EVENT-REPORTs (UPS-RS event messages) the SCP must send, in order."""
    transaction_uid: str | None
    """The Transaction UID the UPS holds afterwards (set by CLAIM; never disclosed)."""


class TransactionCheck(enum.Enum):
    """How a row of the table treats the Transaction UID (0008,1195)."""

    IGNORED = "ignored"
    """Not examined (Request Cancel; Set on a SCHEDULED or final UPS)."""
    NEW = "new"
    """Must be supplied; becomes the held UID (claiming a SCHEDULED UPS)."""
    HELD = "held"
    """Must be supplied and, when the UPS holds one, equal it (else C301)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One cell of Table CC.1.1-2: checks, then either a refusal or a new state."""

    check: TransactionCheck
    refusal: UpsStatus | None = None
    target: ProcedureStepState | None = None
    """The state afterwards; None = unchanged."""
    warning: UpsStatus | None = None
    events: tuple[UpsEvent, ...] = field(default=())


_S, _P, _D, _X = (
    ProcedureStepState.SCHEDULED,
    ProcedureStepState.IN_PROGRESS,
    ProcedureStepState.COMPLETED,
    ProcedureStepState.CANCELED,
)
_IGNORED, _NEW, _HELD = TransactionCheck.IGNORED, TransactionCheck.NEW, TransactionCheck.HELD
_REPORT = (UpsEvent.STATE_REPORT,)

TRANSITIONS: Mapping[tuple[ProcedureStepState, UpsAction], Transition] = MappingProxyType(
    {
        # SCHEDULED
        (_S, UpsAction.CLAIM): Transition(_NEW, target=_P, events=_REPORT),
        (_S, UpsAction.COMPLETE): Transition(_HELD, refusal=UpsStatus.NOT_IN_PROGRESS),
        (_S, UpsAction.DISCONTINUE): Transition(_HELD, refusal=UpsStatus.NOT_IN_PROGRESS),
        # CC.2.2.3: first to IN PROGRESS, then to CANCELED, one State Report each.
        (_S, UpsAction.REQUEST_CANCEL): Transition(
            _IGNORED, target=_X, events=(UpsEvent.STATE_REPORT, UpsEvent.STATE_REPORT)
        ),
        (_S, UpsAction.UPDATE): Transition(_IGNORED),
        # IN PROGRESS
        (_P, UpsAction.CLAIM): Transition(_HELD, refusal=UpsStatus.ALREADY_IN_PROGRESS),
        (_P, UpsAction.COMPLETE): Transition(_HELD, target=_D, events=_REPORT),
        (_P, UpsAction.DISCONTINUE): Transition(_HELD, target=_X, events=_REPORT),
        (_P, UpsAction.REQUEST_CANCEL): Transition(_IGNORED, events=(UpsEvent.CANCEL_REQUESTED,)),
        (_P, UpsAction.UPDATE): Transition(_HELD),
        # COMPLETED
        (_D, UpsAction.CLAIM): Transition(_HELD, refusal=UpsStatus.MAY_NO_LONGER_BE_UPDATED),
        (_D, UpsAction.COMPLETE): Transition(_HELD, warning=UpsStatus.ALREADY_COMPLETED_WARNING),
        (_D, UpsAction.DISCONTINUE): Transition(_HELD, refusal=UpsStatus.MAY_NO_LONGER_BE_UPDATED),
        (_D, UpsAction.REQUEST_CANCEL): Transition(_IGNORED, refusal=UpsStatus.ALREADY_COMPLETED),
        (_D, UpsAction.UPDATE): Transition(_IGNORED, refusal=UpsStatus.FINAL_STATE_NOT_UPDATABLE),
        # CANCELED
        (_X, UpsAction.CLAIM): Transition(_HELD, refusal=UpsStatus.MAY_NO_LONGER_BE_UPDATED),
        (_X, UpsAction.COMPLETE): Transition(_HELD, refusal=UpsStatus.MAY_NO_LONGER_BE_UPDATED),
        (_X, UpsAction.DISCONTINUE): Transition(_HELD, warning=UpsStatus.ALREADY_CANCELED_WARNING),
        (_X, UpsAction.REQUEST_CANCEL): Transition(
            _IGNORED, warning=UpsStatus.ALREADY_CANCELED_WARNING
        ),
        (_X, UpsAction.UPDATE): Transition(_IGNORED, refusal=UpsStatus.FINAL_STATE_NOT_UPDATABLE),
    }
)
"""Table CC.1.1-2 (plus N-SET, CC.2.6.3) for every state × action; data, not code."""


def apply(
    state: ProcedureStepState,
    action: UpsAction,
    *,
    held_transaction_uid: str | None,
    given_transaction_uid: str | None,
) -> Outcome:
    """Apply ``action`` to a UPS in ``state``; raise :class:`UpsRefused` if not allowed.

    ``held_transaction_uid`` is the UID the UPS recorded when claimed (None when never
    claimed); ``given_transaction_uid`` the one in the request (None or "" = absent).
    Final state requirements (C304) are the caller's to check with
    :func:`final_state_problems` before committing a COMPLETE or DISCONTINUE.
    Raises ValueError for an impossible record (SCHEDULED holding a UID, IN PROGRESS
    holding none).
    """
    state = ProcedureStepState(state)
    action = UpsAction(action)
    if state is _S and held_transaction_uid:
        raise ValueError("a SCHEDULED UPS cannot hold a Transaction UID")
    if state is _P and not held_transaction_uid:
        raise ValueError("an IN PROGRESS UPS must hold a Transaction UID")
    given = given_transaction_uid or None
    held = held_transaction_uid or None
    cell = TRANSITIONS[state, action]

    if cell.check is not TransactionCheck.IGNORED:
        if given is None:
            raise UpsRefused(
                UpsStatus.MISSING_TRANSACTION_UID,
                f"{action.value} on a {state.value} UPS needs the Transaction UID (0008,1195)",
            )
        if cell.check is TransactionCheck.HELD and held is not None and given != held:
            raise UpsRefused(
                UpsStatus.WRONG_TRANSACTION_UID,
                f"{action.value}: Transaction UID {given} is not the one this "
                f"{state.value} UPS was claimed with",
            )
    if cell.refusal is not None:
        raise UpsRefused(cell.refusal, f"{action.value} is not allowed on a {state.value} UPS")

    if cell.check is TransactionCheck.NEW:
        held_after = given
    elif cell.target is _X and state is _S:
        held_after = None  # canceled by the SCP, never claimed
    else:
        held_after = held
    return Outcome(
        state=cell.target or state,
        warning=cell.warning,
        events=cell.events,
        transaction_uid=held_after,
    )


# --- attribute checks (Table CC.2.5-3) -------------------------------------------------

_TAG = re.compile(r"^[0-9A-F]{8}$")

SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = "00080018"
TRANSACTION_UID = "00081195"
PROCEDURE_STEP_STATE = "00741000"
PROGRESS_INFORMATION_SEQUENCE = "00741002"
SCHEDULED_PROCEDURE_STEP_PRIORITY = "00741200"
PROCEDURE_STEP_LABEL = "00741204"
SCHEDULED_PROCEDURE_STEP_START_DATETIME = "00404005"
INPUT_READINESS_STATE = "00404041"
PERFORMED_PROCEDURE_SEQUENCE = "00741216"
PERFORMED_PROCEDURE_STEP_START_DATETIME = "00404050"
PERFORMED_PROCEDURE_STEP_END_DATETIME = "00404051"
PERFORMED_WORKITEM_CODE_SEQUENCE = "00404019"
OUTPUT_INFORMATION_SEQUENCE = "00404033"
PROCEDURE_STEP_CANCELLATION_DATETIME = "00404052"

_KEYWORDS = {
    SOP_CLASS_UID: "SOP Class UID (0008,0016)",
    SOP_INSTANCE_UID: "SOP Instance UID (0008,0018)",
    TRANSACTION_UID: "Transaction UID (0008,1195)",
    PROCEDURE_STEP_STATE: "Procedure Step State (0074,1000)",
    PROGRESS_INFORMATION_SEQUENCE: "UPS Progress Information Sequence (0074,1002)",
    SCHEDULED_PROCEDURE_STEP_PRIORITY: "Scheduled Procedure Step Priority (0074,1200)",
    PROCEDURE_STEP_LABEL: "Procedure Step Label (0074,1204)",
    SCHEDULED_PROCEDURE_STEP_START_DATETIME: "Scheduled Procedure Step Start DateTime (0040,4005)",
    INPUT_READINESS_STATE: "Input Readiness State (0040,4041)",
    PERFORMED_PROCEDURE_SEQUENCE: "Unified Procedure Step Performed Procedure Sequence (0074,1216)",
    PERFORMED_PROCEDURE_STEP_START_DATETIME: "Performed Procedure Step Start DateTime (0040,4050)",
    PERFORMED_PROCEDURE_STEP_END_DATETIME: "Performed Procedure Step End DateTime (0040,4051)",
    PERFORMED_WORKITEM_CODE_SEQUENCE: "Performed Workitem Code Sequence (0040,4019)",
    OUTPUT_INFORMATION_SEQUENCE: "Output Information Sequence (0040,4033)",
    PROCEDURE_STEP_CANCELLATION_DATETIME: "Procedure Step Cancellation DateTime (0040,4052)",
}

_ENUMERATED: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        SCHEDULED_PROCEDURE_STEP_PRIORITY: frozenset({"HIGH", "MEDIUM", "LOW"}),
        INPUT_READINESS_STATE: frozenset({"INCOMPLETE", "UNAVAILABLE", "READY"}),
    }
)

CREATE_TYPE_1 = (
    SCHEDULED_PROCEDURE_STEP_PRIORITY,
    PROCEDURE_STEP_LABEL,
    SCHEDULED_PROCEDURE_STEP_START_DATETIME,
    INPUT_READINESS_STATE,
)
"""Top-level attributes of Table CC.2.5-3 that are Type 1 for the N-CREATE SCU (the SOP
Instance UID travels as the Affected SOP Instance UID / the ``{?workitem}`` parameter and
the Procedure Step State is checked separately) and carry Final State code R."""

NOT_SETTABLE = (SOP_CLASS_UID, SOP_INSTANCE_UID, PROCEDURE_STEP_STATE, TRANSACTION_UID)
"""Attributes an N-SET / Update Workitem may not carry in its modification list (Table
CC.2.5-3 "Not Allowed" for N-SET; the state changes only by N-ACTION, CC.2.6.3). In
UPS-RS the Transaction UID travels in the ``{?transaction}`` query parameter (PS3.18
§11.6.1); a DIMSE adapter takes it out of the N-SET data set before calling
:func:`update_problems`."""


def _name(tag: str) -> str:
    return _KEYWORDS.get(tag, f"({tag[:4]},{tag[4:]})")


def _has_value(attributes: DicomJson, tag: str) -> bool:
    return any(v not in (None, "", {}) for v in values(attributes, tag))


def _malformed_tags(attributes: DicomJson) -> list[str]:
    return [
        f"{key!r} is not a DICOM JSON tag (8 upper-case hex digits, PS3.18 F.2.1)"
        for key in attributes
        if not _TAG.match(key)
    ]


def creation_problems(attributes: DicomJson) -> list[str]:
    """Why N-CREATE / Create Workitem (CC.2.5, PS3.18 §11.4, RAD-80) must refuse this
    data set; [] when fine.

    Checks: Procedure Step State absent or SCHEDULED (C309; the SCP sets SCHEDULED,
    CC.1.1); no Transaction UID (only a claim sets one, CC.2.1.2); the Type 1 attributes
    of :data:`CREATE_TYPE_1` with a value, and enumerated values where PS3.3 C.30 defines
    them.
    """
    problems = _malformed_tags(attributes)
    state_values = values(attributes, PROCEDURE_STEP_STATE)
    if attributes.get(PROCEDURE_STEP_STATE) is not None and state_values != [
        ProcedureStepState.SCHEDULED.value
    ]:
        problems.append(
            f"{_name(PROCEDURE_STEP_STATE)} must be SCHEDULED on creation, "
            f"not {state_values!r} ({UpsStatus.NOT_SCHEDULED_ON_CREATE.text})"
        )
    if TRANSACTION_UID in attributes:
        problems.append(f"{_name(TRANSACTION_UID)} may not be present on creation")
    for tag in CREATE_TYPE_1:
        if not _has_value(attributes, tag):
            problems.append(f"{_name(tag)} is required (Type 1) and has no value")
    problems.extend(_enumerated_problems(attributes))
    return problems


def _enumerated_problems(attributes: DicomJson) -> list[str]:
    problems = []
    for tag, allowed in _ENUMERATED.items():
        for value in values(attributes, tag):
            if value not in allowed:
                problems.append(f"{_name(tag)} is {value!r}, not one of {sorted(allowed)}")
    return problems


def update_problems(attributes: DicomJson) -> list[str]:
    """Why N-SET / Update Workitem (CC.2.6, PS3.18 §11.6) must refuse this modification
    list; [] when fine. The state of the UPS is :func:`apply`'s business (UPDATE)."""
    problems = _malformed_tags(attributes)
    for tag in NOT_SETTABLE:
        if tag in attributes:
            problems.append(f"{_name(tag)} may not be set by Update Workitem")
    problems.extend(_enumerated_problems(attributes))
    return problems


def final_state_problems(attributes: DicomJson, target: ProcedureStepState) -> list[str]:
    """Why ``attributes`` (the whole UPS after the change) do not meet the Final State
    requirements of Table CC.2.5-3 for ``target``; [] when met (else C304).

    R (both final states): the :data:`CREATE_TYPE_1` attributes keep a value.
    P (COMPLETED): a UPS Performed Procedure Sequence item with Performed Procedure Step
    Start and End DateTime, a Performed Workitem Code Sequence item, and an Output
    Information Sequence (Type 2: present, may be empty when nothing was produced).
    X (CANCELED): a UPS Progress Information Sequence item with Procedure Step
    Cancellation DateTime.
    """
    target = ProcedureStepState(target)
    if target not in FINAL_STATES:
        raise ValueError(f"{target.value} is not a final state")
    problems = [
        f"{_name(tag)} must have a value in the final state"
        for tag in CREATE_TYPE_1
        if not _has_value(attributes, tag)
    ]
    if target is _D:
        performed = items(attributes, PERFORMED_PROCEDURE_SEQUENCE)
        if not performed:
            problems.append(f"{_name(PERFORMED_PROCEDURE_SEQUENCE)} needs an item to complete")
        for item in performed[:1]:
            for tag in (
                PERFORMED_PROCEDURE_STEP_START_DATETIME,
                PERFORMED_PROCEDURE_STEP_END_DATETIME,
            ):
                if not _has_value(item, tag):
                    problems.append(f"{_name(tag)} is required to complete")
            if not items(item, PERFORMED_WORKITEM_CODE_SEQUENCE):
                problems.append(
                    f"{_name(PERFORMED_WORKITEM_CODE_SEQUENCE)} needs an item to complete"
                )
            if OUTPUT_INFORMATION_SEQUENCE not in item:
                problems.append(f"{_name(OUTPUT_INFORMATION_SEQUENCE)} must be present to complete")
    else:
        progress = items(attributes, PROGRESS_INFORMATION_SEQUENCE)
        if not any(_has_value(i, PROCEDURE_STEP_CANCELLATION_DATETIME) for i in progress):
            problems.append(
                f"{_name(PROCEDURE_STEP_CANCELLATION_DATETIME)} (in "
                f"{_name(PROGRESS_INFORMATION_SEQUENCE)}) is required to cancel"
            )
    return problems
