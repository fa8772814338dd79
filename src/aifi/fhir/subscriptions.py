"""FHIR R4 Subscriptions (rest-hook) as the HL7 *Subscriptions R5 Backport* IG profiles them
for R4 (http://hl7.org/fhir/uv/subscriptions-backport, STU 1.1): reading a client's
Subscription and writing the notifications. Pure: no I/O.

**Criteria style.** The IG's R4 profile (``StructureDefinition-backport-subscription``) puts a
SubscriptionTopic canonical into ``Subscription.criteria``. The hub has no SubscriptionTopic
resources; its subscriptions are *R4 criteria style* (FHIR R4 subscription.html#criteria):
``criteria`` is a search URL such as ``DiagnosticReport?status=final`` or
``Task?status=completed,failed`` over one of :data:`SUBSCRIBABLE`. Everything else follows
the IG: the channel extensions, the notification Bundle and the status Parameters. The
``topic`` parameter of the status (``StructureDefinition-backport-subscription-status-r4``,
0..1, canonical) carries that criteria string, so a receiver sees which query fired.

**Channel** (``Subscription.channel``, IG "Channels" / ``backport-subscription``):

- ``type`` must be ``rest-hook`` (the only channel the hub sends on); ``endpoint`` an
  absolute http(s) URL; ``header`` entries ``Name: value`` are sent with every POST.
- ``payload`` is the MIME type, ``application/fhir+json`` (``application/json`` is read as
  the same). Its content style comes from the ``backport-payload-content`` extension on the
  primitive (R4 JSON ``_payload.extension``): ``empty`` | ``id-only`` | ``full-resource``.
  Without the extension a given payload means ``id-only``; no payload at all means
  ``empty`` (FHIR R4 subscription.html#channel: "If the payload is not present, then there is
  no payload in the notification, just a notification").
- ``backport-heartbeat-period`` (unsignedInt seconds) asks for heartbeats;
  ``backport-timeout`` (unsignedInt seconds) bounds how long a POST may take;
  ``backport-max-count`` (positiveInt) is accepted: the hub sends one event per
  notification, which never exceeds it.

**Notifications** (IG "Notifications",
``StructureDefinition-backport-subscription-notification-r4``): a Bundle of type
``history`` whose first entry is a ``Parameters`` with the profile
``backport-subscription-status-r4`` (``subscription``, ``topic``, ``status``, ``type``
handshake | heartbeat | event-notification | query-status, ``events-since-subscription-start``,
``notification-event`` parts ``event-number``, ``timestamp``, ``focus``), then, for
``id-only`` and ``full-resource``, one entry per focus resource (``fullUrl``, ``request``,
``response``; the resource itself only for ``full-resource``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from aifi.errors import InvalidRequest, Unprocessable
from aifi.fhir.types import Resource, StoredResource

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PAYLOAD_CONTENT_URL = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD_URL = BACKPORT + "backport-heartbeat-period"
TIMEOUT_URL = BACKPORT + "backport-timeout"
MAX_COUNT_URL = BACKPORT + "backport-max-count"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"

SUBSCRIBABLE = ("Task", "DiagnosticReport", "Observation", "ImagingStudy", "Communication")
"""Resource types a Subscription's criteria may search."""

PayloadContent = Literal["empty", "id-only", "full-resource"]
NotificationKind = Literal["handshake", "heartbeat", "event-notification", "query-status"]
CONTENTS: tuple[PayloadContent, ...] = ("empty", "id-only", "full-resource")
JSON_TYPES = ("application/fhir+json", "application/json")

Event = tuple[int, datetime, StoredResource]
"""One event of a notification: (event number, when it happened, the focus resource)."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What the hub needs of one client Subscription (module docstring)."""

    resource_type: str
    """The type the criteria searches (one of :data:`SUBSCRIBABLE`)."""
    query: str
    """The criteria's query string after ``?`` (may be empty: every change of the type)."""
    endpoint: str
    content: PayloadContent
    mime_type: str = "application/fhir+json"
    heartbeat_seconds: int | None = None
    timeout_seconds: int | None = None
    max_count: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    status: str = "requested"

    @property
    def criteria(self) -> str:
        """``Type?query`` (or ``Type`` for an empty query), as written in the status."""
        return f"{self.resource_type}?{self.query}" if self.query else self.resource_type


