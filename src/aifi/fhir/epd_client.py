"""The outbound FHIR side: POSTing a Bundle to a peer (a subscriber's rest-hook endpoint or a
hospital's EPD) and the transaction that pushes a DiagnosticReport with its Observations.

**Sending** (:func:`post_bundle`): one POST with ``Content-Type: application/fhir+json``
on a shared ``httpx.Client`` (one per upstream, CONVENTIONS "Outbound HTTP"), with the
client's explicit timeouts. A 2xx is success. Retryable failures — network errors,
timeouts, and HTTP 408, 429, 503, 504 — raise :class:`DeliveryFailed` with ``retryable``
True; every other answer with False (the caller's outbox does the retrying with backoff;
this module never retries on its own).

**The push** (:func:`report_transaction`): a FHIR R4 ``transaction`` Bundle (http.html#transaction)
that creates the report and its Observations at the EPD with *conditional creates*
(http.html#ccreate: ``request.ifNoneExist = identifier=<system>|<value>`` from each
resource's first identifier). The EPD assigns its own ids, so the hub's ids and
``meta.versionId``/``lastUpdated`` are dropped; each resource gets a ``urn:uuid`` fullUrl
(bundle.html#references: the server resolves those to the ids it assigns), derived from its
identifier, and references between them (``DiagnosticReport.result``, an Observation's
``hasMember``/``derivedFrom`` naming another pushed Observation) are rewritten to those
urns. Pushing the same report again — a retry after a lost response — matches the existing
resources and creates nothing (http.html#ccreate: one match → 200, no new resource).

References to anything else (``subject``, ``basedOn``, ``imagingStudy``, ``device``,
``performer``, ...) name resources the EPD does not hold under the hub's ids. They become
*logical references* (references.html#logical): the ``identifier`` is kept, ``reference``
dropped and ``type`` set from it, so the EPD's server does not reject a reference it cannot
resolve. A reference without an identifier keeps only its ``display``; with neither it is
left out.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from aifi.errors import AifiError
from aifi.fhir.types import Resource

FHIR_JSON = "application/fhir+json"
RETRYABLE_STATUS = frozenset({408, 429, 503, 504})
_BODY_CHARS = 300


class DeliveryFailed(AifiError):
    """A POST did not succeed: ``reason`` says why (status and the peer's words, or the
    network error); ``retryable`` whether trying again later may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _peer_words(response: httpx.Response) -> str:
    """The peer's reason: an OperationOutcome's diagnostics/text, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:_BODY_CHARS]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        words = [
            str(issue.get("diagnostics") or (issue.get("details") or {}).get("text") or "")
            for issue in body.get("issue") or []
            if isinstance(issue, dict)
        ]
        return "; ".join(w for w in words if w)[:_BODY_CHARS]
    return ""


def post_bundle(
    client: httpx.Client,
    url: str,
    bundle: Resource,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float | None = None,
) -> httpx.Response:
    """POST ``bundle`` to ``url``; the response when it is a 2xx, else :class:`DeliveryFailed`
    (module docstring). ``headers`` are added to the request (e.g. a subscription's
    ``channel.header`` entries); ``timeout`` (seconds) overrides the client's for this
    request (e.g. a subscription's ``backport-timeout``)."""
    sent = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    sent.update(headers or {})
    try:
        response = client.post(
            url,
            json=bundle,
            headers=sent,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(
            f"no answer from {url} in time ({type(exc).__name__})", retryable=True
        ) from exc
    except httpx.TransportError as exc:
        raise DeliveryFailed(
            f"{url} not reachable: {type(exc).__name__}: {exc}", retryable=True
        ) from exc
    if response.is_success:
        return response
    words = _peer_words(response)
    reason = f"HTTP {response.status_code} {response.reason_phrase} from {url}"
    raise DeliveryFailed(
        f"{reason}: {words}" if words else reason,
        retryable=response.status_code in RETRYABLE_STATUS,
    )


def _identifier_query(resource: Resource) -> str:
    identifiers = resource.get("identifier") or []
    first = identifiers[0] if isinstance(identifiers, list) and identifiers else None
    if not isinstance(first, dict) or not first.get("value"):
        raise ValueError(
            f"{resource.get('resourceType')}/{resource.get('id')} has no identifier; a "
            "conditional create needs one"
        )
    system = str(first.get("system") or "")
    value = str(first["value"]).replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|")
    token = f"{system}|{value}" if system else value
    return "identifier=" + quote(token, safe=":/|.-_~\\")


def _urn(resource: Resource) -> str:
    """A stable urn:uuid per resource identity (its first identifier)."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, _identifier_query(resource)))


def _is_reference(value: dict[str, Any]) -> bool:
    return isinstance(value.get("reference"), str)


def _logical(ref: dict[str, Any]) -> dict[str, Any] | None:
    """A reference to a resource the EPD does not hold, as a logical reference (or None)."""
    target = str(ref["reference"])
    out = {k: v for k, v in ref.items() if k != "reference"}
    if isinstance(ref.get("identifier"), dict):
        kind = target.split("/")[-2] if target.count("/") >= 1 else ""
        if kind and "type" not in out and kind[:1].isupper():
            out["type"] = kind
        return out
    if ref.get("display"):
        return {"display": ref["display"]}
    return None


def _rewrite(node: Any, local: Mapping[str, str]) -> Any:
    """``node`` with every Reference rewritten: to a urn when it is in ``local``, else to a
    logical reference (module docstring); None when nothing of a reference is left."""
    if isinstance(node, list):
        items = [_rewrite(item, local) for item in node]
        return [item for item in items if item is not None]
    if not isinstance(node, dict):
        return node
    if _is_reference(node):
        target = str(node["reference"])
        if target.startswith(("#", "urn:")):
            return node
        key = "/".join(target.split("/")[-2:])
        if key in local:
            return {**{k: v for k, v in node.items() if k != "identifier"}, "reference": local[key]}
        return _logical(node)
    out: dict[str, Any] = {}
    for name, value in node.items():
        rewritten = _rewrite(value, local)
        if rewritten is None or rewritten == []:
            continue
        out[name] = rewritten
    return out


def _for_epd(resource: Resource) -> Resource:
    """A copy without the hub's id and version (the EPD assigns its own)."""
    out = copy.deepcopy(resource)
    out.pop("id", None)
    meta = out.pop("meta", None)
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k in ("profile", "tag", "security")}
        if kept:
            out["meta"] = kept
    return out


def report_transaction(report: Resource, observations: list[Resource]) -> Resource:
    """The transaction Bundle that creates ``report`` and ``observations`` at the EPD, each
    once (module docstring). Raises ValueError when one of them has no identifier."""
    members = [report, *observations]
    local = {f"{r['resourceType']}/{r['id']}": _urn(r) for r in members if r.get("id")}
    entries = []
    for resource in members:
        kind = str(resource["resourceType"])
        body = _rewrite(_for_epd(resource), local)
        entries.append(
            {
                "fullUrl": _urn(resource),
                "resource": body,
                "request": {
                    "method": "POST",
                    "url": kind,
                    "ifNoneExist": _identifier_query(resource),
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


__all__ = [
    "FHIR_JSON",
    "RETRYABLE_STATUS",
    "DeliveryFailed",
    "post_bundle",
    "report_transaction",
]
