"""Where the EPD reaches the gateway: one rule for every address the gateway writes into
what it sends (paging links, notification ``fullUrl``\\ s, the ImagingStudy's WADO-RS
Endpoint, links that pointed at the hub).

The ``public_url`` setting (``AIFI_GATEWAY_PUBLIC_URL``) wins; else ``fhir.base_url`` of the
configuration file without its ``/fhir``; else the address the gateway listens on.
"""

from __future__ import annotations

from aifi.gateway.config import GatewayConfig
from aifi.gateway.settings import GatewaySettings

FHIR_PREFIX = "/fhir"
DICOMWEB_PREFIX = "/dicomweb"


def public_base(settings: GatewaySettings, config: GatewayConfig) -> str | None:
    """The configured public base URL (no trailing ``/``), or None when none is set."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    base = config.fhir.base_url
    if base:
        return base.rstrip("/").removesuffix(FHIR_PREFIX)
    return None


def reachable_base(settings: GatewaySettings, config: GatewayConfig) -> str:
    """:func:`public_base`, else ``http://<host>:<port>`` of the gateway's HTTP side."""
    base = public_base(settings, config)
    if base is not None:
        return base
    wildcard = {"", "0.0.0.0", "::"}  # noqa: S104 (naming the wildcard, not binding to it)
    host = "localhost" if settings.host in wildcard else settings.host
    return f"http://{host}:{settings.port}"
