"""A real Orthanc, started on demand, as an independent DICOMweb peer.

Used by the interoperability tests (``tests/interop/test_orthanc.py``) and by the benchmark
(``aifi bench dicomweb``) to run aifi-hub against the reference open-source PACS with its
official DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``), instead of trusting
our own reading of PS3.18.

:class:`OrthancPeer` writes a configuration into a temporary folder (free loopback HTTP
and DICOM ports, storage and index in that folder, no remote access, no authentication,
the DICOMweb plugin enabled at ``/dicom-web/`` with a list of remote DICOMweb servers),
starts ``Orthanc`` as a subprocess, waits until its REST API answers ``/system`` and stops
it (SIGTERM, then SIGKILL) when the ``with`` block ends.

The helper methods wrap Orthanc's REST API (https://orthanc.uclouvain.be/book/) and the
DICOMweb plugin's client routes (plugin 1.7, ``Plugin/DicomWebClient.cpp``):

=========================================  ==================================================
``POST /dicom-web/servers/{name}/stow``     ``{"Resources": [orthanc ids], "HttpHeaders",
                                            "Synchronous"}``: STOW-RS of every instance
                                            below the resources to ``{url}/studies``
                                            (chunked, ``Accept: application/dicom+json``);
                                            the job fails unless all instances are in the
                                            Referenced SOP Sequence and none is in the
                                            Failed SOP Sequence.
``POST /dicom-web/servers/{name}/qido``     ``{"Uri": "/studies", "Arguments": {key: value},
                                            "HttpHeaders"}``: QIDO-RS (sent with
                                            ``Accept: */*``), the answer converted to
                                            Orthanc's own format: ``{tag: {"Group",
                                            "Element", "Name", "vr", "Value"}}`` with
                                            ``Value`` a string, only the first of
                                            several values, and numbers (IS/DS/US...
                                            as JSON numbers) dropped.
``POST /dicom-web/servers/{name}/get``      same body: any GET, the remote answer relayed
                                            unchanged (raw DICOM JSON).
``POST /dicom-web/servers/{name}/retrieve`` ``{"Resources": [{"Study", "Series",
                                            "Instance"}], "GetArguments", "HttpHeaders",
                                            "Synchronous"}``: WADO-RS, each received part
                                            stored into Orthanc. Without an ``Accept`` in
                                            ``HttpHeaders`` the plugin sends
                                            ``multipart/related; type="application/dicom";
                                            transfer-syntax=*``.
=========================================  ==================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from aifi.errors import UpstreamError

ORTHANC_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_DIRS = (
    Path("/usr/share/orthanc/plugins"),
    Path("/usr/lib/orthanc"),
    Path("/usr/local/share/orthanc/plugins"),
)
DICOMWEB_ROOT = "/dicom-web/"

Level = Literal["patients", "studies", "series", "instances"]
RemoteServer = str | Mapping[str, Any]
"""A remote DICOMweb server for ``DicomWeb.Servers``: its base URL, or the plugin's full
object form (``{"Url": ..., "HttpHeaders": {...}, "HasWadoRsUniversalTransferSyntax": ...}``)."""


class OrthancError(UpstreamError):
    """Orthanc could not be started, or its REST API answered with an error."""


def find_orthanc_binary() -> Path | None:
    found = shutil.which("Orthanc")
    if found:
        return Path(found)
    for candidate in ORTHANC_BINARY_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def find_dicomweb_plugin() -> Path | None:
    for folder in DICOMWEB_PLUGIN_DIRS:
        if not folder.is_dir():
            continue
        exact = folder / "libOrthancDicomWeb.so"
        if exact.is_file():
            return exact
        versioned = sorted(folder.glob("libOrthancDicomWeb.so*"))
        if versioned:
            return versioned[-1]
    return None


def orthanc_unavailable() -> str | None:
    """``None`` when Orthanc and its DICOMweb plugin can be used, else the reason."""
    if find_orthanc_binary() is None:
        return (
            "Orthanc is not installed (no 'Orthanc' on PATH nor in /usr/sbin); "
            "apt-get install orthanc"
        )
    if find_dicomweb_plugin() is None:
        return (
            "the Orthanc DICOMweb plugin is not installed (no libOrthancDicomWeb.so in "
            + ", ".join(str(d) for d in DICOMWEB_PLUGIN_DIRS)
            + "); apt-get install orthanc-dicomweb"
        )
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_entry(value: RemoteServer) -> Any:
    if isinstance(value, str):
        return [value.rstrip("/") + "/"]
    entry = dict(value)
    if "Url" in entry:
        entry["Url"] = str(entry["Url"]).rstrip("/") + "/"
    return entry


class OrthancPeer:
    """A private Orthanc with the DICOMweb plugin, for the duration of a ``with`` block.

    ``servers`` maps a name to a remote DICOMweb service root (for aifi-hub:
    ``http://127.0.0.1:{port}/dicomweb``). ``extra_config`` is merged over the generated
    configuration (top-level keys; a ``"DicomWeb"`` mapping is merged into the plugin's).
    Without ``workdir`` everything lives in a temporary folder removed by :meth:`stop`; a
    given ``workdir`` (e.g. for a benchmark's logs) is kept, storage and index included.
    Remote servers can also be declared after start-up with :meth:`add_server`.
    """

    def __init__(
        self,
        servers: Mapping[str, RemoteServer] | None = None,
        *,
        extra_config: Mapping[str, Any] | None = None,
        startup_timeout: float = 60.0,
        request_timeout: float = 120.0,
        workdir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        reason = orthanc_unavailable()
        binary, plugin = find_orthanc_binary(), find_dicomweb_plugin()
        if reason or binary is None or plugin is None:
            raise OrthancError(reason or "Orthanc is not available")
        if startup_timeout <= 0 or request_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.binary = binary
        self.plugin = plugin
        self.servers: dict[str, RemoteServer] = dict(servers or {})
        self.extra_config: dict[str, Any] = dict(extra_config or {})
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.verbose = verbose
        self._workdir_arg = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self.workdir: Path | None = None
        self.http_port = 0
        self.dicom_port = 0

    # -- life cycle -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """Process id of the running Orthanc (for measuring its memory, e.g. in benchmarks)."""
        if self._process is None:
            raise OrthancError("Orthanc is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """Base URL of Orthanc's REST API, e.g. ``http://127.0.0.1:8042``."""
        if not self.http_port:
            raise OrthancError("Orthanc is not running")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Orthanc's own DICOMweb service root (no trailing slash)."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise OrthancError("Orthanc is not running")
        return self.workdir / "orthanc.log"

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of Orthanc's log (for error messages and failing tests)."""
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except (OSError, OrthancError):
            return ""

    def log_errors(self, max_lines: int = 20) -> str:
        """The last error lines of Orthanc's log (glog format: ``E<date> ...``)."""
        lines = [line for line in self.log_tail(200_000).splitlines() if line.startswith("E")]
        return "\n".join(lines[-max_lines:])

    def config(self) -> dict[str, Any]:
        """The configuration written for Orthanc (needs the folder and ports chosen)."""
        if self.workdir is None:
            raise OrthancError("Orthanc is not running")
        dicomweb: dict[str, Any] = {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": False,
            "Servers": {name: _server_entry(value) for name, value in self.servers.items()},
        }
        config: dict[str, Any] = {
            "Name": "aifi-test-orthanc",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SaveJobs": False,
            "StorageCompression": False,
            "HttpTimeout": int(self.request_timeout),
            "Plugins": [str(self.plugin)],
            "DicomWeb": dicomweb,
        }
        for key, value in self.extra_config.items():
            if key == "DicomWeb" and isinstance(value, Mapping):
                dicomweb.update(value)
            else:
                config[key] = value
        return config

    def start(self) -> Self:
        if self._process is not None:
            raise OrthancError("Orthanc is already running")
        if self._workdir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aifi-orthanc-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        last_error: OrthancError | None = None
        for _attempt in range(3):  # a free port can be taken between choosing and binding
            self.http_port, self.dicom_port = _free_port(), _free_port()
            try:
                self._launch()
                return self
            except OrthancError as exc:
                last_error = exc
                self._stop_process()
        self._cleanup()
        assert last_error is not None
        raise last_error

    def _launch(self) -> None:
        assert self.workdir is not None
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = self.log_path.open("ab")
        args = [str(self.binary), str(config_path)]
        if self.verbose:
            args.append("--verbose")
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError as exc:
            raise OrthancError(f"cannot run {self.binary}: {exc}") from exc
        finally:
            log.close()
        self._client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}",
            timeout=httpx.Timeout(self.request_timeout, connect=5.0),
            trust_env=False,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited with status {self._process.returncode} at start-up:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(httpx.TransportError):
                if self._client.get("/system", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise OrthancError(
            f"Orthanc did not answer /system within {self.startup_timeout} s:\n" + self.log_tail()
        )

    def _stop_process(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, SIGKILL after 15 s) and remove its temporary folder."""
        self._stop_process()
        self._cleanup()
        self.http_port = self.dicom_port = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- REST ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """The HTTP client bound to Orthanc's REST API."""
        if self._client is None:
            raise OrthancError("Orthanc is not running")
        return self._client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call; transport failures and non-2xx answers become :class:`OrthancError`."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise OrthancError(f"Orthanc {method} {path}: {exc}") from exc
        if response.is_error:
            raise OrthancError(
                f"Orthanc {method} {path}: HTTP {response.status_code}: {response.text[:2000]}"
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def system(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/system")
        return result

    def upload(self, data: bytes) -> str:
        """Store one Part 10 file (``POST /instances``); returns its Orthanc id."""
        answer = self._json(
            "POST", "/instances", content=data, headers={"Content-Type": "application/dicom"}
        )
        if isinstance(answer, list):  # a ZIP upload answers with a list
            raise OrthancError("expected a single DICOM instance")
        return str(answer["ID"])

    def ids(self, level: Level = "instances") -> list[str]:
        """Orthanc ids of every patient, study, series or instance."""
        return [str(item) for item in self._json("GET", f"/{level}")]

    def resource(self, level: Level, orthanc_id: str) -> dict[str, Any]:
        """``GET /{level}/{id}`` (MainDicomTags, parent and children ids)."""
        result: dict[str, Any] = self._json("GET", f"/{level}/{orthanc_id}")
        return result

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 bytes (``GET /instances/{id}/file``)."""
        return self.request("GET", f"/instances/{orthanc_id}/file").content

    def lookup(self, dicom_uid: str) -> list[dict[str, Any]]:
        """Resources whose DICOM identifier is ``dicom_uid`` (``POST /tools/lookup``)."""
        result: list[dict[str, Any]] = self._json("POST", "/tools/lookup", content=dicom_uid)
        return result

    def find_id(self, level: Level, dicom_uid: str) -> str | None:
        """The Orthanc id of the study/series/instance with this UID, or ``None``."""
        wanted = {"patients": "Patient", "studies": "Study", "series": "Series"}.get(
            level, "Instance"
        )
        for item in self.lookup(dicom_uid):
            if item.get("Type") == wanted:
                return str(item["ID"])
        return None

    def delete(self, level: Level, orthanc_id: str) -> None:
        self.request("DELETE", f"/{level}/{orthanc_id}")

    def dicomweb_servers(self) -> list[str]:
        return [str(name) for name in self._json("GET", "/dicom-web/servers")]

    def add_server(self, name: str, server: RemoteServer) -> None:
        """Declare (or replace) a remote DICOMweb server at run time
        (``PUT /dicom-web/servers/{name}``, plugin >= 1.5), e.g. for a hub started later."""
        entry = _server_entry(server)
        body = {"Url": entry[0]} if isinstance(entry, list) else entry
        self.request("PUT", f"/dicom-web/servers/{name}", json=body)
        self.servers[name] = server

    def remove_server(self, name: str) -> None:
        self.request("DELETE", f"/dicom-web/servers/{name}")
        self.servers.pop(name, None)

    def stow(
        self,
        server: str,
        resources: Sequence[str],
        *,
        http_headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Have Orthanc send these resources (any level) to ``server`` with STOW-RS and
        wait for the job; returns the job's content (``InstancesCount``, ...)."""
        body: dict[str, Any] = {"Resources": list(resources), "Synchronous": False}
        if http_headers:
            body["HttpHeaders"] = dict(http_headers)
        job = self._json("POST", f"/dicom-web/servers/{server}/stow", json=body)
        return self.wait_job(str(job["ID"]), timeout)

    def qido(
        self,
        server: str,
        uri: str,
        arguments: Mapping[str, str] | None = None,
        *,
        http_headers: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Have Orthanc run a QIDO-RS query (``uri`` such as ``/studies``) on ``server``.

        The answer is in Orthanc's format (see the module docstring), not DICOM JSON:
        use :meth:`get` for the remote server's own answer."""
        result: list[dict[str, Any]] = self._json(
            "POST",
            f"/dicom-web/servers/{server}/qido",
            json=self._get_body(uri, arguments, http_headers),
        )
        return result

    def get(
        self,
        server: str,
        uri: str,
        arguments: Mapping[str, str] | None = None,
        *,
        http_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Have Orthanc GET ``uri`` from ``server``; the remote answer, relayed."""
        return self.request(
            "POST",
            f"/dicom-web/servers/{server}/get",
            json=self._get_body(uri, arguments, http_headers),
        )

    def retrieve(
        self,
        server: str,
        resources: Sequence[Mapping[str, str]],
        *,
        get_arguments: Mapping[str, str] | None = None,
        http_headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Have Orthanc pull resources (``{"Study": uid[, "Series": uid[, "Instance":
        uid]]}``) from ``server`` with WADO-RS, store them, and wait for the job; returns
        the job's content (``ReceivedInstancesCount``, ...)."""
        body: dict[str, Any] = {
            "Resources": [dict(resource) for resource in resources],
            "Synchronous": False,
        }
        if get_arguments:
            body["GetArguments"] = dict(get_arguments)
        if http_headers:
            body["HttpHeaders"] = dict(http_headers)
        job = self._json("POST", f"/dicom-web/servers/{server}/retrieve", json=body)
        return self.wait_job(str(job["ID"]), timeout)

    def wait_job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for an Orthanc job (``GET /jobs/{id}``); its ``Content`` on success,
        :class:`OrthancError` with Orthanc's description of the failure otherwise."""
        deadline = time.monotonic() + (timeout or self.request_timeout)
        while True:
            job: dict[str, Any] = self._json("GET", f"/jobs/{job_id}")
            state = job.get("State")
            if state == "Success":
                content: dict[str, Any] = job.get("Content") or {}
                return content
            if state == "Failure":
                raise OrthancError(
                    f"Orthanc job {job.get('Type')} {job_id} failed: "
                    f"{job.get('ErrorDescription')} ({job.get('ErrorDetails', '')}); "
                    f"content {json.dumps(job.get('Content'))}\n{self.log_errors()}"
                )
            if time.monotonic() > deadline:
                raise OrthancError(f"Orthanc job {job_id} still {state} after the timeout")
            time.sleep(0.05)

    @staticmethod
    def _get_body(
        uri: str,
        arguments: Mapping[str, str] | None,
        http_headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        if "?" in uri:
            raise ValueError("pass query parameters as arguments, not in the URI")
        body: dict[str, Any] = {"Uri": uri}
        if arguments:
            body["Arguments"] = dict(arguments)
        if http_headers:
            body["HttpHeaders"] = dict(http_headers)
        return body
