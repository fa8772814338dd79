"""Capabilities (PS3.18 §8.9, the Retrieve Capabilities transaction).

``OPTIONS {service}/`` (and ``OPTIONS`` on any resource path under it) answers with an
``Allow`` header and a description of the service's resources: a WADL document
(``application/vnd.sun.wadl+xml``, the default PS3.18 §8.9.2 names) or the same content as
JSON (``application/json``) when the Accept header prefers it. The description is data
(:data:`RESOURCES`), not code, so the conformance statement and this answer cannot drift:
``docs/conformance-statement.md`` lists the same resources. The ``Allow`` header of a
concrete path (``OPTIONS {service}/workitems/1.2.3``) names the methods of every resource
template of the same shape, plus OPTIONS.

UPS-RS (PS3.18 ch. 11, :mod:`aifi.dicomweb.ups_rs`) is listed with the other services. Its
event channel (``/subscribers/{aetitle}``, §11.13) is a GET that upgrades to a WebSocket
(RFC 6455); the event reports are DICOM JSON text messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from fastapi import APIRouter, Request, Response

from aifi.dicomweb.deps import ConfigDep
from aifi.dicomweb.media import parse_accept
from aifi.errors import NotAcceptable

router = APIRouter()

WADL = "application/vnd.sun.wadl+xml"
DICOM_JSON = "application/dicom+json"
DICOM_XML = 'multipart/related; type="application/dicom+xml"'
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
IMAGES = ("image/jpeg", "image/png")

QIDO_PARAMS = ("{attributeID}", "includefield", "fuzzymatching", "limit", "offset")
RENDER_PARAMS = ("window", "viewport", "quality")


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    produces: tuple[str, ...]
    consumes: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    transaction: str = ""


@dataclass(frozen=True, slots=True)
class Resource:
    path: str
    methods: tuple[Method, ...]


def _retrieve(transaction: str) -> Method:
    return Method("GET", (DICOM_MULTIPART,), transaction=transaction)


def _search(level: str) -> Method:
    return Method(
        "GET",
        (DICOM_JSON, DICOM_XML),
        params=QIDO_PARAMS,
        transaction=f"QIDO-RS Search for {level}",
    )


def _metadata() -> Method:
    return Method("GET", (DICOM_JSON, DICOM_XML), transaction="WADO-RS Retrieve Metadata")


def _rendered() -> Method:
    return Method("GET", IMAGES, params=RENDER_PARAMS, transaction="WADO-RS Retrieve Rendered")


def _thumbnail() -> Method:
    return Method("GET", IMAGES, params=("viewport",), transaction="WADO-RS Retrieve Thumbnail")


STOW = Method(
    "POST",
    (DICOM_JSON, "application/dicom+xml"),
    consumes=(DICOM_MULTIPART,),
    transaction="STOW-RS Store Instances",
)


def _ups(
    name: str,
    transaction: str,
    *,
    produces: tuple[str, ...] = (),
    consumes: tuple[str, ...] = (),
    params: tuple[str, ...] = (),
) -> Method:
    """A UPS-RS method (PS3.18 ch. 11): DICOM JSON only; most answer with no payload."""
    return Method(name, produces, consumes, params, f"UPS-RS {transaction}")


UPS_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "workitems",
        (
            _ups("POST", "Create Workitem", consumes=(DICOM_JSON,), params=("workitem",)),
            _ups("GET", "Search for Workitems", produces=(DICOM_JSON,), params=QIDO_PARAMS),
        ),
    ),
    Resource(
        "workitems/{workitem}",
        (
            _ups("GET", "Retrieve Workitem", produces=(DICOM_JSON,)),
            _ups("POST", "Update Workitem", consumes=(DICOM_JSON,), params=("transaction",)),
        ),
    ),
    Resource(
        "workitems/{workitem}/state",
        (_ups("PUT", "Change Workitem State", consumes=(DICOM_JSON,)),),
    ),
    Resource(
        "workitems/{workitem}/cancelrequest",
        (_ups("POST", "Request Cancellation", consumes=(DICOM_JSON,)),),
    ),
    Resource(
        "workitems/{workitem}/subscribers/{aetitle}",
        (
            _ups("POST", "Subscribe", params=("deletionlock", "filter", "{attributeID}")),
            _ups("DELETE", "Unsubscribe"),
        ),
    ),
    Resource(
        "workitems/{workitem}/subscribers/{aetitle}/suspend",
        (_ups("POST", "Suspend Subscription"),),
    ),
    Resource(
        "subscribers/{aetitle}",
        (_ups("GET", "Open Event Channel", produces=(DICOM_JSON,)),),
    ),
)
"""UPS-RS resources (PS3.18 §11.4-§11.13), routes in :mod:`aifi.dicomweb.ups_rs`."""

RESOURCES: tuple[Resource, ...] = (
    Resource("studies", (_search("Studies"), STOW)),
    Resource("series", (_search("Series"),)),
    Resource("instances", (_search("Instances"),)),
    Resource("studies/{study}", (_retrieve("WADO-RS Retrieve Study"), STOW)),
    Resource("studies/{study}/metadata", (_metadata(),)),
    Resource("studies/{study}/rendered", (_rendered(),)),
    Resource("studies/{study}/thumbnail", (_thumbnail(),)),
    Resource("studies/{study}/series", (_search("Series"),)),
    Resource("studies/{study}/instances", (_search("Instances"),)),
    Resource("studies/{study}/series/{series}", (_retrieve("WADO-RS Retrieve Series"),)),
    Resource("studies/{study}/series/{series}/metadata", (_metadata(),)),
    Resource("studies/{study}/series/{series}/rendered", (_rendered(),)),
    Resource("studies/{study}/series/{series}/thumbnail", (_thumbnail(),)),
    Resource("studies/{study}/series/{series}/instances", (_search("Instances"),)),
    Resource(
        "studies/{study}/series/{series}/instances/{instance}",
        (_retrieve("WADO-RS Retrieve Instance"),),
    ),
    Resource("studies/{study}/series/{series}/instances/{instance}/metadata", (_metadata(),)),
    Resource("studies/{study}/series/{series}/instances/{instance}/rendered", (_rendered(),)),
    Resource("studies/{study}/series/{series}/instances/{instance}/thumbnail", (_thumbnail(),)),
    Resource(
        "studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        (Method("GET", (OCTETS, DICOM_MULTIPART), transaction="WADO-RS Retrieve Frames"),),
    ),
    Resource(
        "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        (_rendered(),),
    ),
    Resource(
        "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
        (_thumbnail(),),
    ),
    Resource(
        "studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}",
        (Method("GET", (OCTETS,), transaction="WADO-RS Retrieve Bulkdata"),),
    ),
    *UPS_RESOURCES,
)


def as_wadl(base: str) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<application xmlns="http://wadl.dev.java.net/2009/02">',
        f"  <resources base={quoteattr(base + '/')}>",
    ]
    for resource in RESOURCES:
        lines.append(f"    <resource path={quoteattr(resource.path)}>")
        for method in resource.methods:
            lines.append(
                f"      <method name={quoteattr(method.name)} id={quoteattr(method.transaction)}>"
            )
            if method.params or method.consumes:
                lines.append("        <request>")
                for param in method.params:
                    lines.append(f'          <param name={quoteattr(param)} style="query"/>')
                for media in method.consumes:
                    lines.append(f"          <representation mediaType={quoteattr(media)}/>")
                lines.append("        </request>")
            if method.produces:
                lines.append("        <response>")
                for media in method.produces:
                    lines.append(f"          <representation mediaType={quoteattr(media)}/>")
                lines.append("        </response>")
            lines.append("      </method>")
        lines.append("    </resource>")
    lines += ["  </resources>", "</application>", ""]
    return "\n".join(lines)


def as_json(base: str) -> dict[str, object]:
    return {
        "base": base + "/",
        "resources": [
            {
                "path": r.path,
                "methods": [
                    {
                        "name": m.name,
                        "transaction": m.transaction,
                        "produces": list(m.produces),
                        "consumes": list(m.consumes),
                        "queryParameters": list(m.params),
                    }
                    for m in r.methods
                ],
            }
            for r in RESOURCES
        ],
    }


def _allow(path: str) -> str:
    methods = {"OPTIONS"}
    for resource in RESOURCES:
        if _same_shape(resource.path, path):
            methods.update(m.name for m in resource.methods)
    return ", ".join(sorted(methods))


def _same_shape(template: str, path: str) -> bool:
    t_parts = [p for p in template.split("/") if p]
    p_parts = [p for p in path.split("/") if p]
    if len(t_parts) != len(p_parts):
        return False
    return all(t.startswith("{") or t == p for t, p in zip(t_parts, p_parts, strict=True))


def _options(request: Request, config: ConfigDep, path: str) -> Response:
    base = config.service_url(request)
    for media in parse_accept(request.headers.get("accept")):
        if media.matches(WADL) or media.mime in ("application/xml", "text/xml"):
            return Response(as_wadl(base), media_type=WADL, headers={"Allow": _allow(path)})
        if media.matches("application/json") or media.mime == DICOM_JSON:
            return Response(
                json.dumps(as_json(base)),
                media_type="application/json",
                headers={"Allow": _allow(path)},
            )
    raise NotAcceptable(
        "The capabilities are available as application/vnd.sun.wadl+xml or application/json"
    )


@router.options("/")
def service_capabilities(request: Request, config: ConfigDep) -> Response:
    """PS3.18 §8.9: the service's resources, methods and media types."""
    return _options(request, config, "")


@router.options("/{path:path}")
def resource_capabilities(request: Request, config: ConfigDep, path: str) -> Response:
    """OPTIONS on a resource: its Allow header and the service description."""
    return _options(request, config, path)