def _extension(element: object, url: str) -> dict[str, Any] | None:
    if not isinstance(element, dict):
        return None
    for item in element.get("extension") or []:
        if isinstance(item, dict) and item.get("url") == url:
            return item
    return None


def _int_value(extension: dict[str, Any] | None, what: str, *, minimum: int) -> int | None:
    if extension is None:
        return None
    value = next(
        (
            extension[k]
            for k in ("valueUnsignedInt", "valuePositiveInt", "valueInteger")
            if k in extension
        ),
        None,
    )
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise Unprocessable(f"Subscription.channel {what} must be an integer >= {minimum}")
    return value


def parse_subscription(
    resource: Resource, *, check_criteria: Callable[[str, str], None] | None = None
) -> SubscriptionSpec:
    """Read a client's Subscription (IG ``backport-subscription`` on R4; module docstring).

    Raises ``Unprocessable`` (422) naming the element that breaks a rule: a channel other
    than ``rest-hook``, an endpoint that is not an absolute http(s) URL, a payload type other
    than FHIR JSON, an unknown payload content code, a malformed header, criteria over a type
    outside :data:`SUBSCRIBABLE`. ``check_criteria(type, query)`` (e.g. a wrapper around
    ``aifi.fhir.search.parse_search``) may raise ``InvalidRequest`` for a bad query; it is
    reported as ``Unprocessable`` too."""
    if resource.get("resourceType") != "Subscription":
        raise InvalidRequest("not a Subscription resource")
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise Unprocessable(
            "Subscription.criteria is required (e.g. 'DiagnosticReport?status=final')"
        )
    kind, _, query = criteria.strip().partition("?")
    if kind not in SUBSCRIBABLE:
        raise Unprocessable(
            f"Subscription.criteria must search one of {', '.join(SUBSCRIBABLE)}; not {kind!r}"
        )
    if check_criteria is not None:
        try:
            check_criteria(kind, query)
        except InvalidRequest as exc:
            raise Unprocessable(f"Subscription.criteria: {exc.reason}") from exc

    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise Unprocessable("Subscription.channel is required")
    channel_type = channel.get("type")
    if channel_type != "rest-hook":
        raise Unprocessable(
            f"Subscription.channel.type {channel_type!r} is not supported; the hub sends "
            "notifications by 'rest-hook' only"
        )
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unprocessable(
            f"Subscription.channel.endpoint must be an absolute http(s) URL; not {endpoint!r}"
        )

    payload = channel.get("payload")
    content_ext = _extension(channel.get("_payload"), PAYLOAD_CONTENT_URL) or _extension(
        channel, PAYLOAD_CONTENT_URL
    )
    mime_type = "application/fhir+json"
    if payload is not None:
        if not isinstance(payload, str) or payload.split(";")[0].strip().lower() not in JSON_TYPES:
            raise Unprocessable(
                f"Subscription.channel.payload {payload!r} is not supported; the hub sends "
                "application/fhir+json"
            )
        mime_type = payload
    content: PayloadContent
    if content_ext is not None:
        code = content_ext.get("valueCode")
        if code not in CONTENTS:
            raise Unprocessable(
                f"Subscription.channel.payload content {code!r} must be one of "
                + ", ".join(CONTENTS)
            )
        content = cast(PayloadContent, code)
    else:
        content = "id-only" if payload is not None else "empty"

    heartbeat = _int_value(_extension(channel, HEARTBEAT_PERIOD_URL), "heartbeat period", minimum=0)
    timeout = _int_value(_extension(channel, TIMEOUT_URL), "timeout", minimum=0)
    max_count = _int_value(_extension(channel, MAX_COUNT_URL), "max count", minimum=1)

    headers = []
    raw_headers = channel.get("header") or []
    if not isinstance(raw_headers, list):
        raise Unprocessable("Subscription.channel.header must be a list of 'Name: value' strings")
    for item in raw_headers:
        name, sep, value = str(item).partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value:
            raise Unprocessable(f"Subscription.channel.header {item!r} is not 'Name: value'")
        headers.append((name.strip(), value.strip()))

    return SubscriptionSpec(
        resource_type=kind,
        query=query,
        endpoint=str(endpoint),
        content=content,
        mime_type=mime_type,
        heartbeat_seconds=heartbeat or None,
        timeout_seconds=timeout or None,
        max_count=max_count,
        headers=tuple(headers),
        status=str(resource.get("status") or "requested"),
    )


