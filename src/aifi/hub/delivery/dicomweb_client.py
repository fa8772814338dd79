"""Sending result instances to a PACS: the client protocol and the STOW-RS client.

A :class:`PacsClient` sends Part 10 files and answers with one :class:`SendOutcome` per
file, in the order given: delivered, or not delivered and either *retryable* (the PACS
could not be reached, timed out, or said it is out of resources for now) or refused (the
PACS will not take this instance: resending it unchanged cannot help). Clients never raise
for a PACS's behaviour; third-party exceptions (httpx, pynetdicom) are translated here into
outcomes with a reason that names the PACS and, where the PACS gave one, its own status.

:class:`DicomwebPacs` is STOW-RS, PS3.18 §10.5: ``POST {service}/studies`` with a
``multipart/related; type="application/dicom"`` body, one Part 10 file per part
(§10.5.1.2), ``Accept: application/dicom+json``. The answer (§10.5.3, Table 10.5.3-1):

=====================  =========================================================
200 OK                 every instance stored (Referenced SOP Sequence)
202 Accepted           some stored, some failed (Failed SOP Sequence) or warned
400, 409, 415          none stored: refused
408, 429, 503, 504     transient: retry later (``Retry-After`` is reported)
=====================  =========================================================

Each instance's own fate comes from the Store Instances Response Module (PS3.18 Table
10.5.3-2): an item with its SOP Instance UID in the Referenced SOP Sequence (0008,1199)
(perhaps with a Warning Reason (0008,1196)) or in the Failed SOP Sequence (0008,1198) with a
Failure Reason (0008,1197); Failure Reasons 0xA7xx (out of resources) are transient.

The DIMSE client is :class:`aifi.hub.delivery.dimse_client.DimsePacs`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from aifi.dicom_json import first, items
from aifi.dicomweb.multipart import closing, content_type, new_boundary, part_header, part_separator

TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 503, 504})
"""STOW-RS answers that mean "try again later" (CONVENTIONS: retry only these)."""

READ_CHUNK = 1 << 20

_STOW_REASONS: dict[int, str] = {
    0xC122: "Referenced Transfer Syntax not supported",
    0xC409: "Study Instance UID does not match the target study",
}
"""Failure Reasons PS3.18 §10.5.3 names that the DIMSE storage statuses do not."""


@dataclass(frozen=True, slots=True)
class OutgoingInstance:
    """One Part 10 file to send, with the identifiers from its header."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What became of one instance: ``delivered``, else ``retryable`` or refused."""

    sop_instance_uid: str
    delivered: bool
    retryable: bool
    reason: str

    def __post_init__(self) -> None:
        if self.delivered and self.retryable:
            raise ValueError("a delivered instance is not retryable")


class Identified(Protocol):
    """Anything that names the SOP instance it stands for (an :class:`OutgoingInstance`, or
    a part held in memory such as the gateway's pseudonymised instances)."""

    @property
    def sop_instance_uid(self) -> str: ...


class PacsClient(Protocol):
    """Sends instances to one PACS (:func:`aifi.hub.delivery.destinations.client_for`)."""

    name: str

    def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        """One outcome per file, in order. Never raises for the PACS's behaviour."""
        ...

    def close(self) -> None: ...


def status_meaning(code: int) -> str:
    """The meaning of a C-STORE status / STOW-RS Failure or Warning Reason
    (PS3.4 Annex B.2.3, PS3.7 Annex C, PS3.18 §10.5.3)."""
    if code in _STOW_REASONS:
        return _STOW_REASONS[code]
    known = STORAGE_SERVICE_CLASS_STATUS.get(code)
    return str(known[1]) if known else "unknown status"


def describe_status(code: int) -> str:
    """``0xA700 (Refused: Out of Resources)``."""
    return f"0x{code:04X} ({status_meaning(code)})"


def is_transient_status(code: int) -> bool:
    """Out of resources (0xA7xx, PS3.4 Table B.2-1): the PACS may take it later."""
    return 0xA700 <= code <= 0xA7FF


def fail_all(files: Sequence[Identified], reason: str, *, retryable: bool) -> list[SendOutcome]:
    return [SendOutcome(f.sop_instance_uid, False, retryable, reason) for f in files]


