"""``aifi conformance pacs``: a hospital PACS tested as the destination of AI results, over
DICOMweb (STOW-RS, QIDO-RS, WADO-RS; PS3.18) or DIMSE (C-STORE, C-FIND, C-GET, C-MOVE;
PS3.4 Annexes B and C), with the hub's own delivery clients for storing. The cases are in
:mod:`~aifi.conformance_kit.pacs.cases` and :mod:`~aifi.conformance_kit.pacs.cleanup`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer

from aifi.conformance_kit.finish import EXIT_UNUSABLE, finish
from aifi.conformance_kit.pacs.cases import (
    find_results,
    find_study,
    resend,
    retrieve_results,
    store_results,
    store_study,
)
from aifi.conformance_kit.pacs.cleanup import cleanup_dicomweb, cleanup_dimse
from aifi.conformance_kit.pacs.compare import Retrieved
from aifi.conformance_kit.pacs.dicomweb import QidoFinder, WadoRetriever, dicomweb_client
from aifi.conformance_kit.pacs.dimse import (
    CFindFinder,
    CGetRetriever,
    CMoveRetriever,
    DimseAddress,
    storage_classes,
)
from aifi.conformance_kit.pacs.objects import KitStudy, generate
from aifi.conformance_kit.pacs.services import Retriever, Uids
from aifi.conformance_kit.report import Kind, Report
from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.hub.delivery.destinations import validate_ae_title
from aifi.hub.delivery.dicomweb_client import DicomwebPacs
from aifi.hub.delivery.dimse_client import DimsePacs
from aifi.oauth_client import ClientCredentials, Credentials, TokenError

STOW_CITES = ["DICOM PS3.18 §10.5"]
C_STORE_CITES = ["DICOM PS3.4 B.2.3", "DICOM PS3.7 §9.1.1"]


@dataclass(frozen=True)
class Settings:
    timeout_seconds: float
    find_wait_seconds: float
    cleanup: bool


class NotConfigured:
    """A retrieval the options leave out: every case skipped with the reason."""

    def __init__(self, name: str, cites: list[str], reason: str) -> None:
        self.name, self.cites, self.reason = name, cites, reason

    def open(self) -> str | None:
        return self.reason

    def retrieve(self, uids: Uids) -> Retrieved:
        raise NotImplementedError(self.reason)

    def close(self) -> None:
        """Nothing was opened."""


def _unusable(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_UNUSABLE)


def _http_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        _unusable(f"--dicomweb {url!r} is not a URL: {exc}")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        _unusable(f"--dicomweb {url!r} must be an absolute http:// or https:// URL")
    return url.rstrip("/")


def _auth(
    token: str | None, credentials: Path | None, scopes: list[str]
) -> tuple[dict[str, str], httpx.Auth | None]:
    """Headers for the STOW-RS client, and the auth for the other requests."""
    if token:
        return {"Authorization": f"Bearer {token}"}, None
    if credentials is None:
        return {}, None
    try:
        auth = ClientCredentials(Credentials.from_file(credentials), scopes)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _unusable(f"--credentials {credentials}: not a credentials file: {exc}")
    try:
        return auth.headers(), auth
    except (TokenError, httpx.HTTPError) as exc:
        _unusable(f"no access token from {auth.credentials.token_url}: {exc}")


def _run_dicomweb(
    report: Report,
    study: KitStudy,
    url: str,
    auth: tuple[dict[str, str], httpx.Auth | None],
    settings: Settings,
) -> None:
    headers, refreshing = auth
    seconds = settings.timeout_seconds
    with (
        DicomwebPacs(url, timeout_seconds=seconds, headers=headers) as pacs,
        dicomweb_client(
            url, headers={} if refreshing else headers, auth=refreshing, timeout_seconds=seconds
        ) as client,
    ):
        finder = QidoFinder(client)
        store_study(report, pacs, study, STOW_CITES)
        stored = store_results(report, pacs, study, STOW_CITES)
        find_study(report, finder, study, settings.find_wait_seconds)
        find_results(report, finder, study, stored, settings.find_wait_seconds)
        retrieve_results(report, WadoRetriever(client), study, stored, prefix="retrieve")
        resend(report, pacs, finder, study, stored, [*STOW_CITES, "DICOM PS3.18 §10.5.3"])
        if settings.cleanup:
            cleanup_dicomweb(report, client, finder, study, settings.find_wait_seconds)


def _run_dimse(
    report: Report,
    study: KitStudy,
    address: DimseAddress,
    calling_ae: str,
    move: tuple[str, int] | None,
    settings: Settings,
) -> None:
    seconds = settings.timeout_seconds
    classes = storage_classes(
        (obj.sop_class_uid, obj.transfer_syntax_uid) for obj in study.results.values()
    )
    with DimsePacs(
        address.host,
        address.port,
        called_ae=address.ae,
        calling_ae=calling_ae,
        timeout_seconds=seconds,
    ) as pacs:
        finder = CFindFinder(address, calling_ae=calling_ae, timeout_seconds=seconds)
        store_study(report, pacs, study, C_STORE_CITES)
        stored = store_results(report, pacs, study, C_STORE_CITES)
        find_study(report, finder, study, settings.find_wait_seconds)
        find_results(report, finder, study, stored, settings.find_wait_seconds)
        getter = CGetRetriever(address, classes, calling_ae=calling_ae, timeout_seconds=seconds)
        retrieve_results(report, getter, study, stored, prefix="retrieve.get")
        mover: Retriever = NotConfigured(
            "C-MOVE", ["DICOM PS3.4 C.4.2"], "not asked for (give --move-ae and --move-port)"
        )
        if move is not None:
            mover = CMoveRetriever(
                address,
                classes,
                calling_ae=calling_ae,
                move_ae=move[0],
                move_port=move[1],
                timeout_seconds=seconds,
            )
        retrieve_results(report, mover, study, stored, prefix="retrieve.move")
        resend(report, pacs, finder, study, stored, C_STORE_CITES)
        if settings.cleanup:
            cleanup_dimse(report, study)


def _move(dimse: bool, move_ae: str | None, move_port: int | None) -> tuple[str, int] | None:
    if move_ae is None and move_port is None:
        return None
    if not dimse:
        _unusable("--move-ae and --move-port apply to --dimse only")
    if move_ae is None or move_port is None:
        _unusable("give both --move-ae and --move-port, or neither")
    try:
        return validate_ae_title(move_ae), move_port
    except ValueError as exc:
        _unusable(f"--move-ae: {exc}")


def pacs(
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report",
            help="Folder for report.json, report.html and junit.xml (made when missing).",
            file_okay=False,
        ),
    ],
    dicomweb: Annotated[
        str | None,
        typer.Option(
            "--dicomweb",
            metavar="URL",
            help="The PACS's DICOMweb service root, e.g. https://pacs.example/dicom-web.",
        ),
    ] = None,
    dimse: Annotated[
        str | None,
        typer.Option(
            "--dimse", metavar="AE@HOST:PORT", help="The PACS's DICOM AE, e.g. PACS@10.1.2.3:104."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="AIFI_PACS_TOKEN",
            help="Bearer token for every DICOMweb request (env AIFI_PACS_TOKEN).",
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            help="OAuth2 client-credentials file (client_id, token_url, client_secret or "
            "private_jwk) to get bearer tokens for the DICOMweb requests.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope to ask the token endpoint for (repeatable)."),
    ] = None,
    calling_ae: Annotated[
        str, typer.Option("--calling-ae", help="The kit's AE title for DIMSE.")
    ] = "AIFI-KIT",
    move_ae: Annotated[
        str | None,
        typer.Option(
            "--move-ae",
            help="C-MOVE destination AE title the kit listens as. The PACS must know it: add "
            "it to the PACS's list of DICOM nodes with this computer's address and "
            "--move-port (else C-MOVE is refused and its cases skipped).",
        ),
    ] = None,
    move_port: Annotated[
        int | None,
        typer.Option(
            "--move-port", min=1, max=65535, help="TCP port of the kit's C-MOVE Storage SCP."
        ),
    ] = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Afterwards remove what the kit stored, where the PACS offers a delete "
            "(DICOMweb DELETE on the study; DIMSE has none).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds to wait for each answer.")
    ] = 30.0,
    find_wait: Annotated[
        float,
        typer.Option(
            "--find-wait",
            min=0.0,
            help="Seconds to keep searching for a stored object the PACS has not indexed yet.",
        ),
    ] = 10.0,
) -> None:
    """Test a PACS as the destination of AI results (exit 0 only if every required case passes).

    Stores a generated study (invented patient, new UIDs each run) and one result of each kind.

    The results (SR TID 1500, SEG, GSPS, SC, KOS) go through the hub's own delivery client.

    Each is found back (QIDO-RS or C-FIND) and retrieved byte for byte (WADO-RS, C-GET, C-MOVE).

    The report says what the PACS accepted, changed or refused.
    """
    if (dicomweb is None) == (dimse is None):
        _unusable("give exactly one of --dicomweb URL or --dimse AE@HOST:PORT")
    if token and credentials:
        _unusable("give --token or --credentials, not both")
    if dimse is not None and (token or credentials):
        _unusable("--token and --credentials apply to --dicomweb only")
    move = _move(dimse is not None, move_ae, move_port)
    try:
        calling = validate_ae_title(calling_ae)
    except ValueError as exc:
        _unusable(f"--calling-ae: {exc}")
    settings = Settings(timeout, find_wait, cleanup)
    configure_pydicom()
    if dicomweb is not None:
        url = _http_url(dicomweb)
        auth = _auth(token, credentials, scopes or [])
        report = Report(kind=Kind.PACS, target={"mode": "dicomweb", "url": url})
    else:
        try:
            address = DimseAddress.parse(str(dimse))
        except ValueError as exc:
            _unusable(f"--dimse: {exc}")
        target = {"mode": "dimse", "address": str(address), "calling_ae": calling}
        if move is not None:
            target["move_destination"] = f"{move[0]} on port {move[1]}"
        report = Report(kind=Kind.PACS, target=target)
    with tempfile.TemporaryDirectory(prefix="aifi-kit-pacs-") as folder:
        study = generate(Path(folder))
        report.target.update(study_instance_uid=study.study_uid, patient_id=study.patient_id)
        if dicomweb is not None:
            _run_dicomweb(report, study, url, auth, settings)
        else:
            _run_dimse(report, study, address, calling, move, settings)
    raise typer.Exit(finish(report, report_dir))
