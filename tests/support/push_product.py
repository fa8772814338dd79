"""A push-mode AI product endpoint for tests (issue 18): a real HTTP server (stdlib
``ThreadingHTTPServer`` on a free loopback port, in a thread) speaking the protocol of
:mod:`aifi.vendors.push` — ``POST`` ``multipart/related; type="application/dicom"`` (RFC 2387,
one PS3.10 instance per part, as STOW-RS, PS3.18 §10.5.1) with the ``AIFI-Workitem-UID`` and
``AIFI-Product`` headers in; ``200`` ``multipart/related`` DICOM results, or ``204`` when the
product has nothing to report, out.

It analyses with the reference product of its product code
(:data:`aifi.vendors.products.PRODUCTS`), so its results are the IHE AIR objects the pull
products store. ``fail=True`` answers every POST ``500`` with a short text body (a crashed
model: the push adapter does not retry 500 and discontinues the workitem). An analysis the
product refuses (:class:`~aifi.vendors.performer.AnalysisFailed`) answers ``422`` with the
reason; a body that is not multipart DICOM ``415``/``400``. Every POST is recorded
(:attr:`PushProduct.requests`) for the tests.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from aifi.dicom_json import DicomJson
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.errors import InvalidRequest
from aifi.vendors.performer import AnalysisFailed, Analyzer, part10
from aifi.vendors.push import PRODUCT_HEADER, WORKITEM_HEADER
from aifi.vendors.workitem import (
    CODE_VALUE,
    SCHEDULED_WORKITEM_CODE_SEQUENCE,
    SOP_INSTANCE_UID,
    element,
)
from tests.support.broken_performer import product_for

HOST = "127.0.0.1"
PATH = "/analyze"
FAILURE_TEXT = "model crashed (push product test double)"


@dataclass(frozen=True)
class PushRequest:
    """One POST the product got and how it answered."""

    workitem_uid: str
    """The ``AIFI-Workitem-UID`` header ("" when absent)."""
    product: str
    """The ``AIFI-Product`` header ("" when absent)."""
    instances: int
    """How many DICOM instances the body held (0 when it could not be read)."""
    status: int


@dataclass
class PushProduct:
    """A running push product: POST to :attr:`url`; :attr:`requests` in arrival order."""

    code: str
    analyzer: Analyzer
    fail: bool
    url: str = ""
    requests: list[PushRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def record(self, request: PushRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes, int]:
        """(status, Content-Type, body, instances read) for one POST."""
        if self.fail:
            return 500, "text/plain", FAILURE_TEXT.encode(), 0
        try:
            inputs = _instances(headers.get("content-type", ""), body)
        except InvalidRequest as exc:
            status = 415 if "multipart" in exc.reason else 400
            return status, "text/plain", exc.reason.encode(), 0
        try:
            results = self.analyzer.analyze(_workitem(headers, self.code), inputs)
        except AnalysisFailed as exc:
            return 422, "text/plain", exc.reason.encode(), len(inputs)
        if not results:
            return 204, "", b"", len(inputs)
        boundary = new_boundary()
        payload = encode([("application/dicom", part10(ds)) for ds in results], boundary)
        return 200, content_type("application/dicom", boundary), payload, len(inputs)


def _instances(media: str, body: bytes) -> list[Dataset]:
    """The DICOM instances of a ``multipart/related`` body; InvalidRequest otherwise."""
    parsed = parse_media_type(media)
    boundary = parsed.params.get("boundary")
    if parsed.mime != "multipart/related" or not boundary:
        raise InvalidRequest(f"expected multipart/related DICOM, got {media or 'nothing'}")
    try:
        return [dcmread(io.BytesIO(part)) for _h, part in read_parts(body, boundary)]
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise InvalidRequest(f"a part is not a DICOM instance: {exc}") from exc


def _workitem(headers: dict[str, str], code: str) -> DicomJson:
    """The little of a workitem the push protocol tells: its UID and the product code."""
    return {
        SOP_INSTANCE_UID: element("UI", headers.get(WORKITEM_HEADER.lower(), "")),
        SCHEDULED_WORKITEM_CODE_SEQUENCE: element(
            "SQ", {CODE_VALUE: element("SH", headers.get(PRODUCT_HEADER.lower(), code))}
        ),
    }


def _handler(product: PushProduct) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the stdlib's name
            if self.path.split("?")[0] != PATH:
                self._reply(404, "text/plain", b"not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, ctype, payload, count = product.answer(headers, body)
            product.record(
                PushRequest(
                    workitem_uid=headers.get(WORKITEM_HEADER.lower(), ""),
                    product=headers.get(PRODUCT_HEADER.lower(), ""),
                    instances=count,
                    status=status,
                )
            )
            self._reply(status, ctype, payload)

        def _reply(self, status: int, ctype: str, payload: bytes) -> None:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            if status != 204:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if status != 204:
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return None  # quiet: the tests read PushProduct.requests

    return Handler


@contextmanager
def running_push_product(product_code: str, fail: bool = False) -> Iterator[PushProduct]:
    """A push product for the reference product of ``product_code`` (KeyError when there
    is none), served until the block ends."""
    product = PushProduct(product_code, product_for(product_code).factory(), fail)
    server = ThreadingHTTPServer((HOST, 0), _handler(product))
    server.daemon_threads = True
    product.url = f"http://{HOST}:{server.server_address[1]}{PATH}"
    thread = threading.Thread(target=server.serve_forever, name="push-product", daemon=True)
    thread.start()
    try:
        yield product
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
