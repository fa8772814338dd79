"""WADO-RS at the gateway (PS3.18 §10.4) for the re-identified results (issue 17 point 1):
the ImagingStudy the EPD reads through the gateway's FHIR facade points its Endpoint at
``{gateway}/dicomweb``; this serves Retrieve Study / Series / Instance (multipart
``application/dicom``), their metadata (DICOM JSON), frames and bulk data — the routers of
:mod:`aifi.dicomweb.wado` over :class:`~aifi.gateway.wado.store.HeldInstances`.

Mounted under ``/dicomweb`` next to the gateway's STOW-RS (``POST``; these are ``GET``);
every request is authorized by :class:`aifi.gateway.auth.GatewayAuthorizer`
(``dicomweb.read``, or a scope that reads ImagingStudy).
"""

from __future__ import annotations

from fastapi import APIRouter

from aifi.dicomweb import wado
from aifi.gateway.wado.store import HeldInstances, Purged


def wado_router() -> APIRouter:
    """Retrieve (instances, metadata, frames, bulk data) of the held instances; the app
    puts a :class:`HeldInstances` at ``app.state.dicom_store``."""
    router = APIRouter(tags=["WADO-RS"])
    router.include_router(wado.router)
    return router


__all__ = ["HeldInstances", "Purged", "wado_router"]
