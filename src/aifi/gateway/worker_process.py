"""The gateway's background workers (:mod:`aifi.gateway.workers`: forwarding, results,
PACS delivery) in a child process of ``aifi gateway serve``, at a lower CPU priority.

Why a process: receiving is what a modality waits for. In one Python process the
pseudonymisation and the STOW-RS requests to the hub take the interpreter lock from the
DIMSE SCP's threads, and a CT series arrived at about half the speed of a bare pynetdicom
SCP (``aifi bench gateway``). In a process of its own, at a lower CPU priority
(``worker_priority``; by default Linux's SCHED_IDLE), the forwarder uses what the SCP
leaves: an association is slowed as little as possible by forwarding, and the durable
outbox makes up the difference once the burst is over.

Both processes share only the gateway's database and data folder (SQLite WAL: one writer at
a time, readers alongside). The ingest side wakes the forwarder through a socket pair — one
byte per ring, dropped when the child is behind (it looks at the database anyway) — and the
child learns that the gateway is gone (however it died, ``kill -9`` included) when that
socket reaches end of file: it exits at once, as the workers did when they shared the
gateway's process; what they had claimed is taken again after its lease.

The gateway's lifespan starts the child (:meth:`WorkerProcess.start`), restarts it when it
dies (:meth:`WorkerProcess.supervise`, an error in the log) and stops it (SIGTERM, then
SIGKILL) on shutdown. The child is ``python -m aifi.gateway.worker_process FD PRIORITY`` and reads
its settings, secrets included, as JSON from its standard input (never from its command
line, which every local user can read).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from aifi.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0
"""How long the supervisor waits before starting a child that died (no busy restart loop
when it dies at once, e.g. on a broken configuration)."""


class SocketBell:
    """The ingest side's doorbell when the workers live in the child: :meth:`ring` writes
    one byte to the child's socket, never blocking (a full buffer means the child has rings
    it has not read yet, which is as good). Thread-safe; the socket is swapped when the
    child is restarted."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        sock_before = None
        with self._lock:
            sock_before, self._sock = self._sock, sock
        if sock_before is not None:
            sock_before.close()

    def ring(self) -> None:
        with self._lock:
            sock = self._sock
            if sock is None:
                return
            # BlockingIOError (full: rings pending) or the child is gone: nothing to do
            with contextlib.suppress(OSError):
                sock.send(b"\x01")


def settings_json(settings: GatewaySettings) -> str:
    """``settings`` as the child reads them: every field by name, secrets in clear (the
    JSON goes through a pipe, never a command line or a file)."""
    values: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        values[name] = value
    return json.dumps(values)


class WorkerProcess:
    """The parent's handle on the workers' child process (see the module docstring)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.bell = SocketBell()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = False

    def start(self) -> None:
        """Start the child (returns at once; it builds its workers on its own)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aifi.gateway.worker_process",
                    str(theirs.fileno()),
                    self.settings.worker_priority,
                ],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(settings_json(self.settings).encode())
        self.process = process
        self.bell.attach(ours)
        log.info("background workers started in process %d", process.pid)

    async def supervise(self) -> None:
        """Restart the child whenever it dies, until :meth:`stop` (runs as a task of the
        gateway's lifespan)."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            process = self.process
            if self._stopping or process is None or process.poll() is None:
                continue
            log.error(
                "the background workers' process %d ended (exit code %s); starting it again",
                process.pid,
                process.returncode,
            )
            self.bell.attach(None)
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            if not self._stopping:
                self.restarts += 1
                self.start()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the child finishes the round under way), SIGKILL after ``timeout``."""
        self._stopping = True
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.bell.attach(None)


# -- the child --------------------------------------------------------------------------------


async def _serve(settings: GatewaySettings, bell: socket.socket) -> None:
    from aifi.clock import utc_now
    from aifi.dicomweb.worklist import Doorbell
    from aifi.gateway.config import load_config, parse_pacs
    from aifi.gateway.deid import load_or_create_key
    from aifi.gateway.hub_connection import hub_client
    from aifi.gateway.persistence.migrations import GATEWAY_MIGRATIONS
    from aifi.gateway.workers import background_workers, start_loops, stop_loops
    from aifi.hub.persistence.database import Database

    config = load_config(settings.config_file)
    pacs = parse_pacs(settings.pacs, calling_ae=settings.ae_title) if settings.pacs else None
    given = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None
    key = load_or_create_key(settings.key_file, given)
    db = Database(settings.database_url, migrations=GATEWAY_MIGRATIONS)  # the parent migrated
    hub = hub_client(settings.hub, settings.credentials)
    doorbell = Doorbell()
    destinations = config.destinations(pacs, calling_ae=settings.ae_title)
    workers = background_workers(settings, config, db, key, hub, destinations, doorbell, utc_now)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def on_bell() -> None:
        try:
            data = bell.recv(4096)
        except BlockingIOError:
            return
        if not data:  # end of file: the gateway process is gone; so are we, at once
            os._exit(0)
        doorbell.ring()

    bell.setblocking(False)
    loop.add_reader(bell.fileno(), on_bell)
    tasks = start_loops(workers)
    log.info("background workers running: %s", ", ".join(w.name for w in workers))
    try:
        await stop.wait()
    finally:
        loop.remove_reader(bell.fileno())
        await stop_loops(tasks)
        hub.close()
        db.dispose()


def lower_priority(priority: str) -> None:
    """Lower this thread's CPU priority (threads it starts inherit it): ``idle`` the
    SCHED_IDLE policy (Linux; elsewhere nice 19), ``low`` nice 10, ``normal`` unchanged."""
    if priority == "idle":
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:  # pragma: no cover - not Linux
            os.nice(19)
    elif priority == "low":
        os.nice(10)


def main(argv: list[str]) -> None:
    """The child's entry point: ``python -m aifi.gateway.worker_process FD PRIORITY`` (the
    bell socket's descriptor, :func:`lower_priority`), settings as JSON on standard input."""
    from aifi.dicomweb.dicomjson import configure_pydicom
    from aifi.gateway.memory import return_large_buffers
    from aifi.hub.log_hygiene import install as install_log_hygiene

    lower_priority(argv[2])  # first: every thread started from here on inherits it
    bell = socket.socket(fileno=int(argv[1]))
    settings = GatewaySettings(**json.loads(sys.stdin.read()))
    return_large_buffers()
    configure_pydicom()
    install_log_hygiene()
    logging.basicConfig(level=settings.log_level.upper())
    asyncio.run(_serve(settings, bell))


if __name__ == "__main__":  # pragma: no cover - process entry point
    main(sys.argv)
