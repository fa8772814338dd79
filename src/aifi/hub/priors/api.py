"""The hub's prior-request API (``/api/v1/prior-requests``), worked by a hospital's gateway
(issue 17; the "Contract C → D"). Scope ``worklist.requester``; every request sees only its
own tenant's (hospital's) requests.

``GET /api/v1/prior-requests?limit=50`` — the open requests (not answered, deadline not
passed), oldest first: ``{"items": [{"id", "study_instance_uid", "patient_id", "product",
"count", "same_modality", "same_body_part", "within_days", "modalities", "body_parts",
"deadline"}]}`` (pseudonymous identifiers; ``deadline`` in UTC, ISO 8601 with ``Z``).

``POST /api/v1/prior-requests/{id}/studies`` ``{"study_instance_uids": [...]}`` — 204;
registers the studies as priors before the gateway forwards them (they are never routed).
404 unknown id; 409 request closed.

``POST /api/v1/prior-requests/{id}/answer`` ``{"outcome": "found"|"none"|"failed",
"reason": "...", "study_instance_uids": [...]}`` — 204; the waiting workitem becomes READY
with the priors in its Input Information Sequence (found) or saying why it has none.
404 unknown id; 409 expired or answered; 422 a named study has no instance at the hub.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from aifi.hub.priors.service import PriorOutcome, PriorRequests
from aifi.principal import PrincipalDep

__all__ = ["AnswerBody", "StudiesBody", "router"]

router = APIRouter(tags=["aifi-hub priors"])


class _HasPriors(Protocol):
    @property
    def priors(self) -> PriorRequests: ...


def _priors(request: Request) -> PriorRequests:
    """The hub's :class:`PriorRequests` (the app's :class:`aifi.hub.wiring.Hub`)."""
    hub: _HasPriors = request.app.state.hub
    return hub.priors


PriorsDep = Annotated[PriorRequests, Depends(_priors)]

_UID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]


class StudiesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_instance_uids: Annotated[list[_UID], Field(min_length=1, max_length=100)]


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: PriorOutcome
    reason: Annotated[str | None, Field(max_length=1024)] = None
    study_instance_uids: Annotated[list[_UID], Field(max_length=100)] = []


@router.get("/prior-requests")
def list_prior_requests(
    principal: PrincipalDep,
    priors: PriorsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, list[dict[str, object]]]:
    """The tenant's open prior requests, oldest first."""
    items: list[dict[str, object]] = []
    for r in priors.list_open(principal.tenant, limit):
        items.append(
            {
                "id": r.id,
                "study_instance_uid": r.study_instance_uid,
                "patient_id": r.patient_id,
                "product": r.product,
                "count": r.count,
                "same_modality": r.same_modality,
                "same_body_part": r.same_body_part,
                "within_days": r.within_days,
                "modalities": r.modalities,
                "body_parts": r.body_parts,
                "deadline": r.deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return {"items": items}


@router.post("/prior-requests/{request_id}/studies", status_code=204)
def register_prior_studies(
    request_id: str, body: StudiesBody, principal: PrincipalDep, priors: PriorsDep
) -> Response:
    """Register studies as priors of the request before forwarding them."""
    priors.register(principal.tenant, request_id, body.study_instance_uids)
    return Response(status_code=204)


@router.post("/prior-requests/{request_id}/answer", status_code=204)
def answer_prior_request(
    request_id: str, body: AnswerBody, principal: PrincipalDep, priors: PriorsDep
) -> Response:
    """The gateway's answer: the priors found, or none (and why)."""
    priors.answer(principal.tenant, request_id, body.outcome, body.reason, body.study_instance_uids)
    return Response(status_code=204)
