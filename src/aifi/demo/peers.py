"""The processes and peers ``aifi demo`` runs on one machine, each as a hospital or a vendor
would run it:

- the central hub (:func:`running_hub`): a real uvicorn server in a thread of the demo;
- the hospital's PACS (:func:`pacs_peer`): a private Orthanc with its DICOMweb plugin when
  installed, else none (the gateway keeps the re-identified results in its own store);
- the hospital's gateway (:func:`gateway_process`): ``aifi gateway serve`` as its own
  process, with the hospital client's credentials (SMART Backend Services) and ``--pacs``;
- the three reference AI products (:func:`product_processes`): ``aifi vendors run <name>``,
  each with its own performer client;
- the modality (:func:`send_study`): DCMTK's ``storescu`` when installed, else pynetdicom,
  one association per study (C-STORE, PS3.4 Annex B), so the gateway sees the study end
  when the association is released.

Start-up waits poll on a condition with a deadline (a port answering, a log line), never a
fixed time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from rich.console import Console

from aifi.conformance.dcmtk import dcmtk_tool
from aifi.conformance.orthanc import OrthancError, OrthancPeer, orthanc_unavailable
from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.errors import UpstreamError
from aifi.gateway.serve import GatewayProcess, gateway_subprocess
from aifi.hub.app import create_app
from aifi.hub.settings import Settings
from aifi.vendors.products import reference_product

PRODUCT_PROCESSES = ("skeletal-age", "fracture-detection", "incidental-pe")
"""The reference products the demo starts, by their ``aifi vendors run`` names."""
GATEWAY_AE = "AIFI-GW"
MODALITY_AE = "DEMO-MODALITY"
STARTUP_SECONDS = 60.0


class DemoError(UpstreamError):
    """A peer of the demo did not start or refused what the demo sent (the message says
    which and why)."""


@contextmanager
def running_hub(settings: Settings, host: str, port: int) -> Iterator[str]:
    """The hub under a real uvicorn server in a background thread; yields its base URL."""
    configure_pydicom()
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="aifi-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoError(f"the hub did not start on {host}:{port}")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        app.state.hub.db.dispose()


@contextmanager
def pacs_peer(workdir: Path, console: Console) -> Iterator[OrthancPeer | None]:
    """Orthanc (DICOMweb plugin) as the hospital's PACS when installed; None otherwise (the
    gateway then keeps the re-identified results under its ``results/`` folder)."""
    reason = orthanc_unavailable()
    if reason:
        console.print(f"PACS: none — the gateway keeps the results in its own store ({reason})")
        yield None
        return
    peer = OrthancPeer(workdir=workdir / "orthanc")
    try:
        peer.start()
    except OrthancError as exc:
        console.print(
            f"PACS: none — the gateway keeps the results in its own store (Orthanc did not "
            f"start: {exc})"
        )
        yield None
        return
    try:
        console.print(f"PACS: Orthanc at [cyan]{peer.url}[/cyan] (DICOMweb {peer.dicomweb_url})")
        yield peer
    finally:
        peer.stop()


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: the demo's, without settings meant for another
    process (a gateway's or a product's own), unbuffered output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIFI_GATEWAY_") and k != "AIFI_CREDENTIALS"
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@dataclass
class GatewayPeer:
    """A started ``aifi gateway serve``: where it listens and where its data is;
    :meth:`wait_ready` until it answers."""

    url: str
    """Its HTTP side: STOW-RS at ``/dicomweb``, ``/healthz``, ``/api/v1/gateway/status``."""
    dimse_port: int
    ae_title: str
    data_dir: Path
    log: Path
    spawned: GatewayProcess

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    def wait_ready(self) -> None:
        """Until its DIMSE SCP and its HTTP side answer; :class:`DemoError` otherwise."""
        if not self.spawned.ready(STARTUP_SECONDS):
            tail = self.log.read_text(errors="replace")[-800:]
            raise DemoError(f"the gateway did not start (log {self.log}): {tail}")


@contextmanager
def gateway_process(
    data_dir: Path, hub_url: str, credentials: Path, log: Path, *, pacs: str | None
) -> Iterator[GatewayPeer]:
    """``aifi gateway serve`` as its own process (as a hospital runs it), not in development
    mode, with the hospital client's ``credentials``; ``pacs`` is its ``--pacs`` (none: the
    results stay in its store). Yields at once (the caller may start other things while it
    starts up; :meth:`GatewayPeer.wait_ready`); stopped at the end."""
    with gateway_subprocess(
        data_dir,
        hub_url,
        log,
        credentials=credentials,
        pacs=pacs,
        ae_title=GATEWAY_AE,
        env=_child_env(),
        wait=False,
    ) as spawned:
        yield GatewayPeer(spawned.url, spawned.dimse_port, GATEWAY_AE, data_dir, log, spawned)


def product_codes() -> list[str]:
    """The product codes (Scheduled Workitem Code values) of :data:`PRODUCT_PROCESSES`."""
    return [reference_product(name).code for name in PRODUCT_PROCESSES]


@dataclass
class Products:
    """The started product processes; :meth:`wait_ready` until each is performing."""

    log_dir: Path
    processes: list[subprocess.Popen[bytes]]
    offsets: list[int]
    """Each log's size when its process started (an earlier run's lines do not count)."""

    def _since_start(self, log: Path, offset: int) -> str:
        with open(log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def wait_ready(self) -> None:
        """Until every product process says it is performing (its start-up — imports, the
        worklist subscription — is not the chain's turnaround)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        logs = [self.log_dir / f"{name}.log" for name in PRODUCT_PROCESSES]
        while time.monotonic() < deadline:
            seen = [self._since_start(log, at) for log, at in zip(logs, self.offsets, strict=True)]
            for process, log, text in zip(self.processes, logs, seen, strict=True):
                if process.poll() is not None:
                    raise DemoError(f"{log.stem} exited: {text[-500:]}")
            if all("Performing" in text for text in seen):
                return
            time.sleep(0.1)
        raise DemoError(f"the reference products did not start within {STARTUP_SECONDS:.0f} s")


@contextmanager
def product_processes(
    dicomweb: str, log_dir: Path, credentials: dict[str, Path]
) -> Iterator[Products]:
    """Each reference product as its own ``aifi vendors run`` process with its performer
    client's credentials file (by product code). Yields at once
    (:meth:`Products.wait_ready`); stopped at the end."""
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    offsets: list[int] = []
    with ExitStack() as stack:
        stack.callback(_stop_all, processes)
        for name in PRODUCT_PROCESSES:
            log = stack.enter_context(open(log_dir / f"{name}.log", "ab"))
            offsets.append(log.tell())
            command = [sys.executable, "-m", "aifi", "vendors", "run", name, "--hub", dicomweb]
            command += ["--credentials", str(credentials[reference_product(name).code])]
            processes.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
            )
        yield Products(log_dir, processes, offsets)


