"""HTTP for the performer and the push adapter: PS3.10 bytes of an instance, reading a
``multipart/related; type="application/dicom"`` answer (PS3.18 §8.6.1.2, §10.4), and one
request with the only retries outbound HTTP gets here (408/429/503/504, CONVENTIONS)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from aifi.oauth_client import TokenError

__all__ = [
    "MULTIPART_DICOM",
    "RETRYABLE",
    "excerpt",
    "part10",
    "read_multipart_dicom",
    "send",
    "stow_request",
]

log = logging.getLogger(__name__)

MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
RETRYABLE = frozenset({408, 429, 503, 504})
"""The only statuses retried (CONVENTIONS: outbound HTTP)."""


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


def stow_request(datasets: Sequence[Dataset]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a STOW-RS request (PS3.18 §10.5) storing ``datasets``:
    ``multipart/related; type="application/dicom"``, one PS3.10 instance per part, a DICOM
    JSON answer asked for."""
    boundary = new_boundary()
    body = encode([("application/dicom", part10(ds)) for ds in datasets], boundary)
    headers = {
        "Content-Type": content_type("application/dicom", boundary),
        "Accept": "application/dicom+json",
    }
    return body, headers


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
    :class:`UpstreamTimeout` / :class:`UpstreamError`, and so does a token the client's
    ``auth`` could not get (:class:`~aifi.oauth_client.TokenError`, e.g. a revoked client);
    statuses are the caller's business."""
    for attempt in range(retries + 1):
        try:
            response = client.request(method, url, **kwargs)
        except TokenError as exc:
            raise UpstreamError(f"{method} {url}: no access token ({exc})") from exc
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
