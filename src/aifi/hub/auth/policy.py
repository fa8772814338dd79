"""What each endpoint needs: the one table of scopes (and audit actions) for every route.

Every route of the application must have a rule here; :func:`bind` fails at start-up when
one has none, so an endpoint added later cannot be reached without a declared scope. The
resolver (:mod:`aifi.hub.auth.resolver`) checks the rule of the matched route on every
request; :func:`openapi_security` writes the same rules into the OpenAPI document.

Scopes (SMART App Launch 2.x "Scopes and Launch Context" for FHIR; DICOMweb and the UPS-RS
worklist have no standard scope names, these are aifi-hub's, documented in the conformance
statement §10):

===================== ================================================================
``dicomweb.read``      QIDO-RS searches and WADO-RS retrieval (PS3.18 §10.4, §10.6)
``dicomweb.write``     STOW-RS (PS3.18 §10.5)
``worklist.performer`` UPS-RS as a Task Performer: search, retrieve, claim, update,
                       complete, subscribe (IHE AIW-I RAD-80..RAD-87)
``worklist.requester`` UPS-RS as a requester: create, request cancellation; signal that a
                       study is complete
``results.read``       the AI results and notifications API
``results.review``     accept or reject a supervised result
``admin``              delivery retries, routing explanations, the audit trail,
                       ``/metrics`` (an operator's client: the hub's default tenant)
``system/T.cruds``     FHIR R4 (SMART v2 system scopes; ``system/*.rs`` for every type;
                       SMART v1 ``.read``/``.write``/``.*`` are accepted as well)
===================== ================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from starlette.routing import BaseRoute

Action = Literal["create", "read", "search", "update", "delete", "execute"]

DICOMWEB_READ = "dicomweb.read"
DICOMWEB_WRITE = "dicomweb.write"
PERFORMER = "worklist.performer"
REQUESTER = "worklist.requester"
RESULTS_READ = "results.read"
RESULTS_REVIEW = "results.review"
ADMIN = "admin"

NON_FHIR_SCOPES: tuple[str, ...] = (
    DICOMWEB_READ,
    DICOMWEB_WRITE,
    PERFORMER,
    REQUESTER,
    RESULTS_READ,
    RESULTS_REVIEW,
    ADMIN,
)
"""aifi-hub's own scopes, in the order the documentation lists them."""

