"""The kit's DICOMweb requests beyond STOW-RS (which the hub's own
:class:`~aifi.hub.delivery.dicomweb_client.DicomwebPacs` sends):

* :class:`QidoFinder` — Search (QIDO-RS, PS3.18 §10.6): ``GET {root}/studies``,
  ``/studies/{study}/series`` and ``/studies/{study}/series/{series}/instances`` with the UID
  as matching key and ``includefield`` for the key attributes (§10.6.1.2.3), answers in
  DICOM JSON (Annex F; ``204 No Content`` or ``[]`` for no match);
* :class:`WadoRetriever` — Retrieve (WADO-RS, PS3.18 §10.4) of one Instance with
  ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*`` (§8.7.3.5.2:
  the origin server may answer in the syntax it holds, so what it stored comes back);
* :func:`delete_study` — ``DELETE {root}/studies/{study}``, which PS3.18 does not define
  (§10.3, Table 10.3-1: the Studies Service has Retrieve, Store and Search only) but some
  origin servers offer on the same resource.

One ``httpx.Client`` on the service root, explicit timeouts, environment proxies ignored (the
PACS's URL is used as given), the same authentication as the STOW-RS client.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

from aifi.conformance_kit.pacs.compare import Retrieved
from aifi.conformance_kit.pacs.services import Level, Uids
from aifi.dicomweb.media import DICOM, DICOM_JSON, parse_media_type
from aifi.dicomweb.multipart_reader import read_parts
from aifi.errors import AifiError, UpstreamError

WADO_ACCEPT = f'multipart/related; type="{DICOM}"; transfer-syntax=*'


def dicomweb_client(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    timeout_seconds: float = 30.0,
) -> httpx.Client:
    """A client on the DICOMweb service root ``url`` (no trailing slash needed)."""
    return httpx.Client(
        base_url=url.rstrip("/") + "/",
        headers=dict(headers or {}),
        auth=auth,
        timeout=httpx.Timeout(timeout_seconds),
        trust_env=False,
        follow_redirects=False,
    )


def _answer(response: httpx.Response) -> str:
    text = " ".join(response.text.split())[:200]
    return f"HTTP {response.status_code}" + (f": {text!r}" if text else "")


def _get(
    client: httpx.Client,
    path: str,
    headers: dict[str, str],
    params: httpx.QueryParams | None = None,
) -> httpx.Response:
    try:
        return client.get(path, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"GET {path}: no answer: {type(exc).__name__}: {exc}") from exc


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"not a DICOM keyword: {keyword}")
    return f"{tag:08X}"


class QidoFinder:
    """QIDO-RS searches on one service root (module docstring)."""

    name = "QIDO-RS"
    cites = ["DICOM PS3.18 §10.6"]

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def find(self, uids: Uids, keys: tuple[str, ...]) -> list[Dataset]:
        level = uids.level
        match: tuple[str, str | None]
        if level is Level.STUDY:
            path, match = "studies", ("StudyInstanceUID", uids.study)
        elif level is Level.SERIES:
            path, match = f"studies/{uids.study}/series", ("SeriesInstanceUID", uids.series)
        else:
            path = f"studies/{uids.study}/series/{uids.series}/instances"
            match = ("SOPInstanceUID", uids.instance)
        pairs: list[tuple[str, str | int | float | bool | None]] = [(_tag(match[0]), match[1])]
        pairs += [("includefield", _tag(keyword)) for keyword in keys]
        params = httpx.QueryParams(pairs)
        response = _get(self._client, path, params=params, headers={"Accept": DICOM_JSON})
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise UpstreamError(f"QIDO-RS GET {path}: {_answer(response)}")
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(f"QIDO-RS GET {path}: the answer is not JSON") from exc
        if not isinstance(body, list):
            raise UpstreamError(f"QIDO-RS GET {path}: the answer is not a JSON array")
        try:
            return [Dataset.from_json(item) for item in body]
        except (TypeError, ValueError, KeyError) as exc:
            raise UpstreamError(f"QIDO-RS GET {path}: not DICOM JSON (PS3.18 F): {exc}") from exc


class WadoRetriever:
    """WADO-RS retrieval of single instances, in the syntax the PACS holds them in."""

    name = "WADO-RS"
    cites = ["DICOM PS3.18 §10.4", "DICOM PS3.18 §8.7.3.5.2"]

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def open(self) -> str | None:
        return None

    def close(self) -> None:
        """The client belongs to the caller."""

    def retrieve(self, uids: Uids) -> Retrieved:
        path = f"studies/{uids.study}/series/{uids.series}/instances/{uids.instance}"
        response = _get(self._client, path, headers={"Accept": WADO_ACCEPT})
        if response.status_code != 200:
            raise UpstreamError(f"WADO-RS GET {path}: {_answer(response)}")
        try:
            media = parse_media_type(response.headers.get("content-type", ""))
            boundary = media.params.get("boundary")
            if media.mime != "multipart/related" or not boundary:
                raise ValueError(f"Content-Type {media.mime!r} is not multipart/related")
            parts = read_parts(response.content, boundary)
        except (AifiError, ValueError) as exc:
            raise UpstreamError(f"WADO-RS GET {path}: not a multipart answer: {exc}") from exc
        if len(parts) != 1:
            raise UpstreamError(f"WADO-RS GET {path}: {len(parts)} parts, not one instance")
        try:
            return Retrieved.from_part10(parts[0][1])
        except ValueError as exc:
            raise UpstreamError(f"WADO-RS GET {path}: {exc}") from exc


def delete_study(client: httpx.Client, study_uid: str) -> httpx.Response:
    """``DELETE {root}/studies/{study}`` (not a PS3.18 transaction: module docstring)."""
    try:
        return client.delete(f"studies/{study_uid}")
    except httpx.HTTPError as exc:
        raise UpstreamError(f"DELETE studies/{study_uid}: no answer: {exc}") from exc
