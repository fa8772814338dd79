"""A Task Performer's side of UPS-RS (PS3.18 ch. 11; IHE RAD TF AIW-I) over HTTP: the requests
of RAD-81 Query, RAD-82 Claim, RAD-83 Get Contents, RAD-84 Update, RAD-85 Complete and RAD-86
Manage Subscription, the inputs retrieved with WADO-RS and the results stored with STOW-RS,
and RAD-109 Open Event Channel. What is done between those requests is
:class:`~aifi.vendors.performer.Performer`'s. This module talks to the hub only over HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx
from pydicom import Dataset
from pydicom.uid import generate_uid

from aifi.dicom_json import DicomJson, first, items
from aifi.errors import InvalidRequest, UpstreamError
from aifi.oauth_client import ClientCredentials, TokenError, bearer_headers
from aifi.vendors.channel import EventChannel, open_channel
from aifi.vendors.transport import (
    MULTIPART_DICOM,
    excerpt,
    read_multipart_dicom,
    send,
    stow_request,
)
from aifi.vendors.workitem import (
    GLOBAL_WORKLIST,
    OUTPUT_INFORMATION_SEQUENCE,
    PERFORMED_PROCEDURE_STEP_END_DATETIME,
    PERFORMED_PROCEDURE_STEP_START_DATETIME,
    PERFORMED_WORKITEM_CODE_SEQUENCE,
    PRIORITIES,
    PROCEDURE_STEP_CANCELLATION_DATETIME,
    PROCEDURE_STEP_PROGRESS,
    PROCEDURE_STEP_PROGRESS_DESCRIPTION,
    PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    PROCEDURE_STEP_STATE,
    REASON_FOR_CANCELLATION,
    SCHEDULED_WORKITEM_CODE_SEQUENCE,
    SOP_INSTANCE_UID,
    TRANSACTION_UID,
    UPS_PERFORMED_PROCEDURE_SEQUENCE,
    claim_order,
    element,
    input_references,
    now_dt,
    output_information,
)

log = logging.getLogger("aifi.vendors.performer")

DICOM_JSON = "application/dicom+json"
MAX_REASON = 1024
"""Reason For Cancellation (0074,1238) is LT (10240 chars); keep reasons readable."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A workitem this performer holds: its UID, the Transaction UID that proves it
    (PS3.4 CC.1.1, never shown by the hub to anyone else) and its contents as read after
    the claim (RAD-83)."""

    uid: str
    transaction_uid: str
    workitem: DicomJson
    claimed_at: datetime


class UpsClient:
    """The hub's UPS-RS worklist (PS3.18 ch. 11) as one Task Performer uses it, over HTTP.

    ``dicomweb`` is the hub's DICOMweb base URL (``http://host:8000/dicomweb``); ``product``
    the Scheduled Workitem Code value searched for; ``ae_title`` the AE title subscribed.
    The client owns ``client`` only when it made it (:meth:`close`, or use it as a context
    manager); a client it makes uses ``auth``, which also gives the event channel its token.
    """

    def __init__(
        self,
        dicomweb: str,
        product: str,
        ae_title: str,
        *,
        client: httpx.Client | None = None,
        timeout: float | httpx.Timeout = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        search_limit: int = 50,
        auth: ClientCredentials | None = None,
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
        self.auth = auth
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout, auth=auth)
        self.retries = retries
        self.backoff = backoff
        self.search_limit = search_limit

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
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
        READY, in :func:`claim_order`. One search; only when it fills a page, one per
        priority, so the most urgent are never cut off by the page limit."""
        params = {
            "ProcedureStepState": "SCHEDULED",
            "InputReadinessState": "READY",
            "ScheduledWorkitemCodeSequence.CodeValue": self.product,
            "limit": str(self.search_limit),
        }
        found: list[DicomJson] = self._json("GET", "/workitems", params=params) or []
        if len(found) >= self.search_limit:
            found = []
            for priority in PRIORITIES:
                by_priority = {**params, "ScheduledProcedureStepPriority": priority}
                found += self._json("GET", "/workitems", params=by_priority) or []
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

    def retrieve_inputs(
        self,
        workitem: DicomJson,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> list[Dataset]:
        """The instances of the Input Information Sequence, by WADO-RS (PS3.18 §10.4) from
        each item's Retrieve URL (0008,1190) or, without one, the hub's series (or study)
        URL; limited to the Referenced SOP Sequence when the item lists instances.
        ``progress(n, total)`` is called after each item (``total`` None when an item does
        not list its instances)."""
        out: list[Dataset] = []
        seen: set[str] = set()
        refs = input_references(workitem)
        total = sum(len(r.sop_uids) for r in refs) if all(r.sop_uids for r in refs) else None
        for ref in refs:
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
            if progress is not None:
                progress(len(out), total)
        return out

    def store(self, results: Sequence[Dataset]) -> None:
        """STOW-RS (PS3.18 §10.5) of the result instances; every one must be stored."""
        body, headers = stow_request(results)
        response = self._send("POST", f"{self.dicomweb}/studies", content=body, headers=headers)
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

    def subscribe(
        self, uid: str = GLOBAL_WORKLIST, params: dict[str, str] | None = None
    ) -> str | None:
        """RAD-86 Manage UPS Subscription: subscribe this AE to the global or a filtered
        worklist, or to one workitem (PS3.18 §11.10); the event channel URL, or None when
        the hub refuses."""
        try:
            response = self._send(
                "POST",
                f"{self.dicomweb}/workitems/{uid}/subscribers/{self.ae_title}",
                params=params,
            )
        except UpstreamError as exc:
            log.warning("Subscription failed (%s); polling instead", exc.reason)
            return None
        if response.status_code != 201:
            log.warning("Subscription refused (%s); polling instead", excerpt(response))
            return None
        fallback = self.dicomweb.replace("http", "ws", 1) + f"/subscribers/{self.ae_title}"
        return response.headers.get("content-location") or fallback

    def _open_channel(self, url: str) -> EventChannel | None:
        """RAD-109 Open Event Channel with this performer's token; None (poll instead)
        when no token can be had or the channel cannot be opened."""
        try:
            headers = bearer_headers(self.auth)
        except (TokenError, httpx.HTTPError) as exc:
            log.warning("No access token for the event channel (%s); polling instead", exc)
            return None
        return open_channel(url, headers)

    def unsubscribe(self, uid: str = GLOBAL_WORKLIST) -> None:
        """Unsubscribe this AE from the worklist, or one workitem (PS3.18 §11.11)."""
        try:
            response = self._send(
                "DELETE", f"{self.dicomweb}/workitems/{uid}/subscribers/{self.ae_title}"
            )
        except UpstreamError as exc:
            log.warning("Unsubscribe failed: %s", exc.reason)
            return
        if response.status_code >= 300:
            log.info("Unsubscribe: %s", excerpt(response))
