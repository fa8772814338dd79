"""``aifi performer …`` (:data:`vendors_app`: a Task Performer with the reference analyzer or
the push adapter) and ``aifi vendors …`` (:data:`products_app`: the reference products,
each in its own process) — IHE AIW-I Task Performers against a hub, registered by
:mod:`aifi.cli`."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from aifi.oauth_client import ClientCredentials, Credentials, TokenError
from aifi.vendors.performer import Analyzer, Performer, performer_auth
from aifi.vendors.products import PRODUCTS, reference_product
from aifi.vendors.push import PushAnalyzer
from aifi.vendors.reference import ReferenceAnalyzer

TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=1.0, help="Seconds to wait for each answer from the hub."),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log every claim, completion and retry.")
]
CredentialsOpt = Annotated[
    Path | None,
    typer.Option(
        "--credentials",
        envvar="AIFI_CREDENTIALS",
        help="This performer's OAuth2 credentials file, as written by 'aifi clients add "
        "--role performer --product CODE --generate-key --write-credentials FILE' (env "
        "AIFI_CREDENTIALS). Without it no token is sent: only a hub in development mode "
        "(AIFI_DEV_MODE) answers.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]


def _auth(credentials: Path | None) -> ClientCredentials | None:
    """The performer's token source, checked once now (SMART Backend Services
    client_credentials): a refused client or an unreachable token endpoint is a clear error
    at start, not a warning at every search."""
    if credentials is None:
        return None
    try:
        auth = performer_auth(Credentials.from_file(credentials))
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(
            f"not a credentials file: {exc}", param_hint="--credentials"
        ) from exc
    assert auth is not None
    try:
        auth.token()
    except (TokenError, httpx.HTTPError) as exc:
        typer.echo(f"error: no access token from {auth.credentials.token_url}: {exc}", err=True)
        raise typer.Exit(3) from exc
    return auth


vendors_app = typer.Typer(
    help="AI product side: work the hub's UPS-RS worklist (IHE AIW-I Task Performer).",
    no_args_is_help=True,
    add_completion=False,
)


@vendors_app.callback()
def _group() -> None:
    """AI product side: work the hub's UPS-RS worklist (IHE AIW-I Task Performer)."""


@vendors_app.command("run")
def run(
    hub: Annotated[
        str,
        typer.Option(
            "--hub",
            help="The hub's DICOMweb base URL, e.g. http://127.0.0.1:8000/dicomweb.",
        ),
    ],
    product: Annotated[
        str,
        typer.Option(
            "--product",
            help="Product code: the Scheduled Workitem Code value (coding scheme 99AIFI) "
            "to work on, e.g. AIFI-BONEAGE.",
        ),
    ],
    ae: Annotated[
        str,
        typer.Option(
            "--ae",
            help="This performer's AE title (1-16 characters), used for the worklist "
            "subscription and event channel; give each running performer its own.",
        ),
    ] = "AIFI-PERFORMER",
    push_url: Annotated[
        str | None,
        typer.Option(
            "--push-url",
            help="POST each workitem's inputs to this URL (push adapter) instead of running "
            "the built-in reference analyzer.",
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Claim and perform at most one workitem, then exit (exit code 1 when there "
            "was none, 2 when it was not COMPLETED).",
        ),
    ] = False,
    poll: Annotated[
        float,
        typer.Option(
            "--poll",
            min=0.1,
            help="Seconds between worklist searches when no event wakes the performer.",
        ),
    ] = 5.0,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events",
            help="Triggered Pull: subscribe to the worklist and wake up on WebSocket event "
            "reports (default), or only poll.",
        ),
    ] = True,
    timeout: TimeoutOpt = 60.0,
    credentials: CredentialsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Work the worklist for one product until interrupted (Ctrl-C), or once with --once."""
    _logging(verbose)
    auth = _auth(credentials)
    analyzer: Analyzer = PushAnalyzer(push_url) if push_url else ReferenceAnalyzer()
    try:
        performer = Performer(
            hub, product, ae, analyzer, timeout=timeout, watch_cancel=events, auth=auth
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        _work(performer, once=once, poll=poll, events=events)
    finally:
        if isinstance(analyzer, PushAnalyzer):
            analyzer.close()


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _work(performer: Performer, *, once: bool, poll: float, events: bool) -> None:
    """Perform once (exit 1: nothing to claim, 2: not COMPLETED) or until interrupted."""
    product, ae, hub = performer.product, performer.ae_title, performer.dicomweb
    with performer:
        if once:
            state = performer.run_once()
            if state is None:
                typer.echo(f"No SCHEDULED workitem for {product}.")
                raise typer.Exit(1)
            typer.echo(f"Workitem {state}.")
            if state != "COMPLETED":
                raise typer.Exit(2)
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _stop)
        typer.echo(f"Performing {product} as {ae} from {hub} (Ctrl-C to stop).")
        try:
            done = performer.run(stop, poll_seconds=poll, events=events)
        except KeyboardInterrupt:
            typer.echo("Interrupted.")
            return
        typer.echo(f"Stopped after {done} workitem(s).")


# -- aifi vendors: the reference products ------------------------------------------------------

products_app = typer.Typer(
    help="The reference AI products (DEMONSTRATORS, not for clinical use): run one as a "
    "Task Performer against a hub.",
    no_args_is_help=True,
    add_completion=False,
)


@products_app.callback()
def _products() -> None:
    """The reference AI products (DEMONSTRATORS, not for clinical use)."""


@products_app.command("list")
def list_products() -> None:
    """List the reference products: name, product code, default AE title, what it does."""
    for p in PRODUCTS.values():
        typer.echo(f"{p.name:<20} {p.code:<14} {p.ae_title:<14} {p.title}")


@products_app.command("run")
def run_product(
    name: Annotated[
        str,
        typer.Argument(help=f"The product: {', '.join(PRODUCTS)}.", show_default=False),
    ],
    hub: Annotated[
        str,
        typer.Option(
            "--hub", help="The hub's DICOMweb base URL, e.g. http://127.0.0.1:8000/dicomweb."
        ),
    ],
    ae: Annotated[
        str | None,
        typer.Option(
            "--ae", help="AE title of this performer (default: the product code, e.g. AIFI-IPE)."
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Perform at most one workitem, then exit (1: none to claim, 2: not COMPLETED).",
        ),
    ] = False,
    poll: Annotated[
        float,
        typer.Option("--poll", min=0.1, help="Seconds between worklist searches."),
    ] = 5.0,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events",
            help="Use the WebSocket event channel: wake-ups (Triggered Pull) and Cancel "
            "Requested events (default); without it only a CANCELED state is noticed.",
        ),
    ] = True,
    timeout: TimeoutOpt = 60.0,
    credentials: CredentialsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run one reference product against the hub's worklist (its own process)."""
    _logging(verbose)
    try:
        product = reference_product(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="NAME") from exc
    auth = _auth(credentials)
    try:
        performer = Performer(
            hub,
            product.code,
            ae or product.ae_title,
            product.factory(),
            timeout=timeout,
            watch_cancel=events,
            auth=auth,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _work(performer, once=once, poll=poll, events=events)