# --- STOW-RS response (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class StoreResponse:
    """The parts of a Store Instances Response Module (PS3.18 Table 10.5.3-2) that say
    what happened to each instance."""

    referenced: dict[str, int | None] = field(default_factory=dict)
    """SOP Instance UID -> Warning Reason (0008,1196) or ``None``."""
    failed: dict[str, int | None] = field(default_factory=dict)
    """SOP Instance UID -> Failure Reason (0008,1197) or ``None``."""
    other_failures: list[int | None] = field(default_factory=list)
    """Failure Reasons of the Other Failures Sequence (0008,119A): parts without a UID."""


def _code(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _from_json(module: Mapping[str, Any]) -> StoreResponse:
    response = StoreResponse()
    for item in items(module, "00081199"):
        uid = first(item, "00081155")
        if isinstance(uid, str):
            response.referenced[uid] = _code(first(item, "00081196"))
    for item in items(module, "00081198"):
        uid = first(item, "00081155")
        if isinstance(uid, str):
            response.failed[uid] = _code(first(item, "00081197"))
    for item in items(module, "0008119A"):
        response.other_failures.append(_code(first(item, "00081197")))
    return response


def parse_store_response(body: bytes) -> StoreResponse:
    """Read a Store Instances Response in DICOM JSON (PS3.18 Annex F), which the client
    asks for. Tolerant of extra attributes; ValueError when the body is not one. (A server
    answering in XML anyway is judged by its HTTP status alone: no XML parser is fed
    untrusted input here.)"""
    text = body.strip()
    if not text:
        raise ValueError("empty Store Instances Response")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"Store Instances Response is not JSON: {exc}") from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, Mapping):
        raise ValueError("Store Instances Response is not a DICOM JSON data set")
    return _from_json(data)


def stow_outcomes(
    files: Sequence[Identified],
    status_code: int,
    response: StoreResponse | None,
    *,
    pacs: str,
    detail: str = "",
    retry_after: str | None = None,
) -> list[SendOutcome]:
    """One outcome per file from a STOW-RS answer (PS3.18 §10.5.3), pure.

    The per-instance sequences decide where they name the instance; otherwise the HTTP
    status does: 200 stored, 202 without mention unknown (retryable: sending again is
    harmless), 408/429/503/504 retryable, any other status refused. ``detail`` (the
    ``Warning`` header, or the start of a body that is not a Store Instances Response)
    goes into every reason.
    """
    http = f"HTTP {status_code}" + (f", {detail}" if detail else "")
    if retry_after:
        http += f", Retry-After: {retry_after}"
    other = ""
    if response is not None and response.other_failures:
        codes = ", ".join(
            describe_status(c) if c is not None else "?" for c in response.other_failures
        )
        other = f"; other failures: {codes}"
    outcomes: list[SendOutcome] = []
    for f in files:
        uid = f.sop_instance_uid
        if response is not None and uid in response.referenced:
            code = response.referenced[uid]
            reason = f"stored by {pacs} ({http})"
            if code is not None:
                reason = f"stored by {pacs} with warning {describe_status(code)} ({http})"
            outcomes.append(SendOutcome(uid, True, False, reason))
        elif response is not None and uid in response.failed:
            code = response.failed[uid]
            transient = code is not None and is_transient_status(code)
            failure = describe_status(code) if code is not None else "no Failure Reason given"
            verb = "could not store it now" if transient else "refused"
            outcomes.append(
                SendOutcome(uid, False, transient, f"{pacs} {verb}: {failure} ({http})")
            )
        elif status_code == 200:
            outcomes.append(SendOutcome(uid, True, False, f"stored by {pacs} ({http})"))
        elif status_code in TRANSIENT_HTTP_STATUSES:
            outcomes.append(
                SendOutcome(uid, False, True, f"{pacs} is unavailable for now ({http}){other}")
            )
        elif status_code == 202:
            outcomes.append(
                SendOutcome(
                    uid,
                    False,
                    True,
                    f"{pacs} accepted the request but did not list this instance ({http}){other}",
                )
            )
        else:
            outcomes.append(
                SendOutcome(uid, False, False, f"{pacs} refused the request ({http}){other}")
            )
    return outcomes


