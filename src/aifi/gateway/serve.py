"""Running the gateway process (``aifi gateway serve``): the settings are built by the
caller (the CLI), the gateway by :func:`aifi.gateway.app.build_gateway`, and uvicorn serves
its app, whose lifespan starts the DIMSE SCP and the background workers and stops them
again on SIGTERM/SIGINT.

Logs: uvicorn's access log goes through the hub's redacting filter (no identifiers, no
tokens in URLs); the gateway itself logs no patient identifiers at INFO and above.

:func:`gateway_subprocess` starts the gateway as a child process, as a hospital would (the
demo, the benchmark and the end-to-end tests use it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.gateway.app import Gateway, build_gateway
from aifi.gateway.settings import GatewaySettings
from aifi.hub.json_logs import json_handler
from aifi.hub.log_hygiene import install as install_log_hygiene
from aifi.hub.log_hygiene import uvicorn_log_config
from aifi.hub.serve import free_ports, wait_for_port


def prepare(settings: GatewaySettings) -> Gateway:
    """Configure pydicom (tolerant reading) and the log filters, build the gateway."""
    configure_pydicom()
    install_log_hygiene()
    handlers = [json_handler()] if settings.log_format == "json" else None
    logging.basicConfig(level=settings.log_level.upper(), handlers=handlers)
    return build_gateway(settings)


def run(gateway: Gateway) -> None:
    """Serve ``gateway`` until SIGTERM/SIGINT (blocks)."""
    settings = gateway.settings
    uvicorn.run(
        gateway.app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(log_format=settings.log_format),
    )


@dataclass(frozen=True, slots=True)
class GatewayProcess:
    """An ``aifi gateway serve`` child process (:func:`gateway_subprocess`)."""

    process: subprocess.Popen[bytes]
    url: str
    """Its HTTP side: STOW-RS, ``/healthz``, the status page."""
    dimse_port: int
    ae_title: str

    def ready(self, timeout: float) -> bool:
        """Wait until its DIMSE SCP accepts connections and ``/healthz`` answers; False
        when it exited or the time ran out."""
        deadline = time.monotonic() + timeout
        if not wait_for_port(self.dimse_port, self.process, timeout):
            return False
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).is_success:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return False


@contextmanager
def gateway_subprocess(
    data_dir: Path,
    hub_url: str,
    log: Path,
    *,
    credentials: Path | None = None,
    pacs: str | None = None,
    config_file: Path | None = None,
    ae_title: str = "AIFI-GW",
    env: dict[str, str] | None = None,
    wait: bool = True,
    startup_timeout: float = 60.0,
) -> Iterator[GatewayProcess]:
    """``aifi gateway serve`` as a child process on free loopback ports, as a hospital
    starts it (demo, benchmarks, end-to-end tests). Without ``credentials`` it runs in
    development mode (only a hub with authentication off answers it). With ``wait`` it is
    yielded once its DIMSE SCP and ``/healthz`` answer (RuntimeError with the log's tail
    otherwise); without, at once (:meth:`GatewayProcess.ready`). Output is appended to
    ``log``; afterwards the process is stopped (SIGTERM, then SIGKILL). ``env``: the child's
    whole environment (default: this process's)."""
    http_port, dimse_port = free_ports(2)
    command = [
        sys.executable,
        "-m",
        "aifi",
        "gateway",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--dimse-port",
        str(dimse_port),
        "--ae-title",
        ae_title,
        "--hub",
        hub_url,
        *(["--credentials", str(credentials)] if credentials else []),
        *(["--pacs", pacs] if pacs else []),
        *(["--config", str(config_file)] if config_file else []),
    ]
    mode = {"AIFI_DEV_MODE": "false" if credentials else "true"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), **mode},
        )
    spawned = GatewayProcess(process, f"http://127.0.0.1:{http_port}", dimse_port, ae_title)
    try:
        if wait and not spawned.ready(startup_timeout):
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"aifi gateway serve did not start: {tail}")
        yield spawned
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)