FHIR_INTERACTION_LETTER: dict[Action, str] = {
    "create": "c",
    "read": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """What one route (one method) needs.

    ``scopes``: any one of them grants access; empty means public (no token).
    ``fhir``: the scope is the SMART v2 system scope for the request's resource type and
    ``action`` (``system/Task.r`` for a read), not a fixed one.
    ``patient_data``: an access the audit trail records (IHE BALP).
    """

    scopes: tuple[str, ...] = ()
    action: Action | None = None
    patient_data: bool = False
    fhir: bool = False

    @property
    def public(self) -> bool:
        return not self.scopes and not self.fhir


PUBLIC = Rule()


def _dicom(scope: str, action: Action) -> Rule:
    return Rule(scopes=(scope,), action=action, patient_data=True)


def _fhir(action: Action) -> Rule:
    return Rule(action=action, patient_data=True, fhir=True)


_W = "/dicomweb/workitems/{workitem}"
_I = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
_S = "/dicomweb/studies/{study}/series/{series}"

RULES: dict[tuple[str, str], Rule] = {
    # operations and discovery: public
    ("GET", "/healthz"): PUBLIC,
    # Prometheus metrics (issue 19): an operator's client (aifi.hub.metrics.router)
    ("GET", "/metrics"): Rule(scopes=(ADMIN,), action="read"),
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/docs/assets/{asset}"): PUBLIC,  # the pages' scripts and styles (api_docs)
    ("GET", "/.well-known/smart-configuration"): PUBLIC,
    ("GET", "/fhir/.well-known/smart-configuration"): PUBLIC,
    ("GET", "/oauth/jwks"): PUBLIC,
    # the token endpoints authenticate the client themselves (RFC 6749 §2.3)
    ("POST", "/oauth/token"): PUBLIC,
    ("POST", "/oauth/introspect"): PUBLIC,
    ("POST", "/oauth/revoke"): PUBLIC,
    # DICOMweb capabilities (PS3.18 §8.9) say nothing about any hospital's data
    ("OPTIONS", "/dicomweb/"): PUBLIC,
    ("OPTIONS", "/dicomweb/{path:path}"): PUBLIC,
    # STOW-RS
    ("POST", "/dicomweb/studies"): _dicom(DICOMWEB_WRITE, "create"),
    ("POST", "/dicomweb/studies/{study}"): _dicom(DICOMWEB_WRITE, "create"),
    # QIDO-RS
    ("GET", "/dicomweb/studies"): _dicom(DICOMWEB_READ, "search"),
    ("GET", "/dicomweb/series"): _dicom(DICOMWEB_READ, "search"),
    ("GET", "/dicomweb/instances"): _dicom(DICOMWEB_READ, "search"),
    ("GET", "/dicomweb/studies/{StudyInstanceUID}/series"): _dicom(DICOMWEB_READ, "search"),
    ("GET", "/dicomweb/studies/{StudyInstanceUID}/instances"): _dicom(DICOMWEB_READ, "search"),
    (
        "GET",
        "/dicomweb/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances",
    ): _dicom(DICOMWEB_READ, "search"),
    # WADO-RS
    ("GET", "/dicomweb/studies/{study}"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _S): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I): _dicom(DICOMWEB_READ, "read"),
    ("GET", "/dicomweb/studies/{study}/metadata"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _S + "/metadata"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/metadata"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/frames/{frames}"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/bulkdata/{path:path}"): _dicom(DICOMWEB_READ, "read"),
    ("GET", "/dicomweb/studies/{study}/rendered"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _S + "/rendered"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/rendered"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/frames/{frames}/rendered"): _dicom(DICOMWEB_READ, "read"),
    ("GET", "/dicomweb/studies/{study}/thumbnail"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _S + "/thumbnail"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/thumbnail"): _dicom(DICOMWEB_READ, "read"),
    ("GET", _I + "/frames/{frames}/thumbnail"): _dicom(DICOMWEB_READ, "read"),
    # UPS-RS (PS3.18 §11; IHE AIW-I)
    ("GET", "/dicomweb/workitems"): Rule((PERFORMER, REQUESTER), "search", True),
    ("POST", "/dicomweb/workitems"): _dicom(REQUESTER, "create"),
    ("GET", _W): Rule((PERFORMER, REQUESTER), "read", True),
    ("POST", _W): _dicom(PERFORMER, "update"),
    ("PUT", _W + "/state"): _dicom(PERFORMER, "update"),
    ("POST", _W + "/cancelrequest"): Rule((REQUESTER, PERFORMER), "update", True),
    ("POST", _W + "/subscribers/{ae_title}"): Rule((PERFORMER, REQUESTER), "execute"),
    ("DELETE", _W + "/subscribers/{ae_title}"): Rule((PERFORMER, REQUESTER), "execute"),
    ("POST", _W + "/subscribers/{ae_title}/suspend"): Rule((PERFORMER, REQUESTER), "execute"),
    ("WEBSOCKET", "/dicomweb/subscribers/{ae_title}"): Rule((PERFORMER, REQUESTER), "execute"),
    # the hub's own API
    ("POST", "/api/v1/studies/{StudyInstanceUID}/complete"): _dicom(REQUESTER, "execute"),
    ("GET", "/api/v1/studies/{StudyInstanceUID}/routing"): _dicom(ADMIN, "read"),
    ("GET", "/api/v1/results"): _dicom(RESULTS_READ, "search"),
    ("GET", "/api/v1/results/{workitem_uid}"): _dicom(RESULTS_READ, "read"),
    ("POST", "/api/v1/results/{workitem_uid}/accept"): _dicom(RESULTS_REVIEW, "update"),
    ("POST", "/api/v1/results/{workitem_uid}/reject"): _dicom(RESULTS_REVIEW, "update"),
    (
        "POST",
        "/api/v1/results/{workitem_uid}/deliveries/{destination}/retry",
    ): _dicom(ADMIN, "execute"),
    ("GET", "/api/v1/notifications"): _dicom(RESULTS_READ, "search"),
    # prior studies for comparison products (issue 17): the hospital's gateway
    ("GET", "/api/v1/prior-requests"): _dicom(REQUESTER, "search"),
    ("POST", "/api/v1/prior-requests/{request_id}/studies"): _dicom(REQUESTER, "execute"),
    ("POST", "/api/v1/prior-requests/{request_id}/answer"): _dicom(REQUESTER, "execute"),
    # FHIR R4: the CapabilityStatement is public (FHIR R4 http.html#capabilities)
    ("GET", "/fhir/metadata"): PUBLIC,
    ("GET", "/fhir/Subscription/{subscription_id}/$status"): Rule(
        action="read", fhir=True, scopes=("system/Subscription.r",)
    ),
    ("GET", "/fhir/{resource_type}"): _fhir("search"),
    ("POST", "/fhir/{resource_type}"): _fhir("create"),
    ("POST", "/fhir/{resource_type}/_search"): _fhir("search"),
    ("PATCH", "/fhir/{resource_type}"): _fhir("update"),
    ("PUT", "/fhir/{resource_type}"): _fhir("update"),
    ("DELETE", "/fhir/{resource_type}"): _fhir("delete"),
    ("GET", "/fhir/{resource_type}/{resource_id}"): _fhir("read"),
    ("PUT", "/fhir/{resource_type}/{resource_id}"): _fhir("update"),
    ("DELETE", "/fhir/{resource_type}/{resource_id}"): _fhir("delete"),
    ("POST", "/fhir/{resource_type}/{resource_id}"): _fhir("update"),
    ("PATCH", "/fhir/{resource_type}/{resource_id}"): _fhir("update"),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"): _fhir("read"),
}


def iter_routes(app: FastAPI) -> Iterator[tuple[str, BaseRoute]]:
    """Every route of ``app`` with its full path template (router prefixes included),
    walking included routers: the application's route table."""

    def walk(routes: list[BaseRoute], prefix: str) -> Iterator[tuple[str, BaseRoute]]:
        for route in routes:
            context = getattr(route, "include_context", None)
            original = getattr(route, "original_router", None)
            if context is not None and original is not None:
                yield from walk(original.routes, prefix + context.prefix)
                continue
            path = getattr(route, "path", None)
            if path is not None:
                yield prefix + path, route

    yield from walk(list(app.routes), "")


def route_methods(route: BaseRoute) -> list[str]:
    if isinstance(route, APIWebSocketRoute) or type(route).__name__ == "WebSocketRoute":
        return ["WEBSOCKET"]
    methods = getattr(route, "methods", None) or set()
    return sorted(m for m in methods if m != "HEAD")


def bind(app: FastAPI) -> dict[tuple[int, str], Rule]:
    """The rule of every (route, method) of ``app``, keyed by ``(id(route), method)``.
    Raises RuntimeError naming every route without a rule: no endpoint goes undeclared."""
    bound: dict[tuple[int, str], Rule] = {}
    missing: list[str] = []
    for path, route in iter_routes(app):
        for method in route_methods(route):
            rule = RULES.get((method, path))
            if rule is None:
                missing.append(f"{method} {path}")
                continue
            bound[(id(route), method)] = rule
            # a websocket route reaches the dependency as another object: by its endpoint too
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None:
                key = (id(endpoint), method)
                if bound.get(key, rule) != rule:
                    bound[key] = Rule(scopes=("--ambiguous--",))
                else:
                    bound[key] = rule
            if method == "GET":
                bound[(id(route), "HEAD")] = rule
    if missing:
        raise RuntimeError(
            "routes without a declared scope in aifi.hub.auth.policy.RULES: " + ", ".join(missing)
        )
    return bound


_SYSTEM_SCOPE = re.compile(r"^system/([A-Z][A-Za-z]{1,63}|\*)\.(c?r?u?d?s?|read|write|\*)$")
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


def system_scope(scope: str) -> tuple[str, str] | None:
    """A SMART system scope as ``(resource type or "*", permission letters)``: v2
    ``system/<Type>.<cruds>`` (letters in that order, App Launch 2.x §Scopes) or v1
    ``read``/``write``/``*`` (as ``rs``/``cud``/``cruds``); None for anything else."""
    match = _SYSTEM_SCOPE.fullmatch(scope)
    if match is None or not match.group(2):
        return None
    return match.group(1), _V1_PERMISSIONS.get(match.group(2), match.group(2))


def fhir_scope_satisfied(granted: frozenset[str], resource_type: str, action: Action) -> bool:
    """Does one of the ``granted`` scopes allow ``action`` on ``resource_type``?"""
    letter = FHIR_INTERACTION_LETTER.get(action)
    if letter is None:
        return False
    for scope in granted:
        parsed = system_scope(scope)
        if parsed is not None and parsed[0] in (resource_type, "*") and letter in parsed[1]:
            return True
    return False


def system_scope_within(scope: str, held: str) -> bool:
    """Is the system scope ``scope`` no more than ``held`` grants? (``system/Task.rs`` is
    within ``system/*.cruds``; ``system/*.rs`` is not within ``system/Task.cruds``.)"""
    asked, holds = system_scope(scope), system_scope(held)
    if asked is None or holds is None:
        return False
    return holds[0] in (asked[0], "*") and set(asked[1]) <= set(holds[1])


def required_fhir_scope(resource_type: str, action: Action) -> str:
    return f"system/{resource_type}.{FHIR_INTERACTION_LETTER.get(action, '')}"


def openapi_security(schema: dict[str, Any], scheme: str = "smart") -> dict[str, Any]:
    """Write each operation's required scopes into the OpenAPI ``security`` field (with
    one OAuth2 client-credentials security scheme) from :data:`RULES`."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            rule = RULES.get((method.upper(), path)) or RULES.get(
                (method.upper(), path.replace("{path}", "{path:path}"))
            )
            if rule is None or not isinstance(operation, dict):
                continue
            if rule.public:
                operation["security"] = []
                continue
            if rule.fhir and not rule.scopes:
                scopes = (
                    [f"system/{{resource_type}}.{FHIR_INTERACTION_LETTER[rule.action]}"]
                    if (rule.action in FHIR_INTERACTION_LETTER)
                    else []
                )
            else:
                scopes = list(rule.scopes)
            operation["security"] = [{scheme: scopes}]
            note = "Needs one of the scopes: " + ", ".join(f"`{s}`" for s in scopes)
            operation["description"] = (operation.get("description") or "") + "\n\n" + note
    return schema


__all__ = [
    "ADMIN",
    "DICOMWEB_READ",
    "DICOMWEB_WRITE",
    "NON_FHIR_SCOPES",
    "PERFORMER",
    "PUBLIC",
    "REQUESTER",
    "RESULTS_READ",
    "RESULTS_REVIEW",
    "RULES",
    "Action",
    "Rule",
    "bind",
    "fhir_scope_satisfied",
    "iter_routes",
    "openapi_security",
    "required_fhir_scope",
    "route_methods",
    "system_scope",
    "system_scope_within",
]
