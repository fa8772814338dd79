"""What a write transaction changed that the FHIR projection must follow: noted in the same
transaction, worked off after the commit by :class:`~aifi.hub.fhir.projection.FhirProjector`.

:class:`ChangeNotes` is given to :class:`~aifi.hub.persistence.database.Database` by the
composition root as its ``before_commit`` and ``after_commit`` hooks: before the commit it
notes the workitems and EPD requests the transaction changed (one small insert into
``fhir_pending``, in the same commit, so nothing is forgotten even if the process stops right
after it); after the commit it rings the projection loop's doorbell.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from aifi.dicomweb.worklist import Doorbell
from aifi.hub.persistence.tables import AiRequest, AiResult, Delivery, FhirPending, Workitem

WORKITEM = "workitem"
REQUEST = "request"
STUDY = "study"


class ChangeNotes:
    """The projection's notes of what changed (see the module docstring)."""

    def __init__(self) -> None:
        self.doorbell = Doorbell()
        """Rung after a commit that noted something (the projection loop listens)."""

    def before_commit(self, session: Session) -> None:
        """``before_commit`` hook: note the workitems and EPD requests the transaction
        changed (one small insert, in the same commit, so nothing is forgotten even if the
        process stops right after it)."""
        session.flush()  # what is still pending is recorded by the flush
        changed: list[Any] = session.info.get("changed") or []
        keys: set[tuple[str, str, str]] = set()
        for obj in changed:
            if isinstance(obj, AiRequest) and not obj.workitem_uid:
                keys.add((obj.tenant, REQUEST, obj.task_id))
                continue
            key = self._workitem_of(session, obj)
            if key is not None:
                keys.add((key[0], WORKITEM, key[1]))
        changed.clear()
        if keys:
            session.execute(
                insert(FhirPending),
                [{"tenant": t, "kind": k, "key": v} for t, k, v in sorted(keys)],
            )
            session.info["fhir_pending"] = True

    def after_commit(self, session: Session) -> None:
        if session.info.get("fhir_pending"):
            self.doorbell.ring()

    def _workitem_of(self, session: Session, obj: object) -> tuple[str, str] | None:
        if isinstance(obj, Workitem):
            return (obj.tenant, obj.sop_instance_uid)
        if isinstance(obj, AiResult):
            return (obj.tenant, obj.workitem_uid)
        if isinstance(obj, AiRequest) and obj.workitem_uid:
            return (obj.tenant, obj.workitem_uid)
        if isinstance(obj, Delivery) and obj.state == "delivered":
            result = session.get(AiResult, obj.result_pk)
            return (result.tenant, result.workitem_uid) if result is not None else None
        return None