def response_outcomes(
    files: Sequence[Identified], response: httpx.Response, *, pacs: str
) -> list[SendOutcome]:
    """One outcome per file from an HTTP answer to STOW-RS (PS3.18 §10.5.3): its Store
    Instances Response when the body is one, its ``Warning`` headers (PS3.18 §8.7.3) and
    the start of a body that is not, and ``Retry-After`` (:func:`stow_outcomes`)."""
    parsed: StoreResponse | None = None
    if response.content.strip():
        try:
            parsed = parse_store_response(response.content)
        except ValueError:
            parsed = None
    details = [f"Warning: {value}" for value in response.headers.get_list("warning")]
    if parsed is None and response.is_error and response.text.strip():
        details.append(f"answer {' '.join(response.text.split())[:200]!r}")
    return stow_outcomes(
        files,
        response.status_code,
        parsed,
        pacs=pacs,
        detail="; ".join(details),
        retry_after=response.headers.get("retry-after"),
    )


# --- STOW-RS client --------------------------------------------------------------------------


class ClosingClient:
    """``with client:`` closes it afterwards (both PACS clients)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DicomwebPacs(ClosingClient):
    """STOW-RS client for one PACS (PS3.18 §10.5); one request per :meth:`send`.

    The body is streamed from the files (with a Content-Length, so no chunked encoding
    is needed by the server); ``timeout_seconds`` bounds connecting and each read/write.
    Environment proxy settings are ignored: the destination's URL is used as configured.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "",
        timeout_seconds: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.stow_url = f"{self.url}/studies"
        self.name = name or self.url
        self._named = bool(name)
        self.timeout_seconds = timeout_seconds
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            headers=dict(headers or {}),
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )

    @property
    def _pacs(self) -> str:
        if not self._named:
            return f"PACS at {self.stow_url} (STOW-RS)"
        return f"PACS {self.name!r} (STOW-RS {self.stow_url})"

    def send(self, files: Sequence[OutgoingInstance]) -> list[SendOutcome]:
        results: dict[int, SendOutcome] = {}
        sizes: dict[int, int] = {}
        for index, f in enumerate(files):
            try:
                sizes[index] = f.path.stat().st_size
            except OSError as exc:
                reason = f"cannot read {f.path} to send to {self._pacs}: {exc.strerror or exc}"
                results[index] = SendOutcome(f.sop_instance_uid, False, False, reason)
        sending = [files[i] for i in sizes]
        if sending:
            answered = self._post(sending, [sizes[i] for i in sizes])
            for index, outcome in zip(sizes, answered, strict=True):
                results[index] = outcome
        return [results[i] for i in range(len(files))]

    def _post(self, files: Sequence[OutgoingInstance], sizes: Sequence[int]) -> list[SendOutcome]:
        boundary = new_boundary()
        head = part_header(boundary, "application/dicom")
        length = sum(len(head) + size + len(part_separator()) for size in sizes)
        length += len(closing(boundary))

        def body() -> Iterator[bytes]:
            for f in files:
                yield head
                with f.path.open("rb") as stream:
                    while chunk := stream.read(READ_CHUNK):
                        yield chunk
                yield part_separator()
            yield closing(boundary)

        headers = {
            "Content-Type": content_type("application/dicom", boundary),
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
        }
        seconds = f"{self.timeout_seconds:g} s"
        try:
            response = self._client.post(self.stow_url, content=body(), headers=headers)
        except httpx.TimeoutException as exc:
            reason = f"{self._pacs} did not answer within {seconds} ({type(exc).__name__})"
            return fail_all(files, reason, retryable=True)
        except httpx.RequestError as exc:  # connect, network, protocol, decoding errors
            reason = f"cannot reach {self._pacs}: {type(exc).__name__}: {exc}"
            return fail_all(files, reason, retryable=True)
        except OSError as exc:  # a file vanished between stat() and reading it
            reason = f"reading a file for {self._pacs} failed: {exc}"
            return fail_all(files, reason, retryable=True)
        return self._outcomes(files, response)

    def _outcomes(
        self, files: Sequence[OutgoingInstance], response: httpx.Response
    ) -> list[SendOutcome]:
        return response_outcomes(files, response, pacs=self._pacs)

    def close(self) -> None:
        self._client.close()
