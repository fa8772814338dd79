"""A UPS-RS Task Performer (IHE RAD TF AIW-I) that works the hub's worklist over HTTP.

One workitem's life, as the performer drives it (PS3.18 ch. 11, PS3.4 Annex CC)::

    RAD-81 Query UPS Workitems      GET  {s}/workitems?ProcedureStepState=SCHEDULED&...   §11.9
    RAD-82 Claim UPS Workitem       PUT  {s}/workitems/{uid}/state  IN PROGRESS + txn     §11.7
    RAD-83 Get UPS Workitem Contents GET {s}/workitems/{uid}                              §11.5
           retrieve the inputs      GET  Retrieve URL (0008,1190), WADO-RS                §10.4
           store the results        POST {s}/studies, STOW-RS                             §10.5
    RAD-84 Update UPS Workitem      POST {s}/workitems/{uid}?transaction={txn}            §11.6
    RAD-85 Complete UPS Workitem    PUT  {s}/workitems/{uid}/state  COMPLETED|CANCELED    §11.7

Triggered Pull: the performer subscribes its AE title to the worklist (RAD-86 Manage UPS
Subscription, §11.10) and listens on the event channel ``ws://…/subscribers/{AE}`` (RAD-109
Open Event Channel, §11.13; the reports are RAD-87 Send UPS Notification); any event wakes
it up to search again, so a new workitem is claimed within milliseconds instead of at the
next poll. Without the channel it falls back to polling.

The AI itself is an :class:`Analyzer`: input instances in, result instances out, or
:class:`AnalysisFailed` to discontinue the workitem with a reason. The push adapter
(:mod:`aifi.vendors.push`) and the reference analyzer (:mod:`aifi.vendors.reference`) are
two of them. This module talks to the hub only over HTTP (it must not import ``aifi.hub``).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.dicomweb.store import DicomJson
from aifi.errors import InvalidRequest, UpstreamError, UpstreamTimeout

__all__ = [
    "AnalysisFailed",
    "Analyzer",
    "Claimed",
    "Performer",
    "send",
]

log = logging.getLogger(__name__)

# -- DICOM tags (DICOM JSON keys) and keywords used here -------------------------------------
SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = "00080018"
CODE_VALUE = "00080100"
RETRIEVE_URL = "00081190"
TRANSACTION_UID = "00081195"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SCHEDULED_PROCEDURE_STEP_START_DATETIME = "00404005"
SCHEDULED_WORKITEM_CODE_SEQUENCE = "00404018"
PERFORMED_WORKITEM_CODE_SEQUENCE = "00404019"
INPUT_INFORMATION_SEQUENCE = "00404021"
OUTPUT_INFORMATION_SEQUENCE = "00404033"
PERFORMED_PROCEDURE_STEP_START_DATETIME = "00404050"
PERFORMED_PROCEDURE_STEP_END_DATETIME = "00404051"
PROCEDURE_STEP_CANCELLATION_DATETIME = "00404052"
TYPE_OF_INSTANCES = "0040E020"
WADO_RS_RETRIEVAL_SEQUENCE = "0040E025"
PROCEDURE_STEP_STATE = "00741000"
PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE = "00741002"
PROCEDURE_STEP_PROGRESS = "00741004"
PROCEDURE_STEP_PROGRESS_DESCRIPTION = "00741006"
SCHEDULED_PROCEDURE_STEP_PRIORITY = "00741200"
UPS_PERFORMED_PROCEDURE_SEQUENCE = "00741216"
REASON_FOR_CANCELLATION = "00741238"

GLOBAL_WORKLIST = "1.2.840.10008.5.1.4.34.5"
"""Well-known UID of the global worklist in subscription URLs (PS3.4 CC.3.1)."""
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
"""Scheduled Procedure Step Priority (0074,1200) values, most urgent first (PS3.3 C.30.1)."""

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
RETRYABLE = frozenset({408, 429, 503, 504})
"""The only statuses retried (CONVENTIONS: outbound HTTP)."""
MAX_REASON = 1024
"""Reason For Cancellation (0074,1238) is LT (10240 chars); keep reasons readable."""


class AnalysisFailed(UpstreamError):
    """The AI product could not analyse the inputs; the workitem is discontinued
    (CANCELED) with :attr:`reason` as its Reason For Cancellation (0074,1238)."""


class Analyzer(Protocol):
    """The AI product behind a performer."""

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        """Result instances for ``inputs`` (possibly none); raise :class:`AnalysisFailed`
        to discontinue the workitem with a reason."""
        ...


@dataclass(frozen=True, slots=True)
class Claimed:
    """A workitem this performer holds: its UID, the Transaction UID that proves it
    (PS3.4 CC.1.1, never shown by the hub to anyone else) and its contents as read after
    the claim (RAD-83)."""

    uid: str
    transaction_uid: str
    workitem: DicomJson
    claimed_at: datetime


# -- DICOM JSON helpers (pure) -----------------------------------------------------------------


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2.2); no values: present but empty."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def first(ds: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON data set, or None."""
    values = (ds.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def items(ds: Mapping[str, Any], tag: str) -> list[DicomJson]:
    """The items of a sequence attribute (none when absent or empty)."""
    return [i for i in (ds.get(tag) or {}).get("Value") or [] if isinstance(i, dict)]


def now_dt() -> str:
    """The current time as a DT value in UTC (PS3.5 Table 6.2-1)."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def claim_order(workitems: Sequence[DicomJson]) -> list[DicomJson]:
    """Workitems in the order a performer should try them: Scheduled Procedure Step
    Priority HIGH, MEDIUM, LOW (unknown last), then the earliest Scheduled Procedure Step
    Start DateTime, then the order the worklist listed them in (creation order at the hub)."""

    def key(pair: tuple[int, DicomJson]) -> tuple[int, str, int]:
        index, ds = pair
        priority = str(first(ds, SCHEDULED_PROCEDURE_STEP_PRIORITY) or "").upper()
        rank = PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)
        start = str(first(ds, SCHEDULED_PROCEDURE_STEP_START_DATETIME) or "")[:14].ljust(14, "9")
        return rank, start, index

    return [ds for _, ds in sorted(enumerate(workitems), key=key)]


@dataclass(frozen=True, slots=True)
class InputReference:
    """One item of the Input Information Sequence (0040,4021)."""

    study_uid: str
    series_uid: str | None
    sop_uids: frozenset[str]
    retrieve_url: str | None


def input_references(workitem: DicomJson) -> list[InputReference]:
    """The inputs a workitem names (PS3.4 CC.2.5.1.3 / AIW-I), tolerant of missing parts."""
    refs = []
    for item in items(workitem, INPUT_INFORMATION_SEQUENCE):
        study = first(item, STUDY_INSTANCE_UID) or first(workitem, STUDY_INSTANCE_UID)
        if not study:
            continue
        sops = {
            str(first(ref, REFERENCED_SOP_INSTANCE_UID))
            for ref in items(item, REFERENCED_SOP_SEQUENCE)
            if first(ref, REFERENCED_SOP_INSTANCE_UID)
        }
        urls = [first(r, RETRIEVE_URL) for r in items(item, WADO_RS_RETRIEVAL_SEQUENCE)]
        series = first(item, SERIES_INSTANCE_UID)
        refs.append(
            InputReference(
                study_uid=str(study),
                series_uid=str(series) if series else None,
                sop_uids=frozenset(sops),
                retrieve_url=next((str(u) for u in urls if u), None),
            )
        )
    return refs


def output_information(results: Sequence[Dataset], dicomweb: str) -> list[DicomJson]:
    """Output Information Sequence (0040,4033) items for stored result instances: one per
    series, listing its instances, with the WADO-RS URL they can be retrieved from."""
    by_series: dict[tuple[str, str], list[Dataset]] = {}
    for ds in results:
        by_series.setdefault((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)), []).append(ds)
    out = []
    for (study, series), members in by_series.items():
        out.append(
            {
                STUDY_INSTANCE_UID: element("UI", study),
                SERIES_INSTANCE_UID: element("UI", series),
                TYPE_OF_INSTANCES: element("CS", "DICOM"),
                REFERENCED_SOP_SEQUENCE: element(
                    "SQ",
                    *[
                        {
                            REFERENCED_SOP_CLASS_UID: element("UI", str(ds.SOPClassUID)),
                            REFERENCED_SOP_INSTANCE_UID: element("UI", str(ds.SOPInstanceUID)),
                        }
                        for ds in members
                    ],
                ),
                WADO_RS_RETRIEVAL_SEQUENCE: element(
                    "SQ",
                    {RETRIEVE_URL: element("UR", f"{dicomweb}/studies/{study}/series/{series}")},
                ),
            }
        )
    return out


def part10(ds: Dataset) -> bytes:
    """``ds`` as PS3.10 bytes, adding File Meta Information when it has none."""
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ImplementationClassUID" not in ds.file_meta:
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_multipart_dicom(response: httpx.Response, what: str) -> list[Dataset]:
    """The instances of a ``multipart/related; type="application/dicom"`` answer;
    :class:`InvalidRequest` naming ``what`` when it is not one."""
    try:
        media = parse_media_type(response.headers.get("content-type", ""))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what}: unreadable Content-Type ({exc.reason})") from exc
    boundary = media.params.get("boundary")
    if media.mime != "multipart/related" or not boundary:
        raise InvalidRequest(
            f"{what}: expected {MULTIPART_DICOM}, got {media.mime or 'no Content-Type'}"
        )
    out: list[Dataset] = []
    try:
        for headers, body in read_parts(response.content, boundary):
            part_type = headers.get("content-type", "application/dicom").split(";")[0].strip()
            if part_type.lower() != "application/dicom":
                raise InvalidRequest(f"{what}: a part is {part_type}, not application/dicom")
            out.append(dcmread(io.BytesIO(body)))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise InvalidRequest(f"{what}: a part is not a DICOM instance ({exc})") from exc
    return out


def excerpt(response: httpx.Response, size: int = 200) -> str:
    """The status and first bytes of an answer, for reasons and logs."""
    text = response.content[:size].decode("utf-8", "replace").strip()
    warning = response.headers.get("warning")
    return (
        f"HTTP {response.status_code}"
        + (f" ({warning})" if warning else "")
        + (f": {text!r}" if text else "")
    )


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    **kwargs: Any,
) -> httpx.Response:
    """One HTTP request, retried only on 408/429/503/504 with exponential backoff
    (honouring a numeric ``Retry-After`` up to 30 s). Transport failures become
    :class:`UpstreamTimeout` / :class:`UpstreamError`; statuses are the caller's business."""
    for attempt in range(retries + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{method} {url} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{method} {url} failed: {exc}") from exc
        if response.status_code not in RETRYABLE or attempt == retries:
            return response
        delay = backoff * 2**attempt
        after = response.headers.get("retry-after", "")
        if after.isdigit():
            delay = min(float(after), 30.0)
        log.info("%s %s answered %s; retrying in %.1f s", method, url, response.status_code, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class Performer:
    """An AIW-I Task Performer for one product (Scheduled Workitem Code value) at one hub.

    ``dicomweb`` is the hub's DICOMweb base URL (``http://host:8000/dicomweb``). The
    performer owns ``client`` only when it made it (:meth:`close`, or use it as a context
    manager).
    """

    def __init__(
        self,
        dicomweb: str,
        product: str,
        ae_title: str,
        analyzer: Analyzer,
        *,
        client: httpx.Client | None = None,
        timeout: float | httpx.Timeout = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        search_limit: int = 50,
    ) -> None:
        if not dicomweb.startswith(("http://", "https://")):
            raise ValueError(f"The DICOMweb base URL must be http(s), not {dicomweb!r}")
        if not product.strip() or len(product) > 16:
            raise ValueError(f"A product code is a Code Value of 1-16 characters: {product!r}")
        if not (0 < len(ae_title) <= 16) or "\\" in ae_title or not ae_title.strip():
            raise ValueError(f"Not a valid AE title (1-16 characters): {ae_title!r}")
        self.dicomweb = dicomweb.rstrip("/")
        self.product = product
        self.ae_title = ae_title
        self.analyzer = analyzer
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.search_limit = search_limit

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Performer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return send(self.client, method, url, retries=self.retries, backoff=self.backoff, **kwargs)

    def _json(self, method: str, path: str, body: DicomJson | None = None, **kw: Any) -> Any:
        response = self._send(
            method,
            f"{self.dicomweb}{path}",
            content=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": DICOM_JSON, "Accept": DICOM_JSON},
            **kw,
        )
        if response.status_code >= 300:
            raise UpstreamError(f"{method} {path}: {excerpt(response)}")
        return response.json() if response.content else None

    # -- RAD-81 / RAD-82 / RAD-83 -------------------------------------------------------------

    def search(self) -> list[DicomJson]:
        """RAD-81 Query UPS Workitems: this product's SCHEDULED workitems whose inputs are
        READY, in :func:`claim_order`. One search per priority, so the most urgent are
        never cut off by the page limit."""
        found: list[DicomJson] = []
        for priority in PRIORITIES:
            params = {
                "ProcedureStepState": "SCHEDULED",
                "InputReadinessState": "READY",
                "ScheduledWorkitemCodeSequence.CodeValue": self.product,
                "ScheduledProcedureStepPriority": priority,
                "limit": str(self.search_limit),
            }
            found += self._json("GET", "/workitems", params=params) or []
        return claim_order(found)

    def claim(self, uid: str) -> Claimed | None:
        """RAD-82 Claim UPS Workitem with a new Transaction UID; None when another
        performer got it first (400 C301 "Transaction UID is incorrect", 409 C302 not
        SCHEDULED any more, 404 gone). Then RAD-83 reads what was claimed."""
        transaction = str(generate_uid())
        body = {
            PROCEDURE_STEP_STATE: element("CS", "IN PROGRESS"),
            TRANSACTION_UID: element("UI", transaction),
        }
        response = self._send(
            "PUT",
            f"{self.dicomweb}/workitems/{uid}/state",
            content=json.dumps(body).encode(),
            headers={"Content-Type": DICOM_JSON},
        )
        if response.status_code in (400, 404, 409):
            log.info("Workitem %s not claimed: %s", uid, excerpt(response))
            return None
        if response.status_code >= 300:
            raise UpstreamError(f"Claim of workitem {uid}: {excerpt(response)}")
        [workitem] = self._json("GET", f"/workitems/{uid}")
        return Claimed(uid, transaction, workitem, datetime.now(UTC))

    def claim_next(self) -> Claimed | None:
        """The most urgent, oldest workitem this performer could claim; None when there
        is none (or every candidate went to a faster performer)."""
        for workitem in self.search():
            uid = first(workitem, SOP_INSTANCE_UID)
            if uid and (claimed := self.claim(str(uid))) is not None:
                log.info("Claimed workitem %s for %s", uid, self.product)
                return claimed
        return None

    # -- retrieve, store, report --------------------------------------------------------------

    def retrieve_inputs(self, workitem: DicomJson) -> list[Dataset]:
        """The instances of the Input Information Sequence, by WADO-RS (PS3.18 §10.4) from
        each item's Retrieve URL (0008,1190) or, without one, the hub's series (or study)
        URL; limited to the Referenced SOP Sequence when the item lists instances."""
        out: list[Dataset] = []
        seen: set[str] = set()
        for ref in input_references(workitem):
            url = ref.retrieve_url or (
                f"studies/{ref.study_uid}" + (f"/series/{ref.series_uid}" if ref.series_uid else "")
            )
            if not url.startswith(("http://", "https://")):  # relative to the service root
                url = f"{self.dicomweb}/{url.lstrip('/')}"
            response = self._send(
                "GET", url, headers={"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}
            )
            if response.status_code != 200:
                raise UpstreamError(f"WADO-RS {url}: {excerpt(response)}")
            try:
                instances = read_multipart_dicom(response, f"WADO-RS {url}")
            except InvalidRequest as exc:
                raise UpstreamError(exc.reason) from exc
            for ds in instances:
                sop = str(ds.SOPInstanceUID)
                if (not ref.sop_uids or sop in ref.sop_uids) and sop not in seen:
                    seen.add(sop)
                    out.append(ds)
        return out

    def store(self, results: Sequence[Dataset]) -> None:
        """STOW-RS (PS3.18 §10.5) of the result instances; every one must be stored."""
        boundary = new_boundary()
        body = encode([("application/dicom", part10(ds)) for ds in results], boundary)
        response = self._send(
            "POST",
            f"{self.dicomweb}/studies",
            content=body,
            headers={
                "Content-Type": content_type("application/dicom", boundary),
                "Accept": DICOM_JSON,
            },
        )
        if response.status_code != 200:
            raise UpstreamError(f"STOW-RS of {len(results)} result(s): {excerpt(response)}")

    def update(self, claimed: Claimed, changes: DicomJson) -> None:
        """RAD-84 Update UPS Workitem (PS3.18 §11.6) under the claim's Transaction UID."""
        self._json(
            "POST",
            f"/workitems/{claimed.uid}",
            changes,
            params={"transaction": claimed.transaction_uid},
        )

    def report_progress(self, claimed: Claimed, percent: int, description: str) -> None:
        """Procedure Step Progress (0074,1004) 0-100 with a description (a Progress Report
        event for subscribers)."""
        self.update(
            claimed,
            {
                PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE: element(
                    "SQ",
                    {
                        PROCEDURE_STEP_PROGRESS: element("DS", str(max(0, min(100, percent)))),
                        PROCEDURE_STEP_PROGRESS_DESCRIPTION: element("ST", description[:1024]),
                    },
                )
            },
        )

    def change_state(self, claimed: Claimed, state: str) -> None:
        """RAD-85 Complete UPS Workitem: COMPLETED or CANCELED (PS3.18 §11.7)."""
        body = {
            PROCEDURE_STEP_STATE: element("CS", state),
            TRANSACTION_UID: element("UI", claimed.transaction_uid),
        }
        self._json("PUT", f"/workitems/{claimed.uid}/state", body)

    def complete(self, claimed: Claimed, results: Sequence[Dataset]) -> None:
        """The final state attributes of PS3.4 Table CC.2.5-3 (UPS Performed Procedure
        Sequence with start/end, performed code and outputs), then COMPLETED."""
        performed = {
            PERFORMED_PROCEDURE_STEP_START_DATETIME: element(
                "DT", claimed.claimed_at.strftime("%Y%m%d%H%M%S+0000")
            ),
            PERFORMED_PROCEDURE_STEP_END_DATETIME: element("DT", now_dt()),
            PERFORMED_WORKITEM_CODE_SEQUENCE: element(
                "SQ", *items(claimed.workitem, SCHEDULED_WORKITEM_CODE_SEQUENCE)[:1]
            ),
            OUTPUT_INFORMATION_SEQUENCE: element("SQ", *output_information(results, self.dicomweb)),
        }
        self.update(claimed, {UPS_PERFORMED_PROCEDURE_SEQUENCE: element("SQ", performed)})
        self.change_state(claimed, "COMPLETED")

    def discontinue(self, claimed: Claimed, reason: str) -> str:
        """Reason For Cancellation (0074,1238) in the Progress Information Sequence, then
        CANCELED. Returns the state the workitem is left in (read back when the hub refused,
        e.g. because the Task Manager canceled it first)."""
        reason = reason[:MAX_REASON]
        log.warning("Discontinuing workitem %s: %s", claimed.uid, reason)
        progress = {
            REASON_FOR_CANCELLATION: element("LT", reason),
            PROCEDURE_STEP_CANCELLATION_DATETIME: element("DT", now_dt()),
        }
        try:
            self.update(
                claimed,
                {PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE: element("SQ", progress)},
            )
            self.change_state(claimed, "CANCELED")
        except UpstreamError as exc:
            log.error("Workitem %s could not be discontinued: %s", claimed.uid, exc.reason)
            return self.state(claimed.uid)
        return "CANCELED"

    def state(self, uid: str) -> str:
        """The workitem's Procedure Step State as the hub has it now (e.g. CANCELED by the
        Task Manager's deadline while we worked); "UNKNOWN" when the hub cannot say."""
        try:
            [workitem] = self._json("GET", f"/workitems/{uid}")
        except (UpstreamError, ValueError) as exc:
            log.error("State of workitem %s unknown: %s", uid, exc)
            return "UNKNOWN"
        return str(first(workitem, PROCEDURE_STEP_STATE) or "UNKNOWN")

    def perform(self, claimed: Claimed) -> str:
        """Retrieve the inputs, analyse, store the results and complete the workitem; on
        :class:`AnalysisFailed`, hub errors or an analyzer bug, discontinue it with the
        reason. Returns the final Procedure Step State."""
        try:
            inputs = self.retrieve_inputs(claimed.workitem)
            if not inputs:
                raise AnalysisFailed("The workitem's Input Information Sequence names no instances")
            self.report_progress(claimed, 20, f"Retrieved {len(inputs)} input instance(s)")
            try:
                results = self.analyzer.analyze(claimed.workitem, inputs)
            except (AnalysisFailed, UpstreamError):
                raise
            except Exception as exc:  # a bug in the product's code must not strand the item
                log.exception("Analyzer failed on workitem %s", claimed.uid)
                raise AnalysisFailed(f"The analyzer raised {type(exc).__name__}: {exc}") from exc
            self.report_progress(claimed, 80, f"Analysis produced {len(results)} result(s)")
            if results:
                self.store(results)
            self.complete(claimed, results)
        except UpstreamError as exc:  # AnalysisFailed included
            return self.discontinue(claimed, exc.reason)
        log.info("Completed workitem %s with %d result(s)", claimed.uid, len(results))
        return "COMPLETED"

    # -- the loop -----------------------------------------------------------------------------

    def subscribe(self) -> str | None:
        """RAD-86 Manage UPS Subscription: subscribe this AE to the global worklist
        (PS3.18 §11.10); the event channel URL, or None when the hub refuses."""
        try:
            response = self._send(
                "POST", f"{self.dicomweb}/workitems/{GLOBAL_WORKLIST}/subscribers/{self.ae_title}"
            )
        except UpstreamError as exc:
            log.warning("Subscription failed (%s); polling instead", exc.reason)
            return None
        if response.status_code != 201:
            log.warning("Subscription refused (%s); polling instead", excerpt(response))
            return None
        fallback = self.dicomweb.replace("http", "ws", 1) + f"/subscribers/{self.ae_title}"
        return response.headers.get("content-location") or fallback

    def unsubscribe(self) -> None:
        """Unsubscribe this AE from the worklist (PS3.18 §11.11)."""
        try:
            response = self._send(
                "DELETE",
                f"{self.dicomweb}/workitems/{GLOBAL_WORKLIST}/subscribers/{self.ae_title}",
            )
        except UpstreamError as exc:
            log.warning("Unsubscribe failed: %s", exc.reason)
            return
        if response.status_code >= 300:
            log.info("Unsubscribe: %s", excerpt(response))

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_items: int | None = None,
        poll_seconds: float = 5.0,
        events: bool = True,
    ) -> int:
        """Claim and perform workitems until ``stop`` is set or ``max_items`` have been
        performed; returns how many were. Between searches it waits ``poll_seconds`` or,
        with ``events`` (Triggered Pull), until the event channel reports something."""
        stop = stop or threading.Event()
        done = 0
        with self._wakeups(events) as wait:
            while not stop.is_set() and (max_items is None or done < max_items):
                try:
                    claimed = self.claim_next()
                except UpstreamError as exc:
                    log.warning("Worklist search failed: %s", exc.reason)
                    claimed = None
                if claimed is not None:
                    self.perform(claimed)
                    done += 1
                    continue
                wait(stop, poll_seconds)
        return done

    def run_once(self) -> str | None:
        """Claim and perform at most one workitem, without waiting: its final state, or
        None when there was nothing to claim."""
        claimed = self.claim_next()
        return None if claimed is None else self.perform(claimed)

    @contextmanager
    def _wakeups(self, events: bool) -> Iterator[Callable[[threading.Event, float], bool]]:
        """A wait function: sleep until the poll interval passes, ``stop`` is set, or (with
        an open event channel) an event report arrives. Unsubscribes on the way out."""
        with ExitStack() as stack:
            channel = None
            if events and (url := self.subscribe()):
                stack.callback(self.unsubscribe)
                connection = _connect(url)
                if connection is not None:
                    channel = _Channel(stack.enter_context(connection))
            yield channel.wait if channel else (lambda stop, seconds: stop.wait(seconds))


# -- the event channel -------------------------------------------------------------------------


class _Channel:
    """A WebSocket event channel (PS3.18 §11.13): :meth:`wait` returns early when an
    event report arrives; events are only a wake-up call, the worklist is searched anyway."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.broken = False

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.broken:
                return stop.wait(remaining)
            try:
                self.connection.recv(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
            except (ConnectionClosed, OSError) as exc:
                log.warning("Event channel lost (%s); polling instead", exc)
                self.broken = True
                continue
            self._drain()
            return True
        return True

    def _drain(self) -> None:
        """Swallow events already queued: one search answers them all."""
        while True:
            try:
                self.connection.recv(timeout=0)
            except (TimeoutError, ConnectionClosed, OSError):
                return  # empty; a broken channel shows up at the next wait


def _connect(url: str) -> ClientConnection | None:
    try:
        return connect(url, subprotocols=["dicom"], open_timeout=10)  # type: ignore[list-item]
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        log.warning("Event channel %s could not be opened (%s); polling instead", url, exc)
        return None
