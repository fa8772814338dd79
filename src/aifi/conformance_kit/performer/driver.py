"""What the kit does at its own hub, as the hospital: store a test study (STOW-RS, PS3.18
§10.5) and signal it complete (the hub's completion signal, as a gateway sends it), find the
workitem the Task Manager scheduled for the product (UPS-RS Search, PS3.18 §11.9), follow it
to a final state (Retrieve Workitem, §11.5), request its cancellation (§11.8) and raise its
priority (Update Workitem, §11.6; Scheduled Procedure Step Priority (0074,1200), PS3.4
CC.2.6). Waits poll the hub with a deadline, never a fixed time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from aifi.conformance_kit.performer.kit_hub import KitError, KitHub
from aifi.conformance_kit.performer.studies import TestStudy
from aifi.dicom_json import DicomJson, first, items, text
from aifi.dicomweb import multipart
from aifi.hub.persistence.tables import Workitem
from aifi.vendors.workitem import (
    INPUT_INFORMATION_SEQUENCE,
    OUTPUT_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_STATE,
    REASON_FOR_CANCELLATION,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    SCHEDULED_PROCEDURE_STEP_PRIORITY,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    UPS_PERFORMED_PROCEDURE_SEQUENCE,
)

JSON = "application/dicom+json"
POLL_SECONDS = 0.1
FINAL_STATES = ("COMPLETED", "CANCELED")


@dataclass
class Scheduled:
    """A workitem the kit saw scheduled for the product."""

    uid: str
    study: TestStudy
    stored_at: float
    """``time.monotonic()`` when the kit started storing the study."""
    routed_at: float
    """When the kit first found the workitem."""
    workitem: DicomJson

    @property
    def inputs(self) -> set[str]:
        return input_uids(self.workitem)


def input_uids(workitem: DicomJson) -> set[str]:
    """The SOP Instance UIDs of the Input Information Sequence (0040,4021)."""
    return _referenced(items(workitem, INPUT_INFORMATION_SEQUENCE))


def output_uids(workitem: DicomJson) -> set[str]:
    """The SOP Instance UIDs of the Output Information Sequence (0040,4033), in the UPS
    Performed Procedure Sequence (0074,1216) (PS3.4 Table CC.2.5-3)."""
    return {
        uid
        for performed in items(workitem, UPS_PERFORMED_PROCEDURE_SEQUENCE)
        for uid in _referenced(items(performed, OUTPUT_INFORMATION_SEQUENCE))
    }


def cancellation_reason(workitem: DicomJson) -> str:
    """Reason For Cancellation (0074,1238) in the UPS Progress Information Sequence."""
    for item in items(workitem, PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE):
        if reason := text(item, REASON_FOR_CANCELLATION):
            return reason
    return ""


def _referenced(sequence: list[DicomJson]) -> set[str]:
    return {
        str(first(ref, REFERENCED_SOP_INSTANCE_UID))
        for item in sequence
        for ref in items(item, REFERENCED_SOP_SEQUENCE)
        if first(ref, REFERENCED_SOP_INSTANCE_UID)
    }


class Driver:
    def __init__(self, hub: KitHub, product: str) -> None:
        self.hub, self.product = hub, product

    def store(self, study: TestStudy) -> float:
        """STOW-RS of the study and its completion signal; returns when it started."""
        started = time.monotonic()
        boundary = multipart.new_boundary()
        response = self.hub.client.post(
            self.hub.dicomweb + "/studies",
            content=multipart.encode([("application/dicom", f) for f in study.files], boundary),
            headers={
                "Content-Type": multipart.content_type("application/dicom", boundary),
                "Accept": JSON,
            },
        )
        if response.status_code != 200:
            raise KitError(
                f"the kit's hub refused a test study: {response.status_code} {response.text[:300]}"
            )
        signal = self.hub.client.post(
            f"{self.hub.base_url}/api/v1/studies/{study.study_uid}/complete"
        )
        if signal.status_code >= 300:
            raise KitError(
                f"the kit's completion signal was refused: {signal.status_code} {signal.text[:300]}"
            )
        return started

    def workitems(
        self, study_uid: str | None = None, product: str | None = None
    ) -> list[DicomJson]:
        params = {"limit": "1000"}
        if study_uid:
            params["StudyInstanceUID"] = study_uid
        if product:
            params["ScheduledWorkitemCodeSequence.CodeValue"] = product
        response = self.hub.client.get(
            self.hub.dicomweb + "/workitems", params=params, headers={"Accept": JSON}
        )
        if response.status_code == 204:
            return []
        response.raise_for_status()
        found: list[DicomJson] = response.json()
        return found

    def scheduled(self, study: TestStudy, stored_at: float, timeout: float = 30.0) -> Scheduled:
        """The product's workitem for ``study``, once the Task Manager made it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.workitems(study.study_uid, self.product)
            if found:
                uid = str(first(found[0], SOP_INSTANCE_UID))
                return Scheduled(uid, study, stored_at, self._created(uid), self.read(uid))
            time.sleep(POLL_SECONDS)
        raise KitError(
            f"the kit's hub scheduled no workitem for {self.product} on the "
            f"{study.recipe.label} within {timeout:.0f} s (check the routing rules)"
        )

    def _created(self, uid: str) -> float:
        """When the Task Manager created the workitem, on the ``time.monotonic()`` clock
        of the recorder (from the hub's own row: the kit's polling would add its interval)."""
        now_wall, now_mono = datetime.now(UTC), time.monotonic()
        with self.hub.db.read() as session:
            created = session.exec(
                select(Workitem.created_at).where(col(Workitem.sop_instance_uid) == uid)
            ).first()
        if created is None:
            return now_mono
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return now_mono - max(0.0, (now_wall - created).total_seconds())

    def read(self, uid: str) -> DicomJson:
        response = self.hub.client.get(
            f"{self.hub.dicomweb}/workitems/{uid}", headers={"Accept": JSON}
        )
        response.raise_for_status()
        body: Any = response.json()
        return dict(body[0] if isinstance(body, list) else body)

    def state(self, uid: str) -> str:
        return text(self.read(uid), PROCEDURE_STEP_STATE) or ""

    def final(self, uid: str, timeout: float) -> DicomJson | None:
        """The workitem once COMPLETED or CANCELED; None when still not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            workitem = self.read(uid)
            if text(workitem, PROCEDURE_STEP_STATE) in FINAL_STATES:
                return workitem
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_SECONDS)

    def request_cancel(self, uid: str, reason: str) -> int:
        body = {REASON_FOR_CANCELLATION: {"vr": "LT", "Value": [reason]}}
        response = self.hub.client.post(
            f"{self.hub.dicomweb}/workitems/{uid}/cancelrequest",
            content=json.dumps(body).encode(),
            headers={"Content-Type": JSON},
        )
        return response.status_code

    def set_priority(self, uid: str, priority: str) -> None:
        """As the hub's scheduler re-prioritises a SCHEDULED workitem: the worklist's own
        Update (N-SET without a Transaction UID, PS3.4 CC.2.6), with the events a
        subscribed performer gets. Not over UPS-RS: a requester may not update a workitem."""
        changes = {SCHEDULED_PROCEDURE_STEP_PRIORITY: {"vr": "CS", "Value": [priority]}}
        self.hub.worklist.update(self.hub.tenant, uid, changes, None)

    def study_of(self, workitem: DicomJson) -> str:
        return text(workitem, STUDY_INSTANCE_UID) or ""