def _instant(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resource_url(base_url: str, resource_type: str, resource_id: str) -> str:
    return f"{base_url.rstrip('/')}/{resource_type}/{resource_id}"


def status_parameters(
    *,
    subscription_ref: str,
    criteria: str,
    status: str,
    kind: NotificationKind,
    events_since_start: int,
    events: Sequence[Event] = (),
    content: PayloadContent = "id-only",
    base_url: str,
    error: str | None = None,
) -> Resource:
    """The subscription status as an R4 ``Parameters`` (IG profile
    ``backport-subscription-status-r4``); ``topic`` carries the criteria (module docstring),
    ``focus`` is left out for ``empty`` content (IG "Payload Types": empty carries no
    resource ids), ``error`` (0..*, CodeableConcept) is the last delivery error if any."""
    status_id = str(uuid.uuid4())
    parameter: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription_ref}},
        {"name": "topic", "valueCanonical": criteria},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for number, when, focus in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": _instant(when)},
        ]
        if content != "empty":
            url = resource_url(base_url, focus.resource_type, focus.resource_id)
            parts.append({"name": "focus", "valueReference": {"reference": url}})
        parameter.append({"name": "notification-event", "part": parts})
    if error:
        parameter.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {
        "resourceType": "Parameters",
        "id": status_id,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameter,
    }


def notification_bundle(
    *,
    subscription_ref: str,
    criteria: str,
    status: str,
    kind: NotificationKind,
    events_since_start: int,
    events: Sequence[Event],
    content: PayloadContent,
    base_url: str,
    error: str | None = None,
    timestamp: datetime | None = None,
) -> Resource:
    """A notification (IG ``backport-subscription-notification-r4``): Bundle ``history``,
    first the status Parameters (entry request ``GET …/Subscription/{id}/$status``, response
    200, as the IG's R4 examples show), then one entry per event's focus for ``id-only``
    (fullUrl, request and response only) and ``full-resource`` (with the resource as
    stored). ``request`` is ``POST Type`` for a first version and ``PUT Type/id`` for a
    later one, with the matching ``response.status`` (R4 Bundle: history entries carry both,
    bdl-3/bdl-4)."""
    params = status_parameters(
        subscription_ref=subscription_ref,
        criteria=criteria,
        status=status,
        kind=kind,
        events_since_start=events_since_start,
        events=events,
        content=content,
        base_url=base_url,
        error=error,
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{params['id']}",
            "resource": params,
            "request": {"method": "GET", "url": f"{subscription_ref}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        for _number, _when, focus in events:
            created = focus.version_id <= 1
            entry: dict[str, Any] = {
                "fullUrl": resource_url(base_url, focus.resource_type, focus.resource_id),
                "request": {
                    "method": "POST" if created else "PUT",
                    "url": focus.resource_type
                    if created
                    else f"{focus.resource_type}/{focus.resource_id}",
                },
                "response": {
                    "status": "201" if created else "200",
                    "etag": focus.etag,
                    "lastModified": _instant(focus.last_updated),
                },
            }
            if content == "full-resource":
                entry["resource"] = focus.content
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": _instant(timestamp or datetime.now(UTC)),
        "entry": entries,
    }


def status_searchset(status: Resource, *, self_url: str) -> Resource:
    """The answer of ``$status`` (IG ``OperationDefinition-backport-subscription-status``):
    a ``searchset`` Bundle with the status Parameters (type ``query-status``) as its match."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "total": 1,
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status['id']}",
                "resource": status,
                "search": {"mode": "match"},
            }
        ],
    }


__all__ = [
    "CONTENTS",
    "HEARTBEAT_PERIOD_URL",
    "MAX_COUNT_URL",
    "NOTIFICATION_PROFILE",
    "PAYLOAD_CONTENT_URL",
    "STATUS_PROFILE",
    "SUBSCRIBABLE",
    "TIMEOUT_URL",
    "Event",
    "NotificationKind",
    "PayloadContent",
    "SubscriptionSpec",
    "notification_bundle",
    "parse_subscription",
    "resource_url",
    "status_parameters",
    "status_searchset",
]
