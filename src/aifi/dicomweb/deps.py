"""FastAPI dependencies of the DICOMweb routers (``Annotated`` aliases).

The app factory puts a :class:`~aifi.dicomweb.store.DicomStore` and a
:class:`DicomwebConfig` on ``app.state``; the caller's tenant comes from
:data:`aifi.principal.PrincipalDep`. A restricted caller (an AI product's Task Performer)
gets the store through :class:`~aifi.dicomweb.visibility.RestrictedStore`, with the
:class:`~aifi.dicomweb.visibility.VisibilityProvider` at ``app.state.visibility``.

They are ``async def`` although they do no I/O: FastAPI runs a plain ``def`` dependency
in a worker thread, a trip that cost more than the dependency itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from aifi.dicomweb.store import DicomStore
from aifi.dicomweb.visibility import RestrictedStore, VisibilityProvider
from aifi.errors import Forbidden
from aifi.principal import PrincipalDep


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
        """The service root URL, e.g. ``http://host:8000/dicomweb`` (no trailing slash).

        Without a configured ``public_url`` it is built from the request's Host header. Some
        clients (dicomweb-client 0.61 over requests) send ``Host`` without the port; then the
        port the server actually listens on is used, or Retrieve URLs and BulkDataURIs would
        point at port 80.
        """
        if self.public_url:
            return self.public_url.rstrip("/") + self.prefix
        base = request.base_url
        server = request.scope.get("server")
        forwarded = "x-forwarded-host" in request.headers or "forwarded" in request.headers
        if base.port is None and server and not forwarded:
            port = server[1]
            default = 443 if base.scheme == "https" else 80
            if port and port != default:
                base = base.replace(port=port)
        return str(base).rstrip("/") + self.prefix


async def get_store(request: Request, principal: PrincipalDep) -> DicomStore:
    """The store as the caller may see it: all of its tenant's, or for a restricted
    principal only its products' inputs and results (refused, not widened, when the
    application has no visibility provider)."""
    store: DicomStore = request.app.state.dicom_store
    if not principal.restricted:
        return store
    provider: VisibilityProvider | None = getattr(request.app.state, "visibility", None)
    if provider is None:
        raise Forbidden("This server cannot restrict the store to an AI product's data")
    return RestrictedStore(store, provider, principal.products or frozenset())


async def get_config(request: Request) -> DicomwebConfig:
    config: DicomwebConfig = request.app.state.dicomweb_config
    return config


StoreDep = Annotated[DicomStore, Depends(get_store)]
ConfigDep = Annotated[DicomwebConfig, Depends(get_config)]
