"""The DICOMweb service root: STOW-RS, QIDO-RS, WADO-RS, UPS-RS and capabilities in one router,
mounted by the app factory under :attr:`~aifi.dicomweb.deps.DicomwebConfig.prefix`."""

from __future__ import annotations

from fastapi import APIRouter

from aifi.dicomweb import capabilities, qido, stow, ups_rs, wado, wado_rendered


def build_router() -> APIRouter:
    router = APIRouter(tags=["DICOMweb"])
    router.include_router(capabilities.router)
    router.include_router(stow.router)
    router.include_router(qido.router)
    router.include_router(wado.router)
    router.include_router(wado_rendered.router)
    router.include_router(ups_rs.router)
    return router
