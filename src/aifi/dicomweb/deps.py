"""FastAPI dependencies of the DICOMweb routers (``Annotated`` aliases).

The app factory puts a :class:`~aifi.dicomweb.store.DicomStore` and a
:class:`DicomwebConfig` on ``app.state``; the caller's tenant comes from
:data:`aifi.principal.PrincipalDep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from aifi.dicomweb.store import DicomStore


@dataclass(frozen=True, slots=True)
class DicomwebConfig:
    prefix: str = "/dicomweb"
    """Where the DICOMweb service root is mounted."""
    public_url: str | None = None
    """Base URL as clients see the hub (behind a proxy); default: the request's."""
    qido_default_limit: int = 1000
    qido_max_limit: int = 10000
    qido_max_offset: int = 1_000_000

    def service_url(self, request: Request) -> str:
        """The service root URL, e.g. ``http://host:8000/dicomweb`` (no trailing slash)."""
        base = self.public_url or str(request.base_url)
        return base.rstrip("/") + self.prefix


def get_store(request: Request) -> DicomStore:
    store: DicomStore = request.app.state.dicom_store
    return store


def get_config(request: Request) -> DicomwebConfig:
    config: DicomwebConfig = request.app.state.dicomweb_config
    return config


StoreDep = Annotated[DicomStore, Depends(get_store)]
ConfigDep = Annotated[DicomwebConfig, Depends(get_config)]
