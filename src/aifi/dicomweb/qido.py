"""QIDO-RS: the Search transaction (PS3.18 §10.6) on its six target resources.

``GET {s}/studies``, ``{s}/series``, ``{s}/instances``, ``{s}/studies/{study}/series``,
``{s}/studies/{study}/instances`` and ``{s}/studies/{study}/series/{series}/instances``.
Query parameters are validated by :func:`aifi.dicomweb.qido_query.parse_query` and run by the
store in a worker thread; this module negotiates the media type and writes the response.

Decisions, with the sections they rest on:

* **No match → 200 with an empty list** (``[]``; for XML a multipart body with no part).
  PS3.18 up to 2024 asked for 204 in §8.3.4.4.1; CP-2473 (2025) replaced it with 200 and an
  empty list, which the current edition's status tables state, because a 204 cannot carry
  a payload (RFC 9110 §15.3.5) and C-FIND reports zero matches as Success.
* **limit above the maximum → clamped**, with a ``Warning: 299`` saying so and the usual
  "additional results" Warning: §8.3.4.4.1 defines the results returned as the minimum of
  the matches left, the origin server's maximum and ``limit``. 413 is kept for searches
  the hub cannot evaluate within its bounds (§10.6.3: "repeat the request with paging or
  with a narrower query").
* **Paging:** stable order (arrival order); when more matches remain, ``Warning: 299
  {service}: There are {n} additional results that can be requested`` (§8.3.4.4.1).
* **fuzzymatching=true** is performed for person names (semantics in
  :mod:`aifi.dicomweb.matching`); other keys in the same search are matched literally and a
  Warning says which (§8.3.4.2).
* **Unknown or malformed parameters → 400** with a ``Warning: 299`` reason (§10.6.3, Table
  "Status Code Meaning"). Keys of a deeper level than the resource (``Modality`` in a study
  search) are refused the same way. ``includefield=all`` combined with other values means
  all.
* **Media types:** ``application/dicom+json`` (also for ``application/json``, ``*/*`` or
  no Accept), ``multipart/related; type="application/dicom+xml"`` with one Native DICOM
  Model part per result (§8.7.3.3.2, §10.6.3.2); anything else 406. The ``accept`` query
  parameter (§8.3.3.1) overrides the header; ``charset`` is accepted and ignored (the
  response is always UTF-8).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from aifi import dicom_json
from aifi.dicom_json import DicomJson
from aifi.dicomweb import multipart
from aifi.dicomweb.deps import ConfigDep, StoreDep
from aifi.dicomweb.dicomjson import absolutize_bulkdata
from aifi.dicomweb.dicomxml import json_to_native_xml
from aifi.dicomweb.errors import warning_header
from aifi.dicomweb.media import parse_accept
from aifi.dicomweb.qido_query import QidoQuery, parse_query
from aifi.dicomweb.query_attributes import (
    RETRIEVE_URL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    QueryLevel,
)
from aifi.errors import InvalidRequest, NotAcceptable
from aifi.principal import PrincipalDep

router = APIRouter()

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
_CONTENT_PARAMETERS = ("accept", "charset")


def negotiate(accept: str | None) -> str:
    """The media type of the answer: :data:`DICOM_JSON` or :data:`DICOM_XML` (as the type of
    a multipart/related body); :class:`NotAcceptable` when the client accepts neither."""
    for media in parse_accept(accept):
        if media.mime in ("application/json", DICOM_JSON) or media.matches(DICOM_JSON):
            return DICOM_JSON
        if media.matches("multipart/related") and media.admits_part(DICOM_XML):
            return DICOM_XML
    raise NotAcceptable(
        f"QIDO-RS results are available as {DICOM_JSON} or "
        f'multipart/related; type="{DICOM_XML}", not {accept}'
    )


def retrieve_url(service: str, level: QueryLevel, dataset: DicomJson) -> str:
    """The WADO-RS URL of a result (Retrieve URL (0008,1190), PS3.18 §10.6.3.3)."""
    url = f"{service}/studies/{dicom_json.text(dataset, STUDY_INSTANCE_UID) or ''}"
    if level is not QueryLevel.STUDY:
        url += f"/series/{dicom_json.text(dataset, SERIES_INSTANCE_UID) or ''}"
    if level is QueryLevel.IMAGE:
        url += f"/instances/{dicom_json.text(dataset, SOP_INSTANCE_UID) or ''}"
    return url


def _finish(service: str, query: QidoQuery, matches: list[DicomJson]) -> list[DicomJson]:
    out = []
    for dataset in matches:
        url = retrieve_url(service, query.level, dataset)
        if query.level is QueryLevel.IMAGE and (query.include_all or query.include):
            dataset = absolutize_bulkdata(dataset, url)
        dataset[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        out.append({tag: dataset[tag] for tag in sorted(dataset)})
    return out


async def _search(
    request: Request,
    store: StoreDep,
    config: ConfigDep,
    principal: PrincipalDep,
    level: QueryLevel,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    params = request.query_params.multi_items()
    accept_param = [v for k, v in params if k.lower() == "accept"]
    media = negotiate(", ".join(accept_param) if accept_param else request.headers.get("accept"))
    query = parse_query(
        [(k, v) for k, v in params if k.lower() not in _CONTENT_PARAMETERS],
        level,
        study_instance_uid=study,
        series_instance_uid=series,
        default_limit=config.qido_default_limit,
        max_limit=config.qido_max_limit,
    )
    if query.offset > config.qido_max_offset:
        raise InvalidRequest(
            f"The offset {query.offset} exceeds the maximum of {config.qido_max_offset}; "
            "narrow the search instead"
        )
    result = await run_in_threadpool(store.query, principal.tenant, query)
    service = config.service_url(request)
    matches = _finish(service, query, result.matches)

    warnings = [*query.notices, *result.warnings]
    if result.remaining > 0:
        warnings.append(f"There are {result.remaining} additional results that can be requested")
    if media == DICOM_JSON:
        body = json.dumps(matches, ensure_ascii=False, separators=(",", ":")).encode()
        response = Response(body, media_type=DICOM_JSON)
    else:
        boundary = multipart.new_boundary()
        parts = [(DICOM_XML, json_to_native_xml(m)) for m in matches]
        response = Response(
            multipart.encode(parts, boundary),
            headers={"Content-Type": multipart.content_type(DICOM_XML, boundary)},
        )
    for text in warnings:
        response.headers.append("Warning", warning_header(service, text))
    return response


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Matching results (possibly none)",
        "content": {DICOM_JSON: {}, f'multipart/related; type="{DICOM_XML}"': {}},
    },
    400: {"description": "Invalid query parameter (reason in the Warning header)"},
    406: {"description": "No acceptable media type"},
    413: {"description": "The search is too broad; narrow it"},
}


@router.get("/studies", summary="SearchForStudies (PS3.18 §10.6)", responses=_RESPONSES)
async def search_for_studies(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> Response:
    return await _search(request, store, config, principal, QueryLevel.STUDY)


@router.get("/series", summary="SearchForSeries (all studies)", responses=_RESPONSES)
async def search_for_series(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> Response:
    return await _search(request, store, config, principal, QueryLevel.SERIES)


@router.get("/instances", summary="SearchForInstances (all studies)", responses=_RESPONSES)
async def search_for_instances(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> Response:
    return await _search(request, store, config, principal, QueryLevel.IMAGE)


@router.get(
    "/studies/{StudyInstanceUID}/series",
    summary="SearchForSeries in a study",
    responses=_RESPONSES,
)
async def search_for_study_series(
    StudyInstanceUID: str,
    request: Request,
    store: StoreDep,
    config: ConfigDep,
    principal: PrincipalDep,
) -> Response:
    return await _search(
        request, store, config, principal, QueryLevel.SERIES, study=StudyInstanceUID
    )


@router.get(
    "/studies/{StudyInstanceUID}/instances",
    summary="SearchForInstances in a study",
    responses=_RESPONSES,
)
async def search_for_study_instances(
    StudyInstanceUID: str,
    request: Request,
    store: StoreDep,
    config: ConfigDep,
    principal: PrincipalDep,
) -> Response:
    return await _search(
        request, store, config, principal, QueryLevel.IMAGE, study=StudyInstanceUID
    )


@router.get(
    "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances",
    summary="SearchForInstances in a series",
    responses=_RESPONSES,
)
async def search_for_series_instances(
    StudyInstanceUID: str,
    SeriesInstanceUID: str,
    request: Request,
    store: StoreDep,
    config: ConfigDep,
    principal: PrincipalDep,
) -> Response:
    return await _search(
        request,
        store,
        config,
        principal,
        QueryLevel.IMAGE,
        study=StudyInstanceUID,
        series=SeriesInstanceUID,
    )
