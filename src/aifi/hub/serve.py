"""Running the hub under uvicorn, from the CLI or a test/benchmark harness.

TLS: directly (``ssl_certfile``/``ssl_keyfile``, uvicorn's TLS) or behind a reverse proxy
that ends TLS (``proxy_headers`` with the proxy's address in ``forwarded_allow_ips``, so
that ``X-Forwarded-Proto``/``-For`` give the scheme and client address: the hub's URLs,
its token endpoint's ``aud`` and the audit trail's source address are then the public
ones). The access log never shows identifiers (:mod:`aifi.hub.log_hygiene`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import uvicorn
from fastapi import FastAPI

from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.hub.log_hygiene import install as install_log_hygiene
from aifi.hub.log_hygiene import uvicorn_log_config
from aifi.hub.settings import Settings


def build_settings(
    *,
    data_dir: Path | None = None,
    database_url: str | None = None,
    rules_file: Path | None = None,
    destinations_file: Path | None = None,
) -> Settings:
    """Settings from the environment (``AIFI_*``), overridden by explicit CLI options."""
    overrides: dict[str, object] = {}
    if rules_file is not None:
        overrides["rules_file"] = rules_file
    if destinations_file is not None:
        overrides["destinations_file"] = destinations_file
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    return Settings(**overrides)  # type: ignore[arg-type]


def _freeze_startup_objects() -> None:
    """Keep the objects that live as long as the process (modules, pydicom's data
    dictionaries, the app) out of the cyclic garbage collector's full collections: with
    them, one took ~100 ms, a pause every few dozen STOW-RS requests."""
    gc.collect()
    gc.freeze()


def app_from_environment() -> FastAPI:
    """uvicorn factory (``aifi.hub.serve:app_from_environment``) for multi-worker runs."""
    from aifi.hub.app import create_app

    configure_pydicom()
    app = create_app(Settings())
    _freeze_startup_objects()
    return app


@dataclass(frozen=True, slots=True)
class Transport:
    """How uvicorn listens: TLS files, and whether to trust a reverse proxy's
    ``X-Forwarded-*`` headers (from ``forwarded_allow_ips``: comma-separated addresses or
    networks, ``*`` for any)."""

    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both a certificate file and its key file")

    def uvicorn_options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "proxy_headers": self.proxy_headers,
            "forwarded_allow_ips": self.forwarded_allow_ips,
        }
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            options["ssl_certfile"] = str(self.ssl_certfile)
            options["ssl_keyfile"] = str(self.ssl_keyfile)
        return options


def check_startable(settings: Settings) -> None:
    """Raise :class:`~aifi.hub.wiring.AuthNotConfigured` when the hub must not start with
    ``settings`` (authentication off outside development mode), before any worker starts."""
    from aifi.hub.wiring import check_auth

    check_auth(settings)


def run_server(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    transport: Transport | None = None,
) -> None:
    """uvicorn with the redacting access log (no identifiers, no tokens) and ``transport``."""
    check_startable(settings)
    configure_pydicom()
    install_log_hygiene()
    options = (transport or Transport()).uvicorn_options()
    if workers > 1:
        # The worker processes build their own settings from the environment: pass on
        # every setting given explicitly (CLI options included: rules and destinations
        # files, the delivery settings).
        for name in settings.model_fields_set:
            value = getattr(settings, name)
            if value is not None:
                os.environ[f"AIFI_{name.upper()}"] = str(value)
        uvicorn.run(
            "aifi.hub.serve:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_config=uvicorn_log_config(log_level, settings.log_format),
            **options,  # type: ignore[arg-type]
        )
        return
    from aifi.hub.app import create_app

    app = create_app(settings)
    _freeze_startup_objects()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=uvicorn_log_config(log_level, settings.log_format),
        **options,  # type: ignore[arg-type]
    )


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on the loopback interface right now: each socket
    stays bound until all are chosen (two calls of :func:`free_port` can give the same
    port, the kernel handing out the one just released)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``process`` accepts connections on loopback ``port``: True, or False
    once it has exited or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                return False
            time.sleep(0.05)


@contextmanager
def serve_subprocess(
    data_dir: Path,
    log: Path,
    *,
    workers: int = 1,
    database_url: str | None = None,
    rules_file: Path | None = None,
    destinations_file: Path | None = None,
    startup_timeout: float = 60.0,
    port: int | None = None,
    auth: Literal["builtin", "dev"] | None = None,
    tls: tuple[Path, Path] | None = None,
    env: dict[str, str] | None = None,
    log_level: str = "warning",
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``aifi serve`` as a child process on ``port`` or a free loopback port (benchmarks,
    crash tests).

    ``auth``: ``"builtin"`` runs the hub with its authorization server (clients registered
    beforehand, e.g. :func:`aifi.hub.admin.local_clients.register_local_clients` for ``port``),
    ``"dev"`` in development mode without authentication, None as the environment says.
    ``tls``: (certificate file, key file): the hub speaks HTTPS, and is probed trusting
    that certificate alone. ``env``: more environment variables for the child.
    ``log_level``: uvicorn's (``info`` shows the redacted access log).
    Yields the process and its base URL once ``/healthz`` answers; output is appended to
    ``log``. Afterwards the process is stopped (SIGTERM, then SIGKILL) unless it is gone.
    """
    port = port or free_port()
    auth_env = {
        "builtin": {"AIFI_AUTH": "builtin", "AIFI_DEV_MODE": "false"},
        "dev": {"AIFI_AUTH": "off", "AIFI_DEV_MODE": "true"},
    }.get(auth or "", {})
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aifi",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                log_level,
                "--workers",
                str(workers),
                *(["--rules", str(rules_file)] if rules_file else []),
                *(["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])] if tls else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "AIFI_DATABASE_URL": database_url or "",
                **({"AIFI_DESTINATIONS_FILE": str(destinations_file)} if destinations_file else {}),
                **auth_env,
                **(env or {}),
            },
        )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls[0])) if tls else True
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"aifi serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aifi serve did not start within {startup_timeout:g} s")
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)
