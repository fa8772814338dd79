"""The performer's end of the UPS event channel (PS3.18 §11.13 Open Event Channel, IHE RAD
TF AIW-I RAD-109; the reports are RAD-87 Send UPS Notification, PS3.4 CC.2.4).

A background thread reads every event report as it arrives, so reports are never left
waiting in the socket while the performer is busy with a workitem. Two uses:

* wake-up (Triggered Pull): :meth:`EventChannel.wait` returns as soon as a report says
  there may be new work — a **UPS State Report** of a SCHEDULED workitem (created, or its
  inputs became ready; PS3.4 CC.2.4.2). Progress reports and the state changes of
  workitems already claimed do not wake it: on a busy worklist those are most reports,
  and each wake-up is a search at the hub. The worklist is searched anyway; events only
  save the wait;
* cancellation: a **UPS Cancel Requested** report (Event Type ID 2, Table CC.2.4-1) for a
  workitem is remembered with its Reason For Cancellation (0074,1238), and a **UPS State
  Report** (Event Type ID 1) saying CANCELED too (the Task Manager ended it, e.g. at its
  deadline), so the performer can stop between steps (:meth:`EventChannel.cancellation`).
  The hub does not change an IN PROGRESS workitem on a cancel request (PS3.4 CC.2.2.3):
  the performer must discontinue it itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from aifi.dicom_json import first, items
from aifi.vendors.workitem import (
    PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_STATE,
    REASON_FOR_CANCELLATION,
)

__all__ = ["Cancellation", "EventChannel", "announces_work", "open_channel"]

log = logging.getLogger(__name__)

AFFECTED_SOP_INSTANCE_UID = "00001000"
EVENT_TYPE_ID = "00001002"
STATE_REPORT = 1
CANCEL_REQUESTED = 2
DEFAULT_REASON = "Cancellation requested"


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Why a workitem must stop: ``requested`` (a Task Requester asked; the performer
    discontinues with ``reason``) or not (it is CANCELED already; nothing more to do)."""

    requested: bool
    reason: str


def cancellation_of(report: dict[str, Any]) -> tuple[str, Cancellation] | None:
    """(workitem UID, cancellation) for a Cancel Requested report, or for a State Report
    whose state is CANCELED; None for anything else (pure)."""
    uid = first(report, AFFECTED_SOP_INSTANCE_UID)
    event = first(report, EVENT_TYPE_ID)
    if not uid:
        return None
    reason = first(report, REASON_FOR_CANCELLATION)
    if not reason:  # some SCPs put it in the Progress Information Sequence
        progress = items(report, PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE)
        reason = first(progress[0], REASON_FOR_CANCELLATION) if progress else None
    if event == CANCEL_REQUESTED:
        return str(uid), Cancellation(True, str(reason or DEFAULT_REASON))
    if event == STATE_REPORT and first(report, PROCEDURE_STEP_STATE) == "CANCELED":
        return str(uid), Cancellation(False, str(reason or "CANCELED by the Task Manager"))
    return None


def announces_work(report: dict[str, Any]) -> bool:
    """Does this report say a workitem may be waiting to be claimed (pure)?"""
    return bool(
        first(report, EVENT_TYPE_ID) == STATE_REPORT
        and first(report, PROCEDURE_STEP_STATE) == "SCHEDULED"
    )


class EventChannel:
    """An open WebSocket event channel read by a daemon thread (see the module docstring).
    :meth:`close` closes the socket and joins the thread."""

    def __init__(self, connection: ClientConnection) -> None:
        self._stack = contextlib.ExitStack()
        self.connection = self._stack.enter_context(connection)  # closed by close()
        self.broken = False
        self._arrived = threading.Event()
        self._lock = threading.Lock()
        self._cancellations: dict[str, Cancellation] = {}
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="ups-event-channel", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing:
            try:
                message = self.connection.recv(timeout=0.5)
            except TimeoutError:
                continue
            except (ConnectionClosed, OSError) as exc:
                if not self._closing:
                    log.warning("Event channel lost (%s); polling instead", exc)
                self.broken = True
                self._arrived.set()
                return
            try:
                report = json.loads(message)
            except (ValueError, TypeError):
                log.info("Ignoring an event report that is not JSON")
                continue
            if isinstance(report, dict) and (found := cancellation_of(report)) is not None:
                uid, cancellation = found
                with self._lock:
                    # A CANCELED state outranks a request: nothing is left to discontinue.
                    if uid not in self._cancellations or not cancellation.requested:
                        self._cancellations[uid] = cancellation
                log.info("Event: workitem %s %s", uid, cancellation)
            if isinstance(report, dict) and announces_work(report):
                self._arrived.set()

    def cancellation(self, uid: str) -> Cancellation | None:
        """The cancellation reported for workitem ``uid`` since the channel opened."""
        with self._lock:
            return self._cancellations.get(uid)

    def forget(self, uid: str) -> None:
        """Drop what is known about ``uid`` (its work is over)."""
        with self._lock:
            self._cancellations.pop(uid, None)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Until a report announces work (True), ``stop`` is set (True) or ``seconds`` pass
        (False).
        Reports that arrived while nobody waited count: one search answers them all."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.broken:
                return stop.wait(remaining)
            if self._arrived.wait(min(remaining, 0.2)):
                self._arrived.clear()
                return True
        return True

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):  # closing a dead socket
            self._stack.close()
        self._reader.join(timeout=5)


def open_channel(url: str, headers: Mapping[str, str] | None = None) -> EventChannel | None:
    """Open the event channel at ``url`` with the "dicom" subprotocol; None (and a warning)
    when it cannot be opened — the caller polls instead. ``headers`` go with the opening
    handshake: ``Authorization: Bearer …`` for a hub that wants a token (RFC 6750 §2.1; the
    WebSocket handshake is an HTTP request, RFC 6455 §4.1)."""
    try:
        connection = connect(
            url,
            subprotocols=["dicom"],  # type: ignore[list-item]
            open_timeout=10,
            additional_headers=dict(headers or {}),
        )
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        log.warning("Event channel %s could not be opened (%s); polling instead", url, exc)
        return None
    return EventChannel(connection)
