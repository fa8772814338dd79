"""C-STORE client for a PACS (Storage Service Class, PS3.4 Annex B; C-STORE, PS3.7 §9.1.1).

One association per :meth:`DimsePacs.send` (PS3.8 association establishment): one
presentation context per SOP Class and Transfer Syntax, offering each file's stored
Transfer Syntax, Explicit VR Little Endian and, as a last resort, Implicit VR Little Endian
(the default Transfer Syntax, PS3.5 §10.1). A file goes in its stored syntax when the PACS
accepts it (bytes unchanged), else pynetdicom re-encodes it (uncompressed) or it is
decompressed first (compressed, where pydicom has a decoder).
Each file then gets its own C-STORE on that association. Statuses (PS3.4 Table B.2-1):

=========================  ===============================================================
0x0000                     success: delivered
0xB000, 0xB006, 0xB007     warning (coercion, elements discarded, data set does not match
                           the SOP Class): stored, so delivered, the warning reported
0xA7xx                     refused, out of resources: retryable
0xA9xx, 0xCxxx, others     refused: not retryable
=========================  ===============================================================

A rejected, aborted or timed-out association, or no connection at all, leaves every
instance not yet confirmed retryable; a presentation context the PACS does not accept
(SOP Class or Transfer Syntax not supported) refuses the instances that needed it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import code_to_category

from aifi.hub.delivery.dicomweb_client import (
    ClosingClient,
    OutgoingInstance,
    SendOutcome,
    describe_status,
    fail_all,
    is_transient_status,
)

MAX_CONTEXTS = 128
"""Presentation contexts per association (PS3.8 §9.3.2.2: odd ids 1-255)."""


def _syntaxes(transfer_syntax_uid: str) -> list[str]:
    """What a file may be sent in, best first: as stored, then Explicit VR Little Endian,
    then Implicit VR Little Endian (the DICOM default every SCP supports, PS3.5 §10.1)."""
    return list(
        dict.fromkeys([transfer_syntax_uid, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    )


def requested_contexts(files: Sequence[OutgoingInstance]) -> list[PresentationContext]:
    """One context per (SOP Class, Transfer Syntax), each with a single Transfer Syntax, so
    the PACS's answer says exactly which it takes: the stored syntaxes, Explicit and
    Implicit VR Little Endian."""
    pairs: dict[tuple[str, str], None] = {}
    for f in files:
        for syntax in _syntaxes(f.transfer_syntax_uid):
            pairs[(f.sop_class_uid, syntax)] = None
    return [build_context(sop_class, syntax) for sop_class, syntax in pairs]


def _batches(files: Sequence[OutgoingInstance]) -> list[list[int]]:
    """Indices of files, grouped so each group needs at most MAX_CONTEXTS contexts."""
    batches: list[list[int]] = []
    current: list[int] = []
    pairs: set[tuple[str, str]] = set()
    for index, f in enumerate(files):
        needed = {(f.sop_class_uid, s) for s in _syntaxes(f.transfer_syntax_uid)} - pairs
        if current and len(pairs) + len(needed) > MAX_CONTEXTS:
            batches.append(current)
            current, pairs = [], set()
            needed = {(f.sop_class_uid, s) for s in _syntaxes(f.transfer_syntax_uid)}
        current.append(index)
        pairs |= needed
    if current:
        batches.append(current)
    return batches


def _uid_name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


class DimsePacs(ClosingClient):
    """C-STORE SCU for one PACS (pynetdicom); ``timeout_seconds`` bounds connecting,
    association negotiation (ACSE), each C-STORE response (DIMSE) and network silence."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        called_ae: str,
        calling_ae: str = "AIFI-HUB",
        timeout_seconds: float = 30.0,
        name: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.timeout_seconds = timeout_seconds
        self.name = name or f"{called_ae}@{host}:{port}"
        self._named = bool(name)
        self._ae = AE(ae_title=calling_ae)
        self._ae.acse_timeout = timeout_seconds
        self._ae.dimse_timeout = timeout_seconds
        self._ae.network_timeout = timeout_seconds
        self._ae.connection_timeout = timeout_seconds
        self._message_ids = itertools.count()

    @property
    def _pacs(self) -> str:
        address = f"{self.called_ae}@{self.host}:{self.port}"
        return f"PACS {self.name!r} (DIMSE {address})" if self._named else f"PACS {address} (DIMSE)"

    def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        results: dict[int, SendOutcome] = {}
        for batch in _batches(files):
            chosen = [files[i] for i in batch]
            for index, outcome in zip(batch, self._send_batch(chosen), strict=True):
                results[index] = outcome
        return [results[i] for i in range(len(files))]

    def _send_batch(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        opened: list[bool] = []

        def on_open(_event: Any) -> None:
            opened.append(True)

        try:
            assoc = self._ae.associate(
                self.host,
                self.port,
                contexts=requested_contexts(files),
                ae_title=self.called_ae,
                evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
            )
        except OSError as exc:  # the host name does not resolve
            reason = f"cannot connect to {self._pacs}: {exc.strerror or exc}"
            return fail_all(files, reason, retryable=True)
        if not assoc.is_established:
            answer = assoc.acceptor.primitive
            if answer is not None and answer.result == 0x00 and not assoc.accepted_contexts:
                return [self._no_context(f) for f in files]
            return fail_all(files, self._association_failure(assoc, bool(opened)), retryable=True)
        outcomes: list[SendOutcome] = []
        try:
            for f in files:
                if not assoc.is_established:
                    reason = (
                        f"{self._pacs} ended the association after {len(outcomes)} of the"
                        f" {len(files)} C-STORE requests"
                    )
                    outcomes.append(SendOutcome(f.sop_instance_uid, False, True, reason))
                    continue
                outcomes.append(self._store(assoc, f))
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes

    def _association_failure(self, assoc: Any, opened: bool) -> str:
        seconds = f"{self.timeout_seconds:g} s"
        if not opened:
            return (
                f"cannot connect to {self._pacs}: connection refused, host unreachable"
                f" or no answer within {seconds}"
            )
        answer = assoc.acceptor.primitive
        if assoc.is_rejected and answer is not None:
            return (
                f"{self._pacs} rejected the association: {answer.result_str},"
                f" {answer.source_str}: {answer.reason_str}"
            )
        if answer is None:
            return f"{self._pacs} did not answer the association request within {seconds}"
        return f"{self._pacs} aborted the association during negotiation"

    def _no_context(self, f: OutgoingInstance) -> SendOutcome:
        offered = ", ".join(_uid_name(s) for s in _syntaxes(f.transfer_syntax_uid))
        reason = (
            f"{self._pacs} accepts no presentation context for {_uid_name(f.sop_class_uid)}"
            f" in {offered} (SOP Class or Transfer Syntax not supported)"
        )
        return SendOutcome(f.sop_instance_uid, False, False, reason)

    def _context_for(self, f: OutgoingInstance, assoc: Any) -> str | None:
        """The accepted Transfer Syntax this file goes in, or ``None``."""
        accepted = {
            str(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if str(cx.abstract_syntax) == f.sop_class_uid
        }
        for syntax in _syntaxes(f.transfer_syntax_uid):
            if syntax in accepted:
                return syntax
        return None

    def _store(self, assoc: Any, f: OutgoingInstance) -> SendOutcome:
        uid = f.sop_instance_uid
        syntax = self._context_for(f, assoc)
        if syntax is None:
            return self._no_context(f)
        try:
            dataset = dcmread(f.path)
        except (OSError, InvalidDicomError) as exc:
            return SendOutcome(uid, False, False, f"cannot read {f.path} for {self._pacs}: {exc}")
        if str(dataset.get("SOPInstanceUID", "")) != uid:
            reason = f"{f.path} holds SOP Instance {dataset.get('SOPInstanceUID')!r}, not {uid}"
            return SendOutcome(uid, False, False, reason)
        if UID(syntax) != UID(f.transfer_syntax_uid) and UID(f.transfer_syntax_uid).is_compressed:
            try:
                dataset.decompress()
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                reason = (
                    f"{self._pacs} does not accept {_uid_name(f.transfer_syntax_uid)} and"
                    f" the file cannot be decompressed here: {exc}"
                )
                return SendOutcome(uid, False, False, reason)
        try:
            status = assoc.send_c_store(dataset, msg_id=next(self._message_ids) % 65535 + 1)
        except (ValueError, AttributeError) as exc:  # no context after all, or not encodable
            return SendOutcome(uid, False, False, f"cannot send to {self._pacs}: {exc}")
        except RuntimeError as exc:  # the association ended under us
            return SendOutcome(uid, False, True, f"lost the association with {self._pacs}: {exc}")
        if "Status" not in status:
            reason = (
                f"{self._pacs} gave no C-STORE response within {self.timeout_seconds:g} s"
                " or the association was aborted"
            )
            return SendOutcome(uid, False, True, reason)
        code = int(status.Status)
        comment = f": {status.ErrorComment}" if "ErrorComment" in status else ""
        category = code_to_category(code)
        if category == "Success":
            return SendOutcome(uid, True, False, f"stored by {self._pacs} (status 0x0000)")
        if category == "Warning":
            reason = f"stored by {self._pacs} with warning status {describe_status(code)}{comment}"
            return SendOutcome(uid, True, False, reason)
        if is_transient_status(code):
            reason = f"{self._pacs} could not store it now: status {describe_status(code)}{comment}"
            return SendOutcome(uid, False, True, reason)
        reason = f"{self._pacs} refused: status {describe_status(code)}{comment}"
        return SendOutcome(uid, False, False, reason)

    def close(self) -> None:
        self._ae.shutdown()
