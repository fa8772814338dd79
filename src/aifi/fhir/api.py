"""The FHIR R4 RESTful API (http.html): capabilities, read (and vread of the current
version), search (GET and POST ``_search``), create, update and delete.

The router knows no storage: it calls the :class:`~aifi.fhir.types.FhirBackend` in
``request.app.state.fhir_backend`` for the caller's tenant (:data:`aifi.principal.PrincipalDep`)
and builds absolute URLs from ``request.app.state.fhir_base_url``. Errors are
:mod:`aifi.errors` exceptions; the app turns them into OperationOutcomes with
:func:`outcome_response` (operationoutcome.html, http.html#2.21.0.17).
"""

from __future__ import annotations

import importlib
import json
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from aifi.errors import (
    HubError,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from aifi.fhir.bundles import outcome, searchset
from aifi.fhir.capability import INTERACTIONS, capability_statement
from aifi.fhir.search import JSON_FORMATS, parse_search
from aifi.fhir.types import FhirBackend, Resource, StoredResource, WriteResult
from aifi.principal import PrincipalDep

FHIR_MEDIA_TYPE = "application/fhir+json; charset=utf-8"
BODY_TYPES = frozenset({"application/fhir+json", "application/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY = 1024 * 1024
"""Largest accepted request body (1 MiB); larger is 413."""

_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    502: "transient",
    504: "timeout",
}
"""HTTP status → OperationOutcome issue type (valueset-issue-type.html). An error may name
its own with an ``issue_code`` attribute."""


class FhirResponse(Response):
    """A FHIR JSON body (http.html#mime-type)."""

    media_type = FHIR_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class MalformedBody(InvalidRequest):
    """The body is not a JSON object / not a FHIR resource (issue type ``structure``)."""

    issue_code = "structure"


class UnsupportedType(NotFound):
    """The server has no such resource type (issue type ``not-supported``)."""

    issue_code = "not-supported"


def outcome_response(error: HubError) -> Response:
    """The OperationOutcome answering ``error`` with its HTTP status. An error may carry
    ``issue_code`` (issue type) and ``expressions`` (paths of the elements at fault), as
    :class:`aifi.fhir.resources.InvalidResource` does."""
    code = error.issue_code or _ISSUE_CODES.get(error.status_code, "exception")
    body = outcome(code, error.reason, expression=[str(e) for e in error.expressions])
    return FhirResponse(body, status_code=error.status_code)


# --- request helpers -------------------------------------------------------------------------


def _backend(request: Request) -> FhirBackend:
    backend: FhirBackend = request.app.state.fhir_backend
    return backend


def _base(request: Request) -> str:
    base = getattr(request.app.state, "fhir_base_url", None)
    if base:
        return str(base).rstrip("/")
    return str(request.url_for("fhir_metadata")).removesuffix("/metadata")


def _prefer(request: Request) -> dict[str, str]:
    """``Prefer`` preferences (RFC 7240; http.html#ops, search.html#errors)."""
    prefs: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            key, _, value = part.split(";", 1)[0].partition("=")
            prefs[key.strip().lower()] = value.strip().strip('"').lower()
    return prefs


def _check_format(request: Request) -> None:
    """JSON only (http.html#mime-type): ``_format`` or an ``Accept`` that rules out JSON
    is 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt not in JSON_FORMATS:
        raise NotAcceptable(f"_format={fmt}: only JSON (application/fhir+json) is served")
    accept = request.headers.get("accept", "").lower()
    if accept and not any(t in accept for t in ("json", "*/*", "application/*")):
        raise NotAcceptable(f"Accept: {accept}: only application/fhir+json is served")


_TYPE_LEVEL = {"search-type": "GET", "create": "POST"}
_INSTANCE_LEVEL = {"read": "GET", "update": "PUT", "delete": "DELETE"}


def _check_type(resource_type: str, interaction: str, *, instance: bool) -> Response | None:
    """404 for a type the server does not have; a 405 response (with ``Allow``) for an
    interaction the type does not support (the table in :mod:`aifi.fhir.capability`)."""
    supported = INTERACTIONS.get(resource_type)
    if supported is None:
        raise UnsupportedType(f"Resource type {resource_type!r} is not supported")
    if interaction in supported:
        return None
    methods = _INSTANCE_LEVEL if instance else _TYPE_LEVEL
    allow = sorted({method for name, method in methods.items() if name in supported})
    return FhirResponse(
        outcome("not-supported", f"{interaction} is not supported for {resource_type}"),
        status_code=405,
        headers={"Allow": ", ".join(allow)},
    )


async def _read_body(request: Request, media_types: frozenset[str]) -> bytes:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in media_types:
        wanted = " or ".join(sorted(media_types))
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not accepted; use {wanted}"
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise PayloadTooLarge(f"The body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"The body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _resource_body(request: Request, resource_type: str) -> Resource:
    """The request's resource, checked against the R4 model (helper M's
    :func:`aifi.fhir.resources.parse_resource`)."""
    raw = await _read_body(request, BODY_TYPES)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedBody(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedBody("The body must be a JSON object (a FHIR resource)")
    given = data.get("resourceType")
    if given != resource_type:
        raise MalformedBody(
            f"resourceType must be {resource_type!r}, not {given!r}"
            if given
            else "resourceType is missing"
        )
    # Imported here: aifi.fhir.resources is written alongside this module (helper M).
    resources = importlib.import_module("aifi.fhir.resources")
    parsed: Resource = resources.parse_resource(data, expected_type=resource_type)
    return parsed


def _etag_version(value: str, header: str) -> int:
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidRequest(f'{header}: {value!r} is not a version ETag like W/"3"')
    return int(text)


def _http_date(stored: StoredResource) -> str:
    return format_datetime(stored.last_updated, usegmt=True)


def _resource_response(stored: StoredResource, *, status: int = 200) -> Response:
    headers = {"ETag": stored.etag, "Last-Modified": _http_date(stored)}
    return FhirResponse(stored.content, status_code=status, headers=headers)


def _write_response(request: Request, result: WriteResult, *, status: int) -> Response:
    """The answer to create/update with ``Prefer: return=`` (http.html#ops)."""
    stored = result.stored
    headers = {"ETag": stored.etag, "Last-Modified": _http_date(stored)}
    if status == 201:
        headers["Location"] = (
            f"{_base(request)}/{stored.resource_type}/{stored.resource_id}"
            f"/_history/{stored.version_id}"
        )
    wanted = _prefer(request).get("return", "representation")
    if wanted == "minimal":
        return Response(status_code=status, headers=headers)
    if wanted == "operationoutcome":
        text = " ".join(result.messages) or (
            f"{stored.resource_type}/{stored.resource_id} version {stored.version_id}"
        )
        report = outcome("informational", text, severity="information")
        return FhirResponse(report, status_code=status, headers=headers)
    return FhirResponse(stored.content, status_code=status, headers=headers)


# --- the router ------------------------------------------------------------------------------


def build_router() -> APIRouter:
    """The FHIR REST API, mounted by the app at its FHIR base (``/fhir``)."""
    router = APIRouter(tags=["fhir"])

    @router.get("/metadata", name="fhir_metadata")
    def metadata(request: Request) -> Response:
        """capabilities interaction (http.html#capabilities)."""
        _check_format(request)
        token_path = getattr(request.app.state, "oauth_token_path", None)
        base = _base(request)
        token_url = base.rsplit("/fhir", 1)[0] + token_path if token_path else None
        return FhirResponse(capability_statement(base, token_url))

    async def _search(
        request: Request, principal: PrincipalDep, resource_type: str, params: list[tuple[str, str]]
    ) -> Response:
        refused = _check_type(resource_type, "search-type", instance=False)
        if refused is not None:
            return refused
        _check_format(request)
        strict = _prefer(request).get("handling") == "strict"
        query = parse_search(resource_type, params, strict=strict)
        result = await run_in_threadpool(_backend(request).search, principal.tenant, query)
        return FhirResponse(searchset(_base(request), query, params, result))

    @router.get("/{resource_type}")
    async def search_get(request: Request, resource_type: str, principal: PrincipalDep) -> Response:
        """search-type interaction with GET (search.html#search)."""
        params = list(request.query_params.multi_items())
        return await _search(request, principal, resource_type, params)

    @router.post("/{resource_type}/_search")
    async def search_post(
        request: Request, resource_type: str, principal: PrincipalDep
    ) -> Response:
        """search-type with POST and a form body (http.html#search)."""
        if resource_type not in INTERACTIONS:
            raise UnsupportedType(f"Resource type {resource_type!r} is not supported")
        body = await _read_body(request, frozenset({FORM_TYPE}))
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise InvalidRequest("The form body is not UTF-8") from exc
        params = [*request.query_params.multi_items(), *form]
        return await _search(request, principal, resource_type, params)

    @router.get("/{resource_type}/{resource_id}")
    async def read(
        request: Request, resource_type: str, resource_id: str, principal: PrincipalDep
    ) -> Response:
        """read interaction (http.html#read); ``If-None-Match`` → 304 (http.html#cread)."""
        refused = _check_type(resource_type, "read", instance=True)
        if refused is not None:
            return refused
        _check_format(request)
        backend = _backend(request)
        stored = await run_in_threadpool(backend.read, principal.tenant, resource_type, resource_id)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match:
            tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            if "*" in tags or f'"{stored.version_id}"' in tags:
                headers = {"ETag": stored.etag, "Last-Modified": _http_date(stored)}
                return Response(status_code=304, headers=headers)
        return _resource_response(stored)

    @router.get("/{resource_type}/{resource_id}/_history/{version_id}")
    async def vread(
        request: Request,
        resource_type: str,
        resource_id: str,
        version_id: str,
        principal: PrincipalDep,
    ) -> Response:
        """vread (http.html#vread) of the current version: earlier ones are not kept."""
        refused = _check_type(resource_type, "vread", instance=True)
        if refused is not None:
            return refused
        _check_format(request)
        backend = _backend(request)
        stored = await run_in_threadpool(backend.read, principal.tenant, resource_type, resource_id)
        if version_id != str(stored.version_id):
            raise NotFound(
                f"{resource_type}/{resource_id} version {version_id} is not kept "
                f"(the current version is {stored.version_id})"
            )
        return _resource_response(stored)

    @router.post("/{resource_type}")
    async def create(request: Request, resource_type: str, principal: PrincipalDep) -> Response:
        """create (http.html#create); ``If-None-Exist`` → conditional create (http.html#ccreate)."""
        refused = _check_type(resource_type, "create", instance=False)
        if refused is not None:
            return refused
        _check_format(request)
        resource = await _resource_body(request, resource_type)
        resource.pop("id", None)
        condition = request.headers.get("if-none-exist")
        if_none_exist = None
        if condition is not None:
            pairs = parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True)
            if_none_exist = parse_search(resource_type, pairs, strict=True)

        def _create() -> WriteResult:
            return _backend(request).create(principal.tenant, resource, if_none_exist=if_none_exist)

        result = await run_in_threadpool(_create)
        return _write_response(request, result, status=201 if result.created else 200)

    @router.put("/{resource_type}/{resource_id}")
    async def update(
        request: Request, resource_type: str, resource_id: str, principal: PrincipalDep
    ) -> Response:
        """update (http.html#update); ``If-Match`` for version-aware updates
        (http.html#concurrency)."""
        refused = _check_type(resource_type, "update", instance=True)
        if refused is not None:
            return refused
        _check_format(request)
        resource = await _resource_body(request, resource_type)
        if resource.get("id") != resource_id:
            raise InvalidRequest(
                f"The body's id {resource.get('id')!r} must be the id in the URL ({resource_id!r})"
            )
        header = request.headers.get("if-match")
        if_match = _etag_version(header, "If-Match") if header else None

        def _update() -> WriteResult:
            return _backend(request).update(principal.tenant, resource, if_match=if_match)

        result = await run_in_threadpool(_update)
        return _write_response(request, result, status=201 if result.created else 200)

    @router.delete("/{resource_type}/{resource_id}")
    async def delete(
        request: Request, resource_type: str, resource_id: str, principal: PrincipalDep
    ) -> Response:
        """delete (http.html#delete)."""
        refused = _check_type(resource_type, "delete", instance=True)
        if refused is not None:
            return refused
        backend = _backend(request)
        await run_in_threadpool(backend.delete, principal.tenant, resource_type, resource_id)
        return Response(status_code=204)

    def type_level_other(resource_type: str) -> Response:
        """Conditional update/delete and patch are not supported (405)."""
        refused = _check_type(resource_type, "conditional update/delete or patch", instance=False)
        assert refused is not None
        return refused

    def instance_level_other(resource_type: str, resource_id: str) -> Response:
        """patch is not supported; POST on an instance is no interaction (405)."""
        refused = _check_type(resource_type, "patch", instance=True)
        assert refused is not None
        return refused

    # one route per method, so that every OpenAPI operation has its own id
    for method in ("PUT", "DELETE", "PATCH"):
        router.add_api_route(
            "/{resource_type}",
            type_level_other,
            methods=[method],
            name=f"type_level_{method.lower()}",
        )
    for method in ("POST", "PATCH"):
        router.add_api_route(
            "/{resource_type}/{resource_id}",
            instance_level_other,
            methods=[method],
            name=f"instance_level_{method.lower()}",
        )

    return router


__all__ = ["FhirResponse", "build_router", "outcome_response"]
