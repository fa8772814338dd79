"""Recording of access (issue 6): one audit row per HTTP request to patient data.

:class:`AuditMiddleware`, which the composition root adds as the app's outermost middleware
(``app.add_middleware(AuditMiddleware, trail=trail)``), looks at each HTTP response whose
route the policy (:mod:`aifi.hub.auth.policy`) marks ``patient_data`` — the rule the
resolver left on ``request.state.rule``, or else the policy's rule of the matched route —
and hands one :class:`~aifi.hub.audit.events.AuditEntry` to the
:class:`~aifi.hub.audit.trail.AuditTrail`, whatever the status (a 401, 403 or 404 too): who
(the principal's client id, role and tenant; ``unknown`` without a principal), from where
(the peer address of the connection), what (the policy's action, the route's path template,
the DICOMweb service or FHIR interaction, the study, series, instance, workitem or FHIR
resource in the path, the query string of a search: BALP Query pattern), when (the trail's
clock), the outcome (HTTP status → AuditEvent.outcome); the trail adds which patient. The
row is written once the response has been sent and never changes it. Tokens are never
recorded (an ``access_token`` query parameter is cut from the recorded query).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifi.fhir.search import reference_key
from aifi.hub.audit.events import UNKNOWN, AuditEntry, classify, outcome_of_status
from aifi.hub.audit.trail import AuditTrail
from aifi.hub.auth.policy import RULES, Rule, iter_routes

log = logging.getLogger(__name__)

_BODY_LIMIT = 1 << 20
_SECRET_PARAMS = frozenset({"access_token", "token", "client_secret", "client_assertion"})
_STUDY_IN_BODY = re.compile(rb"/studies/([0-9.]{1,64})")
_STUDY_KEYS = ("study", "StudyInstanceUID")
_SERIES_KEYS = ("series", "SeriesInstanceUID")
_INSTANCE_KEYS = ("instance", "SOPInstanceUID")
_WORKITEM_KEYS = ("workitem", "workitem_uid")


def _clean_query(raw: str) -> str:
    """The query string without credentials (RFC 6750 §2.3 allows ``access_token`` there)."""
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
        return raw
    return urlencode([(n, v) for n, v in pairs if n.lower() not in _SECRET_PARAMS])


class AuditMiddleware:
    """ASGI middleware that writes one audit row per patient-data request (module docstring).
    Pure ASGI (not ``BaseHTTPMiddleware``): streamed WADO-RS responses pass untouched; only
    a STOW-RS response body is looked at (for the Study Instance UIDs it stored)."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail
        self._templates: dict[int, str] | None = None

    def _template(self, scope: Scope, route: Any) -> str | None:
        if self._templates is None:
            self._templates = {id(r): path for path, r in iter_routes(scope["app"])}
        return self._templates.get(id(route))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None
        location: str | None = None
        body: list[bytes] | None = None
        size = 0

        async def sending(message: Message) -> None:
            nonlocal status, location, body, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers") or ():
                    if name.lower() == b"location":
                        location = value.decode("latin-1")
                if scope["method"] == "POST" and scope["path"].startswith("/dicomweb/studies"):
                    body = []
            elif message["type"] == "http.response.body" and body is not None:
                chunk = message.get("body", b"")
                if size < _BODY_LIMIT:
                    body.append(chunk)
                    size += len(chunk)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            entry = self._entry(scope, status or 500, location, body)
            if entry is not None:
                self.trail.record(entry)  # the request failed: no thread hop on this path
            raise
        entry = self._entry(scope, status, location, body)
        if entry is not None:
            self.trail.submit(entry)

    def _entry(
        self, scope: Scope, status: int | None, location: str | None, body: list[bytes] | None
    ) -> AuditEntry | None:
        try:
            return self._build(scope, status, location, body)
        except Exception:
            log.exception("audit entry could not be built")
            self.trail.count_failure()
            return None

    def _build(
        self, scope: Scope, status: int | None, location: str | None, body: list[bytes] | None
    ) -> AuditEntry | None:
        state: dict[str, Any] = scope.get("state") or {}
        route = scope.get("route")
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        template = self._template(scope, route) if route is not None else None
        rule: Rule | None = state.get("rule")
        if rule is None and template is not None:
            rule = RULES.get((method, template))
        if rule is None or not rule.patient_data or rule.action is None:
            return None
        template = template or scope["path"]
        principal = state.get("principal")
        params: dict[str, str] = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
        query = _clean_query(scope.get("query_string", b"").decode("latin-1")) or None
        event_code, subtype, action = classify(method, template, rule.action)
        entities: list[dict[str, str]] = []
        patient_id: str | None = None
        issuer: str | None = None
        study_uid = next((params[k] for k in _STUDY_KEYS if params.get(k)), None)
        for kind, keys in (
            ("series", _SERIES_KEYS),
            ("instance", _INSTANCE_KEYS),
            ("workitem", _WORKITEM_KEYS),
        ):
            value = next((params[k] for k in keys if params.get(k)), None)
            if value:
                entities.append({"kind": kind, "id": value})
        if template.startswith("/fhir/"):
            kind = params.get("resource_type", "")
            rid = params.get("resource_id")
            if rid is None and location and rule.action == "create":
                key = reference_key(location.split("?")[0])
                if key:
                    kind, _, rid = key.partition("/")
            if kind and rid:
                entities.append({"kind": "fhir", "type": kind, "id": rid})
        elif query and rule.action == "search":
            for name, value in parse_qsl(query):
                if not value or "," in value or "*" in value or "?" in value:
                    continue  # only a single, literal key names one study or patient
                if name in ("StudyInstanceUID", "0020000D") and study_uid is None:
                    study_uid = value
                elif name in ("PatientID", "00100020"):
                    patient_id = value
                elif name in ("IssuerOfPatientID", "00100021"):
                    issuer = value
        if body and study_uid is None:
            found = list(dict.fromkeys(m.decode() for m in _STUDY_IN_BODY.findall(b"".join(body))))
            if found:
                study_uid = found[0]
                entities += [{"kind": "study", "id": uid} for uid in found[1:]]
        client = scope.get("client")
        return AuditEntry(
            action=action,
            interaction=rule.action,
            event_code=event_code,
            subtype=subtype,
            outcome=outcome_of_status(status),
            http_status=status,
            client_id=str(getattr(principal, "subject", None) or UNKNOWN),
            tenant=getattr(principal, "tenant", None),
            role=str(getattr(principal, "role", "") or ""),
            address=str(client[0]) if client else None,
            method=method,
            path=template,
            study_uid=study_uid,
            patient_id=patient_id,
            patient_issuer=issuer if patient_id else None,
            entities=tuple(entities),
            query=query if rule.action == "search" else None,
            recorded_at=self.trail.clock(),
        )


__all__ = ["AuditMiddleware"]