# -- the modality ---------------------------------------------------------------------------


def storescu_binary() -> str | None:
    """DCMTK's ``storescu`` when installed (not pynetdicom's script of that name)."""
    return dcmtk_tool("storescu")


def send_study(
    files: list[Path], port: int, called_ae: str, *, calling_ae: str = MODALITY_AE
) -> str:
    """Send one study's Part 10 ``files`` to ``called_ae`` at 127.0.0.1:``port`` over one
    association (C-STORE, PS3.4 Annex B): with DCMTK's ``storescu`` when installed, else
    with pynetdicom. Returns the SCU's name; raises :class:`DemoError` on any failure."""
    binary = storescu_binary()
    if binary is not None:
        done = subprocess.run(
            [binary, "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port)]
            + [str(f) for f in files],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=_child_env(TCP_NODELAY="1"),  # DCMTK: no Nagle delay per PDU
        )
        if done.returncode != 0:
            raise DemoError(f"storescu failed ({done.returncode}): {done.stderr[-800:]}")
        return "DCMTK storescu"
    _pynetdicom_send(files, port, called_ae, calling_ae)
    return "pynetdicom (DCMTK not installed)"


def _pynetdicom_send(files: list[Path], port: int, called_ae: str, calling_ae: str) -> None:
    datasets: list[Dataset] = [dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not association.is_established:
        raise DemoError(f"the gateway did not accept an association from {calling_ae}")
    try:
        for ds, path in zip(datasets, files, strict=True):
            status = association.send_c_store(ds)
            if getattr(status, "Status", None) != 0x0000:
                raise DemoError(f"C-STORE of {path.name} failed: {status}")
    finally:
        association.release()
