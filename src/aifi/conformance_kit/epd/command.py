"""``aifi conformance epd``: test an EPD's FHIR endpoint as aifi-hub uses it and write the
report (:func:`aifi.conformance_kit.finish.finish`).

Order of the cases: ``auth.token`` (SMART Backend Services, when ``--credentials`` is given),
``metadata`` and ``types.<Type>`` (:mod:`~aifi.conformance_kit.epd.capability`), ``push.*``
(:mod:`~aifi.conformance_kit.epd.push`), ``hook.*`` (:mod:`~aifi.conformance_kit.epd.hook`,
with ``--endpoint``). Every report pushed is generated (:mod:`~aifi.conformance_kit.epd.sample`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

from aifi.clock import utc_now
from aifi.conformance_kit.epd.capability import capability_cases
from aifi.conformance_kit.epd.client import (
    HOOK_TIMEOUT_SECONDS,
    PUSH_SCOPES,
    READ_SCOPES,
    Access,
    Exchanges,
    hook_client,
)
from aifi.conformance_kit.epd.hook import CRITERIA, hook_cases, read_subscription
from aifi.conformance_kit.epd.push import push_cases, searcher
from aifi.conformance_kit.epd.sample import created_types, referenced_types, sample_report
from aifi.conformance_kit.finish import EXIT_UNUSABLE, finish
from aifi.conformance_kit.report import Kind, Report
from aifi.errors import AifiError
from aifi.fhir.subscriptions import SubscriptionSpec

SMART = "SMART App Launch v2: Backend Services (client_credentials, private_key_jwt)"


def _auth_case(report: Report, access: Access) -> None:
    """``auth.token``: the push's client gets a token (required only with --credentials)."""
    case = report.case(
        "auth.token",
        "The push's client gets an access token (SMART Backend Services)",
        [SMART, "RFC 6749 §4.4", "RFC 7523 §2.2"],
        required=access.credentials is not None,
    )
    auth = access.auth(PUSH_SCOPES)
    if auth is None:
        how = "a given bearer token" if access.token else "no authentication"
        case.skipped(f"no --credentials: the push goes with {how}")
        return
    with case.timed():
        auth.token()
        case.passed(
            f"token issued for {' '.join(PUSH_SCOPES)}",
            token_url=auth.credentials.token_url,
            client_id=auth.credentials.client_id,
            scopes=list(PUSH_SCOPES),
        )


def _run(report: Report, access: Access, base: str, spec: SubscriptionSpec | None) -> None:
    now = utc_now()
    sample = sample_report(now)
    bundle = sample.bundle()
    _auth_case(report, access)
    exchanges, reads, hooks = Exchanges(), Exchanges(), Exchanges()
    with (
        access.client(PUSH_SCOPES, exchanges) as fhir,
        access.client(READ_SCOPES, reads) as reader,
        hook_client(hooks) as hook,
    ):
        capability_cases(
            report, fhir, exchanges, base, created_types(bundle), referenced_types(bundle)
        )
        push_cases(
            report, fhir, exchanges, base, sample, sample_report(now), searcher(reader, base)
        )
        hook_cases(report, hook, hooks, spec, sample.focus(), now)


def epd(
    fhir: Annotated[
        str,
        typer.Option(
            "--fhir",
            help="The EPD's FHIR base URL: where the gateway POSTs its push transaction.",
        ),
    ],
    report_dir: Annotated[
        Path, typer.Option("--report", help="Folder for report.json, report.html, junit.xml.")
    ],
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            exists=True,
            dir_okay=False,
            help="Credentials file of the push's client at the EPD (SMART Backend Services, "
            "as the gateway's fhir.epd_credentials).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="A bearer token for the EPD's FHIR base instead."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="The EPD's rest-hook endpoint for subscription notifications (without it the "
            "hook.* cases are skipped).",
        ),
    ] = None,
    hook_header: Annotated[
        list[str] | None,
        typer.Option(
            "--hook-header",
            help="'Name: value' sent with every notification, as a Subscription's "
            "channel.header (repeatable).",
        ),
    ] = None,
) -> None:
    """Test an EPD's FHIR endpoint as aifi-hub uses it: its CapabilityStatement, the push of
    a final report as a transaction of conditional creates (sent twice: nothing
    duplicated), an invalid push, and the rest-hook endpoint (handshake, heartbeat,
    notification). Every report is generated; never patient data."""
    base = fhir.rstrip("/")
    try:
        access = Access.of(credentials, token)
        spec = read_subscription(endpoint, hook_header or []) if endpoint else None
    except (AifiError, ValueError, KeyError, OSError) as exc:
        typer.echo(f"aifi conformance epd: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    if not httpx.URL(base).is_absolute_url:
        typer.echo(f"aifi conformance epd: --fhir {fhir!r} is not an absolute URL", err=True)
        raise typer.Exit(EXIT_UNUSABLE)
    report = Report(
        kind=Kind.EPD,
        target={
            "fhir": base,
            "endpoint": endpoint,
            "auth": access.describe(),
            "subscription_criteria": CRITERIA if endpoint else None,
            "hook_timeout_seconds": HOOK_TIMEOUT_SECONDS,
        },
    )
    _run(report, access, base, spec)
    raise typer.Exit(finish(report, report_dir))


__all__ = ["epd"]
