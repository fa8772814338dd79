"""Cases ``hook.handshake``, ``hook.heartbeat``, ``hook.notification`` and ``hook.error``: the
EPD's rest-hook endpoint receives the notifications of a Subscription as the hub and the
gateway send them (HL7 Subscriptions R5 Backport IG for R4, STU 1.1; FHIR R4
subscription.html, channel ``rest-hook``).

The kit plays the hub: it reads a Subscription as an EPD would create it at the hub
(:func:`subscription`: criteria ``DiagnosticReport?status=final``, rest-hook to the endpoint,
``application/fhir+json`` with ``full-resource`` content, the given ``channel.header``
entries) with the hub's own parser (:func:`aifi.fhir.subscriptions.parse_subscription`),
builds each notification with the hub's own builder
(:func:`aifi.fhir.subscriptions.notification_bundle`: a ``history`` Bundle whose first entry
is the subscription status ``Parameters``) and sends it with the hub's sender
(:func:`aifi.fhir.epd_client.post_bundle`) within the hub's timeout
(:data:`~aifi.conformance_kit.epd.client.HOOK_TIMEOUT_SECONDS`). Each case passes when the
endpoint answers 2xx in time; the status and the time are recorded.

* ``hook.handshake`` — IG "Handshake": type ``handshake``, status ``requested``, no events;
* ``hook.heartbeat`` — IG "Heartbeats": type ``heartbeat``, status ``active``;
* ``hook.notification`` — IG "Event Notifications": type ``event-notification``, event 1,
  the generated DiagnosticReport as focus with its resource;
* ``hook.error`` (optional, evidence) — IG "Handling Errors": an event notification for a
  Subscription the endpoint never saw; what it answers is recorded (accepting or refusing
  are both defensible).

Subscriptions name resources under :data:`KIT_BASE`, a base that does not resolve (RFC 2606
``.invalid``): the notifications carry full resources, so the endpoint needs nothing from it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime

import httpx

from aifi.conformance_kit.epd.client import HOOK_TIMEOUT_SECONDS, Exchanges
from aifi.conformance_kit.report import Case, Report
from aifi.fhir.epd_client import FHIR_JSON, DeliveryFailed, post_bundle
from aifi.fhir.subscriptions import (
    PAYLOAD_CONTENT_URL,
    Event,
    NotificationKind,
    SubscriptionSpec,
    notification_bundle,
    parse_subscription,
    resource_url,
)
from aifi.fhir.types import Resource, StoredResource

KIT_BASE = "https://aifi-conformance-kit.invalid/fhir"
CRITERIA = "DiagnosticReport?status=final"
"""What an EPD subscribes to at the hub: final AI reports."""
IG = "HL7 Subscriptions R5 Backport IG STU 1.1"
REST_HOOK = "FHIR R4 subscription.html (channel rest-hook)"
HOOK_CASES = {
    "hook.handshake": ("The rest-hook endpoint accepts the handshake", f"{IG}: Handshake"),
    "hook.heartbeat": ("The rest-hook endpoint accepts a heartbeat", f"{IG}: Heartbeats"),
    "hook.notification": (
        "The rest-hook endpoint accepts an event notification",
        f"{IG}: Event Notifications",
    ),
}


def subscription(endpoint: str, headers: Sequence[str]) -> Resource:
    """The Subscription an EPD would create at the hub for ``endpoint`` (module docstring)."""
    channel: Resource = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": FHIR_JSON,
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": "full-resource"}]},
    }
    if headers:
        channel["header"] = list(headers)
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "aifi conformance kit",
        "criteria": CRITERIA,
        "channel": channel,
    }


def notification(
    spec: SubscriptionSpec,
    subscription_id: str,
    kind: NotificationKind,
    status: str,
    events: Sequence[Event],
    now: datetime,
) -> Resource:
    """One notification of the Subscription ``subscription_id``, as the hub builds it
    (:meth:`aifi.hub.fhir.subscription_channel.SubscriptionChannel.send`)."""
    return notification_bundle(
        subscription_ref=resource_url(KIT_BASE, "Subscription", subscription_id),
        criteria=spec.criteria,
        status=status,
        kind=kind,
        events_since_start=len(events),
        events=events,
        content=spec.content,
        base_url=KIT_BASE,
        timestamp=now,
    )


def deliver(
    case: Case, client: httpx.Client, exchanges: Exchanges, spec: SubscriptionSpec, bundle: Resource
) -> int | None:
    """POST ``bundle`` to the endpoint as the hub does; record status and time in ``case``;
    the status, or None when there was no answer in time."""
    mark = exchanges.mark()
    started = time.perf_counter()
    failure = None
    try:
        post_bundle(client, spec.endpoint, bundle, dict(spec.headers), timeout=HOOK_TIMEOUT_SECONDS)
    except DeliveryFailed as exc:
        failure = exc.reason
    seconds = round(time.perf_counter() - started, 3)
    case.timings.update(answer=seconds, timeout=HOOK_TIMEOUT_SECONDS)
    seen = exchanges.since(mark)
    parameters = bundle["entry"][0]["resource"]["parameter"]
    kind = next(p["valueCode"] for p in parameters if p["name"] == "type")
    evidence = {"notification": kind, "bundle": bundle["id"]}
    if seen:
        evidence |= seen[-1].evidence()
    else:
        evidence |= {"request": f"POST {spec.endpoint}", "error": failure}
    case.note(**evidence)
    if failure is not None and not seen:
        case.failed(f"no answer: {failure}")
        return None
    status = seen[-1].status
    if failure is not None:
        case.failed(f"answered {status} in {seconds:.3f} s: {failure}")
    elif seconds > HOOK_TIMEOUT_SECONDS:  # httpx's timeout bounds each read, not the whole
        case.failed(
            f"answered {status} after {seconds:.3f} s, later than the hub's "
            f"{HOOK_TIMEOUT_SECONDS:g} s"
        )
    else:
        case.passed(
            f"answered {status} in {seconds:.3f} s (the hub waits {HOOK_TIMEOUT_SECONDS:g} s)"
        )
    return status


def check_error(
    case: Case,
    client: httpx.Client,
    exchanges: Exchanges,
    spec: SubscriptionSpec,
    focus: StoredResource,
    now: datetime,
) -> None:
    """``hook.error`` (module docstring)."""
    unknown = notification(
        spec,
        f"unknown-{uuid.uuid4().hex[:12]}",
        "event-notification",
        "active",
        [(1, now, focus)],
        now,
    )
    status = deliver(case, client, exchanges, spec, unknown)
    if status is None:
        case.warned("no answer to a notification of a Subscription it does not know")
    elif status < 300:
        case.passed(f"answered {status}: it accepts a notification of an unknown Subscription")
    elif status < 500:
        case.passed(f"answered {status}: it refuses a notification of an unknown Subscription")
    else:
        case.warned(f"answered {status}: a server error for an unknown Subscription")


def hook_cases(
    report: Report,
    client: httpx.Client,
    exchanges: Exchanges,
    spec: SubscriptionSpec | None,
    focus: StoredResource,
    now: datetime,
) -> None:
    """The ``hook.*`` cases; all skipped (and optional) without an endpoint (``spec`` None)."""
    required = spec is not None
    subscription_id = uuid.uuid4().hex
    messages: dict[str, tuple[NotificationKind, str, list[Event]]] = {
        "hook.handshake": ("handshake", "requested", []),
        "hook.heartbeat": ("heartbeat", "active", []),
        "hook.notification": ("event-notification", "active", [(1, now, focus)]),
    }
    for case_id, (title, section) in HOOK_CASES.items():
        case = report.case(case_id, title, [section, REST_HOOK], required=required)
        if spec is None:
            case.skipped("no --endpoint given: the rest-hook endpoint was not tested")
            continue
        kind, status, events = messages[case_id]
        with case.timed():
            bundle = notification(spec, subscription_id, kind, status, events, now)
            deliver(case, client, exchanges, spec, bundle)
    error = report.case(
        "hook.error",
        "How the rest-hook endpoint answers a notification of an unknown Subscription",
        [f"{IG}: Handling Errors", REST_HOOK],
        required=False,
    )
    if spec is None:
        error.skipped("no --endpoint given: the rest-hook endpoint was not tested")
        return
    with error.timed():
        check_error(error, client, exchanges, spec, focus, now)


def read_subscription(endpoint: str, headers: Sequence[str]) -> SubscriptionSpec:
    """The Subscription for ``endpoint`` read by the hub's parser; raises
    :class:`aifi.errors.Unprocessable` for an endpoint or header the hub would refuse."""
    return parse_subscription(subscription(endpoint, headers))


__all__ = [
    "CRITERIA",
    "KIT_BASE",
    "deliver",
    "hook_cases",
    "notification",
    "read_subscription",
    "subscription",
]
