"""Query/retrieve over DICOMweb (httpx): QIDO-RS (PS3.18 §10.6) to find a patient's earlier
studies and their series' body parts, WADO-RS Retrieve Study (PS3.18 §10.4.1.1.1) to bring
one into the gateway's ingest.

- ``GET {root}/studies?PatientID=…&StudyDate=from-to[&ModalitiesInStudy=MG]&includefield=…``
  (matching as C-FIND, §8.3.4; a single modality is sent as a matching key, several are
  filtered here) and ``GET {root}/studies/{uid}/series?includefield=BodyPartExamined``;
  answers in DICOM JSON (Annex F), 204 or an empty array when nothing matches.
- ``GET {root}/studies/{uid}`` with ``Accept: multipart/related; type="application/dicom";
  transfer-syntax=*`` (as stored, §8.7.3.5.2): the multipart body is read as it streams
  (:class:`aifi.dicomweb.multipart_reader.MultipartReader`), each part written to a staging
  file and handed to :meth:`aifi.gateway.ingest.pipeline.Ingest.receive_file` when it ends —
  never a whole study in memory, exactly the path a STOW-RS part takes.

HTTP errors are translated here once: 4xx (other than 408/429) ->
:class:`aifi.errors.PacsRefused` with the status; no connection, a timeout, 5xx, 408/429 ->
:class:`aifi.errors.PacsQueryError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from aifi import dicom_json
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart_reader import MultipartReader, PartData, PartEnd, PartStart
from aifi.errors import InvalidRequest, PacsQueryError, PacsRefused
from aifi.gateway.ingest.pipeline import Ingest, Origin
from aifi.gateway.pacs_query.models import PriorQuery, Retrieved, StudyMatch
from aifi.hub.delivery.destinations import DicomwebDestination

WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STUDY_FIELDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ModalitiesInStudy",
    "IssuerOfPatientID",
    "PatientID",
)
_STUDY_UID, _STUDY_DATE, _STUDY_TIME = "0020000D", "00080020", "00080030"
_MODALITIES, _ISSUER, _BODY_PART = "00080061", "00100021", "00180015"
_PATIENT_ID = "00100020"
_RETRY_STATUS = frozenset({408, 429})
CHUNK = 256 * 1024


class DicomwebQueryRetrieve:
    """QIDO-RS + WADO-RS against one PACS (its ``pacs`` entry: service root, headers,
    timeout); retrieved instances go into ``ingest`` with the origin ``pacs-wado:{name}``."""

    def __init__(
        self,
        destination: DicomwebDestination,
        ingest: Ingest,
        *,
        retrieve_timeout_seconds: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = destination.name
        self.ingest = ingest
        self.retrieve_timeout_seconds = retrieve_timeout_seconds
        self._client = httpx.Client(
            base_url=destination.url,
            headers=destination.headers,
            timeout=httpx.Timeout(destination.timeout_seconds, connect=10.0),
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    # -- QIDO-RS --------------------------------------------------------------------------

    def _qido(self, path: str, params: list[tuple[str, str]], label: str) -> list[dict[str, Any]]:
        with self._request("GET", path, label, params=params, accept="application/dicom+json") as r:
            r.read()
        if r.status_code == 204 or not r.content.strip():
            return []
        try:
            body = r.json()
        except ValueError as exc:
            raise PacsQueryError(f"PACS {self.name}: {label} answered no JSON") from exc
        if not isinstance(body, list):
            raise PacsQueryError(f"PACS {self.name}: {label} answered no JSON array")
        return [item for item in body if isinstance(item, dict)]

    def find_studies(self, query: PriorQuery) -> list[StudyMatch]:
        params = [("PatientID", query.patient_id)]
        if query.date_range:
            params.append(("StudyDate", query.date_range))
        if query.single_modality:
            params.append(("ModalitiesInStudy", query.single_modality))
        params.append(("includefield", ",".join(STUDY_FIELDS)))
        return [
            StudyMatch(
                study_instance_uid=dicom_json.text(item, _STUDY_UID) or "",
                study_date=dicom_json.text(item, _STUDY_DATE) or "",
                study_time=dicom_json.text(item, _STUDY_TIME) or "",
                modalities=tuple(str(v) for v in dicom_json.values(item, _MODALITIES)),
                issuer=dicom_json.text(item, _ISSUER) or "",
                patient_id=dicom_json.text(item, _PATIENT_ID) or "",
            )
            for item in self._qido("/studies", params, "QIDO-RS (studies)")
        ]

    def series_body_parts(self, study_instance_uid: str) -> frozenset[str]:
        answer = self._qido(
            f"/studies/{study_instance_uid}/series",
            [("includefield", "BodyPartExamined")],
            "QIDO-RS (series of a study)",
        )
        return frozenset(
            str(v).strip().upper()
            for item in answer
            for v in dicom_json.values(item, _BODY_PART)
            if str(v).strip()
        )

    # -- WADO-RS --------------------------------------------------------------------------

    def retrieve_study(self, study_instance_uid: str) -> Retrieved:
        started = time.perf_counter()
        origin = Origin(source=f"pacs-wado:{self.name}"[:200])
        completed = failed = 0
        timeout = httpx.Timeout(self.retrieve_timeout_seconds, connect=10.0)
        path = f"/studies/{study_instance_uid}"
        label = "WADO-RS (retrieve study)"
        with self._request("GET", path, label, accept=WADO_ACCEPT, timeout=timeout) as response:
            media = parse_media_type(response.headers.get("content-type", ""))
            boundary = media.params.get("boundary")
            if media.mime != "multipart/related" or not boundary:
                raise PacsQueryError(
                    f"PACS {self.name}: {label} answered {media.mime or 'no type'},"
                    " not multipart/related"
                )
            staging = self.ingest.store.staging_dir()
            reader = MultipartReader(boundary)
            out: IO[bytes] | None = None
            part_path = staging / f"prior-{uuid.uuid4().hex}.part"
            try:
                for chunk in response.iter_bytes(CHUNK):
                    for event in reader.feed(chunk):
                        if isinstance(event, PartStart):
                            part_path = staging / f"prior-{uuid.uuid4().hex}.part"
                            out = open(part_path, "wb")  # noqa: SIM115 (closed at PartEnd)
                        elif isinstance(event, PartData) and out is not None:
                            out.write(event.data)
                        elif isinstance(event, PartEnd) and out is not None:
                            out.close()
                            out = None
                            outcome = self.ingest.receive_file(part_path, origin)
                            if outcome.status.acknowledged:
                                completed += 1
                            else:
                                failed += 1
                reader.finish()
            except InvalidRequest as exc:
                raise PacsQueryError(
                    f"PACS {self.name}: {label}: unreadable answer ({exc.reason})"
                ) from exc
            except httpx.HTTPError as exc:
                raise PacsQueryError(
                    f"PACS {self.name}: {label} broke off: {type(exc).__name__}",
                    detail=repr(exc),
                ) from exc
            finally:
                if out is not None:
                    out.close()
                    part_path.unlink(missing_ok=True)
        return Retrieved(study_instance_uid, completed, failed, time.perf_counter() - started)

    @contextmanager
    def _request(
        self,
        method: str,
        path: str,
        label: str,
        *,
        accept: str,
        params: list[tuple[str, str]] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Iterator[httpx.Response]:
        """A streamed request whose error statuses are translated (module docstring). The
        messages name the ``label``, never the path (which holds the original Study
        Instance UID) nor what the PACS said (``detail``: kept in the hospital)."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            with self._client.stream(
                method, path, params=tuple(params or ()), headers={"Accept": accept}, **extra
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    code = response.status_code
                    what = f"PACS {self.name}: {label}: HTTP {code}"
                    detail = f"{method} {path}: {response.text[:300].strip()}"
                    if code >= 500 or code in _RETRY_STATUS:
                        raise PacsQueryError(what, detail=detail)
                    raise PacsRefused(what, status=code, detail=detail)
                yield response
        except httpx.TimeoutException as exc:
            raise PacsQueryError(f"PACS {self.name}: {label}: no answer in time") from exc
        except httpx.HTTPError as exc:
            raise PacsQueryError(
                f"PACS {self.name} cannot be reached ({label}): {type(exc).__name__}",
                detail=repr(exc),
            ) from exc
