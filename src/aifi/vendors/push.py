"""The push adapter: an :class:`~aifi.vendors.performer.Analyzer` for AI products that
cannot pull from a worklist.

The :class:`~aifi.vendors.performer.Performer` still drives the workitem (IHE RAD TF AIW-I:
RAD-82 claim, RAD-84 update, RAD-85 complete); this adapter only replaces the analysis with
one HTTP exchange with the product:

* request: ``POST {push_url}`` with ``Content-Type: multipart/related;
  type="application/dicom"; boundary=…`` (RFC 2387, as STOW-RS, PS3.18 §10.5.1), one PS3.10
  instance per part, and headers naming the workitem (``AIFI-Workitem-UID``) and the
  product code (``AIFI-Product``);
* ``200`` with ``multipart/related; type="application/dicom"``: the result instances;
* ``204``: analysed, nothing to report (the workitem completes with no outputs);
* ``408``/``429``/``503``/``504``: retried with exponential backoff (``Retry-After``
  honoured), then a failure;
* anything else, a timeout, or an answer that is not DICOM: :class:`AnalysisFailed`, whose
  reason (the status and the first bytes of the answer) becomes the workitem's Reason For
  Cancellation (0074,1238).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydicom import Dataset

from aifi.dicom_json import DicomJson, first, items
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from aifi.vendors.performer import (
    MULTIPART_DICOM,
    AnalysisFailed,
    excerpt,
    part10,
    read_multipart_dicom,
    send,
)
from aifi.vendors.workitem import (
    CODE_VALUE,
    SCHEDULED_WORKITEM_CODE_SEQUENCE,
    SOP_INSTANCE_UID,
)

__all__ = ["DEFAULT_TIMEOUT", "PushAnalyzer"]

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Inference can take minutes: 10 s to connect, then up to 10 min for the answer."""
WORKITEM_HEADER = "AIFI-Workitem-UID"
PRODUCT_HEADER = "AIFI-Product"


class PushAnalyzer:
    """Analyse by POSTing the inputs to ``push_url`` (see the module docstring).

    ``client`` is used as given (not closed here); without one the adapter makes its own
    with ``timeout`` (:meth:`close`).
    """

    def __init__(
        self,
        push_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not push_url.startswith(("http://", "https://")):
            raise ValueError(f"The push URL must be http(s), not {push_url!r}")
        self.push_url = push_url
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = dict(headers or {})

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> PushAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        boundary = new_boundary()
        body = encode([("application/dicom", part10(ds)) for ds in inputs], boundary)
        codes = items(workitem, SCHEDULED_WORKITEM_CODE_SEQUENCE)
        headers = {
            **self.headers,
            "Content-Type": content_type("application/dicom", boundary),
            "Accept": MULTIPART_DICOM,
            WORKITEM_HEADER: str(first(workitem, SOP_INSTANCE_UID) or ""),
            PRODUCT_HEADER: str(first(codes[0], CODE_VALUE) or "") if codes else "",
        }
        try:
            response = send(
                self.client,
                "POST",
                self.push_url,
                content=body,
                headers=headers,
                retries=self.retries,
                backoff=self.backoff,
                timeout=self.timeout,
            )
        except UpstreamTimeout as exc:
            raise AnalysisFailed(f"The AI product did not answer in time: {exc.reason}") from exc
        except UpstreamError as exc:
            raise AnalysisFailed(f"The AI product could not be reached: {exc.reason}") from exc
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise AnalysisFailed(f"The AI product at {self.push_url} answered {excerpt(response)}")
        try:
            return read_multipart_dicom(response, f"The AI product at {self.push_url}")
        except InvalidRequest as exc:
            raise AnalysisFailed(f"{exc.reason}; answer was {excerpt(response)}") from exc
