"""Running the gateway process (``aifi gateway serve``): the settings are built by the
caller (the CLI), the gateway by :func:`aifi.gateway.app.build_gateway`, and uvicorn serves
its app, whose lifespan starts the DIMSE SCP and the background workers and stops them
again on SIGTERM/SIGINT.

Logs: uvicorn's access log goes through the hub's redacting filter (no identifiers, no
tokens in URLs); the gateway itself logs no patient identifiers at INFO and above.
"""

from __future__ import annotations

import logging

import uvicorn

from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.settings import GatewaySettings
from aifi.hub.log_hygiene import install as install_log_hygiene
from aifi.hub.log_hygiene import uvicorn_log_config


def prepare(settings: GatewaySettings) -> Gateway:
    """Configure pydicom (tolerant reading) and the log filters, build the gateway."""
    configure_pydicom()
    install_log_hygiene()
    logging.basicConfig(level=settings.log_level.upper())
    return build_gateway(settings)


def run(gateway: Gateway) -> None:
    """Serve ``gateway`` until SIGTERM/SIGINT (blocks)."""
    settings = gateway.settings
    uvicorn.run(
        gateway.app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(),
    )
