"""WADO-RS at the gateway (PS3.18 §10.4) for the re-identified results (issue 17 point 1):
the ImagingStudy the EPD reads through the gateway's FHIR facade points its Endpoint at
``{gateway}/dicomweb``; this serves Retrieve Study / Series / Instance (multipart
``application/dicom``), their metadata (DICOM JSON), frames and bulk data, and rendered
images and thumbnails (§10.4.1.1.3: the link of a report's summary page, re-based onto the
gateway by the FHIR facade) — the routers of :mod:`aifi.dicomweb.wado` and
:mod:`aifi.dicomweb.wado_rendered` over :class:`~aifi.gateway.wado.store.HeldInstances`.

Mounted under ``/dicomweb`` next to the gateway's STOW-RS (``POST``; these are ``GET``);
every request is authorized by :class:`aifi.gateway.auth.GatewayAuthorizer`
(``dicomweb.read``, or a scope that reads ImagingStudy).
"""

from __future__ import annotations

from fastapi import APIRouter

from aifi.dicomweb import wado, wado_rendered
from aifi.gateway.wado.store import HeldInstances, Purged


def wado_router() -> APIRouter:
    """Retrieve (instances, metadata, frames, bulk data, rendered) of the held instances;
    the app puts a :class:`HeldInstances` at ``app.state.dicom_store``."""
    router = APIRouter(tags=["WADO-RS"])
    router.include_router(wado.router)
    router.include_router(wado_rendered.router)
    return router


__all__ = ["HeldInstances", "Purged", "wado_router"]
